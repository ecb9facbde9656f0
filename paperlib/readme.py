"""``make readme``: refresh the README's result blocks from the files a run wrote.

Every number in the README sits between ``<!-- BEGIN name -->`` and ``<!-- END name -->`` markers
and is rewritten here from ``results/`` (and ``benchmarks/``); nothing is typed by hand. A block
whose source file is missing says so instead of showing stale numbers.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pandas as pd

from .paths import REPO_ROOT, results_dir
from .tables import READOUTS, formatted


def _read(path: Path) -> str | None:
    return path.read_text() if path.is_file() else None


def _table4_blocks(results: Path) -> str | None:
    path = results / "table4.csv"
    if not path.is_file():
        return None
    t4 = pd.read_csv(path)
    ks = sorted({int(c[len("O_top"):]) for c in t4.columns if re.fullmatch(r"O_top\d+", c)})
    shown = formatted(t4)
    parts = []
    for prefix, title in READOUTS.items():
        cols = ["method"] + [f"{prefix}{k}" for k in ks]
        table = shown[cols].rename(columns={f"{prefix}{k}": f"top {k}%" for k in ks})
        parts.append(f"**{title}**\n\n" + table.to_markdown(index=False))
    paper = ["paper (ResNet-50)"] + [
        "n/a" if pd.isna(v) else f"{v:.2f}"
        for v in t4.loc[t4["method"] == "gradcam", [f"paper_top{k}" for k in ks]].iloc[0]]
    parts.append("The paper's Grad-CAM row (read-out undefined): | " + " | ".join(paper) + " |")
    return "\n\n".join(parts)


def _claims(results: Path) -> str | None:
    path = results / "claims.csv"
    if not path.is_file():
        return None
    claims = pd.read_csv(path)
    wide = claims.pivot_table(index=["variant", "baseline"], columns="metric", values="verdict",
                              aggfunc="first")
    return wide.reset_index().to_markdown(index=False)


def _speed(results: Path) -> str | None:
    speed = _read(results / "eval_speed.json")
    summary = _read(results / "reproduce_summary.json")
    if speed is None or summary is None:
        return None
    s, r = json.loads(speed), json.loads(summary)
    lines = [f"Run: {r['finished']}, torch {r['torch']}, {r['threads']} threads, "
             f"{'GPU ' + r['cuda'] if r['cuda'] else 'CPU'} ({r['machine']}); "
             f"total {r['total_seconds'] / 60:.1f} min.", "",
             "| step | minutes |", "|---|---|"]
    lines += [f"| {k} | {v / 60:.1f} |" for k, v in r["steps_seconds"].items()]
    lines += ["", f"Tables 3+4 evaluation: {s['images']} images, {s['metric_forwards']} forwards of "
                  f"masked copies in {s['metric_seconds'] / 60:.1f} min = "
                  f"**{s['ratio_to_floor']:.2f}x** the floor ({s['floor_ms_per_image']:.1f} ms per "
                  "plain forward per image, measured on every batch of the same run; goal 1.2x)."]
    return "\n".join(lines)


def blocks(results: Path) -> dict[str, str | None]:
    bench = REPO_ROOT / "benchmarks"

    def md(name: str) -> str | None:
        text = _read(results / f"{name}.md")
        return text.strip() if text else None

    return {
        "table2": md("table2"),
        "choice": (lambda c: None if c is None else
                   "Chosen black box: **{model}** (most accurate: {most_accurate}; rule: {rule})."
                   .format(**json.loads(c)))(_read(results / "chosen_model.json")),
        "table3": md("table3"),
        "table4": _table4_blocks(results),
        "trend": md("table4_trend"),
        "claims": _claims(results),
        "curves": md("deletion_insertion"),
        "wilcoxon": md("wilcoxon"),
        "sanity": md("sanity"),
        "speed": _speed(results),
        "benchmark_cpu": (_read(bench / "REPORT_cpu.md") or "").strip() or None,
    }


def update(readme: Path = REPO_ROOT / "README.md", results: Path | None = None) -> list[str]:
    results = results or results_dir()
    text = readme.read_text()
    changed = []
    for name, content in blocks(results).items():
        pattern = re.compile(rf"(<!-- BEGIN {name} -->\n)(.*?)(<!-- END {name} -->)", re.S)
        if not pattern.search(text):
            continue
        body = content if content is not None else "_(not yet produced: run `make reproduce`)_"
        text = pattern.sub(lambda m, body=body: m.group(1) + body + "\n" + m.group(3), text)
        changed.append(name)
    readme.write_text(text)
    return changed


if __name__ == "__main__":
    print("updated blocks:", ", ".join(update()))
    sys.exit(0)
