"""The kit's one progress bar: every long loop counts its work through :func:`progress`.

It shows a ``tqdm.auto`` bar (a widget in Jupyter when ipywidgets is installed, text in a
terminal). When the environment variable ``PAPERLIB_PROGRESS_LOG`` names a file, it also appends
plain text lines to that file: one when the bar starts, then at most every :data:`LOG_INTERVAL`
seconds, and one at the end (each appended whole and flushed)::

    evaluation: 120/250 img | 8:02 elapsed | ~8:42 left

``make reproduce`` sets the variable (the notebooks' kernels inherit it) and prints the lines in
the terminal while each notebook runs, where the kernel's own bars are not visible.

Usage::

    with progress(len(todo), "evaluation") as bar:
        for batch in batches:
            ...
            bar.update(len(batch))
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path
from types import TracebackType
from typing import final

__all__ = ["LOG_ENV", "LOG_INTERVAL", "ProgressBar", "format_duration", "progress"]

#: Environment variable naming the plain-text progress log (unset: no log).
LOG_ENV = "PAPERLIB_PROGRESS_LOG"
#: Least number of seconds between two log lines of one bar (the final line is always written).
LOG_INTERVAL = 2.0

_now = time.monotonic  # the clock (tests replace it)


def format_duration(seconds: float) -> str:
    """``m:ss`` (minutes unbounded: ``75:03``); negative durations count as zero."""
    total = max(0, round(seconds))
    return f"{total // 60}:{total % 60:02d}"


@final
class ProgressBar:
    """A ``tqdm.auto`` bar over ``total`` units, mirrored to the progress log if there is one.

    Use it as a context manager (closed on exit, also on an exception) or call :meth:`close`.
    """

    def __init__(self, total: int, desc: str, unit: str = "img", disable: bool = False,
                 log_path: str | os.PathLike | None = None) -> None:
        from tqdm.auto import tqdm

        self.total = int(total)
        self.desc = desc
        self.unit = unit
        self.done = 0
        self.closed = False
        self._started = _now()
        self._last_logged: float | None = None
        self._logged_done = -1
        self._bar = tqdm(total=self.total, desc=desc, unit=unit, disable=disable)
        if disable:
            log_path = None
        elif log_path is None:
            log_path = os.environ.get(LOG_ENV) or None
        self.log_path = Path(log_path) if log_path is not None else None
        self._log()

    def line(self) -> str:
        """The log line for the current count: ``desc: done/total unit | m:ss elapsed | ~m:ss
        left`` (remaining time from the rate so far; ``?`` before the first update)."""
        elapsed = _now() - self._started
        if self.done >= self.total:
            left = format_duration(0)
        elif self.done > 0:
            left = format_duration(elapsed / self.done * (self.total - self.done))
        else:
            left = "?"
        return (f"{self.desc}: {self.done}/{self.total} {self.unit} | "
                f"{format_duration(elapsed)} elapsed | ~{left} left")

    def _log(self, force: bool = False) -> None:
        if self.log_path is None:
            return
        now = _now()
        if not force and self._last_logged is not None and now - self._last_logged < LOG_INTERVAL:
            return
        self._last_logged, self._logged_done = now, self.done
        # one write per line, appended and flushed: a reader tailing the file sees whole lines
        try:
            with open(self.log_path, "a", encoding="utf-8") as f:
                f.write(self.line() + "\n")
                f.flush()
        except OSError as err:  # a progress log never stops the computation it reports
            warnings.warn(f"progress log {self.log_path} not written ({err}); logging stops",
                          stacklevel=3)
            self.log_path = None

    def update(self, n: int = 1) -> None:
        """Count ``n`` more units done."""
        self.done += n
        self._bar.update(n)
        self._log()

    def close(self) -> None:
        """Close the bar and write the final log line, unless the last line already holds the
        final count (idempotent)."""
        if self.closed:
            return
        self.closed = True
        self._bar.close()
        if self._logged_done != self.done:
            self._log(force=True)

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def progress(total: int, desc: str, unit: str = "img", disable: bool = False) -> ProgressBar:
    """A progress bar over ``total`` units of work named ``desc`` (see the module docstring).

    ``disable=True`` shows nothing and logs nothing (for callers with a ``progress=False``
    option); :meth:`ProgressBar.update` and :meth:`ProgressBar.close` still work.
    """
    return ProgressBar(total, desc, unit=unit, disable=disable)
