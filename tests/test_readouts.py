"""A metric read-out is one record: the records reproduce the evaluation bit for bit (against a
copy of the evaluation before the records, kept here as the reference), a toy read-out
registered in one place reaches the rows, a table and the claim check, the key is derived from
the settings' fields, and a fill may be a value or a callable."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

import paperlib
from paperlib import evaluation, metrics, outputs, precision, readme, schema, tables
from paperlib.blackbox import BlackBox
from paperlib.masking import (
    blurred,
    fill_images,
    fill_key,
    keep_top,
    masked_inputs,
    n_pixels,
    pixel_ranks,
)
from paperlib.metrics import Column, MetricConfig, Readout, register_readout, unregister_readout
from paperlib.verdicts import HEADLINE, VERDICTS

# ---------------------------------------------------------------------------------------------
# The reference: evaluate_batch and image_rows as they were before the read-out records


@dataclass
class _RefJob:
    """One masked copy: image b, mask from method's map, onto base/fill images."""

    b: int
    method: str
    kind: str       # "soft" | "top" | "del" | "ins"
    param: int      # k% for "top", step t for "del"/"ins"


def _reference_evaluate_batch(black_box: BlackBox, images: torch.Tensor,
                              maps: Mapping[str, torch.Tensor],
                   targets: torch.Tensor | None = None, config: metrics.MetricConfig | None = None,
                   clean_logits: torch.Tensor | None = None) -> metrics.BatchScores:
    """evaluate_batch before the read-out records, kept verbatim (the reference): every metric
    for every method's maps on one batch, in chunked forwards of masked copies.

    Returns per method (column names from :mod:`paperlib.schema`): ``O_soft`` (B,), ``O_top{k}``
    and ``agree_top{k}`` (B,, 0 or 1) for each k, ``deletion`` and ``insertion`` curves
    (B, steps+1) with their ``deletion_auc`` and ``insertion_auc`` (B,). ``forwards`` counts
    every image forward made (clean one included
    unless ``clean_logits`` were given).
    """
    cfg = config or metrics.MetricConfig()
    precision.check_precision(cfg.precision, black_box.device)
    images = images.to(black_box.device)
    B, _, H, W = images.shape
    total = H * W
    forwards = 0
    with torch.no_grad():
        if clean_logits is None:
            clean_logits = black_box.model(images)
            forwards += B
        clean = clean_logits.float().softmax(dim=1)
        t = clean.argmax(dim=1) if targets is None else torch.as_tensor(targets).to(images.device)
        if t.numel() != B:
            raise ValueError(f"got {t.numel()} targets for a batch of {B} images")
        Y = clean.gather(1, t.view(-1, 1)).view(-1)
        fill = fill_images(images, cfg.fill, black_box.mean)
        blur = blurred(images)
        steps = cfg.curve_steps
        if steps:
            # shared curve endpoints: everything deleted (= fill), nothing inserted (= blurred)
            ends, _ = metrics.score_inputs(black_box, torch.cat([fill, blur]), torch.cat([t, t]),
                                   cfg)
            forwards += 2 * B
            del_end, ins_start = ends[:B], ends[B:]
        n_step = [n_pixels(100.0 * s / steps, total) for s in range(steps + 1)] if steps else []

        ranks = {m: pixel_ranks(mp.to(images.device)) for m, mp in maps.items()}
        jobs: list[_RefJob] = []
        for m in maps:
            for b in range(B):
                jobs.append(_RefJob(b, m, "soft", 0))
                jobs += [_RefJob(b, m, "top", k) for k in cfg.fractions]
                jobs += [_RefJob(b, m, "del", s) for s in range(1, steps)]
                jobs += [_RefJob(b, m, "ins", s) for s in range(1, steps)]

        def build(chunk: list[_RefJob]) -> tuple[torch.Tensor, torch.Tensor]:
            bs = torch.tensor([j.b for j in chunk], device=images.device)
            masks = torch.empty(len(chunk), H, W, device=images.device)
            fills = fill[bs].clone()
            for i, j in enumerate(chunk):
                r = ranks[j.method][j.b: j.b + 1]
                if j.kind == "soft":
                    masks[i] = maps[j.method][j.b].to(images.device)
                elif j.kind == "top":
                    masks[i] = keep_top(r, n_pixels(j.param, total), (H, W))[0]
                elif j.kind == "del":
                    masks[i] = 1 - keep_top(r, n_step[j.param], (H, W))[0]
                else:
                    masks[i] = keep_top(r, n_step[j.param], (H, W))[0]
                    fills[i] = blur[j.b]
            return masked_inputs(images[bs], masks, fills), t[bs]

        prob = torch.empty(len(jobs), device=images.device)
        agree = torch.empty(len(jobs), dtype=torch.bool, device=images.device)
        for start in range(0, len(jobs), cfg.chunk_size):
            chunk = jobs[start: start + cfg.chunk_size]
            x, tt = build(chunk)
            sl = slice(start, start + len(chunk))
            prob[sl], agree[sl] = metrics.score_inputs(black_box, x, tt, cfg)
            forwards += len(chunk)

    prob_np, agree_np = prob.cpu().numpy().astype(np.float64), agree.cpu().numpy()
    Y_np = Y.cpu().numpy().astype(np.float64)
    fractions_x = np.array(n_step, dtype=np.float64) / total
    result = metrics.BatchScores(Y=Y_np, target=t.cpu().numpy(), forwards=forwards)
    index = {(j.method, j.kind, j.param, j.b): i for i, j in enumerate(jobs)}
    for m in maps:
        def col(kind: str, param: int, values: np.ndarray = prob_np, m: str = m) -> np.ndarray:
            return np.array([values[index[(m, kind, param, b)]] for b in range(B)])

        r: dict[str, np.ndarray] = {schema.score(schema.SOFT): col("soft", 0)}
        for k in cfg.fractions:
            r[schema.score(schema.top(k))] = col("top", k)
            r[schema.agree(k)] = col("top", k, agree_np).astype(np.float64)
        if steps:
            deletion = np.column_stack([Y_np] + [col("del", s) for s in range(1, steps)]
                                       + [del_end.cpu().numpy().astype(np.float64)])
            insertion = np.column_stack([ins_start.cpu().numpy().astype(np.float64)]
                                        + [col("ins", s) for s in range(1, steps)] + [Y_np])
            r["deletion"], r["insertion"] = deletion, insertion
            r[schema.DELETION_AUC] = metrics.curve_auc(deletion, fractions_x)
            r[schema.INSERTION_AUC] = metrics.curve_auc(insertion, fractions_x)
        result.per_method[m] = r
    return result


