"""Fast metric forwards (paperlib.forward) and their study (paperlib.precision): the key, the
exact default path, bf16 and compile within stated tolerances of fp32, CUDA-only precisions
refused on a CPU, and the comparison of an fp32 run with a fast run on hand-made rows."""

from __future__ import annotations

import gc
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from paperlib import forward, metrics, precision, tables
from paperlib.evaluation import EvalSettings
from paperlib.masking import blurred, fill_images, keep_top, masked_inputs, n_pixels, pixel_ranks

#: bf16 autocast vs fp32, |delta O| on this test's inputs (2 images, ramp and blob maps): measured
#: at most 0.039 on the development CPU; the bound leaves a factor 2 for other CPUs' bf16 kernels.
#: Over a whole evaluation single images move more (up to 0.31: results/precision.md).
BF16_ATOL = 0.08
#: torch.compile vs eager, fp32 probabilities (measured: < 3e-6 over a whole evaluation).
COMPILE_ATOL = 1e-5


def _maps(batch, n: int = 2) -> dict[str, torch.Tensor]:
    """Two fixed, distinct maps per image (no explanation needed): a ramp and a centred blob."""
    H, W = batch.images.shape[-2:]
    yy, xx = torch.meshgrid(torch.linspace(0, 1, H), torch.linspace(0, 1, W), indexing="ij")
    ramp = (xx * 0.7 + yy * 0.3).expand(n, H, W).clone()
    blob = torch.exp(-((xx - 0.5) ** 2 + (yy - 0.45) ** 2) / 0.05).expand(n, H, W).clone()
    return {"ramp": ramp, "blob": blob}


SMALL = {"fractions": (10, 50), "curve_steps": 2}   # 5 masked copies per image and method


# ---------------------------------------------------------------------------------------------
# Settings and the key


