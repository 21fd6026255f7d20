"""Seeing the work on the local backend: progress bars, live output, logs, summaries,
pictures, and job data that does not pile up."""

from __future__ import annotations

import io
import logging
import os
import sys
import time

import pytest

import wrencore
from wrencore import progress
from wrencore.summary import DONE, FAILED


def slow_square(x):
    time.sleep(0.05)
    return x * x


def chatty(path):
    """Prints and logs, then waits until ``path`` exists."""
    print("started")
    logging.getLogger("user.module").info("working on %s", os.path.basename(path))
    print("to stderr", file=sys.stderr)
    deadline = time.time() + 30
    while not os.path.exists(path) and time.time() < deadline:
        time.sleep(0.02)
    print("finished")
    return 1


def fail_on_three(x):
    time.sleep(0.01 * (x % 3))
    if x == 3:
        raise ValueError("three")
    return x


@pytest.fixture
def executor(tmp_path):
    with wrencore.Executor(max_workers=2,
                           config={"localfs": {"root": str(tmp_path / "storage")}}) as ex:
        yield ex


@pytest.fixture
def no_progress_config(monkeypatch):
    monkeypatch.delenv("WRENCORE_PROGRESS", raising=False)
    monkeypatch.setattr(progress, "_configured", None)


# -- progress bars -------------------------------------------------------------------------

def test_progress_bar_is_silent_when_output_is_not_a_terminal(executor, capfd,
                                                               no_progress_config):
    assert not progress.interactive_console()  # pytest captures stderr
    futures = executor.map_futures(slow_square, range(6))
    assert wrencore.get_all_results(futures) == [x * x for x in range(6)]
    assert list(executor.map(slow_square, range(3))) == [0, 1, 4]
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize("how", ["get_all_results", "wait", "as_completed", "Executor.map"])
def test_progress_bar_when_asked(executor, capfd, how):
    futures = executor.map_futures(slow_square, range(6))
    if how == "get_all_results":
        wrencore.get_all_results(futures, progress=True)
    elif how == "wait":
        wrencore.wait(futures, progress=True)
    elif how == "as_completed":
        assert len(list(wrencore.as_completed(futures, progress=True))) == 6
    else:
        executor.progress = True
        assert list(executor.map(slow_square, range(6))) == [x * x for x in range(6)]
    err = capfd.readouterr().err
    assert "wrencore:" in err and "/6 [" in err and "call/s" in err, err


def test_progress_bar_follows_the_terminal_and_the_config(monkeypatch, no_progress_config):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stderr", Terminal())
    assert progress.enabled(None)
    monkeypatch.setenv("WRENCORE_PROGRESS", "false")
    monkeypatch.setattr(progress, "_configured", None)
    assert not progress.enabled(None)
    assert progress.enabled(True)
    with pytest.raises(wrencore.ConfigError, match="progress"):
        wrencore.Executor(config={"progress": "sometimes"})


# -- live output and logs ------------------------------------------------------------------

def test_output_and_log_records_are_available_while_the_call_runs(executor, tmp_path):
    release = tmp_path / "release"
    future = executor.submit(chatty, str(release))
    deadline = time.time() + 20
    while "to stderr" not in future.logs() and time.time() < deadline:
        time.sleep(0.02)
    running = future.logs()
    assert not future.done()
    assert running.startswith("started\n")
    assert "INFO user.module: working on release\n" in running
    assert running.endswith("to stderr\n")
    release.touch()
    assert future.result(timeout=20) == 1
    assert future.logs() == running + "finished\n"
    assert future.stdout == "started\nfinished\n" and future.stderr == "to stderr\n"
    assert [r[1:] for r in future.log_records] == [["INFO", "user.module", "working on release"]]


