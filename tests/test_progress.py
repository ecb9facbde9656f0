"""The progress bar's plain-text log (``PAPERLIB_PROGRESS_LOG``) and ``make reproduce``'s tail of
it: lines at most every 2 s with counts and times, a final ``N/N`` line, nothing without the
variable, and the tail printing what is appended, indented."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from paperlib import cli, reproduce
from paperlib import progress as progress_module
from paperlib.progress import LOG_ENV, format_duration, progress


class FakeClock:
    """A clock that advances only when told to."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(progress_module, "_now", fake)
    return fake


def test_format_duration():
    assert [format_duration(s) for s in (0, 5.4, 61, 3725, -3)] == [
        "0:00", "0:05", "1:01", "62:05", "0:00"]


def test_log_lines_throttled_with_counts_and_final_line(tmp_path: Path, clock: FakeClock,
                                                        monkeypatch: pytest.MonkeyPatch):
    log = tmp_path / "progress.log"
    monkeypatch.setenv(LOG_ENV, str(log))
    with progress(10, "evaluation") as bar:
        for _ in range(10):
            clock.t += 0.5  # one image every 0.5 s: a line every 4 images (2 s)
            bar.update(1)
    lines = log.read_text().splitlines()
    assert lines == [
        "evaluation: 0/10 img | 0:00 elapsed | ~? left",
        "evaluation: 4/10 img | 0:02 elapsed | ~0:03 left",
        "evaluation: 8/10 img | 0:04 elapsed | ~0:01 left",
        "evaluation: 10/10 img | 0:05 elapsed | ~0:00 left",
    ]


def test_final_line_written_once_and_on_early_close(tmp_path: Path, clock: FakeClock,
                                                    monkeypatch: pytest.MonkeyPatch):
    log = tmp_path / "progress.log"
    monkeypatch.setenv(LOG_ENV, str(log))
    with progress(3, "accuracy", unit="batch") as bar:
        clock.t += 10
        bar.update(3)  # logged by the update (10 s since the last line): close adds nothing
    bar.close()
    with pytest.raises(RuntimeError), progress(5, "cascade", unit="step") as bar:
        bar.update(2)
        raise RuntimeError("interrupted")
    assert log.read_text().splitlines() == [
        "accuracy: 0/3 batch | 0:00 elapsed | ~? left",
        "accuracy: 3/3 batch | 0:10 elapsed | ~0:00 left",
        "cascade: 0/5 step | 0:00 elapsed | ~? left",
        "cascade: 2/5 step | 0:00 elapsed | ~0:00 left",
    ]


def test_many_fast_updates_end_with_full_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    log = tmp_path / "progress.log"
    monkeypatch.setenv(LOG_ENV, str(log))
    with progress(250, "evaluation") as bar:
        for _ in range(25):
            bar.update(10)
    lines = log.read_text().splitlines()
    assert 2 <= len(lines) <= 3  # the start, the end, at most one in between (real clock)
    assert lines[-1].startswith("evaluation: 250/250 img | ")
    assert lines[-1].endswith(" left")


def test_no_log_without_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(LOG_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    with progress(4, "evaluation") as bar:
        for _ in range(4):
            bar.update(1)
    assert bar.log_path is None
    assert list(tmp_path.iterdir()) == []


def test_disabled_bar_logs_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    log = tmp_path / "progress.log"
    monkeypatch.setenv(LOG_ENV, str(log))
    with progress(4, "evaluation", disable=True) as bar:
        bar.update(4)
    assert bar.done == 4
    assert not log.exists()


def test_unwritable_log_warns_and_the_loop_goes_on(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(LOG_ENV, str(tmp_path / "missing-folder" / "progress.log"))
    with pytest.warns(UserWarning, match="progress log"), progress(2, "evaluation") as bar:
        bar.update(2)
    assert bar.done == 2 and bar.log_path is None


def test_tail_prints_appended_lines_indented(tmp_path: Path, capsys: pytest.CaptureFixture):
    log = tmp_path / "progress.log"
    log.write_text("written before the start\n")
    stop = threading.Event()
    thread = threading.Thread(target=reproduce.tail_progress,
                              args=(log, stop, log.stat().st_size, 0.01), daemon=True)
    thread.start()
    with open(log, "a") as f:
        f.write("evaluation: 0/8 img | 0:00 elapsed | ~? left\n")
        f.flush()
        time.sleep(0.1)
        f.write("evaluation: 8/8 img")  # half a line: printed once whole
        f.flush()
        time.sleep(0.1)
        f.write(" | 0:02 elapsed | ~0:00 left\n")
    stop.set()
    thread.join(timeout=120)
    assert not thread.is_alive()
    assert capsys.readouterr().out.splitlines() == [
        "    evaluation: 0/8 img | 0:00 elapsed | ~? left",
        "    evaluation: 8/8 img | 0:02 elapsed | ~0:00 left",
    ]


def test_show_progress_prints_the_block_s_lines_and_stops(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture):
    log = tmp_path / "progress.log"
    log.write_text("an earlier notebook's line\n")
    before = threading.active_count()
    with reproduce.show_progress(log), open(log, "a") as f:
        f.write("accuracy: 1/1 batch | 0:00 elapsed | ~0:00 left\n")
    assert threading.active_count() == before
    assert capsys.readouterr().out == "    accuracy: 1/1 batch | 0:00 elapsed | ~0:00 left\n"


def test_reproduce_main_sets_the_log_for_the_kernel_and_prints_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    """main() points PAPERLIB_PROGRESS_LOG at a fresh file under results/logs while a notebook
    runs (here a stand-in for papermill that counts with progress()), prints its lines, and
    restores the variable afterwards."""
    import papermill

    monkeypatch.setenv("PAPERLIB_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("PAPERLIB_FIGURES", str(tmp_path / "figures"))
    monkeypatch.delenv(LOG_ENV, raising=False)
    seen: list[str] = []

    def fake_execute_notebook(*args: object, **kwargs: object) -> None:
        seen.append(os.environ[LOG_ENV])
        with progress(3, "fake evaluation") as bar:
            bar.update(3)

    monkeypatch.setattr(papermill, "execute_notebook", fake_execute_notebook)
    # the evaluation in torchrun processes (make reproduce's default) is a stand-in too: it runs
    # first, with the log set as for the notebook
    from paperlib import reproduce
    before: list[tuple[int, str]] = []
    monkeypatch.setattr(reproduce, "run_evaluation_in_processes",
                        lambda args, n: before.append((n, os.environ[LOG_ENV])))
    assert cli.main(["reproduce", "--only", "04_tables", "--processes", "2"]) == 0
    assert len(seen) == 1 and before == [(2, seen[0])]
    log = Path(seen[0])
    assert log.parent == tmp_path / "results" / "logs"
    assert log.read_text().splitlines()[-1].startswith("fake evaluation: 3/3 img")
    out = capsys.readouterr().out
    assert "    fake evaluation: 3/3 img | " in out
    assert out.index("    fake evaluation: 3/3") < out.index("    done in")
    assert LOG_ENV not in os.environ
