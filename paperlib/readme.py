"""``make readme``: write ``results/RESULTS.md`` and refresh the README's blocks from a run's files.

Every number in the README sits between ``<!-- BEGIN name -->`` and ``<!-- END name -->`` markers
and is rewritten here from ``results/`` (and ``benchmarks/``); nothing is typed by hand. A block
whose source file is missing says so (:data:`~paperlib.report.PLACEHOLDER`) instead of showing
stale numbers.

``results/RESULTS.md`` holds every table of a run (Tables 2-4, the trend check, deletion and
insertion, the claims, the paired tests, the sanity check, the run time); it is generated entirely
here and overwritten each time. The blocks' facts are computed and worded by
:mod:`paperlib.report` (facts as data, wording in ``paperlib/templates/``). ``--check`` writes
nothing and exits 1 when README.md or RESULTS.md is stale. Imports no torch.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from .atomic import atomic_write_text
from .manifest import check_manifest
from .paths import REPO_ROOT, results_dir
from .report import LEVEL, PLACEHOLDER, blocks, extra_readouts, readout_table_name, render

__all__ = ["SECTIONS", "main", "replace_blocks", "results_markdown", "sections", "stale",
           "update", "write_results"]

#: RESULTS.md: (heading, blocks shown under it, in order).
SECTIONS = [
    ("The verdict on the paper: its numbers beside ours", ["verdict", "trial", "readings"]),
    ("Control maps — does each method beat a map with no information?", ["control_table"]),
    ("ROAD — remove and debias (Rong et al. 2022), on a named subset",
     ["road_table", "road_controls"]),
    ("ROAD's cost — benchmarks/bench_road.py", ["benchmark_road"]),
    ("Agreement between metrics — Kendall tau and split-half reliability",
     ["agreement_table", "reliability"]),
    ("Other papers' published cells beside the kit's", ["calibration", "identity"]),
    ("What the results say", ["findings"]),
    ("Table 2 — black-box selection", ["table2", "choice"]),
    ("Table 3 — Average Drop (lower is better) and % Increase (higher is better)", ["table3"]),
    ("Table 4 — percentage in (top k% of pixels kept)", ["table4"]),
    ("Table 4 — which read-out follows the paper's trend", ["trend"]),
    ("Deletion and insertion AUC", ["curves"]),
    ("The paper's claims, variant vs baseline", ["claims"]),
    ("Paired Wilcoxon tests", ["wilcoxon"]),
    ("Power — could this run see the paper's gaps?", ["power"]),
    ("The untrained module over many seeds", ["untrained"]),
    ("Protocol sensitivity — verdicts per fill and target", ["protocol"]),
    ("Table 4 by scale", ["scale"]),
    ("Sanity check — cascading model-parameter randomisation", ["sanity"]),
    ("Claim matrix — three black boxes x two layers", ["matrix"]),
    ("Fast forwards — reduced precision and compile", ["precision"]),
    ("Run time", ["speed_full"]),
]


def sections(results: Path) -> list[tuple[str, list[str]]]:
    """:data:`SECTIONS`, and after deletion / insertion one section per read-out beyond the kit's
    own that the run in ``results`` recorded (a registered read-out reaches RESULTS.md)."""
    out = list(SECTIONS)
    at = [names for _, names in out].index(["curves"]) + 1
    out[at:at] = [(f"Read-out — {r['label']}", [readout_table_name(r["name"])])
                  for r in extra_readouts(results)]
    return out


def results_markdown(results: Path) -> str:
    """The whole of ``RESULTS.md`` for the files in ``results``."""
    text = render("RESULTS.md.j2", sections=sections(results), content=blocks(results),
                  placeholder=PLACEHOLDER, level=LEVEL)
    return text.rstrip("\n") + "\n"


def write_results(results: Path | None = None, out: Path | None = None) -> Path:
    """Write ``RESULTS.md`` (default: into ``results``) and return its path."""
    results = results or results_dir()
    out = out or results / "RESULTS.md"
    atomic_write_text(out, results_markdown(results))
    return out


def replace_blocks(text: str, contents: dict[str, str | None]) -> tuple[str, list[str]]:
    """Replace the body of every ``<!-- BEGIN name -->`` ... ``<!-- END name -->`` block named in
    ``contents`` (``None``: :data:`~paperlib.report.PLACEHOLDER`); other blocks and all text
    outside stay as they are. Returns the new text and the names of the blocks found."""
    changed = []
    for name, content in contents.items():
        pattern = re.compile(rf"(<!-- BEGIN {re.escape(name)} -->\n)(.*?)(<!-- END "
                             rf"{re.escape(name)} -->)", re.DOTALL)
        if not pattern.search(text):
            continue
        body = content if content is not None else PLACEHOLDER

        def fill(m: re.Match[str], body: str = body) -> str:
            return m.group(1) + body + "\n" + m.group(3)

        text = pattern.sub(fill, text)
        changed.append(name)
    return text, changed


def update(readme: Path = REPO_ROOT / "README.md", results: Path | None = None) -> list[str]:
    """Refresh the README's blocks from ``results``; returns the names of the blocks found."""
    results = results or results_dir()
    old = readme.read_text()
    text, changed = replace_blocks(old, blocks(results))
    if text != old:
        atomic_write_text(readme, text)
    return changed


def stale(readme: Path, results: Path) -> list[Path]:
    """The files among ``readme`` and ``results/RESULTS.md`` that differ from what the results
    render (a missing RESULTS.md is stale); writes nothing."""
    out = []
    if replace_blocks(readme.read_text(), blocks(results))[0] != readme.read_text():
        out.append(readme)
    page = results / "RESULTS.md"
    if not page.is_file() or page.read_text() != results_markdown(results):
        out.append(page)
    return out


def main(results: str | Path | None = None, readme: str | Path | None = None,
         check: bool = False) -> int:
    """``paperlib readme``: write RESULTS.md and refresh the README's blocks from ``results``
    (default: $PAPERLIB_RESULTS, else results/); with ``check``, write nothing and return 1
    (naming the stale files) when README.md or RESULTS.md differs from what the results render."""
    folder = Path(results) if results is not None else results_dir()
    target = Path(readme) if readme is not None else REPO_ROOT / "README.md"
    mixed = check_manifest(folder)
    if mixed:
        for line in mixed:
            print(f"paperlib readme: {line}", file=sys.stderr)
        print(f"paperlib readme: {folder} mixes files of different runs; nothing was written",
              file=sys.stderr)
        return 1
    if check:
        old = stale(target, folder)
        if old:
            print(f"paperlib readme: stale: {', '.join(map(str, old))} (run `make readme`)",
                  file=sys.stderr)
            return 1
        return 0
    print("wrote", write_results(folder))
    print("updated README blocks:", ", ".join(update(target, folder)) or "none")
    return 0