def _reference_image_rows(files: Sequence[str], labels: np.ndarray,
                          scores: metrics.BatchScores, flat: Mapping[str, np.ndarray],
                          config: metrics.MetricConfig) -> list[dict[str, Any]]:
    """The per-image rows of a scored batch (before the read-out records).

    Average Drop and % Increase enter as their per-image terms (:func:`drop_terms`,
    :func:`increase_terms`): a table's cell is their mean over images.
    """
    Y = scores.Y
    tags = [schema.SOFT] + [schema.top(k) for k in config.fractions]
    rows = []
    for m, r in scores.per_method.items():
        # Average Gain's term, written out here (the formula of paperlib.metrics.gain_terms for
        # Y < 1, as on every real image)
        terms = {tag: (r[schema.score(tag)], metrics.drop_terms(Y, r[schema.score(tag)]),
                       metrics.increase_terms(Y, r[schema.score(tag)]),
                       np.maximum(0.0, r[schema.score(tag)] - Y) / (1.0 - Y) * 100.0)
                 for tag in tags}
        for b, file in enumerate(files):
            row: dict[str, Any] = {"file": file, "label": int(labels[b]),
                                   "target": int(scores.target[b]), "method": m, "Y": Y[b],
                                   "flat_map": bool(flat[m][b])}
            for tag, (O, d, inc, gain) in terms.items():
                row[schema.score(tag)] = O[b]
                row[schema.drop(tag)] = d[b]
                row[schema.increase(tag)] = inc[b]
                row[schema.gain(tag)] = gain[b]
            for k in config.fractions:
                row[schema.agree(k)] = 100.0 * r[schema.agree(k)][b]
            if config.curve_steps:
                row[schema.DELETION_AUC] = r[schema.DELETION_AUC][b]
                row[schema.INSERTION_AUC] = r[schema.INSERTION_AUC][b]
                for t, v in enumerate(r["deletion"][b]):
                    row[schema.deletion(t)] = v
                for t, v in enumerate(r["insertion"][b]):
                    row[schema.insertion(t)] = v
            rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------
