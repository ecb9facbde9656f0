"""The results cache and the resumable evaluation run."""

import json

import pandas as pd
import pytest

from paperlib import evaluation
from paperlib.results import ResultsCache, atomic_write_text, config_hash


def test_cache_round_trip_and_atomic_parts(tmp_path):
    cache = ResultsCache(tmp_path, "t", {"model": "m", "seed": 0})
    assert cache.load().empty and cache.done() == set()
    cache.write_batch([{"file": "a", "v": 0.1 + 0.2}, {"file": "b", "v": 1 / 3}], {"n_images": 2})
    cache.write_batch([{"file": "c", "v": 2.0}], {"n_images": 1})
    frame = cache.load()
    assert list(frame["file"]) == ["a", "b", "c"]
    assert frame["v"].iloc[1] == 1 / 3          # floats round-trip exactly
    assert cache.done() == {"a", "b", "c"}
    assert [s["n_images"] for s in cache.batch_stats()] == [2, 1]
    assert not list(cache.dir.glob("*.tmp"))     # no temporary file left behind


def test_changed_parameters_never_mix(tmp_path):
    a = ResultsCache(tmp_path, "t", {"model": "m", "fill": "black", "n_images": 8, "seed": 0})
    for change in ({"model": "n"}, {"fill": "blur"}, {"n_images": 9}, {"seed": 1}):
        other = ResultsCache(tmp_path, "t", {**a.config, **change})
        assert other.dir != a.dir
    assert config_hash({"x": 1, "y": 2}) == config_hash({"y": 2, "x": 1})


def test_a_foreign_config_in_the_folder_is_an_error(tmp_path):
    cache = ResultsCache(tmp_path, "t", {"model": "m"})
    atomic_write_text(cache.dir / "config.json", json.dumps({"model": "other"}))
    with pytest.raises(RuntimeError, match="another configuration"):
        ResultsCache(tmp_path, "t", {"model": "m"})


SETTINGS = dict(methods=("gradcam", "xgradcam"), n_images=4, curve_steps=4, batch_size=2,
                chunk_size=8)


def settings() -> evaluation.EvalSettings:
    return evaluation.EvalSettings.from_parameters(SETTINGS)


def test_evaluation_resumes_without_recomputing(lite0, sample_dataset, tmp_path):
    s = settings()
    first = evaluation.run_evaluation(lite0, sample_dataset, s, tmp_path, progress=False,
                                      max_batches=1)
    assert first.frame["file"].nunique() == 2
    part0 = sorted(first.cache_dir.glob("part-*.csv"))[0]
    before = (part0.read_bytes(), part0.stat().st_mtime_ns)
    resumed = evaluation.run_evaluation(lite0, sample_dataset, s, tmp_path, progress=False)
    assert resumed.frame["file"].nunique() == 4
    assert (part0.read_bytes(), part0.stat().st_mtime_ns) == before   # finished batch untouched
    again = evaluation.run_evaluation(lite0, sample_dataset, s, tmp_path, progress=False)
    assert len(again.batches) == 2                                    # nothing recomputed
    fresh = evaluation.run_evaluation(lite0, sample_dataset, s, tmp_path / "fresh",
                                      progress=False)
    cols = ["file", "method", "Y", "O_soft", "drop_soft", "O_top20", "deletion_auc"]
    key = ["file", "method"]
    pd.testing.assert_frame_equal(resumed.frame[cols].sort_values(key).reset_index(drop=True),
                                  fresh.frame[cols].sort_values(key).reset_index(drop=True),
                                  atol=1e-6, rtol=0)
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
    full = evaluation.run_evaluation(lite0, sample_dataset, s, tmp_path, progress=False)
    assert full.frame["file"].nunique() == 4


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


def test_fingerprint_changes_with_the_code(tmp_path):
    from paperlib.results import fingerprint

    a, b = tmp_path / "a.py", tmp_path / "b.pt"
    a.write_text("x = 1\n")
    first = fingerprint([a, b])
    assert fingerprint([a, b]) == first
    b.write_bytes(b"checkpoint")
    assert fingerprint([a, b]) != first
    a.write_text("x = 2\n")
    assert len({first, fingerprint([a, b])}) == 2
