"""A method is one record: registering a toy method makes it flow through explain, the
evaluation and the tables; settings compose; defaults and the results key come from one place;
the package's modules import only downwards."""

from __future__ import annotations

import ast
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

import paperlib
from paperlib import cam, evaluation, metrics, schema, tables
from paperlib.cam import ExplainOptions, NoOptions, register_method, unregister_method
from paperlib.evaluation import EvalSettings
from paperlib.metrics import MetricConfig
from paperlib.paths import PACKAGE_DIR


@dataclass
class ToyOptions:
    """The toy method's one option."""

    toy_power: float = 1.0


@pytest.fixture
def toy_method():
    """A method registered in one place: Grad-CAM's map raised to ``toy_power``."""

    @register_method("toy", label="Toy CAM", role="variant", options=ToyOptions)
    def _toy(p: cam.Pass, o: ToyOptions) -> torch.Tensor:
        """Toy: ReLU(Grad-CAM) ** toy_power (a test method)."""
        return p.gradcam_terms.sum(dim=1).clamp(min=0) ** o.toy_power

    yield "toy"
    unregister_method("toy")


def test_a_toy_method_flows_through_explain_evaluation_and_tables(toy_method, lite0,
                                                                  sample_dataset, tmp_path):
    spec = cam.METHODS["toy"]
    assert (spec.label, spec.role, spec.options, spec.doc) == (
        "Toy CAM", "variant", ToyOptions, "Toy: ReLU(Grad-CAM) ** toy_power (a test method).")
    assert paperlib.method_label("toy") == "Toy CAM"
    assert "toy" in cam.default_methods() and "toy" in evaluation.variants()
    # explain: power 1 is Grad-CAM exactly; its option is a keyword of explain
    images = next(paperlib.iter_batches(sample_dataset.split("eval").subset(2), lite0.preprocess,
                                        batch_size=2)).images
    ex = paperlib.explain(lite0, images, ["gradcam", "toy"])
    assert torch.equal(ex["toy"], ex["gradcam"])
    squared = paperlib.explain(lite0, images, "toy", toy_power=2.0)
    assert not torch.equal(squared["toy"], ex["gradcam"])
    # the evaluation picks up its option (in the key) and writes its rows; the tables its row
    params = dict(methods=("gradcam", "toy"), n_images=2, curve_steps=2, batch_size=2,
                  toy_power=1.0)
    settings = EvalSettings.from_parameters(params)
    assert settings.key()["explain"]["toy"] == {"toy_power": 1.0}
    run = evaluation.run_evaluation(lite0, sample_dataset, settings, tmp_path, progress=False)
    t3 = tables.table3(run.frame, settings.methods)
    assert list(t3["method"]) == ["gradcam", "toy"]
    assert t3.loc[1, "avg_drop"] == t3.loc[0, "avg_drop"]      # same maps, same numbers
    wt = tables.wilcoxon_table(run.frame, evaluation.paper_baselines(), evaluation.variants())
    assert set(wt["variant"]) == {"toy"}
    other = EvalSettings.from_parameters({**params, "toy_power": 2.0})
    assert other.key() != settings.key()


def test_registering_a_name_twice_is_an_error(toy_method):
    with pytest.raises(ValueError, match="already registered"):
        register_method("toy", label="again")(lambda p, o: p.A.sum(dim=1))
    with pytest.raises(ValueError, match="role"):
        register_method("toy2", label="x", role="baseline-ish")
    with pytest.raises(ValueError, match="clashes"):
        @dataclass
        class Bad:
            seed: int = 1
        register_method("toy3", label="x", options=Bad)
    assert "toy2" not in cam.METHODS and "toy3" not in cam.METHODS


def test_option_keywords_route_to_their_method_and_unknown_ones_are_errors():
    opts = ExplainOptions.build(smooth_samples=3, scorecam_channels=None, seed=4)
    assert opts.of("smoothgradcampp").smooth_samples == 3
    assert opts.of("smoothgradcampp").smooth_sigma == 0.15            # its own default
    assert opts.of("scorecam").scorecam_channels is None
    assert opts.of("gradcam") == NoOptions()
    assert opts.seed == 4
    shared = ExplainOptions.build(checkpoint="x.pt")                  # an option of two methods
    assert shared.of("attention-trained").checkpoint == "x.pt"
    assert shared.of("attention-per-image").checkpoint == "x.pt"
    with pytest.raises(TypeError, match="unknown option.*smooth_sample'"):
        ExplainOptions.build(smooth_sample=3)
    with pytest.raises(ValueError, match="unknown method"):
        paperlib.explain(None, torch.zeros(1, 3, 2, 2), ["gradcam", "nope"])