# Bit for bit: the records against the reference, on real images


@pytest.fixture(scope="module")
def real_pair(lite0, sample_dataset):
    """Two real images and the Grad-CAM / Grad-CAM++ maps of Lite0 on them."""
    batch = next(paperlib.iter_batches(sample_dataset.subset(2), lite0.preprocess, batch_size=2))
    ex = paperlib.explain(lite0, batch.images, ["gradcam", "gradcampp"])
    return batch, {m: ex[m] for m in ("gradcam", "gradcampp")}, ex.flat_images


@pytest.mark.parametrize("chunk_size", [metrics.MetricConfig().chunk_size, 7])
def test_the_records_reproduce_the_evaluation_bit_for_bit(lite0, real_pair, chunk_size):
    batch, maps, flat = real_pair
    cfg = MetricConfig(curve_steps=4, chunk_size=chunk_size)
    new = metrics.evaluate_batch(lite0, batch.images, maps, config=cfg)
    ref = _reference_evaluate_batch(lite0, batch.images, maps, config=cfg)
    assert new.forwards == ref.forwards == 2 * 1 + 2 * 2 + 2 * 2 * (1 + 5 + 2 * 3)
    assert np.array_equal(new.Y, ref.Y) and new.Y.dtype == ref.Y.dtype == np.float64
    assert np.array_equal(new.target, ref.target)
    assert list(new.per_method) == list(ref.per_method) == ["gradcam", "gradcampp"]
    for m in maps:
        assert list(new.per_method[m]) == list(ref.per_method[m])
        for col, want in ref.per_method[m].items():
            got = new.per_method[m][col]
            assert got.dtype == want.dtype and np.array_equal(got, want), (m, col)
    labels = batch.labels.cpu().numpy()
    rows = metrics.image_rows(batch.files, labels, new, flat, cfg)
    ref_rows = _reference_image_rows(batch.files, labels, ref, flat, cfg)
    assert len(rows) == len(ref_rows) == 4
    for row, want in zip(rows, ref_rows):
        assert list(row) == list(want)
        for c, v in want.items():
            assert type(row[c]) is type(v), c
            assert row[c] == v or np.array_equal(row[c], v), c
    assert list(rows[0]) == list(cfg.row_schema.columns())
    cfg.row_schema.validate(pd.DataFrame(rows))


def test_the_records_reproduce_other_fills_and_no_curves(lite0, real_pair):
    batch, maps, _ = real_pair
    for cfg in (MetricConfig(fill="normalised", fractions=(20,), curve_steps=2, chunk_size=5),
                MetricConfig(fill="blur", fractions=(50, 5), curve_steps=0)):
        new = metrics.evaluate_batch(lite0, batch.images, maps, config=cfg)
        ref = _reference_evaluate_batch(lite0, batch.images, maps, config=cfg)
        assert new.forwards == ref.forwards
        for m in maps:
            assert list(new.per_method[m]) == list(ref.per_method[m])
            assert all(np.array_equal(new.per_method[m][c], v)
                       for c, v in ref.per_method[m].items())


# ---------------------------------------------------------------------------------------------
# A toy read-out, registered in one place


GREY = 0.5