def test_precision_and_compile_are_in_the_results_key():
    base = EvalSettings.from_parameters({})
    assert base.metrics.precision == "fp32" and base.metrics.compile is False
    assert base.key()["metrics"]["precision"] == "fp32"
    assert base.key()["metrics"]["compile"] is False
    keys = {(p, c): EvalSettings.from_parameters({"precision": p, "compile": c}).key()
            for p in ("fp32", "bf16") for c in (False, True)}
    as_text = {repr(sorted(k["metrics"].items())) for k in keys.values()}
    assert len(as_text) == 4                       # every mode its own key
    assert keys[("fp32", False)] == base.key()     # the defaults, spelt out, are the defaults
    # None keeps the default, as for every notebook parameter
    assert EvalSettings.from_parameters({"precision": None, "compile": None}).key() == base.key()
    # the chunk size still changes no number and is still not in the key
    assert EvalSettings.from_parameters({"chunk_size": 4}).key() == base.key()
    described = EvalSettings.from_parameters({"precision": "bf16", "compile": True}).describe()
    assert described["precision"] == "bf16" and described["compile"] is True


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="unknown precision 'fp64'"):
        metrics.MetricConfig(precision="fp64")
    with pytest.raises(ValueError, match="compile must be True or False"):
        metrics.MetricConfig(compile="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="chunk_size must be an integer >= 1, got 0"):
        metrics.MetricConfig(chunk_size=0)
    # tf32 / fp16 are valid names (a CUDA run), refused only against a CPU device
    assert metrics.MetricConfig(precision="fp16").key()["precision"] == "fp16"


@pytest.mark.parametrize("name", ["fp16", "tf32"])
def test_cuda_only_precisions_raise_on_cpu(lite0, lite0_batch, name):
    with pytest.raises(ValueError, match=f"precision='{name}' is only valid on a CUDA device"):
        metrics.evaluate_batch(lite0, lite0_batch.images[:1], _maps(lite0_batch, 1),
                               config=metrics.MetricConfig(precision=name, **SMALL))
    with pytest.raises(ValueError, match="only valid on a CUDA device"):
        forward.fast_probabilities(lite0.model, lite0_batch.images[:1], name)
    assert forward.check_precision("bf16", "cpu") == "bf16"


# ---------------------------------------------------------------------------------------------
# The default path: exactly the plain no_grad forward


def test_default_fp32_path_is_the_plain_forward(lite0, lite0_batch, monkeypatch):
    """The masked copies of 2 images x 1 map are rebuilt by hand in evaluate_batch's order (per
    image: soft, top 10%, top 50%, deletion step 1, insertion step 1) and scored by a direct
    ``torch.no_grad()`` softmax of the model, in the same single chunk: every number equal."""
    def refuse(*args, **kwargs):
        raise AssertionError("the default path must not go through fast_probabilities")

    monkeypatch.setattr(metrics, "fast_probabilities", refuse)
    x = lite0_batch.images[:2]
    maps = {"ramp": _maps(lite0_batch)["ramp"]}
    with torch.no_grad():
        clean = lite0.model(x).float().softmax(dim=1)
    t = clean.argmax(dim=1)
    s = metrics.evaluate_batch(lite0, x, maps, config=metrics.MetricConfig(**SMALL))
    total = x.shape[-1] * x.shape[-2]
    fill, blur = fill_images(x, "black", lite0.mean), blurred(x)
    ranks = pixel_ranks(maps["ramp"])
    masks, fills = [], []
    for b in range(2):
        r = ranks[b: b + 1]
        half = keep_top(r, n_pixels(50, total), x.shape[-2:])[0]
        masks += [maps["ramp"][b], keep_top(r, n_pixels(10, total), x.shape[-2:])[0], half,
                  1 - half, half]
        fills += [fill[b]] * 4 + [blur[b]]
    inputs = masked_inputs(x[[0] * 5 + [1] * 5], torch.stack(masks), torch.stack(fills))
    with torch.no_grad():
        probs = lite0.model(inputs).float().softmax(dim=1)
        ends = lite0.model(torch.cat([fill, blur])).float().softmax(dim=1)
    O = probs.gather(1, t.repeat_interleave(5).view(-1, 1)).view(2, 5).numpy().astype(np.float64)
    agree = (probs.argmax(dim=1) == t.repeat_interleave(5)).view(2, 5).numpy()
    r = s.per_method["ramp"]
    assert np.array_equal(s.Y, clean.gather(1, t.view(-1, 1)).view(-1).numpy().astype(np.float64))
    assert np.array_equal(r["O_soft"], O[:, 0])
    assert np.array_equal(r["O_top10"], O[:, 1])
    assert np.array_equal(r["O_top50"], O[:, 2])
    assert np.array_equal(r["agree_top10"], agree[:, 1].astype(np.float64))
    assert np.array_equal(r["agree_top50"], agree[:, 2].astype(np.float64))
    e = ends.gather(1, torch.cat([t, t]).view(-1, 1)).view(-1).numpy().astype(np.float64)
    assert np.array_equal(r["deletion"], np.column_stack([s.Y, O[:, 3], e[:2]]))
    assert np.array_equal(r["insertion"], np.column_stack([e[2:], O[:, 4], s.Y]))


# ---------------------------------------------------------------------------------------------
# bf16 autocast


def test_bf16_evaluate_batch_is_close_to_fp32(lite0, lite0_batch):
    x, maps = lite0_batch.images[:2], _maps(lite0_batch)
    cfg = {"fractions": (5, 20, 50), "curve_steps": 4}
    exact = metrics.evaluate_batch(lite0, x, maps, config=metrics.MetricConfig(**cfg))
    fast = metrics.evaluate_batch(lite0, x, maps,
                                  config=metrics.MetricConfig(precision="bf16", **cfg))
    assert fast.forwards == exact.forwards
    assert np.array_equal(fast.Y, exact.Y)              # the clean forward stays fp32
    assert np.array_equal(fast.target, exact.target)
    moved = 0.0
    for m in maps:
        for col in ["O_soft", "O_top5", "O_top20", "O_top50", "deletion", "insertion"]:
            a, b = exact.per_method[m][col], fast.per_method[m][col]
            assert np.isfinite(b).all()
            np.testing.assert_allclose(b, a, rtol=0, atol=BF16_ATOL, err_msg=f"{m} {col}")
            moved = max(moved, float(np.abs(b - a).max()))
        for col in ["deletion_auc", "insertion_auc"]:
            np.testing.assert_allclose(fast.per_method[m][col], exact.per_method[m][col],
                                       rtol=0, atol=BF16_ATOL)
    assert moved > 0  # autocast did run in bfloat16


# ---------------------------------------------------------------------------------------------
# torch.compile


def _compiler_usable() -> bool:
    return any(shutil.which(c) for c in ("g++", "c++", "clang++"))


def test_compiled_forward_is_cached_per_model_and_freed_with_it():
    net = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten()).eval()
    f1, f2 = forward.compiled_forward(net), forward.compiled_forward(net)
    assert net in forward._COMPILED and len(forward._COMPILED[net]) == 1  # one compile
    assert f1 is not f2
    forward.compiled_forward(net, dynamic=True)
    assert set(forward._COMPILED[net]) == {False, True}
    before = len(forward._COMPILED)
    del net, f1, f2
    gc.collect()
    assert len(forward._COMPILED) == before - 1  # nothing keeps the model alive


