"""wrap_model and timm:<name>: a user's classifier explained with every method and metric, exact
defaults and errors, and the user's flags (requires_grad, train/eval) left exactly as they were."""

from __future__ import annotations

import math
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision import transforms as T

import paperlib
from paperlib import explain, load_model, wrap_model
from paperlib.attention import save_checkpoint
from paperlib.attention_training import TrainConfig, train_attention
from paperlib.blackbox import IMAGENET_MEAN, IMAGENET_STD, BlackBox, Normalize, WeightsNotFoundError
from paperlib.cam import default_methods
from paperlib.data import ImageDataset, Record
from paperlib.hooks import capture_layer, frozen_parameters
from paperlib.metrics import MetricConfig, evaluate_batch, image_rows

SMALL = {"smooth_samples": 2, "scorecam_channels": 4, "per_image_steps": 1, "opticam_iterations": 2}


class TinyCNN(nn.Module):
    """conv(s2) -> BN -> ReLU -> conv(s2) -> ReLU -> pool -> dropout -> linear: 32 px -> 8 x 8."""

    def __init__(self, classes: int = 3, inplace: bool = True) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=inplace),
            nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(inplace=inplace))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(self.pool(self.features(x)).flatten(1)))


def tiny(seed: int = 0, **kw) -> TinyCNN:
    torch.manual_seed(seed)
    return TinyCNN(**kw)


def images(n: int = 2, size: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def flags(model: nn.Module) -> tuple[dict[str, bool], dict[str, bool]]:
    """Every parameter's requires_grad and every module's training flag."""
    return ({n: p.requires_grad for n, p in model.named_parameters()},
            {n: m.training for n, m in model.named_modules()})


@pytest.fixture(scope="module")
def sample_files(data_dir: Path) -> ImageDataset:
    """Four real images as a dataset (labels unused here)."""
    files = sorted(data_dir.glob("*.JPEG"))[:4]
    return ImageDataset(data_dir, [Record(f, 0, "") for f in files], "files")


def trained_checkpoint(bb: paperlib.BlackBox, dataset: ImageDataset, path: Path) -> Path:
    """A tiny attention checkpoint for ``bb`` at a path of our choosing."""
    config = TrainConfig(epochs=1, batch_size=2, grid_l_area=(1.0,), grid_l_tv=(0.0,),
                         holdout_every=2)
    module, record = train_attention(bb, dataset, config, save=False, progress=False)
    save_checkpoint(module, path, record)
    return path


# ---------------------------------------------------------------------------------------------
# What wrap_model builds


def test_wrap_defaults_are_imagenets_and_the_layer_the_last_feature_map():
    net = tiny()
    bb = wrap_model(net, input_size=32, device="cpu")
    assert type(bb) is BlackBox and bb.spec is not None and bb.spec.name == "tinycnn"
    assert bb.name == "tinycnn" and bb.weights.startswith("user module (sha256:")
    # the fingerprint of the weights at wrap time: same weights, same record; others, another
    assert wrap_model(tiny(), input_size=32).weights == bb.weights
    assert wrap_model(tiny(seed=1), input_size=32).weights != bb.weights
    assert bb.target_layer_name == "net.features" and bb.target_layer is net.features
    assert (bb.input_size, bb.num_classes, bb.class_names) == (32, 3, None)
    assert bb.mean == IMAGENET_MEAN and bb.std == IMAGENET_STD
    assert bb.mean == (0.485, 0.456, 0.406) and bb.std == (0.229, 0.224, 0.225)
    assert list(bb.model._modules) == ["normalize", "net"] and bb.net is net
    assert isinstance(bb.model.normalize, Normalize)
    assert not any(m.training for m in bb.model.modules())       # eval mode, like load_model
    assert all(p.requires_grad for p in net.parameters())        # the user's flags untouched
    resize, crop = bb.preprocess.transforms[:2]
    assert resize.size == math.floor(32 / 0.875) == 36 and crop.size == (32, 32)
    assert resize.interpolation == T.InterpolationMode.BILINEAR
    x = bb.preprocess(Image.new("RGB", (50, 40), (255, 0, 0)))
    assert x.shape == (3, 32, 32) and float(x[0].min()) == 1.0 and float(x[1:].max()) == 0.0
    # the normalisation is inside the black box: (x - mean) / std on [0, 1] images
    with torch.no_grad():
        torch.testing.assert_close(bb(x[None]), net((x[None] - torch.tensor(IMAGENET_MEAN)
                                                     .view(1, 3, 1, 1)) /
                                                    torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)))


