"""``make data``: fetch the public ImageNet sample (one image per class, 1000 images) when online.

Source: the "imagenet-sample-images" collection (github.com/EliSchwartz/imagenet-sample-images),
pinned to commit :data:`COMMIT` -- a content address: the files of that commit cannot change.
After download, every file whose SHA-256 the kit knows (``imagenet_sample_sha256.tsv``: the 500
images of the even class indices, hashed from the copy the kit was developed with) is checked and
a mismatch is an error; the other files are listed with their hashes in ``SHA256SUMS.observed``
beside the images. Nothing is downloaded when the folder already holds images.

The archive is unpacked and verified in a temporary folder next to the destination, and the
images are moved in only when every known hash matches: a failed or corrupt download leaves the
destination as it was (and a corrupt archive is deleted from the cache, so a retry downloads it
again).

A failure (offline, refused, corrupt) raises :class:`DataDownloadError`, whose message says what
failed, where the images were expected (the folder, whether it came from ``PAPERLIB_DATA``, and
whether it is missing or empty) and the two ways to provide them. The CLI prints that message
alone, with no traceback, and exits with status 1.

CLI: ``paperlib data [--data-dir DIR]`` (``make data``; default: ``$PAPERLIB_DATA`` or
``data/imagenet-sample``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

from .paths import PACKAGE_DIR, default_data_dir

__all__ = ["COMMIT", "URL", "DataDownloadError", "fetch_sample", "known_hashes", "verify"]

COMMIT = "22d0a5c9c5c76d13532da2d29ea7fa2e9e034387"
URL = f"https://github.com/EliSchwartz/imagenet-sample-images/archive/{COMMIT}.zip"
#: The archive's file name in pooch's cache folder.
ARCHIVE_NAME = f"imagenet-sample-{COMMIT[:12]}.zip"
#: The longest excerpt of an underlying exception's text a message quotes.
_DETAIL_CHARS = 160


class DataDownloadError(RuntimeError):
    """The sample images could not be provided; the message says what failed, where the images
    were expected, and how to provide them."""


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


# ---------------------------------------------------------------------------------------------
# Messages

def _folder_state(dest: Path) -> str:
    """What is (not) at ``dest``: ``does not exist``, ``is empty``... for a message."""
    if not dest.exists():
        return "does not exist"
    if not dest.is_dir():
        return "is a file, not a folder"
    if not any(dest.iterdir()):
        return "is empty"
    return "holds no *.JPEG images"


def _expected_where(dest: Path, from_argument: bool) -> str:
    """Where the images were expected: the folder, where its name came from, and its state."""
    env = os.environ.get("PAPERLIB_DATA")
    state = _folder_state(dest)
    if from_argument:
        return f"{dest} (given on the command line; it {state})"
    if env:
        return f"{dest} (from PAPERLIB_DATA={env}, which {state})"
    return f"{dest} (the default, as PAPERLIB_DATA is not set; it {state})"


def _how_to_provide() -> str:
    return ("To provide the images, either\n"
            "  - point PAPERLIB_DATA at a folder of ImageNet images named <wnid>_<name>.JPEG:\n"
            "      PAPERLIB_DATA=/path/to/images make reproduce\n"
            "  - or run `make data` on a machine that is online: it downloads the pinned sample\n"
            f"    ({URL})\n"
            "    into the folder above (or copy that folder from a machine that has it).")


def _message(what: str, dest: Path, from_argument: bool) -> str:
    return (f"{what}\nImages expected in: {_expected_where(dest, from_argument)}\n"
            f"{_how_to_provide()}")


def _excerpt(exc: BaseException) -> str:
    """``Type: first line of the text``, at most :data:`_DETAIL_CHARS` characters."""
    text = " ".join(str(exc).split())
    if len(text) > _DETAIL_CHARS:
        text = text[:_DETAIL_CHARS - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _download_failure(exc: BaseException) -> str:
    """Why the download failed, in words (offline, refused, timed out...), plus an excerpt."""
    host = URL.split("/")[2]
    reason = f"the download of {URL} failed"
    try:
        import requests
    except ImportError:  # pragma: no cover - pooch depends on requests
        requests = None  # type: ignore[assignment]
    if requests is not None:
        if isinstance(exc, requests.exceptions.HTTPError):
            status = exc.response.status_code if exc.response is not None else "an error"
            reason = f"the server refused the download: {host} answered HTTP {status} for {URL}"
        elif isinstance(exc, requests.exceptions.Timeout):
            reason = f"the connection to {host} timed out"
        elif isinstance(exc, requests.exceptions.ConnectionError):
            reason = (f"could not connect to {host} (this machine looks offline, or the "
                      "connection was refused)")
    return f"{reason} ({_excerpt(exc)})"


# ---------------------------------------------------------------------------------------------

class _CorruptDownload(Exception):
    """Known hashes do not match, or the archive holds no images."""


def _retrieve() -> Path:
    """The archive, from pooch's cache or downloaded into it (pooch's own log kept quiet)."""
    import pooch

    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel("WARNING")
    try:
        return Path(pooch.retrieve(URL, known_hash=None, fname=ARCHIVE_NAME,
                                   path=pooch.os_cache("paperlib"), progressbar=True))
    finally:
        logger.setLevel(level)


def fetch_sample(dest: str | Path | None = None) -> Path:
    """Download and unpack the sample into ``dest`` unless it already holds images.

    ``dest`` defaults to ``$PAPERLIB_DATA``, else ``data/imagenet-sample`` in the repository.
    Raises :class:`DataDownloadError` (a message for a person, see the module docstring) when
    the images cannot be provided.
    """
    from_argument = dest is not None
    dest = Path(dest).expanduser() if dest is not None else default_data_dir()
    if dest.is_dir() and any(dest.glob("*.JPEG")):
        print(f"{dest} already holds images; nothing to download")
        return dest
    if dest.exists() and not dest.is_dir():
        raise DataDownloadError(_message("cannot put the ImageNet sample images there: that "
                                         "path is a file.", dest, from_argument))
    if os.environ.get("PAPERLIB_DATA") and not from_argument:
        print(f"PAPERLIB_DATA={os.environ['PAPERLIB_DATA']} {_folder_state(dest)}; "
              "downloading the ImageNet sample into it")
    print(f"downloading the ImageNet sample (pinned commit {COMMIT[:12]}) into {dest}")
    try:
        archive = _retrieve()
    except ImportError as exc:
        raise DataDownloadError(_message(
            f"could not download the ImageNet sample images: the package pooch is not installed "
            f"(`make env` installs it) ({_excerpt(exc)}).", dest, from_argument)) from exc
    except Exception as exc:  # requests' errors, OSError, pooch's own...
        raise DataDownloadError(_message(
            f"could not download the ImageNet sample images: {_download_failure(exc)}.",
            dest, from_argument)) from exc
    try:
        total, checked, observed = _install(archive, dest)
    except (zipfile.BadZipFile, _CorruptDownload) as exc:
        archive.unlink(missing_ok=True)  # a retry downloads it again
        raise DataDownloadError(_message(
            f"the downloaded ImageNet sample is corrupt: {exc}; the archive {archive} was "
            f"deleted and nothing was written to {dest}: run `make data` again.",
            dest, from_argument)) from exc
    except OSError as exc:
        raise DataDownloadError(_message(
            f"could not unpack the ImageNet sample into {dest}: {_excerpt(exc)}.",
            dest, from_argument)) from exc
    print(f"{total} images in {dest}: {checked} verified against known hashes, "
          f"{observed} recorded in SHA256SUMS.observed")
    return dest


def _install(archive: Path, dest: Path) -> tuple[int, int, int]:
    """Unpack ``archive``'s images into a temporary folder beside ``dest``, verify them, then
    move them into ``dest``. Returns (images, verified, recorded in SHA256SUMS.observed)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{dest.name}-", dir=dest.parent) as tmp:
        staging = Path(tmp)
        with zipfile.ZipFile(archive) as zf:
            for member in zf.namelist():
                name = Path(member).name
                if name.endswith(".JPEG"):
                    with zf.open(member) as src, open(staging / name, "wb") as dst:
                        shutil.copyfileobj(src, dst)
        images = sorted(staging.glob("*.JPEG"))
        if not images:
            raise _CorruptDownload("the archive holds no *.JPEG images")
        checked, bad = verify(staging)
        if bad:
            raise _CorruptDownload(f"{len(bad)} image(s) do not match their known SHA-256 "
                                   f"(first: {bad[0]})")
        known = known_hashes()
        observed = [f"{_sha256(p)}  {p.name}" for p in images if p.name not in known]
        dest.mkdir(parents=True, exist_ok=True)
        for path in images:
            shutil.move(str(path), dest / path.name)
        (dest / "SHA256SUMS.observed").write_text("\n".join(observed) + "\n")
    return len(images), checked, len(observed)
