"""Input guards: what ``explain`` / ``gradient_pass`` refuse (and what they still accept, with the
same maps as before), ``weights_only`` for downloaded checkpoints, and ``make data``'s single
message when the images cannot be downloaded (network functions monkeypatched: no real network).
"""

from __future__ import annotations

import hashlib
import io
import pickle
import re
import subprocess
import sys
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pooch
import pytest
import requests
import torch
from torch import nn

import paperlib
from paperlib import blackbox, cam, cli, download, models
from paperlib.blackbox import BlackBox, Normalize, WeightsNotFoundError
from paperlib.cam import ExplainOptions, Pass, explain, gradient_pass
from paperlib.hooks import capture_layer, layer_gradients

REPO_ROOT = Path(__file__).resolve().parent.parent

# ---------------------------------------------------------------------------------------------
# A tiny hand-computable black box (the idea of tests/test_cam.py's tiny_black_box), with inputs
# in [0, 1]: the black box's normalisation doubles its input, so the target layer (an Identity)
# sees A = 2 x; with X_IN = X / 2 it sees exactly
#   A0 = [[1, 0],   A1 = [[1, 2],   A2 = 0
#         [0, 1]]         [1, 0]]
# and the Linear's row 0, reshaped to (3, 2, 2), is the gradient g of class 0.

X = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]],
                   [[1.0, 2.0], [1.0, 0.0]],
                   [[0.0, 0.0], [0.0, 0.0]]]])
X_IN = X / 2
ROW0 = [1.0, -1.0, 2.0, 0.0, -2.0, 1.0, 1.0, 3.0, 1.0, 1.0, -1.0, 2.0]
# The hand-computed class-0 maps of tests/test_cam.py (same A and g).
EXPECTED_CLASS0 = {
    "gradcam": [[0.75, 1.0], [0.25, 0.0]],
    "gradcampp": [[1.0, 46 / 49], [0.0, 3 / 49]],
    "xgradcam": [[1.0, 0.5], [0.0, 0.5]],
    "hirescam": [[0.0, 1.0], [0.5, 0.0]],
    "layercam": [[0.5, 1.0], [0.5, 0.0]],
}
ALL_CAM = ["gradcam", "gradcampp", "xgradcam", "hirescam", "layercam", "smoothgradcampp",
           "scorecam"]


def tiny_black_box() -> BlackBox:
    features, fc = nn.Identity(), nn.Linear(12, 3, bias=False)
    with torch.no_grad():
        fc.weight.copy_(torch.tensor([ROW0, [0.0] * 12, [1.0] * 12]))
    net = nn.Sequential(OrderedDict(features=features, flatten=nn.Flatten(), fc=fc))
    model = nn.Sequential(OrderedDict(normalize=Normalize((0.0, 0.0, 0.0), (0.5, 0.5, 0.5)),
                                      net=net)).eval()
    return BlackBox(name="tiny", model=model, preprocess=lambda im: torch.zeros(3, 2, 2),
                    target_layer=features, target_layer_name="net.features", input_size=2,
                    mean=(0.0, 0.0, 0.0), std=(0.5, 0.5, 0.5), weights="hand-set")


def _batch(n: int) -> torch.Tensor:
    """n copies of X_IN (values in [0, 1])."""
    return X_IN.repeat(n, 1, 1, 1)


def _raises(fn: Callable[[], object], exc: type[Exception], message: str) -> None:
    """``fn()`` raises ``exc`` with exactly ``message``."""
    with pytest.raises(exc) as info:
        fn()
    assert str(info.value) == message


def _both(bb: BlackBox, images: Any, message: str, targets: Any = None,
          exc: type[Exception] = ValueError) -> None:
    """``explain`` and ``gradient_pass`` both refuse ``images``/``targets`` with ``message``, and
    leave no hook behind."""
    _raises(lambda: explain(bb, images, ["gradcam"], targets=targets), exc, message)
    _raises(lambda: gradient_pass(bb, images, targets), exc, message)
    assert not bb.target_layer._forward_hooks


