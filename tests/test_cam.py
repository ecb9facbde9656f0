"""CAM methods: hook hygiene, exact values on a hand-computable net, targets, batching on real
Lite0 images, and agreement with pytorch-grad-cam (the ``grad-cam`` package)."""

from __future__ import annotations

import copy
import dataclasses
import gc
import math
import warnings
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from paperlib import explain, gradient_pass
from paperlib.blackbox import BlackBox, Normalize
from paperlib.cam import (
    GRADIENT_METHODS,
    gradcampp_weights,
    normalize_maps,
    upsample,
    xgradcam_weights,
)
from paperlib.hooks import capture_layer

CAM_METHODS = ["gradcam", "gradcampp", "xgradcam", "hirescam", "layercam", "smoothgradcampp",
               "scorecam"]


# ---------------------------------------------------------------------------------------------
# A tiny net whose target-layer activations A are the input itself
#
# x = A: 3 channels of 2x2 (channel 2 is dead: all zeros)
#   A0 = [[1, 0],     A1 = [[1, 2],     A2 = [[0, 0],
#         [0, 1]]           [1, 0]]           [0, 0]]
# net: features (Identity, the target layer) -> Dropout(0.5) -> Flatten -> Linear(12, 3), no bias.
# The Linear's rows, reshaped to (3, 2, 2), are the exact gradients g = dS_c/dA:
#   class 0: g0 = [[1, -1], [2, 0]], g1 = [[-2, 1], [1, 3]], g2 = [[1, 1], [-1, 2]]
#   class 1: all zeros (every gradient map is constant -> flat)
#   class 2: all ones
# Logits of x: class 0 = sum(g*A) = (1 + 0 + 0 + 0) + (-2 + 2 + 1 + 0) + 0 = 2,
#              class 1 = 0, class 2 = sum(A) = 2 + 4 = 6  -> predicted class 2.
# (Dropout is there so that a forgotten eval() would change the numbers.)

X = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]],
                   [[1.0, 2.0], [1.0, 0.0]],
                   [[0.0, 0.0], [0.0, 0.0]]]])
# Black boxes take images in [0, 1] (explain rejects anything else), so the input is X / 2 and
# the black box's normalisation doubles it back: A = X exactly (powers of two), as above.
X_IN = X / 2
ROW0 = [1.0, -1.0, 2.0, 0.0, -2.0, 1.0, 1.0, 3.0, 1.0, 1.0, -1.0, 2.0]


def tiny_black_box() -> BlackBox:
    net = nn.Sequential(OrderedDict(features=nn.Identity(), drop=nn.Dropout(0.5),
                                    flatten=nn.Flatten(), fc=nn.Linear(12, 3, bias=False)))
    with torch.no_grad():
        net.fc.weight.copy_(torch.tensor([ROW0, [0.0] * 12, [1.0] * 12]))
    model = nn.Sequential(OrderedDict(normalize=Normalize((0.0, 0.0, 0.0), (0.5, 0.5, 0.5)),
                                      net=net)).eval()
    # parameters keep requires_grad=True here, so a stray backward would fill their .grad
    return BlackBox(name="tiny", model=model, preprocess=lambda im: torch.zeros(3, 2, 2),
                    target_layer=net.features, target_layer_name="net.features", input_size=2,
                    mean=(0.0, 0.0, 0.0), std=(0.5, 0.5, 0.5), weights="hand-set")


