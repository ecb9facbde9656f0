"""Your own labelled images: folder and CSV layouts, label indices, bad files skipped and counted,
no kit split, and the evaluation run on them with a wrapped model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

from paperlib import iter_batches, wrap_model
from paperlib.data import BadImageWarning
from paperlib.evaluation import EvalSettings, run_evaluation
from paperlib.metrics import MetricConfig
from paperlib.userdata import LabelledDataset, load_labelled_images


def _image(path: Path, colour: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 30), colour).save(path)


@pytest.fixture
def folders(tmp_path: Path) -> Path:
    """birds/ (1 image), cats/ (2, one deeper), dogs/ (1 image + 1 broken), plus a stray file at
    the top, a hidden file and a hidden folder (ignored)."""
    root = tmp_path / "pets"
    _image(root / "cats" / "c1.png", (200, 0, 0))
    _image(root / "cats" / "more" / "c2.png", (190, 10, 0))
    _image(root / "dogs" / "d1.png", (0, 200, 0))
    (root / "dogs" / "broken.jpg").write_bytes(b"not an image")
    _image(root / "birds" / "b1.png", (0, 0, 200))
    (root / "notes.txt").write_text("a stray file\n")
    (root / "cats" / ".DS_Store").write_bytes(b"\x00")
    _image(root / ".cache" / "x.png", (0, 0, 0))
    return root


def test_folder_layout_labels_from_sorted_names(folders: Path):
    with pytest.warns(BadImageWarning, match="skipped notes.txt: not inside a <label>/ folder"):
        ds = load_labelled_images(folders)
    assert isinstance(ds, LabelledDataset) and ds.layout == "labelled-folders"
    assert ds.classes == ("birds", "cats", "dogs")
    assert ds.class_to_index == {"birds": 0, "cats": 1, "dogs": 2}
    assert ds.files == ["birds/b1.png", "cats/c1.png", "cats/more/c2.png", "dogs/broken.jpg",
                        "dogs/d1.png"]
    assert ds.labels == [0, 1, 1, 2, 2]
    assert ds.report.listed == 6 and ds.report.n_skipped == 1
    # the broken file is skipped when read, warned about and counted, and shifts no label
    with pytest.warns(BadImageWarning, match="skipped dogs/broken.jpg: not a readable image"):
        batches = list(iter_batches(ds, lambda im: torch.zeros(3, 4, 4), batch_size=2))
    assert [b.files for b in batches] == [["birds/b1.png", "cats/c1.png"], ["cats/more/c2.png"],
                                          ["dogs/d1.png"]]
    assert [b.labels.tolist() for b in batches] == [[0, 1], [1], [2]]
    assert ds.report.listed == 6 and ds.report.n_skipped == 2
    assert [f for f, _ in ds.report.skipped] == ["notes.txt", "dogs/broken.jpg"]


def test_classes_given_as_names_or_mapping(folders: Path):
    with pytest.warns(BadImageWarning) as caught:
        ds = load_labelled_images(folders, classes=["dogs", "cats"])
    assert [str(w.message) for w in caught] == [
        "skipped notes.txt: not inside a <label>/ folder",
        "skipped birds/b1.png: label 'birds' is not one of the given classes"]
    assert ds.classes == ("dogs", "cats")
    assert dict(zip(ds.files, ds.labels)) == {"cats/c1.png": 1, "cats/more/c2.png": 1,
                                              "dogs/broken.jpg": 0, "dogs/d1.png": 0}
    assert ds.report.listed == 6 and ds.report.n_skipped == 2  # notes.txt, birds/b1.png

    with pytest.warns(BadImageWarning):
        ds = load_labelled_images(folders, classes={"cats": 5, "dogs": 7, "birds": 5})
    assert ds.classes == ("0", "1", "2", "3", "4", "birds", "6", "dogs")
    assert ds.labels == [5, 5, 5, 7, 7]
    with pytest.raises(ValueError, match=r"classes holds the name\(s\) \['cats'\] more than once"):
        load_labelled_images(folders, classes=["cats", "dogs", "cats"])
    with pytest.raises(ValueError, match=r"class indices must be >= 0, got \{'cats': -1\}"):
        load_labelled_images(folders, classes={"cats": -1})


def test_no_kit_split_but_all_and_subset(folders: Path):
    with pytest.warns(BadImageWarning):
        ds = load_labelled_images(folders)
    assert ds.split(None) is ds and ds.split("all") is ds
    with pytest.raises(ValueError, match="split 'eval' is the ImageNet sample's class-index "
                                         "split; your labelled images .* have none: use split "
                                         "None or 'all'"):
        ds.split("eval")
    sub = ds.subset(2)
    assert isinstance(sub, LabelledDataset) and sub.classes == ds.classes
    assert sub.files == ["birds/b1.png", "dogs/d1.png"] and sub.report is ds.report


def test_csv_layout(tmp_path: Path):
    root = tmp_path / "imgs"
    _image(root / "a.png", (255, 0, 0))
    _image(root / "sub" / "b.png", (0, 255, 0))
    _image(tmp_path / "outside.png", (0, 0, 255))
    (root / "bad.png").write_bytes(b"\x89PNG truncated")
    table = tmp_path / "labels.csv"
    table.write_text("\ufeffFile, Label ,note\n"           # BOM, case and spaces in the header
                     "a.png,zebra,first\n"
                     f"{root / 'sub' / 'b.png'},ant,absolute inside the root\n"
                     "missing.png,ant,\n"
                     "sub/b.png,,empty label\n"
                     "../outside.png,ant,outside\n"
                     "bad.png,zebra,decodes badly\n", encoding="utf-8")
    with pytest.warns(BadImageWarning) as caught:
        ds = load_labelled_images(root, csv_file=table)
    assert [str(w.message) for w in caught] == [
        f"skipped missing.png: labels.csv line 4: no such file {root / 'missing.png'}",
        "skipped sub/b.png: labels.csv line 5: empty label",
        f"skipped ../outside.png: labels.csv line 6: {tmp_path / 'outside.png'} is outside the "
        f"image root {root}",
    ]
    assert ds.layout == "csv" and ds.classes == ("ant", "zebra")
    assert ds.files == ["a.png", "sub/b.png", "bad.png"] and ds.labels == [1, 0, 1]
    assert ds.report.listed == 6 and ds.report.n_skipped == 3
    with pytest.warns(BadImageWarning, match="skipped bad.png: not a readable image"):
        got = [f for b in iter_batches(ds, lambda im: torch.zeros(3, 2, 2), 4) for f in b.files]
    assert got == ["a.png", "sub/b.png"] and ds.report.n_skipped == 4

    # a .csv path alone: its folder is the root
    (tmp_path / "flat.csv").write_text("file,label\nimgs/a.png,zebra\n")
    flat = load_labelled_images(tmp_path / "flat.csv")
    assert flat.root == tmp_path and flat.files == ["imgs/a.png"] and flat.classes == ("zebra",)


def test_errors(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="image folder .*nope does not exist"):
        load_labelled_images(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="CSV file .*none.csv does not exist"):
        load_labelled_images(tmp_path, csv_file=tmp_path / "none.csv")
    (tmp_path / "cols.csv").write_text("path,class\nx.png,a\n")
    with pytest.raises(ValueError, match=r"expected a header with the columns 'file' and 'label', "
                                         r"found \['path', 'class'\]"):
        load_labelled_images(tmp_path / "cols.csv")
    empty = tmp_path / "empty"
    (empty / "cats").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"no usable images in .*empty: 0 files listed, 0 "
                                         r"skipped; expected one sub-folder per label"):
        load_labelled_images(empty)


class ColourNet(nn.Module):
    """Logits = mean colour per channel (x 10): 'red' images are class 0, and so on."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Conv2d(3, 3, 1)
        with torch.no_grad():
            self.features.weight.copy_(torch.eye(3).view(3, 3, 1, 1) * 10)
            self.features.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean(dim=(2, 3))


