"""Signed task messages: keys, rotation, and the malformed-message suite against the daemon
and the Lambda handler (on the directory queue and local storage; no cloud involved)."""

from __future__ import annotations

import json
import logging
import os
import time

import cloudpickle
import pytest

from wrencore import serialize
from wrencore.backends import seal_task
from wrencore_runtime import layout
from wrencore_aws_lambda import handler as lambda_handler
from wrencore_runtime.auth import (KIND_JOB, KIND_PAYLOAD, KIND_TASK, MAX_MESSAGE_BYTES,
                                   FileKeySource, KeyRing, Signer, Verifier, sha256_hex)
from wrencore_runtime.daemon import Daemon, DaemonSettings, Heartbeat
from wrencore_runtime.errors import IntegrityError, MessageRefusedError, WrenError
from wrencore_runtime.protocol import PYTHON, SERIALIZER, decode_json, encode_json, make_message
from wrencore_runtime.queue_local import LocalQueue
from wrencore_runtime.storage import LocalFileStorage


def mark_and_double(x, marker):
    open(marker, "w").close()
    return 2 * x


# ------------------------------------------------------------------------------------
# keys
# ------------------------------------------------------------------------------------


def test_a_sealed_body_opens_with_its_ring_and_not_with_another():
    ring, other = KeyRing.generate(), KeyRing.generate()
    envelope = ring.seal(KIND_TASK, '{"a": 1}')
    assert ring.unseal(envelope, KIND_TASK) == '{"a": 1}'
    with pytest.raises(MessageRefusedError, match="does not hold"):
        other.unseal(envelope, KIND_TASK)
    forged = dict(envelope, key=other.current.key_id)
    with pytest.raises(MessageRefusedError, match="does not hold"):
        ring.unseal(forged, KIND_TASK)


def test_any_change_to_the_body_or_kind_is_refused():
    ring = KeyRing.generate()
    envelope = ring.seal(KIND_TASK, '{"job": {"job_id": "a"}}')
    for changed in (dict(envelope, body=envelope["body"][:-1]),
                    dict(envelope, body=envelope["body"].replace('"a"', '"b"')),
                    dict(envelope, tag=envelope["tag"][:-1]
                         + ("1" if envelope["tag"].endswith("0") else "0"))):
        with pytest.raises(MessageRefusedError, match="forged or altered"):
            ring.unseal(changed, KIND_TASK)
    header = ring.seal(KIND_JOB, envelope["body"])  # a job header is not a task message
    with pytest.raises(MessageRefusedError, match="not a task"):
        ring.unseal(header, KIND_TASK)
    with pytest.raises(MessageRefusedError, match="forged or altered"):
        ring.unseal(dict(header, signed=KIND_TASK), KIND_TASK)


def test_rotation_accepts_the_old_key_for_the_grace_period_only():
    old = KeyRing.generate()
    envelope = old.seal(KIND_TASK, "{}")
    now = time.time()
    new = old.rotated(grace=60, now=now)
    assert new.current.key_id != old.current.key_id
    assert new.unseal(envelope, KIND_TASK, now=now + 59) == "{}"
    with pytest.raises(MessageRefusedError, match="grace period is over"):
        new.unseal(envelope, KIND_TASK, now=now + 61)
    assert new.unseal(new.seal(KIND_TASK, "{}"), KIND_TASK, now=now + 1e6) == "{}"
    # Rotating again drops keys whose grace period is over, and never extends one.
    later = new.rotated(grace=3600, now=now + 120)
    assert [k.key_id for k in later.keys][:1] == [new.current.key_id]
    assert KeyRing.from_json(later.to_json()).keys[0].not_after == later.keys[0].not_after


def test_a_verifier_picks_up_a_rotation_made_after_it_loaded(tmp_path, monkeypatch):
    source = FileKeySource(str(tmp_path / "key.json"))
    signer = Signer(source, refresh=0)
    verifier = Verifier(source)
    assert verifier.open_task(signer.seal_text(KIND_TASK, _task_body()))["calls"] == []
    source.rotate(grace=60)
    monkeypatch.setattr("wrencore_runtime.auth.RELOAD_INTERVAL", 0)
    assert verifier.open_task(signer.seal_text(KIND_TASK, _task_body()))["job"]["job_id"] == "j"


