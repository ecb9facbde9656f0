"""ImageNet images with their labels, robust to the files one meets in practice.

Two layouts are read:

* **sample**: a flat folder of ``<wnid>_<name>.JPEG`` (the public "imagenet-sample-images" set,
  one image per class; ``../shared/data/imagenet-sample`` holds the even class indices);
* **imagenet-val**: one sub-folder per wnid holding that class's images (ImageNet's validation
  set after the usual ``valprep`` step), so that a researcher with ImageNet can run at full scale.

The label of an image is the index of its wnid among the 1000 ImageNet-1k wnids in sorted order
(the output order of every ImageNet classifier; the list comes from timm's ImageNet metadata).

Bad input never stops a run and never shifts a label: labels are attached to files when the folder
is listed, an unknown wnid is skipped at listing, and a file that cannot be decoded (corrupt,
truncated, not an image) is skipped when it is read. Both are warned about, naming the file, and
counted in :attr:`ImageDataset.report`. Grayscale, CMYK, RGBA, palette and 16-bit images are
converted to 8-bit RGB (transparent pixels composited on white; 16-bit values rescaled, not
clipped); EXIF orientation is applied.

Nothing in the folder is passed over in silence (hidden files, ``.name``, excepted): a broken
symbolic link, a stray top-level file of an imagenet-val folder and a sub-folder of a sample
folder are warned about (:class:`BadImageWarning`) and counted in the report at listing. A folder
holding both layouts -- wnid sub-folders *and* top-level ``<wnid>_<name>`` files -- is an error
that names both, never read as one of them.

:meth:`ImageDataset.fingerprint` hashes the exact list of files (names, sizes, modification
times): the results store keys a run by it, so adding, removing or replacing an image starts a new
run. :func:`iter_batches` decodes in DataLoader worker processes when asked to
(:func:`default_workers`), with pinned memory and non-blocking copies to a CUDA device.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from .checks import check_number
from .paths import default_data_dir

__all__ = [
    "Batch",
    "BadImageWarning",
    "ImageBudgetError",
    "ImageDataset",
    "LoadReport",
    "SPLITS",
    "default_workers",
    "imagenet_classes",
    "iter_batches",
    "load_images",
    "read_rgb",
]

IMAGE_EXTENSIONS = {".jpeg", ".jpg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                    ".pgm"}
_WNID = re.compile(r"^n\d{8}$")

#: The sample-data split of the attention module: ``trained`` learns on class index = 0 (mod 4),
#: every evaluation table uses class index = 2 (mod 4). They share no image.
SPLITS: dict[str, tuple[int, int]] = {"train": (4, 0), "eval": (4, 2)}


class BadImageWarning(UserWarning):
    """A file was skipped: it could not be read as an image, or its class is unknown."""


@functools.lru_cache(maxsize=1)
def imagenet_classes() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(wnids, names)`` of the 1000 ImageNet-1k classes, in class-index order.

    From timm's ImageNet metadata (the sorted wnids; a class's name is the first lemma of its
    synset), the same table as ``imagenet1k_classes.tsv`` beside the sample data (tested).
    """
    from timm.data import ImageNetInfo

    info = ImageNetInfo("imagenet-1k")
    wnids = tuple(info.index_to_label_name(i) for i in range(info.num_classes()))
    if len(wnids) != 1000 or list(wnids) != sorted(wnids):
        raise RuntimeError("timm's ImageNet-1k class list is not the 1000 sorted wnids")
    names = tuple(info.index_to_description(i).split(",")[0] for i in range(1000))
    return wnids, names


@functools.lru_cache(maxsize=1)
def _wnid_to_index() -> dict[str, int]:
    return {w: i for i, w in enumerate(imagenet_classes()[0])}


#: The memory budget of one image: its long side at most this many times its short side. Every
#: black box resizes the short side to its input size (~256 px), so a 16000x1 PNG of 150 bytes would
#: become 4,096,000 x 256 px (~4.9 GB at its peak); at 20:1 an image costs at most ~20 x 256^2 px.
#: PIL's decompression-bomb limit (Image.MAX_IMAGE_PIXELS) bounds the decoded size itself.
MAX_ASPECT = 20


class ImageBudgetError(ValueError):
    """An image whose shape would cost more memory than :data:`MAX_ASPECT` allows."""