# Expected maps for class 0 (maps are ReLU'd, same size as A so not upsampled, then min-max'd).
EXPECTED_CLASS0 = {
    # Grad-CAM: w_k = mean(g_k): w0 = (1 - 1 + 2 + 0)/4 = 1/2, w1 = (-2 + 1 + 1 + 3)/4 = 3/4
    #   S = A0/2 + 3 A1/4 = [[1/2 + 3/4, 3/2], [3/4, 1/2]] = [[1.25, 1.5], [0.75, 0.5]]
    #   min-max (min 0.5, range 1): [[0.75, 1], [0.25, 0]]
    "gradcam": [[0.75, 1.0], [0.25, 0.0]],
    # Grad-CAM++ (Eq. 19): alpha = g^2 / (2 g^2 + sum(A_k) g^3), sum A0 = 2, sum A1 = 4
    #   ch0: g=1: 1/(2 + 2) = 1/4;  g=-1: 1/(2 - 2) = 1/0 -> 0;  g=2: 4/(8 + 16) = 1/6;
    #        g=0: 0/0 -> 0.  w0 = 1/4 * 1 + 1/6 * 2 = 7/12
    #   ch1: g=-2: ReLU(g) = 0;  g=1: 1/(2 + 4) = 1/6 (twice);  g=3: 9/(18 + 108) = 1/14.
    #        w1 = 1/6 + 1/6 + 3/14 = 23/42
    #   ch2: dead (A2 = 0): contributes nothing whatever its weight
    #   S = 7/12 A0 + 23/42 A1 = [[95/84, 92/84], [46/84, 49/84]]
    #   min-max (min 46/84, range 49/84): [[1, 46/49], [0, 3/49]]
    "gradcampp": [[1.0, 46 / 49], [0.0, 3 / 49]],
    # XGrad-CAM: w_k = sum(A_k g_k) / sum(A_k)
    #   w0 = (1*1 + 0 + 0 + 1*0)/2 = 1/2;  w1 = (1*(-2) + 2*1 + 1*1 + 0*3)/4 = 1/4;
    #   w2 = 0/0 -> 0 (dead channel)
    #   S = A0/2 + A1/4 = [[0.75, 0.5], [0.25, 0.5]] -> min-max: [[1, 0.5], [0, 0.5]]
    "xgradcam": [[1.0, 0.5], [0.0, 0.5]],
    # HiResCAM: ReLU(sum_k g_k A_k): (0,0): 1*1 - 2*1 = -1 -> 0;  (0,1): -1*0 + 1*2 = 2;
    #   (1,0): 2*0 + 1*1 = 1;  (1,1): 0*1 + 3*0 = 0  -> [[0, 2], [1, 0]] -> [[0, 1], [0.5, 0]]
    "hirescam": [[0.0, 1.0], [0.5, 0.0]],
    # Layer-CAM: ReLU(sum_k ReLU(g_k) A_k): (0,0): 1*1 + 0*1 = 1;  (0,1): 0*0 + 1*2 = 2;
    #   (1,0): 2*0 + 1*1 = 1;  (1,1): 0*1 + 3*0 = 0  -> [[1, 2], [1, 0]] -> [[0.5, 1], [0.5, 0]]
    "layercam": [[0.5, 1.0], [0.5, 0.0]],
}
# Class 2 (all-ones row): g = 1 everywhere, so Grad-CAM w0 = w1 = 1, S = A0 + A1 = [[2, 2], [1, 1]]
EXPECTED_GRADCAM_CLASS2 = [[1.0, 1.0], [0.0, 0.0]]


@pytest.mark.parametrize("method", sorted(EXPECTED_CLASS0))
def test_exact_values_on_tiny_net(method):
    bb = tiny_black_box()
    ex = explain(bb, X_IN, methods=[method], targets=[0])
    assert ex[method].shape == (1, 2, 2)
    torch.testing.assert_close(ex[method][0], torch.tensor(EXPECTED_CLASS0[method]),
                               atol=1e-6, rtol=0)
    assert ex.flat[method] == 0
    assert ex.targets.tolist() == [0]
    assert ex.logits.tolist() == [[2.0, 0.0, 6.0]]


def test_tiny_net_gradients_and_weights():
    p = gradient_pass(tiny_black_box(), X_IN, targets=[0])
    assert torch.equal(p.A, X)
    assert torch.equal(p.g, torch.tensor(ROW0).view(1, 3, 2, 2))
    # the weight functions themselves, hand-computed above
    torch.testing.assert_close(p.g.mean(dim=(2, 3)), torch.tensor([[0.5, 0.75, 0.75]]))
    w = gradcampp_weights(p.A, p.g, p.g ** 2, p.g ** 3)
    # ch2 has sum(A) = 0: alpha = g^2 / 2g^2 = 1/2 where g != 0; w2 = (1 + 1 + 0 + 2)/2 = 2
    torch.testing.assert_close(w, torch.tensor([[7 / 12, 23 / 42, 2.0]]))
    torch.testing.assert_close(xgradcam_weights(p.A, p.g), torch.tensor([[0.5, 0.25, 0.0]]))


def test_constant_map_is_zero_and_counted_flat():
    bb = tiny_black_box()
    x2 = torch.cat([X_IN, X_IN])
    ex = explain(bb, x2, methods=sorted(EXPECTED_CLASS0), targets=[0, 1])  # class 1: g = 0
    for method, expected in EXPECTED_CLASS0.items():
        assert torch.isfinite(ex[method]).all()
        torch.testing.assert_close(ex[method][0], torch.tensor(expected), atol=1e-6, rtol=0)
        assert torch.equal(ex[method][1], torch.zeros(2, 2)), method
        assert ex.flat[method] == 1, method
        assert ex.flat_images[method].tolist() == [False, True], method