def test_evaluation_on_labelled_images_with_a_wrapped_model(tmp_path: Path):
    root = tmp_path / "colours"
    for i, (name, colour) in enumerate([("red", (255, 0, 0)), ("green", (0, 255, 0)),
                                        ("blue", (0, 0, 255))]):
        _image(root / name / f"{i}.png", colour)
    (root / "red" / "broken.png").write_bytes(b"no")
    bb = wrap_model(ColourNet(), "features", input_size=8, mean=(0, 0, 0), std=(1, 1, 1),
                    class_names=["red", "green", "blue"], device="cpu")
    ds = load_labelled_images(root, classes=bb.class_names)
    assert ds.classes == ("red", "green", "blue")
    settings = EvalSettings(methods=("gradcam", "attention-fixed"), split="all", target="label",
                            metrics=MetricConfig(curve_steps=2, fractions=(50,)), batch_size=2)
    with pytest.warns(BadImageWarning, match="skipped red/broken.png"):
        ev = run_evaluation(bb, ds, settings, tmp_path / "results", progress=False)
    frame = ev.frame.sort_values(["file", "method"])
    assert frame["file"].tolist() == ["blue/2.png"] * 2 + ["green/1.png"] * 2 + ["red/0.png"] * 2
    assert frame["label"].tolist() == [2, 2, 1, 1, 0, 0]
    assert frame["target"].tolist() == frame["label"].tolist()   # target="label"
    assert ev.skipped == [("red/broken.png", ev.skipped[0][1])]
    with pytest.raises(ValueError, match="split 'eval' is the ImageNet sample's"):
        run_evaluation(bb, ds, EvalSettings(methods=("gradcam",)), tmp_path / "r2",
                       progress=False)


