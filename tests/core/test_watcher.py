"""The storage watcher completes futures from per-call and batch statuses, and deadlines."""

from __future__ import annotations

import pickle
import time

import pytest

from wrencore.futures import Future
from wrencore.watcher import StatusWatcher
from wrencore_runtime import layout
from wrencore_runtime.protocol import encode_json
from wrencore_runtime.storage import LocalFileStorage


def _status(call_id, **extra):
    return {"job_id": "j", "call_id": call_id, "success": True, "result_key": None,
            "exception": None, "stdout": "", "stderr": "", "metadata": {}, **extra}


def test_watcher_reads_single_and_batch_statuses_and_applies_deadlines(tmp_path):
    storage = LocalFileStorage(str(tmp_path))
    futures = {c: Future("j", c) for c in ("00000", "00001", "00002", "00003")}
    lost = RuntimeError("never reported")
    watcher = StatusWatcher(storage, min_interval=0.01,
                            deadline_check=lambda f: lost if f.call_id == "00003" else None)
    storage.put(layout.result_key("j", "00000"), pickle.dumps("single"))
    storage.put(layout.status_key("j", "00000"),
                encode_json(_status("00000", result_key=layout.result_key("j", "00000"))).encode())
    batch = {"statuses": [_status("00001"), _status("00002")],
             "results": {"00001": pickle.dumps(1), "00002": pickle.dumps(2)}}
    storage.put(layout.batch_status_key("j", "00001"), encode_json(batch).encode())
    watcher.watch("j", futures)
    try:
        assert futures["00000"].result(timeout=10) == "single"
        assert futures["00001"].result(timeout=10) == 1
        assert futures["00002"].result(timeout=10) == 2
        with pytest.raises(RuntimeError, match="never reported"):
            futures["00003"].result(timeout=10)
        assert watcher.pending_count() == 0
    finally:
        watcher.stop()


def test_missing_result_object_fails_only_that_future(tmp_path):
    storage = LocalFileStorage(str(tmp_path))
    future = Future("j", "00000")
    storage.put(layout.status_key("j", "00000"),
                encode_json(_status("00000", result_key="j/00000/result.pickle")).encode())
    watcher = StatusWatcher(storage, min_interval=0.01)
    watcher.watch("j", {"00000": future})
    try:
        with pytest.raises(Exception, match="result is missing"):
            future.result(timeout=10)
    finally:
        watcher.stop()


def _watch(storage, futures, **options):
    watcher = StatusWatcher(storage, min_interval=0.01, max_interval=0.05, **options)
    watcher.watch("j", futures)
    return watcher


def test_corrupt_status_ends_its_call_with_a_status_error_naming_the_object(tmp_path):
    from wrencore.errors import DeserializationError, StatusError

    storage = LocalFileStorage(str(tmp_path))
    futures = {c: Future("j", c) for c in ("00000", "00001")}
    storage.put(layout.status_key("j", "00000"), b"{not json")
    storage.put(layout.status_key("j", "00001"),
                encode_json(_status("00001", result=pickle.dumps("fine"))).encode())
    watcher = _watch(storage, futures, status_reads=3)
    try:
        with pytest.raises(StatusError, match="00000/status.json") as info:
            futures["00000"].result(timeout=10)
        assert isinstance(info.value, DeserializationError)
        assert "refused after 3 reads" in str(info.value)
        assert futures["00001"].result(timeout=10) == "fine"
    finally:
        watcher.stop()


def test_another_calls_status_is_refused_never_used(tmp_path):
    from wrencore.errors import StatusError

    storage = LocalFileStorage(str(tmp_path))
    futures = {c: Future("j", c) for c in ("00005", "00006")}
    swapped = encode_json(_status("00006", result=pickle.dumps(6))).encode()
    storage.put(layout.status_key("j", "00005"), swapped)
    storage.put(layout.status_key("j", "00006"), swapped)
    watcher = _watch(storage, futures, status_reads=2)
    try:
        with pytest.raises(StatusError, match="belongs to call '00006'"):
            futures["00005"].result(timeout=10)
        assert futures["00006"].result(timeout=10) == 6
    finally:
        watcher.stop()