def _unguarded(bb: BlackBox, images: torch.Tensor, methods: list[str],
               targets: torch.Tensor | None = None,
               options: ExplainOptions | None = None) -> dict[str, torch.Tensor]:
    """The maps as explain computed them before the guards: the hooked pass and the pipeline,
    written out with no input check."""
    options = options or ExplainOptions()
    with capture_layer(bb.model, bb.target_layer) as cap, torch.enable_grad():
        logits = bb.model(images)
        assert cap.activations is not None
        t = logits.argmax(dim=1) if targets is None else targets
        g = layer_gradients(logits, t, cap.activations)
    p = Pass(bb, images, t, logits.detach(), cap.activations.detach(), g.detach(), options)
    size = (int(images.shape[-2]), int(images.shape[-1]))
    out = {}
    for name in methods:
        low = cam.METHODS[name].fn(p, options.of(name)).clamp(min=0)
        out[name] = cam.normalize_maps(cam.upsample(low, size))[0]
    return out


# ---------------------------------------------------------------------------------------------
# Valid inputs: exactly the maps of before

def test_valid_tiny_input_gives_the_hand_computed_maps():
    bb = tiny_black_box()
    ex = explain(bb, X_IN, list(EXPECTED_CLASS0), targets=[0])
    for method, expected in EXPECTED_CLASS0.items():
        torch.testing.assert_close(ex[method][0], torch.tensor(expected), atol=1e-6, rtol=0)
    assert ex.targets.tolist() == [0]
    assert ex.logits.tolist() == [[2.0, 0.0, 6.0]]
    assert ex.flat == {m: 0 for m in EXPECTED_CLASS0}
    p = gradient_pass(bb, X_IN, [0])
    assert torch.equal(p.A, X) and torch.equal(p.g, torch.tensor(ROW0).view(1, 3, 2, 2))


def test_valid_tiny_input_equals_the_unguarded_computation():
    bb = tiny_black_box()
    images = torch.cat([X_IN, X_IN.flip(-1), torch.zeros(1, 3, 2, 2), torch.ones(1, 3, 2, 2)])
    opts = ExplainOptions.build(smooth_samples=3)
    for targets in (None, [0, 2, 1, 0]):
        ex = explain(bb, images, ALL_CAM, targets=targets, options=opts)
        t = None if targets is None else torch.tensor(targets)
        expected = _unguarded(bb, images, ALL_CAM, t, opts)
        for m in ALL_CAM:
            assert torch.equal(ex[m], expected[m]), m


def test_a_valid_batch_already_on_the_device_is_not_copied():
    bb = tiny_black_box()
    x = _batch(2)
    assert cam._check_images(x, bb) is x
    assert gradient_pass(bb, x, [0, 0]).images is x


def test_methods_as_one_string_and_integer_targets_of_every_kind_are_accepted():
    bb = tiny_black_box()
    x = _batch(2)
    reference = explain(bb, x, ["gradcam"], targets=[0, 2])
    for targets in ([0, 2], (0, 2), [np.int64(0), np.int64(2)], np.array([0, 2]),
                    torch.tensor([0, 2]), torch.tensor([0, 2], dtype=torch.int32),
                    torch.tensor([0, 2], dtype=torch.uint8)):
        ex = explain(bb, x, "gradcam", targets=targets)  # type: ignore[arg-type]
        assert list(ex) == ["gradcam"]
        assert ex.targets.dtype == torch.int64 and ex.targets.tolist() == [0, 2]
        assert torch.equal(ex["gradcam"], reference["gradcam"])


def test_targets_are_moved_to_the_images_device():
    # the only device here is the CPU; "meta" shows the move (and the cast to int64)
    t = cam._as_targets(torch.tensor([0, 2], dtype=torch.int32), 2, torch.device("meta"))
    assert t is not None and t.device.type == "meta" and t.dtype == torch.int64
    assert tuple(t.shape) == (2,)
    assert cam._as_targets(None, 2, torch.device("cpu")) is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cpu_images_and_targets_for_a_cuda_black_box():
    bb = tiny_black_box().to("cuda")
    ex = explain(bb, _batch(2), ALL_CAM, targets=torch.tensor([0, 2]), smooth_samples=3)
    assert ex.targets.device.type == "cuda" and ex.targets.tolist() == [0, 2]
    on_cpu = explain(tiny_black_box(), _batch(2), ALL_CAM, targets=[0, 2], smooth_samples=3)
    for m in ALL_CAM:
        torch.testing.assert_close(ex[m].cpu(), on_cpu[m], atol=1e-6, rtol=0)