def test_wrap_settings_given_win():
    net = tiny()
    bb = wrap_model(net, net.features[3], input_size=40, mean=(0.5, 0.5, 0.5),
                    std=(0.25, 0.25, 0.25), class_names=["a", "b", "c"], name="mine",
                    device="cpu", crop_pct=1.0, interpolation="bicubic")
    assert bb.target_layer_name == "net.features.3" and bb.name == "mine"
    assert bb.class_names == ("a", "b", "c") and bb.spec.class_names() == ("a", "b", "c")
    assert (bb.mean, bb.std, bb.input_size) == ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25), 40)
    resize = bb.preprocess.transforms[0]
    assert resize.size == 40 and resize.interpolation == T.InterpolationMode.BICUBIC


def test_class_names_of_kit_models_are_imagenets(lite0):
    names = lite0.class_names
    assert names is not None and len(names) == 1000
    assert names[0] == "tench" and names[1] == "goldfish"


# ---------------------------------------------------------------------------------------------
# Exact values: a wrapped hand-computable net gives the published formula's map


def test_wrapped_identity_net_gives_exact_gradcam():
    # target layer = the input itself (Identity), no normalisation: A = x, and the Linear's row
    # of class 0 is g. Same numbers as test_cam's tiny net, with x halved to stay in [0, 1]
    # (Grad-CAM's map is min-max normalised, so halving A changes nothing).
    row0 = [1.0, -1.0, 2.0, 0.0, -2.0, 1.0, 1.0, 3.0, 1.0, 1.0, -1.0, 2.0]
    net = nn.Sequential(OrderedDict(features=nn.Identity(), flatten=nn.Flatten(),
                                    fc=nn.Linear(12, 3, bias=False)))
    with torch.no_grad():
        net.fc.weight.copy_(torch.tensor([row0, [0.0] * 12, [1.0] * 12]))
    bb = wrap_model(net, "features", input_size=2, mean=(0, 0, 0), std=(1, 1, 1), device="cpu")
    x = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]], [[1.0, 2.0], [1.0, 0.0]],
                       [[0.0, 0.0], [0.0, 0.0]]]]) / 2
    ex = explain(bb, x, ["gradcam", "hirescam"], targets=[0])
    # Grad-CAM: w = (1/2, 3/4, 1/2), S = [[1.25, 1.5], [0.75, 0.5]] / 2 -> [[0.75, 1], [0.25, 0]]
    torch.testing.assert_close(ex["gradcam"][0], torch.tensor([[0.75, 1.0], [0.25, 0.0]]),
                               atol=1e-6, rtol=0)
    # HiResCAM: sum_k g_k * A_k = ([[1, 0], [0, 0]] + [[-2, 2], [1, 0]]) / 2 = [[-1, 2], [1, 0]] / 2
    #   -> ReLU: [[0, 1], [0.5, 0]] -> min-max (min 0, max 1): the same
    torch.testing.assert_close(ex["hirescam"][0], torch.tensor([[0.0, 1.0], [0.5, 0.0]]),
                               atol=1e-6, rtol=0)
    assert all(p.requires_grad and p.grad is None for p in net.parameters())


def test_in_place_op_after_the_target_layer_changes_nothing():
    """ReLU(inplace=True) right after the target conv: the maps equal the out-of-place net's."""
    x = images()
    maps = {}
    for inplace in (True, False):
        net = tiny(inplace=inplace)
        bb = wrap_model(net, "features.3", input_size=32, device="cpu")
        ex = explain(bb, x, ["gradcam", "layercam", "smoothgradcampp"], smooth_samples=2)
        maps[inplace] = ex
    for m in ("gradcam", "layercam", "smoothgradcampp"):
        assert torch.equal(maps[True][m], maps[False][m]), m


