"""Call records, summaries and timelines, from futures completed by hand."""

from __future__ import annotations

import concurrent.futures

import pytest

from wrencore.errors import CallCancelledError
from wrencore.futures import Future
from wrencore.summary import (
    CANCELLED, DONE, FAILED, CallRecord, JobRecords, record_of, records_from_timeline,
    summarize,
)


def _future(call_id, start, seconds, worker="w0", host="h0", error=None):
    future = Future("job-1", call_id)
    future.metadata.update(host_submit_timestamp=100.0, worker_start_timestamp=start,
                           worker_end_timestamp=start + seconds, worker_id=worker,
                           worker_hostname=host)
    future.set_running_or_notify_cancel()
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
    return future


@pytest.fixture
def futures():
    done = [_future(f"{i:05d}", 101.0 + i, 0.1 * (i + 1), worker=f"w{i % 3}",
                    host=f"h{i % 2}") for i in range(10)]
    failed = _future("00010", 105.0, 2.0, error=ValueError("bad"))
    stopped = _future("00011", 106.0, 0.5, error=CallCancelledError("stopped"))
    never = Future("job-1", "reduce")
    never.cancel()
    return done + [failed, stopped, never]


def test_records_kept_column_by_column_are_the_futures_records(futures):
    records = JobRecords("job-1")
    for future in futures:
        records.add(future)
    assert records.records() == [record_of(f) for f in futures]
    assert [r.state for r in records.records()[-3:]] == [FAILED, CANCELLED, CANCELLED]
    assert records_from_timeline(records.timeline_json()) == records.records()


def test_timelines_keep_times_to_the_microsecond_and_old_timelines_still_read():
    future = _future("00000", 1_700_000_000.1234567, 0.25)
    records = JobRecords("job-1")
    records.add(future)
    assert records.records()[0].started == 1_700_000_000.1234567  # exact in memory
    (record,) = records_from_timeline(records.timeline_json())
    assert record.started == 1_700_000_000.123457 and record.submitted == 100.0
    assert abs(record.finished - (1_700_000_000.1234567 + 0.25)) < 1e-6
    old = (b'{"job_id": "job-1", "states": ["done", "failed", "cancelled"], '
           b'"names": ["", "w0\\u0000h0"], "other_calls": [], "calls": [7], "state": [0], '
           b'"times": [100.0, 101.5, null], "place": [1], "error": [0]}')
    assert records_from_timeline(old) == [
        CallRecord("job-1", "00007", DONE, 100.0, 101.5, None, "w0", "h0", "")]


def test_summary_of_records(futures):
    summary = summarize([record_of(f) for f in futures], pending=2)
    assert (summary.calls, summary.pending) == (13, 2)
    assert summary.states == {DONE: 10, FAILED: 1, CANCELLED: 2}
    assert summary.errors == {"ValueError": 1, "CallCancelledError": 1}
    durations = sorted([0.1 * (i + 1) for i in range(10)] + [2.0, 0.5])
    assert summary.percentiles["p50"] == pytest.approx(durations[5])  # nearest rank of 12
    assert summary.percentiles["p90"] == pytest.approx(durations[10])
    assert summary.percentiles["max"] == pytest.approx(2.0)
    assert summary.slowest[0] == ("job-1/00010", pytest.approx(2.0))
    assert summary.call_time == pytest.approx(sum(durations))
    assert summary.wall_time == pytest.approx(101.0 + 9 + 1.0 - 100.0)
    assert summary.workers == {"w0": 6, "w1": 3, "w2": 3}
    assert summary.hosts == {"h0": 7, "h1": 5}
    line = summary.line()
    assert line.startswith("wrencore: job job-1: 13 calls (2 cancelled, 10 done, 1 failed), "
                           "2 pending in 11.00 s; call time total")
    assert line.endswith("(job-1/00010); 3 workers on 2 hosts")


def test_a_record_without_worker_times_has_no_duration():
    record = CallRecord("j", "00001", CANCELLED, 1.0, None, None, "", "")
    assert record.duration is None
    assert summarize([record]).percentiles == {}
    assert isinstance(Future(), concurrent.futures.Future)
