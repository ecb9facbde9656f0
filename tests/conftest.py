"""Shared fixtures: where the real ImageNet sample lives, Lite0 loaded once, one real batch.

The real images are never copied into the repository. They are found through ``PAPERLIB_DATA``;
when it is unset and ``<repo>/../shared/data/imagenet-sample`` exists, it is pointed there (at
import time, so that ``paperlib``'s own default resolves to it too). Tests that need real images
skip, saying why, only when no such folder is found.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
_SHARED_SAMPLE = REPO_ROOT.parent / "shared" / "data" / "imagenet-sample"

if not os.environ.get("PAPERLIB_DATA") and _SHARED_SAMPLE.is_dir():
    os.environ["PAPERLIB_DATA"] = str(_SHARED_SAMPLE)

#: Number of real images in the shared sample (one per even class index).
N_SAMPLE = 500


def _data_dir() -> Path | None:
    value = os.environ.get("PAPERLIB_DATA")
    if value and Path(value).expanduser().is_dir():
        return Path(value).expanduser()
    return None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real ImageNet sample folder (skips the test when there is none)."""
    path = _data_dir()
    if path is None:
        value = os.environ.get("PAPERLIB_DATA")
        where = (f"PAPERLIB_DATA={value} is not a folder" if value else
                 f"PAPERLIB_DATA is unset and {_SHARED_SAMPLE} does not exist")
        pytest.skip(f"no ImageNet sample images ({where}); set PAPERLIB_DATA to a folder of "
                    "<wnid>_<name>.JPEG files")
    return path


@pytest.fixture(scope="session")
def classes_tsv(data_dir: Path) -> Path:
    """The 1000-class table shipped next to the sample (``index, wnid, name``), read independently
    of :func:`paperlib.data.imagenet_classes`; skips when there is none."""
    shared = data_dir.parent / "imagenet1k_classes.tsv"
    if not shared.is_file():
        pytest.skip(f"no class table next to the sample images ({shared})")
    return shared


@pytest.fixture(scope="session")
def sample_dataset(data_dir: Path):
    from paperlib import load_images

    return load_images(data_dir)


@pytest.fixture(scope="session")
def lite0():
    """EfficientNet-Lite0 with its real ImageNet weights, on CPU, loaded once per session."""
    from paperlib import load_model

    return load_model("efficientnet_lite0", device="cpu")


@pytest.fixture(scope="session")
def lite0_batch(lite0, sample_dataset):
    """8 real images (evenly spaced over the sample) preprocessed for Lite0: a ``Batch``."""
    from paperlib import iter_batches

    batches = list(iter_batches(sample_dataset.subset(8), lite0.preprocess, batch_size=8))
    assert len(batches) == 1 and len(batches[0]) == 8
    return batches[0]