def test_wrapped_unfrozen_equals_frozen():
    """The same network, trainable or frozen, gives the same maps: explaining ignores the flags."""
    x = images()
    trainable = wrap_model(tiny(), input_size=32, device="cpu")
    frozen = wrap_model(tiny().requires_grad_(False), input_size=32, device="cpu")
    a = explain(trainable, x, ["gradcam", "gradcampp", "xgradcam"])
    b = explain(frozen, x, ["gradcam", "gradcampp", "xgradcam"])
    for m in a:
        assert torch.equal(a[m], b[m]), m


# ---------------------------------------------------------------------------------------------
# Every method and metric on a custom CNN and on a timm model


def _every_method(bb: paperlib.BlackBox, x: torch.Tensor, checkpoint: Path) -> None:
    methods = default_methods()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # attention-per-image's "no checkpoint" is not this one
        ex = explain(bb, x, methods, checkpoint=str(checkpoint), **SMALL)
    assert list(ex) == list(methods)
    for m in methods:
        assert ex[m].shape == (x.shape[0], bb.input_size, bb.input_size), m
        assert torch.isfinite(ex[m]).all() and ex[m].min() >= 0 and ex[m].max() <= 1, m
    config = MetricConfig(curve_steps=2, fractions=(10, 50))
    scores = evaluate_batch(bb, x, ex.maps, ex.targets, config, clean_logits=ex.logits)
    flat = {m: ex.flat_images[m].numpy() for m in methods}
    rows = image_rows([f"img{i}" for i in range(x.shape[0])], np.zeros(x.shape[0]), scores, flat,
                      config)
    assert len(rows) == x.shape[0] * len(methods)
    for r in rows:
        assert 0 <= r["drop_soft"] <= 100 and r["increase_soft"] in (0.0, 100.0)
        assert r["agree_top10"] in (0.0, 100.0)


def test_every_method_and_metric_on_a_custom_cnn(sample_files, tmp_path):
    net = tiny()
    bb = wrap_model(net, input_size=32, device="cpu")
    ckpt = trained_checkpoint(bb, sample_files, tmp_path / "my_checkpoint.pt")
    assert ckpt.is_file() and ckpt.with_suffix(".json").is_file()
    before = flags(bb.model)
    _every_method(bb, images(), ckpt)
    assert flags(bb.model) == before


def test_every_method_on_a_timm_model_through_load_model(sample_files, tmp_path):
    pytest.importorskip("timm")
    with pytest.warns(UserWarning, match="UNTRAINED"):
        bb = load_model("timm:resnet10t", device="cpu", weights="random")
    assert type(bb) is BlackBox and bb.name == "timm-resnet10t"
    assert bb.target_layer_name == "net.layer4" and bb.weights == "random"
    # timm's own test-time config: 224 px, crop_pct 0.95 (resize 235), bicubic, ImageNet stats
    assert (bb.input_size, bb.mean, bb.std) == (224, IMAGENET_MEAN, IMAGENET_STD)
    resize = bb.preprocess.transforms[0]
    assert resize.size == math.floor(224 / 0.95) == 235
    assert resize.interpolation == T.InterpolationMode.BICUBIC
    assert bb.num_classes == 1000 and bb.class_names == paperlib.imagenet_classes()[1]
    ckpt = trained_checkpoint(bb, sample_files, tmp_path / "resnet10t.pt")
    x = torch.stack([bb.preprocess(sample_files[i][0]) for i in range(2)])
    _every_method(bb, x, ckpt)


def test_timm_weights_from_a_file(tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    src = timm.create_model("resnet10t", pretrained=False, num_classes=5)
    plain = tmp_path / "plain.pth"
    torch.save(src.state_dict(), plain)
    wrapped = tmp_path / "wrapped.pth"  # as training scripts save it: nested, DDP prefix
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()},
                "epoch": 3}, wrapped)
    for path in (plain, wrapped):
        bb = load_model("timm:resnet10t", device="cpu", weights=path)
        assert bb.num_classes == 5 and bb.class_names is None and bb.weights == str(path)
        for k, v in src.state_dict().items():
            assert torch.equal(bb.net.state_dict()[k], v), k


