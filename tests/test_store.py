"""The SQLite results store: exact round trips, one row per (run, file, method) also with two
processes at once, damage detected and named, and the run key following the exact file list."""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from paperlib import evaluation, load_images, tables
from paperlib.data import BadImageWarning
from paperlib.runs import ResultsCache
from paperlib.store import ResultsStore, StoreDamagedError, StoreError, StoreStorageError

SETTINGS = dict(methods=("gradcam", "xgradcam"), n_images=4, curve_steps=2, fractions=(20,),
                batch_size=2, chunk_size=8)

# ---------------------------------------------------------------------------------------------
# Round trips


def _store(path: Path, wal: bool = True) -> ResultsStore:
    """A store with the run ``run`` registered."""
    store = ResultsStore(path, wal=wal)
    store.register("run", "t", {"k": 1})
    return store


def test_values_round_trip_exactly_with_their_kinds(tmp_path):
    store = _store(tmp_path / "s.sqlite")
    awkward = [0.1 + 0.2, 1 / 3, 5e-324, 1.7976931348623157e308, -0.0, math.pi * 1e-300]
    rows = [{"file": f"f{i}", "method": "m", "x": np.float64(v), "n": np.int64(i),
             "ok": np.bool_(i % 2), "name": f"é{i}", "missing": float("nan")}
            for i, v in enumerate(awkward)]
    assert store.write("run", rows, {"n_images": 6, "t": np.float32(0.5)}) == 6
    frame = store.load("run")
    assert list(frame.columns) == ["file", "method", "x", "n", "ok", "name", "missing"]
    assert [v.hex() for v in frame["x"]] == [float(v).hex() for v in awkward]  # bit for bit
    assert frame["n"].dtype == np.int64 and frame["n"].tolist() == [0, 1, 2, 3, 4, 5]
    assert frame["ok"].dtype == bool and frame["ok"].tolist() == [False, True] * 3
    assert frame["name"].tolist() == [f"é{i}" for i in range(6)]
    assert frame["missing"].dtype == np.float64 and frame["missing"].isna().all()
    assert store.batches("run") == [{"n_images": 6, "t": 0.5}]
    mode = sqlite3.connect(tmp_path / "s.sqlite").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_a_batch_written_twice_is_stored_once(tmp_path):
    store = _store(tmp_path / "s.sqlite")
    rows = [{"file": f, "method": m, "v": 1.0} for f in ("a", "b") for m in ("p", "q")]
    assert store.write("run", rows, {"n_images": 2}) == 4
    assert store.write("run", rows, {"n_images": 2}) == 0        # skipped, not duplicated
    assert store.count("run") == 4 and len(store.batches("run")) == 1
    # a batch overlapping a stored one keeps the stored rows and adds only the new ones
    more = [{"file": f, "method": m, "v": 2.0} for f in ("b", "c") for m in ("p", "q")]
    assert store.write("run", more, {"n_images": 2}) == 2
    frame = store.load("run")
    assert frame[["file", "method", "v"]].values.tolist() == [
        ["a", "p", 1.0], ["a", "q", 1.0], ["b", "p", 1.0], ["b", "q", 1.0],
        ["c", "p", 2.0], ["c", "q", 2.0]]


def test_an_image_is_done_only_with_every_method(tmp_path):
    store = _store(tmp_path / "s.sqlite")
    store.write("run", [{"file": "a", "method": "p"}, {"file": "a", "method": "q"},
                        {"file": "b", "method": "p"}])
    assert store.done("run", ("p", "q")) == {"a"}
    assert store.done("run", ("p",)) == {"a", "b"}
    assert store.done("run", ("p", "q"), files=["b"]) == set()
    assert store.done("other", ("p", "q")) == set()


