"""Black boxes: EfficientNet-Lite offline, torchvision models with random weights only (no
downloads), the by-order weight mapping, and the errors that say how to get weights."""

from __future__ import annotations

import warnings
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from paperlib import MODEL_NAMES, WeightsNotFoundError, iter_batches, load_model
from paperlib.blackbox import map_state_dict_by_order, resolve_device
from paperlib.hooks import capture_layer
from paperlib.models import _lite_package_file


def _solid_image(size=(300, 200), colour=(255, 0, 128)) -> Image.Image:
    return Image.new("RGB", size, colour)


def _target_activations(bb, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, target-layer output) of one forward, without gradients."""
    with torch.no_grad(), capture_layer(bb.model, bb.target_layer) as cap:
        logits = bb.model(x)
    return logits, cap.activations


def _all_eval(model: torch.nn.Module) -> bool:
    return not any(m.training for m in model.modules())


# ---------------------------------------------------------------------------------------------
# EfficientNet-Lite (offline)

def test_lite0_black_box(lite0):
    bb = lite0
    assert bb.name == "efficientnet_lite0"
    assert bb.device == torch.device("cpu")
    assert _all_eval(bb.model)
    assert all(not p.requires_grad for p in bb.model.parameters())  # frozen black box
    assert bb.weights == str(_lite_package_file("efficientnet_lite0"))
    # target layer: conv_head's BN + ReLU6, the 1280-channel last stage
    assert bb.target_layer_name == "net.bn2"
    assert bb.target_layer is bb.model.net.bn2
    assert bb.target_layer is bb.model.get_submodule("net.bn2")
    assert bb.input_size == 224
    assert bb.mean == bb.std == (0.5, 0.5, 0.5)

    # preprocess: PIL -> (3, 224, 224) in [0, 1]; a solid colour stays exactly that colour
    x = bb.preprocess(_solid_image())
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32
    assert torch.equal(x[0], torch.ones(224, 224))
    assert torch.equal(x[1], torch.zeros(224, 224))
    assert torch.allclose(x[2], torch.full((224, 224), 128 / 255))

    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (333, 517, 3), dtype=np.uint8))
    x = bb.preprocess(noise)
    assert x.shape == (3, 224, 224)
    assert x.min() >= 0 and x.max() <= 1

    logits, act = _target_activations(bb, x[None])
    assert logits.shape == (1, 1000) and torch.isfinite(logits).all()
    assert act.shape == (1, 1280, 7, 7)
    assert act.min() >= 0 and act.max() <= 6  # ReLU6
    assert _all_eval(bb.model)


def test_lite0_normalize_is_inside_the_model(lite0):
    """The black box takes [0, 1] images: (x - 0.5) / 0.5 happens in its first module."""
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        direct = lite0.net((x - 0.5) / 0.5)
        wrapped = lite0(x)
    torch.testing.assert_close(wrapped, direct, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name,size", [("efficientnet_lite1", 240), ("efficientnet_lite2", 260)])
def test_lite1_lite2_input_sizes(name, size):
    bb = load_model(name, device="cpu")
    assert bb.input_size == size
    assert bb.target_layer_name == "net.bn2"
    assert bb.weights == str(_lite_package_file(name))
    assert _all_eval(bb.model)
    x = bb.preprocess(_solid_image((400, 300)))
    assert x.shape == (3, size, size)
    logits, act = _target_activations(bb, x[None])
    assert logits.shape == (1, 1000)
    assert act.shape[:2] == (1, 1280)
    assert act.shape[2:] == ((size + 31) // 32,) * 2  # stride 32, TF "same" padding


def test_lite0_top1_on_sample(lite0, sample_dataset):
    """64 evenly spaced real images: Lite0 with the packaged weights is a real ImageNet model
    (0.884 top-1 on all 500; >= 0.8 on these 64)."""
    ds = sample_dataset.subset(64)
    assert len(ds) == 64
    correct = total = 0
    with torch.no_grad():
        for batch in iter_batches(ds, lite0.preprocess, batch_size=16):
            pred = lite0(batch.images).argmax(dim=1)
            correct += int((pred == batch.labels).sum())
            total += len(batch)
    assert total == 64
    assert correct / total >= 0.8, f"top-1 {correct}/{total}"


# ---------------------------------------------------------------------------------------------
# Weight mapping by order

def test_map_state_dict_by_order_renames_in_order():
    a, b, c = torch.zeros(2, 3), torch.ones(4), torch.arange(6.0).view(3, 2)
    source = OrderedDict([("_conv.weight", a), ("_bn.bias", b), ("_fc.weight", c)])
    target = OrderedDict([("conv.weight", torch.empty(2, 3)), ("bn.bias", torch.empty(4)),
                          ("fc.weight", torch.empty(3, 2))])
    mapped = map_state_dict_by_order(source, target)
    assert list(mapped) == ["conv.weight", "bn.bias", "fc.weight"]
    assert mapped["conv.weight"] is a and mapped["bn.bias"] is b and mapped["fc.weight"] is c


def test_map_state_dict_count_mismatch_names_the_tensor():
    target = OrderedDict([("conv.weight", torch.empty(2, 3)), ("bn.bias", torch.empty(4))])
    extra = OrderedDict([("_conv.weight", torch.zeros(2, 3)), ("_bn.bias", torch.zeros(4)),
                         ("_fc.stray", torch.zeros(1))])
    with pytest.raises(ValueError, match="3 tensors.*expects 2") as err:
        map_state_dict_by_order(extra, target, what="lite-test")
    assert "lite-test" in str(err.value) and "'_fc.stray'" in str(err.value)

    short = OrderedDict([("_conv.weight", torch.zeros(2, 3))])
    with pytest.raises(ValueError, match="1 tensors.*expects 2") as err:
        map_state_dict_by_order(short, target)
    assert "'bn.bias'" in str(err.value)


def test_map_state_dict_shape_mismatch_names_the_tensor():
    source = OrderedDict([("_conv.weight", torch.zeros(2, 3)), ("_bn.bias", torch.zeros(5))])
    target = OrderedDict([("conv.weight", torch.empty(2, 3)), ("bn.bias", torch.empty(4))])
    with pytest.raises(ValueError) as err:
        map_state_dict_by_order(source, target, what="lite-test")
    msg = str(err.value)
    assert "lite-test" in msg and "#1" in msg
    assert "'_bn.bias'" in msg and "'bn.bias'" in msg and "(5,)" in msg and "(4,)" in msg


@pytest.fixture(scope="module")
def lite0_package_state() -> OrderedDict[str, torch.Tensor]:
    """Lite0's shipped state dict (EfficientNet-PyTorch names: _conv_stem, ..., _fc)."""
    return torch.load(_lite_package_file("efficientnet_lite0"), map_location="cpu",
                      weights_only=True)


