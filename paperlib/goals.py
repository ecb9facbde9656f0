"""The kit's speed goals and the fast forwards' safety rule, torch-free (the precision study
applies them, the report states them)."""

from __future__ import annotations

__all__ = ["SAFE_WIDTH_FRACTION", "SPEEDUP_GOAL"]

#: A fast mode is *safe* when no claim-check verdict changes and every method's Average Drop moves
#: by less than this fraction of its fp32 95% interval's width.
SAFE_WIDTH_FRACTION = 0.1
#: The speed-up of the full evaluation a fast mode is asked for, per device type.
SPEEDUP_GOAL = {"cpu": 1.5, "cuda": 3.0}