def test_status_of_another_job_or_attempt_is_refused(tmp_path):
    from wrencore.errors import StatusError

    storage = LocalFileStorage(str(tmp_path))
    other_job, other_attempt = Future("j", "00000"), Future("j", "00001")
    storage.put(layout.status_key("j", "00000"),
                encode_json(_status("00000", job_id="k", result=pickle.dumps(0))).encode())
    storage.put(layout.status_key("j", "00001"),
                encode_json(_status("00001", attempt=1, result=pickle.dumps(1))).encode())
    watcher = _watch(storage, {"00000": other_job, "00001": other_attempt}, status_reads=2)
    try:
        with pytest.raises(StatusError, match="of job 'k'"):
            other_job.result(timeout=10)
        with pytest.raises(StatusError, match="attempt 1, not of attempt 0"):
            other_attempt.result(timeout=10)
    finally:
        watcher.stop()


def test_a_status_rewritten_correctly_before_reads_run_out_is_used(tmp_path):
    storage = LocalFileStorage(str(tmp_path))
    future = Future("j", "00000")
    storage.put(layout.status_key("j", "00000"), b"garbage")
    watcher = StatusWatcher(storage, min_interval=0.01, max_interval=0.05, status_reads=1000)
    watcher.watch("j", {"00000": future})
    try:
        time.sleep(0.2)
        assert not future.done()
        storage.put(layout.status_key("j", "00000"),
                    encode_json(_status("00000", result=pickle.dumps("late"))).encode())
        assert future.result(timeout=10) == "late"
    finally:
        watcher.stop()


def test_unusable_read_counts_are_dropped_when_the_job_ends(tmp_path):
    storage = LocalFileStorage(str(tmp_path))
    future = Future("j", "00000")
    storage.put(layout.status_key("j", "00000"), b"garbage")
    verdict = []
    watcher = StatusWatcher(storage, min_interval=0.01, max_interval=0.05, status_reads=1000,
                            deadline_check=lambda f: verdict[0] if verdict else None)
    watcher.watch("j", {"00000": future})
    try:
        deadline = time.monotonic() + 10
        while not watcher._bad_reads and time.monotonic() < deadline:
            time.sleep(0.01)
        assert list(watcher._bad_reads) == [layout.status_key("j", "00000")]
        verdict.append(RuntimeError("lost"))  # the call ends another way; the job with it
        with pytest.raises(RuntimeError, match="lost"):
            future.result(timeout=10)
        deadline = time.monotonic() + 10
        while watcher._bad_reads and time.monotonic() < deadline:
            watcher.poll_once()
            time.sleep(0.01)
        assert watcher._bad_reads == {}
    finally:
        watcher.stop()


def test_batch_status_led_by_another_call_is_refused(tmp_path):
    from wrencore.errors import StatusError

    storage = LocalFileStorage(str(tmp_path))
    futures = {c: Future("j", c) for c in ("00000", "00001")}
    batch = {"job_id": "j", "statuses": [_status("00001")],
             "results": {"00001": pickle.dumps(1)}}
    storage.put(layout.batch_status_key("j", "00000"), encode_json(batch).encode())
    watcher = _watch(storage, futures, status_reads=2)
    try:
        with pytest.raises(StatusError, match="belongs to call '00001'"):
            futures["00000"].result(timeout=10)
        time.sleep(0.2)
        assert not futures["00001"].done()  # nothing of the refused batch was used
    finally:
        watcher.stop()


def test_a_corrupt_batch_status_ends_every_call_its_key_names(tmp_path):
    from wrencore.errors import StatusError

    key = layout.batch_status_key("j", "00009", 0, "00011")
    assert key == "j/00009/batch-status-to-00011.json" and layout.is_batch_status_key(key)
    assert layout.attempt_of_batch_status_key(layout.batch_status_key("j", "1", 2, "3")) == 2
    assert [c for c in ("00008", "00009", "00010", "00011", "00012")
            if layout.batch_status_covers(key, c)] == ["00009", "00010", "00011"]
    assert layout.batch_status_covers("j/99999/batch-status-to-100001.json", "100000")
    assert layout.parse_status_key(key) is None

    storage = LocalFileStorage(str(tmp_path))
    futures = {c: Future("j", c) for c in ("00008", "00009", "00010", "00011", "00012")}
    storage.put(key, b'{"statuses": [trunc')
    watcher = _watch(storage, futures, status_reads=2)
    try:
        for call_id in ("00009", "00010", "00011"):
            with pytest.raises(StatusError, match="batch-status-to-00011.json is corrupt"):
                futures[call_id].result(timeout=10)
        time.sleep(0.2)
        assert not futures["00008"].done() and not futures["00012"].done()
    finally:
        watcher.stop()


