"""The zoo: a black box is one record (blackbox.BlackBoxSpec) registered in one place.

A toy black box registered here (and only here) runs through explain, the sanity check and a
claim-matrix cell; the kit's records hold the facts the four dicts used to; wrap_model and timm:
build the same record type; methods declare the files their maps depend on.
"""

from __future__ import annotations

import json
from collections import OrderedDict

import pandas as pd
import pytest
import torch
from torch import nn
from torchvision import transforms as T

import paperlib
from paperlib import cam, explain_files, matrix, sanity
from paperlib.attention import CHECKPOINT_DIR
from paperlib.blackbox import BlackBox, BlackBoxSpec
from paperlib.fingerprint import code_fingerprint
from paperlib.models import ZOO, black_box_spec, register_black_box, unregister_black_box
from paperlib.wrap import cascade_of

TOY_CASCADE = (("fc",), ("features",), ("conv",))


def _build_toy(weights, download):
    """A tiny CNN with seeded weights: conv -> ReLU -> conv (features) -> ReLU -> pool -> fc."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = nn.Sequential(OrderedDict(
            conv=nn.Conv2d(3, 4, 3, padding=1), act=nn.ReLU(),
            features=nn.Conv2d(4, 6, 3, padding=1), act2=nn.ReLU(),
            pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(), fc=nn.Linear(6, 10)))
    return net, "seeded (toy)"


TOY = BlackBoxSpec(name="toy", build=_build_toy, target_layer="features", input_size=32,
                   resize_size=36, interpolation="bilinear", mean=(0.5, 0.5, 0.5),
                   std=(0.25, 0.25, 0.25), weights_source="seeded in the test",
                   earlier_layer="act", cascade=TOY_CASCADE, num_classes=10,
                   class_names=lambda: tuple(f"class{i}" for i in range(10)))


@pytest.fixture
def toy():
    """The toy's one registration; unregistered afterwards."""
    register_black_box(TOY)
    try:
        yield TOY
    finally:
        unregister_black_box("toy")
    assert "toy" not in paperlib.MODEL_NAMES


@pytest.fixture
def toy_images(sample_dataset):
    bb_pre = TOY.preprocess()
    return torch.stack([bb_pre(sample_dataset[i][0]) for i in range(4)])


def test_a_toy_black_box_runs_through_explain_the_sanity_check_and_a_matrix_cell(
        toy, toy_images, sample_dataset, tmp_path):
    assert "toy" in paperlib.MODEL_NAMES and paperlib.MODEL_NAMES[-1] == "toy"
    bb = paperlib.load_model("toy", device="cpu")
    assert type(bb) is BlackBox and bb.spec is toy and bb.weights == "seeded (toy)"
    assert (bb.target_layer_name, bb.input_size, bb.mean) == ("net.features", 32, toy.mean)
    assert bb.class_names == tuple(f"class{i}" for i in range(10)) and bb.num_classes == 10
    assert not any(p.requires_grad for p in bb.model.parameters())   # frozen, like the kit's
    x = toy_images
    assert x.shape == (4, 3, 32, 32)

    # explain: Grad-CAM's low-resolution map by hand, ReLU(sum_k mean(g_k) A_k)
    ex = paperlib.explain(bb, x, ["gradcam", "gradcampp"])
    net = bb.net
    with torch.enable_grad():
        z = (x - 0.5) / 0.25
        A = net.features(net.act(net.conv(z))).detach().requires_grad_(True)
        logits = net.fc(net.flatten(net.pool(net.act2(A))))
        target = logits.argmax(dim=1)
        (g,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), A)
    by_hand = torch.relu((g.mean(dim=(2, 3))[:, :, None, None] * A).sum(1)).detach()
    assert torch.equal(ex.targets, target)
    torch.testing.assert_close(ex.low_res["gradcam"], by_hand, atol=1e-5, rtol=1e-4)
    assert ex["gradcam"].shape == (4, 32, 32)
    assert float(ex["gradcam"].amin()) >= 0.0 and float(ex["gradcam"].amax()) == 1.0

    # the sanity check takes the record's cascade; step 1 (fc randomised) by hand
    rows = sanity.cascading_randomization(bb, x, ["gradcam"])
    assert list(rows.drop_duplicates("step")["randomized"]) == ["fc", "features", "conv"]
    assert len(rows) == 3 * 4
    again = paperlib.explain(sanity.randomized(bb, ["fc"]), x, ["gradcam"], targets=target)
    rho, _ = sanity.spearman_maps(ex["gradcam"], again["gradcam"])
    assert rows[rows["step"] == 1]["spearman"].tolist() == pytest.approx(rho.tolist())

    # a claim-matrix cell, and the earlier layer from the record
    assert matrix.Cell("toy", "earlier").target_layer == "act"
    assert matrix.layer_for("toy", "last") is None
    params = {"methods": ["gradcam", "attention-fixed"], "n_images": 3, "curve_steps": 2,
              "batch_size": 3}
    record = matrix.run_cell(matrix.cells(["toy"], ["last"])[0], sample_dataset, params,
                             tmp_path, device="cpu", progress=False)
    assert (record["cell"], record["target_layer"]) == ("toy @ last", "net.features")
    assert (record["images"], record["rows"]) == (3, 6)
    t3 = pd.read_csv(tmp_path / "toy_last" / "table3.csv")
    assert t3["method"].tolist() == ["gradcam", "attention-fixed"]
    assert t3["n_images"].tolist() == [3, 3]
    split = json.loads((tmp_path / "toy_last" / "eval_split.json").read_text())
    assert len(split["files"]) == 3