def test_smoothgradcampp_with_zero_sigma_is_gradcampp_exactly():
    bb = tiny_black_box()
    for sigma in (0.0, 0.3):  # the tiny net is linear: g does not depend on the noise at all
        ex = explain(bb, X_IN, methods=["gradcampp", "smoothgradcampp"], targets=[0],
                     smooth_sigma=sigma, smooth_samples=5, chunk_size=2)
        assert torch.equal(ex["smoothgradcampp"], ex["gradcampp"])
        assert torch.equal(ex.low_res["smoothgradcampp"], ex.low_res["gradcampp"])
        assert ex.forwards == {"gradcampp": 0, "smoothgradcampp": 5}


def test_scorecam_on_tiny_net():
    bb = tiny_black_box()
    # H_k = minmax(A_k); the masked input x * H_k goes through the net; w_k = softmax_0 of it.
    # H0 = A0 (already 0/1): x*H0 = ch0 [[1,0],[0,1]], ch1 [[1,0],[0,0]], ch2 0
    #   logits: class 0 = (1*1 + 0*0) + (-2*1) = -1;  class 1 = 0;  class 2 = 2 + 1 = 3
    # H1 = A1/2 = [[.5, 1], [.5, 0]]: x*H1 = ch0 [[.5, 0], [0, 0]], ch1 [[.5, 2], [.5, 0]]
    #   logits: class 0 = 1*.5 + (-2*.5 + 1*2 + 1*.5) = 2;  class 1 = 0;  class 2 = .5 + 3 = 3.5
    # H2 = 0 (flat channel): logits 0, 0, 0 -> w2 = 1/3 (A2 = 0 contributes nothing)
    def softmax0(l0, l1, l2):
        return math.exp(l0) / (math.exp(l0) + math.exp(l1) + math.exp(l2))

    w0, w1 = softmax0(-1, 0, 3), softmax0(2, 0, 3.5)
    s = torch.tensor(w0, dtype=torch.float64) * X[0, 0].double() + w1 * X[0, 1].double()
    expected = (s - s.min()) / (s.max() - s.min())
    ex = explain(bb, X_IN, methods=["scorecam"], targets=[0], chunk_size=2)
    torch.testing.assert_close(ex["scorecam"][0].double(), expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(ex.low_res["scorecam"][0].double(), s, atol=1e-6, rtol=0)
    assert ex.forwards["scorecam"] == 3

    # budget of one channel: only A1 (largest mean, 1 > 0.5) is scored -> map = minmax(A1)
    ex1 = explain(bb, X_IN, methods=["scorecam"], targets=[0], scorecam_channels=1)
    torch.testing.assert_close(ex1["scorecam"][0], torch.tensor([[0.5, 1.0], [0.5, 0.0]]))
    torch.testing.assert_close(ex1.low_res["scorecam"][0], w1 * X[0, 1], atol=1e-6, rtol=0)
    assert ex1.forwards["scorecam"] == 1


# ---------------------------------------------------------------------------------------------
# Targets

def test_targets_given_or_predicted_on_tiny_net():
    bb = tiny_black_box()
    pred = explain(bb, X_IN, methods=["gradcam"])
    assert pred.targets.tolist() == [2]
    torch.testing.assert_close(pred["gradcam"][0], torch.tensor(EXPECTED_GRADCAM_CLASS2))
    given = explain(bb, X_IN, methods=["gradcam"], targets=torch.tensor([0]))
    assert given.targets.tolist() == [0]
    torch.testing.assert_close(given["gradcam"][0], torch.tensor(EXPECTED_CLASS0["gradcam"]))


def test_bad_targets_raise():
    bb = tiny_black_box()
    before = _train_with_one_eval(bb)
    x2 = torch.cat([X_IN, X_IN])
    with pytest.raises(ValueError, match="got 1 targets for a batch of 2"):
        explain(bb, x2, targets=[0])            # peers silently truncate
    with pytest.raises(ValueError, match="got 3 targets for a batch of 2"):
        explain(bb, x2, targets=[0, 1, 2])
    with pytest.raises(ValueError, match=r"class indices in \[0, 3\)"):
        explain(bb, x2, targets=[0, 3])
    with pytest.raises(ValueError, match=r"class indices in \[0, 3\)"):
        explain(bb, x2, targets=[-1, 0])
    with pytest.raises(ValueError, match="unknown method"):
        explain(bb, x2, methods=["gradcam", "nocam"])
    with pytest.raises(ValueError, match="images must be a"):
        explain(bb, X_IN[0])
    assert not bb.target_layer._forward_hooks  # errors inside the hooked pass leave no hook
    assert _flags(bb.model) == before


def test_targets_labels_vs_predicted_on_lite0(lite0, lite0_batch):
    images, labels = lite0_batch.images, lite0_batch.labels
    by_label = explain(lite0, images, methods=["gradcam"], targets=labels)
    by_pred = explain(lite0, images, methods=["gradcam"])
    assert torch.equal(by_label.targets, labels)
    assert torch.equal(by_pred.targets, by_pred.logits.argmax(dim=1))
    same = by_pred.targets == labels
    assert same.any() and (~same).any()  # this batch has both right and wrong predictions
    diff = (by_label["gradcam"] - by_pred["gradcam"]).abs().amax(dim=(1, 2))
    assert (diff[same] == 0).all()
    assert (diff[~same] > 0.05).all()


# ---------------------------------------------------------------------------------------------
# Hook hygiene

def _flags(model):
    return {name: m.training for name, m in model.named_modules()}


def _train_with_one_eval(bb):
    bb.model.train()
    bb.model.net.flatten.eval()  # one submodule in eval: must stay so
    return _flags(bb.model)


def test_explain_restores_flags_and_leaves_no_hooks_or_grads():
    bb = tiny_black_box()
    before = _train_with_one_eval(bb)
    assert before["net.drop"] and not before["net.flatten"]
    ex = explain(bb, X_IN, methods=CAM_METHODS, targets=[0], smooth_samples=3)
    # computed in eval mode (Dropout off) although the model was in train mode
    for method, expected in EXPECTED_CLASS0.items():
        torch.testing.assert_close(ex[method][0], torch.tensor(expected), atol=1e-6, rtol=0)
    assert _flags(bb.model) == before
    for m in bb.model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
    for p in bb.model.parameters():
        assert p.requires_grad and p.grad is None
    for method in CAM_METHODS:
        assert not ex[method].requires_grad and ex[method].grad_fn is None


def test_capture_layer_cleans_up_after_an_exception():
    bb = tiny_black_box()
    before = _train_with_one_eval(bb)
    with pytest.raises(RuntimeError, match="boom"):
        with capture_layer(bb.model, bb.target_layer) as cap:
            assert not any(m.training for m in bb.model.modules())  # eval inside
            assert len(bb.target_layer._forward_hooks) == 1
            bb.model(X_IN)
            assert torch.equal(cap.activations, X)
            raise RuntimeError("boom")
    assert not bb.target_layer._forward_hooks
    assert _flags(bb.model) == before
    for p in bb.model.parameters():
        assert p.grad is None


def test_lite0_explain_hygiene(lite0, lite0_batch, lite0_maps):
    bb = lite0
    try:
        bb.model.train()
        bb.model.net.bn2.eval()
        before = _flags(bb.model)
        ex = explain(bb, lite0_batch.images[:2], methods=["gradcam", "smoothgradcampp"],
                     smooth_samples=2)
        assert _flags(bb.model) == before
    finally:
        bb.model.eval()  # the session's Lite0 goes back to how load_model gave it
    # computed in eval mode: the same maps as with the model in eval mode
    torch.testing.assert_close(ex["gradcam"], lite0_maps["gradcam"][:2], atol=1e-5, rtol=0)
    assert not bb.target_layer._forward_hooks
    assert all(p.grad is None and not p.requires_grad for p in bb.model.parameters())


def _live_tensors() -> int:
    with warnings.catch_warnings():  # isinstance() pokes deprecated lazy torch attributes
        warnings.simplefilter("ignore")
        return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))


