"""Rank agreement between metrics (paperlib.agreement): exact taus on hand-made rows, directions,
bootstrap intervals, determinism, split-half reliability, errors, the facts and the figure."""

from __future__ import annotations

import sys
import time

import numpy as np
import pandas as pd
import pytest

from paperlib.agreement import (
    agreement_facts,
    agreement_heatmap,
    agreement_sentence,
    metric_agreement,
    split_half_reliability,
)

METHODS = ["a", "b", "c", "d"]


def _rows(per_method: dict[str, dict[str, float]], n_images: int = 6, noise: float = 0.0,
          seed: int = 0) -> pd.DataFrame:
    """One row per (file, method): each metric's value is the method's level plus noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_images):
        for m, levels in per_method.items():
            rows.append({"file": f"img{i:03d}.JPEG", "method": m,
                         **{c: v + noise * rng.standard_normal() for c, v in levels.items()}})
    return pd.DataFrame(rows)


# Method quality a > b > c > d. drop (lower is better) and inc (higher is better) rank the same way;
# rev ranks them the opposite way (higher is better but d is best).
LEVELS = {m: {"drop": 10.0 * (k + 1), "inc": 40.0 - 10.0 * k, "rev": 5.0 * k,
              "same_dir": 10.0 * (k + 1)} for k, m in enumerate(METHODS)}
METRICS = {"drop": -1, "inc": +1, "rev": +1}


def _tau(table: pd.DataFrame, a: str, b: str) -> float:
    row = table[(table["metric_a"] == a) & (table["metric_b"] == b)]
    assert len(row) == 1
    return float(row["kendall_tau"].iloc[0])


def test_exact_taus_and_directions():
    t = metric_agreement(_rows(LEVELS), METHODS, METRICS, n_boot=50)
    assert list(t.columns) == ["metric_a", "metric_b", "kendall_tau", "tau_lo", "tau_hi",
                               "n_methods", "n_images"]
    assert len(t) == 3  # unordered pairs of three metrics
    assert _tau(t, "drop", "inc") == pytest.approx(1.0)
    assert _tau(t, "drop", "rev") == pytest.approx(-1.0)
    assert _tau(t, "inc", "rev") == pytest.approx(-1.0)
    assert set(t["n_methods"]) == {4} and set(t["n_images"]) == {6}
    # the same column read with the other direction reverses the ranking
    flipped = metric_agreement(_rows(LEVELS), METHODS, {"drop": -1, "same_dir": +1}, n_boot=20)
    assert _tau(flipped, "drop", "same_dir") == pytest.approx(-1.0)
    # no noise: every resample ranks like the full sample
    assert (t["tau_lo"] == t["kendall_tau"]).all() and (t["tau_hi"] == t["kendall_tau"]).all()


def test_tau_b_with_a_partial_order_matches_scipy():
    from scipy.stats import kendalltau

    levels = {"a": {"x": 1.0, "y": 3.0}, "b": {"x": 2.0, "y": 1.0}, "c": {"x": 3.0, "y": 2.0},
              "d": {"x": 3.0, "y": 4.0}}
    t = metric_agreement(_rows(levels), METHODS, {"x": 1, "y": 1}, n_boot=10)
    expected = kendalltau([1, 2, 3, 3], [3, 1, 2, 4]).statistic
    assert _tau(t, "x", "y") == pytest.approx(expected)
    assert t["tau_lo"].iloc[0] == pytest.approx(expected)  # noiseless: every resample the same


def test_interval_contains_estimate_and_is_seeded():
    frame = _rows(LEVELS, n_images=40, noise=20.0, seed=1)
    t1 = metric_agreement(frame, METHODS, METRICS, n_boot=300, seed=3)
    t2 = metric_agreement(frame.sample(frac=1.0, random_state=5), METHODS, METRICS, n_boot=300,
                          seed=3)
    pd.testing.assert_frame_equal(t1, t2)  # row order of the frame does not matter
    assert ((t1["tau_lo"] <= t1["kendall_tau"]) & (t1["kendall_tau"] <= t1["tau_hi"])).all()
    assert (t1["tau_lo"] < t1["tau_hi"]).any()  # the noise shows in the intervals


def test_only_files_shared_by_every_method_count():
    frame = _rows(LEVELS, n_images=6)
    frame = frame[~((frame["method"] == "b") & (frame["file"] == "img000.JPEG"))]
    t = metric_agreement(frame, METHODS, METRICS, n_boot=10)
    assert set(t["n_images"]) == {5}
    r = split_half_reliability(frame, METHODS, METRICS, n_splits=5)
    assert set(r["n_images"]) == {5}


def test_split_half_reliability():
    r = split_half_reliability(_rows(LEVELS, n_images=9), METHODS, METRICS, n_splits=20)
    assert list(r["metric"]) == ["drop", "inc", "rev"]
    assert (r["mean_tau"] == 1.0).all() and (r["tau_lo"] == 1.0).all()
    assert (r["tau_hi"] == 1.0).all() and set(r["n_splits"]) == {20}
    noisy = _rows(LEVELS, n_images=30, noise=30.0, seed=2)
    r1 = split_half_reliability(noisy, METHODS, METRICS, n_splits=50, seed=7)
    r2 = split_half_reliability(noisy, METHODS, METRICS, n_splits=50, seed=7)
    pd.testing.assert_frame_equal(r1, r2)
    assert (r1["mean_tau"] < 1.0).all()
    assert ((r1["tau_lo"] <= r1["mean_tau"]) & (r1["mean_tau"] <= r1["tau_hi"])).all()


@pytest.mark.parametrize("metrics, message", [
    ({"drop": -1, "nope": +1}, "unknown metric column 'nope'"),
    ({"drop": -1, "inc": 2}, "direction 2 of 'inc'"),
    ({"drop": -1}, "at least two metric columns"),
])
def test_bad_input_is_one_line_error(metrics, message):
    with pytest.raises(ValueError, match=message) as err:
        metric_agreement(_rows(LEVELS), METHODS, metrics, n_boot=5)
    assert "\n" not in str(err.value)


def test_bad_methods_and_duplicates():
    with pytest.raises(ValueError, match=r"method\(s\) \['zz'\] have no rows"):
        split_half_reliability(_rows(LEVELS), ["a", "zz"], METRICS)
    doubled = pd.concat([_rows(LEVELS), _rows(LEVELS)])
    with pytest.raises(ValueError, match="duplicate \\(file, method\\) rows"):
        metric_agreement(doubled, METHODS, METRICS, n_boot=5)


def test_facts_and_sentence():
    frame = _rows(LEVELS, n_images=10, noise=1.0)
    t = metric_agreement(frame, METHODS, METRICS, n_boot=50)
    r = split_half_reliability(frame, METHODS, METRICS, n_splits=10)
    facts = agreement_facts(t, r)
    most = facts["most_agreeing"]
    assert (most["metric_a"], most["metric_b"]) == ("drop", "inc")
    assert facts["least_agreeing"]["kendall_tau"] == pytest.approx(-1.0)
    assert [(p["metric_a"], p["metric_b"]) for p in facts["negative_pairs"]] == [
        ("drop", "rev"), ("inc", "rev")]
    assert set(facts["reliability"]) == {"drop", "inc", "rev"}
    assert facts["n_methods"] == 4 and facts["n_images"] == 10
    text = agreement_sentence(facts, labels={"drop": "Average Drop"})
    assert text.endswith(".") and "\n" not in text
    assert "Average Drop and inc" in text and "2 of 3 pairs" in text


def test_vectorised_bootstrap_is_fast():
    rng = np.random.default_rng(0)
    methods = [f"m{i}" for i in range(17)]
    metrics = {f"c{j}": (-1 if j % 2 else 1) for j in range(10)}
    files = [f"f{i}" for i in range(250)]
    frame = pd.DataFrame({"file": np.repeat(files, len(methods)),
                          "method": np.tile(methods, len(files)),
                          **{c: rng.random(len(files) * len(methods)) for c in metrics}})
    start = time.perf_counter()
    t = metric_agreement(frame, methods, metrics, n_boot=1000)
    assert len(t) == 45
    assert time.perf_counter() - start < 15.0  # ~1 s alone; generous on a loaded machine


def test_heatmap_is_symmetric_and_lazy():
    t = metric_agreement(_rows(LEVELS), METHODS, METRICS, n_boot=10)
    fig = agreement_heatmap(t)
    data = np.asarray(fig.axes[0].images[0].get_array())
    assert data.shape == (3, 3) and np.allclose(data, data.T) and np.allclose(np.diag(data), 1)
    assert len(fig.axes[0].texts) == 9
    assert "matplotlib" in sys.modules  # loaded by the call, not by the import (checked below)


def test_module_imports_without_matplotlib():
    import subprocess

    code = ("import sys, paperlib.agreement, paperlib.calibration, paperlib.literature; "
            "assert 'matplotlib' not in sys.modules; assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
