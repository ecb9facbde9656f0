"""Reports as facts + templates (paperlib.report): the facts as data, the committed reports
rendered byte-identical from their committed inputs, ``readme --check``, and no torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from paperlib import readme, report

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))


def _claims() -> pd.DataFrame:
    rows = [("fixed", "gradcam", "Average Drop", "worse"),
            ("fixed", "gradcampp", "Average Drop", "worse"),
            ("per-image", "gradcam", "Average Drop", "better"),
            ("per-image", "gradcampp", "Average Drop", "better"),
            ("fixed", "gradcam", "% Increase", "no significant difference"),
            ("fixed", "gradcampp", "% Increase", "better"),
            ("per-image", "gradcam", "% Increase", "better"),
            ("per-image", "gradcampp", "% Increase", "better")]
    return pd.DataFrame(rows, columns=["variant", "baseline", "metric", "verdict"])


def test_claim_facts() -> None:
    c = report.claim_facts(_claims())
    assert c["baselines"] == ["gradcam", "gradcampp"] and c["headline"] == ["Average Drop",
                                                                            "% Increase"]
    assert c["holds"] == {"fixed": False, "per-image": True}
    assert c["holds_for"] == ["per-image"] and c["fails_for"] == ["fixed"]
    inc = c["per_variant"]["fixed"]["metrics"]["% Increase"]
    assert inc == [{"verdict": "better", "total": 2, "baselines": ["gradcampp"]},
                   {"verdict": "no significant difference", "total": 2,
                    "baselines": ["gradcam"]}]


def test_tie_groups() -> None:
    t3 = pd.DataFrame({"method": ["a", "b", "c", "d", "e"],
                       "avg_drop": [1.0, 2.0, 1.00005, 2.0, 3.0],
                       "increase": [5.0, 6.0, 5.0, 6.00009, 5.0]})
    assert report.tie_groups(t3) == [["a", "c"], ["b", "d"]]
    assert report.tie_groups(t3, tol=1e-6) == []


def test_trend_ranking_and_sanity_facts() -> None:
    trend = pd.DataFrame({"readout": ["O", "inc", "drop", "none"],
                          "spearman": [1.0, 0.9999999999999999, -1.0, float("nan")],
                          "same_direction_every_step": [True, True, False, False],
                          "max_abs_diff": [44.3, 13.4, 98.4, 1.0]})
    ranked = report.trend_ranking(trend)
    assert [r["readout"] for r in ranked] == ["inc", "O", "drop", "none"]
    assert ranked[-1]["spearman"] is None and ranked[0]["same_direction_every_step"]
    s = report.sanity_facts(pd.DataFrame({"method": ["g", "h"], "step1": [0.2, 0.9],
                                          "step2": [0.1, 0.7], "flagged": [False, True]}))
    assert s == {"steps": 2, "flagged": [{"method": "h", "last": 0.7}],
                 "not_flagged": [{"method": "g", "last": 0.1}]}


def test_closest_to_paper_and_verdict_tallies() -> None:
    t3 = pd.DataFrame({"method": ["smoothgradcampp", "smoothgradcampp-maps"],
                       "avg_drop": [40.0, 45.0], "increase": [23.75, 20.0]})
    c = report.closest_to_paper(t3)
    assert c is not None and c["best"] == "smoothgradcampp-maps"
    assert c["distance"] == pytest.approx(0.18 + 3.75)
    assert c["worst"] == pytest.approx(44.82 - 40.0)
    assert report.closest_to_paper(t3.iloc[:1]) is None
    cells = {f"{c}{s}": v for c in ("avg_drop", "increase") for s, v in
             (("", 1.0), ("_lo", 0.5), ("_hi", 1.5))}
    table3 = pd.DataFrame([{"method": m, **cells} for m in ("gradcam", "fixed", "other")])
    power = pd.DataFrame({"variant": ["fixed"], "baseline": ["gradcam"],
                          "metric": ["drop_soft"], "n_needed": [237.0]})
    rows = report.verdict_rows(table3, _claims(), power)
    assert [r["method"] for r in rows] == ["gradcam", "fixed"]
    assert rows[1]["tallies"] == {"Average Drop": "worse x2", "% Increase": "better x1, n.s. x1"}
    assert rows[1]["n_needed"] == 237 and rows[0]["n_needed"] is None
    assert rows[1]["avg_drop"] == "1.00 [0.50, 1.50]" and rows[1]["paper_avg_drop"] == "n/a"


def test_power_and_precision_facts() -> None:
    pw = pd.DataFrame({"metric": ["drop_soft", "drop_soft", "increase_soft"],
                       "n_images": [250, 250, 250], "mdd": [2.6, 2.9, 5.0],
                       "paper_gap": [-2.75, -1.83, 2.2], "n_needed": [237, 541, 10],
                       "detectable_at_n": [True, False, True]})
    p = report.power_facts(pw)
    assert p is not None and p["mdd"] == (2.6, 2.9) and p["gap"] == (1.83, 2.75)
    assert p["needed"] == (237, 541) and (p["powered"], p["comparisons"]) == (1, 2)
    summ = pd.DataFrame({"mode": ["bf16", "fp32+compile"], "evaluation_speedup": [1.4, 1.6],
                         "safe": [False, True], "device": "cpu", "threads": 1, "images": 9,
                         "split": "eval"})
    f = report.precision_facts(summ)
    assert f["best"]["mode"] == "fp32+compile" and f["meets"] and f["goal"] == 1.5
    assert [r["mode"] for r in f["unsafe"]] == ["bf16"]


def test_committed_readme_and_results_are_what_the_results_render() -> None:
    results = REPO_ROOT / "results"
    if not (results / "claims.csv").is_file():
        pytest.skip("no committed results/")
    assert readme.stale(REPO_ROOT / "README.md", results) == []


def test_committed_benchmark_reports_render_byte_identical() -> None:
    import bench_scale
    import report as bench_report

    bench = REPO_ROOT / "benchmarks"
    scale = json.loads((bench / "scale_cpu.json").read_text())
    assert bench_scale.render(scale) == (bench / "SCALE_cpu.md").read_text()
    j = json.loads((bench / "results_cpu.json").read_text())
    s = j["settings"]
    text = bench_report.render_report(j["machine"], j["rows"], j["goal_reasons"], j["notes"],
                                      s["repeats"], s["slow_repeats"])
    assert text == (bench / "REPORT_cpu.md").read_text()
    import bench_road

    road = json.loads((bench / "road_cpu.json").read_text())
    assert bench_road.report(road) == (bench / "ROAD_cpu.md").read_text()


def test_road_facts() -> None:
    road = pd.DataFrame({"method": ["gradcam", "xgradcam", "fakecam", "edge-map"],
                         "role": ["baseline", "baseline", "control", "control"],
                         "n_images": [3, 3, 3, 3], "road_combined": [0.15, 0.17, 0.02, 0.09]})
    against = pd.DataFrame({
        "method": ["gradcam", "xgradcam"] * 2, "metric": ["combined"] * 2 + ["MoRF"] * 2,
        "column": ["road_combined"] * 2 + ["road_morf"] * 2,
        "best_control": ["edge-map"] * 2 + ["fakecam"] * 2,
        "control_value": [0.09, 0.09, 0.3, 0.3], "beats_every_control": [True, True, True, False],
        "significantly": [False, True, False, False]})
    f = report.road_facts(road, against)
    assert f["n_images"] == 3 and f["n_methods"] == 4 and f["n_others"] == 2
    assert f["best"] == {"method": "xgradcam", "road_combined": 0.17}
    assert [c["method"] for c in f["controls"]] == ["fakecam", "edge-map"]
    combined, morf = f["metrics"]
    assert combined["beaten_by"] == ["gradcam", "xgradcam"]
    assert combined["significantly"] == ["xgradcam"]
    assert morf["best_control"] == "fakecam" and morf["beaten_by"] == ["gradcam"]
    text = report.render("blocks/trial.md.j2", f={"controls": None, "road": f, "agreement": None})
    assert "best `xgradcam` 0.170" in text and "combined 2 (`edge-map`, 0.090" in text


def test_check_names_the_stale_file_and_writes_nothing(tmp_path: Path, capsys) -> None:
    results = REPO_ROOT / "results"
    if not (results / "claims.csv").is_file():
        pytest.skip("no committed results/")
    page = tmp_path / "README.md"
    page.write_text((REPO_ROOT / "README.md").read_text().replace("Chosen black box", "Old"))
    assert readme.main(results, page, check=True) == 1
    err = capsys.readouterr().err
    assert str(page) in err and "stale" in err and err.count("\n") == 1
    assert "Old" in page.read_text()


def test_readme_check_imports_no_torch() -> None:
    code = ("import sys, paperlib.readme as r; assert r.main(check=True) == 0; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    env.pop("PAPERLIB_RESULTS", None)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_headline_labels_are_the_claims() -> None:
    from paperlib import schema
    from paperlib.tables import CLAIMS
    from paperlib.verdicts import HEADLINE

    assert HEADLINE == (CLAIMS[schema.drop(schema.SOFT)][0],
                        CLAIMS[schema.increase(schema.SOFT)][0])