def test_no_memory_growth_over_many_calls():
    """200 explain() calls with every CAM method: no tensor, hook or object left behind."""
    bb = tiny_black_box()

    def run():
        ex = explain(bb, X_IN, methods=CAM_METHODS, targets=[0], smooth_samples=3)
        return float(ex["gradcam"].sum())

    for _ in range(5):  # warm-up: caches, lazy imports
        run()
    gc.collect()
    tensors0, objects0 = _live_tensors(), len(gc.get_objects())
    for _ in range(200):
        run()
    gc.collect()
    tensors1, objects1 = _live_tensors(), len(gc.get_objects())
    assert tensors1 - tensors0 <= 2, (tensors0, tensors1)
    assert objects1 - objects0 < 100, (objects0, objects1)  # i.e. < 0.5 object per call
    assert not bb.target_layer._forward_hooks


# ---------------------------------------------------------------------------------------------
# Real Lite0 batch

BATCHED = list(GRADIENT_METHODS) + ["smoothgradcampp"]
SMOOTH_N = 4  # SmoothGrad-CAM++ copies per image in these tests (fewer forwards on 2 CPU cores)


@pytest.fixture(scope="module")
def lite0_maps(lite0, lite0_batch):
    """Every gradient method and SmoothGrad-CAM++ on 8 real images, predicted classes."""
    return explain(lite0, lite0_batch.images, methods=BATCHED, smooth_samples=SMOOTH_N)


