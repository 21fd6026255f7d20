"""The Pub/Sub queue against the emulator, through google-cloud-pubsub over gRPC."""

from __future__ import annotations

import pytest

from tests.servers import procs
from wrencore import plugins
from wrencore_gcp.queue import PubSubQueue
from wrencore_runtime.queues import queue_from_spec


@pytest.fixture
def queue(pubsub_env):
    return PubSubQueue("tasks", max_receives=5, ack_deadline=10)


def drain(queue, wanted, rounds=20):
    got = []
    for _ in range(rounds):
        got += queue.receive(max_messages=100, wait_time=0.5)
        if len(got) >= wanted:
            break
    return got


def test_batched_publish_and_pull_of_several(queue):
    queue.send_batch([f"m{i}" for i in range(250)])
    got = drain(queue, 250)
    assert sorted(m.body for m in got) == sorted(f"m{i}" for i in range(250))
    assert all(m.receive_count == 1 for m in got)
    queue.delete_many(got)
    assert queue.receive(wait_time=0.5) == []


def test_an_empty_pull_returns_nothing_after_the_wait(queue):
    assert queue.receive(max_messages=10, wait_time=0.1) == []
    assert queue.depth() == {"visible": 0, "in_flight": 0}


def test_released_message_comes_back_with_its_attempt_counted(queue):
    queue.send_batch(["once"])
    (first,) = drain(queue, 1)
    assert queue.depth() == {"visible": 1, "in_flight": 1}
    queue.change_visibility(first, 0)
    (again,) = drain(queue, 1)
    assert again.message_id == first.message_id and again.receive_count == 2
    queue.delete(again)
    assert queue.receive(wait_time=0.3) == []


def test_after_max_receives_a_message_is_a_dead_letter(queue):
    queue.send_batch(["poison"])
    for attempt in range(1, 6):
        (message,) = drain(queue, 1)
        assert message.receive_count == attempt
        queue.change_visibility(message, 0)
    # The emulator forwards a dead letter when the subscription is next pulled.
    assert queue.receive(wait_time=0.5) == []
    for _ in range(10):
        letters = queue.dead_letters()
        if letters:
            break
    assert [m.body for m in letters] == ["poison"]
    assert [m.body for m in queue.dead_letters()] == ["poison"], "a peek leaves them there"
    queue.purge()
    assert queue.dead_letters() == []


def test_spec_rebuilds_the_queue_on_a_worker(queue):
    spec = queue.to_spec()
    assert spec["config"]["create"] is False and spec["config"]["project"] == queue.project
    worker_side = queue_from_spec(spec)
    queue.send_batch(["x"])
    (message,) = drain(worker_side, 1)
    worker_side.delete(message)


def test_bounds_and_registration(pubsub_env):
    with pytest.raises(ValueError, match="5..100"):
        PubSubQueue("tasks", max_receives=3)
    with pytest.raises(ValueError, match="10..600"):
        PubSubQueue("tasks", ack_deadline=5)
    cls = plugins.get_registry().load("queue", "gcp_pubsub")
    assert cls is PubSubQueue


def test_a_receive_started_ahead_returns_its_messages_and_tells_of_their_arrival(queue):
    queue.send_batch(["ahead-1", "ahead-2", "ahead-3"])
    got, arrived = [], []
    while len(got) < 3:
        pending = queue.start_receive(max_messages=10, wait_time=5, on_arrival=arrived.extend)
        got += pending.result()
    # told in gRPC's thread, maybe after result()
    procs.wait_until(lambda: len(arrived) == 3, 10, "the arrival of 3 messages")
    assert sorted(m.body for m in got) == ["ahead-1", "ahead-2", "ahead-3"]
    assert {m.receipt for m in arrived} == {m.receipt for m in got}
    assert queue.depth()["in_flight"] == 3
    queue.delete_many(got)
    assert queue.receive(wait_time=0.3) == []


def test_receives_started_ahead_are_pulled_by_one_thread_of_the_queue(queue):
    import threading

    def pullers():
        return {t for t in threading.enumerate() if t.name == "wrencore-pubsub-puller"}

    before = pullers()  # other queues' (each ends 30 s after its last receive)
    queue.send_batch([f"m{i}" for i in range(4)])
    got = []
    for _ in range(8):
        got += queue.start_receive(max_messages=1, wait_time=2).result()
    assert sorted(m.body for m in got) == ["m0", "m1", "m2", "m3"]
    assert len(pullers() - before) == 1  # not one per receive
    queue.delete_many(got)


def test_a_receive_started_ahead_and_given_up_takes_nothing(queue):
    import time

    pending = queue.start_receive(max_messages=10, wait_time=30)
    started = time.monotonic()
    assert pending.cancel() == []
    assert time.monotonic() - started < 5
    assert pending.result() == []
    queue.send_batch(["later"])
    (message,) = drain(queue, 1)
    assert message.body == "later" and message.receive_count == 1
    queue.delete(message)


def test_a_receive_started_ahead_with_nothing_to_receive_ends_empty(queue):
    assert queue.start_receive(max_messages=10, wait_time=0.5).result() == []


def test_requests_on_a_deleted_subscription_fail_as_the_client_library_fails(queue):
    from google.api_core import exceptions

    queue.send_batch(["orphan"])
    (message,) = drain(queue, 1)
    queue.delete_queues()
    with pytest.raises(exceptions.NotFound) as caught:
        queue.receive(wait_time=0.5)
    assert caught.value.transient is False  # a daemon stops waiting for work from it
    with pytest.raises(exceptions.NotFound):
        queue.delete_many([message])
    with pytest.raises(exceptions.NotFound):
        queue.start_receive(wait_time=0.5).result()


def test_a_receive_started_ahead_asks_for_its_own_deadline_when_its_result_is_taken(queue):
    import time

    queue.send_batch(["long"])
    got, asked = [], []
    original = queue._modify
    queue._modify = lambda messages, seconds: (asked.append(seconds),
                                               original(messages, seconds))
    while not got:
        pending = queue.start_receive(max_messages=1, wait_time=5, visibility_timeout=30,
                                      on_arrival=lambda messages: None)
        got = pending.result()
    assert asked == [30]  # made by result(), in this thread, once
    assert pending.result() == got and asked == [30]
    assert queue._held[got[0].receipt] > time.monotonic() + 20
    queue.delete_many(got)