def test_timm_errors(tmp_path):
    pytest.importorskip("timm")
    with pytest.raises(WeightsNotFoundError, match="weights='random'"):
        load_model("timm:resnet10t", device="cpu")
    with pytest.raises(ValueError, match="unknown timm model 'resnet10'; closest names: "
                                         "resnet10t"):
        load_model("timm:resnet10", device="cpu", weights="random")
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        load_model("timm:resnet10t", device="cpu", weights=tmp_path / "nope.pth")
    other = tmp_path / "tiny.pth"
    torch.save(tiny().state_dict(), other)
    with pytest.raises(ValueError, match=r"tiny.pth does not fit the architecture"):
        load_model("timm:resnet10t", device="cpu", weights=other)


# ---------------------------------------------------------------------------------------------
# Errors at wrap time


def test_wrong_layer_name_lists_the_closest_names():
    with pytest.raises(ValueError, match=r"TinyCNN has no module 'featurs'; closest names: "
                                         r"'features'"):
        wrap_model(tiny(), "featurs", input_size=32)
    with pytest.raises(ValueError, match=r"no module 'features\.9'; closest names: "
                                         r"'features\.4', 'features\.3', 'features\.2'"):
        wrap_model(tiny(), "features.9", input_size=32)
    with pytest.raises(ValueError, match="is not a submodule of the model"):
        wrap_model(tiny(), nn.Conv2d(3, 3, 1), input_size=32)


def test_non_4d_target_layer_is_an_error():
    with pytest.raises(ValueError, match=r"target layer 'fc' outputs shape \(1, 3\); a CAM needs "
                                         r"a 4-D .* layers with one: .*'features'"):
        wrap_model(tiny(), "fc", input_size=32)


