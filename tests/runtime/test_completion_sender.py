"""The worker side of completion channels: a job's ``completion`` spec names a
:class:`CompletionSender` class, made once per process and channel."""

from __future__ import annotations

import json
import logging

from wrencore_runtime import completion
from wrencore_runtime.completion import CompletionSender

SENT: list = []


class Recorder(CompletionSender):
    body_limit = 400
    made = 0

    def __init__(self, name: str) -> None:
        type(self).made += 1
        self.name = name

    def send(self, body: str) -> None:
        SENT.append((self.name, json.loads(body)))


def job(config, cls="tests.runtime.test_completion_sender:Recorder"):
    return {"job_id": "j1", "completion": {"class": cls, "config": config}}


def test_small_outcomes_travel_whole_and_large_ones_as_their_key():
    SENT.clear()
    statuses = [{"call_id": "00001", "state": "success"}]
    assert completion.publish(job({"name": "a"}), statuses, {"00001": "cmVzdWx0"}, "k1")
    assert completion.publish(job({"name": "a"}), statuses, {"00001": "x" * 500}, "k2")
    assert SENT[0] == ("a", {"job_id": "j1", "statuses": statuses,
                             "results": {"00001": "cmVzdWx0"}})
    assert SENT[1] == ("a", {"job_id": "j1", "keys": ["k2"]})


def test_one_sender_per_channel():
    before = Recorder.made
    for _ in range(3):
        completion.publish(job({"name": "b"}), [{"call_id": "1"}], None, "k")
    completion.publish(job({"name": "c"}), [{"call_id": "1"}], None, "k")
    assert Recorder.made - before == 2


def test_a_class_that_is_not_a_sender_is_refused_and_logged(caplog):
    caplog.set_level(logging.WARNING, logger="wrencore_runtime.completion")
    assert not completion.publish(job({}, cls="os:system"), [{"call_id": "7"}], None, "k")
    assert "is not a wrencore CompletionSender" in caplog.text and "['7']" in caplog.text


def test_no_channel_sends_nothing():
    SENT.clear()
    assert not completion.publish({"job_id": "j"}, [{"call_id": "1"}], None, "k")
    assert SENT == []