def test_rows_of_another_shape_are_refused_naming_the_store(tmp_path):
    store = _store(tmp_path / "s.sqlite")
    store.write("run", [{"file": "a", "method": "p", "x": 1.0}])
    with pytest.raises(StoreError, match=r"batch starting at b.*s\.sqlite"):
        store.write("run", [{"file": "b", "method": "p", "y": 1.0}])
    with pytest.raises(ValueError, match="needs a 'file'"):
        store.write("run", [{"name": "a"}])
    with pytest.raises(TypeError, match="scalars"):
        store.write("run", [{"file": "a", "method": "p", "x": [1, 2]}])
    with pytest.raises(StoreError, match=r"run other is not registered in .*s\.sqlite"):
        store.write("other", [{"file": "a"}])


def test_a_foreign_configuration_under_the_key_is_an_error(tmp_path):
    cache = ResultsCache(tmp_path, "t", {"model": "m"})
    cache.close()
    with sqlite3.connect(cache.path) as con:
        con.execute("UPDATE runs SET config = ? WHERE run = ?", ('{"model": "x"}', cache.key))
    with pytest.raises(StoreError, match=r"t\.sqlite holds another configuration"):
        ResultsCache(tmp_path, "t", {"model": "m"})


def test_shards_merge_once(tmp_path):
    main = ResultsStore(tmp_path / "main.sqlite")
    main.register("run", "t", {"k": 1})
    for r, files in enumerate((["a", "c"], ["b", "d"])):
        with ResultsStore(tmp_path / f"rank{r}.sqlite", wal=False) as shard:
            shard.register("run", "t", {"k": 1})
            for i, f in enumerate(files):
                shard.write("run", [{"file": f, "v": float(r)}], {"rank": r},
                            position=2 * i + r)
    assert main.merge(tmp_path / "rank0.sqlite", "run") == 2
    assert main.merge(tmp_path / "rank1.sqlite", "run") == 2
    assert main.merge(tmp_path / "rank1.sqlite", "run") == 0       # idempotent
    frame = main.load("run")
    assert frame["file"].tolist() == ["a", "b", "c", "d"]            # in batch positions
    assert frame["v"].tolist() == [0.0, 1.0, 0.0, 1.0]
    assert [b["rank"] for b in main.batches("run")] == [0, 1, 0, 1]
    with ResultsStore(tmp_path / "other.sqlite", wal=False) as other:
        other.register("run", "t", {"k": 2})
        other.write("run", [{"file": "z", "v": 0.0}])
    with pytest.raises(StoreError, match=r"other\.sqlite holds run run with another config"):
        main.merge(tmp_path / "other.sqlite", "run")


# ---------------------------------------------------------------------------------------------
# Damage


def _full_store(path: Path) -> None:
    with _store(path) as store:
        rng = np.random.default_rng(0)
        for b in range(30):
            store.write("run", [{"file": f"f{b}-{i}", "method": m, "v": rng.random()}
                                for i in range(16) for m in ("p", "q")])