class TwoHeads(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.body, self.kind = tiny(), kind

    def forward(self, x: torch.Tensor):
        y = self.body(x)
        return (y, y.detach()) if self.kind == "tuple" else {"logits": y, "aux": y}


@pytest.mark.parametrize("kind,text", [
    ("tuple", r"returns a tuple of 2 outputs \(a tensor of shape \(1, 3\), a tensor of shape "
              r"\(1, 3\)\); explaining needs one \(B, num_classes\) logits tensor"),
    ("dict", r"returns a dict with keys \['logits', 'aux'\]; explaining needs one"),
])
def test_several_outputs_are_an_error(kind, text):
    with pytest.raises(ValueError, match=text):
        wrap_model(TwoHeads(kind), input_size=32)


def test_layer_run_twice_or_unused_or_tokens_is_an_error():
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            return self.fc(self.conv(self.conv(x)).mean(dim=(2, 3)))

    with pytest.raises(ValueError, match="target layer 'conv' runs 2 times per forward"):
        wrap_model(Twice(), "conv", input_size=8)

    class Unused(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.side = nn.Conv2d(3, 4, 3)
            self.main = nn.Conv2d(3, 4, 3)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            self.side(x)
            return self.fc(self.main(x).mean(dim=(2, 3)))

    with pytest.raises(RuntimeError, match="the logits do not depend on target layer 'side'"):
        wrap_model(Unused(), "side", input_size=8)

    class Tokens(nn.Module):  # a patch embedding, then a token sequence (a ViT's shape)
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Conv2d(3, 4, 4, stride=4)
            self.mix = nn.Linear(4, 4)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(self.mix(self.embed(x).flatten(2).transpose(1, 2)).mean(dim=1))

    with pytest.raises(ValueError, match=r"its last feature map, 'embed', is followed by layers "
                                         r"with token outputs \('mix': \(1, 16, 4\)\)"):
        wrap_model(Tokens(), input_size=16)
    assert wrap_model(Tokens(), "embed", input_size=16).target_layer_name == "net.embed"


def test_bad_settings_are_errors():
    with pytest.raises(ValueError, match="returns 3 logits but 2 class names were given"):
        wrap_model(tiny(), input_size=32, class_names=["a", "b"])
    with pytest.raises(ValueError, match=r"mean must hold 3 values \(R, G, B\), got \(0\.5,\)"):
        wrap_model(tiny(), input_size=32, mean=(0.5,))
    with pytest.raises(ValueError, match="std must be a finite number > 0, got 0"):
        wrap_model(tiny(), input_size=32, std=(1, 0, 1))
    with pytest.raises(ValueError, match="interpolation must be one of"):
        wrap_model(tiny(), input_size=32, interpolation="lanczos")
    with pytest.raises(TypeError, match="wrap_model needs an nn.Module, got function"):
        wrap_model(lambda x: x)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# The user's flags


def _mixed_flags(net: TinyCNN) -> None:
    """Some parameters frozen, some trainable; some modules in train mode."""
    net.features[0].weight.requires_grad_(False)
    net.fc.bias.requires_grad_(False)
    net.features[1].train()
    net.drop.train()


def test_flags_unchanged_after_explaining_every_gradient_method():
    net = tiny()
    bb = wrap_model(net, input_size=32, device="cpu")
    _mixed_flags(net)
    before = flags(bb.model)
    assert before[0]["net.features.0.weight"] is False and before[0]["net.fc.weight"] is True
    assert before[1]["net.drop"] is True and before[1]["net.features.0"] is False
    ex = explain(bb, images(), ["gradcam", "gradcampp", "smoothgradcampp", "xgradcam",
                                "layercam", "hirescam", "attention-fixed"], **SMALL)
    assert flags(bb.model) == before
    assert all(p.grad is None for p in net.parameters())
    for m in bb.model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
    # computed in eval mode (Dropout and BN off) although parts were in train mode
    net.eval()
    again = explain(bb, images(), ["gradcam"])
    torch.testing.assert_close(ex["gradcam"], again["gradcam"], atol=1e-6, rtol=0)
    _mixed_flags(net)
    explain(bb, images(), ["scorecam"], **SMALL)  # forwards outside the hooked pass
    assert flags(bb.model) == before
    assert all(p.grad is None for p in net.parameters())


def test_flags_unchanged_after_an_exception_inside():
    net = tiny()
    bb = wrap_model(net, input_size=32, device="cpu")
    _mixed_flags(net)
    before = flags(bb.model)
    with pytest.raises(ValueError, match=r"targets must be class indices in \[0, 3\)"):
        explain(bb, images(), ["gradcam"], targets=[0, 7])  # raised inside the hooked pass
    assert flags(bb.model) == before
    with pytest.raises(RuntimeError, match="boom"):
        with capture_layer(bb.model, bb.target_layer):
            assert not any(p.requires_grad for p in bb.model.parameters())
            assert not any(m.training for m in bb.model.modules())
            raise RuntimeError("boom")
    assert flags(bb.model) == before
    assert all(p.grad is None for p in net.parameters())


def test_frozen_parameters_restores_exactly_the_flags_it_changed():
    net = tiny()
    net.features[3].bias.requires_grad_(False)
    before = flags(net)[0]
    with pytest.raises(KeyError):
        with frozen_parameters(net):
            assert not any(p.requires_grad for p in net.parameters())
            with frozen_parameters(net):  # nested: nothing to do, nothing to restore
                pass
            assert not any(p.requires_grad for p in net.parameters())
            raise KeyError("inside")
    assert flags(net)[0] == before
    assert sum(not v for v in before.values()) == 1


def test_attention_per_image_leaves_the_classifiers_grad_alone():
    net = tiny()
    bb = wrap_model(net, input_size=32, device="cpu")
    before = flags(bb.model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        explain(bb, images(), ["attention-per-image"], per_image_steps=1)
    assert flags(bb.model) == before
    assert all(p.grad is None for p in net.parameters())


def test_scorecam_on_a_model_in_train_mode_changes_no_statistics():
    net = tiny()
    bb = wrap_model(net, input_size=32, device="cpu")
    net.train()
    running = net.features[1].running_mean.clone()
    explain(bb, images(), ["scorecam"], scorecam_channels=4)
    assert net.training
    assert torch.equal(net.features[1].running_mean, running)
