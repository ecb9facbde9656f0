"""Reporting helpers on hand-made inputs: the sanity summary, notebook sanitising, Table 2."""

import math

import nbformat
import pandas as pd
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from paperlib import model_selection, sanity
from paperlib.saved_notebook import sanitise

# --------------------------------------------------------------------------------------------
# sanity.summarize
# --------------------------------------------------------------------------------------------


def _sanity_rows(spearman):
    """``spearman``: {method: {step: [per-image values]}} -> long rows like the cascade's."""
    rows = []
    for method, steps in spearman.items():
        for step, values in steps.items():
            for image, rho in enumerate(values):
                rows.append({"step": step, "randomized": f"block{step}", "method": method,
                             "image": image, "spearman": rho})
    return pd.DataFrame(rows)


def test_summarize_means_and_flag_threshold():
    t = sanity.FLAG_THRESHOLD
    assert t == 0.5
    rows = _sanity_rows({
        # last-step mean (0.25 + 0.75) / 2 = 0.5: exactly at the threshold -> not flagged
        "at": {1: [1.0, 0.5], 2: [0.25, 0.75]},
        # last-step mean (0.5 + 1.0) / 2 = 0.75 > 0.5 -> flagged
        "above": {1: [1.0, 1.0], 2: [0.5, 1.0]},
        # last-step mean (0.0 + 0.5) / 2 = 0.25 -> not flagged (step 1 high does not matter)
        "below": {1: [0.875, 0.875], 2: [0.0, 0.5]},
    })
    out = sanity.summarize(rows.sample(frac=1.0, random_state=3))
    assert list(out.columns) == ["method", "step1", "step2", "flagged"]
    out = out.set_index("method")
    assert sorted(out.index) == ["above", "at", "below"]
    assert out.loc["at", "step1"] == 0.75 and out.loc["at", "step2"] == 0.5
    assert out.loc["above", "step1"] == 1.0 and out.loc["above", "step2"] == 0.75
    assert out.loc["below", "step1"] == 0.875 and out.loc["below", "step2"] == 0.25
    assert out["flagged"].to_dict() == {"above": True, "at": False, "below": False}


def test_summarize_flags_on_the_numerically_last_step():
    # steps 1, 2, 10: the last step is 10 (not "2" as a string sort would give)
    rows = _sanity_rows({"m": {1: [0.0], 2: [0.0], 10: [0.625]},
                         "n": {1: [0.875], 2: [0.875], 10: [0.125]}})
    out = sanity.summarize(rows).set_index("method")
    assert list(out.columns) == ["step1", "step2", "step10", "flagged"]
    assert out["flagged"].to_dict() == {"m": True, "n": False}


# --------------------------------------------------------------------------------------------
# saved_notebook.sanitise
# --------------------------------------------------------------------------------------------

EXEC_META = {"iopub.execute_input": "2024-01-01T00:00:00.000000Z",
             "shell.execute_reply": "2024-01-01T00:00:01.000000Z"}
PM_META = {"duration": 1.5, "exception": False, "status": "completed"}


def test_sanitise_renumbers_and_drops_volatile_parts(tmp_path):
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "paperlib", "display_name": "paperlib",
                                 "language": "python"}
    nb.metadata["papermill"] = {"duration": 12.0, "parameters": {"n_images": 4}}
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    md = new_markdown_cell("# Title", metadata={"tags": ["intro"]})
    first = new_code_cell("print('hi')", execution_count=7, outputs=[
        new_output("stream", name="stderr", text="100%|####| 4/4\n"),
        new_output("stream", name="stdout", text="hi\n"),
    ], metadata={"papermill": dict(PM_META), "execution": dict(EXEC_META), "tags": ["keep"]})
    md2 = new_markdown_cell("Some *text*.")
    second = new_code_cell("42", execution_count=9, outputs=[
        new_output("execute_result", data={"text/plain": "42"}, execution_count=9),
    ], metadata={"papermill": dict(PM_META), "execution": dict(EXEC_META)})
    third = new_code_cell("show()", execution_count=None, outputs=[
        new_output("display_data", data={"text/plain": "<figure>"}),
    ])
    nb.cells = [md, first, md2, second, third]
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)

    sanitise(path)
    out = nbformat.read(path, as_version=4)
    nbformat.validate(out)
    assert "papermill" not in out.metadata and "widgets" not in out.metadata
    assert out.metadata["kernelspec"]["name"] == "paperlib"
    assert [c.cell_type for c in out.cells] == ["markdown", "code", "markdown", "code", "code"]
    # markdown cells untouched
    assert out.cells[0].source == "# Title" and out.cells[0].metadata == {"tags": ["intro"]}
    assert out.cells[2].source == "Some *text*." and "execution_count" not in out.cells[2]
    # code cells renumbered 1, 2, 3 (7 and 9 before; the unrun cell gets a count too)
    assert [c.execution_count for c in out.cells if c.cell_type == "code"] == [1, 2, 3]
    c1, c2, c3 = out.cells[1], out.cells[3], out.cells[4]
    # stderr dropped, stdout kept
    assert [(o.output_type, o.name, o.text) for o in c1.outputs] == [("stream", "stdout", "hi\n")]
    # papermill/execution metadata gone, other metadata kept
    assert dict(c1.metadata) == {"tags": ["keep"]}
    assert dict(c2.metadata) == {}
    # execute_result renumbered with its cell
    assert len(c2.outputs) == 1 and c2.outputs[0].output_type == "execute_result"
    assert c2.outputs[0].execution_count == 2
    assert c2.outputs[0].data == {"text/plain": "42"}
    # display_data has no execution count and stays as it was
    assert len(c3.outputs) == 1 and c3.outputs[0].output_type == "display_data"
    assert "execution_count" not in c3.outputs[0]
    assert [c.source for c in out.cells] == ["# Title", "print('hi')", "Some *text*.", "42",
                                             "show()"]


