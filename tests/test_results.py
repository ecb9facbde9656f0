"""The results cache over the SQLite store and the resumable evaluation run."""

import sqlite3

import pandas as pd
import pytest

from paperlib import evaluation
from paperlib.fingerprint import config_hash
from paperlib.runs import ResultsCache
from paperlib.store import ResultsStore, StoreError


def test_cache_round_trip_and_atomic_batches(tmp_path):
    cache = ResultsCache(tmp_path, "t", {"model": "m", "seed": 0})
    assert cache.load().empty and cache.done() == set()
    assert cache.write_batch([{"file": "a", "v": 0.1 + 0.2}, {"file": "b", "v": 1 / 3}],
                             {"n_images": 2}) == 2
    assert cache.write_batch([{"file": "c", "v": 2.0}], {"n_images": 1}) == 1
    frame = cache.load()
    assert list(frame.columns) == ["file", "v"]
    assert list(frame["file"]) == ["a", "b", "c"]
    assert frame["v"].iloc[1] == 1 / 3          # floats round-trip exactly
    assert frame["v"].iloc[0] == 0.1 + 0.2
    assert cache.done() == {"a", "b", "c"}
    assert [s["n_images"] for s in cache.batch_stats()] == [2, 1]
    assert [s["world_size"] for s in cache.batch_stats()] == [1, 1]
    assert cache.path == tmp_path / "t.sqlite"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.sqlite", "t.sqlite-shm",
                                                          "t.sqlite-wal"]  # no temporary file
    cache.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.sqlite"]   # WAL checkpointed


def test_changed_parameters_never_mix(tmp_path):
    a = ResultsCache(tmp_path, "t", {"model": "m", "fill": "black", "n_images": 8, "seed": 0})
    a.write_batch([{"file": "x", "v": 1.0}])
    for change in ({"model": "n"}, {"fill": "blur"}, {"n_images": 9}, {"seed": 1}):
        other = ResultsCache(tmp_path, "t", {**a.config, **change})
        assert other.key != a.key and other.path == a.path
        assert other.load().empty and other.done() == set()
    assert config_hash({"x": 1, "y": 2}) == config_hash({"y": 2, "x": 1})
    with ResultsStore(a.path) as store:
        assert len(store.runs()) == 5


def test_a_foreign_config_under_the_key_is_an_error(tmp_path):
    cache = ResultsCache(tmp_path, "t", {"model": "m"})
    cache.close()
    with sqlite3.connect(cache.path) as con:
        con.execute("UPDATE runs SET config = '{\"model\": \"other\"}'")
    with pytest.raises(StoreError, match="another configuration"):
        ResultsCache(tmp_path, "t", {"model": "m"})


SETTINGS = dict(methods=("gradcam", "xgradcam"), n_images=4, curve_steps=4, batch_size=2,
                chunk_size=8)


def settings() -> evaluation.EvalSettings:
    return evaluation.EvalSettings.from_parameters(SETTINGS)


def _stored(ev: evaluation.Evaluation) -> list[tuple]:
    """Every stored row of the run with its rowid (changes if a row is ever rewritten)."""
    with sqlite3.connect(ev.store) as con:
        return con.execute("SELECT rowid, * FROM rows WHERE _run = ? ORDER BY rowid",
                           (ev.run_key,)).fetchall()


def test_evaluation_resumes_without_recomputing(lite0, sample_dataset, tmp_path):
    s = settings()
    first = evaluation.run_evaluation(lite0, sample_dataset, s, tmp_path, progress=False,
                                      max_batches=1)
    assert first.frame["file"].nunique() == 2 and len(first.batches) == 1
    assert first.store == tmp_path / "cache" / "eval.sqlite"
    before = _stored(first)
    resumed = evaluation.run_evaluation(lite0, sample_dataset, s, tmp_path, progress=False)
    assert resumed.run_key == first.run_key
    assert resumed.frame["file"].nunique() == 4
    assert _stored(resumed)[: len(before)] == before                  # finished batch untouched
    again = evaluation.run_evaluation(lite0, sample_dataset, s, tmp_path, progress=False)
    assert len(again.batches) == 2                                    # nothing recomputed
    assert _stored(again) == _stored(resumed)
    fresh = evaluation.run_evaluation(lite0, sample_dataset, s, tmp_path / "fresh",
                                      progress=False)
    # same batches, same numbers: the resumed run equals a fresh one exactly
    pd.testing.assert_frame_equal(resumed.frame, fresh.frame, check_exact=True)
    assert list(resumed.frame.columns) == list(s.metrics.row_schema.columns())
    assert set(resumed.frame["label"] % 4) == {2}                    # evaluation split only


def test_an_interrupted_run_keeps_finished_batches(lite0, sample_dataset, tmp_path, monkeypatch):
    s = settings()
    real = evaluation.evaluate_batch
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated interruption")
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluation, "evaluate_batch", flaky)
    with pytest.raises(KeyboardInterrupt):
        evaluation.run_evaluation(lite0, sample_dataset, s, tmp_path, progress=False)
    monkeypatch.setattr(evaluation, "evaluate_batch", real)
    done = evaluation.run_evaluation(lite0, sample_dataset, s, tmp_path, progress=False,
                                     max_batches=0)
    assert done.frame["file"].nunique() == 2          # the first batch survived the interruption
    assert len(done.frame) == 2 * 2
    full = evaluation.run_evaluation(lite0, sample_dataset, s, tmp_path, progress=False)
    assert full.frame["file"].nunique() == 4 and len(full.frame) == 4 * 2


def test_speed_report(lite0, sample_dataset, tmp_path):
    ev = evaluation.run_evaluation(lite0, sample_dataset, settings(),
                                   tmp_path, progress=False)
    speed = ev.speed()
    per_image_method = 1 + 5 + 2 * (4 - 1)
    assert speed["metric_forwards"] == 4 * 2 + 4 * 2 * per_image_method
    assert speed["images"] == 4
    assert speed["ratio_to_floor"] == speed["metric_seconds"] / speed["floor_seconds"]
    floor = sum(b["metric_forwards"] * b["floor_seconds_per_image"] for b in ev.batches)
    assert speed["floor_ms_per_image"] == 1000 * floor / speed["metric_forwards"]
    assert [b["files"] for b in ev.batches] == [list(ev.frame["file"].unique()[:2]),
                                               list(ev.frame["file"].unique()[2:])]
    assert all(b["batch_seconds"] >= b["metric_seconds"] for b in ev.batches)


def test_fingerprint_changes_with_the_code(tmp_path):
    from paperlib.fingerprint import fingerprint

    a, b = tmp_path / "a.py", tmp_path / "b.pt"
    a.write_text("x = 1\n")
    first = fingerprint([a, b])
    assert fingerprint([a, b]) == first
    b.write_bytes(b"checkpoint")
    assert fingerprint([a, b]) != first
    a.write_text("x = 2\n")
    assert len({first, fingerprint([a, b])}) == 2
