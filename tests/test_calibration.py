"""Other papers' cells (paperlib.literature) and the kit beside them (paperlib.calibration)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from paperlib import calibration, literature
from paperlib.calibration import CALIBRATION_COLUMNS, NO_KIT_RUN, calibration_table, kit_cells
from paperlib.literature import COLUMNS, METHOD_NAMES, SOURCES, literature_cells

ALLOWED = {"gradcam", "gradcampp", "xgradcam", "hirescam", "scorecam", "fakecam", "opticam"}


def test_package_csv_loads():
    cells = literature_cells()
    assert tuple(cells.columns) == COLUMNS and len(cells) >= 10
    assert all(isinstance(m, str) and m in ALLOWED for m in cells["method"])
    assert set(METHOD_NAMES) == ALLOWED
    assert set(cells["source"]) <= set(SOURCES)
    assert set(cells["fill"]) <= {"black", "normalised", "not stated"}
    assert set(cells["target"]) <= {"predicted", "label", "not stated"}
    for c in ("avg_drop", "increase", "avg_gain"):
        assert cells[c].dtype.kind == "f"
    opti = cells[(cells["table"] == "Table 1") & (cells["model"] == "ResNet-50")
                 & (cells["method"] == "gradcam")].iloc[0]
    assert (opti["avg_drop"], opti["increase"], opti["avg_gain"]) == (12.2, 44.4, 17.6)
    # XGrad-CAM and HiResCAM reported identical to Grad-CAM on ResNet-50
    same = cells[(cells["table"] == "Table 1") & (cells["model"] == "ResNet-50")
                 & cells["method"].isin(["xgradcam", "hirescam"])]
    assert len(same) == 2 and (same["avg_drop"] == 12.2).all()
    assert same["note"].str.contains("reported identical to Grad-CAM").all()
    fake = cells[(cells["method"] == "fakecam") & (cells["table"] == "Table 1")].iloc[0]
    assert np.isnan(fake["avg_drop"]) and fake["avg_gain"] == 1.6


def test_bad_csv_columns_name_the_file(monkeypatch, tmp_path):
    class _Files:
        def __init__(self, text: str) -> None:
            self.text = text

        def joinpath(self, name: str) -> _Files:
            return self

        def read_text(self, encoding: str = "utf-8") -> str:
            return self.text

    header = ",".join(COLUMNS[:-1]) + ",extra\n"
    monkeypatch.setattr(literature.resources, "files", lambda package: _Files(header))
    with pytest.raises(ValueError, match=r"literature_cells.csv: columns .*missing \['note'\], "
                                         r"extra \['extra'\]") as err:
        literature_cells()
    assert "\n" not in str(err.value)
    row = '"Poppi et al. 2021, CVPRW",T,M,D,black,predicted,gradcam-x,1,2,,n\n'
    monkeypatch.setattr(literature.resources, "files",
                        lambda package: _Files(",".join(COLUMNS) + "\n" + row))
    with pytest.raises(ValueError, match=r"literature_cells.csv: unknown method value\(s\) "
                                         r"\['gradcam-x'\]"):
        literature_cells()


def _cells() -> pd.DataFrame:
    return pd.DataFrame([
        {"source": "S1", "table": "Table 1", "model": "ResNet-50", "fill": "normalised",
         "target": "not stated", "method": "gradcam", "avg_drop": 12.2, "increase": 44.4,
         "avg_gain": 17.6},
        {"source": "S1", "table": "Table A", "model": "ResNet-50", "fill": "black",
         "target": "label", "method": "gradcam", "avg_drop": 36.4, "increase": 27.0,
         "avg_gain": np.nan},
        {"source": "S2", "table": "Table 1", "model": "efficientnet_lite0", "fill": "black",
         "target": "not stated", "method": "opticam", "avg_drop": 2.0, "increase": 91.2,
         "avg_gain": np.nan},
        {"source": "S3", "table": "Table 2", "model": "VGG-16", "fill": "not stated",
         "target": "not stated", "method": "gradcam", "avg_drop": 46.56, "increase": 13.42,
         "avg_gain": np.nan},
    ])


KIT = pd.DataFrame([
    {"method": "gradcam", "fill": "normalised", "target": "predicted", "avg_drop": 20.0,
     "increase": 30.0, "avg_gain": 5.0},
    {"method": "gradcam", "fill": "black", "target": "label", "avg_drop": 40.0, "increase": 20.0,
     "avg_gain": np.nan},
    {"method": "gradcam", "fill": "black", "target": "predicted", "avg_drop": 41.0,
     "increase": 21.0, "avg_gain": 3.0},
    {"method": "gradcam", "fill": "normalised", "target": "label", "avg_drop": 19.0,
     "increase": 31.0, "avg_gain": 6.0},
])


def test_calibration_table_exact():
    out = calibration_table(_cells(), KIT, kit_model="EfficientNet-Lite0")
    expected = pd.DataFrame({
        "source": ["S1", "S1", "S2", "S3"],
        "table": ["Table 1", "Table A", "Table 1", "Table 2"],
        "model": ["ResNet-50", "ResNet-50", "efficientnet_lite0", "VGG-16"],
        "method": ["gradcam", "gradcam", "opticam", "gradcam"],
        "fill": ["normalised", "black", "black", "not stated"],
        "target": ["not stated", "label", "not stated", "not stated"],
        "avg_drop": [12.2, 36.4, 2.0, 46.56], "increase": [44.4, 27.0, 91.2, 13.42],
        "avg_gain": [17.6, np.nan, np.nan, np.nan],
        "kit_avg_drop": [20.0, 40.0, np.nan, 41.0], "kit_increase": [30.0, 20.0, np.nan, 21.0],
        "kit_avg_gain": [5.0, np.nan, np.nan, 3.0],
        "kit_model": ["EfficientNet-Lite0"] * 4,
        "matched_protocol": ["normalised / predicted (target not stated: kit's predicted)",
                             "black / label", NO_KIT_RUN,
                             "black / predicted (fill not stated: kit's black; target not "
                             "stated: kit's predicted)"],
        "model_differs": [True, True, False, True],
    })
    assert tuple(out.columns) == CALIBRATION_COLUMNS
    pd.testing.assert_frame_equal(out, expected)


def test_calibration_without_gain_and_errors():
    out = calibration_table(_cells(), KIT.drop(columns="avg_gain"))
    assert out["kit_avg_gain"].isna().all() and out["kit_avg_drop"].iloc[0] == 20.0
    with pytest.raises(ValueError, match=r"kit cells lack column\(s\) \['increase'\]"):
        calibration_table(_cells(), KIT.drop(columns="increase"))
    with pytest.raises(ValueError, match="duplicate \\(method, fill, target\\)"):
        calibration_table(_cells(), pd.concat([KIT, KIT.iloc[:1]]))


def test_kit_cells_from_rows_and_the_package_csv():
    main = pd.DataFrame({"file": ["f1", "f2", "f1", "f2"],
                         "method": ["gradcam", "gradcam", "opticam", "opticam"],
                         "drop_soft": [10.0, 30.0, 1.0, 3.0],
                         "increase_soft": [0.0, 100.0, 100.0, 100.0]})
    proto = pd.DataFrame({"file": ["f1", "f2", "f1", "f2", "f1", "f2"],
                          "method": ["gradcam"] * 6,
                          "fill": ["normalised", "normalised", "black", "black", "mean", "mean"],
                          "target_mode": ["predicted", "predicted", "predicted", "predicted",
                                          "label", "label"],
                          "drop_soft": [4.0, 6.0, 99.0, 99.0, 1.0, 1.0],
                          "increase_soft": [100.0, 0.0, 0.0, 0.0, 0.0, 0.0],
                          "gain_soft": [8.0, 10.0, 0.0, 0.0, 0.0, 0.0]})
    kit = kit_cells(main, proto)
    assert tuple(kit.columns) == calibration.KIT_COLUMNS
    by = kit.set_index(["method", "fill", "target"])
    assert by.loc[("gradcam", "black", "predicted"), "avg_drop"] == 20.0  # main rows win
    assert np.isnan(by.loc[("gradcam", "black", "predicted"), "avg_gain"])
    assert by.loc[("gradcam", "normalised", "predicted"), "avg_gain"] == 9.0
    assert by.loc[("gradcam", "mean", "label"), "n_images"] == 2
    assert by.loc[("opticam", "black", "predicted"), "increase"] == 100.0
    assert len(kit) == 4
    table = calibration_table(literature_cells(), kit)
    assert len(table) == len(literature_cells()) and table["model_differs"].all()
    a14 = table[(table["table"] == "Table A.14") & (table["model"] == "ResNet-50")
                & (table["method"] == "gradcam")].iloc[0]
    assert a14["kit_avg_drop"] == 20.0
    assert a14["matched_protocol"] == "black / predicted (target not stated: kit's predicted)"
    assert (table[table["method"] == "hirescam"]["matched_protocol"] == NO_KIT_RUN).all()
