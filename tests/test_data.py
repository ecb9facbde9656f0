"""Images and labels: the two folder layouts, the splits, and bad input (odd modes, corrupt,
truncated, not-an-image, unknown class) that must be skipped without ever shifting a label.

Bad files are generated in tmp_path; the real sample is only read, never copied (symlinks only).
"""

from __future__ import annotations

import csv
import functools
import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import paperlib
from paperlib import iter_batches, load_images
from paperlib.data import BadImageWarning, read_rgb


def _tsv_index(path: Path) -> dict[str, int]:
    """wnid -> class index, read straight from a ``index, wnid, name`` table."""
    with open(path, newline="") as f:
        return {row["wnid"]: int(row["index"]) for row in csv.DictReader(f, delimiter="\t")}


def _shared_tsv() -> Path | None:
    data = os.environ.get("PAPERLIB_DATA")
    path = Path(data).expanduser().parent / "imagenet1k_classes.tsv" if data else None
    return path if path is not None and path.is_file() else None


@functools.lru_cache(maxsize=1)
def _expected_index() -> dict[str, int]:
    """The shared class table when there is one; else the sorted wnids (the definition)."""
    shared = _shared_tsv()
    if shared is not None:
        return _tsv_index(shared)
    return {w: i for i, w in enumerate(sorted(paperlib.imagenet_classes()[0]))}


def _label_from_name(name: str) -> int:
    """The expected label of ``<wnid>_<anything>`` (or ``<wnid>/<anything>``), independently."""
    return _expected_index()[Path(name).parts[0].split("_", 1)[0]]


# ---------------------------------------------------------------------------------------------
# The real sample (sample layout)

def test_class_table_is_the_sorted_wnids(classes_tsv):
    index = _tsv_index(classes_tsv)
    assert len(index) == 1000
    assert sorted(index, key=index.get) == sorted(index)  # index order == sorted wnids
    wnids, names = paperlib.imagenet_classes()
    assert list(wnids) == sorted(index) and len(names) == 1000
    assert (wnids[0], names[0]) == ("n01440764", "tench")
    with open(classes_tsv, newline="") as f:
        table = {int(r["index"]): r["name"] for r in csv.DictReader(f, delimiter="\t")}
    assert [table[i] for i in range(1000)] == list(names)


def test_sample_labels(sample_dataset, classes_tsv, data_dir):
    ds = sample_dataset
    index = _tsv_index(classes_tsv)
    assert ds.layout == "sample"
    assert len(ds) == 500
    assert ds.report.listed == 500 and ds.report.n_skipped == 0
    assert ds.root == data_dir
    # a few files checked by hand against the table
    by_file = dict(zip(ds.files, ds.labels))
    assert by_file["n01440764_tench.JPEG"] == 0 == index["n01440764"]
    assert by_file["n01484850_great_white_shark.JPEG"] == 2 == index["n01484850"]
    assert by_file["n01494475_hammerhead.JPEG"] == 4 == index["n01494475"]
    # and every file: label = index of its wnid among the 1000 sorted wnids
    for name, label in by_file.items():
        assert label == index[name.split("_", 1)[0]], name
    assert sorted(ds.labels) == list(range(0, 1000, 2))  # one image per even class