class ToyGreyTop3(Readout):
    """Toy: Average Drop of the top-3% mask on a grey (0.5) fill, max(0, Y - O) / Y * 100."""

    name = "toy-grey-top3"
    label = "toy: top 3% on grey"

    def columns(self, config: MetricConfig) -> list[Column]:
        return [Column("O_toy", "mean O, top 3% on grey", table="toy", scale=100.0),
                Column("drop_toy", "Average Drop, top 3% on grey", metrics.LOWER, claim=True,
                       table="toy")]

    def copies(self, config: MetricConfig):
        return ("top3",)

    def mask(self, ctx, method, b, copy):
        return (ctx.top_mask(method, b, n_pixels(3, ctx.total)),
                torch.full_like(ctx.images[b], GREY))

    def score(self, ctx, method, scored, shared):
        return {"O_toy": scored["top3"][0]}

    def rows(self, Y, r, config):
        return {"O_toy": r["O_toy"], "drop_toy": metrics.drop_terms(Y, r["O_toy"])}


@pytest.fixture
def toy_readout():
    register_readout(ToyGreyTop3())
    yield "toy-grey-top3"
    unregister_readout("toy-grey-top3")


def test_a_toy_readout_flows_through_rows_a_table_and_the_claim_check(toy_readout, lite0,
                                                                     sample_dataset, tmp_path):
    assert list(metrics.READOUTS) == ["soft", "top", "curves", "road", "toy-grey-top3"]
    assert metrics.READOUTS[toy_readout].doc.startswith("Toy: Average Drop of the top-3% mask")
    assert tables.CLAIMS["drop_toy"] == ("Average Drop, top 3% on grey", -1)
    settings = evaluation.EvalSettings.from_parameters(dict(
        methods=("gradcam", "gradcampp", "attention-fixed"), n_images=4, curve_steps=0,
        fractions=(20,), batch_size=4))
    assert settings.key()["metrics"]["readouts"] == ["soft", "top", "curves", "road",
                                                     "toy-grey-top3"]
    run = evaluation.run_evaluation(lite0, sample_dataset, settings, tmp_path, progress=False)
    frame = run.frame
    assert list(frame.columns)[-2:] == ["O_toy", "drop_toy"]
    # the rows: by hand, from the masking routine and one forward
    images = next(paperlib.iter_batches(sample_dataset.split("eval").subset(4), lite0.preprocess,
                                        batch_size=4)).images
    ex = paperlib.explain(lite0, images, ["gradcam"])
    with torch.no_grad():
        probs = lite0.model(images).softmax(dim=1)
        t = probs.argmax(dim=1)
        keep = keep_top(pixel_ranks(ex["gradcam"]), n_pixels(3, 224 * 224), (224, 224))
        masked = masked_inputs(images, keep, torch.full_like(images, GREY))
        O = lite0.model(masked).softmax(dim=1).gather(1, t.view(-1, 1)).view(-1)
    Y = probs.gather(1, t.view(-1, 1)).view(-1)
    sub = frame[frame["method"] == "gradcam"]
    np.testing.assert_allclose(sub["O_toy"].to_numpy(), O.numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(sub["drop_toy"].to_numpy(),
                               np.maximum(0, Y.numpy() - O.numpy()) / Y.numpy() * 100, atol=1e-3)
    # a table: the generic per-read-out table, cells are the means with intervals
    table = tables.readout_table(frame, settings.methods, toy_readout, settings.metrics)
    assert list(table.columns) == ["method", "n_images", "O_toy", "O_toy_lo", "O_toy_hi",
                                   "drop_toy", "drop_toy_lo", "drop_toy_hi"]
    assert table.loc[0, "drop_toy"] == pytest.approx(sub["drop_toy"].mean(), abs=1e-12)
    assert table.loc[0, "O_toy"] == pytest.approx(100 * sub["O_toy"].mean(), abs=1e-12)
    assert "drop_toy" in tables.formatted(table).columns
    # the claim check, through the column's direction and label
    wt = tables.wilcoxon_table(frame, ["gradcam"], ["gradcampp"], columns=["drop_toy"])
    claims = tables.claim_check(wt)
    assert claims["metric"].tolist() == ["Average Drop, top 3% on grey"]
    assert claims["verdict"].iloc[0] in VERDICTS
    assert precision.per_column((20,), False)["drop_toy"] == ("toy", 1.0)
    # the one writer and RESULTS.md: the toy's table, its own section, its claim in the tests
    out = tmp_path / "tables"
    written = outputs.write_evaluation(run, out, "toy run", groups=("table3", "readouts", "claims"))
    assert "readout_toy-grey-top3" in written.tables
    facts = json.loads((out / "readouts.json").read_text())["readouts"]
    assert [r["name"] for r in facts if not r["kit"]] == [toy_readout]
    wt_written = pd.read_csv(out / "wilcoxon.csv")
    assert "drop_toy" in set(wt_written["metric"])
    page = readme.results_markdown(out)
    assert "## Read-out — toy: top 3% on grey" in page
    assert "Average Drop, top 3% on grey" in page       # the Wilcoxon block's column label
    assert page.index("## Read-out — toy") < page.index("## The paper's claims")


def test_unregistering_the_toy_leaves_the_kit_as_it_was(toy_readout):
    unregister_readout(toy_readout)
    try:
        assert "drop_toy" not in tables.CLAIMS
        assert "readouts" not in MetricConfig().key()
        assert "drop_toy" not in MetricConfig().row_schema.columns()
    finally:
        register_readout(ToyGreyTop3())


def test_a_readout_is_registered_once_and_writes_its_own_columns(toy_readout):
    with pytest.raises(ValueError, match="already registered"):
        register_readout(ToyGreyTop3())

    class Clash(ToyGreyTop3):
        """Toy: writes drop_soft, which the soft map writes."""

        name = "clash"

        def columns(self, config):
            return [Column("drop_soft", "clash")]

    register_readout(Clash())
    try:
        with pytest.raises(ValueError, match="'clash' writes column 'drop_soft'"):
            MetricConfig().columns()
    finally:
        unregister_readout("clash")

    class BadOptions(ToyGreyTop3):
        """Toy: options MetricConfig does not compose."""

        name = "bad-options"
        options = ToyGreyTop3

    with pytest.raises(TypeError, match="options of read-out 'bad-options'"):
        register_readout(BadOptions())
    with pytest.raises(ValueError, match="needs a direction"):
        Column("x", "x", claim=True)
    with pytest.raises(ValueError, match="unknown read-out"):
        unregister_readout("nope")


# ---------------------------------------------------------------------------------------------
# What the records declare: today's columns, claims, key


def test_the_records_declare_todays_columns_claims_and_cells():
    cfg = MetricConfig(fractions=(5, 20), curve_steps=2)
    cols = list(cfg.row_schema.columns())
    assert cols == ["file", "label", "target", "method", "Y", "flat_map",
                    "O_soft", "drop_soft", "increase_soft", "gain_soft",
                    "O_top5", "drop_top5", "increase_top5", "gain_top5", "O_top20", "drop_top20",
                    "increase_top20", "gain_top20", "agree_top5", "agree_top20",
                    "deletion_auc", "insertion_auc", "del_0", "del_1", "del_2",
                    "ins_0", "ins_1", "ins_2"]
    assert set(cfg.row_schema.columns().values()) == {"object", "int64", "float64", "bool"}
    assert dict(tables.CLAIMS) == {
        "drop_soft": ("Average Drop", -1), "increase_soft": ("% Increase", +1),
        "drop_top20": ("Average Drop, top 20% kept", -1), "deletion_auc": ("deletion AUC", -1),
        "insertion_auc": ("insertion AUC", +1)}
    assert list(tables.CLAIMS) == ["drop_soft", "increase_soft", "drop_top20", "deletion_auc",
                                   "insertion_auc"]
    assert HEADLINE == tuple(c.label for c in metrics.SoftMap.COLUMNS if c.claim)
    directions = {c.name: c.direction for c in cfg.columns()}
    assert (directions["drop_top5"], directions["increase_top5"], directions["agree_top5"],
            directions["O_top5"], directions["del_1"]) == (-1, +1, +1, 0, 0)
    from paperlib.explain_files import readout_columns

    assert readout_columns(cfg) == cols[6:22]
    assert list(precision.per_column((5, 20), True).items()) == [
        ("O_soft", ("O (soft map)", 1.0)), ("drop_soft", ("Table 3", 1.0)),
        ("increase_soft", ("Table 3", 1.0)), ("gain_soft", ("Table 3", 1.0)),
        ("O_top5", ("Table 4", 100.0)), ("O_top20", ("Table 4", 100.0)),
        ("drop_top5", ("Table 4", 1.0)), ("drop_top20", ("Table 4", 1.0)),
        ("increase_top5", ("Table 4", 1.0)), ("increase_top20", ("Table 4", 1.0)),
        ("gain_top5", ("Table 4", 1.0)), ("gain_top20", ("Table 4", 1.0)),
        ("agree_top5", ("Table 4", 1.0)), ("agree_top20", ("Table 4", 1.0)),
        ("deletion_auc", ("curves", 1.0)), ("insertion_auc", ("curves", 1.0))]
    assert precision._CELL_NAME == {"drop_soft": "avg_drop", "increase_soft": "increase",
                                    "gain_soft": "avg_gain"}
    for r in metrics.READOUTS.values():
        assert r.label and r.doc, r.name


def test_the_key_is_derived_from_the_fields():
    import dataclasses

    names = [f.name for f in dataclasses.fields(MetricConfig)]
    assert names == ["fill", "fractions", "curve_steps", "road_percentiles", "road_noise",
                     "road_seed", "chunk_size", "precision", "compile"]
    assert MetricConfig().key() == {"fill": "black", "fractions": [5, 10, 20, 25, 50],
                                    "curve_steps": 16, "precision": "fp32", "compile": False}
    assert MetricConfig(chunk_size=3).key() == MetricConfig().key()
    assert [f.name for f in dataclasses.fields(MetricConfig)
            if f.metadata.get("changes_no_number")] == ["chunk_size"]
    assert MetricConfig(fractions=[50]).key()["fractions"] == [50]
    assert isinstance(MetricConfig(), metrics.TopOptions)
    assert isinstance(MetricConfig(), metrics.CurveOptions)
    # ROAD's fields enter the key only when it is on (results without it keep their keys)
    assert MetricConfig(road_percentiles=(50,)).key()["road_percentiles"] == [50]
    assert MetricConfig(road_noise=0.5).key() == MetricConfig().key()


# ---------------------------------------------------------------------------------------------
# Fills: a name, a value or a callable


def _mean_colour(images: torch.Tensor, mean: Sequence[float] | None) -> torch.Tensor:
    """The image's mean colour, as a callable fill."""
    return images.mean(dim=(2, 3), keepdim=True).expand_as(images)


class _SumNet(torch.nn.Module):
    """Two classes: logits (0.5 * sum(x), 0)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = 0.5 * x.sum(dim=(1, 2, 3))
        return torch.stack([s, torch.zeros_like(s)], dim=1)


def _sum_box():
    net = _SumNet()
    return BlackBox("sumnet", net, lambda im: im, net, "", 2, (0.25, 0.5, 0.75),
                    (1.0, 1.0, 1.0), "hand-made")


def test_a_fill_is_a_name_a_value_or_a_callable():
    x = torch.rand(2, 3, 4, 4)
    assert torch.equal(fill_images(x, 0.0), fill_images(x, "black"))
    assert torch.equal(fill_images(x, torch.tensor([0.25, 0.5, 0.75])),
                       fill_images(x, "normalised", (0.25, 0.5, 0.75)))
    assert torch.equal(fill_images(x, _mean_colour), fill_images(x, "mean"))
    assert fill_key("blur") == "blur" and fill_key(0.5) == 0.5
    assert fill_key(torch.tensor([0.25, 0.5, 0.75])) == [0.25, 0.5, 0.75]
    assert fill_key(_mean_colour) == f"{_mean_colour.__module__}._mean_colour"
    assert MetricConfig(fill=_mean_colour).key()["fill"] == fill_key(_mean_colour)
    with pytest.raises(ValueError, match="unknown fill"):
        MetricConfig(fill=[0.5])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="does not broadcast"):
        fill_images(x, torch.zeros(5))
    with pytest.raises(ValueError, match=r"returned \(1, 3, 4, 4\); expected"):
        fill_images(x, lambda im, mu: im[:1])
    # the same numbers through the evaluation
    bb, maps = _sum_box(), {"m": torch.rand(2, 4, 4)}
    for named, other in (("black", 0.0), ("mean", _mean_colour),
                         ("normalised", torch.tensor([0.25, 0.5, 0.75]))):
        a = metrics.evaluate_batch(bb, x, maps, config=MetricConfig(fill=named, curve_steps=2))
        b = metrics.evaluate_batch(bb, x, maps, config=MetricConfig(fill=other, curve_steps=2))
        assert all(np.array_equal(a.per_method["m"][c], v) for c, v in b.per_method["m"].items())


# ---------------------------------------------------------------------------------------------
# Each formula on hand-computable values


def test_each_readout_formula_by_hand():
    # a 2x2 image; logit of class 0 = 0.5 * sum(E); map ranks: (0,0), (1,1), (0,1), (1,0)
    bb = _sum_box()
    x = torch.zeros(1, 3, 2, 2)
    x[0, :, 0, 0] = 1.0
    x[0, :, 1, 1] = 0.5
    maps = {"m": torch.tensor([[[1.0, 0.25], [0.0, 0.5]]])}
    cfg = MetricConfig(fill="black", fractions=(25, 50), curve_steps=2)
    s = metrics.evaluate_batch(bb, x, maps, targets=torch.tensor([0]), config=cfg)

    def p(logit: float) -> float:
        return float(1 / (1 + np.exp(-logit)))

    Y = p(0.5 * 4.5)
    row = metrics.image_rows(["a.jpg"], np.array([0]), s, {"m": np.array([False])}, cfg)[0]
    assert row["Y"] == pytest.approx(Y, abs=1e-7)
    O_soft = p(0.5 * 3.75)                          # 3 * 1 + 1.5 * 0.5
    assert row["O_soft"] == pytest.approx(O_soft, abs=1e-7)
    assert row["drop_soft"] == pytest.approx((Y - O_soft) / Y * 100, abs=1e-4)
    assert row["increase_soft"] == 0.0
    assert row["O_top25"] == pytest.approx(p(1.5), abs=1e-7)       # pixel (0,0) kept
    assert row["O_top50"] == pytest.approx(Y, abs=1e-7)            # (0,0) and (1,1): all mass
    assert row["drop_top50"] == pytest.approx(0.0, abs=1e-4)
    assert (row["agree_top25"], row["agree_top50"]) == (100.0, 100.0)
    # deletion in 2 steps: all, 2 most salient removed (sum 0), all removed -> p(0) = 0.5
    assert [row["del_0"], row["del_1"], row["del_2"]] == pytest.approx([Y, 0.5, 0.5], abs=1e-7)
    assert row["deletion_auc"] == pytest.approx(0.25 * (Y + 0.5) + 0.25 * (0.5 + 0.5), abs=1e-7)
    blur = float(blurred(x).sum())
    two = x * torch.tensor([[1.0, 0.0], [0.0, 1.0]]) + blurred(x) * torch.tensor([[0.0, 1.0],
                                                                                 [1.0, 0.0]])
    ins = [p(0.5 * blur), p(0.5 * float(two.sum())), Y]
    assert [row["ins_0"], row["ins_1"], row["ins_2"]] == pytest.approx(ins, abs=1e-6)
    assert row["insertion_auc"] == pytest.approx(0.25 * (ins[0] + ins[1]) + 0.25 * (ins[1] + Y),
                                                 abs=1e-6)
    # % Increase: an O above Y counts 100 (a map that keeps all mass of a brighter copy)
    assert metrics.increase_terms(np.array([0.5, 0.5]), np.array([0.6, 0.5])).tolist() == [100, 0]
    assert metrics.drop_terms(np.array([0.8]), np.array([0.2])).tolist() == pytest.approx([75.0])


def test_readout_table_refuses_an_unknown_readout():
    with pytest.raises(ValueError, match="unknown read-out 'nope'"):
        tables.readout_table(pd.DataFrame({"method": []}), [], "nope")


