"""Opti-CAM: one Adam step against an independent computation, the start's uniform weights, the
objective rising, chunking, option checks, and the hygiene of a real run on Lite0."""

from __future__ import annotations

import math
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import paperlib.opticam  # noqa: F401  (registers "opticam")
from paperlib import explain
from paperlib.blackbox import BlackBox, Normalize
from paperlib.cam import METHODS, ExplainOptions, gradient_pass
from paperlib.opticam import OptiCAMOptions, opticam_optimise

SIZE = 8  # toy input: (B, 3, 8, 8); target layer (B, 3, 4, 4)


def toy_black_box() -> BlackBox:
    """conv (the target layer, pre-ReLU: A has negative values) -> ReLU -> GAP -> Linear(3, 4),
    seeded weights, float64. Parameters keep requires_grad=True, so a stray backward would fill
    their .grad."""
    gen = torch.Generator().manual_seed(0)
    net = nn.Sequential(OrderedDict(features=nn.Conv2d(3, 3, 3, stride=2, padding=1),
                                    act=nn.ReLU(), pool=nn.AdaptiveAvgPool2d(1),
                                    flatten=nn.Flatten(), fc=nn.Linear(3, 4)))
    with torch.no_grad():
        for prm in net.parameters():
            prm.copy_(torch.randn(prm.shape, generator=gen))
    model = nn.Sequential(OrderedDict(normalize=Normalize((0.5,) * 3, (0.25,) * 3),
                                      net=net)).double().eval()
    return BlackBox(name="toy", model=model, preprocess=lambda im: torch.zeros(3, SIZE, SIZE),
                    target_layer=net.features, target_layer_name="net.features",
                    input_size=SIZE, mean=(0.5,) * 3, std=(0.25,) * 3, weights="seeded")


def toy_images(n: int = 3) -> torch.Tensor:
    return torch.rand(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1),
                      dtype=torch.float64)


