"""Table cells as text: ``mean [lo, hi]`` from a table's ``col`` / ``col_lo`` / ``col_hi`` columns
(torch-free: the tables and the report both format cells with it)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from pandas.io.formats.style import Styler

__all__ = ["formatted", "styled"]

#: How a notebook's tables render: intervals on one line, numbers right-aligned, the caption on top.
TABLE_STYLES = [
    {"selector": "td, th", "props": "white-space: nowrap; text-align: right; padding: 0.1em 0.6em"},
    {"selector": "td:first-child, th:first-child", "props": "text-align: left"},
    {"selector": "caption", "props": "caption-side: top; text-align: left; font-weight: bold; "
                                     "padding-bottom: 0.3em"},
]


def formatted(table: pd.DataFrame, digits: int = 2) -> pd.DataFrame:
    """``col`` + ``col_lo`` + ``col_hi`` -> one ``mean [lo, hi]`` string column; others kept."""
    out = {}
    cols = list(table.columns)
    for c in cols:
        if c.endswith("_lo") or c.endswith("_hi"):
            continue
        if f"{c}_lo" in cols and f"{c}_hi" in cols:
            out[c] = ["n/a" if pd.isna(v) else f"{v:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"
                      for v, lo, hi in zip(table[c], table[f"{c}_lo"], table[f"{c}_hi"])]
        elif c.startswith("paper_"):
            out[c] = ["n/a" if v is None or (isinstance(v, float) and np.isnan(v))
                      else f"{v:.{digits}f}" for v in table[c]]
        else:
            out[c] = ["" if (isinstance(v, float) and np.isnan(v)) else v for v in table[c]]
    return pd.DataFrame(out)


def styled(table: pd.DataFrame, caption: str = "", digits: int = 2,
           name: str = "table") -> Styler:
    """A table as a notebook shows it: :func:`formatted` cells (``mean [lo, hi]``) in an HTML
    table (pandas ``Styler``) without the index, each cell on one line, ``caption`` on top.
    ``name`` fixes the element ids, so that a notebook's saved output is the same on every run."""
    from pandas.io.formats.style import Styler  # jinja2, imported when a table is shown

    return (Styler(formatted(table, digits), uuid=name, cell_ids=False)
            .hide(axis="index").set_caption(caption).set_table_styles(TABLE_STYLES))