def test_float64_and_float16_batches_are_converted_to_float32():
    bb = tiny_black_box()
    reference = explain(bb, _batch(2), list(EXPECTED_CLASS0), targets=[0, 0])
    for dtype in (torch.float64, torch.float16):
        x = _batch(2).to(dtype)  # X_IN's values are exact in both
        assert gradient_pass(bb, x, [0, 0]).images.dtype == torch.float32
        ex = explain(bb, x, list(EXPECTED_CLASS0), targets=[0, 0])
        for m in EXPECTED_CLASS0:
            assert ex[m].dtype == torch.float32
            assert torch.equal(ex[m], reference[m]), (dtype, m)


def test_lite0_maps_equal_the_unguarded_computation(lite0, lite0_batch):
    images, labels = lite0_batch.images, lite0_batch.labels
    methods = list(cam.GRADIENT_METHODS) + ["smoothgradcampp", "scorecam"]
    opts = ExplainOptions.build(smooth_samples=2, scorecam_channels=4)
    for targets in (None, labels):
        ex = explain(lite0, images, methods, targets=targets, options=opts)
        expected = _unguarded(lite0, images, methods, targets, opts)
        for m in methods:
            assert torch.equal(ex[m], expected[m]), m
    # float64 input: converted, the same maps bit for bit
    ex64 = explain(lite0, images.double(), ["gradcam"])
    assert torch.equal(ex64["gradcam"], explain(lite0, images, ["gradcam"])["gradcam"])


# ---------------------------------------------------------------------------------------------
# Images refused

NONFINITE = ("images hold non-finite values (NaN or inf) in image(s) {idx} (indices in the "
             "batch of {n}); the black box would give them NaN logits and NaN maps. Fix or drop "
             "those images")


def _outside(lo: str, hi: str, idx: str, n: int) -> str:
    return (f"images must be in [0, 1]: the black box expects its preprocess output (it "
            f"normalises internally), but the values range over [{lo}, {hi}] (image(s) {idx} of "
            f"the batch of {n}). 0..255 images need dividing by 255; already-normalised images "
            "need un-normalising (x * std + mean); or build the batch with black_box.preprocess")


def test_nan_patch_and_inf_pixel_name_the_images():
    bb = tiny_black_box()
    x = _batch(5)
    x[1, :, :1, :1] = float("nan")      # a NaN patch
    x[3, 2, 1, 0] = float("inf")        # one inf pixel
    _both(bb, x, NONFINITE.format(idx="[1, 3]", n=5))
    y = _batch(2)
    y[0, 0, 0, 0] = -float("inf")
    _both(bb, y, NONFINITE.format(idx="[0]", n=2), targets=[0, 1])
    # a non-finite pixel wins over out-of-range ones: it is the one named
    y[1] = 255.0
    _both(bb, y, NONFINITE.format(idx="[0]", n=2))


def test_many_bad_images_are_listed_up_to_ten():
    bb = tiny_black_box()
    x = _batch(13)
    x[:, 0, 0, 0] = float("nan")
    _both(bb, x, NONFINITE.format(idx="[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, ... (13 in all)]", n=13))


def test_values_outside_0_1_show_the_observed_range():
    bb = tiny_black_box()
    # uint8 pixel values cast to float without dividing by 255
    _both(bb, _batch(3) * 255, _outside("0", "255", "[0, 1, 2]", 3))
    # already normalised with mean 0.5, std 0.5 (what Lite0's Normalize does inside)
    _both(bb, (_batch(2) - 0.5) / 0.5, _outside("-1", "1", "[0, 1]", 2))
    x = _batch(3)
    x[2, 1, 0, 0] = 1.0001
    _both(bb, x, _outside("0", "1.0001", "[2]", 3))
    x[2, 1, 0, 0] = -0.25
    _both(bb, x, _outside("-0.25", "1", "[2]", 3))


