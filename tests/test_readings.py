"""The fidelity readings of the paper: its numbers in the kit, the untrained module,
SmoothGrad-CAM++ as a map average, the normalised fill, power, Table 4 by scale, the cheap
protocol studies."""

from __future__ import annotations

import csv
import math
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import paperlib
from paperlib import attention, power, protocol, tables
from paperlib.blackbox import BlackBox
from paperlib.cam import gradcampp_weights
from paperlib.evaluation import EvalSettings
from paperlib.hooks import capture_layer, layer_gradients
from paperlib.masking import fill_images, keep_top, masked_inputs, pixel_ranks
from paperlib.paper_reference import PAPER_TABLE2, PAPER_TABLE3, PAPER_TABLE4

SHARED_PAPER = Path(__file__).resolve().parents[2] / "shared" / "paper"


@pytest.mark.skipif(not SHARED_PAPER.is_dir(), reason="../shared/paper not beside the checkout")
def test_every_paper_cell_matches_the_shared_copy():
    with open(SHARED_PAPER / "table3.csv") as f:
        rows = {r["metric"]: r for r in csv.DictReader(f)}
    for col, cells in PAPER_TABLE3.items():
        assert cells["avg_drop"] == float(rows["average_drop_percent"][col])
        assert cells["increase"] == float(rows["percent_increase"][col])
    with open(SHARED_PAPER / "table4.csv") as f:
        for r in csv.DictReader(f):
            k = int(r["top_percent_kept"])
            for col in PAPER_TABLE4:
                assert PAPER_TABLE4[col][k] == float(r[col]), (col, k)
    with open(SHARED_PAPER / "table2.csv") as f:
        rows = {r["metric"]: r for r in csv.DictReader(f)}
    for model, cells in PAPER_TABLE2.items():
        assert cells["mean_accuracy"] == float(rows["mean_accuracy"][model])
        assert cells["top5_error"] == float(rows["top5_error"][model])


def test_each_method_stands_beside_its_paper_column():
    assert tables.paper_column("gradcam") == "gradcam"
    assert tables.paper_column("smoothgradcampp-maps") == "smoothgradcampp"
    for v in ("attention-fixed", "attention-trained", "attention-per-image",
              "attention-untrained"):
        assert tables.paper_column(v) == "ours"
    assert tables.paper_column("scorecam") is None and tables.paper_column("nope") is None
    frame = pd.DataFrame({"file": ["a", "b"] * 2, "method": ["gradcam"] * 2 + ["scorecam"] * 2,
                          "drop_soft": [10.0, 20.0, 5.0, 5.0], "increase_soft": [0.0, 100.0] * 2,
                          "gain_soft": [0.0, 50.0] * 2, "flat_map": [False] * 4})
    t3 = tables.table3(frame, ["gradcam", "scorecam"])
    assert t3["paper_avg_drop"].tolist()[0] == 45.27
    assert t3["paper_increase"].tolist()[0] == 23.06
    assert t3["paper_avg_drop"].isna().tolist()[1]


def test_cbam_reference_spatial_gate_is_one_half_exactly(lite0, lite0_batch):
    p = paperlib.gradient_pass(lite0, lite0_batch.images[:2])
    module = attention.untrained_module(p.A.shape[1], "cbam-reference", 0, "cpu")
    out = module(p.gradcam_terms)
    assert torch.equal(out.spatial, torch.full_like(out.spatial, 0.5))
    # pytorch init: a conv with bias, so the gate varies
    plain = attention.untrained_module(p.A.shape[1], "pytorch", 0, "cpu")(p.gradcam_terms)
    assert plain.spatial.std() > 0
    assert plain.channel.shape == (2, p.A.shape[1])


