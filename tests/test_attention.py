"""The paper's method: the fixed variant by hand, the trained checkpoint, training, per-image."""


import numpy as np
import pytest
import torch

import paperlib
from paperlib import attention, metrics
from paperlib.attention_training import TrainConfig, heldout_criterion, prepare, train_module
from paperlib.cam import ExplainOptions

REFERENCE = __import__("pathlib").Path(__file__).parent / "data" / "attention_trained_reference.pt"


def reference_images() -> torch.Tensor:
    """Two seeded random [0, 1] images (torch's CPU generator is stable across platforms)."""
    return torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))


def _sig(v):
    return 1 / (1 + np.exp(-v))


def test_fixed_variant_equals_a_hand_computation():
    # F: 2 channels, 1x2 positions. channel 0 = [1, 3], channel 1 = [2, 0]
    F = torch.tensor([[[[1.0, 3.0]], [[2.0, 0.0]]]])
    out = attention.fixed_attention(F)
    # AvgPool = [2, 1], MaxPool = [3, 2]; z over the 2 channels: [1, -1] and [1, -1]
    # Mc = sigmoid([2, -2])
    np.testing.assert_allclose(out.channel[0].numpy(), _sig(np.array([2.0, -2.0])), rtol=1e-6)
    # The 7x7 mean (over cells inside the map) sees both positions from either: equal
    # responses, std 0, z = 0, Ms = sigmoid(0) = 0.5 everywhere
    np.testing.assert_allclose(out.spatial.numpy(), [[[0.5, 0.5]]])
    # F'' = 0.5 * Mc * F; saliency = sum over channels
    mc = _sig(np.array([2.0, -2.0]))
    expected = 0.5 * np.array([mc[0] * 1 + mc[1] * 2, mc[0] * 3 + mc[1] * 0])
    np.testing.assert_allclose(out.saliency[0, 0].numpy(), expected, rtol=1e-6)


def test_fixed_variant_spatial_gate_by_independent_loops():
    torch.manual_seed(0)
    F = torch.randn(2, 5, 9, 9)
    out = attention.fixed_attention(F)
    for b in range(2):
        f = F[b].double().numpy()
        avg, mx = f.mean(axis=(1, 2)), f.max(axis=(1, 2))
        z = lambda v: (v - v.mean()) / v.std()  # noqa: E731
        mc = _sig(z(avg) + z(mx))
        f1 = mc[:, None, None] * f
        pooled = np.stack([f1.mean(axis=0), f1.max(axis=0)])
        s = np.zeros((9, 9))
        for i in range(9):
            for j in range(9):
                window = pooled[:, max(0, i - 3): i + 4, max(0, j - 3): j + 4]
                s[i, j] = window.mean()   # cells inside the map only
        ms = _sig(z(s))
        np.testing.assert_allclose(out.channel[b].numpy(), mc, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out.spatial[b].numpy(), ms, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out.saliency[b].numpy(), (ms * f1).sum(axis=0), rtol=1e-4,
                                   atol=1e-6)


def test_fixed_variant_is_scale_free_and_differs_from_gradcam(lite0, lite0_batch):
    ex = paperlib.explain(lite0, lite0_batch.images[:4], ["gradcam", "attention-fixed"])
    p = paperlib.gradient_pass(lite0, lite0_batch.images[:4])
    a = attention.fixed_attention(p.gradcam_terms)
    b = attention.fixed_attention(p.gradcam_terms * 1e6)
    torch.testing.assert_close(a.channel, b.channel)
    torch.testing.assert_close(a.spatial, b.spatial)
    diff = (ex["gradcam"] - ex["attention-fixed"]).abs().flatten(1).amax(dim=1)
    assert (diff > 0.05).all(), diff


def test_module_shapes_and_per_image_copies_are_independent():
    torch.manual_seed(0)
    m = attention.AttentionModule(32, reduction=16)
    F = torch.randn(3, 32, 7, 7)
    out = m(F)
    assert out.refined.shape == (3, 32, 7, 7)
    assert out.channel.shape == (3, 32) and out.spatial.shape == (3, 7, 7)
    copies = m.per_image_copy(3).requires_grad_(True)
    torch.testing.assert_close(copies(F).refined, out.refined)
    copies(F).saliency[0].sum().backward()
    assert copies.w1.grad[0].abs().sum() > 0
    assert copies.w1.grad[1:].abs().sum() == 0 and copies.conv_w.grad[1:].abs().sum() == 0