def test_live_output_is_echoed_with_the_call_id(tmp_path, capsys):
    release = tmp_path / "release"
    release.touch()
    with wrencore.Executor(max_workers=1, live_output=True,
                           config={"localfs": {"root": str(tmp_path / "s")}}) as ex:
        futures = [ex.submit(chatty, str(release)) for _ in range(2)]
        wrencore.wait(futures)
    out, err = capsys.readouterr()
    assert out.count("[00000] started\n") == 1 and "[00001] finished\n" in out
    assert "[00001] to stderr\n" in err
    assert "INFO user.module: working on release" in err.split("[00000] ")[1]


# -- summaries and pictures ----------------------------------------------------------------

def test_summary_counts_times_and_workers(executor, capsys):
    futures = executor.map_futures(fail_on_three, range(20))
    wrencore.wait(futures)
    summary = executor.summary(futures[0].job_id)
    assert summary.calls == 20 and summary.pending == 0
    assert summary.states == {DONE: 19, FAILED: 1} and summary.errors == {"ValueError": 1}
    assert 1 <= len(summary.workers) <= 2 and sum(summary.workers.values()) == 20
    assert sum(summary.hosts.values()) == 20
    durations = sorted(f.metadata["worker_end_timestamp"] - f.metadata["worker_start_timestamp"]
                       for f in futures)
    assert summary.percentiles["max"] == pytest.approx(durations[-1])
    assert summary.percentiles["p50"] == pytest.approx(durations[9])
    assert summary.slowest[0][1] == pytest.approx(durations[-1])
    assert summary.call_time == pytest.approx(sum(durations))
    first_submit = min(f.metadata["host_submit_timestamp"] for f in futures)
    last_end = max(f.metadata["worker_end_timestamp"] for f in futures)
    assert summary.wall_time == pytest.approx(last_end - first_submit)
    line = str(summary)
    assert "\n" not in line and "20 calls (19 done, 1 failed)" in line


def test_summary_line_is_printed_at_the_end_of_each_job_when_asked(tmp_path, capsys):
    with wrencore.Executor(max_workers=2, summary=True,
                           config={"localfs": {"root": str(tmp_path / "s")}}) as ex:
        futures = ex.map_futures(slow_square, range(4))
        wrencore.wait(futures)
        deadline = time.time() + 10
        while futures[0].job_id not in capsys.readouterr().err and time.time() < deadline:
            time.sleep(0.05)
        ex.submit(slow_square, 2).result()
    err = capsys.readouterr().err
    assert err.count("wrencore: job ") == 1 and "1 calls (1 done)" in err  # the submit job


def test_plot_draws_every_call(executor, tmp_path):
    futures = executor.map_futures(fail_on_three, range(30))
    wrencore.wait(futures)
    path = tmp_path / "job.png"
    from wrencore.plot import plot_records

    assert executor.plot(str(path)) == str(path)
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    records = executor._records(None)[0]
    figure = plot_records(records)
    timeline, histogram = figure.axes
    collections = {c.get_gid(): c for c in timeline.collections}
    running = collections["running"].get_segments()
    assert len(running) == 30 and len(collections["waiting"].get_segments()) == 30
    starts = sorted(round(seg[0][0], 6) for seg in running)
    origin = min(f.metadata["host_submit_timestamp"] for f in futures)
    assert starts == sorted(round(f.metadata["worker_start_timestamp"] - origin, 6)
                            for f in futures)
    rows = {seg[0][1] for seg in running}
    assert len(rows) == len({f.metadata["worker_id"] for f in futures})
    bars = [p for p in histogram.patches]
    assert sum(bar.get_height() for bar in bars) == 30


def test_plot_command_reads_the_jobs_timeline(executor, tmp_path, monkeypatch, capsys):
    futures = executor.map_futures(slow_square, range(5))
    wrencore.wait(futures)
    executor.shutdown()  # timelines are written by then
    job_id = futures[0].job_id
    monkeypatch.setenv("WRENCORE_LOCALFS__ROOT", str(tmp_path / "storage"))
    from wrencore.cli import main

    out = tmp_path / "plot.png"
    assert main(["plot", job_id, "-o", str(out)]) == 0
    assert f"5 calls of job {job_id}" in capsys.readouterr().out and out.stat().st_size > 0
    assert main(["plot", "20200101T000000-00000000-0"]) == 1
    assert "has no timeline.json" in capsys.readouterr().err