def test_normalised_real_images_are_refused(lite0, lite0_batch):
    x = lite0_batch.images[:2]
    mean = torch.tensor(blackbox.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(blackbox.IMAGENET_STD).view(1, 3, 1, 1)
    z = (x - mean) / std
    lo, hi = torch.aminmax(z)
    _both(lite0, z, _outside(f"{float(lo):.4g}", f"{float(hi):.4g}", "[0, 1]", 2))


def test_integer_and_bool_dtypes():
    bb = tiny_black_box()
    fix = ("0..255 pixel values must be divided by 255 (images.float() / 255), or build the "
           "batch with black_box.preprocess")
    for dtype in (torch.uint8, torch.int64, torch.int32):
        _both(bb, (_batch(2) * 255).to(dtype),
              f"images have dtype {dtype}; the black box takes floating-point images in [0, 1] "
              f"(its preprocess output): {fix}")
    _both(bb, _batch(2) > 0,
          "images have dtype torch.bool; the black box takes floating-point images in [0, 1] "
          "(its preprocess output): build the batch with black_box.preprocess")


def test_channel_counts_other_than_3():
    bb = tiny_black_box()
    for c in (1, 4):
        _both(bb, torch.zeros(2, c, 2, 2),
              f"images must have 3 (RGB) channels: expected (B, 3, H, W), got shape (2, {c}, 2, 2)"
              "; convert grayscale (or RGBA) images to RGB first, as the kit's loader does "
              "before black_box.preprocess (PIL: image.convert('RGB'))")


def test_empty_batches():
    bb = tiny_black_box()
    for shape in ((0, 3, 2, 2), (1, 3, 0, 2)):
        _both(bb, torch.zeros(shape),
              f"images is an empty batch (shape {shape}); give at least one image of at least "
              "1x1 pixels")


def test_tensors_that_are_not_4d_and_non_tensors():
    bb = tiny_black_box()
    _both(bb, X_IN[0], "images must be a (B, 3, H, W) batch, got shape (3, 2, 2); for a single "
          "(3, H, W) image pass images[None]")
    _both(bb, X_IN[None], "images must be a (B, 3, H, W) batch, got shape (1, 1, 3, 2, 2)")
    _both(bb, torch.zeros(2, 12), "images must be a (B, 3, H, W) batch, got shape (2, 12)")
    _both(bb, X_IN.numpy(), "images must be a torch.Tensor (B, 3, H, W) in [0, 1], got ndarray; "
          "build the batch with torch.stack([black_box.preprocess(im) for im in pil_images])",
          exc=TypeError)


# ---------------------------------------------------------------------------------------------
# Targets refused

def test_float_targets_are_refused_even_whole_valued():
    bb = tiny_black_box()
    x = _batch(2)
    tensor_msg = ("targets must be integer class indices, got a tensor of dtype {dtype} with "
                  "values {values}; pass an integer tensor (targets.long() only if they are "
                  "whole numbers)")
    _both(bb, x, tensor_msg.format(dtype="torch.float32", values="[0.5, 2.0]"),
          targets=torch.tensor([0.5, 2.0]))
    _both(bb, x, tensor_msg.format(dtype="torch.float32", values="[0.0, 2.0]"),
          targets=torch.tensor([0.0, 2.0]))
    _both(bb, x, tensor_msg.format(dtype="torch.float64", values="[1.0, 2.0]"),
          targets=np.array([1.0, 2.0]))
    _both(bb, x, tensor_msg.format(dtype="torch.bool", values="[True, False]"),
          targets=torch.tensor([True, False]))
    _both(bb, x, "targets must be integer class indices, got [2.0] among [0, 2.0]; pass ints",
          targets=[0, 2.0])
    _both(bb, x, "targets must be integer class indices, got [1.5, 0.0] among [1.5, 0.0]; pass "
          "ints", targets=[1.5, 0.0])
    _both(bb, x, "targets must be integer class indices, got [True] among [True, 0]; pass ints",
          targets=[True, 0])
    _both(bb, x, tensor_msg.format(dtype="torch.float32", values="[1.0, 0.0]"),
          targets=[torch.tensor(1.0), torch.tensor(0.0)])


def test_other_bad_targets():
    bb = tiny_black_box()
    x = _batch(2)
    _both(bb, x, "targets must be integer class indices, got the string 'ab'", targets="ab")
    _both(bb, x, "targets must be one class index per image, shape (B,), got shape (1, 2)",
          targets=torch.tensor([[0, 1]]))
    _both(bb, x, "got 3 targets for a batch of 2 images; give exactly one class index per image "
          "(or targets=None for the predicted classes)", targets=[0, 1, 2])
    _both(bb, x, "targets must be class indices in [0, 3); got [0, 3]", targets=[0, 3])
    _both(bb, x, "targets must be class indices in [0, 3); got [-1, 0]",
          targets=torch.tensor([-1, 0]))
    with pytest.raises(ValueError, match=re.escape("targets must be integer class indices (a "
                                                   "sequence of ints or an integer tensor), got "
                                                   "[None, 1]")):
        explain(bb, x, targets=[None, 1])  # type: ignore[list-item]


def test_bad_input_runs_no_forward():
    bb = tiny_black_box()
    calls: list[int] = []
    bb.model.register_forward_pre_hook(lambda module, args: calls.append(1))
    cases: list[tuple[torch.Tensor, Any]] = [(_batch(2) * 255, None), (_batch(2), [0.0, 1.0]),
                                             (_batch(2), [0, 1, 2])]
    for images, targets in cases:
        with pytest.raises(ValueError):
            explain(bb, images, ["gradcam"], targets=targets)
    assert calls == []
    explain(bb, _batch(2), ["gradcam"])
    assert calls == [1]


# ---------------------------------------------------------------------------------------------
# Downloaded checkpoints: weights_only

def _hub_file(tmp_path: Path, obj: object, stem: str) -> tuple[str, Path]:
    """``obj`` saved as ``stem-<sha256 prefix>.pth`` (torch hub's hash check): (file URL, hub
    folder the download goes to)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    data = buf.getvalue()
    src = tmp_path / "server"
    src.mkdir()
    path = src / f"{stem}-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    path.write_bytes(data)
    return path.as_uri(), tmp_path / "hub"


def test_download_is_loaded_with_weights_only(monkeypatch: pytest.MonkeyPatch):
    seen: dict[str, Any] = {}

    def fake(url: str, **kwargs: Any) -> dict[str, torch.Tensor]:
        seen.update(kwargs, url=url)
        return {"w": torch.zeros(1)}

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fake)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: "/nonexistent-hub")
    state, where = models._torchvision_state("resnet50", "https://x/resnet50-0676ba61.pth",
                                             None, download=True)
    assert seen == {"url": "https://x/resnet50-0676ba61.pth", "map_location": "cpu",
                    "check_hash": True, "progress": False, "weights_only": True}
    assert list(state) == ["w"] and where == "/nonexistent-hub/checkpoints/resnet50-0676ba61.pth"


def test_a_torchvision_state_dict_loads_with_weights_only(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch):
    from torchvision.models import mobilenet_v3_small

    net = mobilenet_v3_small(weights=None)
    url, hub = _hub_file(tmp_path, net.state_dict(), "mobilenet_v3_small")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    state, where = models._torchvision_state("mobilenet", url, None, download=True)
    assert Path(where).is_file() and Path(where).parent == hub / "checkpoints"
    reference = net.state_dict()
    assert list(state) == list(reference)
    assert all(torch.equal(state[k], reference[k]) for k in reference)
    mobilenet_v3_small(weights=None).load_state_dict(state)


class _Payload:
    """Unpickling this calls :func:`_record` -- what a malicious checkpoint would do."""

    def __reduce__(self) -> tuple[Callable[[str], None], tuple[str]]:
        return _record, ("unpickled",)


_RECORDED: list[str] = []


def _record(what: str) -> None:
    _RECORDED.append(what)


def test_a_checkpoint_with_code_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    url, hub = _hub_file(tmp_path, {"w": torch.zeros(1), "x": _Payload()}, "evil")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    with pytest.raises(WeightsNotFoundError, match="^evil: pretrained ImageNet weights are not "
                       "in the torch hub cache and could not be downloaded") as info:
        models._torchvision_state("evil", url, None, download=True)
    assert isinstance(info.value.__cause__, pickle.UnpicklingError)
    assert _RECORDED == []  # the payload never ran
    # without weights_only the same file would have run it (what the guard prevents)
    torch.load(next((hub / "checkpoints").iterdir()), weights_only=False)
    assert _RECORDED == ["unpickled"]
    _RECORDED.clear()


def test_a_downloaded_file_that_is_not_a_state_dict(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url",
                        lambda url, **kw: {"w": torch.zeros(1), "epoch": 3})
    monkeypatch.setattr(torch.hub, "get_dir", lambda: "/nonexistent-hub")
    with pytest.raises(WeightsNotFoundError, match=re.escape(
            "resnet50: the file downloaded from https://x/resnet50-0676ba61.pth does not hold a "
            "state dict of tensors. To use resnet50: put the torchvision file")):
        models._torchvision_state("resnet50", "https://x/resnet50-0676ba61.pth", None, True)


# ---------------------------------------------------------------------------------------------
# make data: one message, no traceback (pooch.retrieve monkeypatched: no real network)

HOW = ("To provide the images, either\n"
       "  - point PAPERLIB_DATA at a folder of ImageNet images named <wnid>_<name>.JPEG:\n"
       "      PAPERLIB_DATA=/path/to/images make reproduce\n"
       "  - or run `make data` on a machine that is online: it downloads the pinned sample\n"
       f"    ({download.URL})\n"
       "    into the folder above (or copy that folder from a machine that has it).")
OFFLINE = ("could not download the ImageNet sample images: could not connect to github.com (this "
           "machine looks offline, or the connection was refused) (ConnectionError: no route).")


def _raise(exc: BaseException) -> Callable[..., NoReturn]:
    def fail(*args: Any, **kwargs: Any) -> NoReturn:
        raise exc
    return fail


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """pooch's cache folder, in tmp_path."""
    folder = tmp_path / "cache"
    folder.mkdir()
    monkeypatch.setattr(pooch, "os_cache", lambda name: folder)
    yield folder


def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pooch, "retrieve",
                        _raise(requests.exceptions.ConnectionError("no route")))