def test_lite0_from_explicit_weights_file(lite0, lite0_package_state, tmp_path):
    """A perturbed copy of the package file: +1 on every class bias shifts every logit by 1."""
    state = OrderedDict((k, v.clone()) for k, v in lite0_package_state.items())
    assert list(state)[-1] == "_fc.bias"
    state["_fc.bias"] += 1.0
    path = tmp_path / "lite0-perturbed.pth"
    torch.save(state, path)

    bb = load_model("efficientnet_lite0", device="cpu", weights=path)
    assert bb.weights == str(path)
    assert torch.equal(bb.net.classifier.bias, lite0.net.classifier.bias + 1.0)
    assert torch.equal(bb.net.conv_stem.weight, lite0.net.conv_stem.weight)

    x = lite0.preprocess(_solid_image())[None]
    with torch.no_grad():
        torch.testing.assert_close(bb(x), lite0(x) + 1.0, atol=1e-4, rtol=0)

    # the {"state_dict": ...} wrapping of training checkpoints is accepted too
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"state_dict": lite0_package_state}, wrapped)
    bb2 = load_model("efficientnet_lite0", device="cpu", weights=str(wrapped))
    assert torch.equal(bb2.net.classifier.bias, lite0.net.classifier.bias)


def test_lite0_weights_file_with_wrong_shapes_fails(lite0_package_state, tmp_path):
    state = OrderedDict(lite0_package_state)
    state["_fc.weight"] = torch.zeros(10, 1280)  # a 10-class head
    state["_fc.bias"] = torch.zeros(10)
    path = tmp_path / "ten-classes.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"'_fc\.weight' has shape \(10, 1280\)") as err:
        load_model("efficientnet_lite0", device="cpu", weights=path)
    assert "'classifier.weight' expects (1000, 1280)" in str(err.value)
    assert str(path) in str(err.value)

    fewer = OrderedDict(list(lite0_package_state.items())[:-1])  # bias missing
    path2 = tmp_path / "no-bias.pth"
    torch.save(fewer, path2)
    with pytest.raises(ValueError, match="295 tensors.*expects 296.*'classifier.bias'"):
        load_model("efficientnet_lite0", device="cpu", weights=path2)


