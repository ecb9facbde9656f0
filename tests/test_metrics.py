"""Metrics: exact values on hand-made scores and on a tiny net whose probabilities are known."""

from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from paperlib import metrics
from paperlib.blackbox import BlackBox


def test_average_drop_and_increase_exact():
    Y = np.array([0.5, 0.8, 0.2, 0.4])
    O = np.array([0.25, 0.9, 0.1, 0.4])
    # per-image drops: 0.25/0.5 = 0.5, 0 (O > Y), 0.1/0.2 = 0.5, 0 (equal) -> mean 0.25
    assert metrics.average_drop(Y, O) == pytest.approx(25.0, abs=1e-12)
    # only the second image increases -> 1/4
    assert metrics.increase(Y, O) == pytest.approx(25.0, abs=1e-12)


def test_n_pixels_rounds_k_percent():
    assert metrics.n_pixels(5, 224 * 224) == 2509      # 2508.8
    assert metrics.n_pixels(50, 224 * 224) == 25088
    assert metrics.n_pixels(25, 16) == 4


@pytest.mark.parametrize("k", metrics.FRACTIONS)
def test_keep_top_keeps_exactly_k_percent(k):
    maps = torch.rand(3, 224, 224)
    maps[1] = 0.5  # all ties
    masks = metrics.keep_top(metrics.pixel_ranks(maps), metrics.n_pixels(k, 224 * 224), (224, 224))
    assert masks.shape == (3, 224, 224)
    assert (masks.flatten(1).sum(1) == metrics.n_pixels(k, 224 * 224)).all()
    kept = maps[0][masks[0] == 1]
    dropped = maps[0][masks[0] == 0]
    assert kept.min() >= dropped.max()


def test_ties_are_broken_by_pixel_index():
    maps = torch.tensor([[[1.0, 2.0, 2.0], [2.0, 0.0, 1.0]]])
    ranks = metrics.pixel_ranks(maps)
    # values in row-major order: 1, 2, 2, 2, 0, 1 -> the three 2s first (indices 1, 2, 3), then
    # the two 1s (indices 0, 5), then 0
    assert ranks.tolist() == [[3, 0, 1, 2, 5, 4]]
    mask = metrics.keep_top(ranks, 2, (2, 3))
    assert mask.tolist() == [[[0.0, 1.0, 1.0], [0.0, 0.0, 0.0]]]


def test_masked_inputs_and_fills():
    x = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).view(2, 3, 2, 2) / 24
    m = torch.tensor([[[1.0, 0.0], [0.5, 0.0]], [[0.0, 1.0], [1.0, 1.0]]])
    black = metrics.masked_inputs(x, m, metrics.fill_images(x, "black"))
    assert torch.equal(black, x * m[:, None])
    assert torch.equal(metrics.masked_inputs(x, m), black)   # fills=None: black
    mean_fill = metrics.fill_images(x, "mean")
    assert torch.allclose(mean_fill[0, :, 1, 1], x[0].mean(dim=(1, 2)))
    mixed = metrics.masked_inputs(x, m, mean_fill)
    assert torch.allclose(mixed[0, :, 1, 0], 0.5 * x[0, :, 1, 0] + 0.5 * x[0].mean(dim=(1, 2)))
    with pytest.raises(ValueError, match="unknown fill"):
        metrics.fill_images(x, "white")


class SumNet(nn.Module):
    """logits = [a * sum(x), 0]: p(class 0) = sigmoid(a * sum(x)), computable by hand."""

    def __init__(self, a: float):
        super().__init__()
        self.a = a
        self.head = nn.Identity()

    def forward(self, x):
        s = self.a * x.flatten(1).sum(1)
        return torch.stack([s, torch.zeros_like(s)], dim=1)