# --------------------------------------------------------------------------------------------
# model_selection.table2
# --------------------------------------------------------------------------------------------

def _acc_rows(model, top1, top5):
    return pd.DataFrame({"file": [f"f{i}.JPEG" for i in range(len(top1))], "model": model,
                         "label": list(range(len(top1))), "pred": list(range(len(top1))),
                         "top1": top1, "top5": top5})


UNAVAILABLE_REASON = ("resnet50: pretrained ImageNet weights not found and downloads are off. "
                      "To use resnet50: put the torchvision file 'resnet50-11ad3fa6.pth' in "
                      "/home/u/.cache/torch/hub/checkpoints (the torch hub cache; TORCH_HOME "
                      "moves it), or pass weights='path/to/resnet50-11ad3fa6.pth'")


def test_table2_exact_accuracies_and_unavailable_row():
    rows = {
        # top-1: 2 of 4 = 50%; top-5: 3 of 4 = 75%; top-5 error 25%
        "lite_a": _acc_rows("lite_a", [True, False, True, False], [True, True, True, False]),
        # all right: 100%, 100%, error 0%
        "lite_b": _acc_rows("lite_b", [True, True, True, True], [True, True, True, True]),
    }
    t2 = model_selection.table2(rows, {"resnet50": UNAVAILABLE_REASON}, seed=0)
    assert list(t2.columns) == ["model", "n_images", "available",
                                "top1_acc", "top1_acc_lo", "top1_acc_hi",
                                "top5_acc", "top5_acc_lo", "top5_acc_hi",
                                "top5_err", "top5_err_lo", "top5_err_hi",
                                "paper_mean_accuracy", "paper_top5_err", "note"]
    assert t2["model"].tolist() == ["lite_a", "lite_b", "resnet50"]
    assert t2["n_images"].tolist() == [4, 4, 0]
    assert t2["available"].tolist() == [True, True, False]
    t = t2.set_index("model")
    assert (t.loc["lite_a", "top1_acc"], t.loc["lite_a", "top5_acc"],
            t.loc["lite_a", "top5_err"]) == (50.0, 75.0, 25.0)
    assert (t.loc["lite_b", "top1_acc"], t.loc["lite_b", "top5_acc"],
            t.loc["lite_b", "top5_err"]) == (100.0, 100.0, 0.0)
    # constant per-image values: zero-width intervals
    assert (t.loc["lite_b", "top1_acc_lo"], t.loc["lite_b", "top1_acc_hi"]) == (100.0, 100.0)
    assert (t.loc["lite_b", "top5_err_lo"], t.loc["lite_b", "top5_err_hi"]) == (0.0, 0.0)
    assert t.loc["lite_a", "top1_acc_lo"] <= 50.0 <= t.loc["lite_a", "top1_acc_hi"]
    assert t.loc["lite_a", "top1_acc_lo"] < t.loc["lite_a", "top1_acc_hi"]
    # the unavailable model: the reason without the model prefix and the instructions
    assert t.loc["resnet50", "note"] == ("pretrained ImageNet weights not found and downloads "
                                         "are off")
    assert all(math.isnan(t.loc["resnet50", c]) for c in ("top1_acc", "top5_acc", "top5_err"))
    # the paper's Table 2 beside the model it has (resnet50), nothing beside the others
    assert t.loc["resnet50", "paper_mean_accuracy"] == pytest.approx(94.96)
    assert t.loc["resnet50", "paper_top5_err"] == 5.38
    paper_cols = t[["paper_mean_accuracy", "paper_top5_err"]]
    assert paper_cols.loc[["lite_a", "lite_b"]].isna().all().all()
    assert t["note"].iloc[:2].isna().all()


def test_table2_accepts_0_1_correctness():
    # correctness stored as 0/1 integers (as a cache round trip might give): the same numbers
    rows = {"m": _acc_rows("m", [1, 0, 0, 0], [1, 1, 0, 0])}
    t2 = model_selection.table2(rows)
    assert (t2["top1_acc"].iloc[0], t2["top5_acc"].iloc[0], t2["top5_err"].iloc[0]) == (
        25.0, 50.0, 50.0)
    assert "note" not in t2.columns


def test_table2_without_candidates_is_empty():
    assert model_selection.table2({}).empty
    only = model_selection.table2({}, {"vgg19": "vgg19: weights file /x/y.pth does not exist"})
    assert only["model"].tolist() == ["vgg19"]
    assert only["note"].tolist() == ["weights file /x/y.pth does not exist"]
    assert only["available"].tolist() == [False]
    assert "top1_acc" not in only.columns
