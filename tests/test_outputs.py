"""The one writer of an evaluation's files (:mod:`paperlib.outputs`): ``paperlib evaluate`` and
notebook 04's path write the same files, with one ``eval_split.json``
schema; a claim-matrix cell writes the committed cell's file set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from paperlib import cli as paperlib_cli
from paperlib import notebook, outputs

REPO = Path(__file__).resolve().parent.parent
METHODS = ["gradcam", "xgradcam", "attention-fixed", "fakecam"]  # 2 baselines, a variant, a control
PARAMS = {"model_name": "efficientnet_lite0", "device": "cpu", "seed": 0, "n_images": 4,
          "methods": METHODS, "curve_steps": 2, "batch_size": 4, "split": None}

TABLES = ["table3", "table4", "table4_trend", "table4_scale", "deletion_insertion", "wilcoxon",
          "claims", "controls", "metric_agreement", "metric_reliability", "calibration", "power",
          "untrained_seeds", "protocol", "protocol_verdicts", "road", "road_controls"]
#: Every file of a full write (tables in three formats), and the claims heat map.
FILES = sorted([f"{t}.{ext}" for t in TABLES for ext in ("csv", "md", "tex")]
               + ["table4_scale_verdict.txt", "eval_speed.json", "eval_split.json",
                  "readouts.json", "metric_agreement.txt", "evaluation_manifest.json"])
FIGURES = ["claims_heatmap.pdf", "claims_heatmap.png", "metric_agreement.pdf",
           "metric_agreement.png"]
SPLIT_KEYS = ["split", "attention-trained trained on", "overlap with the training images",
              "files"]


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_file())


@pytest.fixture(scope="module")
def written(data_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """The evaluation command's folder, and notebook 04's writer run on the same store into
    other folders: (evaluate's folder, the notebook's results, its figures, its EvalRun,
    its Outputs)."""
    root = tmp_path_factory.mktemp("outputs")
    cli = root / "cli"
    assert paperlib_cli.main(["evaluate", "--model", "efficientnet_lite0", "--device", "cpu",
                              "--n-images", "4", "--methods", *METHODS, "--curve-steps", "2",
                              "--batch-size", "4", "--untrained-seeds", "1", "--road-images", "2",
                              "--no-progress",
                              "--data-dir", str(data_dir), "--out", str(cli)]) == 0
    nb_results, nb_figures = root / "nb-results", root / "nb-figures"
    run = notebook.open_evaluation({**PARAMS, "data_dir": str(data_dir), "output_dir": str(cli),
                                    "figures_dir": str(nb_figures)})
    studies = outputs.run_studies(run.black_box, run.dataset, run.settings, str(cli),
                                  untrained_seeds=1, protocol_study=True, road_images=2,
                                  progress=False)
    out = outputs.write_evaluation(run.evaluation, nb_results, run.where, figures=run.figures,
                                   studies=studies)
    return cli, nb_results, nb_figures, run, out


def test_the_command_and_the_notebook_write_the_same_files(written):
    cli, nb_results, nb_figures, _, out = written
    assert _names(cli) == sorted(FILES + FIGURES)
    assert _names(nb_results) == FILES
    assert _names(nb_figures) == FIGURES
    assert sorted(p.name for p in out.paths) == sorted(FILES + FIGURES)
    listed = json.loads((nb_results / "evaluation_manifest.json").read_text())
    assert listed["run"] == out_run_key(written) and listed["store"] == "../cli/cache/eval.sqlite"
    assert sorted(listed["files"]) == sorted([f for f in FILES if f != "evaluation_manifest.json"]
                                             + [f"../nb-figures/{f}" for f in FIGURES])
    assert sorted(out.tables) == sorted(TABLES)
    # same numbers (the CSVs carry no caption; Markdown / LaTeX differ only in `where`)
    for table in TABLES:
        name = f"{table}.csv"
        assert (cli / name).read_bytes() == (nb_results / name).read_bytes(), name
    assert ((cli / "table4_scale_verdict.txt").read_text()
            == (nb_results / "table4_scale_verdict.txt").read_text() == out.scale_verdict + "\n")


def out_run_key(written) -> str:
    return written[3].evaluation.run_key


def test_an_output_folder_holds_one_run(written, tmp_path, capsys):
    """A second run into a folder (fewer methods, no curves: no claims, no deletion/insertion)
    moves the first run's files it does not write to stale/<first run>/, saying so; the
    readme then renders only the second run's files. A table edited (or copied in from
    another run) afterwards makes ``paperlib readme`` refuse the folder, naming the file."""
    from paperlib import manifest, readme

    cli, _, _, run, _ = written
    folder = tmp_path / "results"
    first = outputs.write_evaluation(run.evaluation, folder, run.where)
    second_run = notebook.open_evaluation({**PARAMS, "methods": ["gradcam"], "curve_steps": 0,
                                           "output_dir": str(cli)})
    capsys.readouterr()
    second = outputs.write_evaluation(second_run.evaluation, folder, second_run.where)
    said = capsys.readouterr().out
    old = run.evaluation.run_key
    assert f"of run {old}, which this run ({second_run.evaluation.run_key}) does not write" in said
    stale = sorted(p.name for p in (folder / "stale" / old).iterdir())
    assert "claims.csv" in stale and "deletion_insertion.csv" in stale and "table3.csv" not in stale
    assert not (folder / "claims.csv").exists() and (folder / "table3.csv").exists()
    assert ({p.name for p in first.paths} - {p.name for p in second.paths}) == set(stale)
    assert manifest.check_manifest(folder) == []
    (folder / "table3.csv").write_text((folder / "table3.csv").read_text() + "\n")
    problems = manifest.check_manifest(folder)
    key = second_run.evaluation.run_key
    assert len(problems) == 1
    assert problems[0].startswith(f"{folder / 'table3.csv'} differs from what run {key}")
    assert readme.main(folder, tmp_path / "README.md", check=True) == 1
    assert "mixes files of different runs; nothing was written" in capsys.readouterr().err


def test_one_eval_split_schema(written, sample_dataset):
    cli, nb_results, _, run, out = written
    a = json.loads((cli / "eval_split.json").read_text())
    b = json.loads((nb_results / "eval_split.json").read_text())
    committed = json.loads((REPO / "results" / "eval_split.json").read_text())
    assert list(a) == list(b) == list(committed) == SPLIT_KEYS
    assert a == b == out.split
    assert a["split"] == "eval: class index = 2 (mod 4)" == committed["split"]
    assert a["overlap with the training images"] == "no image"
    assert a["files"] == sorted(sample_dataset.split("eval").subset(4).files)
    assert len(a["files"]) == 4 and run.frame["file"].nunique() == 4


def test_the_studies_tables(written):
    _, _, _, run, out = written
    sweep = out.tables["untrained_seeds"]
    assert list(sweep["init"].unique()) == ["pytorch", "cbam-reference"]
    assert sweep["seeds"].tolist() == [1] * 6
    means = out.tables["protocol"]
    assert len(means) == 4 * 2 * len(METHODS)        # fills x targets x methods
    assert set(means["n_images"]) == {4}
    verdicts = out.tables["protocol_verdicts"]
    assert set(verdicts["variant"]) == {"attention-fixed"}
    assert set(verdicts["baseline"]) == {"gradcam", "xgradcam"}
    road, against = out.tables["road"], out.tables["road_controls"]
    assert road["method"].tolist() == METHODS and set(road["n_images"]) == {2}
    assert {"road_morf", "road_lerf", "road_combined"} <= set(road.columns)
    assert set(against["best_control"]) == {"fakecam"}
    assert set(against["column"]) == {"road_morf", "road_lerf", "road_combined"}
    speed = json.loads((written[0] / "eval_speed.json").read_text())
    assert speed["images"] == 4 and out.speed == run.evaluation.speed()


def test_a_matrix_cell_writes_the_committed_cells_files(written, tmp_path):
    _, _, _, run, _ = written
    cell = outputs.write_evaluation(run.evaluation, tmp_path / "cell", run.where,
                                    groups=outputs.CELL_GROUPS)
    committed = _names(REPO / "results" / "matrix" / "efficientnet_lite0_last")
    # the committed cells predate the folder manifest (paperlib.manifest)
    assert [n for n in _names(tmp_path / "cell") if n != "evaluation_manifest.json"] == committed
    assert cell.claims_figure is None and "power" not in cell.tables


def test_bad_options_name_the_value(written, tmp_path):
    _, _, _, run, _ = written
    with pytest.raises(ValueError, match=r"unknown output group\(s\) \['tables'\]"):
        outputs.write_evaluation(run.evaluation, tmp_path, run.where, groups=["tables"])
    with pytest.raises(ValueError, match="untrained_seeds must be a count >= 0 or None, got -2"):
        outputs.run_studies(run.black_box, run.dataset, run.settings, untrained_seeds=-2)
    with pytest.raises(ValueError, match="road_images must be a count >= 0 or None, got 1.5"):
        outputs.run_studies(run.black_box, run.dataset, run.settings, road_images=1.5)
    with pytest.raises(SystemExit):
        paperlib_cli.build_parser(["evaluate"]).parse_args(["evaluate", "--untrained-seeds",
                                                            "some"])


def test_split_record_for_each_split():
    assert outputs.split_record("train", ["b", "a"]) == {
        "split": "train: class index = 0 (mod 4)",
        "attention-trained trained on": "class index = 0 (mod 4)",
        "overlap with the training images": "these images include the module's training images",
        "files": ["a", "b"]}
    assert outputs.split_record("all", [])["split"] == "all: every image of the folder"


def test_figure_masks_keep_exactly_the_top_pixels():
    import torch

    from paperlib import plots

    maps = torch.arange(2 * 4 * 5, dtype=torch.float32).reshape(2, 4, 5)
    maps[1] = maps[1].flip(-1)
    keep = plots.top_masks(maps, 25)                 # 25% of 20 pixels: 5
    assert keep.shape == (2, 4, 5) and keep.flatten(1).sum(1).tolist() == [5, 5]
    assert keep[0, 3].tolist() == [1, 1, 1, 1, 1]    # the five largest values: the last row
    assert keep[1, 3].tolist() == [1, 1, 1, 1, 1]


def test_the_sanity_files(tmp_path):
    import pandas as pd

    from paperlib import sanity

    rows = pd.DataFrame([{"step": s, "randomized": r, "method": m, "image": i, "spearman": v,
                          "constant_map": False}
                         for s, r in ((1, "classifier"), (2, "conv_head+bn2"))
                         for m, v in (("gradcam", 0.1 / s), ("fake", 0.9))
                         for i in range(3)])
    summary = sanity.summarize(rows)
    paths, fig = sanity.write_sanity(rows, summary, "toy", tmp_path / "r", tmp_path / "f")
    assert [p.name for p in paths] == [
        "sanity_rows.csv", "sanity.csv", "sanity.md", "sanity.tex",
        "sanity_cascading_randomization.png", "sanity_cascading_randomization.pdf"]
    assert (tmp_path / "r" / "sanity.md").read_text().splitlines()[0] == (
        "Cascading randomisation: mean Spearman vs the trained toy, 3 images; steps: "
        "['classifier', 'conv_head+bn2']")
    table = pd.read_csv(tmp_path / "r" / "sanity.csv")
    assert table["method"].tolist() == ["fake", "gradcam"]
    assert table["step2"].tolist() == [0.9, 0.05] and table["flagged"].tolist() == [True, False]
    assert len(pd.read_csv(tmp_path / "r" / "sanity_rows.csv")) == 12
    assert fig is not None


def _moved_cells(a: Path, b: Path) -> list[str]:
    """Every cell that differs between two runs' CSVs, as 'file row column: a != b'."""
    import pandas as pd

    moved = []
    for csv in sorted(a.glob("*.csv")):
        other = b / csv.name
        if not other.is_file():
            moved.append(f"{csv.name}: missing in {b}")
        elif csv.read_bytes() != other.read_bytes():
            x, y = pd.read_csv(csv, dtype=str), pd.read_csv(other, dtype=str)
            if x.shape != y.shape or list(x.columns) != list(y.columns):
                moved.append(f"{csv.name}: shape {x.shape} != {y.shape}")
                continue
            for col in x.columns:
                for i in (x[col] != y[col]).to_numpy().nonzero()[0]:
                    moved.append(f"{csv.name} row {i} column {col}: {x[col][i]} != {y[col][i]}")
    return moved


def test_two_writes_of_a_run_are_byte_identical(written, tmp_path):
    """Rewriting a run's tables from its store gives the same bytes (floats at 10 significant
    digits: paperlib.atomic.CSV_FLOAT_FORMAT); a difference is reported cell by cell."""
    _, _, _, run, _ = written
    a, b = tmp_path / "a", tmp_path / "b"
    outputs.write_evaluation(run.evaluation, a, run.where)
    outputs.write_evaluation(run.evaluation, b, run.where)
    assert _moved_cells(a, b) == []
    (b / "table3.csv").write_text((b / "table3.csv").read_text().replace("gradcam,", "gradcam2,"))
    assert _moved_cells(a, b)[0].startswith("table3.csv row 0 column method: gradcam != gradcam2")
