"""Results keys: a stable hash of a run's configuration and fingerprints of the code behind it.

A run's key (:class:`paperlib.runs.ResultsCache`) is :func:`config_hash` of its configuration,
which holds :func:`code_fingerprint` -- every module of the package and, for a method that needs
one, its checkpoint -- so results computed by other code never mix with this code's.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .paths import PACKAGE_DIR

__all__ = ["code_fingerprint", "config_hash", "fingerprint"]


def config_hash(config: dict[str, Any]) -> str:
    """Stable 12-hex-digit hash of a JSON-serialisable configuration."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def fingerprint(paths: Iterable[str | os.PathLike]) -> str:
    """12-hex-digit SHA-256 over the bytes of ``paths`` (missing files count as absent).

    Part of every cache key: results computed by other code (or another checkpoint) never mix
    with this code's.
    """
    h = hashlib.sha256()
    for path in paths:
        p = Path(path)
        h.update(p.name.encode())
        h.update(p.read_bytes() if p.is_file() else b"<absent>")
    return h.hexdigest()[:12]


def code_fingerprint(*extra: str | os.PathLike) -> str:
    """:func:`fingerprint` of every Python module of the package (found, never listed by hand)
    plus ``extra`` files (e.g. a checkpoint)."""
    return fingerprint([*sorted(PACKAGE_DIR.rglob("*.py")), *extra])