def test_offline_with_the_default_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         cache: Path, capsys: pytest.CaptureFixture[str]):
    _offline(monkeypatch)
    monkeypatch.delenv("PAPERLIB_DATA", raising=False)
    dest = tmp_path / "data" / "imagenet-sample"
    monkeypatch.setattr(download, "default_data_dir", lambda: dest)
    assert cli.main(["data"]) == 1
    out, err = capsys.readouterr()
    assert err == ("paperlib data: error: "
                   f"{OFFLINE}\nImages expected in: {dest} (the default, as PAPERLIB_DATA "
                   f"is not set; it does not exist)\n{HOW}\n")
    assert out == (f"downloading the ImageNet sample (pinned commit {download.COMMIT[:12]}) "
                   f"into {dest}\n")
    assert not dest.exists()


@pytest.mark.parametrize("state", ["missing", "empty", "other files"])
def test_offline_with_paperlib_data(state: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    cache: Path, capsys: pytest.CaptureFixture[str]):
    _offline(monkeypatch)
    dest = tmp_path / "images"
    if state != "missing":
        dest.mkdir()
    if state == "other files":
        (dest / "notes.txt").write_text("no images here")
    monkeypatch.setenv("PAPERLIB_DATA", str(dest))
    said = {"missing": "does not exist", "empty": "is empty",
            "other files": "holds no *.JPEG images"}[state]
    assert cli.main(["data"]) == 1
    out, err = capsys.readouterr()
    assert err == ("paperlib data: error: "
                   f"{OFFLINE}\nImages expected in: {dest} (from PAPERLIB_DATA={dest}, "
                   f"which {said})\n{HOW}\n")
    assert out.splitlines()[0] == (f"PAPERLIB_DATA={dest} {said}; downloading the ImageNet "
                                   "sample into it")


