"""``paperlib explain``: the files it writes, what they hold, --force, errors, --help."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from paperlib import explain, imagenet_classes
from paperlib.cam import default_methods
from paperlib.cli import main
from paperlib.data import read_rgb
from paperlib.explain_files import output_names

TENCH = "n01440764_tench.JPEG"
HEN = "n01514859_hen.JPEG"


@pytest.fixture
def inputs(data_dir: Path, tmp_path: Path) -> Path:
    """in/<tench>, in/sub/<hen>, in/broken.jpg (not an image), in/.hidden.jpg (ignored)."""
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    shutil.copy(data_dir / TENCH, root / TENCH)
    shutil.copy(data_dir / HEN, root / "sub" / HEN)
    (root / "broken.jpg").write_bytes(b"not a jpeg")
    (root / ".hidden.jpg").write_bytes(b"ignored")
    return root


def listing(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


ARGS = ["--methods", "gradcam", "attention-fixed", "--device", "cpu", "--batch-size", "2"]


def test_explain_two_images_writes_the_expected_files(inputs, tmp_path, capsys, lite0):
    out = tmp_path / "out"
    rc = main(["explain", str(inputs), "--out", str(out), "--metrics", "--curve-steps", "2",
               *ARGS])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "warning: skipped broken.jpg: not a readable image" in captured.err
    assert "explaining" in captured.err                    # the progress bar, for a folder
    assert "2 image(s) explained" in captured.out and "1 file(s) skipped" in captured.out
    tench, hen = "n01440764_tench", "sub/n01514859_hen"
    per_image = ["attention-fixed.npy", "attention-fixed.png", "gradcam.npy", "gradcam.png",
                 "grid.png"]
    assert listing(out) == sorted(["explanations.csv", "explanations.json",
                                   *[f"{tench}/{f}" for f in per_image],
                                   *[f"{hen}/{f}" for f in per_image]])

    summary = json.loads((out / "explanations.json").read_text())
    assert summary["model"] == "efficientnet_lite0" and summary["target_layer"] == "net.bn2"
    assert summary["methods"] == ["gradcam", "attention-fixed"]
    assert {k: summary["metrics"][k] for k in ("fill", "fractions", "curve_steps")} == \
        {"fill": "black", "fractions": [5, 10, 20, 25, 50], "curve_steps": 2}
    assert [s[0] for s in summary["skipped"]] == ["broken.jpg"]
    records = summary["images"]
    assert [r["file"] for r in records] == [TENCH, f"sub/{HEN}"]
    assert [r["output"] for r in records] == [tench, hen]

    # the numbers are the library's: explain on the same preprocessed images
    x = torch.stack([lite0.preprocess(read_rgb(inputs / f)) for f in (TENCH, f"sub/{HEN}")])
    ex = explain(lite0, x, ["gradcam", "attention-fixed"])
    probs = ex.logits.softmax(dim=1)
    names = imagenet_classes()[1]
    for i, r in enumerate(records):
        t = int(ex.targets[i])
        assert r["target"] == r["predicted"] == t and r["target_name"] == names[t]
        assert r["probability"] == pytest.approx(float(probs[i, t]), abs=1e-6)
        assert r["maps"] == {m: f"{r['output']}/{m}.npy" for m in summary["methods"]}
        for m in summary["methods"]:
            saved = np.load(out / r["maps"][m])
            assert saved.dtype == np.float32 and saved.shape == (224, 224)
            np.testing.assert_allclose(saved, ex[m][i].numpy(), atol=1e-6, rtol=0)
        assert set(r["metrics"]) == {"gradcam", "attention-fixed"}
        assert 0 <= r["metrics"]["gradcam"]["drop_soft"] <= 100
    assert records[0]["target_name"] == "tench"

    with open(out / "explanations.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["file"], r["method"]) for r in rows] == [
        (TENCH, "gradcam"), (TENCH, "attention-fixed"),
        (f"sub/{HEN}", "gradcam"), (f"sub/{HEN}", "attention-fixed")]
    assert list(rows[0])[:7] == ["file", "output", "method", "target", "target_name",
                                 "probability", "flat_map"]
    for col in ("O_soft", "drop_soft", "increase_soft", "O_top5", "drop_top50",
                "increase_top25", "agree_top10", "deletion_auc", "insertion_auc"):
        assert col in rows[0]
    assert float(rows[0]["drop_soft"]) == pytest.approx(records[0]["metrics"]["gradcam"]
                                                        ["drop_soft"], rel=1e-12)


def test_refuses_to_overwrite_without_force(inputs, tmp_path, capsys):
    out = tmp_path / "out"
    one = ["explain", str(inputs / TENCH), "--out", str(out), "--methods", "gradcam",
           "--device", "cpu"]
    assert main(one) == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(one) == 2
    err = capsys.readouterr().err
    assert f"error: {out / 'explanations.json'} exists (and 4 more of the files this run " \
           "writes); pass --force to overwrite" in err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before

    # a user's own file at one of the paths the run would write is protected too
    (out / "explanations.json").unlink()
    (out / "explanations.csv").unlink()
    (out / "n01440764_tench" / "grid.png").write_bytes(b"my file")
    (out / "n01440764_tench" / "gradcam.png").unlink()
    (out / "n01440764_tench" / "gradcam.npy").unlink()
    assert main(one) == 2
    assert f"{out / 'n01440764_tench' / 'grid.png'} exists;" in capsys.readouterr().err
    assert (out / "n01440764_tench" / "grid.png").read_bytes() == b"my file"

    assert main([*one, "--force"]) == 0
    assert (out / "n01440764_tench" / "grid.png").read_bytes()[:4] == b"\x89PNG"
    assert listing(out) == ["explanations.csv", "explanations.json",
                            "n01440764_tench/gradcam.npy", "n01440764_tench/gradcam.png",
                            "n01440764_tench/grid.png"]


def test_timm_model_and_target_by_name(inputs, tmp_path, capsys):
    pytest.importorskip("timm")
    out = tmp_path / "timm"
    rc = main(["explain", str(inputs / TENCH), "--model", "timm:resnet10t", "--weights",
               "random", "--target-class", "goldfish", "--out", str(out), "--methods", "gradcam",
               "scorecam", "--scorecam-channels", "4", "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    summary = json.loads((out / "explanations.json").read_text())
    assert summary["model"] == "timm-resnet10t" and summary["weights"] == "random"
    assert summary["target_layer"] == "net.layer4" and summary["input_size"] == 224
    assert summary["options"]["scorecam_channels"] == 4
    (record,) = summary["images"]
    assert record["target"] == 1 and record["target_name"] == "goldfish"


@pytest.mark.parametrize("argv,message", [
    (["--model", "resnet18"], "unknown --model 'resnet18'; expected one of efficientnet_lite0"),
    (["--methods", "gradcam", "nope"], "unknown method(s) ['nope']"),
    (["--target-class", "goldfsh"], "--target-class 'goldfsh' is not a class name of the model; "
                                    "closest: 'goldfish'"),
    (["--model", "timm:resnet10t"], "timm:resnet10t: pass weights='path/to/file.pth'"),
    (["--model", "timm:resnet10t", "--weights", "random", "--methods", "attention-trained"],
     "attention-trained needs a trained attention checkpoint for timm-resnet10t (net.layer4); "
     "none at"),
    (["--model", "timm:resnet10t", "--weights", "random", "--target-layer", "layer5"],
     "has no module 'layer5'; closest names: 'layer4'"),
])
def test_errors_name_the_problem(inputs, tmp_path, capsys, argv, message):
    rc = main(["explain", str(inputs / TENCH), "--out", str(tmp_path / "o"), "--device", "cpu",
               *argv])
    assert rc == 2
    err = capsys.readouterr().err
    assert "paperlib explain: error: " in err and message in err
    assert not (tmp_path / "o").exists()


def test_missing_input_and_nothing_readable(tmp_path, capsys):
    assert main(["explain", str(tmp_path / "nope.jpg"), "--out", str(tmp_path / "o")]) == 2
    assert f"no such file or folder: {tmp_path / 'nope.jpg'}" in capsys.readouterr().err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.jpg").write_bytes(b"no")
    rc = main(["explain", str(bad), "--out", str(tmp_path / "o"), "--methods", "gradcam",
               "--device", "cpu"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "warning: skipped x.jpg" in err and "no file could be read as an image" in err


def test_output_names_are_unique(tmp_path):
    files = [tmp_path / "a" / "cat.jpg", tmp_path / "a" / "cat.png", tmp_path / "a" / "cat.PNG",
             tmp_path / "b" / "cat.jpg"]
    assert output_names(files, tmp_path) == ["a/cat", "a/cat-png", "a/cat-PNG", "b/cat"]
    assert output_names([tmp_path / "x" / "cat-png.jpg", tmp_path / "x" / "cat.jpg",
                         tmp_path / "x" / "cat.png"], tmp_path) == ["x/cat-png", "x/cat", "x/cat-2"]


def test_help_documents_every_option_and_method():
    out = subprocess.run([sys.executable, "-m", "paperlib", "explain", "--help"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    for option in ("--model", "--weights", "--target-layer", "--methods", "--out", "--force",
                   "--device", "--batch-size", "--metrics", "--target-class", "--checkpoint",
                   "timm:<arch>", "explanations.json", "grid.png"):
        assert option in out.stdout, option
    for method in default_methods():
        assert method in out.stdout, method
    top = subprocess.run([sys.executable, "-m", "paperlib"], capture_output=True, text=True,
                         timeout=300)
    assert top.returncode == 2 and "explain" in top.stderr