@pytest.fixture(scope="module")
def lite0_block6(lite0):
    """Lite0 explained at its last MBConv block (net.blocks.6, 320 x 7 x 7) instead of bn2.

    At bn2 the rest of the network is global average pooling + a linear classifier, so
    g = dS/dA = W_c / 49 whatever the input: SmoothGrad's noise cannot change it (see
    test_lite0_smoothgradcampp_at_bn2_is_gradcampp). Below bn2 the gradient depends on the input
    (through bn2's ReLU6), so this is where SmoothGrad-CAM++'s noise and seed can be tested.
    """
    layer = lite0.model.get_submodule("net.blocks.6")
    return dataclasses.replace(lite0, target_layer=layer, target_layer_name="net.blocks.6")


def test_lite0_maps_are_valid(lite0_maps, lite0_batch):
    assert set(GRADIENT_METHODS) == {"gradcam", "gradcampp", "xgradcam", "hirescam", "layercam"}
    for method in BATCHED:
        m = lite0_maps[method]
        assert m.shape == (8, 224, 224) and m.dtype == torch.float32
        assert torch.isfinite(m).all(), method
        assert m.min() >= 0 and m.max() <= 1
        assert lite0_maps.flat[method] == 0
        # min-max per image: every map reaches exactly 0 and 1
        assert torch.equal(m.amin(dim=(1, 2)), torch.zeros(8))
        assert torch.equal(m.amax(dim=(1, 2)), torch.ones(8))
        assert lite0_maps.low_res[method].shape == (8, 7, 7)
    assert lite0_maps.forwards["smoothgradcampp"] == 8 * SMOOTH_N
    assert all(lite0_maps.forwards[m] == 0 for m in GRADIENT_METHODS)


def test_gradcam_xgradcam_hirescam_are_one_map_before_pooling_and_a_linear_layer(lite0_maps):
    """The identity the README's "What differs" states (and the paper's Table 3 contradicts:
    45.27 vs 46.33 for Grad-CAM and XGrad-CAM on ResNet-50). With S_c = sum_k v_ck mean(A_k),
    g_k = v_ck / (h w) at every position and for every input, so Grad-CAM's w_k = v_ck / (h w),
    XGrad-CAM's w_k = sum(A_k g_k) / sum(A_k) = v_ck / (h w) (where sum(A_k) != 0; a dead channel
    contributes A_k = 0 either way) and HiResCAM's sum_k g_k A_k is the same sum: one map.

    Exact on a hand-built net (GAP + linear after the target layer), and on Lite0's bn2 (the
    paper's layer: GAP + linear follow) to float32 rounding."""
    A = torch.tensor([[[[1.0, 3.0], [0.0, 2.0]], [[0.0, 0.0], [0.0, 0.0]],
                       [[2.0, 1.0], [1.0, 0.0]]]])                      # channel 1 dead
    v = torch.tensor([[0.5, -1.0, 2.0], [1.0, 1.0, 1.0]])
    net = nn.Sequential(OrderedDict(features=nn.Identity(), pool=nn.AdaptiveAvgPool2d(1),
                                    flatten=nn.Flatten(), fc=nn.Linear(3, 2, bias=False)))
    with torch.no_grad():
        net.fc.weight.copy_(v)
    model = nn.Sequential(OrderedDict(normalize=Normalize((0.0,) * 3, (0.25,) * 3),
                                      net=net)).eval()
    bb = BlackBox(name="gap", model=model, preprocess=lambda im: torch.zeros(3, 2, 2),
                  target_layer=net.features, target_layer_name="net.features", input_size=2,
                  mean=(0.0,) * 3, std=(0.25,) * 3, weights="hand-set")
    ex = explain(bb, A / 4, ["gradcam", "xgradcam", "hirescam"], targets=[0])
    # S = (0.5 A0 + 2 A2) / 4 = [[4.5, 3.5], [2, 1]] / 4 -> min-max [[1, 5/7], [2/7, 0]]
    expected = torch.tensor([[[1.0, 5 / 7], [2 / 7, 0.0]]])
    for m in ("gradcam", "xgradcam", "hirescam"):
        torch.testing.assert_close(ex[m], expected, atol=1e-7, rtol=0, msg=m)
    for m in ("xgradcam", "hirescam"):
        torch.testing.assert_close(lite0_maps[m], lite0_maps["gradcam"], atol=2e-5, rtol=0,
                                   msg=m)


