"""``make readme``: the block updater, the "What the results say" sentences, ``RESULTS.md``, and
the README itself (short, the two commands, generated blocks up to date with ``results/``)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from paperlib import readme, report
from paperlib.metrics import readout_facts
from paperlib.readme import replace_blocks, results_markdown, update
from paperlib.report import PLACEHOLDER, READOUTS_FILE
from paperlib.schema import READOUTS

REPO_ROOT = Path(__file__).resolve().parent.parent


# --- the block updater ---------------------------------------------------------------------------

TEXT = """# Title

Intro, kept.
<!-- BEGIN a -->
old a
<!-- END a -->
between, kept
<!-- BEGIN b -->
old b
more old b
<!-- END b -->
<!-- BEGIN other -->
untouched
<!-- END other -->
tail, kept
"""


def test_replace_blocks_replaces_only_named_blocks() -> None:
    text, changed = replace_blocks(TEXT, {"a": "new a", "b": None, "absent": "x"})
    assert changed == ["a", "b"]
    assert text == """# Title

Intro, kept.
<!-- BEGIN a -->
new a
<!-- END a -->
between, kept
<!-- BEGIN b -->
_(not yet produced: run `make reproduce`)_
<!-- END b -->
<!-- BEGIN other -->
untouched
<!-- END other -->
tail, kept
"""


def test_replace_blocks_is_idempotent_and_fills_empty_blocks() -> None:
    empty = "x\n<!-- BEGIN a -->\n<!-- END a -->\ny\n"
    once, _ = replace_blocks(empty, {"a": "| t |\n|---|"})
    assert once == "x\n<!-- BEGIN a -->\n| t |\n|---|\n<!-- END a -->\ny\n"
    assert replace_blocks(once, {"a": "| t |\n|---|"})[0] == once


def test_update_writes_placeholder_for_missing_sources(tmp_path: Path) -> None:
    page = tmp_path / "README.md"
    page.write_text("top\n<!-- BEGIN claims -->\nstale\n<!-- END claims -->\n"
                    "<!-- BEGIN mine -->\nkept\n<!-- END mine -->\nbottom\n")
    results = tmp_path / "results"
    results.mkdir()
    assert update(page, results) == ["claims"]
    assert page.read_text() == (f"top\n<!-- BEGIN claims -->\n{PLACEHOLDER}\n<!-- END claims -->\n"
                                "<!-- BEGIN mine -->\nkept\n<!-- END mine -->\nbottom\n")
    assert PLACEHOLDER == "_(not yet produced: run `make reproduce`)_"


def test_blocks_keeps_its_names(tmp_path: Path) -> None:
    names = set(report.blocks(tmp_path))
    assert {"table2", "choice", "table3", "table4", "trend", "claims", "curves", "wilcoxon",
            "sanity", "speed", "findings"} <= names
    # the benchmark's blocks come from benchmarks/, the identity's from the paper's numbers
    assert all(report.blocks(tmp_path)[n] is None
               for n in names - {"benchmark_cpu", "benchmark_road", "scale_cost", "identity"})
    assert "45.27" in report.blocks(tmp_path)["identity"]


# --- "What the results say" ----------------------------------------------------------------------

def findings(claims=None, trend=None, sanity=None, table3=None) -> list[str]:
    """The sentences of the findings block: its facts (:func:`paperlib.report.findings`) through
    its template (the facts themselves are tested in tests/test_report.py)."""
    text = report.render("blocks/findings.md.j2", f=report.findings(claims, trend, sanity, table3))
    return [line.removeprefix("* ") for line in text.splitlines()]


def _claims() -> pd.DataFrame:
    rows = [
        ("attention-fixed", "gradcam", "Average Drop", 5.0, 0.001, "worse"),
        ("attention-fixed", "gradcampp", "Average Drop", 4.0, 0.002, "worse"),
        ("attention-per-image", "gradcam", "Average Drop", -18.0, 1e-9, "better"),
        ("attention-per-image", "gradcampp", "Average Drop", -19.0, 1e-9, "better"),
        ("attention-fixed", "gradcam", "% Increase", -5.6, 0.12, "no significant difference"),
        ("attention-fixed", "gradcampp", "% Increase", 3.0, 0.01, "better"),
        ("attention-per-image", "gradcam", "% Increase", 24.8, 1e-9, "better"),
        ("attention-per-image", "gradcampp", "% Increase", 28.8, 1e-9, "better"),
    ]
    return pd.DataFrame(rows, columns=["variant", "baseline", "metric", "variant - baseline",
                                       "p (Holm)", "verdict"])


def _trend() -> pd.DataFrame:
    return pd.DataFrame({
        "readout": ["mean O (%)", "% Increase", "Average Drop (%)"],
        "spearman": [1.0, 0.9999999999999999, -1.0],
        "pearson": [0.96, 0.88, -0.96],
        "same_direction_every_step": [True, True, False],
        "max_abs_diff": [44.3, 13.4, 98.4]})


def _sanity() -> pd.DataFrame:
    return pd.DataFrame({"method": ["gradcam", "gradcampp"], "step1": [0.2, 0.95],
                         "step2": [0.15, 0.65], "flagged": [False, True]})


def _table3() -> pd.DataFrame:
    return pd.DataFrame({
        "method": ["gradcam", "gradcampp", "xgradcam", "attention-fixed"],
        "n_images": [250, 250, 250, 250],
        "avg_drop": [23.16703287, 24.1, 23.16703258, 28.1],
        "increase": [29.2, 25.2, 29.2, 23.6]})


EXPECTED = [
    ("Each variant against the 2 baselines `gradcam`, `gradcampp` in paired Wilcoxon tests on "
     "250 images: *better* / *worse* = significant (Holm-adjusted p < 0.05) in / against the "
     "direction the paper claims."),
    ("The paper's claim (a better Average Drop and % Increase than every baseline) holds for "
     "`attention-per-image` and not for `attention-fixed`."),
    ("`attention-fixed` vs 2 baselines — *Average Drop*: worse than both; *% Increase*: better "
     "than 1 (`gradcampp`), no significant difference from 1 (`gradcam`)."),
    ("`attention-per-image` vs 2 baselines — *Average Drop*: better than both; *% Increase*: "
     "better than both."),
    ("`attention-per-image` fits its parameters to each image so that x·M keeps the class — the "
     "quantity Average Drop and % Increase measure — so its Table 3 numbers measure the "
     "optimiser as much as the explanation."),
    ("Ties in Table 3 (equal Average Drop and % Increase, to within 0.0001): `gradcam` = "
     "`xgradcam`."),
    ("Of the 3 Table 4 read-outs, *% Increase* (Spearman 1.00, largest absolute difference "
     "13.40) follows the paper's Grad-CAM row best; then *mean O (%)* (Spearman 1.00, largest "
     "absolute difference 44.30), *Average Drop (%)* (Spearman -1.00, largest absolute "
     "difference 98.40). Changing with k in the paper's direction at every step: *mean O (%)*, "
     "*% Increase*."),
    ("Sanity check (cascading randomisation over 2 steps; in brackets, the mean Spearman "
     "correlation of each method's maps after the last step with its maps on the trained "
     "model): flagged as barely changing: `gradcampp` (0.65); not flagged: `gradcam` (0.15)."),
]


def test_findings_exact_sentences() -> None:
    assert findings(_claims(), _trend(), _sanity(), _table3()) == EXPECTED


def test_findings_caveat_only_with_the_per_image_variant() -> None:
    claims = _claims()
    claims = claims[claims["variant"] != "attention-per-image"]
    out = findings(claims, None, None, None)
    assert out == [
        ("Each variant against the 2 baselines `gradcam`, `gradcampp` in paired Wilcoxon tests: "
         "*better* / *worse* = significant (Holm-adjusted p < 0.05) in / against the direction "
         "the paper claims."),
        ("The paper's claim (a better Average Drop and % Increase than every baseline) holds for "
         "no variant."),
        EXPECTED[2],
    ]
    assert not any("optimiser" in s for s in out)


def test_findings_without_ties_and_without_inputs() -> None:
    t3 = _table3()[lambda t: t["method"] != "xgradcam"]
    assert findings(table3=t3) == [("No two of the 3 methods in Table 3 have equal Average Drop "
                                    "and % Increase (to within 0.0001).")]
    assert findings() == []


# --- RESULTS.md ----------------------------------------------------------------------------------

def _write_results(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    _claims().to_csv(folder / "claims.csv", index=False)
    (folder / "claims.md").write_text("The paper's claims, tiny run\n\n| x |\n|---|\n")
    _trend().assign(ours="[1, 2]", paper="[1, 2]").to_csv(folder / "table4_trend.csv",
                                                          index=False)
    (folder / "table4_trend.md").write_text("Trend caption\n\n| readout |\n|---|\n| tiny |\n")
    _sanity().to_csv(folder / "sanity.csv", index=False)
    (folder / "sanity.md").write_text("Sanity caption\n\n| method |\n|---|\n| gradcam |\n")
    t3 = _table3().assign(avg_drop_lo=0.0, avg_drop_hi=1.0, increase_lo=0.0, increase_hi=1.0)
    t3.to_csv(folder / "table3.csv", index=False)
    (folder / "table3.md").write_text("Table 3 (kit): tiny\n\n| method |\n|---|\n| gradcam |\n")
    (folder / "table2.md").write_text("Table 2 (kit): tiny\n\n| model |\n|---|\n| lite0 |\n")
    (folder / "chosen_model.json").write_text(json.dumps(
        {"model": "lite0", "most_accurate": "lite2", "rule": "the rule"}))
    t4 = pd.DataFrame({"method": ["gradcam"], "n_images": [2]})
    for prefix in READOUTS:
        for k in (5, 10):
            t4[f"{prefix}{k}"], t4[f"{prefix}{k}_lo"], t4[f"{prefix}{k}_hi"] = 1.5, 1.0, 2.0
    t4["paper_top5"], t4["paper_top10"] = 0.28, 0.40
    t4.to_csv(folder / "table4.csv", index=False)
    pd.DataFrame({"metric": ["drop_soft", "increase_soft", "drop_soft"],
                  "baseline": ["gradcam", "gradcam", "gradcampp"],
                  "variant": ["attention-fixed"] * 3, "mean_diff": [4.9645, -5.6, 4.03],
                  "statistic": [5496.0, 81.0, 6155.0], "p": [1e-7, 0.006, 3e-6],
                  "p_holm": [3.7e-6, 0.1208, 9.2e-5]}).to_csv(folder / "wilcoxon.csv", index=False)
    (folder / "wilcoxon.md").write_text("Paired Wilcoxon tests; tiny\n\n| m |\n|---|\n")
    (folder / READOUTS_FILE).write_text(json.dumps({"readouts": readout_facts()}))
    (folder / "reproduce_summary.json").write_text(json.dumps(
        {"finished": "2026-01-01 00:00:00", "torch": "2.0", "threads": 2, "cuda": None,
         "machine": "x86_64", "total_seconds": 600.0,
         "steps_seconds": {"01_model_selection": 60.0, "04_tables": 540.0}}))
    (folder / "eval_speed.json").write_text(json.dumps(
        {"images": 2, "metric_forwards": 10, "metric_seconds": 120.0, "ratio_to_floor": 1.08,
         "floor_ms_per_image": 8.0}))
    return folder


def test_results_markdown_sections(tmp_path: Path) -> None:
    folder = _write_results(tmp_path / "results")
    text = results_markdown(folder)
    headings = re.findall(r"^## (.+)$", text, re.MULTILINE)
    assert headings == [h for h, _ in readme.SECTIONS]
    assert text.startswith("# Results\n\n_Generated by `make readme`")
    # deletion_insertion.md and the fidelity studies' files (power, untrained seeds, protocol,
    # Table 4 by scale: readings is made from them), precision_summary.csv and the claim matrix
    # were not written, nor the metric's trial (the control check and the agreement between
    # metrics: one block, three tables), the calibration against other papers and the ROAD
    # study (its table and its control check; ROAD's cost comes from benchmarks/)
    assert text.count(PLACEHOLDER) == 15
    (folder / "sanity.md").unlink()
    text = results_markdown(folder)
    assert text.count(PLACEHOLDER) == 16
    squashed = re.sub(r" +", " ", text)
    for expected in [
        "Table 2 (kit): tiny",
        "Chosen black box: **lite0** (most accurate: lite2; rule: the rule).",
        "Table 3 (kit): tiny",
        "**mean O (%)**", "**top-1 agreement (%)**",
        "**The paper's rows** (read-out undefined; `ours` is its attention method)",
        "0.2846",
        "Trend caption",
        "The paper's claims, tiny run",
        "Paired Wilcoxon tests; tiny",
        "| attention-fixed | gradcam | +4.96 (<0.001) | -5.6 (0.121) |",
        "| attention-fixed | gradcampp | +4.03 (<0.001) | |",
        "Holm-adjusted p over all 3 tests",
        "| 04_tables | 9.0 |",
        "**1.08x** the floor",
        ("* Ties in Table 3 (equal Average Drop and % Increase, to within 0.0001): `gradcam` = "
         "`xgradcam`."),
    ]:
        assert expected in squashed, expected


def test_empty_tables_count_as_missing(tmp_path: Path) -> None:
    folder = _write_results(tmp_path / "results")
    (folder / "table4_trend.csv").write_text("\n")
    (folder / "claims.csv").write_text("variant,baseline,metric,variant - baseline,p (Holm),"
                                       "verdict\n")
    content = report.blocks(folder)
    assert content["claims"] is None
    ties, sanity = EXPECTED[5], EXPECTED[7]  # no claims, no trend: only these two are left
    assert content["findings"] == f"* {ties}\n* {sanity}"


def test_write_results_writes_the_file(tmp_path: Path) -> None:
    folder = _write_results(tmp_path / "results")
    out = readme.write_results(folder)
    assert out == folder / "RESULTS.md"
    assert out.read_text() == results_markdown(folder)


def test_main_writes_results_and_readme(tmp_path: Path) -> None:
    folder = _write_results(tmp_path / "results")
    page = tmp_path / "README.md"
    page.write_text("<!-- BEGIN speed -->\n<!-- END speed -->\n")
    readme.main(folder, page)
    assert (folder / "RESULTS.md").is_file()
    assert page.read_text() == (
        "<!-- BEGIN speed -->\nLast full run (2026-01-01 00:00:00): **10.0 min** on CPU (x86_64, "
        "2 threads, torch 2.0). Tables 3+4 evaluation of 2 images: **1.08x** the floor of plain "
        "forwards (8.0 ms per image; goal 1.2x).\n<!-- END speed -->\n")


# --- the repository's README ---------------------------------------------------------------------

README = REPO_ROOT / "README.md"


def test_readme_is_short_and_has_the_two_commands() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= 200
    blocks = re.findall(r"```bash\n(.*?)```", text, re.DOTALL)
    assert any(re.search(r"^make reproduce\b", b, re.MULTILINE)
               and re.search(r"^make test\b", b, re.MULTILINE) for b in blocks)
    assert "# CAM speed benchmark" not in text  # the benchmark report is linked, not embedded
    for name in ("speed", "verdict", "readings", "findings"):
        assert f"<!-- BEGIN {name} -->" in text and f"<!-- END {name} -->" in text


def test_readme_local_links_exist() -> None:
    text = README.read_text()
    targets = re.findall(r"\]\(([^)#]+?)(?:#[^)]*)?\)", text)
    local = [t for t in targets if not re.match(r"[a-z]+://", t)]
    assert local
    missing = [t for t in local if not (REPO_ROOT / t).exists()]
    assert not missing, missing


def test_generated_files_are_up_to_date() -> None:
    results = REPO_ROOT / "results"
    if not (results / "claims.csv").is_file():
        pytest.skip("no committed results/")
    text = README.read_text()
    assert replace_blocks(text, report.blocks(results))[0] == text, "run `make readme`"
    assert (results / "RESULTS.md").read_text() == results_markdown(results), "run `make readme`"


def test_precision_block_names_the_fastest_safe_mode_and_why_others_are_not(tmp_path: Path):
    common = {"images": 250, "device": "cpu", "threads": 2, "split": "eval", "verdicts": 100}
    rows = [{"mode": "bf16", "evaluation_speedup": 1.366, "max_avg_drop_delta_over_width": 0.32,
             "verdicts_changed": 0, "safe": False},
            {"mode": "fp32+compile", "evaluation_speedup": 1.079,
             "max_avg_drop_delta_over_width": 3e-6, "verdicts_changed": 0, "safe": True},
            {"mode": "bf16+compile", "evaluation_speedup": 1.6,
             "max_avg_drop_delta_over_width": 0.05, "verdicts_changed": 0, "safe": True}]
    pd.DataFrame([{**common, **r} for r in rows]).to_csv(tmp_path / "precision_summary.csv",
                                                         index=False)
    text = report.blocks(tmp_path)["precision"]
    assert "250 images of split `eval`" in text and "(cpu, 2 threads;" in text
    assert ("the fastest safe mode is `bf16+compile`, full evaluation **1.60x** faster (meets "
            "the 1.5x goal)") in text
    assert "not safe: `bf16` is 1.37x but moves an Average Drop by 0.32 of its" in text
    assert "fp32+compile" not in text