def test_sample_items_are_rgb(sample_dataset):
    ds = sample_dataset
    i = ds.files.index("n02815834_beaker.JPEG")  # stored as grayscale (mode L)
    with Image.open(ds.root / ds.files[i]) as raw:
        assert raw.mode == "L"
    img, label, name = ds[i]
    assert img.mode == "RGB" and name == "n02815834_beaker.JPEG"
    assert label == _label_from_name(name)
    arr = np.asarray(img)
    assert (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all()


def test_sample_splits(sample_dataset):
    ds = sample_dataset
    train, ev = ds.split("train"), ds.split("eval")
    assert len(train) == 250 and len(ev) == 250
    assert not set(train.files) & set(ev.files)
    assert all(label % 4 == 0 for label in train.labels)
    assert all(label % 4 == 2 for label in ev.labels)
    assert set(train.files) | set(ev.files) == set(ds.files)
    assert ds.split(None) is ds and ds.split("all") is ds
    assert train.report is ds.report  # skips while reading a split count for the whole
    with pytest.raises(ValueError, match="unknown split 'test'"):
        ds.split("test")


def test_sample_subset_is_evenly_spaced(sample_dataset):
    ds = sample_dataset
    sub = ds.subset(5)
    expected = np.linspace(0, 499, 5).round().astype(int)  # 0, 125, 250, 374, 499
    assert sub.files == [ds.files[i] for i in expected]
    assert sub.labels == [ds.labels[i] for i in expected]
    assert ds.subset(None) is ds and ds.subset(10_000) is ds
    assert len(ds.subset(64)) == 64
    with pytest.raises(ValueError, match="n_images must be an integer >= 1 or None, got 0"):
        ds.subset(0)


def test_iter_batches_on_real_images(sample_dataset, lite0):
    ds = sample_dataset.subset(6)
    batches = list(iter_batches(ds, lite0.preprocess, batch_size=4))
    assert [len(b) for b in batches] == [4, 2]
    files = [f for b in batches for f in b.files]
    assert files == ds.files
    for b in batches:
        assert b.images.shape == (len(b), 3, 224, 224)
        assert b.images.min() >= 0 and b.images.max() <= 1
        assert b.labels.tolist() == [_label_from_name(f) for f in b.files]
        assert b.indices == [ds.files.index(f) for f in b.files]
    with pytest.raises(ValueError, match="batch_size"):
        next(iter_batches(ds, lite0.preprocess, batch_size=0))


# ---------------------------------------------------------------------------------------------
# ImageNet-val layout (one folder per wnid), built from symlinks to the sample

def test_imagenet_val_layout(data_dir, tmp_path, lite0):
    root = tmp_path / "val"
    plan = {
        "n01440764": ["n01440764_tench.JPEG", "n01484850_great_white_shark.JPEG"],
        "n01484850": ["n01494475_hammerhead.JPEG"],
        "n01494475": ["n02815834_beaker.JPEG", "n01440764_tench.JPEG", "n01498041_stingray.JPEG"],
    }
    for wnid, sources in plan.items():
        (root / wnid).mkdir(parents=True)
        for k, src in enumerate(sources):
            # the folder, not the file name, gives the class in this layout
            (root / wnid / f"ILSVRC2012_val_{k:08d}.JPEG").symlink_to(data_dir / src)
    (root / "n01440764" / ".DS_Store").write_text("hidden files are ignored")
    (root / "n99999999").mkdir()
    stray = root / "n99999999" / "ILSVRC2012_val_00000009.JPEG"
    stray.symlink_to(data_dir / "n01440764_tench.JPEG")

    with pytest.warns(BadImageWarning, match=r"n99999999.*not an ImageNet-1k wnid"):
        ds = load_images(root)
    assert ds.layout == "imagenet-val"
    assert len(ds) == 6
    assert ds.labels == [0, 0, 2, 4, 4, 4]
    assert ds.files[0] == os.path.join("n01440764", "ILSVRC2012_val_00000000.JPEG")
    assert ds.report.listed == 7 and ds.report.n_skipped == 1
    assert ds.report.skipped[0][0] == os.path.join("n99999999", "ILSVRC2012_val_00000009.JPEG")
    batches = list(iter_batches(ds, lite0.preprocess, batch_size=4))
    assert [b.labels.tolist() for b in batches] == [[0, 0, 2, 4], [4, 4]]
    img, label, name = ds[3]
    assert img.mode == "RGB" and label == 4  # a grayscale file, converted


# ---------------------------------------------------------------------------------------------
# Odd but valid images: converted to 8-bit RGB with the right values

def test_grayscale_L(tmp_path):
    path = tmp_path / "n01440764_gray.png"
    Image.fromarray(np.array([[0, 77, 255]], dtype=np.uint8), mode="L").save(path)
    arr = np.asarray(read_rgb(path))
    assert arr.shape == (1, 3, 3)
    assert arr[0].tolist() == [[0, 0, 0], [77, 77, 77], [255, 255, 255]]


@pytest.mark.parametrize("ext", ["JPEG", "tif"])
def test_cmyk(tmp_path, ext):
    img = Image.new("CMYK", (16, 16), (0, 0, 0, 0))          # no ink: white
    img.paste((0, 255, 255, 0), (0, 0, 8, 16))               # magenta + yellow: red
    path = tmp_path / f"n01440764_cmyk.{ext}"
    img.save(path, **({"quality": 100} if ext == "JPEG" else {}))
    with Image.open(path) as raw:
        assert raw.mode == "CMYK"
    out = read_rgb(path)
    assert out.mode == "RGB"
    arr = np.asarray(out).astype(int)
    np.testing.assert_allclose(arr[8, 2], [255, 0, 0], atol=3)
    np.testing.assert_allclose(arr[8, 13], [255, 255, 255], atol=3)


def test_rgba_transparent_pixels_become_white(tmp_path):
    img = Image.new("RGBA", (3, 1))
    img.putdata([(0, 0, 0, 0), (255, 0, 0, 128), (10, 20, 30, 255)])
    path = tmp_path / "n01440764_rgba.png"
    img.save(path)
    arr = np.asarray(read_rgb(path)).astype(int)
    assert arr[0, 0].tolist() == [255, 255, 255]      # fully transparent black -> white
    # half-transparent red over white: 255 * (1 - 128/255) = 127 in G and B
    np.testing.assert_allclose(arr[0, 1], [255, 127, 127], atol=1)
    assert arr[0, 2].tolist() == [10, 20, 30]         # opaque: unchanged


@pytest.mark.parametrize("transparent", [False, True])
def test_palette(tmp_path, transparent):
    img = Image.new("P", (4, 1))
    img.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    img.putdata([0, 1, 2, 1])
    path = tmp_path / "n01440764_palette.png"
    img.save(path, **({"transparency": 1} if transparent else {}))
    arr = np.asarray(read_rgb(path))
    green = [255, 255, 255] if transparent else [0, 255, 0]  # index 1 transparent -> white
    assert arr[0].tolist() == [[255, 0, 0], green, [0, 0, 255], green]


def test_16bit_grayscale_is_rescaled_not_clipped(tmp_path):
    raw16 = np.array([[0, 257, 25600, 32768, 65535]], dtype=np.uint16)
    path = tmp_path / "n01440764_16bit.png"
    Image.fromarray(raw16).save(path)
    with Image.open(path) as im:
        assert im.mode.startswith("I")  # I;16 (or I on older Pillow)
    arr = np.asarray(read_rgb(path))
    # v * 255 / 65535 rounded: 0, 1, 99.6 -> 100, 127.5 -> 128, 255 (clipping would give 255s)
    assert arr[0, :, 0].tolist() == [0, 1, 100, 128, 255]
    assert (arr[..., 0] == arr[..., 2]).all()


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (200, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees when displaying
    path = tmp_path / "n01440764_rotated.JPEG"
    img.save(path, exif=exif)
    assert read_rgb(path).size == (20, 40)


def test_tiny_image_through_lite0_preprocess(tmp_path, lite0):
    path = tmp_path / "n01440764_tiny.png"
    Image.new("RGB", (20, 20), (10, 200, 30)).save(path)
    x = lite0.preprocess(read_rgb(path))
    assert x.shape == (3, 224, 224)
    expected = torch.tensor([10, 200, 30]).view(3, 1, 1) / 255
    torch.testing.assert_close(x, expected.expand(3, 224, 224), atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------------------------
# Bad files: skipped, warned about by name, counted; no label ever shifts

def _jpeg_bytes() -> bytes:
    """A real JPEG file's bytes: the sample's tench when available, else a synthetic photo."""
    data = os.environ.get("PAPERLIB_DATA")
    if data and (Path(data) / "n01440764_tench.JPEG").is_file():
        return (Path(data) / "n01440764_tench.JPEG").read_bytes()
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


GOOD = ["n01440764_a_gray.JPEG", "n01484850_c_cmyk.JPEG", "n01494475_e_rgba.png",
        "n01498041_g_palette.png", "n01514668_h_palette_transparent.png", "n01514859_i_16bit.png",
        "n01518878_j_tiny.JPEG", "n01530575_k_real.JPEG"]
BAD_AT_READ = ["n01443537_b_corrupt.JPEG", "n01491361_d_truncated.JPEG", "n01496331_f_notes.txt"]
UNKNOWN = "n99999999_x.JPEG"


def _make_mixed_folder(root: Path) -> None:
    root.mkdir()
    rng = np.random.default_rng(0)
    Image.new("L", (30, 40), 90).save(root / "n01440764_a_gray.JPEG")
    (root / "n01443537_b_corrupt.JPEG").write_bytes(rng.integers(0, 256, 4000, np.uint8).tobytes())
    Image.new("CMYK", (32, 24), (0, 255, 255, 0)).save(root / "n01484850_c_cmyk.JPEG")
    real = _jpeg_bytes()
    (root / "n01491361_d_truncated.JPEG").write_bytes(real[: len(real) // 2])
    Image.new("RGBA", (25, 25), (0, 0, 0, 0)).save(root / "n01494475_e_rgba.png")
    (root / "n01496331_f_notes.txt").write_text("n01496331: electric ray, not an image\n")
    pal = Image.new("P", (10, 10), 1)
    pal.putpalette([255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 6))
    pal.save(root / "n01498041_g_palette.png")
    pal.save(root / "n01514668_h_palette_transparent.png", transparency=1)
    Image.fromarray(np.full((12, 12), 65535, np.uint16)).save(root / "n01514859_i_16bit.png")
    Image.new("RGB", (20, 20), (10, 200, 30)).save(root / "n01518878_j_tiny.JPEG")
    (root / "n01530575_k_real.JPEG").write_bytes(real)
    Image.new("RGB", (20, 20)).save(root / UNKNOWN, "JPEG")
    (root / ".hidden_n01440764_x.JPEG").write_bytes(b"ignored")


def test_bad_files_are_skipped_and_labels_never_shift(tmp_path, lite0):
    root = tmp_path / "mixed"
    _make_mixed_folder(root)

    with pytest.warns(BadImageWarning) as listing:
        ds = load_images(root)
    assert [str(w.message) for w in listing] == [
        f"skipped {UNKNOWN}: 'n99999999' is not an ImageNet-1k wnid (expected files named "
        "<wnid>_<name>.JPEG)"]
    assert ds.layout == "sample"
    assert ds.report.listed == 12 and ds.report.n_skipped == 1
    assert sorted(ds.files) == sorted(GOOD + BAD_AT_READ)  # bad reads are found on reading
    assert ds.labels == [_label_from_name(f) for f in ds.files]
    for bad in BAD_AT_READ:
        with pytest.raises(OSError):
            ds[ds.files.index(bad)]

    with pytest.warns(BadImageWarning) as reading:
        batches = list(iter_batches(ds, lite0.preprocess, batch_size=3))
    messages = [str(w.message) for w in reading]
    assert len(messages) == 3
    for bad in BAD_AT_READ:
        assert sum(f"skipped {bad}: not a readable image" in m for m in messages) == 1, bad
    assert sorted(f for f, _ in ds.report.skipped) == sorted(BAD_AT_READ + [UNKNOWN])
    assert ds.report.n_skipped == 4 and "12 files listed, 4 skipped" in ds.report.summary()

    files = [f for b in batches for f in b.files]
    assert sorted(files) == sorted(GOOD)
    # every file has its own class, so any shift after a skipped file changes a label
    expected_labels = {"n01440764": 0, "n01443537": 1, "n01484850": 2, "n01491361": 3,
                       "n01494475": 4, "n01496331": 5, "n01498041": 6, "n01514668": 7,
                       "n01514859": 8, "n01518878": 9, "n01530575": 10}
    for b in batches:
        assert 1 <= len(b) <= 3
        assert b.images.shape == (len(b), 3, 224, 224)
        assert b.labels.tolist() == [expected_labels[f.split("_", 1)[0]] for f in b.files]
        assert [ds.files[i] for i in b.indices] == b.files
    images = {f: b.images[k] for b in batches for k, f in enumerate(b.files)}

    def colour(f):
        return images[f].mean(dim=(1, 2)) * 255

    torch.testing.assert_close(colour("n01440764_a_gray.JPEG"), torch.full((3,), 90.0), atol=1.5,
                               rtol=0)
    torch.testing.assert_close(colour("n01484850_c_cmyk.JPEG"), torch.tensor([255.0, 0, 0]),
                               atol=3, rtol=0)
    torch.testing.assert_close(colour("n01494475_e_rgba.png"), torch.full((3,), 255.0))
    torch.testing.assert_close(colour("n01498041_g_palette.png"), torch.tensor([0.0, 255, 0]))
    torch.testing.assert_close(colour("n01514668_h_palette_transparent.png"),
                               torch.full((3,), 255.0))
    torch.testing.assert_close(colour("n01514859_i_16bit.png"), torch.full((3,), 255.0))
    torch.testing.assert_close(colour("n01518878_j_tiny.JPEG"), torch.tensor([10.0, 200, 30]),
                               atol=2, rtol=0)

    # reading again neither re-counts nor re-warns
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", BadImageWarning)
        again = [f for b in iter_batches(ds, lite0.preprocess, batch_size=4) for f in b.files]
    assert again == files
    assert ds.report.n_skipped == 4


def test_all_bad_batch_is_not_yielded(tmp_path, lite0):
    root = tmp_path / "twobad"
    root.mkdir()
    (root / "n01440764_bad1.JPEG").write_bytes(b"\xff\xd8\xff garbage")
    (root / "n01440764_bad2.JPEG").write_bytes(b"not a jpeg")
    Image.new("RGB", (30, 30), (1, 2, 3)).save(root / "n01443537_good.png")
    ds = load_images(root)
    with pytest.warns(BadImageWarning):
        batches = list(iter_batches(ds, lite0.preprocess, batch_size=2))
    assert len(batches) == 1
    assert batches[0].files == ["n01443537_good.png"] and batches[0].labels.tolist() == [1]
    assert batches[0].indices == [2]


# ---------------------------------------------------------------------------------------------
# Folders that cannot be used

def test_empty_folder(tmp_path):
    with pytest.raises(ValueError, match="no usable images") as err:
        load_images(tmp_path)
    msg = str(err.value)
    assert str(tmp_path) in msg
    assert "<wnid>_<name>.JPEG" in msg and "sub-folder per" in msg


def test_folder_with_only_unknown_classes(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "n99999999_x.JPEG", "JPEG")
    Image.new("RGB", (8, 8)).save(tmp_path / "cat.jpg")
    with pytest.warns(BadImageWarning):
        with pytest.raises(ValueError, match="2 files listed, 2 skipped"):
            load_images(tmp_path)


def test_missing_folder(tmp_path):
    missing = tmp_path / "does-not-exist"
    with pytest.raises(FileNotFoundError, match="does not exist") as err:
        load_images(missing)
    assert str(missing) in str(err.value) and "PAPERLIB_DATA" in str(err.value)


def test_paperlib_data_is_honoured(tmp_path, monkeypatch):
    folder = tmp_path / "from-env"
    folder.mkdir()
    Image.new("RGB", (16, 16), (5, 5, 5)).save(folder / "n01443537_goldfish.png")
    Image.new("RGB", (16, 16), (5, 5, 5)).save(folder / "n01484850_shark.png")
    monkeypatch.setenv("PAPERLIB_DATA", str(folder))
    ds = load_images()
    assert ds.root == folder and ds.labels == [1, 2]

    monkeypatch.setenv("PAPERLIB_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=r"\$PAPERLIB_DATA"):
        load_images()