def test_lite0_xgradcam_with_dead_channels(lite0, lite0_batch, lite0_maps):
    p = gradient_pass(lite0, lite0_batch.images)
    sums = p.A.sum(dim=(2, 3))
    dead = sums == 0
    assert dead.any(dim=1).all(), "every image has channels whose bn2 output sums to exactly 0"
    assert int(dead.sum()) > 1000  # ~40-60% of the 1280 channels per image
    w = xgradcam_weights(p.A, p.g)
    assert torch.isfinite(w).all()
    assert (w[dead] == 0).all()
    assert torch.isfinite(lite0_maps["xgradcam"]).all()


def test_lite0_batch_equals_single_calls(lite0, lite0_batch, lite0_maps):
    images = lite0_batch.images
    for i in range(len(images)):
        single = explain(lite0, images[i:i + 1], methods=BATCHED, smooth_samples=SMOOTH_N)
        assert single.targets[0] == lite0_maps.targets[i]
        for method in BATCHED:
            torch.testing.assert_close(single[method][0], lite0_maps[method][i], atol=1e-5,
                                       rtol=0, msg=lambda m, method=method, i=i:
                                       f"{method}, image {i}: {m}")


def test_lite0_smoothgradcampp_at_bn2_is_gradcampp(lite0, lite0_batch, lite0_maps):
    """At bn2 the gradient does not depend on the input (GAP + linear follow), so averaging it
    over noisy copies changes nothing: SmoothGrad-CAM++ == Grad-CAM++ for every seed and sigma.
    (torchcam's SmoothGradCAMpp, which also keeps the clean activations, behaves the same.)"""
    images = lite0_batch.images[:2]
    p0 = gradient_pass(lite0, images[:1])
    noisy = (images[:1] + 0.1 * torch.rand_like(images[:1])).clamp(0, 1)  # images are in [0, 1]
    p1 = gradient_pass(lite0, noisy, targets=p0.targets)
    assert torch.equal(p0.g, p1.g)  # input-independent gradient at this layer
    a = explain(lite0, images, methods=["smoothgradcampp", "gradcampp"], seed=0,
                smooth_samples=SMOOTH_N)
    b = explain(lite0, images, methods=["smoothgradcampp"], seed=1, smooth_samples=SMOOTH_N)
    torch.testing.assert_close(a["smoothgradcampp"], a["gradcampp"], atol=1e-5, rtol=0)
    torch.testing.assert_close(b["smoothgradcampp"], a["gradcampp"], atol=1e-5, rtol=0)
    torch.testing.assert_close(lite0_maps["smoothgradcampp"], lite0_maps["gradcampp"],
                               atol=1e-5, rtol=0)


def test_lite0_smoothgradcampp_seed_and_sigma(lite0_block6, lite0_batch):
    bb = lite0_block6
    images = lite0_batch.images[:2]
    opts = dict(methods=["smoothgradcampp", "gradcampp"], smooth_samples=SMOOTH_N)
    a = explain(bb, images, seed=0, **opts)
    b = explain(bb, images, seed=0, **opts)
    c = explain(bb, images, seed=1, **opts)
    assert a.low_res["smoothgradcampp"].shape == (2, 7, 7)
    assert torch.equal(a["smoothgradcampp"], b["smoothgradcampp"])
    assert (a["smoothgradcampp"] - c["smoothgradcampp"]).abs().amax() > 1e-2
    assert (a["smoothgradcampp"] - a["gradcampp"]).abs().amax() > 1e-2
    for m in (a, c):
        assert torch.isfinite(m["smoothgradcampp"]).all()
    # sigma = 0: every noisy copy is the image itself, so the map is Grad-CAM++'s (the copies
    # run in one larger batch, hence a float tolerance rather than bit equality)
    z = explain(bb, images, seed=0, smooth_sigma=0.0, **opts)
    torch.testing.assert_close(z["smoothgradcampp"], z["gradcampp"], atol=1e-5, rtol=0)