def test_untrained_maps_are_deterministic_per_seed_and_differ_across_seeds(lite0, lite0_batch):
    x = lite0_batch.images[:2]
    a = paperlib.explain(lite0, x, "attention-untrained", untrained_seed=1)
    attention.untrained_module.cache_clear()
    b = paperlib.explain(lite0, x, "attention-untrained", untrained_seed=1)
    c = paperlib.explain(lite0, x, "attention-untrained", untrained_seed=2)
    assert torch.equal(a["attention-untrained"], b["attention-untrained"])
    assert not torch.equal(a["attention-untrained"], c["attention-untrained"])
    with pytest.raises(ValueError, match="untrained_init"):
        paperlib.explain(lite0, x, "attention-untrained", untrained_init="xavier")


def small_net_black_box() -> BlackBox:
    torch.manual_seed(0)
    net = nn.Sequential(OrderedDict(
        conv=nn.Conv2d(3, 4, 3, padding=1), act=nn.ReLU(), features=nn.Conv2d(4, 5, 3, padding=1),
        act2=nn.ReLU(), pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(), fc=nn.Linear(5, 3)))
    model = nn.Sequential(OrderedDict(normalize=nn.Identity(), net=net)).eval()
    model.requires_grad_(False)
    return BlackBox(name="small", model=model, preprocess=lambda im: torch.zeros(3, 6, 6),
                    target_layer=net.act2, target_layer_name="net.act2", input_size=6,
                    mean=(0.5, 0.5, 0.5), std=(1.0, 1.0, 1.0), weights="seeded")


def test_smoothgradcampp_maps_equals_a_plain_loop_over_the_noisy_copies():
    bb = small_net_black_box()
    x = torch.rand(2, 3, 6, 6, generator=torch.Generator().manual_seed(3))
    n, sigma, seed = 4, 0.15, 7
    ex = paperlib.explain(bb, x, ["smoothgradcampp-maps"], targets=[0, 2], smooth_samples=n,
                          smooth_sigma=sigma, seed=seed, chunk_size=3)
    noise = torch.randn((n, 3, 6, 6), generator=torch.Generator().manual_seed(seed))
    expected = []
    for b, target in enumerate([0, 2]):
        maps = []
        scale = sigma * (x[b].max() - x[b].min())
        for s in range(n):
            xs = (x[b] + scale * noise[s])[None]
            with capture_layer(bb.model, bb.target_layer) as cap, torch.enable_grad():
                logits = bb.model(xs)
                g = layer_gradients(logits, torch.tensor([target]), cap.activations)
            A = cap.activations.detach()
            w = gradcampp_weights(A, g, g * g, g * g * g)
            cam = torch.einsum("bc,bchw->bhw", w, A).clamp(min=0)[0]
            lo, hi = cam.min(), cam.max()
            maps.append((cam - lo) / (hi - lo) if hi > lo else torch.zeros_like(cam))
        expected.append(torch.stack(maps).mean(0))
    torch.testing.assert_close(ex.low_res["smoothgradcampp-maps"], torch.stack(expected),
                               atol=1e-6, rtol=1e-5)
    assert ex.forwards["smoothgradcampp-maps"] == 2 * n


def test_normalised_fill_is_multiplying_the_normalised_tensor(lite0, lite0_batch):
    x = lite0_batch.images[:2]
    norm = lite0.model.get_submodule("normalize")
    fills = fill_images(x, "normalised", lite0.mean)
    binary = keep_top(pixel_ranks(torch.rand(2, *x.shape[-2:])), 5000, tuple(x.shape[-2:]))
    # exactly, for a binary mask (the top-k read-outs, deletion / insertion)
    assert torch.equal(norm(masked_inputs(x, binary, fills)), norm(x) * binary[:, None])
    # to rounding, for a soft map
    soft = torch.rand(2, *x.shape[-2:])
    torch.testing.assert_close(norm(masked_inputs(x, soft, fills)), norm(x) * soft[:, None],
                               atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="normalisation mean"):
        fill_images(x, "normalised")


def test_power_matches_closed_form_cases():
    # textbook: effect size 0.5, alpha 0.05 two-sided, power 0.8 -> 34 pairs (G*Power)
    assert power.images_needed(0.5, 1.0) == 34
    assert power.paired_t_power(0.5, 1.0, 34) >= 0.8 > power.paired_t_power(0.5, 1.0, 33)
    # large n: the normal limit (z_0.975 + z_0.8) * sd / sqrt(n)
    z = 1.959963984540054 + 0.8416212335729143
    assert power.detectable_difference(2.0, 10_000) == pytest.approx(z * 2.0 / 100, rel=1e-3)
    assert power.images_needed(0.0, 1.0) is None