def _tiny_black_box(a: float = 0.5) -> BlackBox:
    model = nn.Sequential(OrderedDict(normalize=nn.Identity(), net=SumNet(a)))
    return BlackBox("sumnet", model, lambda im: im, model.net.head, "net.head", 4,
                    (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), "hand-made")


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def test_evaluate_batch_exact_on_a_hand_computable_net():
    bb = _tiny_black_box(a=0.5)
    x = torch.zeros(1, 3, 2, 2)
    x[0, :, 0, 0] = 1.0          # pixel (0,0): 3 channels of 1
    x[0, :, 1, 1] = 0.5          # pixel (1,1): 3 channels of 0.5
    maps = {"m": torch.tensor([[[1.0, 0.25], [0.0, 0.5]]])}
    cfg = metrics.MetricConfig(fill="black", fractions=(25, 50), curve_steps=4, chunk_size=3)
    s = metrics.evaluate_batch(bb, x, maps, targets=torch.tensor([0]), config=cfg)
    # Y: sum(x) = 3 + 1.5 = 4.5 -> sigmoid(2.25)
    assert s.Y[0] == pytest.approx(_sigmoid(2.25), abs=1e-6)
    r = s.per_method["m"]
    # soft: sum(x * M) = 3 * 1 + 1.5 * 0.5 = 3.75 -> sigmoid(1.875)
    assert r["O_soft"][0] == pytest.approx(_sigmoid(1.875), abs=1e-6)
    # top 25% = 1 pixel = (0,0): sum 3 -> sigmoid(1.5); top 50% = (0,0),(1,1): sigmoid(2.25)
    assert r["O_top25"][0] == pytest.approx(_sigmoid(1.5), abs=1e-6)
    assert r["O_top50"][0] == pytest.approx(_sigmoid(2.25), abs=1e-6)
    assert r["agree_top25"][0] == 1.0  # logit 1.5 > 0: class 0 stays top-1
    # deletion, most salient first (ranks: (0,0), (1,1), (0,1), (1,0)), 4 steps of one pixel:
    # remaining sums 4.5, 1.5, 0, 0, 0
    expected_del = _sigmoid(0.5 * np.array([4.5, 1.5, 0.0, 0.0, 0.0]))
    np.testing.assert_allclose(r["deletion"][0], expected_del, atol=1e-6)
    # insertion onto the blurred image: endpoints are the blurred image and the full image
    assert r["insertion"][0, -1] == pytest.approx(_sigmoid(2.25), abs=1e-6)
    blur_sum = float(metrics.blurred(x).sum())
    assert r["insertion"][0, 0] == pytest.approx(_sigmoid(0.5 * blur_sum), abs=1e-6)
    # AUC: trapezoid over fractions 0, .25, .5, .75, 1
    auc = np.sum((expected_del[1:] + expected_del[:-1]) / 2 * 0.25)
    assert r["deletion_auc"][0] == pytest.approx(auc, abs=1e-6)
    # forwards: clean (1) + shared curve ends (2) + soft (1) + 2 top-k + 2 * 3 inner curve steps
    assert s.forwards == 1 + 2 + 1 + 2 + 6


def test_evaluate_batch_counts_forwards_and_reuses_clean_logits():
    bb = _tiny_black_box()
    x = torch.rand(3, 3, 4, 4)
    maps = {"a": torch.rand(3, 4, 4), "b": torch.rand(3, 4, 4)}
    cfg = metrics.MetricConfig(curve_steps=8, chunk_size=5)
    logits = bb.model(x)
    s = metrics.evaluate_batch(bb, x, maps, config=cfg, clean_logits=logits)
    per_image_method = 1 + len(cfg.fractions) + 2 * (cfg.curve_steps - 1)
    assert s.forwards == 2 * 3 + 2 * 3 * per_image_method
    s2 = metrics.evaluate_batch(bb, x, maps,
                                config=metrics.MetricConfig(curve_steps=8, chunk_size=64))
    for key in ("O_soft", "O_top5", "deletion_auc", "insertion_auc"):
        np.testing.assert_allclose(s.per_method["a"][key], s2.per_method["a"][key], atol=1e-6)


def test_metric_config_rejects_bad_values():
    with pytest.raises(ValueError, match="fill"):
        metrics.MetricConfig(fill="white")
    with pytest.raises(ValueError, match="percentages"):
        metrics.MetricConfig(fractions=(0, 10))
    with pytest.raises(ValueError, match="curve_steps"):
        metrics.MetricConfig(curve_steps=-1)
    # 0: a cheap configuration without deletion / insertion curves (and without their columns)
    cols = metrics.MetricConfig(curve_steps=0).row_schema.columns()
    assert "deletion_auc" not in cols and "del_0" not in cols and "O_top50" in cols
