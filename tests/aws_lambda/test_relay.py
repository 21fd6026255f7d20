"""Relay events (``wrencore_aws_lambda.handler.run_relay``) without the harness: what the
function does with the calls it cannot invoke, and which relay events it accepts."""

from __future__ import annotations

import io
import json

import pytest

from wrencore_runtime import layout
from wrencore_runtime.auth import KIND_RELAY, KIND_TASK, FileKeySource, Signer, Verifier
from wrencore_runtime.errors import MessageRefusedError
from wrencore_runtime.storage import storage_from_spec


class _Lambda:
    """Stands in for boto3's Lambda client: records invocations, refuses one call's."""

    def __init__(self, refuse: str):
        self.refuse, self.invoked = refuse, []

    def invoke(self, FunctionName, InvocationType, Payload):
        if self.refuse.encode() in Payload:
            raise RuntimeError("TooManyRequestsException: Rate exceeded")
        self.invoked.append((FunctionName, InvocationType, Payload))
        return {"Payload": io.BytesIO(b"")}


def _relay(tmp_path, calls):
    storage = {"class": "wrencore_runtime.storage:LocalFileStorage",
               "config": {"root": str(tmp_path / "store")}}
    return {"function": "fn", "region": "us-east-1", "endpoint_url": None,
            "job": {"job_id": "job1", "storage": storage},
            "calls": [{"call_id": c, "attempt": 0, "event": f"event-of-{c}"} for c in calls]}


def test_each_call_is_invoked_and_one_that_cannot_be_ends_with_a_status_saying_why(tmp_path):
    from wrencore_aws_lambda.handler import run_relay

    relay = _relay(tmp_path, ["00000", "00001", "00002"])
    client = _Lambda(refuse="event-of-00001")
    assert run_relay(relay, client=client) == {"relayed": 2, "failed": 1, "cancelled": 0}
    assert sorted(p for _, _, p in client.invoked) == [b"event-of-00000", b"event-of-00002"]
    assert {(f, t) for f, t, _ in client.invoked} == {("fn", "Event")}
    storage = storage_from_spec(relay["job"]["storage"])
    status = json.loads(storage.get(layout.status_key("job1", "00001", 0)))
    assert status["success"] is False and status["call_id"] == "00001"
    assert status["exception"]["type"].endswith("WorkerCrashedError")
    assert "could not invoke fn" in status["exception"]["message"]
    assert "TooManyRequestsException" in status["exception"]["message"]
    assert not storage.exists(layout.status_key("job1", "00000", 0))  # its own invocation writes it


def test_a_relay_event_opens_only_where_relays_are_allowed_and_only_with_the_key(tmp_path):
    source = FileKeySource(str(tmp_path / "key.json"))
    body = json.dumps(_relay(tmp_path, ["00000"]))
    sealed = Signer(source).seal_text(KIND_RELAY, body)
    verifier = Verifier(source)
    assert verifier.open_task(sealed, allow_relay=True)["relay"]["function"] == "fn"
    with pytest.raises(MessageRefusedError):  # a queue worker never runs relays
        verifier.open_task(sealed)
    forged = Signer(FileKeySource(str(tmp_path / "other.json"))).seal_text(KIND_RELAY, body)
    with pytest.raises(MessageRefusedError):
        verifier.open_task(forged, allow_relay=True)
    as_task = Signer(source).seal_text(KIND_TASK, body)  # signed as another kind
    with pytest.raises(MessageRefusedError):
        verifier.open_task(as_task, allow_relay=True)
    missing = Signer(source).seal_text(KIND_RELAY, json.dumps({"function": "fn", "calls": []}))
    with pytest.raises(MessageRefusedError, match="job"):
        verifier.open_task(missing, allow_relay=True)


def test_a_call_cancelled_before_its_relay_runs_is_not_invoked(tmp_path):
    from wrencore_aws_lambda.handler import run_relay

    relay = _relay(tmp_path, ["00000", "00001"])
    storage = storage_from_spec(relay["job"]["storage"])
    storage.put(layout.cancel_key("job1", "00001", 0), b"{}")  # what Executor.cancel writes
    client = _Lambda(refuse="nothing")
    assert run_relay(relay, client=client) == {"relayed": 1, "failed": 0, "cancelled": 1}
    assert [p for _, _, p in client.invoked] == [b"event-of-00000"]
    status = json.loads(storage.get(layout.status_key("job1", "00001", 0)))
    assert status["exception"]["type"].endswith("CallCancelledError")
    assert "before it was invoked" in status["exception"]["message"]


def test_a_refused_relay_event_in_the_failure_queue_names_its_calls(tmp_path):
    # What the client reads from a function's failure queue: a relay event the function
    # refused fails each call it carries with MessageRefusedError at once (not after the
    # lost-call deadline); one that verifies failed for another reason and names no verdict.
    from wrencore.backends import dead_letter_calls

    source = FileKeySource(str(tmp_path / "key.json"))
    signer = Signer(source)
    body = json.dumps(_relay(tmp_path, ["00000", "00001"]))
    assert dead_letter_calls(signer.seal_text(KIND_RELAY, body), signer) == [
        ("job1", "00000", 0, ""), ("job1", "00001", 0, "")]
    forged = Signer(FileKeySource(str(tmp_path / "other.json"))).seal_text(KIND_RELAY, body)
    named = dead_letter_calls(forged, signer)
    assert [(j, c, a) for j, c, a, _ in named] == [("job1", "00000", 0), ("job1", "00001", 0)]
    assert all(reason for _, _, _, reason in named)