# -- job data ------------------------------------------------------------------------------

def test_module_level_map_cleans_up_after_reading_results(tmp_path, monkeypatch):
    root = tmp_path / "storage"
    monkeypatch.setenv("WRENCORE_LOCALFS__ROOT", str(root))
    monkeypatch.setattr(wrencore, "_default_executors", {})
    try:
        big = wrencore.map(bytes, [20_000_000, 1])  # a result staged in storage
        assert [len(r) for r in wrencore.get_all_results(big)] == [20_000_000, 1]
        kept = wrencore.map(slow_square, [1, 2], cleanup=False)
        assert wrencore.get_all_results(kept) == [1, 4]
        deadline = time.time() + 10
        while (root / big[0].job_id).exists() and time.time() < deadline:
            time.sleep(0.05)
        assert not (root / big[0].job_id).exists()
        while not (root / kept[0].job_id / "timeline.json").exists() and time.time() < deadline:
            time.sleep(0.05)
        assert (root / kept[0].job_id / "func.pickle").exists()
    finally:
        wrencore.shutdown_default_executors()


def test_local_storage_drops_jobs_older_than_max_age(tmp_path):
    from wrencore_local.prune import prune_in_background, prune_jobs

    root = tmp_path / "storage"
    old, new = root / "20200101T000000-0123abcd-0", root / "20200101T000000-0123abcd-1"
    for job in (old, new):
        (job / "00001").mkdir(parents=True)
        (job / "job.json").write_text("{}")
    (root / "runtimes" / "abc").mkdir(parents=True)
    day_ago = time.time() - 86400
    for path in (old, old / "00001", old / "job.json", root / "runtimes"):
        os.utime(path, (day_ago, day_ago))
    assert prune_jobs(str(root), max_age=3600) == 1
    assert not old.exists() and new.exists() and (root / "runtimes" / "abc").exists()
    os.utime(new, (day_ago, day_ago))  # a recent entry inside keeps it
    assert prune_jobs(str(root), max_age=3600) == 0

    for path in (new, new / "00001", new / "job.json"):
        os.utime(path, (day_ago, day_ago))
    with wrencore.Executor(config={"localfs": {"root": str(root), "max_age": 3600}}):
        deadline = time.time() + 10
        while new.exists() and time.time() < deadline:
            time.sleep(0.05)
    assert not new.exists()
    assert prune_in_background(str(root), 3600) is None  # once per process and root


def test_a_root_is_scanned_at_most_once_an_interval_by_all_processes(tmp_path, monkeypatch):
    from wrencore_local import prune

    monkeypatch.setenv("WRENCORE_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "storage"
    day_ago = time.time() - 86400

    def old_job(name):
        job = root / name
        (job / "00001").mkdir(parents=True)
        for path in (job / "00001", job):
            os.utime(path, (day_ago, day_ago))
        return job

    def prune_as_a_new_process():
        prune._pruned_roots.discard(str(root))
        thread = prune.prune_in_background(str(root), 3600)
        if thread is not None:
            thread.join(10)
        return thread is not None

    first = old_job("20200101T000000-0123abcd-0")
    assert prune_as_a_new_process() and not first.exists()
    second = old_job("20200101T000000-0123abcd-1")
    assert not prune_as_a_new_process() and second.exists()  # scanned a moment ago
    stamp = prune._stamp_path(str(root))
    os.utime(stamp, (time.time() - 3601, time.time() - 3601))
    assert prune_as_a_new_process() and not second.exists()
    third = old_job("20200101T000000-0123abcd-2")
    assert not prune_as_a_new_process() and third.exists()
    os.utime(stamp, (time.time() - 61, time.time() - 61))  # a max_age under the interval
    prune._pruned_roots.discard(str(root))
    prune.prune_in_background(str(root), 60).join(10)
    assert not third.exists()