def test_lite0_smoothgradcampp_batch_equals_single_calls(lite0_block6, lite0_batch):
    """The noise patterns are shared by the images of a batch: a map does not depend on the
    batch it is computed in, also where the noise matters."""
    images = lite0_batch.images[:2]
    batch = explain(lite0_block6, images, methods=["smoothgradcampp"], smooth_samples=SMOOTH_N,
                    chunk_size=3)  # chunks that straddle images
    for i in range(len(images)):
        single = explain(lite0_block6, images[i:i + 1], methods=["smoothgradcampp"],
                         smooth_samples=SMOOTH_N)
        torch.testing.assert_close(single["smoothgradcampp"][0], batch["smoothgradcampp"][i],
                                   atol=1e-5, rtol=0)


def test_lite0_scorecam_small_budget(lite0, lite0_batch):
    ex = explain(lite0, lite0_batch.images[:2], methods=["scorecam"], scorecam_channels=8)
    m = ex["scorecam"]
    assert m.shape == (2, 224, 224) and torch.isfinite(m).all()
    assert m.min() >= 0 and m.max() <= 1 and ex.flat["scorecam"] == 0
    assert ex.forwards["scorecam"] == 16


# ---------------------------------------------------------------------------------------------
# Agreement with pytorch-grad-cam
#
# pytorch-grad-cam computes cam = ReLU(sum_k w_k A_k) at 7x7, min-max normalises it (dividing by
# max + 1e-7), resizes it with cv2.resize (INTER_LINEAR) to 224x224 and min-max normalises again.
# We compute ReLU, upsample bilinearly (torch, align_corners=False) and min-max normalise once.
# Bilinear resizing is linear with weights summing to 1, so it commutes with the affine min-max
# step: the two pipelines give the same 224x224 maps provided cv2's INTER_LINEAR equals torch's
# bilinear/align_corners=False for upsampling (both use half-pixel centres and clamp at the
# border; checked in test_cv2_resize_matches_our_upsample). Comparing the final 224x224 maps is
# therefore the fair comparison; the 1e-7 in its normalisation is negligible next to maps of O(1).

pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam")


@pytest.fixture(scope="module")
def peer(lite0):
    """A trainable deep copy of Lite0 for pytorch-grad-cam (ours has frozen parameters)."""
    model = copy.deepcopy(lite0.model).requires_grad_(True).eval()
    return model, model.net.bn2


def _peer_maps(cls, peer, images, targets) -> torch.Tensor:
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model, layer = peer
    with cls(model=model, target_layers=[layer]) as cam:
        out = cam(input_tensor=images, targets=[ClassifierOutputTarget(int(t)) for t in targets])
    assert not layer._forward_hooks
    return torch.from_numpy(out)


def test_cv2_resize_matches_our_upsample():
    import cv2

    x = torch.rand(4, 7, 7, generator=torch.Generator().manual_seed(0))
    ours = upsample(x, (224, 224))
    theirs = torch.from_numpy(np.stack([cv2.resize(m.numpy(), (224, 224)) for m in x]))
    assert (ours - theirs).abs().max() < 1e-5


@pytest.mark.parametrize("method,peer_class", [("gradcam", "GradCAM"), ("xgradcam", "XGradCAM"),
                                               ("layercam", "LayerCAM"),
                                               ("hirescam", "HiResCAM")])
def test_agrees_with_pytorch_grad_cam(method, peer_class, lite0_maps, lite0_batch, peer):
    theirs = _peer_maps(getattr(pytorch_grad_cam, peer_class), peer, lite0_batch.images,
                        lite0_maps.targets)
    diff = float((lite0_maps[method] - theirs).abs().max())
    print(f"\n{method} vs pytorch-grad-cam {peer_class}: max abs diff {diff:.3g}")
    assert diff < 1e-4


