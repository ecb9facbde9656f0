"""The kit's one exception for bad input on a command line (imports nothing).

:mod:`paperlib.cli` prints it as ``paperlib <command>: error: <message>`` and exits with status 2
(any other exception: status 1; ``--debug`` shows the traceback instead).
"""

from __future__ import annotations

__all__ = ["UsageError"]


class UsageError(Exception):
    """A problem with a command's inputs (a file, a name, a value), said in one line."""
