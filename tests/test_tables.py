"""Tables 3 and 4, the paired Wilcoxon table, the claim and trend checks: hand-computed values."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from paperlib import tables
from paperlib.paper_reference import PAPER_TABLE4
from paperlib.stats import bootstrap_ci

CLAIM_COLUMNS = ["variant", "baseline", "metric", "variant - baseline", "p (Holm)", "verdict"]
WT_COLUMNS = ["metric", "baseline", "variant", "mean_diff", "statistic", "p", "p_holm"]
KS = [5, 10, 20, 25, 50]


# --------------------------------------------------------------------------------------------
# claim_check
# --------------------------------------------------------------------------------------------

def _wt(rows):
    return pd.DataFrame(rows, columns=WT_COLUMNS)


def test_claim_check_verdicts_and_dropped_metrics():
    wt = _wt([
        # drop_soft: claimed direction -1; -3 < 0 and 0.01 < 0.05 -> better
        ("drop_soft", "gradcam", "att", -3.0, 0.0, 0.004, 0.01),
        # increase_soft: claimed +1; +5 > 0, 0.049 < 0.05 -> better
        ("increase_soft", "gradcam", "att", 5.0, 1.0, 0.02, 0.049),
        # deletion_auc: claimed -1; +0.1 is against the claim, significant -> worse
        ("deletion_auc", "gradcam", "att", 0.1, 2.0, 0.0005, 0.001),
        # insertion_auc: p_holm exactly alpha is NOT significant (test is p_holm < alpha)
        ("insertion_auc", "gradcam", "att", -0.2, 3.0, 0.01, 0.05),
        # drop_top20: raw p small, but only the Holm p counts -> no significant difference
        ("drop_top20", "gradcam", "att", -1.0, 4.0, 0.001, 0.2),
        # a metric without a claim (Table 4 read-out) is dropped
        ("O_top5", "gradcam", "att", -9.0, 0.0, 0.0001, 0.0001),
        # insertion_auc: claimed +1; +0.3 significant -> better
        ("insertion_auc", "scorecam", "att", 0.3, 5.0, 0.01, 0.02),
        # drop_top20: claimed -1; +2 significant -> worse
        ("drop_top20", "scorecam", "att2", 2.0, 6.0, 0.01, 0.03),
    ])
    out = tables.claim_check(wt)
    assert list(out.columns) == CLAIM_COLUMNS
    expected = pd.DataFrame([
        ("att", "gradcam", "Average Drop", -3.0, 0.01, "better"),
        ("att", "gradcam", "% Increase", 5.0, 0.049, "better"),
        ("att", "gradcam", "deletion AUC", 0.1, 0.001, "worse"),
        ("att", "gradcam", "insertion AUC", -0.2, 0.05, "no significant difference"),
        ("att", "gradcam", "Average Drop, top 20% kept", -1.0, 0.2, "no significant difference"),
        ("att", "scorecam", "insertion AUC", 0.3, 0.02, "better"),
        ("att2", "scorecam", "Average Drop, top 20% kept", 2.0, 0.03, "worse"),
    ], columns=CLAIM_COLUMNS)
    pd.testing.assert_frame_equal(out, expected)


def test_claim_check_alpha_is_a_strict_threshold():
    wt = _wt([("drop_soft", "gradcam", "att", -3.0, 0.0, 0.004, 0.01),
              ("increase_soft", "gradcam", "att", -5.0, 0.0, 0.001, 0.009)])
    # alpha = 0.01: p_holm 0.01 is no longer significant; 0.009 is (and -5 is against +1: worse)
    assert tables.claim_check(wt, alpha=0.01)["verdict"].tolist() == [
        "no significant difference", "worse"]
    # alpha = 0.0101: both significant
    assert tables.claim_check(wt, alpha=0.0101)["verdict"].tolist() == ["better", "worse"]


def test_claim_check_without_claimed_metrics_is_empty():
    wt = _wt([("O_top5", "gradcam", "att", -1.0, 0.0, 0.01, 0.01)])
    assert tables.claim_check(wt).empty


# --------------------------------------------------------------------------------------------
# wilcoxon_table
# --------------------------------------------------------------------------------------------

FILES = [f"n{i:02d}_img.JPEG" for i in range(6)]


def _per_image(method, order, **columns):
    """Rows of one method, given in the file order ``order`` (indices into FILES)."""
    return pd.DataFrame({"file": [FILES[i] for i in order], "method": method,
                         **{c: [v[i] for i in order] for c, v in columns.items()}})


def _wilcoxon_frame():
    base_drop = np.array([10.0, 20.0, 30.0, 40.0, 50.0, 60.0])
    base_inc = np.array([0.0, 100.0, 0.0, 100.0, 50.0, 25.0])
    # att_a - gradcam on drop_soft: -1..-6 (all one sign, distinct ranks)
    a_drop = base_drop - np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    # att_a - gradcam on increase_soft: 1, -2, 3, 4, 5, 6
    a_inc = base_inc + np.array([1.0, -2.0, 3.0, 4.0, 5.0, 6.0])
    # att_b - gradcam on drop_soft: +0.5 .. +3 (all positive, distinct); increase_soft: all 0
    b_drop = base_drop + np.array([0.5, 1.0, 1.5, 2.0, 2.5, 3.0])
    b_inc = base_inc.copy()
    # every method's rows in a different file order, and the methods interleaved
    frame = pd.concat([
        _per_image("att_a", [1, 5, 2, 0, 3, 4], drop_soft=a_drop, increase_soft=a_inc),
        _per_image("gradcam", [3, 0, 5, 1, 4, 2], drop_soft=base_drop, increase_soft=base_inc),
        _per_image("att_b", [4, 2, 0, 5, 1, 3], drop_soft=b_drop, increase_soft=b_inc),
    ], ignore_index=True)
    return frame.sample(frac=1.0, random_state=7).reset_index(drop=True)


def test_wilcoxon_table_exact_values_pairing_and_holm():
    frame = _wilcoxon_frame()
    wt = tables.wilcoxon_table(frame, ["gradcam", "not_run"], ["att_a", "att_b", "missing"])
    assert list(wt.columns) == WT_COLUMNS
    # order: per column, per baseline, per variant; the missing methods give no row
    assert list(zip(wt["metric"], wt["baseline"], wt["variant"])) == [
        ("drop_soft", "gradcam", "att_a"), ("drop_soft", "gradcam", "att_b"),
        ("increase_soft", "gradcam", "att_a"), ("increase_soft", "gradcam", "att_b")]
    # mean_diff = variant - baseline, paired by file
    assert wt["mean_diff"].tolist() == pytest.approx([-3.5, 1.75, 17.0 / 6.0, 0.0], abs=1e-12)
    # exact null distribution of the signed-rank statistic for n = 6: 2^6 = 64 sign patterns.
    # all six differences of one sign: T = min(R+, R-) = 0, P(T <= 0) = 1/64, two-sided 2/64.
    # 1, -2, 3, 4, 5, 6: R- = 2 -> T = 2; subsets of {1..6} with rank sum <= 2: {}, {1}, {2}
    # -> P = 3/64, two-sided 6/64. All-zero differences: p = 1 (and statistic 0).
    assert wt["statistic"].tolist() == [0.0, 0.0, 2.0, 0.0]
    assert wt["p"].tolist() == pytest.approx([2 / 64, 2 / 64, 6 / 64, 1.0], abs=1e-12)
    # Holm over the 4 rows: sorted p 1/32, 1/32, 3/32, 1 -> 4/32, max(4/32, 3/32) = 4/32,
    # max(4/32, 2 * 3/32) = 6/32, max(6/32, 1 * 1) = 1
    assert wt["p_holm"].tolist() == pytest.approx([0.125, 0.125, 0.1875, 1.0], abs=1e-12)


def test_wilcoxon_table_matches_scipy_on_the_differences():
    frame = _wilcoxon_frame()
    wt = tables.wilcoxon_table(frame, ["gradcam"], ["att_a"], columns=["increase_soft"])
    d = np.array([1.0, -2.0, 3.0, 4.0, 5.0, 6.0])
    ref = sps.wilcoxon(d)
    assert len(wt) == 1
    assert wt["statistic"].iloc[0] == pytest.approx(float(ref.statistic))
    assert wt["p"].iloc[0] == pytest.approx(float(ref.pvalue))
    # one test: Holm changes nothing
    assert wt["p_holm"].iloc[0] == pytest.approx(wt["p"].iloc[0])


def test_wilcoxon_table_without_any_pair_is_empty():
    frame = _wilcoxon_frame()
    wt = tables.wilcoxon_table(frame, ["not_run"], ["att_a"])
    assert wt.empty and "p_holm" not in wt.columns


# --------------------------------------------------------------------------------------------
# trend_check
# --------------------------------------------------------------------------------------------

def _t4(method, values):
    row = {"method": method}
    for prefix, vals in values.items():
        for k, v in zip(KS, vals):
            row[f"{prefix}{k}"] = v
    return pd.DataFrame([row])


#: One made-up Table 4 row per read-out prefix (values at k = 5, 10, 20, 25, 50).
T4_VALUES = {"O_top": [1.0, 2.0, 3.0, 4.0, 5.0],            # increasing, like the paper
             "drop_top": [7.0, 7.0, 7.0, 7.0, 7.0],         # constant
             "increase_top": [50.0, 40.0, 30.0, 20.0, 10.0],  # decreasing
             "agree_top": [10.0, 20.0, 15.0, 30.0, 40.0]}   # one step down


def test_trend_check_exact_values():
    assert set(T4_VALUES) == set(tables.READOUTS)
    paper = [PAPER_TABLE4["gradcam"][k] for k in KS]
    assert all(b > a for a, b in zip(paper, paper[1:]))   # the paper's row increases with k
    t4 = pd.concat([_t4("other", {p: [0.0] * 5 for p in T4_VALUES}), _t4("gradcam", T4_VALUES)],
                   ignore_index=True)
    out = tables.trend_check(t4, KS, "gradcam").set_index("readout")
    assert list(out.index) == list(tables.READOUTS.values())
    for prefix, label in tables.READOUTS.items():
        assert out.loc[label, "ours"] == T4_VALUES[prefix]
        assert out.loc[label, "paper"] == paper

    o, drop = out.loc["mean O (%)"], out.loc["Average Drop (%)"]
    inc, agree = out.loc["% Increase"], out.loc["top-1 agreement (%)"]
    # O: monotone increasing like the paper -> Spearman 1, same direction every step.
    assert o["spearman"] == pytest.approx(1.0)
    assert bool(o["same_direction_every_step"]) is True
    # |ours - paper| is largest at k = 50: 5 - paper[50]
    assert o["max_abs_diff"] == pytest.approx(abs(5.0 - paper[-1]), abs=1e-12)
    assert o["pearson"] == pytest.approx(float(np.corrcoef(T4_VALUES["O_top"], paper)[0, 1]))
    # constant read-out: no ranking -> NaN correlations; zero steps never go against the paper
    assert math.isnan(drop["spearman"]) and math.isnan(drop["pearson"])
    assert bool(drop["same_direction_every_step"]) is True
    assert drop["max_abs_diff"] == pytest.approx(7.0 - paper[0], abs=1e-12)
    # decreasing: Spearman -1, every step against the paper
    assert inc["spearman"] == pytest.approx(-1.0)
    assert bool(inc["same_direction_every_step"]) is False
    assert inc["max_abs_diff"] == pytest.approx(50.0 - paper[0], abs=1e-12)
    # ranks 1, 3, 2, 4, 5 vs 1..5: sum d^2 = 2 -> rho = 1 - 6 * 2 / (5 * 24) = 0.9
    assert agree["spearman"] == pytest.approx(0.9)
    assert bool(agree["same_direction_every_step"]) is False
    assert agree["max_abs_diff"] == pytest.approx(40.0 - paper[-1], abs=1e-12)


def test_trend_check_uses_only_the_requested_ks():
    t4 = _t4("gradcam", T4_VALUES)
    out = tables.trend_check(t4, [5, 20, 50], "gradcam").set_index("readout")
    assert out.loc["top-1 agreement (%)", "ours"] == [10.0, 15.0, 40.0]
    assert out.loc["top-1 agreement (%)", "paper"] == [PAPER_TABLE4["gradcam"][k]
                                                       for k in (5, 20, 50)]
    # 10, 15, 40 is monotone over these three ks
    assert out.loc["top-1 agreement (%)", "spearman"] == pytest.approx(1.0)
    assert bool(out.loc["top-1 agreement (%)", "same_direction_every_step"]) is True


def test_trend_check_empty_cases():
    t4 = _t4("gradcam", T4_VALUES)
    assert tables.trend_check(t4, [5, 10], "gradcam").empty           # fewer than 3 ks
    assert tables.trend_check(t4, [5, 10, 15], "gradcam").empty       # 15: not in the paper
    assert tables.trend_check(_t4("other", T4_VALUES), KS, "gradcam").empty   # method missing
    assert tables.trend_check(t4, KS, "attention").empty              # no paper row


# --------------------------------------------------------------------------------------------
# table3 / table4 / curves_table
# --------------------------------------------------------------------------------------------

def _rows_frame():
    return pd.DataFrame({
        "file": ["c.JPEG", "a.JPEG", "b.JPEG", "d.JPEG", "b.JPEG", "a.JPEG"],
        "method": ["gradcam", "gradcam", "gradcam", "gradcam", "att", "att"],
        "flat_map": [False, True, False, True, False, True],
        "drop_soft": [10.0, 20.0, 30.0, 60.0, 0.0, 100.0],
        "increase_soft": [0.0, 100.0, 0.0, 0.0, 100.0, 100.0],
        "gain_soft": [0.0, 40.0, 0.0, 0.0, 10.0, 30.0],
        "deletion_auc": [0.1, 0.2, 0.3, 0.4, 0.5, 0.5],
        "insertion_auc": [0.5, 0.5, 0.5, 0.5, 0.25, 0.75],
        **{f"O_top{k}": [0.25, 0.5, 0.75, 0.5, 0.0, 0.0] for k in KS},
        **{f"{p}{k}": [1.0, 2.0, 3.0, 6.0, 4.0, 4.0] for p in ("drop_top", "increase_top",
                                                               "gain_top", "agree_top")
           for k in KS},
    })


def test_table3_exact_cells():
    t3 = tables.table3(_rows_frame(), ["gradcam", "missing", "att"], seed=0)
    assert t3["method"].tolist() == ["gradcam", "att"]   # order of `methods`, missing skipped
    assert t3["n_images"].tolist() == [4, 2]
    assert t3["flat_maps"].tolist() == [2, 1]
    # (10 + 20 + 30 + 60) / 4 = 30; (0 + 100) / 2 = 50
    assert t3["avg_drop"].tolist() == [30.0, 50.0]
    # gradcam: one image of four increased -> 25; att: both -> 100
    assert t3["increase"].tolist() == [25.0, 100.0]
    # Average Gain: 40 / 4 = 10; (10 + 30) / 2 = 20; the paper publishes none
    assert t3["avg_gain"].tolist() == [10.0, 20.0]
    assert t3["paper_avg_gain"].isna().all()
    g = t3.iloc[0]
    assert g["avg_drop_lo"] <= 30.0 <= g["avg_drop_hi"]
    assert g["avg_drop_lo"] < g["avg_drop_hi"]
    ci = bootstrap_ci(np.array([20.0, 30.0, 10.0, 60.0]), seed=0)   # sorted by file: a, b, c, d
    assert (g["avg_drop_lo"], g["avg_drop_hi"]) == (ci.low, ci.high)
    # two images 0 and 100: resample means are 0, 50, 100 with probabilities 1/4, 1/2, 1/4, so
    # the 2.5% and 97.5% quantiles of 2000 draws are 0 and 100
    a = t3.iloc[1]
    assert (a["avg_drop_lo"], a["avg_drop_hi"]) == (0.0, 100.0)
    # constant values: zero-width interval
    assert (a["increase_lo"], a["increase_hi"]) == (100.0, 100.0)
    # the paper's cells stand beside a method with a paper column (gradcam), none beside others
    assert t3["paper_avg_drop"].tolist()[0] == 45.27 and t3["paper_increase"].tolist()[0] == 23.06
    assert t3["paper_avg_drop"].isna().tolist()[1:] == [True] * (len(t3) - 1)


def test_table4_scales_O_and_quotes_the_paper():
    t4 = tables.table4(_rows_frame(), ["att", "gradcam"], KS, seed=0)
    assert t4["method"].tolist() == ["att", "gradcam"]
    assert t4["n_images"].tolist() == [2, 4]
    g = t4.set_index("method").loc["gradcam"]
    for k in KS:
        # O in [0, 1] is shown in %: (0.25 + 0.5 + 0.75 + 0.5) / 4 * 100 = 50
        assert g[f"O_top{k}"] == pytest.approx(50.0)
        # the other read-outs are not rescaled: (1 + 2 + 3 + 6) / 4 = 3
        for p in ("drop_top", "increase_top", "gain_top", "agree_top"):
            assert g[f"{p}{k}"] == pytest.approx(3.0)
            assert g[f"{p}{k}_lo"] <= 3.0 <= g[f"{p}{k}_hi"]
        assert g[f"paper_top{k}"] == PAPER_TABLE4["gradcam"][k]
    a = t4.set_index("method").loc["att"]
    assert a["O_top5"] == 0.0 and a["drop_top5"] == 4.0
    assert (a["drop_top5_lo"], a["drop_top5_hi"]) == (4.0, 4.0)
    assert all(pd.isna(a[f"paper_top{k}"]) for k in KS)


def test_curves_table_exact_cells():
    ct = tables.curves_table(_rows_frame(), ["gradcam", "att", "missing"], seed=0)
    assert list(ct.columns) == ["method", "n_images", "deletion_auc", "deletion_auc_lo",
                                "deletion_auc_hi", "insertion_auc", "insertion_auc_lo",
                                "insertion_auc_hi"]
    assert ct["n_images"].tolist() == [4, 2]
    # (0.1 + 0.2 + 0.3 + 0.4) / 4 = 0.25; (0.5 + 0.5) / 2 = 0.5
    assert ct["deletion_auc"].tolist() == pytest.approx([0.25, 0.5])
    assert ct["insertion_auc"].tolist() == pytest.approx([0.5, 0.5])
    assert (ct["deletion_auc_lo"].iloc[1], ct["deletion_auc_hi"].iloc[1]) == (0.5, 0.5)
    assert ct["deletion_auc_lo"].iloc[0] <= 0.25 <= ct["deletion_auc_hi"].iloc[0]


# --------------------------------------------------------------------------------------------
# formatted / write_table
# --------------------------------------------------------------------------------------------

def _small_table():
    return pd.DataFrame({"method": ["gradcam", "att"], "n_images": [4, 2],
                         "avg_drop": [12.3456, np.nan], "avg_drop_lo": [10.0, np.nan],
                         "avg_drop_hi": [14.999, np.nan],
                         "paper_avg_drop": [np.nan, 9.0],
                         "note": ["ok", np.nan]})


def test_formatted_strings():
    out = tables.formatted(_small_table())
    assert list(out.columns) == ["method", "n_images", "avg_drop", "paper_avg_drop", "note"]
    assert out["avg_drop"].tolist() == ["12.35 [10.00, 15.00]", "n/a"]
    assert out["paper_avg_drop"].tolist() == ["n/a", "9.00"]
    assert out["note"].tolist() == ["ok", ""]
    assert out["method"].tolist() == ["gradcam", "att"]
    assert out["n_images"].tolist() == [4, 2]
    assert tables.formatted(_small_table(), digits=1)["avg_drop"].iloc[0] == "12.3 [10.0, 15.0]"
    # None (as table3 writes when the paper has no value) is "n/a" too
    none_paper = pd.DataFrame({"paper_increase": [None, 1.5]}, dtype=object)
    assert tables.formatted(none_paper)["paper_increase"].tolist() == ["n/a", "1.50"]


def test_write_table_writes_csv_md_tex(tmp_path):
    table = _small_table()
    paths = tables.write_table(table, tmp_path / "sub" / "table3", caption="Table 3: drop")
    assert paths == [tmp_path / "sub" / f"table3.{s}" for s in ("csv", "md", "tex")]
    back = pd.read_csv(paths[0])
    pd.testing.assert_frame_equal(back, table)   # every number, with its bounds
    md = paths[1].read_text()
    assert md.startswith("Table 3: drop\n\n")
    assert "12.35 [10.00, 15.00]" in md and "avg_drop_lo" not in md
    tex = paths[2].read_text()
    assert "\\caption{Table 3: drop}" in tex
    assert "12.35 [10.00, 15.00]" in tex and "avg\\_drop" in tex
    # without a caption the Markdown starts with the table itself
    md2 = tables.write_table(table, tmp_path / "t")[1].read_text()
    assert md2.startswith("|")


def test_wilcoxon_table_refuses_to_pair_different_images():
    import pandas as pd

    base = pd.DataFrame({"file": list("abcdef"), "method": "b", "drop_soft": range(1, 7)})
    var = pd.DataFrame({"file": list("uvwxyz"), "method": "v", "drop_soft": range(2, 8)})
    frame = pd.concat([base, var], ignore_index=True)
    with pytest.raises(ValueError, match="different images"):
        tables.wilcoxon_table(frame, ["b"], ["v"], columns=["drop_soft"])


def test_written_tables_round_floats_to_ten_digits_and_never_truncate(tmp_path, monkeypatch):
    """Committed CSVs write floats at 10 significant digits (two runs differing in the 16th
    digit write the same bytes); a write that fails (a full disk) leaves the old file whole."""
    import errno

    from paperlib import atomic

    frame = pd.DataFrame({"readout": ["mean O (%)"], "pearson": [0.9614822912193476]})
    other = frame.assign(pearson=0.9614822912193475)
    (csv, md, tex) = tables.write_table(frame, tmp_path / "trend")
    first = csv.read_bytes()
    assert first == b"readout,pearson\nmean O (%),0.9614822912\n"
    tables.write_table(other, tmp_path / "trend")
    assert csv.read_bytes() == first

    def full(fd, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fdopen", full)
    with pytest.raises(OSError, match="No space left"):
        tables.write_table(frame.assign(pearson=0.5), tmp_path / "trend")
    assert csv.read_bytes() == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trend.csv", "trend.md", "trend.tex"]


def test_notebook_tables_are_html_with_intervals_on_one_line():
    """paperlib.formatting.styled: the formatted cells in an HTML table without the index,
    nowrap cells, the caption on top, fixed element ids (a saved notebook's output is the same
    on every run)."""
    from paperlib.formatting import styled

    t = pd.DataFrame({"method": ["gradcam"], "avg_drop": [23.17], "avg_drop_lo": [19.6],
                      "avg_drop_hi": [26.7]})
    html = styled(t, "Table 3", name="t3").to_html()
    assert html == styled(t, "Table 3", name="t3").to_html()
    assert '<table id="T_t3">' in html and "<caption>Table 3</caption>" in html
    assert ">23.17 [19.60, 26.70]</td>" in html and "white-space: nowrap" in html
    assert "avg_drop_lo" not in html and "row_heading" not in html