def _exact_gradcampp_cam(A: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Eq. 19 in float64, written out independently: ReLU(sum_k w_k A_k) at 7x7."""
    A, g = A.double().numpy(), g.double().numpy()
    sum_A = A.sum(axis=(2, 3), keepdims=True)
    num, den = g ** 2, 2 * g ** 2 + sum_A * g ** 3
    alpha = np.divide(num, den, out=np.zeros_like(num), where=den != 0)
    w = (alpha * np.maximum(g, 0)).sum(axis=(2, 3))
    return torch.from_numpy(np.maximum(np.einsum("bc,bchw->bhw", w, A), 0))


def _minmax64(x: torch.Tensor) -> torch.Tensor:
    lo, hi = x.amin(dim=(1, 2), keepdim=True), x.amax(dim=(1, 2), keepdim=True)
    return (x - lo) / (hi - lo)


def test_gradcampp_exact_and_against_pytorch_grad_cam(lite0, lite0_batch, lite0_maps, peer):
    images = lite0_batch.images
    p = gradient_pass(lite0, images, targets=lite0_maps.targets)
    g2 = p.g ** 2
    assert float(g2[g2 > 0].median()) < 1e-5  # g^2 is of the order of the peer's 1e-6

    # (a) ours == Eq. 19 exactly (float64 reference): at 7x7, and at 224x224 after the same
    # bilinear upsampling (in float64) and min-max normalisation
    ref = _exact_gradcampp_cam(p.A, p.g)
    diff_a_low = float((_minmax64(lite0_maps.low_res["gradcampp"].double()) - _minmax64(ref))
                       .abs().max())
    ref224 = _minmax64(torch.nn.functional.interpolate(ref[:, None], size=(224, 224),
                                                       mode="bilinear", align_corners=False)[:, 0])
    diff_a = float((lite0_maps["gradcampp"].double() - ref224).abs().max())
    assert diff_a_low < 1e-4 and diff_a < 1e-4

    # (b) ours with pytorch-grad-cam's 1e-6 added to Eq. 19's denominator == pytorch-grad-cam.
    # The constant sits in pytorch_grad_cam/grad_cam_plusplus.py, get_cam_weights:
    #   aij = grads_power_2 / (2 * grads_power_2 + sum_activations * grads_power_3 + eps),
    #   eps = 0.000001.
    # Through our gradcampp_weights: alpha = g2 / (2 g2 + sum_A g3'), with g3' = g3 + 1e-6/sum_A
    # (dead channels, sum_A = 0, have A = 0 and contribute nothing either way).
    sum_A = p.A.sum(dim=(2, 3), keepdim=True)
    g3_eps = p.g ** 3 + torch.where(sum_A != 0, 1e-6 / sum_A, torch.zeros_like(sum_A))
    w_eps = gradcampp_weights(p.A, p.g, p.g ** 2, g3_eps)
    ours_eps, _ = normalize_maps(upsample(torch.einsum("bc,bchw->bhw", w_eps, p.A).clamp(min=0),
                                          (224, 224)))
    theirs = _peer_maps(pytorch_grad_cam.GradCAMPlusPlus, peer, images, lite0_maps.targets)
    diff_b = float((ours_eps - theirs).abs().max())
    assert diff_b < 1e-4

    # (c) the constant matters at this layer: exact Eq. 19 vs pytorch-grad-cam
    diff_c = float((lite0_maps["gradcampp"] - theirs).abs().max())
    print(f"\ngradcampp: exact vs float64 Eq.19 {diff_a:.3g} (7x7: {diff_a_low:.3g}); "
          f"with +1e-6 vs pytorch-grad-cam {diff_b:.3g}; exact vs pytorch-grad-cam {diff_c:.3g}")
    assert diff_c > 1e-3


def test_at_a_pooled_last_stage_the_gradient_methods_coincide(lite0, lite0_batch):
    """Lite0's bn2 is followed only by global average pooling and a linear layer, so
    d y_c / d A_kij = W_ck / (h w) for every position and input. Then Grad-CAM, XGrad-CAM and
    HiResCAM are the same map (CAM), and SmoothGrad-CAM++ equals Grad-CAM++ (README)."""
    x = lite0_batch.images[:4]
    p = gradient_pass(lite0, x)
    W = lite0.net.classifier.weight
    expected = (W[p.targets] / 49.0)[:, :, None, None].expand_as(p.g)
    torch.testing.assert_close(p.g, expected, atol=1e-9, rtol=1e-5)
    ex = explain(lite0, x, ["gradcam", "xgradcam", "hirescam", "gradcampp",
                                     "smoothgradcampp", "layercam"])
    torch.testing.assert_close(ex["xgradcam"], ex["gradcam"], atol=1e-5, rtol=0)
    torch.testing.assert_close(ex["hirescam"], ex["gradcam"], atol=1e-5, rtol=0)
    torch.testing.assert_close(ex["smoothgradcampp"], ex["gradcampp"], atol=1e-5, rtol=0)
    assert (ex["layercam"] - ex["gradcam"]).abs().amax() > 1e-2   # drops negative weights
    assert (ex["gradcampp"] - ex["gradcam"]).abs().amax() > 1e-2