def test_broken_link_is_listed_then_skipped_when_read(tmp_path: Path):
    root = tmp_path / "links"
    _image(root / "cats" / "c.png", (9, 9, 9))
    (root / "cats" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    ds = load_labelled_images(root)
    assert ds.files == ["cats/c.png", "cats/gone.png"] and ds.report.listed == 2
    with pytest.warns(BadImageWarning, match="skipped cats/gone.png: not a readable image"):
        got = [f for b in iter_batches(ds, lambda im: torch.zeros(3, 2, 2), 4) for f in b.files]
    assert got == ["cats/c.png"] and ds.report.n_skipped == 1


def test_csv_duplicate_rows_are_one_image_with_a_warning(tmp_path: Path):
    root = tmp_path / "imgs"
    _image(root / "cat" / "tench.png", (255, 0, 0))
    _image(root / "b.png", (0, 255, 0))
    table = tmp_path / "labels.csv"
    table.write_text("file,label\ncat/tench.png,cat\nb.png,dog\n"
                     f"{root / 'cat' / 'tench.png'},cat\n")     # the same file, spelt otherwise
    with pytest.warns(BadImageWarning, match=r"labels.csv: cat/tench.png is listed 2 times "
                                             r"\(lines 2, 4\) with the same label; read once"):
        ds = load_labelled_images(root, csv_file=table)
    assert ds.files == ["cat/tench.png", "b.png"] and ds.report.listed == 2


def test_csv_conflicting_labels_are_an_error_naming_the_rows(tmp_path: Path):
    root = tmp_path / "imgs"
    _image(root / "cat" / "tench.png", (255, 0, 0))
    table = tmp_path / "labels.csv"
    table.write_text("file,label\ncat/tench.png,cat\ncat/tench.png,cat\ncat/tench.png,dog\n")
    with pytest.raises(ValueError, match=r"labels.csv: 1 file\(s\) listed with different labels: "
                                         r"cat/tench.png at line 2 \('cat'\), line 3 \('cat'\), "
                                         r"line 4 \('dog'\); expected one label per file"):
        load_labelled_images(root, csv_file=table)