def test_a_rotation_just_after_a_verifier_read_the_key_refuses_nothing(tmp_path):
    source = FileKeySource(str(tmp_path / "key.json"))
    verifier = Verifier(source)
    assert verifier.open_task(Signer(source).seal_text(KIND_TASK, _task_body()))
    source.rotate(grace=60)  # well within RELOAD_INTERVAL of the verifier's read
    start = time.monotonic()
    assert verifier.open_task(Signer(source).seal_text(KIND_TASK, _task_body()))
    assert time.monotonic() - start <= 1.5  # it waited for the next read, at most a second
    # Straight after that read, a key nobody holds is refused without waiting.
    forged = Signer(FileKeySource(str(tmp_path / "other.json"))).seal_text(KIND_TASK,
                                                                          _task_body())
    start = time.monotonic()
    with pytest.raises(MessageRefusedError, match="does not hold"):
        verifier.open_task(forged)
    assert time.monotonic() - start < 0.5
    assert verifier.refused == 1


def test_a_retired_key_expires_on_a_verifier_that_never_met_the_new_one(tmp_path):
    source = FileKeySource(str(tmp_path / "key.json"))
    old = Signer(source)
    verifier = Verifier(source, refresh=0.2)
    assert verifier.open_task(old.seal_text(KIND_TASK, _task_body()))
    source.rotate(grace=0.5)
    assert verifier.open_task(old.seal_text(KIND_TASK, _task_body()))  # within grace
    time.sleep(0.7)
    with pytest.raises(MessageRefusedError, match="grace period is over"):
        verifier.open_task(old.seal_text(KIND_TASK, _task_body()))


def test_a_key_file_others_can_read_is_refused(tmp_path):
    source = FileKeySource(str(tmp_path / "key.json"))
    source.ensure()
    assert os.stat(source.path).st_mode & 0o777 == 0o600
    os.chmod(source.path, 0o644)
    with pytest.raises(WrenError, match="chmod 600"):
        source.load()


def _task_body(calls=()):
    return encode_json(make_message({"job_id": "j", "function_key": "j/func.pickle",
                                     "storage": {"class": "x:Y"}}, list(calls)))


# ------------------------------------------------------------------------------------
# the malformed-message suite
# ------------------------------------------------------------------------------------


@pytest.fixture
def world(tmp_path):
    storage = LocalFileStorage(str(tmp_path / "storage"))
    keys = FileKeySource(str(tmp_path / "task-key.json"))
    signer = Signer(keys)
    marker = str(tmp_path / "ran")
    package = serialize.dumps_function(lambda x: mark_and_double(x, marker))
    job = {"job_id": "job1", "storage": storage.to_spec(),
           "function_key": layout.function_key("job1"), "python": PYTHON,
           "serializer": SERIALIZER, "timeout": None, "extra_env": {},
           "result_inline_limit": 1024, "function_sha256": sha256_hex(package)}
    storage.put(job["function_key"], package)

    class World:
        pass

    w = World()
    w.storage, w.keys, w.signer, w.job, w.marker, w.tmp = storage, keys, signer, job, marker, tmp_path
    w.calls = lambda *xs: [{"call_id": f"{i:05d}", "args": cloudpickle.dumps(((x,), {})),
                            "args_key": None, "host_submit_timestamp": time.time()}
                           for i, x in enumerate(xs)]
    w.signed = lambda *xs: seal_task(signer, job, w.calls(*xs))
    return w


