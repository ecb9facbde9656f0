"""The claim matrix: the builder on hand-made claim checks, the earlier layer, the checkpoints."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

import paperlib
from paperlib import attention, matrix
from paperlib.attention_training import reference_saliency
from paperlib.matrix import LAYER_ROLES, layer_for
from paperlib.models import ZOO

AD, INC, DEL = "Average Drop", "% Increase", "deletion AUC"


def _claims(verdicts: dict[tuple[str, str, str], str]) -> pd.DataFrame:
    return pd.DataFrame([{"variant": v, "baseline": b, "metric": m, "variant - baseline": 0.0,
                          "p (Holm)": 0.01, "verdict": verdict}
                         for (v, b, m), verdict in verdicts.items()])


@pytest.fixture()
def hand_made() -> dict[str, pd.DataFrame]:
    """Two cells, two variants, two baselines: `per-image` beats both baselines on both headline
    metrics in cell A only; `fixed` never does."""
    a = {("per-image", "gc", AD): "better", ("per-image", "gc", INC): "better",
         ("per-image", "gcpp", AD): "better", ("per-image", "gcpp", INC): "better",
         ("per-image", "gc", DEL): "worse",
         ("fixed", "gc", AD): "worse", ("fixed", "gc", INC): "no significant difference",
         ("fixed", "gcpp", AD): "worse", ("fixed", "gcpp", INC): "better"}
    b = dict(a)
    b[("per-image", "gcpp", INC)] = "no significant difference"
    del b[("per-image", "gc", DEL)]
    return {"A @ last": _claims(a), "B @ earlier": _claims(b)}


def test_claim_matrix_builds_one_row_per_comparison_and_a_column_per_cell(hand_made):
    m = matrix.claim_matrix(hand_made)
    assert list(m.columns) == ["variant", "baseline", "metric", "A @ last", "B @ earlier"]
    assert len(m) == 9
    row = m[(m["variant"] == "per-image") & (m["baseline"] == "gcpp") & (m["metric"] == INC)]
    assert row[["A @ last", "B @ earlier"]].values.tolist() == [
        ["better", "no significant difference"]]
    missing = m[(m["variant"] == "per-image") & (m["metric"] == DEL)]
    assert missing["A @ last"].item() == "worse" and pd.isna(missing["B @ earlier"].item())


def test_holds_tally_and_sentence_give_the_expected_verdicts(hand_made):
    m = matrix.claim_matrix(hand_made)
    h = matrix.holds(m)
    assert h.loc["per-image"].tolist() == [True, False]
    assert h.loc["fixed"].tolist() == [False, False]
    t = matrix.tally_table(m).set_index("variant")
    assert t.loc["fixed", "A @ last"] == "AD worse x2; %Inc better x1, n.s. x1"
    assert t.loc["per-image", "A @ last"] == "AD better x2; %Inc better x2"
    assert t.loc["per-image", "B @ earlier"] == "AD better x2; %Inc better x1, n.s. x1"
    text = matrix.matrix_sentence(m)
    assert "holds for `per-image` in A @ last; for no other variant in any cell." in text
    # fixed wins one of its 4 headline comparisons (% Increase vs gcpp) in both cells
    assert text.endswith("of those in one cell): `fixed` 1 of 4 in both cells.")
    everywhere = matrix.claim_matrix({"A @ last": hand_made["A @ last"],
                                      "C @ last": hand_made["A @ last"],
                                      "B @ earlier": hand_made["B @ earlier"]})
    assert ("`per-image` in 2 of 3 cells (all but B @ earlier)"
            in matrix.matrix_sentence(everywhere))
    nowhere = matrix.claim_matrix({"A @ last": _claims({("fixed", "gc", AD): "worse",
                                                        ("fixed", "gc", INC): "worse"})})
    assert matrix.matrix_sentence(nowhere).endswith("`fixed` none in any cell.")
    # nowhere: the sentence says the verdict does not depend on black box or layer
    none = matrix.claim_matrix({"A @ last": _claims({("fixed", "gc", AD): "worse",
                                                     ("fixed", "gc", INC): "better"})})
    assert "In none of the 1 cell (A @ last)" in matrix.matrix_sentence(none)
    assert matrix.matrix_sentence(matrix.claim_matrix({})) .startswith("No cell")


def test_the_claim_needs_every_headline_comparison(hand_made):
    """A variant better in every comparison it has, but missing one headline comparison, does not
    meet the claim (one definition, verdicts.claim_holds, for the matrix and the README)."""
    from paperlib.verdicts import claim_holds

    a = hand_made["A @ last"]
    assert claim_holds(a).to_dict() == {"per-image": True, "fixed": False}
    gap = a[~((a["variant"] == "per-image") & (a["baseline"] == "gcpp") & (a["metric"] == INC))]
    assert claim_holds(gap).to_dict() == {"per-image": False, "fixed": False}
    assert matrix.holds(matrix.claim_matrix({"A @ last": gap})).loc["per-image"].tolist() == [False]


def test_cells_and_layer_roles():
    cs = matrix.cells()
    assert len(cs) == 6 and cs[0].name == "efficientnet_lite0 @ last"
    assert cs[1].target_layer == "blocks.6" and cs[0].target_layer is None
    assert LAYER_ROLES == ("last", "earlier")
    assert layer_for("resnet50", "earlier") == ZOO["resnet50"].earlier_layer == "layer3"
    with pytest.raises(ValueError, match="unknown black box or layer role"):
        matrix.cells(["efficientnet_lite9"])
    with pytest.raises(ValueError, match="unknown layer role 'middle'"):
        layer_for("efficientnet_lite0", "middle")
    assert "attention-trained" in matrix.matrix_methods()
    assert "scorecam" not in matrix.matrix_methods()


def test_earlier_layer_separates_the_gradient_methods(lite0, lite0_batch):
    """At bn2 Grad-CAM = XGrad-CAM = HiResCAM exactly; at blocks.6 the gradient varies in space
    and they differ on real images."""
    x, last = lite0_batch.images[:2], lite0
    early = paperlib.load_model("efficientnet_lite0", device="cpu",
                                target_layer=ZOO["efficientnet_lite0"].earlier_layer)
    methods = ["gradcam", "xgradcam", "hirescam"]
    a, b = paperlib.explain(last, x, methods), paperlib.explain(early, x, methods)
    assert torch.allclose(a["gradcam"], a["xgradcam"], atol=1e-5)
    assert torch.allclose(a["gradcam"], a["hirescam"], atol=1e-5)
    for other in ("xgradcam", "hirescam"):
        diff = (b["gradcam"] - b[other]).abs().flatten(1).amax(dim=1)
        assert (diff > 0.05).all(), (other, diff)


@pytest.mark.parametrize("path", sorted(attention.CHECKPOINT_DIR.glob("*.pt")),
                         ids=lambda p: p.stem)
def test_committed_checkpoint_reproduces_its_stored_maps(path, sample_dataset):
    """Each committed checkpoint loads for its black box and layer and gives the saliency its
    record stored for two held-out training images."""
    record = json.loads(path.with_suffix(".json").read_text())
    layer = record["target_layer"].removeprefix("net.")
    bb = paperlib.load_model(record["model"], device="cpu", target_layer=layer)
    assert attention.checkpoint_path(bb) == path
    module, config = attention.load_trained(bb)
    assert config["l_area"] == record["l_area"] and module.channels == record["channels"]
    ref = record["reference"]
    got = reference_saliency(bb, sample_dataset, ref["files"], module)
    want = torch.tensor(ref["saliency"]).view_as(got)
    assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()


def test_write_matrix_reads_finished_cells_and_writes_table_sentence_figure(tmp_path, hand_made):
    order = [matrix.Cell("efficientnet_lite0", "last"), matrix.Cell("efficientnet_lite1", "last")]
    folder = tmp_path / "matrix" / order[0].folder
    folder.mkdir(parents=True)
    hand_made["A @ last"].to_csv(folder / "claims.csv", index=False)  # lite1: not run yet
    m = matrix.write_matrix(tmp_path, order, tmp_path / "figures")
    assert list(m.columns)[3:] == ["efficientnet_lite0 @ last"]
    assert (tmp_path / "figures" / "claim_matrix.png").is_file()
    text = (tmp_path / "claim_matrix_verdict.txt").read_text()
    assert "holds for `per-image` in efficientnet_lite0 @ last" in text
    from paperlib import readme

    block = readme.blocks(tmp_path)["matrix"]
    assert block.startswith(text.strip()) and "| per-image | AD better x2; %Inc better x2 " in block


def test_record_cell_merges_entries_of_several_processes(tmp_path):
    from concurrent.futures import ProcessPoolExecutor

    path = tmp_path / "matrix" / "cells.json"
    names = [f"m{i} @ last" for i in range(8)]
    with ProcessPoolExecutor(4) as pool:
        list(pool.map(matrix.record_cell, [path] * 8,
                      [{"cell": n, "compute_seconds": 1.0} for n in names]))
    assert sorted(json.loads(path.read_text())) == sorted(names)