def test_settings_compose_and_defaults_live_in_one_place():
    s = EvalSettings()
    assert s.explain == ExplainOptions() and s.metrics == MetricConfig()
    assert s.methods == cam.default_methods()
    # every flat parameter the notebooks pass lands in exactly one component
    s = EvalSettings.from_parameters(dict(fill="blur", curve_steps=4, smooth_samples=2,
                                          per_image_steps=3, seed=7, n_images=None, target=None,
                                          model_name="ignored", batch_size=4))
    assert (s.metrics.fill, s.metrics.curve_steps) == ("blur", 4)
    assert s.explain.of("smoothgradcampp").smooth_samples == 2
    assert s.explain.of("attention-per-image").per_image_steps == 3
    assert (s.seed, s.n_images, s.target, s.batch_size) == (7, None, "predicted", 4)
    # the key: composed settings, no batch or chunk size, only the run's methods' options
    key = EvalSettings.from_parameters(dict(methods=["gradcam", "scorecam"])).key()
    assert key == {"methods": ["gradcam", "scorecam"], "split": "eval", "n_images": None,
                   "target": "predicted",
                   "explain": {"seed": 0, "scorecam": {"scorecam_channels": 64}},
                   "metrics": {"fill": "black", "fractions": [5, 10, 20, 25, 50],
                               "curve_steps": 16, "precision": "fp32", "compile": False}}
    chunky = EvalSettings.from_parameters(dict(methods=["gradcam", "scorecam"], chunk_size=3,
                                               batch_size=1))
    assert chunky.key() == key
    with pytest.raises(ValueError, match="target"):
        EvalSettings(target="guess")
    with pytest.raises(ValueError, match="unknown fill"):
        EvalSettings.from_parameters(dict(fill="white"))


def test_tables_use_the_metrics_formulas():
    # two images, two methods; rows built by the metrics module, table cells are their means
    Y = np.array([0.8, 0.5])
    O = {"a": np.array([0.4, 0.6]), "b": np.array([0.8, 0.1])}
    cfg = MetricConfig(fractions=(20,), curve_steps=1)
    curve = np.array([[0.8, 0.1], [0.5, 0.2]])
    scores = metrics.BatchScores(Y=Y, target=np.array([3, 4]), per_method={
        m: {"O_soft": o, "O_top20": o, "agree_top20": np.array([1.0, 0.0]),
            "deletion": curve, "insertion": curve[:, ::-1],
            "deletion_auc": metrics.curve_auc(curve, np.array([0.0, 1.0])),
            "insertion_auc": metrics.curve_auc(curve[:, ::-1], np.array([0.0, 1.0]))}
        for m, o in O.items()})
    rows = metrics.image_rows(["x.jpg", "y.jpg"], np.array([3, 5]), scores,
                              {"a": np.array([False, False]), "b": np.array([False, True])}, cfg)
    import pandas as pd

    frame = cfg.row_schema.validate(pd.DataFrame(rows))
    t3 = tables.table3(frame, ["a", "b"])
    assert t3["avg_drop"].tolist() == [metrics.average_drop(Y, O["a"]),
                                       metrics.average_drop(Y, O["b"])]
    # by hand: a: (0.4/0.8, 0) -> 25 %; b: (0, 0.4/0.5) -> 40 %
    assert t3["avg_drop"].tolist() == pytest.approx([25.0, 40.0], abs=1e-12)
    assert t3["increase"].tolist() == [50.0, 0.0]
    assert t3["flat_maps"].tolist() == [0, 1]
    t4 = tables.table4(frame, ["a"], cfg.fractions)
    assert t4.loc[0, "O_top20"] == pytest.approx(100 * 0.5)       # mean O, in %
    assert t4.loc[0, "agree_top20"] == 50.0
    assert metrics.curve_auc(curve, np.array([0.0, 1.0])).tolist() == pytest.approx([0.45, 0.35])
    with pytest.raises(ValueError, match="missing column"):
        MetricConfig(fractions=(20, 50), curve_steps=1).row_schema.validate(frame)


def test_row_schema_names_every_column_the_evaluation_writes(lite0, sample_dataset, tmp_path):
    settings = EvalSettings.from_parameters(dict(methods=["gradcam"], n_images=2, curve_steps=2,
                                                 batch_size=2))
    run = evaluation.run_evaluation(lite0, sample_dataset, settings, tmp_path, progress=False)
    assert list(run.frame.columns) == list(settings.metrics.row_schema.columns())
    assert schema.columns_for((5, 10, 20, 25, 50), 2)[:6] == ["file", "label", "target", "method",
                                                                "Y", "flat_map"]


def test_the_results_key_covers_every_module_without_a_list(tmp_path, monkeypatch):
    from paperlib import results

    fake = tmp_path / "pkg"
    (fake / "sub").mkdir(parents=True)
    (fake / "a.py").write_text("x = 1\n")
    monkeypatch.setattr(results, "PACKAGE_DIR", fake)
    first = results.code_fingerprint()
    (fake / "sub" / "new_module.py").write_text("y = 2\n")     # a module nobody listed
    assert results.code_fingerprint() != first


# Modules in the order data flows; a module may import only modules before it.
LAYERS = ["paths", "perf", "progress", "models", "data", "hooks", "masking", "cam", "attention",
          "schema", "metrics", "stats", "paper_reference", "results", "evaluation", "tables",
          "plots", "sanity"]


def test_modules_import_only_downwards():
    for name in LAYERS:
        tree = ast.parse((PACKAGE_DIR / f"{name}.py").read_text())
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module:
                    imported.add(node.module.split(".")[0])
                else:
                    imported.update(a.name for a in node.names)
        above = [m for m in imported if m in LAYERS and LAYERS.index(m) > LAYERS.index(name)]
        assert not above, f"{name} imports {above}, which sit above it"


def test_every_registered_method_has_a_documented_record():
    for name, spec in cam.METHODS.items():
        assert spec.label and spec.doc, name
        assert dataclasses.is_dataclass(spec.options), name
        for f in dataclasses.fields(spec.options):
            assert f.name in (spec.options.__doc__ or ""), f"{name}: option {f.name} undocumented"
    assert Path(cam.__file__).parent == PACKAGE_DIR