def malformed(w):
    """(name, queue body) of every kind of bad input a worker must refuse."""
    good = json.loads(w.signed(1))
    other = Signer(FileKeySource(str(w.tmp / "another-deployment.json")))
    unsigned_fields = seal_task(w.signer, {"job_id": "job1"}, w.calls(1))  # no storage
    return [
        ("not JSON", "this is not JSON {"),
        ("binary garbage", "\x00\x01\xff\ufffd"),
        ("a JSON array", "[1, 2, 3]"),
        ("wrong protocol", json.dumps(dict(good, protocol=99))),
        ("unsigned task message", encode_json(make_message(w.job, w.calls(1)))),
        ("missing tag", json.dumps({k: v for k, v in good.items() if k != "tag"})),
        ("tag of the wrong type", json.dumps(dict(good, tag=12345))),
        ("body of the wrong type", json.dumps(dict(good, body={"job": w.job["job_id"]}))),
        ("huge", json.dumps(dict(good, body="x" * (MAX_MESSAGE_BYTES + 1)))),
        ("valid tag over a truncated body", json.dumps(dict(good, body=good["body"][:-40]))),
        ("altered body", json.dumps(dict(good, body=good["body"].replace(
            w.job["function_key"], "job1/other.pickle")))),
        ("forged with another key", other.seal_text(KIND_TASK, good["body"])),
        ("a signed job header", w.signer.seal_text(KIND_JOB, good["body"])),
        ("a signed payload reference", w.signer.seal_text(KIND_PAYLOAD, good["body"])),
        ("signed but missing fields", unsigned_fields),
        ("signed but calls of the wrong type", w.signer.seal_text(KIND_TASK, encode_json(
            {"protocol": 1, "job": w.job, "calls": "00000"}))),
    ]


def test_the_quick_path_opens_what_the_full_path_opens_and_nothing_else(world):
    """A daemon opens each queue body on a quick path (``_open_task_quickly``); anything
    it does not open whole goes the full way, which says why it is refused."""
    verifier = Verifier(world.keys)
    good = world.signed(1, 2)
    full = verifier.open_task(json.loads(good))  # an envelope object: the full path
    assert full["calls"][1]["args"] == world.calls(1, 2)[1]["args"]
    assert verifier._open_task_quickly(good) == full
    assert verifier.open_task(" " + good + "\n") == full  # not quick, still opened
    for name, body in malformed(world):
        assert verifier._open_task_quickly(body) is None, name
        with pytest.raises(MessageRefusedError):
            verifier.open_task(body)
    world.keys.rotate(grace=60)  # the key that signed ``good`` is in its grace period
    retiring = Verifier(world.keys)
    assert retiring.open_task(good) == full  # the full path checks its time
    assert retiring._open_task_quickly(good) is None


def _daemon(w, queue):
    settings = DaemonSettings(queue=queue.to_spec(), state_dir=str(w.tmp / "state"),
                              process_name="p0", poll_wait=0.2, visibility_timeout=1,
                              cloudwatch=False, task_key=w.keys.to_spec())
    return Daemon(settings, instance_id="i-test")


def test_the_daemon_refuses_each_malformed_message_and_runs_the_next(world, caplog):
    queue = LocalQueue(str(world.tmp / "queue"), max_receives=2, visibility_timeout=1)
    cases = malformed(world)
    queue.send_batch([body for _, body in cases])
    daemon = _daemon(world, queue)
    heartbeat = Heartbeat(queue, 1, 0.3)
    caplog.set_level(logging.ERROR, logger="wrencore_runtime.auth")
    try:
        deadline = time.monotonic() + 30
        while len(queue.dead_letters()) < len(cases) and time.monotonic() < deadline:
            daemon.step(heartbeat)  # would raise if a message crashed the daemon
        dead = queue.dead_letters()
        assert sorted(m.body for m in dead) == sorted(body for _, body in cases)
        assert queue.depth() == {"visible": 0, "in_flight": 0}  # not retried forever
        assert daemon.verifier.refused == 2 * len(cases)  # max_receives each
        assert not os.path.exists(world.marker)
        assert world.storage.list("job1/") == ["job1/func.pickle"]  # nothing written or read
        refusals = [r.getMessage() for r in caplog.records if "refused message" in r.getMessage()]
        assert len(refusals) == 2 * len(cases)
        reasons = " | ".join(refusals)
        for phrase in ("not JSON", "protocol 99", "not signed", "lacks string field(s) tag",
                       "lacks string field(s) body", "over the", "forged or altered",
                       "does not hold", "not a task", "no valid 'function_key'",
                       "no valid 'calls'", "JSON list, not an object"):
            assert phrase in reasons, phrase
        # The daemon still runs a good message afterwards.
        queue.send_batch([world.signed(21)])
        while queue.depth()["visible"] or queue.depth()["in_flight"]:
            daemon.step(heartbeat)
        status = decode_json(world.storage.get(layout.status_key("job1", "00000")))
        assert status["success"] and cloudpickle.loads(status["result"]) == 42
    finally:
        heartbeat.stop()