def test_unreadable_weights_files(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        load_model("efficientnet_lite0", device="cpu", weights=tmp_path / "nope.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"this is not a torch file")
    with pytest.raises(WeightsNotFoundError, match="could not read weights file"):
        load_model("efficientnet_lite0", device="cpu", weights=junk)
    not_tensors = tmp_path / "list.pth"
    torch.save([1, 2, 3], not_tensors)
    with pytest.raises(WeightsNotFoundError, match="state dict of tensors"):
        load_model("efficientnet_lite0", device="cpu", weights=not_tensors)
    assert issubclass(WeightsNotFoundError, FileNotFoundError)


# ---------------------------------------------------------------------------------------------
# torchvision black boxes -- random weights only, never a download

@pytest.fixture(autouse=True)
def _isolated_torch_home(tmp_path, monkeypatch):
    """No test here may find (or write) real torchvision weights: the hub cache is a tmp dir."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))


def _check_torchvision_box(bb, name, layer, channels, hw):
    assert bb.name == name
    assert bb.target_layer_name == f"net.{layer}"
    assert bb.target_layer is bb.model.get_submodule(f"net.{layer}")
    assert bb.input_size == 224
    assert _all_eval(bb.model)
    assert all(not p.requires_grad for p in bb.model.parameters())
    x = bb.preprocess(_solid_image((320, 240), (10, 200, 90)))
    assert x.shape == (3, 224, 224) and x.min() >= 0 and x.max() <= 1
    logits, act = _target_activations(bb, x[None])
    assert logits.shape == (1, 1000) and torch.isfinite(logits).all()
    assert act.shape == (1, channels, hw, hw)


@pytest.mark.parametrize("name,layer,channels,hw", [
    ("resnet50", "layer4", 2048, 7),
    ("vgg19", "features.35", 512, 14),   # the only vgg19 instance of the suite (~550 MB)
    ("googlenet", "inception5b", 1024, 7),
])
def test_torchvision_random_weights(name, layer, channels, hw):
    with pytest.warns(UserWarning, match="UNTRAINED"):
        bb = load_model(name, device="cpu", weights="random")
    assert bb.weights == "random"
    assert bb.mean == (0.485, 0.456, 0.406) and bb.std == (0.229, 0.224, 0.225)
    _check_torchvision_box(bb, name, layer, channels, hw)
    if name == "vgg19":
        assert isinstance(bb.target_layer, torch.nn.ReLU)  # after the last 3x3 conv, pre-pool
    if name == "googlenet":
        net = bb.net
        assert net.transform_input and not net.aux_logits
        assert net.aux1 is None and net.aux2 is None


def test_resnet50_preprocess_matches_torchvision(tmp_path):
    """preprocess + the model's Normalize == torchvision's own transforms for these weights."""
    with pytest.warns(UserWarning):
        bb = load_model("resnet50", device="cpu", weights="random")
    rng = np.random.default_rng(1)
    img = Image.fromarray(rng.integers(0, 256, (300, 411, 3), dtype=np.uint8))
    ours = bb.model.normalize(bb.preprocess(img)[None])
    ref = torchvision.models.ResNet50_Weights.IMAGENET1K_V1.transforms()(img)[None]
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def resnet50_random_state() -> OrderedDict[str, torch.Tensor]:
    torch.manual_seed(123)
    return torchvision.models.resnet50(weights=None).state_dict()


def test_resnet50_weights_from_file(resnet50_random_state, tmp_path):
    path = tmp_path / "my-resnet50.pth"
    torch.save(resnet50_random_state, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not random: no UNTRAINED warning
        bb = load_model("resnet50", device="cpu", weights=path)
    assert bb.weights == str(path)
    sd = bb.net.state_dict()
    for key in ("conv1.weight", "layer4.2.bn3.running_var", "fc.bias"):
        assert torch.equal(sd[key], resnet50_random_state[key])
    _check_torchvision_box(bb, "resnet50", "layer4", 2048, 7)


def test_resnet50_weights_from_hub_cache(resnet50_random_state, tmp_path, monkeypatch):
    home = tmp_path / "cache-home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    cached = home / "hub" / "checkpoints" / "resnet50-0676ba61.pth"
    cached.parent.mkdir(parents=True)
    torch.save(resnet50_random_state, cached)
    bb = load_model("resnet50", device="cpu", download=False)
    assert bb.weights == str(cached)
    assert torch.equal(bb.net.fc.weight, resnet50_random_state["fc.weight"])


def test_googlenet_weights_from_file_with_aux_heads(tmp_path):
    torch.manual_seed(7)
    ref = torchvision.models.googlenet(weights=None, aux_logits=True, transform_input=True,
                                       init_weights=False).eval()
    state = ref.state_dict()
    assert any(k.startswith("aux1.") for k in state)  # as torchvision's released file
    path = tmp_path / "googlenet-random.pth"
    torch.save(state, path)
    bb = load_model("googlenet", device="cpu", weights=path)
    assert bb.weights == str(path)
    assert bb.net.aux1 is None and bb.net.aux2 is None
    _check_torchvision_box(bb, "googlenet", "inception5b", 1024, 7)
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = ref(bb.model.normalize(x))
        torch.testing.assert_close(bb(x), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name,file", [("resnet50", "resnet50-0676ba61.pth"),
                                       ("googlenet", "googlenet-1378be20.pth")])
def test_missing_torchvision_weights_offline(name, file, tmp_path, monkeypatch):
    home = tmp_path / "empty-home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    with pytest.raises(WeightsNotFoundError) as err:
        load_model(name, device="cpu", download=False)
    msg = str(err.value)
    assert name in msg and file in msg
    assert str(home / "hub" / "checkpoints") in msg   # where to put it
    assert "weights='path/to/" in msg                 # or how to pass it
    assert "downloads are off" in msg

    # PAPERLIB_OFFLINE makes download=False the default
    monkeypatch.setenv("PAPERLIB_OFFLINE", "1")
    with pytest.raises(WeightsNotFoundError, match=file):
        load_model(name, device="cpu")


# ---------------------------------------------------------------------------------------------
# Bad arguments

def test_unknown_model_name_lists_the_names():
    with pytest.raises(ValueError, match="unknown black box 'resnet18'") as err:
        load_model("resnet18", device="cpu")
    for name in MODEL_NAMES:
        assert name in str(err.value)
    assert set(MODEL_NAMES) == {"efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2",
                                "resnet50", "vgg19", "googlenet"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available on this machine")
def test_cuda_without_cuda_is_an_error():
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        load_model("efficientnet_lite0", device="cuda")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        resolve_device("cuda:0")
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(None) == torch.device("cpu")


def test_target_layer_can_be_overridden():
    from paperlib import load_model

    bb = load_model("efficientnet_lite0", device="cpu", target_layer="blocks.6")
    assert bb.target_layer_name == "net.blocks.6"
    assert bb.target_layer is bb.model.get_submodule("net.blocks.6")
    with pytest.raises(ValueError, match="no module 'nope'"):
        load_model("efficientnet_lite0", device="cpu", target_layer="nope")