def _plain_map(A: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """S(u) written out independently: softmax weights, ReLU'd channels, bilinear, min-max."""
    w = torch.exp(u) / torch.exp(u).sum()
    s = (w[:, None, None] * torch.relu(A)).sum(dim=0)
    s = F.interpolate(s[None, None], size=(SIZE, SIZE), mode="bilinear",
                      align_corners=False)[0, 0]
    return (s - s.min()) / (s.max() - s.min())


def _logit(bb: BlackBox, x: torch.Tensor, A: torch.Tensor, u: torch.Tensor, c: int):
    return bb.model((x * _plain_map(A, u))[None])[0, c]


def test_registered():
    spec = METHODS["opticam"]
    assert (spec.label, spec.role, spec.extra_forwards, spec.options) == \
        ("Opti-CAM", "extra", True, OptiCAMOptions)
    assert OptiCAMOptions() == OptiCAMOptions(50, 0.1, "logit")


def test_zero_iterations_is_the_channel_mean():
    bb, x = toy_black_box(), toy_images()
    p = gradient_pass(bb, x)
    assert bool((p.A < 0).any())  # the ReLU on A matters here
    ex = explain(bb, x, methods=["opticam"], opticam_iterations=0)
    for b in range(x.shape[0]):
        expected = _plain_map(p.A[b], torch.zeros(3, dtype=torch.float64))
        torch.testing.assert_close(ex["opticam"][b], expected, atol=1e-12, rtol=0)
    assert ex.forwards["opticam"] == 0


@pytest.mark.parametrize("objective", ["logit", "probability"])
def test_one_adam_step_by_hand(objective):
    """Adam's first step from u0 is u0 + lr * g / (|g| + eps), g = d objective / du at u0."""
    bb, x = toy_black_box(), toy_images()
    p = gradient_pass(bb, x)
    lr, eps = 0.1, 1e-8
    ex = explain(bb, x, methods=["opticam"], opticam_iterations=1, opticam_lr=lr,
                 opticam_objective=objective)
    for b in range(x.shape[0]):
        c = int(p.targets[b])
        u0 = torch.full((3,), 0.5, dtype=torch.float64, requires_grad=True)
        logits = bb.model((x[b] * _plain_map(p.A[b], u0))[None])[0]
        score = logits.softmax(0)[c] if objective == "probability" else logits[c]
        (g,) = torch.autograd.grad(score, u0)
        assert bool((g != 0).all())
        u1 = u0.detach() + lr * g / (g.abs() + eps)
        torch.testing.assert_close(ex["opticam"][b], _plain_map(p.A[b], u1), atol=1e-10, rtol=0)
    assert ex.forwards["opticam"] == x.shape[0]
    assert all(prm.grad is None for prm in bb.model.parameters())
    assert all(prm.requires_grad for prm in bb.model.parameters())


def test_objective_rises_and_chunks_are_independent():
    bb, x = toy_black_box(), toy_images()
    p = gradient_pass(bb, x)
    o = OptiCAMOptions(opticam_iterations=30)
    u, trace = opticam_optimise(bb.model, x, p.targets, p.A, o)
    assert trace.shape == (30, 3)
    for b in range(x.shape[0]):
        c = int(p.targets[b])
        with torch.no_grad():
            final = float(_logit(bb, x[b], p.A[b], u[b], c))  # after the last step
        start = float(trace[0, b])  # at the uniform start
        assert final > start + 0.1 and float(trace[-1, b]) > start + 0.1
        # not monotone (min-max moves with the extreme pixels), but rising on the whole
        assert float(trace[-10:, b].mean()) > float(trace[:10, b].mean())
    # one image at a time gives the same u (float64; Adam is element-wise)
    u1, trace1 = opticam_optimise(bb.model, x, p.targets, p.A, o, chunk_size=1)
    torch.testing.assert_close(u1, u, atol=1e-9, rtol=0)
    torch.testing.assert_close(trace1, trace, atol=1e-9, rtol=0)
    assert all(prm.grad is None for prm in bb.model.parameters())


@pytest.mark.parametrize("field, value, expected", [
    ("opticam_iterations", -1, "integer >= 0"),
    ("opticam_iterations", 2.5, "integer >= 0"),
    ("opticam_iterations", True, "integer >= 0"),
    ("opticam_lr", 0.0, "finite number > 0"),
    ("opticam_lr", -0.1, "finite number > 0"),
    ("opticam_lr", math.nan, "finite number > 0"),
    ("opticam_lr", math.inf, "finite number > 0"),
    ("opticam_lr", "0.1", "finite number > 0"),
    ("opticam_objective", "loss", "one of ('logit', 'probability')"),
])
def test_options_validation(field, value, expected):
    with pytest.raises(ValueError, match=field) as err:
        OptiCAMOptions(**{field: value})
    message = str(err.value)
    assert expected in message and repr(value) in message and "\n" not in message
    with pytest.raises(ValueError, match=field):  # through the flat keywords too
        ExplainOptions.build(**{field: value})


def test_lite0_two_images(lite0, lite0_batch):
    images = lite0_batch.images[:2]
    before = {k: v.clone() for k, v in lite0.model.state_dict().items()}
    flags = [prm.requires_grad for prm in lite0.model.parameters()]
    ex = explain(lite0, images, methods=["opticam"], opticam_iterations=3)
    m = ex["opticam"]
    assert m.shape == (2, lite0.input_size, lite0.input_size)
    assert bool(torch.isfinite(m).all()) and float(m.min()) >= 0 and float(m.max()) <= 1
    assert ex.flat["opticam"] == 0
    assert ex.forwards["opticam"] == 3 * 2
    assert not lite0.model.training
    after = lite0.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(prm.grad is None for prm in lite0.model.parameters())
    assert [prm.requires_grad for prm in lite0.model.parameters()] == flags