def test_paperlib_data_naming_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     cache: Path, capsys: pytest.CaptureFixture[str]):
    monkeypatch.setattr(pooch, "retrieve", _raise(AssertionError("must not download")))
    dest = tmp_path / "images.tar"
    dest.write_text("")
    monkeypatch.setenv("PAPERLIB_DATA", str(dest))
    assert cli.main(["data"]) == 1
    assert capsys.readouterr().err == (
        "paperlib data: error: "
        "cannot put the ImageNet sample images there: that path is a file.\n"
        f"Images expected in: {dest} (from PAPERLIB_DATA={dest}, which is a file, not a "
        f"folder)\n{HOW}\n")


def test_refused_and_timed_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache: Path,
                               capsys: pytest.CaptureFixture[str]):
    dest = tmp_path / "images"
    response = requests.Response()
    response.status_code = 404
    refused = requests.exceptions.HTTPError("404 Client Error: Not Found", response=response)
    monkeypatch.setattr(pooch, "retrieve", _raise(refused))
    assert cli.main(["data", "--data-dir", str(dest)]) == 1
    assert capsys.readouterr().err == (
        "paperlib data: error: "
        "could not download the ImageNet sample images: the server refused the download: "
        f"github.com answered HTTP 404 for {download.URL} (HTTPError: 404 Client Error: Not "
        f"Found).\nImages expected in: {dest} (given on the command line; it does not exist)\n"
        f"{HOW}\n")
    monkeypatch.setattr(pooch, "retrieve",
                        _raise(requests.exceptions.ConnectTimeout("took " + "x" * 300)))
    assert cli.main(["data", "--data-dir", str(dest)]) == 1
    first = capsys.readouterr().err.splitlines()[0]
    assert first == ("paperlib data: error: "
                     "could not download the ImageNet sample images: the connection to "
                     "github.com timed out (ConnectTimeout: took " + "x" * 152 + "...).")


