"""One suite for every TaskQueue: the directory queue and SQS on moto."""

from __future__ import annotations

import multiprocessing
import time
import uuid

import pytest

from wrencore_runtime.queue_local import LocalQueue
from wrencore_runtime.queues import queue_from_spec


@pytest.fixture(params=["local", "sqs"])
def make_queue(request, tmp_path):
    def make(max_receives=3, visibility_timeout=1):
        if request.param == "local":
            return LocalQueue(str(tmp_path / f"q-{uuid.uuid4().hex[:6]}"),
                              max_receives=max_receives, visibility_timeout=visibility_timeout)
        request.getfixturevalue("aws_env")
        from wrencore_aws.sqs import SQSQueue

        return SQSQueue(f"t-{uuid.uuid4().hex[:10]}", max_receives=max_receives,
                        visibility_timeout=visibility_timeout)

    return make


def drain(queue, expect, wait=0):
    got = []
    deadline = time.monotonic() + 10
    while len(got) < expect and time.monotonic() < deadline:
        got += queue.receive(max_messages=10, wait_time=wait or 1)
    return got


def test_send_receive_delete_in_batches(make_queue):
    queue = make_queue()
    bodies = [f"body-{i}" for i in range(25)]
    queue.send_batch(bodies)
    assert queue.depth() == {"visible": 25, "in_flight": 0}
    first = queue.receive(max_messages=10, wait_time=1)
    assert 1 <= len(first) <= 10
    rest = drain(queue, 25 - len(first))
    received = first + rest
    assert sorted(m.body for m in received) == sorted(bodies)
    assert all(m.receive_count == 1 for m in received)
    assert queue.depth() == {"visible": 0, "in_flight": 25}
    queue.delete_many(received[:12])
    for message in received[12:]:
        queue.delete(message)
    assert queue.depth() == {"visible": 0, "in_flight": 0}


def test_long_poll_returns_empty_after_wait(make_queue):
    queue = make_queue()
    start = time.monotonic()
    assert queue.receive(wait_time=1) == []
    assert time.monotonic() - start >= 0.9


def test_visibility_expiry_redelivers_with_higher_count(make_queue):
    queue = make_queue(visibility_timeout=1)
    queue.send_batch(["x"])
    (first,) = queue.receive(wait_time=1)
    assert queue.receive(wait_time=0) == []
    time.sleep(1.2)
    (again,) = drain(queue, 1)
    assert again.body == "x" and again.receive_count == 2


def test_change_visibility_extends_and_releases(make_queue):
    queue = make_queue(visibility_timeout=1)
    queue.send_batch(["y"])
    (message,) = queue.receive(wait_time=1)
    queue.change_visibility(message, 4)
    time.sleep(1.5)
    assert queue.receive(wait_time=0) == []
    queue.change_visibility(message, 0)
    (again,) = drain(queue, 1)
    assert again.receive_count == 2


def test_message_moves_to_dead_letters_after_max_receives(make_queue):
    queue = make_queue(max_receives=2, visibility_timeout=1)
    queue.send_batch(["poison", "fine"])
    seen = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not queue.dead_letters():
        for message in queue.receive(wait_time=1, visibility_timeout=0):
            seen.append((message.body, message.receive_count))
            if message.body == "fine":
                queue.delete(message)
    assert [m.body for m in queue.dead_letters()] == ["poison"]
    assert max(c for b, c in seen if b == "poison") == 2
    assert queue.depth()["visible"] == 0
    queue.purge()
    assert queue.dead_letters() == []


def test_spec_rebuilds_an_equal_queue(make_queue):
    queue = make_queue()
    queue.send_batch(["via spec"])
    twin = queue_from_spec(queue.to_spec())
    (message,) = drain(twin, 1)
    assert message.body == "via spec"
    twin.delete(message)
    assert queue.depth() == {"visible": 0, "in_flight": 0}


def _consume(root, out):
    queue = LocalQueue(root)
    got = []
    while True:
        messages = queue.receive(max_messages=3, wait_time=0.5)
        if not messages:
            break
        for m in messages:
            got.append(m.body)
            queue.delete(m)
    out.put(got)


def test_local_queue_delivers_each_message_once_across_processes(tmp_path):
    queue = LocalQueue(str(tmp_path / "shared"))
    queue.send_batch([str(i) for i in range(300)])
    out = multiprocessing.get_context("spawn").Queue()
    workers = [multiprocessing.get_context("spawn").Process(target=_consume,
                                                            args=(queue.root, out))
               for _ in range(3)]
    for w in workers:
        w.start()
    results = [out.get(timeout=60) for _ in workers]
    for w in workers:
        w.join(timeout=10)
    everything = [b for r in results for b in r]
    assert sorted(everything, key=int) == [str(i) for i in range(300)]
