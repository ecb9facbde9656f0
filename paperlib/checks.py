"""One check for every numeric option, declared where the option is declared.

An options dataclass marks a numeric field with :func:`checked` (its default and its range) and
calls :func:`check_fields` in ``__post_init__``; a value of the wrong type, not finite, or out of
range is refused there with one line naming the option and what it accepts
(``smooth_sigma must be a finite number >= 0, got nan``). The command line, the library call and
the notebooks' parameters build the same dataclasses, so they are refused alike, by name.

Torch-free (layer 0).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any

__all__ = ["check_fields", "check_number", "checked", "describe"]


def describe(*, integer: bool = False, low: float | None = None, high: float | None = None,
             low_open: bool = False, optional: bool = False) -> str:
    """What a range accepts, in words: ``an integer >= 1 or None``, ``a finite number > 0``."""
    what = "an integer" if integer else "a finite number"
    if low is not None:
        what += f" {'>' if low_open else '>='} {low:g}"
    if high is not None:
        what += f"{' and' if low is not None else ''} <= {high:g}"
    return what + (" or None" if optional else "")


def check_number(name: str, value: Any, *, integer: bool = False, low: float | None = None,
                 high: float | None = None, low_open: bool = False,
                 optional: bool = False) -> Any:
    """``value`` as a plain ``int`` (``integer``) or ``float``, or ``None`` when ``optional``;
    a ``ValueError`` naming ``name`` when it is of another type (a bool, a string), not finite
    or outside ``[low, high]`` (``(low, high]`` with ``low_open``)."""
    if value is None and optional:
        return None
    spec = describe(integer=integer, low=low, high=high, low_open=low_open, optional=optional)
    number: float
    if isinstance(value, bool):
        raise ValueError(f"{name} must be {spec}, got {value!r}")
    if isinstance(value, numbers.Integral):
        number = int(value) if integer else float(value)
    elif isinstance(value, numbers.Real) and not integer:
        number = float(value)
    else:
        raise ValueError(f"{name} must be {spec}, got {value!r}")
    if not math.isfinite(number) \
            or (low is not None and (number <= low if low_open else number < low)) \
            or (high is not None and number > high):
        raise ValueError(f"{name} must be {spec}, got {value!r}")
    return number


def checked(default: Any, *, metadata: dict | None = None, **spec: Any) -> Any:
    """A dataclass field with ``default`` whose value :func:`check_fields` checks against
    ``spec`` (the keywords of :func:`check_number`)."""
    return dataclasses.field(default=default, metadata={**(metadata or {}), "check": spec})


def check_fields(obj: Any) -> None:
    """Check (and normalise to ``int`` / ``float``) every :func:`checked` field of ``obj``."""
    for f in dataclasses.fields(obj):
        spec = f.metadata.get("check")
        if spec is not None:
            setattr(obj, f.name, check_number(f.name, getattr(obj, f.name), **spec))