def read_rgb(path: str | os.PathLike) -> Image.Image:
    """Decode ``path`` fully and return an 8-bit RGB image (see the module docstring).

    Raises ``OSError``/``ValueError`` for anything that is not a readable image, and
    :class:`ImageBudgetError` (from the header, before decoding) for an aspect ratio beyond
    :data:`MAX_ASPECT`. PIL's decompression-bomb warning is re-issued naming the file.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", Image.DecompressionBombWarning)
        opened_ = Image.open(path)
    for w in caught:
        if issubclass(w.category, Image.DecompressionBombWarning):
            warnings.warn(f"{os.fspath(path)}: {w.message}", BadImageWarning, stacklevel=2)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    with opened_ as opened:
        width, height = opened.size
        if min(width, height) < 1 or max(width, height) > MAX_ASPECT * min(width, height):
            ratio = max(width, height) / max(1, min(width, height))
            raise ImageBudgetError(
                f"{width}x{height} px: aspect ratio {ratio:.0f}:1 is beyond the memory budget "
                f"of {MAX_ASPECT}:1 (resizing its short side to the input size would multiply "
                f"its pixels {ratio:.0f}-fold)")
        opened.load()  # force the decode now: truncated files fail here, not later
        im: Image.Image = ImageOps.exif_transpose(opened)
        if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
            arr = np.asarray(im, dtype=np.float64)
            top = 65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 255.0
            arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
            im = Image.fromarray(arr, mode="L")
        if im.mode == "P":
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "RGBa"):
            rgba = im.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            im = Image.alpha_composite(background, rgba)
        return im.convert("RGB")


@dataclass
class LoadReport:
    """What a dataset skipped, and why; filled while listing and while reading."""

    listed: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def skip(self, file: str, reason: str) -> None:
        if any(f == file for f, _ in self.skipped):
            return
        self.skipped.append((file, reason))
        warnings.warn(f"skipped {file}: {reason}", BadImageWarning, stacklevel=3)

    @property
    def n_skipped(self) -> int:
        return len(self.skipped)

    def summary(self) -> str:
        lines = [f"{self.listed} files listed, {self.n_skipped} skipped"]
        lines += [f"  skipped {f}: {r}" for f, r in self.skipped]
        return "\n".join(lines)


@dataclass(frozen=True)
class Record:
    path: Path
    label: int
    wnid: str


class ImageDataset(torch.utils.data.Dataset):
    """A list of (file, label) read from a folder; items are ``(PIL RGB image, label, file name)``.

    Reading a bad file raises ``OSError``; :func:`iter_batches` skips and reports such files.
    """

    def __init__(self, root: Path, records: Sequence[Record], layout: str,
                 report: LoadReport | None = None) -> None:
        self.root = root
        self.records = list(records)
        self.layout = layout
        self.report = report if report is not None else LoadReport(listed=len(self.records))

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[Image.Image, int, str]:
        r = self.records[i]
        return read_rgb(r.path), r.label, self.file_name(i)

    def file_name(self, i: int) -> str:
        return str(self.records[i].path.relative_to(self.root))

    @property
    def labels(self) -> list[int]:
        return [r.label for r in self.records]

    @property
    def files(self) -> list[str]:
        return [self.file_name(i) for i in range(len(self))]

    def fingerprint(self) -> str:
        """16-hex-digit SHA-256 over the exact file list: each file's name (relative to
        :attr:`root`), size and modification time (``os.stat``, links followed), in order.

        Adding, removing, renaming, replacing or touching an image changes it; copying the folder
        without keeping modification times (``cp -r`` rather than ``cp -a`` / ``rsync -a``) does
        too. A file gone since listing counts as ``<missing>``.
        """
        h = hashlib.sha256()
        for i, r in enumerate(self.records):
            try:
                st = os.stat(r.path)
                facts = f"{st.st_size}\0{st.st_mtime_ns}"
            except OSError:
                facts = "<missing>"
            h.update(f"{self.file_name(i)}\0{facts}\n".encode())
        return h.hexdigest()[:16]

    def _derive(self, records: Sequence[Record]) -> ImageDataset:
        # The report is shared: a file skipped while reading a subset is reported for the whole.
        return ImageDataset(self.root, records, self.layout, self.report)

    def split(self, name: str | None) -> ImageDataset:
        """The images of split ``name`` (:data:`SPLITS`); ``None`` or ``"all"``: every image."""
        if name in (None, "all"):
            return self
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {sorted(SPLITS)} or 'all'")
        mod, rest = SPLITS[name]
        return self._derive([r for r in self.records if r.label % mod == rest])

    def subset(self, n_images: int | None) -> ImageDataset:
        """``n_images`` images spread evenly over the (class-sorted) list; ``None``: all of them.

        Even spacing keeps a small run diverse (the first n files would all be fish and birds)
        and is deterministic.
        """
        n_images = check_number("n_images", n_images, integer=True, low=1, optional=True)
        if n_images is None or n_images >= len(self):
            return self
        idx = np.unique(np.linspace(0, len(self) - 1, n_images).round().astype(int))
        return self._derive([self.records[i] for i in idx])

    def subset_files(self, files: Sequence[str]) -> ImageDataset:
        """The named images (file names relative to :attr:`root`, as :attr:`files` gives them),
        in the given order; a name not in the dataset is an error naming it."""
        index = {self.file_name(i): i for i in range(len(self))}
        missing = [f for f in files if f not in index]
        if missing:
            raise ValueError(f"{len(missing)} file(s) not in {self.root}: {missing[:5]}")
        return self._derive([self.records[index[f]] for f in files])


def _visible(folder: Path) -> list[Path]:
    """The entries of ``folder`` not hidden (``.name``), sorted."""
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _broken_link(path: Path) -> bool:
    return path.is_symlink() and not path.exists()


def _skip_broken_link(path: Path, root: Path, report: LoadReport) -> None:
    report.listed += 1
    report.skip(str(path.relative_to(root)),
                f"broken symbolic link to {os.readlink(path)} (the target does not exist)")


def _sample_wnid(name: str) -> str:
    """The wnid a sample-layout file name starts with (``<wnid>_<name>.JPEG``)."""
    return name.split("_", 1)[0].split(".", 1)[0]


def _list_sample(root: Path, report: LoadReport) -> list[Record]:
    records = []
    index = _wnid_to_index()
    for path in _visible(root):
        if _broken_link(path):
            _skip_broken_link(path, root, report)
            continue
        if path.is_dir():
            report.listed += 1
            report.skip(f"{path.name}{os.sep}",
                        "a sub-folder of a sample-layout folder (its files are not read: the "
                        "sample layout reads the top-level <wnid>_<name>.JPEG files only)")
            continue
        if not path.is_file():
            continue
        report.listed += 1
        wnid = _sample_wnid(path.name)
        if wnid not in index:
            report.skip(path.name, f"'{wnid}' is not an ImageNet-1k wnid (expected files named "
                                   "<wnid>_<name>.JPEG)")
            continue
        records.append(Record(path, index[wnid], wnid))
    return records


def _list_val(root: Path, report: LoadReport) -> list[Record]:
    records = []
    index = _wnid_to_index()
    for entry in _visible(root):
        if _broken_link(entry):
            _skip_broken_link(entry, root, report)
        elif entry.is_file():
            report.listed += 1
            report.skip(entry.name, "a top-level file of an imagenet-val folder (its images are "
                                    "read from the class sub-folders <wnid>/ only)")
    for folder in (p for p in _visible(root) if p.is_dir()):
        entries = sorted(p for p in folder.rglob("*")
                         if not p.name.startswith(".") and (p.is_file() or _broken_link(p)))
        for path in entries:
            if _broken_link(path):
                _skip_broken_link(path, root, report)
                continue
            report.listed += 1
            if folder.name not in index:
                report.skip(str(path.relative_to(root)),
                            f"folder '{folder.name}' is not an ImageNet-1k wnid")
                continue
            records.append(Record(path, index[folder.name], folder.name))
    return records


def load_images(path: str | os.PathLike | None = None) -> ImageDataset:
    """The images under ``path`` (else ``$PAPERLIB_DATA``, else ``data/imagenet-sample``).

    The layout is detected: sub-folders named by wnid -> imagenet-val; files -> sample.
    Raises ``FileNotFoundError`` for a missing folder, ``ValueError`` for one with no images and
    for one mixing both layouts (wnid sub-folders beside top-level ``<wnid>_<name>`` files).
    """
    root = Path(path).expanduser() if path is not None else default_data_dir()
    where = ("the argument" if path is not None else
             "$PAPERLIB_DATA" if os.environ.get("PAPERLIB_DATA") else "the default location")
    if not root.is_dir():
        raise FileNotFoundError(
            f"image folder {root} (from {where}) does not exist; expected a folder of "
            "<wnid>_<name>.JPEG files or one sub-folder per wnid. Set PAPERLIB_DATA, pass the "
            "path, or run `make data` to download the public ImageNet sample")
    report = LoadReport()
    entries = _visible(root)
    subdirs = [p for p in entries if p.is_dir() and _WNID.match(p.name)]
    if subdirs:
        index = _wnid_to_index()
        sample_files = [p.name for p in entries
                        if (p.is_file() or _broken_link(p)) and _sample_wnid(p.name) in index]
        if sample_files:
            raise ValueError(
                f"{root} (from {where}) mixes the two layouts: {len(subdirs)} class sub-folder(s) "
                f"({', '.join(p.name for p in subdirs[:3])}{' ...' if len(subdirs) > 3 else ''}; "
                f"the imagenet-val layout) and {len(sample_files)} top-level <wnid>_<name> "
                f"file(s) ({', '.join(sample_files[:3])}{' ...' if len(sample_files) > 3 else ''}; "
                "the sample layout). Reading it as either would drop the other's images: move "
                "the top-level files into their <wnid>/ folders, or the folders elsewhere")
        layout, records = "imagenet-val", _list_val(root, report)
    else:
        layout, records = "sample", _list_sample(root, report)
    if not records:
        raise ValueError(
            f"no usable images in {root} (from {where}): {report.listed} files listed, "
            f"{report.n_skipped} skipped; expected <wnid>_<name>.JPEG files or one sub-folder per "
            "ImageNet wnid (n01440764/...)")
    return ImageDataset(root, records, layout, report)


@dataclass
class Batch:
    """Preprocessed images (B, 3, S, S) in [0, 1], with labels, file names and dataset indices."""

    images: torch.Tensor
    labels: torch.Tensor
    files: list[str]
    indices: list[int]

    def __len__(self) -> int:
        return len(self.files)


def default_workers(device: torch.device | str | None) -> int:
    """Decoding worker processes for :func:`iter_batches` on ``device``: none on a CPU (the
    model's threads use every core; measured in ``benchmarks/SCALE_cpu.md``), else
    ``min(8, CPU cores / processes on this machine)`` so that decoding keeps up with a GPU."""
    if device is None or torch.device(device).type == "cpu":
        return 0
    per_machine = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(1, min(8, (os.cpu_count() or 1) // per_machine))


class _Preprocessed(torch.utils.data.Dataset):
    """Items ``(tensor, label, file, index, None)``, or ``(None, label, file, index, error)``."""

    def __init__(self, dataset: ImageDataset, preprocess: Callable, indices: Sequence[int]):
        self.dataset, self.preprocess, self.indices = dataset, preprocess, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, j: int) -> tuple:
        i = self.indices[j]
        r = self.dataset.records[i]
        file = self.dataset.file_name(i)
        try:
            return self.preprocess(read_rgb(r.path)), r.label, file, i, None
        except ImageBudgetError as exc:
            return None, r.label, file, i, f"beyond the memory budget: {exc}"
        except Exception as exc:  # noqa: BLE001 - any decode failure skips the file
            return None, r.label, file, i, f"not a readable image ({type(exc).__name__}: {exc})"


def _collate(items: list[tuple]) -> tuple:
    """In the worker: the good images stacked, their labels, files and indices; the errors."""
    good = [it for it in items if it[4] is None]
    errors = [(it[2], it[4]) for it in items if it[4] is not None]
    images = torch.stack([g[0] for g in good]) if good else torch.empty(0)
    labels = torch.tensor([g[1] for g in good], dtype=torch.int64)
    return images, labels, [g[2] for g in good], [g[3] for g in good], errors


def iter_batches(dataset: ImageDataset, preprocess: Callable, batch_size: int = 16,
                 indices: Sequence[int] | None = None, num_workers: int = 0,
                 device: torch.device | str | None = None) -> Iterator[Batch]:
    """Batches of preprocessed images; unreadable files are skipped, warned about and reported.

    A batch holds the next ``batch_size`` of ``indices`` (fewer when files were skipped; an
    all-bad batch is not yielded). ``num_workers`` processes decode and stack ahead of the caller
    (:func:`default_workers`); on a CUDA ``device`` batches come in pinned memory and are copied
    without blocking, so the host never waits for the copy.
    """
    batch_size = check_number("batch_size", batch_size, integer=True, low=1)
    num_workers = check_number("num_workers", num_workers, integer=True, low=0)
    indices = range(len(dataset)) if indices is None else indices
    target = torch.device(device) if device is not None else None
    pin = target is not None and target.type == "cuda"
    loader = torch.utils.data.DataLoader(_Preprocessed(dataset, preprocess, indices),
                                         batch_size=batch_size, num_workers=num_workers,
                                         collate_fn=_collate, pin_memory=pin)
    for images, labels, files, idx, errors in loader:
        for file, error in errors:
            dataset.report.skip(file, error)
        if not files:
            continue
        if target is not None:
            images = images.to(target, non_blocking=pin)
            labels = labels.to(target, non_blocking=pin)
        yield Batch(images, labels, list(files), list(idx))
