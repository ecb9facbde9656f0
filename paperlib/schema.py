"""The per-image row: one definition of the columns the evaluation writes and everything reads.

One row per (image, method). Metrics write it (:func:`paperlib.metrics.image_rows`), the results
cache stores it, tables, figures and the README read it; every column name comes from here. The
keys' columns are :data:`KEY_COLUMNS`; the metric columns, with their dtypes, directions and
labels, are declared by the read-out records (:data:`paperlib.metrics.READOUTS`), and a run's
:class:`RowSchema` is :attr:`paperlib.metrics.MetricConfig.row_schema`.

=====================  =====================================================================
column                 meaning
=====================  =====================================================================
file, label            the image (file name in the data folder) and its ground-truth class
target                 the explained class (predicted on the full image, or the label)
method                 the method's registered name
Y                      softmax probability of the target on the full image
flat_map               the method's map was constant (all zeros after normalisation)
O_<tag>                the target's probability on the masked image, tag ``soft`` or ``top<k>``
drop_<tag>             Average Drop's per-image term max(0, Y - O) / Y * 100
increase_<tag>         % Increase's per-image term 1[Y < O] * 100
gain_<tag>             Average Gain's per-image term max(0, O - Y) / (1 - Y) * 100
agree_top<k>           100 if the black box's top-1 class on the top-k% image is the target
deletion_auc, ...      deletion / insertion AUC; ``del_<t>`` / ``ins_<t>`` the curves' points
=====================  =====================================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pandas as pd

__all__ = ["DELETION_AUC", "INSERTION_AUC", "KEYS", "KEY_COLUMNS", "READOUTS", "SOFT",
           "RowSchema", "agree", "deletion", "drop", "gain", "increase", "insertion", "readout",
           "readout_scale", "score", "top"]

KEYS = ("file", "label", "target", "method")
#: The columns every row starts with, before the read-outs': ``{column: dtype}``.
KEY_COLUMNS = {"file": "object", "label": "int64", "target": "int64", "method": "object",
               "Y": "float64", "flat_map": "bool"}
SOFT = "soft"
DELETION_AUC = "deletion_auc"
INSERTION_AUC = "insertion_auc"


def top(k: int) -> str:
    """The tag of the top-k% mask."""
    return f"top{k}"


def score(tag: str) -> str:
    """O: the target's probability on the image masked by ``tag``'s mask."""
    return f"O_{tag}"


def drop(tag: str) -> str:
    """Average Drop's per-image term for ``tag``'s mask."""
    return f"drop_{tag}"


def increase(tag: str) -> str:
    """% Increase's per-image term for ``tag``'s mask."""
    return f"increase_{tag}"


def gain(tag: str) -> str:
    """Average Gain's per-image term for ``tag``'s mask."""
    return f"gain_{tag}"


def agree(k: int) -> str:
    """Top-1 agreement (0 or 100) on the top-k% image."""
    return f"agree_{top(k)}"


def deletion(step: int) -> str:
    """Point ``step`` of the deletion curve."""
    return f"del_{step}"


def insertion(step: int) -> str:
    """Point ``step`` of the insertion curve."""
    return f"ins_{step}"


#: Table 4's candidate readings of the top-k% masks (the paper does not say which one its Table 4
#: shows): column prefix (``readout(prefix, k)``) -> label. Average Gain (``gain_top<k>``) is
#: shown too but is no candidate: the paper predates it.
READOUTS = {"O_top": "mean O (%)", "drop_top": "Average Drop (%)",
            "increase_top": "% Increase", "agree_top": "top-1 agreement (%)"}


def readout_scale(prefix: str) -> float:
    """Tables show a read-out times this: probabilities (``O_top``) as percentages."""
    return 100.0 if prefix == "O_top" else 1.0


def readout(prefix: str, k: int) -> str:
    """The column of read-out ``prefix`` (a key of :data:`READOUTS`) at k%."""
    if prefix not in READOUTS:
        raise ValueError(f"unknown read-out {prefix!r}; expected one of {list(READOUTS)}")
    return f"{prefix}{k}"


@dataclass(frozen=True)
class RowSchema:
    """The columns of a run's rows, ``{column: dtype}`` in the order the rows hold them (made by
    :attr:`paperlib.metrics.MetricConfig.row_schema` from the read-outs' records)."""

    dtypes: Mapping[str, str] = field(default_factory=dict)

    def columns(self) -> dict[str, str]:
        """``{column: dtype}`` in the order the rows hold them."""
        return dict(self.dtypes)

    def validate(self, frame: pd.DataFrame, where: str = "rows") -> pd.DataFrame:
        """``frame`` if it has every column with a compatible type, else a ``ValueError``."""
        cols = self.columns()
        missing = [c for c in cols if c not in frame.columns]
        if missing:
            raise ValueError(f"{where}: missing column(s) {missing[:8]}"
                             f"{' ...' if len(missing) > 8 else ''}; expected {list(cols)[:8]} ...")
        for c, dtype in cols.items():
            kind = frame[c].dtype.kind
            ok = {"object": kind in "OUS", "int64": kind in "iu", "bool": kind == "b",
                  "float64": kind in "fiu"}[dtype]
            if len(frame) and not ok:
                raise ValueError(f"{where}: column {c!r} has dtype {frame[c].dtype}, "
                                 f"expected {dtype}")
        return frame