def test_a_daemon_without_a_task_key_refuses_everything_and_says_how_to_fix_it(world, caplog):
    queue = LocalQueue(str(world.tmp / "queue"), max_receives=1, visibility_timeout=1)
    queue.send_batch([world.signed(1)])
    daemon = _daemon(world, queue)
    daemon.verifier = Verifier(None)
    heartbeat = Heartbeat(queue, 1, 0.3)
    try:
        daemon.step(heartbeat)
    finally:
        heartbeat.stop()
    assert "no task key" in caplog.text and "task_key" in caplog.text
    assert not os.path.exists(world.marker)


def test_a_swapped_function_object_is_not_loaded(world):
    queue = LocalQueue(str(world.tmp / "queue"), max_receives=2, visibility_timeout=1)
    queue.send_batch([world.signed(1)])
    evil = str(world.tmp / "evil")
    world.storage.put(world.job["function_key"],
                      serialize.dumps_function(lambda x: mark_and_double(x, evil)))
    daemon = _daemon(world, queue)
    heartbeat = Heartbeat(queue, 1, 0.3)
    try:
        daemon.step(heartbeat)
        daemon.drain()  # the step's outcomes are written behind it
    finally:
        heartbeat.stop()
    status = decode_json(world.storage.get(layout.status_key("job1", "00000")))
    assert not status["success"] and status["exception"]["type"].endswith("IntegrityError")
    assert "changed after the client wrote it" in status["exception"]["message"]
    assert not os.path.exists(evil)


class _Context:
    aws_request_id = "req-1"
    log_stream_name = "test"

    @staticmethod
    def get_remaining_time_in_millis():
        return 30_000


@pytest.fixture
def handler_key(world, monkeypatch):
    monkeypatch.setenv("WRENCORE_TASK_KEY", json.dumps(world.keys.to_spec()))
    monkeypatch.setattr(lambda_handler, "_verifier", None)
    monkeypatch.setattr(lambda_handler, "_runner", None)
    return world


def test_the_lambda_handler_refuses_each_malformed_event(handler_key, caplog):
    world = handler_key
    caplog.set_level(logging.ERROR, logger="wrencore_runtime.auth")
    cases = malformed(world)
    for name, body in cases:
        try:
            event = json.loads(body)  # Lambda hands the handler parsed JSON
        except ValueError:
            event = body
        with pytest.raises(MessageRefusedError, match="refused the event"):
            lambda_handler.handler(event, _Context())
    assert lambda_handler._verifier.refused == len(cases)
    assert len([r for r in caplog.records if "refused message req-1" in r.getMessage()]) \
        == len(cases)
    assert not os.path.exists(world.marker)
    assert world.storage.list("job1/") == ["job1/func.pickle"]
    # A good event runs.
    assert lambda_handler.handler(json.loads(world.signed(5)), _Context())["succeeded"] == 1
    assert os.path.exists(world.marker)


def test_the_lambda_handler_checks_a_payload_references_digest(handler_key):
    world = handler_key
    body = world.signed(3).encode()
    world.storage.put("job1/payloads/00000.json", body)
    reference = {"storage": world.storage.to_spec(), "key": "job1/payloads/00000.json",
                 "sha256": sha256_hex(body)}
    event = world.signer.seal(KIND_PAYLOAD, encode_json(reference))
    assert lambda_handler.handler(event, _Context())["succeeded"] == 1
    world.storage.put("job1/payloads/00000.json", world.signed(4, 5).encode())  # swapped
    with pytest.raises(IntegrityError, match="does not match the digest"):
        lambda_handler.handler(event, _Context())