@pytest.mark.parametrize("damage", ["truncated", "zero bytes", "overwritten", "not sqlite"])
def test_a_damaged_store_is_detected_naming_the_file_and_the_fix(tmp_path, damage):
    path = tmp_path / "eval.sqlite"
    _full_store(path)
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "zero bytes":
        path.write_bytes(b"")
    elif damage == "overwritten":
        path.write_bytes(data[:4096] + bytes(range(256)) * ((len(data) - 4096) // 256))
    else:
        path.write_text("file,method,v\na,p,0.5\n")
    with pytest.raises(StoreDamagedError) as err:
        ResultsStore(path)
    msg = str(err.value)
    assert f"results store {path} is damaged" in msg
    # the advice keeps a copy: move aside, never delete
    assert f"mv '{path}' '{path}.damaged'" in msg and "rerun the same command" in msg
    assert "rm " not in msg
    expected = {"truncated": "malformed", "zero bytes": "0 bytes", "overwritten": "malformed",
                "not sqlite": "file is not a database"}[damage]
    assert expected in msg


def test_a_full_disk_is_not_called_damage_and_the_store_keeps_its_rows(tmp_path):
    """SQLite's own full-disk condition (``max_page_count`` reached: SQLITE_FULL, what a full
    tmpfs gives): the write is refused in one line naming the store, the free space and its
    size, never "damaged" nor advice to delete; the store then holds exactly what it held,
    passes its integrity check and every checksum."""
    path = tmp_path / "eval.sqlite"
    _full_store(path)
    with _store(path) as store:
        before = store.load("run")
        pages = store._con.execute("PRAGMA page_count").fetchone()[0]
        store._con.execute(f"PRAGMA max_page_count = {pages}")
        big = [{"file": f"g{i}", "method": "p", "v": float(i)} for i in range(5000)]
        with pytest.raises(StoreStorageError) as err:
            store.write("run", big)
    msg = str(err.value)
    assert msg.startswith(f"results store {path}: the disk refused a write (SQLITE_FULL")
    assert "MB free there" in msg and "The store is not damaged" in msg
    assert "damaged (" not in msg and "rm " not in msg and "\n" not in msg
    with ResultsStore(path) as store:
        pd.testing.assert_frame_equal(store.load("run"), before)
        report = store.verify()
    assert report == {"integrity": ["ok"], "checked": 30, "unchecked": 0, "mismatched": []}


def test_a_value_edited_in_the_store_is_found_by_its_checksum(tmp_path, capsys):
    """One REAL value changed by hand: ``verify`` names the run and the batch, and
    ``paperlib verify-store`` says so in one line per finding and exits 1; a store written
    before checksums existed counts its batches as unchecked."""
    from paperlib.cli import main

    path = tmp_path / "eval.sqlite"
    _full_store(path)
    assert main(["verify-store", str(path)]) == 0
    assert "30 batches checked, 0 differ" in capsys.readouterr().out
    with sqlite3.connect(path) as con:
        con.execute("UPDATE rows SET v = v + 1e-9 WHERE file = 'f7-3' AND method = 'q'")
    with ResultsStore(path) as store:
        report = store.verify()
    assert report["mismatched"] == [("run", "t", "f7-0")] and report["checked"] == 30
    assert main(["verify-store", str(path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (f"{path}: run run (t), batch starting at f7-0: its rows differ from their "
                      "checksum (changed after they were stored)")
    assert "30 batches checked, 1 differ" in out[1]
    with sqlite3.connect(path) as con:
        con.execute("DROP TABLE checksums")
    with ResultsStore(path) as store:
        assert store.verify()["unchecked"] == 30
    assert main(["verify-store", str(tmp_path / "none.sqlite")]) == 2
    assert "no results store at" in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through read-only permissions")
def test_a_read_only_folder_is_a_storage_error(tmp_path):
    path = tmp_path / "ro" / "eval.sqlite"
    path.parent.mkdir()
    path.parent.chmod(0o500)
    try:
        with pytest.raises(StoreStorageError, match="the disk refused opening it"):
            ResultsStore(path)
    finally:
        path.parent.chmod(0o700)


def test_another_sqlite_file_is_not_taken_for_a_store(tmp_path):
    path = tmp_path / "eval.sqlite"
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE t (x)")
    with pytest.raises(StoreError, match=r"eval\.sqlite is an SQLite file but not a paperlib"):
        ResultsStore(path)


WRITE_FOREVER = """
import itertools, sys
from paperlib.store import ResultsStore
store = ResultsStore(sys.argv[1])
for b in itertools.count():
    store.write("run", [{"file": f"f{b}-{i}", "method": m, "v": float(b)}
                        for i in range(8) for m in ("p", "q")], {"batch": b})
"""


def test_sigkill_during_writes_leaves_only_whole_batches(tmp_path):
    path = tmp_path / "eval.sqlite"
    _store(path).close()
    proc = subprocess.Popen([sys.executable, "-c", WRITE_FOREVER, str(path)])
    try:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            with sqlite3.connect(path, timeout=30) as con:
                if con.execute("SELECT COUNT(*) FROM batches").fetchone()[0] >= 5:
                    break
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    store = ResultsStore(path)                        # intact: quick_check passes
    n_batches = len(store.batches("run"))
    assert n_batches >= 5
    assert store.count("run") == 16 * n_batches       # every batch whole, none half-written
    assert store.done("run", ("p", "q")) == {f"f{b}-{i}" for b in range(n_batches)
                                             for i in range(8)}


# ---------------------------------------------------------------------------------------------
# Two processes at once on one store


def _write_all(path: str, order: int) -> int:
    store = ResultsStore(path)
    batches = list(range(20))
    new = 0
    for b in (batches if order == 0 else batches[::-1]):
        new += store.write("run", [{"file": f"f{b}-{i}", "method": m, "v": b + i / 10}
                                   for i in range(4) for m in ("p", "q")], {"batch": b})
    return new


def test_two_writers_at_once_store_every_row_once(tmp_path):
    path = tmp_path / "eval.sqlite"
    _store(path).close()
    with mp.get_context("spawn").Pool(2) as pool:
        new = pool.starmap(_write_all, [(str(path), 0), (str(path), 1)])
    store = ResultsStore(path)
    assert sum(new) == store.count("run") == 20 * 4 * 2
    assert len(store.batches("run")) == 20
    frame = store.load("run")
    assert not frame.duplicated(["file", "method"]).any()


def _evaluate(data_dir: str, results: str) -> int:
    import torch

    from paperlib import load_images, load_model

    torch.set_num_threads(1)  # two processes on the machine's cores
    bb = load_model("efficientnet_lite0", device="cpu")
    run = evaluation.run_evaluation(bb, load_images(data_dir),
                                    evaluation.EvalSettings.from_parameters(SETTINGS), results,
                                    progress=False)
    return len(run.frame)


def test_two_evaluations_at_once_on_one_store(data_dir, tmp_path, lite0, sample_dataset):
    with mp.get_context("spawn").Pool(2) as pool:
        sizes = pool.starmap(_evaluate, [(str(data_dir), str(tmp_path))] * 2)
    assert sizes == [4 * 2, 4 * 2]
    with sqlite3.connect(tmp_path / "cache" / "eval.sqlite") as con:
        assert con.execute("SELECT COUNT(*) FROM rows").fetchone()[0] == 4 * 2
    run = evaluation.run_evaluation(lite0, sample_dataset,
                                    evaluation.EvalSettings.from_parameters(SETTINGS), tmp_path,
                                    progress=False)
    assert len(run.frame) == 8 and sum(b["n_images"] for b in run.batches) == 4
    assert tables.table3(run.frame, SETTINGS["methods"])["n_images"].tolist() == [4, 4]


# ---------------------------------------------------------------------------------------------
# The run key follows the exact files


def _copy_of_sample(data_dir: Path, dest: Path, names: list[str]) -> Path:
    dest.mkdir()
    for name in names:
        shutil.copy2(data_dir / name, dest / name)
    return dest


EVAL_FILES = ["n01440764_tench.JPEG", "n01484850_great_white_shark.JPEG",
              "n01494475_hammerhead.JPEG"]


def test_adding_an_image_starts_a_new_run(data_dir, tmp_path, lite0):
    folder = _copy_of_sample(data_dir, tmp_path / "data", EVAL_FILES[:2])
    s = evaluation.EvalSettings.from_parameters({**SETTINGS, "n_images": None, "split": "all"})
    first = evaluation.run_evaluation(lite0, load_images(folder), s, tmp_path / "r",
                                      progress=False)
    assert sorted(first.frame["file"].unique()) == EVAL_FILES[:2]
    shutil.copy2(data_dir / EVAL_FILES[2], folder / EVAL_FILES[2])
    second = evaluation.run_evaluation(lite0, load_images(folder), s, tmp_path / "r",
                                       progress=False)
    assert second.run_key != first.run_key and second.store == first.store
    assert sorted(second.frame["file"].unique()) == EVAL_FILES
    # n_images=2 of the grown folder: two images, its own run (never the 3 stored ones)
    two = evaluation.EvalSettings.from_parameters({**SETTINGS, "n_images": 2, "split": "all"})
    sub = evaluation.run_evaluation(lite0, load_images(folder), two, tmp_path / "r",
                                    progress=False)
    assert sub.frame["file"].nunique() == 2 and len(sub.frame) == 4
    # replacing an image's bytes (same name) starts another run too
    os.utime(folder / EVAL_FILES[0], ns=(1, 1))
    again = evaluation.run_evaluation(lite0, load_images(folder), s, tmp_path / "r",
                                      progress=False, max_batches=0)
    assert again.run_key not in (first.run_key, second.run_key) and again.frame.empty
    # the earlier runs are still there, untouched
    with ResultsStore(first.store) as store:
        assert store.count(first.run_key) == 4 and store.count(second.run_key) == 6


# ---------------------------------------------------------------------------------------------
# No usable image; an empty run's speed


def test_an_evaluation_without_a_usable_image_raises_naming_the_folder(tmp_path, lite0):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "n01443537_a.JPEG").write_bytes(b"\xff\xd8\xff not a jpeg")
    (folder / "n01484850_b.png").write_bytes(b"not a png")
    s = evaluation.EvalSettings.from_parameters({**SETTINGS, "n_images": None, "split": "all"})
    with pytest.warns(BadImageWarning):
        with pytest.raises(ValueError, match="no usable image") as err:
            evaluation.run_evaluation(lite0, load_images(folder), s, tmp_path / "r",
                                      progress=False)
    msg = str(err.value)
    assert str(folder) in msg and "all 2 image(s) of split 'all'" in msg
    assert "skipped n01443537_a.JPEG: not a readable image" in msg
    assert "skipped n01484850_b.png: not a readable image" in msg
    with ResultsStore(tmp_path / "r" / "cache" / "eval.sqlite") as store:
        (key,) = store.runs()
        assert store.count(key) == 0                  # nothing computed, nothing stored


def test_a_split_without_images_raises(tmp_path, lite0):
    folder = tmp_path / "train-only"
    folder.mkdir()
    Image.new("RGB", (8, 8)).save(folder / "n01440764_tench.png")   # class 0: the train split
    with pytest.raises(ValueError, match=r"no image of split 'eval' among the 1 images of"):
        evaluation.run_evaluation(lite0, load_images(folder),
                                  evaluation.EvalSettings.from_parameters(SETTINGS), tmp_path,
                                  progress=False)


def test_speed_of_an_empty_run_is_nan_not_a_division_by_zero(tmp_path):
    s = evaluation.EvalSettings.from_parameters(SETTINGS)
    empty = evaluation.Evaluation(pd.DataFrame(), [], s, tmp_path / "eval.sqlite", "k", "m")
    speed = empty.speed()
    assert speed["images"] == 0 and speed["metric_forwards"] == 0
    assert math.isnan(speed["ratio_to_floor"]) and math.isnan(speed["floor_ms_per_image"])
    assert math.isnan(speed["explain_ms_per_image[gradcam]"])
    assert math.isnan(speed["extra_forwards_per_image[xgradcam]"])


def test_an_io_error_while_opening_is_not_called_damage(tmp_path, monkeypatch):
    """SQLite's disk I/O error during the open's checks (what a nearly full tmpfs gave): a
    storage error naming the store and the free space, never "damaged"."""
    from paperlib import store as store_module

    path = tmp_path / "eval.sqlite"
    _full_store(path)
    real = store_module.sqlite3.connect

    class Failing:
        def __init__(self, con):
            self.con = con

        def execute(self, sql, *args):
            if sql.startswith("PRAGMA quick_check"):
                raise sqlite3.OperationalError("disk I/O error")
            return self.con.execute(sql, *args)

        def close(self):
            self.con.close()

    monkeypatch.setattr(store_module.sqlite3, "connect", lambda *a, **k: Failing(real(*a, **k)))
    with pytest.raises(StoreStorageError) as err:
        ResultsStore(path)
    msg = str(err.value)
    assert msg.startswith(f"results store {path}: the disk refused opening it (disk I/O error)")
    assert "not damaged" in msg and "MB free there" in msg