def _zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(f"imagenet-sample-images-{download.COMMIT}/{name}", data)
    return path


def test_wrong_hash_leaves_the_folder_untouched_and_deletes_the_archive(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache: Path,
        capsys: pytest.CaptureFixture[str]):
    known = sorted(download.known_hashes())[:2]
    archive = _zip(cache / download.ARCHIVE_NAME, {known[0]: b"not the image",
                                                   known[1]: b"nor this", "README.md": b"#"})
    monkeypatch.setattr(pooch, "retrieve", lambda *a, **k: str(archive))
    dest = tmp_path / "images"
    assert cli.main(["data", "--data-dir", str(dest)]) == 1
    first = sorted(known)[0]
    assert capsys.readouterr().err == (
        "paperlib data: error: "
        "the downloaded ImageNet sample is corrupt: 2 image(s) do not match their known "
        f"SHA-256 (first: {first}); the archive {archive} was deleted and nothing was written to "
        f"{dest}: run `make data` again.\nImages expected in: {dest} (given on the command line; "
        f"it does not exist)\n{HOW}\n")
    assert not archive.exists() and not dest.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["cache"]  # no staging folder left


def test_a_broken_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache: Path,
                          capsys: pytest.CaptureFixture[str]):
    archive = cache / download.ARCHIVE_NAME
    archive.write_bytes(b"<html>captive portal</html>")
    monkeypatch.setattr(pooch, "retrieve", lambda *a, **k: str(archive))
    dest = tmp_path / "images"
    dest.mkdir()
    assert cli.main(["data", "--data-dir", str(dest)]) == 1
    assert capsys.readouterr().err.splitlines()[:2] == [
        "paperlib data: error: "
        "the downloaded ImageNet sample is corrupt: File is not a zip file; the archive "
        f"{archive} was deleted and nothing was written to {dest}: run `make data` again.",
        f"Images expected in: {dest} (given on the command line; it is empty)"]
    assert not archive.exists() and list(dest.iterdir()) == []


def test_a_good_download_is_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      cache: Path, capsys: pytest.CaptureFixture[str]):
    archive = _zip(cache / download.ARCHIVE_NAME, {"n99999999_thing.JPEG": b"jpeg bytes",
                                                   "README.md": b"#"})
    monkeypatch.setattr(pooch, "retrieve", lambda *a, **k: str(archive))
    dest = tmp_path / "images"
    assert cli.main(["data", "--data-dir", str(dest)]) == 0
    assert sorted(p.name for p in dest.iterdir()) == ["SHA256SUMS.observed",
                                                      "n99999999_thing.JPEG"]
    digest = hashlib.sha256(b"jpeg bytes").hexdigest()
    assert (dest / "SHA256SUMS.observed").read_text() == f"{digest}  n99999999_thing.JPEG\n"
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"1 images in {dest}: 0 verified against known hashes, 1 recorded in "
        "SHA256SUMS.observed")
    # a folder that holds images: nothing downloaded
    monkeypatch.setattr(pooch, "retrieve", _raise(AssertionError("must not download")))
    assert cli.main(["data", "--data-dir", str(dest)]) == 0
    assert capsys.readouterr().out == f"{dest} already holds images; nothing to download\n"


def test_the_cli_prints_one_message_and_no_traceback(tmp_path: Path):
    """``paperlib data`` as ``make data`` runs it, offline (pooch.retrieve raises
    requests' ConnectionError, as it does with no network)."""
    dest = tmp_path / "missing"
    code = ("import pooch, requests\n"
            "def offline(*a, **k):\n"
            "    raise requests.exceptions.ConnectionError('no route')\n"
            "pooch.retrieve = offline\n"
            "from paperlib.cli import main\n"
            "raise SystemExit(main(['data']))\n")
    env = {"PATH": "/usr/bin:/bin", "PAPERLIB_DATA": str(dest), "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=REPO_ROOT, timeout=900)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr == ("paperlib data: error: "
                   f"{OFFLINE}\nImages expected in: {dest} (from "
                           f"PAPERLIB_DATA={dest}, which does not exist)\n{HOW}\n")


def test_public_names():
    assert "DataDownloadError" in download.__all__
    assert issubclass(download.DataDownloadError, RuntimeError)
    assert paperlib.explain is explain
