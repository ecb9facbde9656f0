"""``make data``: fetch the public ImageNet sample (one image per class, 1000 images) when online.

Source: the "imagenet-sample-images" collection (github.com/EliSchwartz/imagenet-sample-images),
pinned to commit :data:`COMMIT` -- a content address: the files of that commit cannot change.
After download, every file whose SHA-256 the kit knows (``imagenet_sample_sha256.tsv``: the 500
images of the even class indices, hashed from the copy the kit was developed with) is checked and
a mismatch is an error; the other files are listed with their hashes in ``SHA256SUMS.observed``
beside the images. Nothing is downloaded when the folder already holds images.

CLI: ``python -m paperlib.download [DEST]`` (default: ``$PAPERLIB_DATA`` or
``data/imagenet-sample``).
"""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

from .paths import PACKAGE_DIR, default_data_dir

__all__ = ["COMMIT", "URL", "fetch_sample", "known_hashes", "verify"]

COMMIT = "22d0a5c9c5c76d13532da2d29ea7fa2e9e034387"
URL = f"https://github.com/EliSchwartz/imagenet-sample-images/archive/{COMMIT}.zip"


def known_hashes() -> dict[str, str]:
    """File name -> SHA-256 for the images the kit can verify."""
    rows = (PACKAGE_DIR / "imagenet_sample_sha256.tsv").read_text().splitlines()
    return dict(line.split("\t") for line in rows if line.strip())


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify(folder: Path) -> tuple[int, list[str]]:
    """(number of files verified against known hashes, names of the files that mismatch)."""
    known = known_hashes()
    checked, bad = 0, []
    for path in sorted(folder.glob("*.JPEG")):
        if path.name in known:
            checked += 1
            if _sha256(path) != known[path.name]:
                bad.append(path.name)
    return checked, bad


def fetch_sample(dest: str | Path | None = None) -> Path:
    """Download and unpack the sample into ``dest`` unless it already holds images."""
    dest = Path(dest) if dest is not None else default_data_dir()
    if dest.is_dir() and any(dest.glob("*.JPEG")):
        print(f"{dest} already holds images; nothing to download")
        return dest
    import pooch

    archive = pooch.retrieve(URL, known_hash=None, fname=f"imagenet-sample-{COMMIT[:12]}.zip",
                             path=pooch.os_cache("paperlib"), progressbar=True)
    import zipfile

    dest.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive) as zf:
        for member in zf.namelist():
            name = Path(member).name
            if name.endswith(".JPEG"):
                with zf.open(member) as src, open(dest / name, "wb") as dst:
                    shutil.copyfileobj(src, dst)
    checked, bad = verify(dest)
    if bad:
        raise RuntimeError(f"{len(bad)} downloaded images do not match their known SHA-256 "
                           f"(first: {bad[0]}); the download is corrupt - delete {dest} and retry")
    known = known_hashes()
    observed = [f"{_sha256(p)}  {p.name}" for p in sorted(dest.glob("*.JPEG"))
                if p.name not in known]
    (dest / "SHA256SUMS.observed").write_text("\n".join(observed) + "\n")
    total = len(list(dest.glob("*.JPEG")))
    print(f"{total} images in {dest}: {checked} verified against known hashes, "
          f"{len(observed)} recorded in SHA256SUMS.observed")
    return dest


if __name__ == "__main__":
    fetch_sample(sys.argv[1] if len(sys.argv) > 1 else None)