def test_the_kits_records_hold_the_facts():
    assert list(paperlib.MODEL_NAMES) == ["efficientnet_lite0", "efficientnet_lite1",
                                          "efficientnet_lite2", "resnet50", "vgg19", "googlenet"]
    lite_cascade = (("classifier",), ("conv_head", "bn2"), ("blocks.6",), ("blocks.5",),
                    ("blocks.4",))
    for n, size, resize in ((0, 224, 256), (1, 240, 274), (2, 260, 297)):
        spec = ZOO[f"efficientnet_lite{n}"]
        assert (spec.input_size, spec.resize_size, spec.interpolation) == (size, resize,
                                                                           "bicubic")
        assert (spec.target_layer, spec.earlier_layer) == ("bn2", "blocks.6")
        assert spec.mean == spec.std == (0.5, 0.5, 0.5) and spec.cascade == lite_cascade
    cascades = {
        "resnet50": (("fc",), ("layer4.2",), ("layer4.1",), ("layer4.0",), ("layer3",)),
        "vgg19": (("classifier",), ("features.34",), ("features.32",), ("features.30",),
                  ("features.28",)),
        "googlenet": (("fc",), ("inception5b",), ("inception5a",), ("inception4e",)),
    }
    layers = {"resnet50": ("layer4", "layer3"), "vgg19": ("features.35", "features.26"),
              "googlenet": ("inception5b", "inception4e")}
    from torchvision import models as tvm

    enums = {"resnet50": tvm.ResNet50_Weights, "vgg19": tvm.VGG19_Weights,
             "googlenet": tvm.GoogLeNet_Weights}
    for name, cascade in cascades.items():
        spec = ZOO[name]
        assert spec.cascade == cascade and (spec.target_layer, spec.earlier_layer) == layers[name]
        tf = enums[name].IMAGENET1K_V1.transforms()   # torchvision's own evaluation transform
        assert (spec.input_size, spec.resize_size) == (tf.crop_size[0], tf.resize_size[0]) == \
            (224, 256)
        assert T.InterpolationMode(spec.interpolation) == tf.interpolation
        assert list(spec.mean) == tf.mean and list(spec.std) == tf.std
    with pytest.raises(ValueError, match="unknown black box 'resnet18'; expected one of "
                                         "efficientnet_lite0, "):
        black_box_spec("resnet18")
    with pytest.raises(ValueError, match="black box 'resnet50' is already registered"):
        register_black_box(ZOO["resnet50"])