def test_trained_checkpoint_loads_and_reproduces_stored_maps(lite0):
    module, config = attention.load_trained(lite0)
    path = attention.checkpoint_path(lite0)
    state = torch.load(path, map_location="cpu", weights_only=True)  # plain tensors only
    assert set(state) == {"w1", "b1", "w2", "b2", "conv_w", "conv_b"}
    assert config["model"] == "efficientnet_lite0" and config["target_layer"] == "net.bn2"
    ref = torch.load(REFERENCE, map_location="cpu", weights_only=True)
    images = reference_images()
    ex = paperlib.explain(lite0, images, ["attention-trained"])
    torch.testing.assert_close(ex.low_res["attention-trained"], ref["low_res"], atol=1e-5,
                               rtol=1e-4)


def test_training_split_and_evaluation_split_share_no_image(sample_dataset, lite0):
    train, ev = sample_dataset.split("train"), sample_dataset.split("eval")
    assert not set(train.files) & set(ev.files)
    assert {l % 4 for l in train.labels} == {0} and {l % 4 for l in ev.labels} == {2}
    _, config = attention.load_trained(lite0)
    used = set(config["fit_files"]) | set(config["heldout_files"])
    assert used <= set(train.files)
    assert not used & set(ev.files)
    assert not set(config["fit_files"]) & set(config["heldout_files"])


@pytest.fixture(scope="module")
def tiny_training_data(lite0, sample_dataset):
    return prepare(lite0, sample_dataset.split("train").subset(4))


def test_one_training_step_lowers_the_loss(lite0, tiny_training_data):
    data = tiny_training_data
    torch.manual_seed(0)
    module = attention.AttentionModule(data.terms.shape[1])
    opt = torch.optim.Adam(module.parameters(), lr=0.01)
    size = tuple(data.images.shape[-2:])

    def loss():
        maps = attention.differentiable_map(module(data.terms).saliency, size)
        return attention.attention_objective(lite0, data.images, maps, data.targets, 1.0,
                                             0.0)[0].mean()

    before = loss()
    before.backward()
    opt.step()
    with torch.no_grad():
        after = loss()
    assert after < before.detach()


def test_training_with_the_same_seed_reproduces(lite0, tiny_training_data):
    cfg = TrainConfig(epochs=1, batch_size=2, seed=5)
    a, ha = train_module(lite0, tiny_training_data, 1.0, 0.0, cfg)
    b, hb = train_module(lite0, tiny_training_data, 1.0, 0.0, cfg)
    for (k, va), (_, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(va, vb), k
    assert ha == hb
    c, _ = train_module(lite0, tiny_training_data, 1.0, 0.0,
                        TrainConfig(epochs=1, batch_size=2, seed=6))
    assert not torch.equal(a.w1, c.w1)
    # the held-out criterion is the mean O of the top-25% masks, as the metrics compute it
    data = tiny_training_data
    with torch.no_grad():
        maps = attention.differentiable_map(a(data.terms).saliency, tuple(data.images.shape[-2:]))
    scores = metrics.evaluate_batch(lite0, data.images, {"a": maps}, data.targets,
                                    metrics.MetricConfig(fractions=(25,), curve_steps=1))
    expected = float(scores.per_method["a"]["O_top25"].mean())
    assert heldout_criterion(lite0, a, data, (25,)) == pytest.approx(expected, rel=1e-5)


def test_per_image_variant_batch_equals_single_calls(lite0, lite0_batch):
    opts = ExplainOptions.build(per_image_steps=2)
    x = lite0_batch.images[:2]
    both = paperlib.explain(lite0, x, ["attention-per-image"], options=opts)
    for i in range(2):
        one = paperlib.explain(lite0, x[i:i + 1], ["attention-per-image"], options=opts)
        torch.testing.assert_close(one["attention-per-image"][0], both["attention-per-image"][i],
                                   atol=1e-4, rtol=1e-4)
    assert both.forwards["attention-per-image"] == 2 * 2


def test_all_three_variants_share_the_explain_api(lite0, lite0_batch):
    ex = paperlib.explain(lite0, lite0_batch.images[:2], list(attention.ATTENTION_METHODS),
                          per_image_steps=1)
    for v in attention.ATTENTION_METHODS:
        assert ex[v].shape == (2, 224, 224)
        assert torch.isfinite(ex[v]).all() and ex[v].min() >= 0 and ex[v].max() <= 1
    again = paperlib.explain(lite0, lite0_batch.images[:2],
                             ["attention-fixed", "attention-trained"])
    torch.testing.assert_close(again["attention-fixed"], ex["attention-fixed"])
    torch.testing.assert_close(again["attention-trained"], ex["attention-trained"])


def test_fixed_spatial_gate_has_no_centre_prior():
    # a spatially uniform F: every window mean is equal, so the gate must be flat (0.5)
    F = torch.ones(1, 4, 7, 7) * torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 4, 1, 1)
    out = attention.fixed_attention(F)
    torch.testing.assert_close(out.spatial, torch.full((1, 7, 7), 0.5))
