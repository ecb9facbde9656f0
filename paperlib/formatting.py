"""Table cells as text: ``mean [lo, hi]`` from a table's ``col`` / ``col_lo`` / ``col_hi`` columns
(torch-free: the tables and the report both format cells with it)."""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["formatted"]


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
