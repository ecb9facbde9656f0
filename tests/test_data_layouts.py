"""Folder edge cases: broken links, stray files and mixed layouts are warned about or refused,
never dropped in silence; the file-list fingerprint; decoding in worker processes."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image

from paperlib import iter_batches, load_images
from paperlib.data import BadImageWarning, default_workers


def _png(path: Path, value: int = 50) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 12), (value, value, value)).save(path)
    return path


def _messages(record: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, BadImageWarning)]


def _preprocess(image: Image.Image) -> torch.Tensor:
    return torch.tensor(list(image.getpixel((0, 0))), dtype=torch.float32).view(3, 1, 1) / 255


# ---------------------------------------------------------------------------------------------
# Sample layout


def test_sample_layout_broken_link_is_warned_and_counted(tmp_path):
    _png(tmp_path / "n01440764_a.png")
    (tmp_path / "n01443537_b.JPEG").symlink_to(tmp_path / "gone.JPEG")
    with pytest.warns(BadImageWarning) as record:
        ds = load_images(tmp_path)
    assert _messages(record) == [f"skipped n01443537_b.JPEG: broken symbolic link to "
                                 f"{tmp_path / 'gone.JPEG'} (the target does not exist)"]
    assert ds.files == ["n01440764_a.png"] and ds.labels == [0]
    assert ds.report.listed == 2 and ds.report.n_skipped == 1
    assert "2 files listed, 1 skipped" in ds.report.summary()


def test_sample_layout_sub_folder_is_warned_and_counted(tmp_path):
    _png(tmp_path / "n01440764_a.png")
    _png(tmp_path / "thumbnails" / "n01443537_b.png")
    with pytest.warns(BadImageWarning) as record:
        ds = load_images(tmp_path)
    assert _messages(record) == [
        f"skipped thumbnails{os.sep}: a sub-folder of a sample-layout folder (its files are not "
        "read: the sample layout reads the top-level <wnid>_<name>.JPEG files only)"]
    assert ds.layout == "sample" and ds.files == ["n01440764_a.png"]
    assert ds.report.listed == 2 and ds.report.n_skipped == 1


def test_a_sample_folder_with_a_wnid_sub_folder_is_an_error(tmp_path):
    _png(tmp_path / "n01440764_a.png")
    _png(tmp_path / "n01443537_b.png")
    _png(tmp_path / "n01484850" / "ILSVRC2012_val_00000001.png")
    with pytest.raises(ValueError) as err:
        load_images(tmp_path)
    assert str(err.value) == (
        f"{tmp_path} (from the argument) mixes the two layouts: 1 class sub-folder(s) "
        "(n01484850; the imagenet-val layout) and 2 top-level <wnid>_<name> file(s) "
        "(n01440764_a.png, n01443537_b.png; the sample layout). Reading it as either would "
        "drop the other's images: move the top-level files into their <wnid>/ folders, or the "
        "folders elsewhere")


# ---------------------------------------------------------------------------------------------
# imagenet-val layout


def test_val_layout_stray_files_and_broken_links_are_warned_and_counted(tmp_path):
    _png(tmp_path / "n01440764" / "ILSVRC2012_val_00000001.png")
    _png(tmp_path / "n01443537" / "ILSVRC2012_val_00000002.png")
    (tmp_path / "n01443537" / "ILSVRC2012_val_00000003.JPEG").symlink_to(tmp_path / "nowhere")
    (tmp_path / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n")
    _png(tmp_path / "ILSVRC2012_val_00000004.png")          # never moved into its folder
    (tmp_path / "latest.JPEG").symlink_to(tmp_path / "missing.JPEG")
    (tmp_path / ".DS_Store").write_text("hidden files are ignored")
    with pytest.warns(BadImageWarning) as record:
        ds = load_images(tmp_path)
    assert ds.layout == "imagenet-val"
    assert ds.files == [os.path.join("n01440764", "ILSVRC2012_val_00000001.png"),
                        os.path.join("n01443537", "ILSVRC2012_val_00000002.png")]
    assert ds.labels == [0, 1]
    stray = ("a top-level file of an imagenet-val folder (its images are read from the class "
             "sub-folders <wnid>/ only)")
    assert _messages(record) == [
        f"skipped ILSVRC2012_val_00000004.png: {stray}",
        f"skipped LOC_val_solution.csv: {stray}",
        f"skipped latest.JPEG: broken symbolic link to {tmp_path / 'missing.JPEG'} (the target "
        "does not exist)",
        f"skipped {os.path.join('n01443537', 'ILSVRC2012_val_00000003.JPEG')}: broken symbolic "
        f"link to {tmp_path / 'nowhere'} (the target does not exist)"]
    assert ds.report.listed == 6 and ds.report.n_skipped == 4


def test_a_val_folder_with_top_level_sample_images_is_an_error(tmp_path):
    _png(tmp_path / "n01440764" / "ILSVRC2012_val_00000001.png")
    _png(tmp_path / "n01443537" / "ILSVRC2012_val_00000002.png")
    _png(tmp_path / "n01484850_shark.png")
    with pytest.raises(ValueError, match=r"mixes the two layouts: 2 class sub-folder\(s\) "
                                         r"\(n01440764, n01443537; .* 1 top-level "
                                         r"<wnid>_<name> file\(s\) \(n01484850_shark\.png;"):
        load_images(tmp_path)


# ---------------------------------------------------------------------------------------------
# The file-list fingerprint


def test_fingerprint_follows_the_exact_file_list(tmp_path):
    for k, wnid in enumerate(("n01440764", "n01443537", "n01484850")):
        _png(tmp_path / f"{wnid}_{k}.png", value=10 * k)
    first = load_images(tmp_path).fingerprint()
    assert len(first) == 16 and load_images(tmp_path).fingerprint() == first   # stable
    seen = {first}

    _png(tmp_path / "n01491361_3.png")                                          # added
    seen.add(load_images(tmp_path).fingerprint())
    (tmp_path / "n01491361_3.png").unlink()                                     # removed again
    assert load_images(tmp_path).fingerprint() == first
    target = tmp_path / "n01443537_1.png"
    stat = target.stat()
    Image.new("RGB", (30, 30)).save(target)                                     # replaced
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))                  # same mtime
    seen.add(load_images(tmp_path).fingerprint())
    _png(target, value=10)
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert load_images(tmp_path).fingerprint() == first                        # same bytes back
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))               # touched
    seen.add(load_images(tmp_path).fingerprint())
    ds = load_images(tmp_path)
    seen.add(ds.subset(2).fingerprint())                                        # a subset
    assert len(seen) == 5


# ---------------------------------------------------------------------------------------------
# Decoding in worker processes


def test_workers_give_the_same_batches_and_the_same_report(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    wnids = ["n01440764", "n01443537", "n01484850", "n01491361", "n01494475", "n01496331"]
    for k, wnid in enumerate(wnids):
        _png(folder / f"{wnid}_{k}.png", value=k)
    (folder / "n01498041_bad.png").write_bytes(b"not a png")
    runs = {}
    for workers in (0, 2):
        ds = load_images(folder)
        with pytest.warns(BadImageWarning, match="skipped n01498041_bad.png: not a readable"):
            runs[workers] = list(iter_batches(ds, _preprocess, batch_size=3,
                                              num_workers=workers))
        assert ds.report.n_skipped == 1
    for a, b in zip(runs[0], runs[2], strict=True):
        assert a.files == b.files and a.indices == b.indices
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert [b.files for b in runs[2]] == [[f"{w}_{k}.png" for k, w in enumerate(wnids[:3])],
                                          [f"{w}_{k + 3}.png" for k, w in enumerate(wnids[3:])]]
    with pytest.raises(ValueError, match="num_workers must be an integer >= 0, got -1"):
        next(iter_batches(load_images(folder), _preprocess, num_workers=-1))


def test_default_workers(monkeypatch):
    assert default_workers("cpu") == 0 and default_workers(None) == 0
    monkeypatch.setattr(os, "cpu_count", lambda: 32)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert default_workers("cuda:3") == 4
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert default_workers("cuda") == 8
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert default_workers(torch.device("cuda", 0)) == 1