def test_power_table_on_hand_made_differences():
    files = [f"f{i}" for i in range(10)]
    d = np.array([1.0, -1.0] * 5)          # mean 0, sd = sqrt(10/9)
    frame = pd.DataFrame({"file": files * 2, "method": ["gradcam"] * 10 + ["attention-fixed"] * 10,
                          "drop_soft": np.r_[np.full(10, 50.0), 50.0 + d],
                          "increase_soft": np.r_[np.zeros(10), np.zeros(10)]})
    pw = power.power_table(frame, ["gradcam"], ["attention-fixed"],
                           {"gradcam": "gradcam", "attention-fixed": "ours"})
    row = pw[pw["metric"] == "drop_soft"].iloc[0]
    assert row["n_images"] == 10 and row["mean_diff"] == 0.0
    assert row["sd_diff"] == pytest.approx(math.sqrt(10 / 9))
    assert row["paper_gap"] == pytest.approx(42.52 - 45.27)
    assert row["n_needed"] == power.images_needed(42.52 - 45.27, math.sqrt(10 / 9))
    assert row["mdd"] == pytest.approx(power.detectable_difference(math.sqrt(10 / 9), 10))


def test_table4_scale_distances():
    t4 = pd.DataFrame([{"method": "gradcam", **{f"{p}{k}": 2 * PAPER_TABLE4["gradcam"][k]
                                                for p in tables.READOUTS for k in (5, 10, 20, 25,
                                                                                   50)}}])
    scale = tables.table4_scale(t4, (5, 10, 20, 25, 50))
    assert len(scale) == len(tables.READOUTS)
    assert scale["mean_ratio"].tolist() == pytest.approx([2.0] * 4)
    mean_paper = np.mean(list(PAPER_TABLE4["gradcam"].values()))
    assert scale["mean_abs_diff"].tolist() == pytest.approx([mean_paper] * 4)
    assert "within a factor of 2" in tables.scale_verdict(scale).lower()


def test_seed_sweep_table_counts_seeds():
    rows = []
    for seed, shift in ((0, -10.0), (1, 10.0), (2, 0.0)):
        for i in range(8):
            base = 40.0 + i
            rows.append({"untrained_init": "pytorch", "untrained_seed": seed, "file": f"f{i}",
                         "method": "gradcam", "drop_soft": base, "increase_soft": 0.0,
                         "drop_top20": base})
            # seeds 0 and 1: every difference of one sign; seed 2: +0.1, -0.2, +0.3, ... (mixed)
            d = shift + 0.1 * i if shift else (-1) ** i * 0.1 * (i + 1)
            rows.append({"untrained_init": "pytorch", "untrained_seed": seed, "file": f"f{i}",
                         "method": "attention-untrained", "drop_soft": base + d,
                         "increase_soft": 0.0, "drop_top20": base})
    table = protocol.seed_sweep_table(pd.DataFrame(rows))
    drop = table[table["metric"] == "Average Drop"].iloc[0]
    # exact Wilcoxon, 8 same-sign differences: p = 2/256; Holm over 3 seeds: 3 * 2/256 < 0.05
    assert (drop["better"], drop["worse"], drop["no significant difference"]) == (1, 1, 1)
    assert drop["min"] == pytest.approx(np.mean(40 + np.arange(8)) - 10 + 0.35)
    assert drop["gradcam"] == pytest.approx(43.5)