def test_padding_keeps_every_forward_at_chunk_size(monkeypatch):
    seen: list[int] = []

    class Recorder(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(x.shape[0])
            return torch.stack([x.mean(dim=(1, 2, 3)), -x.mean(dim=(1, 2, 3))], dim=1)

    x = torch.rand(7, 3, 4, 4)
    net = Recorder()
    # stand-in for the compiled callable: the padding logic alone, without compiling
    monkeypatch.setattr(forward, "compiled_forward", lambda model, dynamic=False: model)
    p = forward.fast_probabilities(net, x, "fp32", compile=True, chunk_size=3)
    assert seen == [3, 3, 3]                            # 7 inputs -> 3 + 3 + (1 padded to 3)
    torch.testing.assert_close(p, net(x).softmax(dim=1), rtol=0, atol=0)


@pytest.mark.skipif(not _compiler_usable(), reason="torch.compile needs a C++ compiler on CPU")
def test_compiled_evaluate_batch_matches_eager(lite0, lite0_batch):
    x, maps = lite0_batch.images[:2], {"ramp": _maps(lite0_batch)["ramp"]}
    # 10 masked copies in chunks of 4 (the last padded) and the 4 curve ends: one batch shape
    cfg = {**SMALL, "chunk_size": 4}
    exact = metrics.evaluate_batch(lite0, x, maps, config=metrics.MetricConfig(**cfg))
    try:
        fast = metrics.evaluate_batch(lite0, x, maps,
                                      config=metrics.MetricConfig(compile=True, **cfg))
    except Exception as err:  # inductor unusable here (compiler, headers): say so, not fail
        if "compile" in type(err).__module__ or "inductor" in repr(err).lower():
            pytest.skip(f"torch.compile unusable here: {err!r:.200}")
        raise
    for col in ["O_soft", "O_top10", "O_top50", "deletion", "insertion", "agree_top10"]:
        a, b = exact.per_method["ramp"][col], fast.per_method["ramp"][col]
        np.testing.assert_allclose(b, a, rtol=0, atol=COMPILE_ATOL, err_msg=col)


# ---------------------------------------------------------------------------------------------
# The comparison of an fp32 run with a fast run, on hand-made rows


def _rows(n: int, seed: int) -> pd.DataFrame:
    """Rows of RowSchema's columns for a baseline and a variant on n images (no curves)."""
    rng = np.random.default_rng(seed)
    out = []
    for m, shift in (("gradcam", 0.0), ("attention-fixed", 0.3)):
        Y = rng.uniform(0.5, 1.0, n)
        O = np.clip(Y * rng.uniform(0.1, 0.9, n) - shift * 0.1, 0.01, 1)
        for i in range(n):
            row = {"file": f"img{i:03d}.JPEG", "label": i, "target": i, "method": m, "Y": Y[i],
                   "flat_map": False}
            for tag in ["soft", "top20"]:
                row[f"O_{tag}"] = O[i]
                row[f"drop_{tag}"] = float(metrics.drop_terms(Y[i:i + 1], O[i:i + 1])[0])
                row[f"increase_{tag}"] = float(metrics.increase_terms(Y[i:i + 1],
                                                                      O[i:i + 1])[0])
                row[f"gain_{tag}"] = float(metrics.gain_terms(Y[i:i + 1], O[i:i + 1])[0])
            row["agree_top20"] = 100.0
            out.append(row)
    cols = list(metrics.MetricConfig(fractions=(20,), curve_steps=0).row_schema.columns())
    return pd.DataFrame(out)[cols]


def test_compare_runs_exact_values():
    exact = _rows(40, seed=1)
    fast = exact.copy()
    # one image of gradcam moves: O_soft + 0.01, so its drop term moves by -0.01 / Y * 100
    i = int(np.flatnonzero((fast["method"] == "gradcam") & (fast["file"] == "img007.JPEG"))[0])
    Y = fast.loc[i, "Y"]
    fast.loc[i, "O_soft"] += 0.01
    fast.loc[i, "drop_soft"] = float(metrics.drop_terms([Y], [fast.loc[i, "O_soft"]])[0])
    c = precision.compare_runs(exact, fast, mode="bf16", baselines=["gradcam"],
                               variants=["attention-fixed"])
    assert c.n_images == 40
    t = c.columns.set_index(["method", "column"])
    o = t.loc[("gradcam", "O_soft")]
    assert o["abs_max"] == pytest.approx(0.01, abs=1e-15)
    assert o["abs_median"] == 0.0 and o["changed_images"] == 1
    d = t.loc[("gradcam", "drop_soft")]
    expected = (fast.loc[i, "drop_soft"] - exact.loc[i, "drop_soft"]) / 40
    assert d["delta"] == pytest.approx(expected, rel=1e-12)
    t3 = tables.table3(exact, ["gradcam"]).iloc[0]
    assert d["fp32"] == pytest.approx(t3["avg_drop"], rel=1e-12)
    assert d["fp32_ci_width"] == pytest.approx(t3["avg_drop_hi"] - t3["avg_drop_lo"], rel=1e-12)
    assert d["delta_over_width"] == pytest.approx(abs(expected) / d["fp32_ci_width"], rel=1e-12)
    # Table 4's O read-out is in percent; nothing else moved
    assert t.loc[("gradcam", "O_top20"), "delta"] == 0.0
    assert (t.loc["attention-fixed", "abs_max"] == 0).all()
    assert c.verdicts_changed == 0 and len(c.verdicts) == 3   # AD, % Increase, AD top 20%
    assert c.max_abs_O() == pytest.approx(0.01, abs=1e-15)


def test_compare_runs_reports_a_changed_verdict_and_refuses_unpaired_rows():
    exact = _rows(40, seed=2)
    var, base = exact["method"] == "attention-fixed", exact["method"] == "gradcam"
    # fp32: the variant's drop is the baseline's + 5 on every image ("worse" on Average Drop);
    # fast: the variant's drops are all 0 ("better")
    exact.loc[var, "drop_soft"] = exact.loc[base, "drop_soft"].to_numpy() + 5.0
    fast = exact.copy()
    fast.loc[var, "drop_soft"] = 0.0
    c = precision.compare_runs(exact, fast, baselines=["gradcam"], variants=["attention-fixed"])
    v = c.verdicts.set_index("metric")
    assert v.loc["Average Drop", "verdict_fp32"] == "worse"
    assert v.loc["Average Drop", "verdict_fast"] == "better"
    assert c.verdicts_changed == 1 and bool(v.loc["Average Drop", "changed"])
    assert not v.loc["% Increase", "changed"]
    with pytest.raises(ValueError, match="different \\(file, method\\) rows"):
        precision.compare_runs(exact, fast.iloc[1:], baselines=["gradcam"],
                               variants=["attention-fixed"])
    moved = fast.copy()
    moved["Y"] += 0.01
    with pytest.raises(ValueError, match="different Y"):
        precision.compare_runs(exact, moved, baselines=["gradcam"], variants=["attention-fixed"])


# ---------------------------------------------------------------------------------------------
# One measurement, end to end, on 2 images


def test_measure_interleaves_modes_on_the_same_explanations(lite0, sample_dataset, tmp_path):
    from paperlib.evaluation import run_evaluation

    params = {"n_images": 2, "batch_size": 1, "methods": ["gradcam", "attention-fixed"],
              "curve_steps": 2, "fractions": (20,)}
    modes = [precision.Mode("fp32"), precision.Mode("bf16")]
    logged: list[str] = []
    result = precision.measure(lite0, sample_dataset, modes, params, tmp_path, log=logged.append)
    assert list(result.runs) == ["fp32", "bf16"]
    assert [len(r.batches) for r in result.runs.values()] == [2, 2]
    assert len(logged) == 4                       # one line per (round, mode)
    # the fp32 run is the plain evaluation: same rows as run_evaluation without the explainer
    plain = run_evaluation(lite0, sample_dataset, EvalSettings.from_parameters(params), tmp_path,
                           progress=False, name="plain")
    key = ["file", "method"]
    pd.testing.assert_frame_equal(
        result.reference.frame.sort_values(key).reset_index(drop=True),
        plain.frame.sort_values(key).reset_index(drop=True))
    fast = result.runs["bf16"].frame
    assert np.array_equal(fast.sort_values(key)["Y"], plain.frame.sort_values(key)["Y"])
    c = precision.compare_runs(result.reference.frame, fast, mode="bf16")
    assert c.n_images == 2 and set(c.columns["method"]) == {"gradcam", "attention-fixed"}
    speed = result.speed().set_index("mode")
    assert speed.loc["fp32", "metric_speedup"] == 1.0
    assert np.isfinite(speed.loc["bf16", "evaluation_speedup"])
    written = precision.write_report(result, [c], tmp_path / "out")
    text = written[2].read_text()
    summ = pd.read_csv(written[1])
    assert list(summ["mode"]) == ["bf16"] and summ["safe"].dtype == bool
    assert "## `bf16` per method" in text and ("Fastest safe mode" in text or "No fast" in text)
    frame = pd.read_csv(written[0])
    assert len(frame) == len(c.columns) and set(frame["mode"]) == {"bf16"}
    with pytest.raises(ValueError, match="first mode must be fp32 eager"):
        precision.measure(lite0, sample_dataset, modes[::-1], params, tmp_path)
