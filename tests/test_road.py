"""ROAD (Rong et al., ICML 2022): the batched noisy linear imputation (paperlib.imputation)
against pytorch-grad-cam's NoisyLinearImputer and hand-solved cases, its seeded noise, and the
read-out record (paperlib.road) on the hand-built tiny black box."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from test_cam import X_IN, tiny_black_box

from paperlib import explain, metrics
from paperlib.imputation import CORNER_WEIGHT, EDGE_WEIGHT, linear_impute, noisy_linear_impute
from paperlib.masking import n_pixels, pixel_ranks
from paperlib.metrics import MetricConfig, Road, evaluate_batch
from paperlib.road import (
    COMBINED,
    LERF,
    MORF,
    RoadOptions,
    road_column,
    road_noise_fields,
    road_removed,
)

# ---------------------------------------------------------------------------------------------
# The imputation


def _removed_masks(maps: torch.Tensor, b: int, percents=(10, 50, 90)) -> torch.Tensor:
    ranks = pixel_ranks(maps)
    shape = tuple(maps.shape[-2:])
    return torch.cat([road_removed(ranks[b: b + 1], o, p, shape)
                      for p in percents for o in (MORF, LERF)])


# pytorch-grad-cam calls np.argwhere on torch tensors (a NumPy 2 deprecation warning, not ours)
_PEER_WARNING = "ignore:__array_wrap__ must accept context:DeprecationWarning"


@pytest.mark.filterwarnings(_PEER_WARNING)
def test_imputation_agrees_with_pytorch_grad_cam(lite0, lite0_batch):
    road = pytest.importorskip("pytorch_grad_cam.metrics.road")
    images = lite0_batch.images[:2]
    maps = explain(lite0, images, ["gradcam"]).maps["gradcam"]
    reference = road.NoisyLinearImputer(noise=0.0)
    for b in range(2):
        removed = _removed_masks(maps, b)
        ours, info = linear_impute(images[b: b + 1].expand(len(removed), -1, -1, -1), removed)
        assert info.converged and info.iterations[0] <= 20, info.iterations
        for k in range(len(removed)):
            ref = reference(images[b], 1.0 - removed[k])   # its mask: 1 = kept
            assert torch.equal(ours[k][:, removed[k] == 0], images[b][:, removed[k] == 0])
            assert (ours[k] - ref).abs().max().item() < 1e-4


def test_centre_removed_is_the_weighted_mean_of_its_neighbours():
    x = torch.arange(27, dtype=torch.float32).view(1, 3, 3, 3) ** 1.5
    removed = torch.zeros(1, 3, 3)
    removed[0, 1, 1] = 1
    out, info = linear_impute(x, removed)
    w = torch.tensor([[CORNER_WEIGHT, EDGE_WEIGHT, CORNER_WEIGHT],
                      [EDGE_WEIGHT, 0.0, EDGE_WEIGHT],
                      [CORNER_WEIGHT, EDGE_WEIGHT, CORNER_WEIGHT]], dtype=torch.float64)
    expected = (x[0].double() * w).sum(dim=(1, 2))          # the weights sum to 1
    assert torch.allclose(out[0, :, 1, 1].double(), expected, rtol=0, atol=1e-5)
    out[0, :, 1, 1] = x[0, :, 1, 1]
    assert torch.equal(out, x)


@pytest.mark.filterwarnings(_PEER_WARNING)
def test_two_adjacent_removed_pixels_and_a_corner_solved_by_hand():
    # 3x3 image, values v; the centre (1,1) and its right neighbour (1,2) removed.
    v = torch.tensor([[1.0, 2.0, 4.0], [8.0, 0.0, 0.0], [16.0, 32.0, 64.0]])
    removed = torch.zeros(1, 3, 3)
    removed[0, 1, 1] = removed[0, 1, 2] = 1
    e, c = EDGE_WEIGHT, CORNER_WEIGHT
    # centre c0: weight sum 1, the removed neighbour (1,2) is an edge one:
    #   c0 = c*(1 + 4 + 16 + 64) + e*(2 + 8 + 32) + e*r
    # right (1,2): in-image neighbours (0,1)c (0,2)e (1,1)e (2,1)c (2,2)e, weight sum 2/3:
    #   (2/3) r = c*(2 + 32) + e*(4 + 64) + e*c0
    a0 = c * 85 + e * 42
    a1 = c * 34 + e * 68
    # c0 = a0 + e r,  r = (a1 + e c0) * 3/2  ->  c0 = a0 + e*1.5*a1 + 1.5 e^2 c0
    c0 = (a0 + 1.5 * e * a1) / (1 - 1.5 * e * e)
    r = 1.5 * (a1 + e * c0)
    out, _ = linear_impute(v.expand(1, 3, 3, 3), removed)
    for ch in range(3):
        assert out[0, ch, 1, 1].item() == pytest.approx(c0, abs=1e-5)
        assert out[0, ch, 1, 2].item() == pytest.approx(r, abs=1e-5)
    road = pytest.importorskip("pytorch_grad_cam.metrics.road")
    ref = road.NoisyLinearImputer(noise=0.0)(v.expand(3, 3, 3).clone(), 1.0 - removed[0])
    assert torch.allclose(out[0], ref, atol=1e-5)


@pytest.mark.filterwarnings(_PEER_WARNING)
@pytest.mark.parametrize("H, W", [(1, 9), (2, 2), (37, 29), (64, 200)])
def test_odd_and_non_square_sizes_agree_with_pytorch_grad_cam(H, W):
    road = pytest.importorskip("pytorch_grad_cam.metrics.road")
    g = torch.Generator().manual_seed(H * W)
    x = torch.rand(2, 3, H, W, generator=g)
    removed = (torch.rand(2, H, W, generator=g) < 0.8).float()
    removed[1] = 0
    removed[1, H // 2:] = 1                   # a band touching three borders
    out, info = linear_impute(x, removed)
    assert info.converged
    reference = road.NoisyLinearImputer(noise=0.0)
    for i in range(2):
        ref = reference(x[i], 1.0 - removed[i])
        assert (out[i] - ref).abs().max().item() < 1e-5


def test_batched_equals_one_by_one_and_odd_sizes():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(3, 3, 37, 29, generator=g)
    removed = (torch.rand(3, 37, 29, generator=g) < torch.tensor([0.1, 0.5, 0.95])[:, None, None])
    together, info = linear_impute(x, removed)
    assert info.converged
    for i in range(3):
        alone, _ = linear_impute(x[i: i + 1], removed[i: i + 1])
        assert (alone - together[i: i + 1]).abs().max().item() < 1e-5
    # nothing removed: the images; everything removed: no known pixel, zeros
    same, _ = linear_impute(x, torch.zeros(3, 37, 29))
    assert torch.equal(same, x)
    none, _ = linear_impute(x[:1], torch.ones(1, 37, 29))
    assert none.abs().max().item() < 1e-6


def test_noise_is_seeded_and_on_removed_pixels_only():
    x = torch.rand(2, 3, 20, 20, generator=torch.Generator().manual_seed(0))
    removed = torch.zeros(2, 20, 20)
    removed[:, 5:15, 3:12] = 1
    clean = noisy_linear_impute(x, removed, noise=0.0)
    a = noisy_linear_impute(x, removed, noise=0.05, generator=torch.Generator().manual_seed(7))
    b = noisy_linear_impute(x, removed, noise=0.05, generator=torch.Generator().manual_seed(7))
    c = noisy_linear_impute(x, removed, noise=0.05, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    known = (removed == 0)[:, None].expand_as(x)
    assert torch.equal(a[known], x[known])
    d = (a - clean)[~known]
    assert d.abs().min().item() > 0 and 0.04 < d.std().item() < 0.06
    f1 = road_noise_fields([(MORF, 10), (LERF, 10)], 0, (4, 5))
    assert torch.equal(f1, road_noise_fields([(MORF, 10), (LERF, 10)], 0, (4, 5)))
    assert not torch.equal(f1[0], f1[1])


# ---------------------------------------------------------------------------------------------
# The read-out


#: MetricConfig composes the ROAD options.
RoadConfig = MetricConfig


@pytest.fixture
def road_registered():
    """The kit registers ROAD (after the curves)."""
    assert list(metrics.READOUTS)[-1] == "road"
    yield


def test_off_by_default():
    cfg = RoadConfig()
    assert cfg.road_percentiles == () and Road().columns(cfg) == [] and Road().copies(cfg) == ()
    assert {f.name for f in dataclasses.fields(RoadOptions)} == {"road_percentiles",
                                                                  "road_noise", "road_seed"}


@pytest.mark.parametrize("noise", [0.0, 0.01])
def test_readout_on_the_tiny_black_box(road_registered, noise):
    bb = tiny_black_box()
    x = torch.cat([X_IN, X_IN.flip(-1)])
    maps = {"a": torch.tensor([[[0.9, 0.1], [0.4, 0.6]]] * 2),
            "b": torch.tensor([[[0.0, 1.0], [0.2, 0.3]], [[0.5, 0.5], [1.0, 0.0]]])}
    ps = (10, 50, 90)
    cfg = RoadConfig(road_percentiles=ps, road_noise=noise, curve_steps=0, fractions=(50,))
    plain = evaluate_batch(bb, x, maps, config=RoadConfig(curve_steps=0, fractions=(50,)))
    got = evaluate_batch(bb, x, maps, config=cfg)
    assert got.forwards - plain.forwards == 2 * len(ps) * len(maps) * len(x)
    names = [c.name for c in cfg.columns()]
    for p in ps:
        assert road_column(MORF, p) in names and road_column(LERF, p) in names
    assert names[-3:] == [road_column(MORF), road_column(LERF), COMBINED]
    ranks = {m: pixel_ranks(mp) for m, mp in maps.items()}
    fields = road_noise_fields([(o, p) for o in (MORF, LERF) for p in ps], 0, (2, 2))
    for m, r in got.per_method.items():
        for j, (o, p) in enumerate((o, p) for o in (MORF, LERF) for p in ps):
            removed = road_removed(ranks[m], o, p, (2, 2))
            assert int(removed[0].sum()) == n_pixels(p, 4)
            imputed, _ = linear_impute(x, removed)
            imputed = imputed + noise * fields[j] * removed[:, None]
            with torch.no_grad():
                probs = bb.model(imputed).softmax(dim=1)
            expected = probs.gather(1, torch.as_tensor(got.target).view(-1, 1)).view(-1)
            np.testing.assert_allclose(r[road_column(o, p)], expected.numpy(), rtol=0,
                                       atol=1e-6)
        morf = np.mean([r[road_column(MORF, p)] for p in ps], axis=0)
        lerf = np.mean([r[road_column(LERF, p)] for p in ps], axis=0)
        assert np.array_equal(r[road_column(MORF)], morf)
        assert np.array_equal(r[road_column(LERF)], lerf)
        assert np.array_equal(r[COMBINED], (r[road_column(LERF)] - r[road_column(MORF)]) / 2)
    rows = metrics.image_rows(["i0", "i1"], np.array([0, 0]), got, {m: np.zeros(2, bool)
                                                                  for m in maps}, cfg)
    assert all(COMBINED in row and road_column(LERF, 90) in row for row in rows)


def test_copies_are_the_imputed_images_exactly(road_registered):
    bb = tiny_black_box()
    x = torch.cat([X_IN, X_IN.flip(-2)])
    maps = {"a": torch.tensor([[[0.9, 0.1], [0.4, 0.6]], [[0.3, 0.1], [0.2, 0.6]]])}
    cfg = RoadConfig(road_percentiles=(50,), road_noise=0.02, curve_steps=0, fractions=(50,))
    seen = []
    handle = bb.model.register_forward_pre_hook(lambda mod, args: seen.append(args[0].clone()))
    try:
        evaluate_batch(bb, x, maps, config=cfg)
    finally:
        handle.remove()
    # after the clean forward, per image: the soft map's copy, top-50%'s, then ROAD's two
    copies = torch.cat(seen[1:]).view(2, 4, 3, 2, 2)
    ranks = pixel_ranks(maps["a"])
    fields = road_noise_fields([(MORF, 50), (LERF, 50)], 0, (2, 2))
    for j, o in enumerate((MORF, LERF)):
        removed = road_removed(ranks, o, 50, (2, 2))
        imputed, _ = linear_impute(x, removed)
        imputed = imputed + 0.02 * fields[j] * removed[:, None]
        assert torch.equal(copies[:, 2 + j], imputed)


@pytest.mark.parametrize("kwargs, match", [
    ({"road_percentiles": (0, 50)}, r"road_percentiles are whole percentages in \(0, 100\); "
                                    r"got \[0\]"),
    ({"road_percentiles": (50, 100)}, r"got \[100\]"),
    ({"road_percentiles": (12.5,)}, r"got \[12.5\]"),
    ({"road_percentiles": (10, 10)}, "must not repeat"),
    ({"road_percentiles": "10"}, "must be a sequence"),
    ({"road_noise": -0.1}, r"road_noise must be a finite number >= 0, got -0.1"),
    ({"road_noise": float("nan")}, "road_noise"),
    ({"road_seed": -1}, r"road_seed must be an integer >= 0, got -1"),
    ({"road_seed": 1.5}, "road_seed"),
])
def test_option_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RoadConfig(**kwargs)
    cfg = RoadConfig(road_percentiles=[20, 10], road_noise=0, road_seed=np.int64(3))
    assert cfg.road_percentiles == (20, 10) and cfg.road_noise == 0.0 and cfg.road_seed == 3
    assert cfg.key()["road_percentiles"] == [20, 10]
