"""``python -m paperlib``: the ``paperlib`` command line (:mod:`paperlib.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
