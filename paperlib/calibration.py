"""The kit's numbers beside other papers' published cells, under the matching protocol.

Published Average Drop / % Increase / Average Gain depend on the protocol (which image is masked:
the [0, 1] image, "black" fill, or the normalised tensor, "normalised"; which class is explained)
and on the black box. :func:`kit_cells` gives the kit's Table-3 style cells per (method, fill,
target) from the main run's rows and the protocol study's rows (:mod:`paperlib.protocol`);
:func:`calibration_table` puts them beside each literature cell
(:func:`paperlib.literature.literature_cells`) whose method and protocol the kit ran. The kit's
black box is not the papers' (``model_differs``): the comparison calibrates the protocol's effect
(in the cells quoted from Zhang et al. 2024, black vs normalised fill moves Grad-CAM's
Average Drop on ResNet-50 from 12.2 to 36.4), not the numbers themselves.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from . import schema

__all__ = ["CALIBRATION_COLUMNS", "DEFAULT_TARGET", "GAIN_SOFT", "KIT_COLUMNS", "MAIN_PROTOCOL",
           "NO_KIT_RUN", "calibration_table", "kit_cells"]

#: Average Gain's per-image column of the soft map (optional: absent from older rows).
GAIN_SOFT = schema.gain(schema.SOFT)
#: The protocol of the kit's main run: (fill, target).
MAIN_PROTOCOL = ("black", "predicted")
#: The kit's target for a cell whose paper does not state its target.
DEFAULT_TARGET = "predicted"
#: The kit's fill for a cell whose paper does not state its fill (the main run's).
DEFAULT_FILL = "black"
NOT_STATED = "not stated"
NO_KIT_RUN = "no kit run"
#: The columns of :func:`kit_cells` (``avg_gain`` may be absent or NaN in a kit frame).
KIT_COLUMNS = ("method", "fill", "target", "n_images", "avg_drop", "increase", "avg_gain")
CALIBRATION_COLUMNS = ("source", "table", "model", "method", "fill", "target", "avg_drop",
                       "increase", "avg_gain", "kit_avg_drop", "kit_increase", "kit_avg_gain",
                       "kit_model", "matched_protocol", "model_differs")


def _means(rows: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    drop, inc = schema.drop(schema.SOFT), schema.increase(schema.SOFT)
    missing = [c for c in ["method", drop, inc] + keys if c not in rows.columns]
    if missing:
        raise ValueError(f"rows lack column(s) {missing}; expected per-image rows with "
                         f"{['method', drop, inc]}")
    columns = {drop: "avg_drop", inc: "increase"}
    if GAIN_SOFT in rows.columns:
        columns[GAIN_SOFT] = "avg_gain"
    grouped = rows.groupby(["method"] + keys, sort=False)
    out = grouped[list(columns)].mean().rename(columns=columns)
    out["n_images"] = grouped.size()
    return out.reset_index()


def kit_cells(main_rows: pd.DataFrame | None, protocol_rows: pd.DataFrame | None = None
              ) -> pd.DataFrame:
    """The kit's cells per (method, fill, target): means of ``drop_soft``, ``increase_soft`` and
    ``gain_soft`` (NaN where the rows lack it) over images, with ``n_images``.

    ``main_rows`` (the main run: fill black, target predicted) and ``protocol_rows``
    (:func:`paperlib.protocol.run_protocol`'s, with ``fill`` and ``target_mode`` columns) may each
    be ``None``; a (method, fill, target) in both comes from ``main_rows``.
    """
    parts = []
    if main_rows is not None and len(main_rows):
        main = _means(main_rows, [])
        parts.append(main.assign(fill=MAIN_PROTOCOL[0], target=MAIN_PROTOCOL[1]))
    if protocol_rows is not None and len(protocol_rows):
        proto = _means(protocol_rows, ["fill", "target_mode"]).rename(
            columns={"target_mode": "target"})
        parts.append(proto)
    if not parts:
        return pd.DataFrame(columns=list(KIT_COLUMNS))
    kit = pd.concat(parts, ignore_index=True).drop_duplicates(["method", "fill", "target"])
    if "avg_gain" not in kit.columns:
        kit["avg_gain"] = np.nan
    return kit[list(KIT_COLUMNS)].reset_index(drop=True)


def _model_key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def calibration_table(cells: pd.DataFrame, kit: pd.DataFrame,
                      kit_model: str = "EfficientNet-Lite0") -> pd.DataFrame:
    """Each literature cell (:func:`paperlib.literature.literature_cells`) with the kit's cell of
    the same method under the matching protocol (:data:`CALIBRATION_COLUMNS`).

    ``kit``: one row per (method, fill, target) with ``avg_drop``, ``increase`` and optionally
    ``avg_gain`` (e.g. :func:`kit_cells`). Matching: the same method and fill, and the cell's
    target; a cell whose paper does not state its target is matched to the kit's
    :data:`DEFAULT_TARGET` ("predicted"), one that does not state its fill to the main run's
    :data:`DEFAULT_FILL` ("black"), and ``matched_protocol`` says so. A cell with no kit match
    keeps NaN and says :data:`NO_KIT_RUN`. ``model_differs``: the published model is not
    ``kit_model`` (compared ignoring case and punctuation).
    """
    need = ["source", "table", "model", "method", "fill", "target", "avg_drop", "increase"]
    missing = [c for c in need if c not in cells.columns]
    if missing:
        raise ValueError(f"literature cells lack column(s) {missing}; expected "
                         "literature_cells()'s columns")
    missing = [c for c in ("method", "fill", "target", "avg_drop", "increase")
               if c not in kit.columns]
    if missing:
        raise ValueError(f"kit cells lack column(s) {missing}; expected {list(KIT_COLUMNS)}")
    dup = kit.duplicated(["method", "fill", "target"])
    if dup.any():
        first = kit[dup].iloc[0]
        raise ValueError(f"kit has {int(dup.sum())} duplicate (method, fill, target) cell(s), "
                         f"e.g. {(first['method'], first['fill'], first['target'])}; expected one "
                         "per protocol")
    lookup = {(r["method"], r["fill"], r["target"]): r for _, r in kit.iterrows()}
    rows = []
    for _, cell in cells.iterrows():
        fill = DEFAULT_FILL if cell["fill"] == NOT_STATED else cell["fill"]
        target = DEFAULT_TARGET if cell["target"] == NOT_STATED else cell["target"]
        match = lookup.get((cell["method"], fill, target))
        if match is None:
            protocol = NO_KIT_RUN
        else:
            protocol = f"{fill} / {target}"
            assumed = [f"{what} not stated: kit's {value}" for what, value, stated in
                       (("fill", fill, cell["fill"]), ("target", target, cell["target"]))
                       if stated == NOT_STATED]
            if assumed:
                protocol += f" ({'; '.join(assumed)})"

        def kit_value(column: str, match: pd.Series | None = match) -> float:
            if match is None or column not in match.index:
                return float("nan")
            return float(match[column])

        rows.append({"source": cell["source"], "table": cell["table"], "model": cell["model"],
                     "method": cell["method"], "fill": cell["fill"], "target": cell["target"],
                     "avg_drop": float(cell["avg_drop"]), "increase": float(cell["increase"]),
                     "avg_gain": float(cell["avg_gain"]) if "avg_gain" in cell.index
                     else float("nan"),
                     "kit_avg_drop": kit_value("avg_drop"), "kit_increase": kit_value("increase"),
                     "kit_avg_gain": kit_value("avg_gain"), "kit_model": kit_model,
                     "matched_protocol": protocol,
                     "model_differs": _model_key(cell["model"]) != _model_key(kit_model)})
    return pd.DataFrame(rows, columns=list(CALIBRATION_COLUMNS))
