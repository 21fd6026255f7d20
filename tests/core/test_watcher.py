"""The storage watcher completes futures from per-call and batch statuses, and deadlines."""

from __future__ import annotations

import pickle

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
