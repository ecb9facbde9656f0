"""Atomic file writes: a reader sees the old file or the new one, never half of it."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["CSV_FLOAT_FORMAT", "atomic_write_csv", "atomic_write_text"]

#: How a committed table's floats are written: 10 significant digits, so that two runs whose
#: arithmetic differs in the last bit (e.g. a Pearson coefficient's 16th digit) write the same
#: bytes; the full-precision numbers stay in the results store.
CSV_FLOAT_FORMAT = "%.10g"


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same folder and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_csv(frame: Any, path: Path) -> None:
    """``frame`` (a pandas DataFrame) as CSV without its index, floats at
    :data:`CSV_FLOAT_FORMAT`, written atomically (:func:`atomic_write_text`)."""
    atomic_write_text(path, frame.to_csv(index=False, float_format=CSV_FLOAT_FORMAT))
