"""`wrencore keys show|rotate` on the configured backend's key source: here a key file read
by `wrencore worker` (the SSM parameter read by the Lambda function is in
tests/aws_lambda/test_key_rotation.py).

The test keeps a client that read the key before the rotation (its signer holds the old
ring, as a client does for up to a minute) and checks that its calls still run within the
grace period, and are refused by the workers after it, while new clients keep working.
"""

from __future__ import annotations

import base64
import time

import pytest

import wrencore
from tests.gcp.workers import WorkerProcess, worker_env
from wrencore.cli import main
from wrencore.errors import MessageRefusedError
from wrencore_runtime.auth import FileKeySource


def square(x):
    return x * x


def _keys(capsys, *argv):
    code = main(["keys", *argv])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def _key_lines(out):
    return [line.split() for line in out.splitlines() if line.startswith("  ")]


def _assert_no_key_material(out, ring):
    for key in ring.keys:
        assert base64.b64encode(key.secret).decode() not in out
        assert key.secret.hex() not in out


def test_keys_show_and_rotate_a_key_file_for_wrencore_worker(tmp_path, monkeypatch, capsys):
    key_file = tmp_path / "keys" / "task-key.json"
    monkeypatch.setenv("WRENCORE_TASK_KEY_FILE", str(key_file))
    monkeypatch.setenv("WRENCORE_QUEUE__NAME", "local")
    monkeypatch.setenv("WRENCORE_LOCAL__ROOT", str(tmp_path / "queue"))
    monkeypatch.setenv("WRENCORE_LOCAL__VISIBILITY_TIMEOUT", "2")
    assert "no task key yet" in _keys(capsys, "show", "--backend", "queue")
    first = FileKeySource(str(key_file)).ensure().current
    worker = WorkerProcess(str(tmp_path / "worker"), worker_env(), queue="local",
                           processes=1, config={"worker": {"poll_wait": 0.5}})
    try:
        worker.wait_running(1)
        with wrencore.Executor(backend="queue") as old_client:
            assert old_client.submit(square, 2).result(timeout=60) == 4  # read the key

            out = _keys(capsys, "rotate", "--backend", "queue", "--grace", "4")
            rotated_at = time.time()
            ring = FileKeySource(str(key_file)).load()
            assert [k.key_id for k in ring.keys] == [first.key_id, ring.current.key_id]
            lines = _key_lines(out)
            assert [line[0] for line in lines] == [first.key_id, ring.current.key_id]
            assert lines[0][1] == "accepted" and lines[1][1] == "signing"
            _assert_no_key_material(out, ring)

            with wrencore.Executor(backend="queue") as new_client:  # signs with the new key
                assert wrencore.get_all_results(new_client.map_futures(square, range(3)),
                                                timeout=60) == [0, 1, 4]
            assert old_client.submit(square, 5).result(timeout=60) == 25  # within grace
            time.sleep(max(0.0, rotated_at + 4.5 - time.time()))
            late = old_client.submit(square, 6)
            with pytest.raises(MessageRefusedError, match="refused its task message"):
                late.result(timeout=60)
    finally:
        worker.stop()
    out = _keys(capsys, "show", "--backend", "queue")
    lines = _key_lines(out)
    assert [(line[0], line[1]) for line in lines] == [(first.key_id, "expired"),
                                                      (ring.current.key_id, "signing")]
    _assert_no_key_material(out, ring)
