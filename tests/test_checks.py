"""Every numeric option is checked where it is declared (paperlib.checks): wrong type, not finite
or out of range is one ValueError naming the option and what it accepts -- the cases an
adversarial run found passing silently or failing with a message that named nothing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from paperlib import cli, wrap_model
from paperlib.attention import PerImageOptions
from paperlib.cam import ExplainOptions, ScoreCAMOptions, SmoothGradOptions
from paperlib.checks import check_number, describe
from paperlib.evaluation import EvalSettings
from paperlib.metrics import MetricConfig
from paperlib.opticam import OptiCAMOptions


def test_describe_says_the_range_in_words():
    assert describe(integer=True, low=1, optional=True) == "an integer >= 1 or None"
    assert describe(low=0, low_open=True) == "a finite number > 0"
    assert describe(low=0, high=1) == "a finite number >= 0 and <= 1"
    assert describe() == "a finite number"


def test_check_number_normalises_numpy_values_and_keeps_none():
    assert check_number("k", np.int64(3), integer=True) == 3
    assert type(check_number("k", np.int64(3), integer=True)) is int
    assert type(check_number("x", np.float32(0.5))) is float
    assert type(check_number("x", 2)) is float          # a whole number is a number
    assert check_number("k", None, integer=True, optional=True) is None


@pytest.mark.parametrize("value", ["abc", True, None, math.nan, math.inf, -1, 1.5, [1]])
def test_check_number_refuses_in_one_line_naming_the_option(value):
    with pytest.raises(ValueError) as caught:
        check_number("n_images", value, integer=True, low=1)
    assert str(caught.value) == f"n_images must be an integer >= 1, got {value!r}"


@pytest.mark.parametrize("make, message", [
    (lambda: SmoothGradOptions(smooth_sigma=math.nan), "smooth_sigma must be a finite number >= 0"),
    (lambda: SmoothGradOptions(smooth_sigma=math.inf), "smooth_sigma must be a finite number >= 0"),
    (lambda: SmoothGradOptions(smooth_samples=0), "smooth_samples must be an integer >= 1"),
    (lambda: ScoreCAMOptions(scorecam_channels=0),
     "scorecam_channels must be an integer >= 1 or None"),
    (lambda: ScoreCAMOptions(scorecam_channels=-5), "scorecam_channels must be an integer >= 1"),
    (lambda: PerImageOptions(per_image_steps=-1), "per_image_steps must be an integer >= 0"),
    (lambda: PerImageOptions(per_image_lr=0), "per_image_lr must be a finite number > 0"),
    (lambda: OptiCAMOptions(opticam_lr=math.nan), "opticam_lr must be a finite number > 0"),
    (lambda: ExplainOptions(seed="x"), "seed must be an integer >= 0, got 'x'"),
    (lambda: ExplainOptions(chunk_size=0), "chunk_size must be an integer >= 1"),
    (lambda: MetricConfig(curve_steps=-1), "curve_steps must be an integer >= 0"),
    (lambda: MetricConfig(chunk_size=1.5), "chunk_size must be an integer >= 1"),
    (lambda: MetricConfig(road_noise=math.nan), "road_noise must be a finite number >= 0"),
    (lambda: EvalSettings(batch_size=0), "batch_size must be an integer >= 1, got 0"),
    (lambda: EvalSettings(n_images=True), "n_images must be an integer >= 1 or None, got True"),
])
def test_each_option_is_refused_where_it_is_declared(make, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make()


def test_notebook_parameters_of_the_wrong_type_are_named():
    """A notebook's parameters (papermill's ``-p n_images abc`` passes a string) go through the
    same dataclasses: the message names the parameter."""
    with pytest.raises(ValueError, match="n_images must be an integer >= 1 or None, got 'abc'"):
        EvalSettings.from_parameters({"n_images": "abc"})
    with pytest.raises(ValueError, match="seed must be an integer >= 0, got 'x'"):
        EvalSettings.from_parameters({"seed": "x", "n_images": 2})
    with pytest.raises(ValueError, match="smooth_sigma must be a finite number >= 0, got nan"):
        EvalSettings.from_parameters({"smooth_sigma": math.nan, "n_images": 2})


def test_the_defaults_pass_unchanged():
    s = EvalSettings()
    assert (s.batch_size, s.n_images, s.explain.seed) == (16, None, 0)
    assert MetricConfig().key() == MetricConfig(curve_steps=np.int64(16)).key()


def test_wrap_model_refuses_a_nan_or_zero_std():
    net = nn.Sequential(nn.Conv2d(3, 2, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 2))
    for std, said in (((math.nan, 1, 1), "nan"), ((0, 1, 1), "0"), ((1, -1, 1), "-1")):
        with pytest.raises(ValueError, match=f"std must be a finite number > 0, got {said}"):
            wrap_model(net, "0", input_size=4, std=std, device="cpu")
    with pytest.raises(ValueError, match="mean must be a finite number, got inf"):
        wrap_model(net, "0", input_size=4, mean=(0, math.inf, 0), device="cpu")
    bb = wrap_model(net, "0", input_size=4, std=torch.tensor([0.5, 0.5, 0.5]), device="cpu")
    assert bb.model.normalize.std.flatten().tolist() == [0.5, 0.5, 0.5]


def test_the_command_line_says_it_in_one_line(tmp_path, capsys):
    status = cli.main(["explain", str(tmp_path), "--methods", "smoothgradcampp",
                       "--smooth-sigma", "nan"])
    err = capsys.readouterr().err
    assert status == 2
    assert err.strip().splitlines() == [
        "paperlib explain: error: smooth_sigma must be a finite number >= 0, got nan"]