class _QuietChannel:
    """A working completion channel that announces only what the test queues on it."""

    def __init__(self):
        import queue
        self.messages = queue.Queue()

    def spec(self):
        return {"kind": "test"}

    ready = True

    def receive(self, wait):
        import queue
        try:
            return [(self.messages.get(timeout=wait), None)]
        except queue.Empty:
            return []

    def acknowledge(self, handles):
        pass

    def close(self):
        pass


class _CountingStorage(LocalFileStorage):
    def __init__(self, root):
        super().__init__(root)
        self.reads = []

    def get(self, key):
        self.reads.append(key)
        return super().get(key)


def test_a_quiet_listing_reads_a_status_only_if_the_channel_has_not_announced_it_in_time(
        tmp_path):
    storage = _CountingStorage(str(tmp_path))
    channel = _QuietChannel()
    futures = {c: Future("j", c) for c in ("00000", "00001", "00002", "00003")}
    watcher = StatusWatcher(storage, min_interval=0.01, channel=channel,
                            quiet_listing_after=0.5, channel_wait=0.05)
    missed_key = layout.status_key("j", "00000")  # written, never announced
    storage.put(missed_key, encode_json(_status("00000", result=pickle.dumps("missed"))).encode())
    missed_batch = layout.batch_status_key("j", "00001", last_call_id="00002")
    storage.put(missed_batch, encode_json(
        {"statuses": [_status("00001"), _status("00002")],
         "results": {"00001": pickle.dumps(1), "00002": pickle.dumps(2)}}).encode())
    late_key = layout.status_key("j", "00003")  # written, announced after the listing saw it
    storage.put(late_key, encode_json(_status("00003", result=pickle.dumps("late"))).encode())
    watcher.watch("j", futures)
    try:
        start = time.monotonic()
        deadline = start + 10
        while not watcher._held.get("j") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert set(watcher._held["j"]) == {missed_key, missed_batch, late_key}
        assert storage.reads == []  # the listing read nothing at once
        channel.messages.put(encode_json({"job_id": "j", "statuses": [
            _status("00003")], "results": {"00003": pickle.dumps("late")}}))
        assert futures["00003"].result(timeout=10) == "late"
        assert futures["00000"].result(timeout=10) == "missed"
        assert [futures[c].result(timeout=10) for c in ("00001", "00002")] == [1, 2]
        assert time.monotonic() - start >= 0.5  # held for quiet_listing_after first
        # The missed statuses were read once each; the announced one never.
        assert sorted(storage.reads) == sorted([missed_key, missed_batch])
    finally:
        watcher.stop()


def test_a_verdict_is_given_only_after_a_fresh_listing_found_no_outcome(tmp_path):
    """Beside a quiet channel the job is not listed on every pass; a backend's verdict
    (lost, purged) makes the watcher list it first: an outcome stored but never announced
    ends its call, the verdict only the calls without one."""
    storage = LocalFileStorage(str(tmp_path))
    futures = {c: Future("j", c) for c in ("00000", "00001")}
    verdict = []
    watcher = StatusWatcher(storage, min_interval=0.01, max_interval=0.05,
                            channel=_QuietChannel(), quiet_listing_after=60, channel_wait=0.05,
                            deadline_check=lambda f: verdict[0] if verdict else None)
    watcher.watch("j", futures)
    try:
        time.sleep(0.3)  # the first quiet listing found nothing; the next is a minute away
        storage.put(layout.status_key("j", "00000"),
                    encode_json(_status("00000", result=pickle.dumps("stored"))).encode())
        time.sleep(0.3)
        assert not futures["00000"].done()  # not announced, not listed again
        verdict.append(RuntimeError("its message is gone"))
        assert futures["00000"].result(timeout=10) == "stored"
        with pytest.raises(RuntimeError, match="its message is gone"):
            futures["00001"].result(timeout=10)
    finally:
        watcher.stop()