def test_wrap_model_and_timm_build_the_same_record_type():
    torch.manual_seed(0)
    net = nn.Sequential(OrderedDict(conv=nn.Conv2d(3, 4, 3, stride=2, padding=1), act=nn.ReLU(),
                                    pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(),
                                    fc=nn.Linear(4, 3)))
    bb = paperlib.wrap_model(net, input_size=16, device="cpu")
    assert type(bb) is BlackBox and isinstance(bb.spec, BlackBoxSpec)
    assert bb.spec.cascade == cascade_of(net) == (("fc",), ("conv",))   # parameterised children
    assert (bb.spec.target_layer, bb.spec.num_classes, bb.spec.resize_size) == ("act", 3, 18)
    assert bb.spec.build(None, False) == (net, bb.weights)
    given = paperlib.wrap_model(net, input_size=16, device="cpu", cascade=[["fc"]])
    assert given.cascade() == (("fc",),)
    pytest.importorskip("timm")
    with pytest.warns(UserWarning, match="UNTRAINED"):
        timm_bb = paperlib.load_model("timm:resnet10t", device="cpu", weights="random")
    assert type(timm_bb) is BlackBox and timm_bb.spec.name == "timm-resnet10t"
    assert timm_bb.cascade()[:2] == (("fc",), ("layer4",)) and timm_bb.spec.num_classes == 1000


def test_a_missing_cascade_is_a_one_line_error_naming_the_model(toy_images):
    nocascade = BlackBoxSpec(name="nocascade", build=_build_toy, target_layer="features",
                             input_size=32, resize_size=36, interpolation="bilinear",
                             mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    register_black_box(nocascade)
    try:
        bb = paperlib.load_model("nocascade", device="cpu")
        with pytest.raises(ValueError) as err:
            sanity.cascading_randomization(bb, toy_images[:1], ["gradcam"])
        assert str(err.value).startswith("black box 'nocascade' has no randomisation cascade")
        assert "\n" not in str(err.value)
        with pytest.raises(ValueError, match="no earlier layer is defined for 'nocascade'"):
            matrix.layer_for("nocascade", "earlier")
    finally:
        unregister_black_box("nocascade")
    with pytest.raises(ValueError, match="interpolation must be one of"):
        BlackBoxSpec(name="bad", build=_build_toy, target_layer="features", input_size=32,
                     resize_size=36, interpolation="lanczos", mean=(0, 0, 0), std=(1, 1, 1))


def test_methods_declare_their_files(toy):
    bb = paperlib.load_model("toy", device="cpu")
    expected = CHECKPOINT_DIR / "attention_toy_net.features.pt"
    assert cam.method_files(["gradcam", "attention-fixed"], bb) == []
    assert cam.method_files(["gradcam", "attention-trained", "attention-per-image"], bb) == \
        [expected]
    other = cam.ExplainOptions.build(checkpoint="/tmp/elsewhere.pt")
    assert cam.method_files(["attention-trained"], bb, other)[0].as_posix() == "/tmp/elsewhere.pt"
    assert cam.missing_files(["gradcam", "attention-trained"], bb) == \
        {"attention-trained": [expected]}
    # the results key: the files of the run's methods only (the old key always held the
    # checkpoint; for a run with attention-trained it is unchanged)
    assert code_fingerprint(*cam.method_files(["attention-trained"], bb)) == \
        code_fingerprint(expected)
    # the command line leaves a method out (or runs its fallback) by its record, not its name
    methods, notes = explain_files.choose_methods(["all"], bb, cam.ExplainOptions())
    assert "attention-trained" not in methods and "attention-per-image" in methods
    assert notes[0].startswith("attention-trained left out: it needs a trained attention "
                               f"checkpoint for toy (net.features), none at {expected}; pass "
                               "checkpoint=FILE (--checkpoint FILE)")
    assert notes[1] == (f"attention-per-image: a trained attention checkpoint is missing "
                        f"({expected}); it starts from a seeded random initialisation")
    with pytest.raises(explain_files.UsageError,
                       match="attention-trained needs a trained attention checkpoint for toy "
                             "\\(net.features\\); none at"):
        explain_files.choose_methods(["attention-trained"], bb, cam.ExplainOptions())
    # the default: the quick methods (one shared pass, no controls), less the missing ones
    quick, notes = explain_files.choose_methods(None, bb, cam.ExplainOptions())
    assert quick == tuple(m for m in cam.quick_methods() if m != "attention-trained")
    assert "gradcam" in quick and not {"scorecam", "opticam", "fakecam"} & set(quick)
    assert len(notes) == 1 and notes[0].startswith("attention-trained left out")
    with pytest.raises(TypeError, match="files of 'x' must be a MethodFiles"):
        cam.register_method("x", label="x", files="ckpt.pt")  # type: ignore[arg-type]