def test_protocol_rows_exist_for_every_fill_and_target(lite0, sample_dataset, tmp_path):
    base = EvalSettings.from_parameters(dict(methods=("gradcam", "attention-fixed"), n_images=2,
                                             batch_size=2))
    rows = protocol.run_protocol(lite0, sample_dataset, base, results_root=tmp_path,
                                 progress=False)
    combos = set(zip(rows["target_mode"], rows["fill"]))
    assert combos == {(t, f) for t in protocol.TARGET_MODES
                      for f in ("black", "normalised", "mean", "blur")}
    assert len(rows) == 8 * 2 * 2
    means, verdicts = protocol.protocol_table(rows, ["gradcam"], ["attention-fixed"])
    assert len(means) == 8 * 2 and set(verdicts["fill"]) == {"black", "normalised", "mean", "blur"}
    changes = protocol.protocol_verdicts(verdicts)
    assert set(changes["metric"]) == {"Average Drop", "% Increase", "Average Drop, top 20% kept"}
    # the black/predicted run equals an ordinary run's soft-map numbers
    label = rows[(rows["target_mode"] == "label") & (rows["fill"] == "black")]
    assert (label["target"] == label["label"]).all()


def test_road_study_settings_name_its_subset():
    """The ROAD study's run: the named subset of the base run's methods (baselines, readings,
    controls whose record allows the studies), at most the base run's images, ROAD at 10..90%
    with the base run's noise and seed, no curves; bad counts refused in one line."""
    base = EvalSettings.from_parameters(dict(
        methods=("gradcam", "scorecam", "opticam", "attention-fixed", "fakecam"), n_images=10,
        road_noise=0.02, road_seed=3))
    s = protocol.road_settings(base)
    assert s.methods == ("gradcam", "attention-fixed", "fakecam")
    assert s.n_images == 10 and protocol.road_settings(base, n_images=4).n_images == 4
    assert protocol.road_settings(EvalSettings.from_parameters({})).n_images == protocol.ROAD_IMAGES
    m = s.metrics
    assert m.road_percentiles == protocol.ROAD_PERCENTILES == tuple(range(10, 100, 10))
    assert (m.road_noise, m.road_seed, m.curve_steps, m.fractions) == (0.02, 3, 0, (20,))
    with pytest.raises(ValueError, match="the ROAD study's n_images must be a count >= 1 or "
                                         "None, got 0"):
        protocol.road_settings(base, n_images=0)


def test_seed_sweep_runs_gradcam_once_on_the_study_images(lite0, sample_dataset, tmp_path,
                                                           monkeypatch):
    """Grad-CAM does not depend on the untrained module's seed or initialisation: one run of it,
    its rows beside every seed's; the sweep and the protocol study run on at most
    ``n_images`` (default :data:`paperlib.protocol.STUDY_IMAGES`) of the base run's images."""
    calls = []
    real = protocol.run_evaluation

    def counting(black_box, dataset, settings, *args, **kwargs):
        calls.append((settings.methods, settings.n_images))
        return real(black_box, dataset, settings, *args, **kwargs)

    monkeypatch.setattr(protocol, "run_evaluation", counting)
    base = EvalSettings.from_parameters(dict(methods=("gradcam",), n_images=3, batch_size=2))
    rows = protocol.run_seed_sweep(lite0, sample_dataset, base, seeds=2, inits=("pytorch",),
                                   results_root=tmp_path, progress=False, n_images=2)
    assert calls == [(("gradcam",), 2), (("attention-untrained",), 2),
                     (("attention-untrained",), 2)]
    g = rows[rows["method"] == "gradcam"]
    per_seed = [list(one.sort_values("file")["drop_soft"])
                for _, one in g.groupby("untrained_seed")]
    assert len(g) == 2 * 2 and per_seed[0] == per_seed[1]
    table = protocol.seed_sweep_table(rows)
    assert set(table["n_images"]) == {2} and set(table["seeds"]) == {2}
    assert protocol.study_images(base, None, protocol.STUDY_IMAGES, "x") == 3
    assert protocol.study_images(EvalSettings.from_parameters({}), None, protocol.STUDY_IMAGES,
                                 "x") == protocol.STUDY_IMAGES
    with pytest.raises(ValueError, match="the protocol study's n_images must be a count >= 1 or "
                                         "None, got 0"):
        protocol.run_protocol(lite0, sample_dataset, base, results_root=tmp_path,
                              progress=False, n_images=0)
