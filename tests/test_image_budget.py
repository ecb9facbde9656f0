"""Bounded memory for any image: an image whose aspect ratio would blow up in the resize to the
input size is refused from its header, named, and skipped like a bomb; PIL's bomb warning names
the file."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from PIL import Image

from paperlib import iter_batches, load_images
from paperlib.data import MAX_ASPECT, BadImageWarning, ImageBudgetError, read_rgb

TENCH = "n01440764_tench.png"


def _png(path: Path, size: tuple[int, int]) -> Path:
    Image.new("RGB", size, (10, 20, 30)).save(path)
    return path


def test_an_image_beyond_the_aspect_budget_is_refused_from_its_header(tmp_path: Path):
    wide = _png(tmp_path / "wide.png", (16000, 1))
    assert wide.stat().st_size < 1000  # a tiny file: PIL's bomb limit does not apply
    with pytest.raises(ImageBudgetError, match=r"16000x1 px: aspect ratio 16000:1 .* 20:1"):
        read_rgb(wide)
    tall = _png(tmp_path / "tall.png", (3, 3 * MAX_ASPECT + 1))
    with pytest.raises(ImageBudgetError):
        read_rgb(tall)
    edge = _png(tmp_path / "edge.png", (2, 2 * MAX_ASPECT))   # exactly at the budget: read
    assert read_rgb(edge).size == (2, 2 * MAX_ASPECT)


def test_a_batch_skips_it_naming_the_file_and_keeps_the_others(tmp_path: Path):
    _png(tmp_path / TENCH, (64, 48))
    _png(tmp_path / "n01443537_wide.png", (16000, 1))
    data = load_images(tmp_path)
    import torchvision.transforms as T
    pre = T.Compose([T.Resize(32), T.CenterCrop(32), T.ToTensor()])
    with pytest.warns(BadImageWarning, match="n01443537_wide.png: beyond the memory budget"):
        batches = list(iter_batches(data, pre, batch_size=2))
    assert [b.files for b in batches] == [[TENCH]]
    assert data.report.n_skipped == 1


def test_peak_memory_of_a_16000x1_png_stays_bounded(tmp_path: Path):
    """In a fresh process, the peak resident memory while batching a folder with the 16000x1 PNG
    (~4.9 GB before the budget) grows by less than 200 MB over the imports'."""
    _png(tmp_path / TENCH, (64, 48))
    _png(tmp_path / "n01443537_wide.png", (16000, 1))
    code = f"""
import resource, warnings
import torchvision.transforms as T
from paperlib import iter_batches, load_images
pre = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor()])
data = load_images({str(tmp_path)!r})
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    files = [f for b in iter_batches(data, pre, batch_size=2) for f in b.files]
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(files, (after - before) // 1024)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=300).stdout.split()
    assert out[0] == f"['{TENCH}']"
    assert int(out[1]) < 200, f"peak grew by {out[1]} MB"


def test_the_bomb_warning_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    big = _png(tmp_path / "big.png", (100, 100))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 6000)   # 10,000 px: a warning, not an error
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        read_rgb(big)
    named = [w for w in caught if issubclass(w.category, BadImageWarning)]
    assert len(named) == 1 and str(big) in str(named[0].message)
    assert "decompression bomb" in str(named[0].message)
