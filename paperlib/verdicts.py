"""The paper's claims and their verdicts, torch-free: the headline claim, the verdicts' display
forms, and the two ways the kit reads a claim check (:func:`tally_verdicts`, :func:`claim_holds`).

:func:`paperlib.tables.claim_check` writes the verdicts; the report (:mod:`paperlib.report`), the
claim matrix and the README read them through this module, so that ``make readme`` needs no torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

__all__ = ["ALPHA", "HEADLINE", "VERDICTS", "claim_holds", "tally_verdicts"]

#: Significance level of the claim verdicts (Holm-adjusted p below it: significant).
ALPHA = 0.05

#: The paper's headline claim: Table 3's two metrics, by the labels of the soft-map read-out's
#: claim columns (:class:`paperlib.metrics.SoftMap`; a test checks they agree). The claim
#: directions themselves are the read-out records' (:data:`paperlib.tables.CLAIMS`).
HEADLINE = ("Average Drop", "% Increase")
#: Verdicts in display order, with their short forms.
VERDICTS = {"better": "better", "no significant difference": "n.s.", "worse": "worse"}


def tally_verdicts(verdicts: pd.Series) -> str:
    """``better x2, n.s. x1, worse x2``: how often each verdict occurs (missing ones skipped;
    ``""`` when there is none)."""
    counts = verdicts.dropna().value_counts()
    return ", ".join(f"{short} x{counts[v]}" for v, short in VERDICTS.items() if v in counts)


def claim_holds(claims: pd.DataFrame, metrics: Sequence[str] = HEADLINE) -> pd.Series:
    """Per variant of a :func:`paperlib.tables.claim_check` frame (in order of appearance): does
    the paper's claim hold, i.e. is the variant *better* than every baseline of the frame on every
    one of ``metrics`` that the frame holds, with no comparison missing?"""
    present = [m for m in metrics if m in set(claims["metric"])]
    sub = claims[claims["metric"].isin(present)]
    need = len(present) * claims["baseline"].nunique()
    ok = sub.groupby("variant", sort=False)["verdict"].agg(
        lambda v: len(v) == need and bool((v == "better").all()))
    return ok.reindex(list(dict.fromkeys(claims["variant"])), fill_value=False).astype(bool)
