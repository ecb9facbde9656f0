"""Other papers' published Average Drop / % Increase / Average Gain cells, for calibration only.

The kit's own reference numbers are An & Joe's (:mod:`paperlib.paper_reference`); this module holds
the cells other papers publish for the same metrics on ImageNet, so the kit's numbers can be put
beside them under the matching protocol (:func:`paperlib.calibration.calibration_table`). The cells
live in ``literature_cells.csv`` beside this module (read with :mod:`importlib.resources`), one row
per published cell; every number is quoted, never computed, and its ``note`` says whether it was
re-verified against the paper.

Columns (:data:`COLUMNS`):

=========  ========================================================================================
source     short citation (a key of :data:`SOURCES`)
table      the paper's table ("Table 1"), or "not stated"
model      the published black box ("ResNet-50", "VGG-16")
data       the images ("ImageNet val, 2000 images" when the paper says how many, else
           "ImageNet val")
fill       "black" (the [0, 1] image masked), "normalised" (the normalised tensor masked), or
           "not stated"
target     the explained class: "predicted", "label" or "not stated"
method     the kit's method name (one of :data:`METHOD_NAMES`)
avg_drop   Average Drop (%, lower is better); empty when not published
increase   % Increase (higher is better); empty when not published
avg_gain   Average Gain (%, higher is better; Zhang et al. 2024); empty when not published
note       where the number comes from and anything the paper says about it
=========  ========================================================================================
"""

from __future__ import annotations

import csv
import io
from importlib import resources

import pandas as pd

__all__ = ["COLUMNS", "FILL_VALUES", "LITERATURE_FILE", "METHOD_NAMES", "NOT_STATED", "SOURCES",
           "TARGET_VALUES", "literature_cells"]

#: The CSV of published cells, a data file of the package.
LITERATURE_FILE = "literature_cells.csv"

#: Its columns, in order.
COLUMNS = ("source", "table", "model", "data", "fill", "target", "method", "avg_drop", "increase",
           "avg_gain", "note")
NUMBER_COLUMNS = ("avg_drop", "increase", "avg_gain")
NOT_STATED = "not stated"
FILL_VALUES = ("black", "normalised", NOT_STATED)
TARGET_VALUES = ("predicted", "label", NOT_STATED)
#: The kit's names of the methods the literature cells report.
METHOD_NAMES = ("gradcam", "gradcampp", "xgradcam", "hirescam", "scorecam", "fakecam", "opticam")

#: Each source: what it is and what its cells are.
SOURCES: dict[str, str] = {
    "Zhang et al. 2024 (Opti-CAM), CVIU 248": (
        "Opti-CAM: Optimizing saliency maps for interpretability. Introduces Opti-CAM and "
        "Average Gain; Table 1 masks the normalised input (ResNet-50, VGG-16), Table A.14 the "
        "image without normalisation (black fill). Reports Grad-CAM = XGrad-CAM = HiResCAM on "
        "ResNet-50 to the last digit."),
    "Chattopadhyay et al. 2018 (Grad-CAM++), WACV": (
        "Grad-CAM++: Generalized gradient-based visual explanations for deep convolutional "
        "networks. Defines Average Drop and % Increase in Confidence; Table 1 on VGG-16."),
    "Wang et al. 2020 (Score-CAM), CVPRW": (
        "Score-CAM: Score-weighted visual explanations for convolutional neural networks. Table 1 "
        "reports Average Drop / Increase on VGG-16."),
    "Poppi et al. 2021, CVPRW": (
        "Revisiting the evaluation of class activation mapping for explainability: a novel metric "
        "and experimental analysis. Introduces Fake-CAM (a near-constant map) that scores almost "
        "perfectly on Average Drop, showing the metric can be gamed; the whole ImageNet validation "
        "set, ResNet-50."),
}


def literature_cells() -> pd.DataFrame:
    """The published cells (:data:`LITERATURE_FILE`), one row per cell, numbers as floats (NaN when
    not published). A missing or extra column, an unknown source, method, fill or target is a
    ``ValueError`` naming the file."""
    text = resources.files(__package__).joinpath(LITERATURE_FILE).read_text(encoding="utf-8")
    header = next(csv.reader(io.StringIO(text)))
    if tuple(header) != COLUMNS:
        missing = [c for c in COLUMNS if c not in header]
        extra = [c for c in header if c not in COLUMNS]
        raise ValueError(f"{LITERATURE_FILE}: columns {header} (missing {missing}, extra {extra});"
                         f" expected {list(COLUMNS)}")
    frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    for column, allowed in (("source", tuple(SOURCES)), ("method", METHOD_NAMES),
                            ("fill", FILL_VALUES), ("target", TARGET_VALUES)):
        bad = sorted(set(frame[column]) - set(allowed))
        if bad:
            raise ValueError(f"{LITERATURE_FILE}: unknown {column} value(s) {bad}; "
                             f"expected one of {list(allowed)}")
    for column in NUMBER_COLUMNS:
        try:
            frame[column] = pd.to_numeric(frame[column].where(frame[column] != ""),
                                          errors="raise").astype(float)
        except ValueError as err:
            raise ValueError(f"{LITERATURE_FILE}: column {column!r} holds a non-number ({err}); "
                             "expected numbers or empty cells") from None
    return frame
