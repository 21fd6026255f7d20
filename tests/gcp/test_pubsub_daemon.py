"""The worker daemon on the Pub/Sub emulator: receives started ahead while quick calls run,
acknowledgements only after the outcomes are written, and what a drain gives back."""

from __future__ import annotations

import time

import cloudpickle
import pytest

from tests.servers import procs
from tests.stored_outcomes import stored_statuses
from wrencore import serialize
from wrencore.backends import seal_task
from wrencore_gcp.queue import PubSubQueue
from wrencore_runtime import layout
from wrencore_runtime.auth import FileKeySource, Signer
from wrencore_runtime.daemon import Daemon, DaemonSettings, Heartbeat
from wrencore_runtime.protocol import PYTHON, SERIALIZER
from wrencore_runtime.storage import LocalFileStorage


def double(x):
    return 2 * x


@pytest.fixture
def world(pubsub_env, tmp_path):
    storage = LocalFileStorage(str(tmp_path / "storage"))
    queue = PubSubQueue("daemon-tasks", max_receives=5, ack_deadline=60)
    job = {"job_id": "job1", "storage": storage.to_spec(),
           "function_key": layout.function_key("job1"), "python": PYTHON,
           "serializer": SERIALIZER, "timeout": None, "extra_env": {},
           "result_inline_limit": 1024}
    storage.put(job["function_key"], serialize.dumps_function(double))
    keys = FileKeySource(str(tmp_path / "task-key.json"))
    signer = Signer(keys)

    class World:
        pass

    w = World()
    w.storage, w.queue = storage, queue
    w.bodies = lambda n: [seal_task(signer, job, [{
        "call_id": f"{i:05d}", "args": cloudpickle.dumps(((i,), {})), "args_key": None,
        "host_submit_timestamp": time.time()}]) for i in range(n)]
    w.daemon = lambda **overrides: Daemon(DaemonSettings(
        queue=queue.to_spec(), state_dir=str(tmp_path / "state"), process_name="p0",
        poll_wait=1, visibility_timeout=60, cloudwatch=False, task_key=keys.to_spec(),
        **overrides), queue=queue, instance_id="i-test")
    w.statuses = lambda: stored_statuses(storage.list("job1/"), storage.get)
    return w


def counting_receives_ahead(queue):
    started = []
    original = queue.start_receive

    def start_receive(**kwargs):
        started.append(kwargs)
        return original(**kwargs)

    queue.start_receive = start_receive
    return started


def run_calls(daemon, count):
    """Step the daemon until it has run ``count`` calls (60 s at most), then drain it."""
    heartbeat = Heartbeat(daemon.queue, 60, 20)
    try:
        deadline = time.monotonic() + 60
        while daemon.calls_run < count and time.monotonic() < deadline:
            daemon.step(heartbeat)
        daemon.drain()
    finally:
        heartbeat.stop()


def test_quick_calls_have_the_next_receive_started_ahead_and_every_message_settled(world):
    world.queue.send_batch(world.bodies(40))
    daemon = world.daemon(batch_size=5, prefetch_below=1.0)
    started = counting_receives_ahead(daemon.queue)
    run_calls(daemon, 40)
    statuses = world.statuses()
    assert sorted(statuses) == [f"{i:05d}" for i in range(40)]
    assert all(s["success"] and cloudpickle.loads(s["result"]) == 2 * int(c)
               for c, s in statuses.items())
    assert started, "no receive was started ahead"
    assert daemon.queue.depth()["in_flight"] == 0  # every message acknowledged
    assert daemon.queue.receive(wait_time=0.5) == []


def test_drain_releases_what_a_receive_started_ahead_received(world):
    world.queue.send_batch(world.bodies(15))
    daemon = world.daemon(batch_size=5, prefetch_below=1.0)
    heartbeat = Heartbeat(daemon.queue, 60, 20)
    try:
        while daemon.step(heartbeat) == 0:  # the first receive: nothing ahead yet
            pass
        while daemon._next_receive is None:  # one with quick calls before it starts one
            assert daemon.step(heartbeat)
        ahead = daemon._next_receive.result()
        assert ahead, "the receive started ahead got nothing"
        # Held (extended by the heartbeat) from their arrival on.
        procs.wait_until(lambda: all(m.receipt in heartbeat._held for m in ahead), 15,
                         "the messages received ahead held by the heartbeat")
        daemon.drain()
        assert not any(m.receipt in heartbeat._held for m in ahead)
    finally:
        heartbeat.stop()
    # Released at once, not after the 60 s deadline: received again, as second deliveries.
    again = {}
    deadline = time.monotonic() + 15
    while len(again) < len(ahead) and time.monotonic() < deadline:
        for m in daemon.queue.receive(max_messages=20, wait_time=1):
            again[m.message_id] = m
    assert set(again) == {m.message_id for m in ahead}
    assert all(m.receive_count == 2 for m in again.values())
    assert daemon.calls_run + len(ahead) <= 15


def test_no_receive_is_started_ahead_by_default(world):
    world.queue.send_batch(world.bodies(12))
    daemon = world.daemon(batch_size=3)
    started = counting_receives_ahead(daemon.queue)
    run_calls(daemon, 12)
    assert started == [] and len(world.statuses()) == 12


def double_or_die(x):
    """Twice ``x``, except for 3: that call kills its process, as a segfault would."""
    if x == 3:
        import os
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
    return 2 * x


#: A daemon in a process of its own, stepping until its call kills it. Its status writer
#: never writes while it is busy (linger and gather of a minute), so the outcomes of the
#: calls before the killer are in its journal only.
DYING_DAEMON = """
import json, sys
from wrencore_runtime.daemon import Daemon, DaemonSettings, Heartbeat, configure_logging
settings = DaemonSettings(**json.loads(sys.argv[1]))
configure_logging(settings)
daemon = Daemon(settings, instance_id="i-test")
daemon.statuses.linger = daemon.statuses.gather = 60
heartbeat = Heartbeat(daemon.queue, 60, 20)
while True:
    daemon.step(heartbeat)
"""



def _start_dying_daemon(world, tmp_path, batch_size):
    """The ``DYING_DAEMON`` on ``world``'s queue, its stderr in ``dying.log``: ``(process,
    log path)``."""
    import json
    import os
    import sys

    settings = dict(queue=world.queue.to_spec(), state_dir=str(tmp_path / "state"),
                    process_name="p0", poll_wait=1, visibility_timeout=60,
                    batch_size=batch_size, cloudwatch=False, task_key=FileKeySource(
                        str(tmp_path / "task-key.json")).to_spec())
    log = tmp_path / "dying.log"
    with open(log, "w") as stderr:
        dying = procs.start([sys.executable, "-c", DYING_DAEMON, json.dumps(settings)],
                            stderr=stderr, cwd=os.path.dirname(os.path.dirname(
                                os.path.dirname(os.path.abspath(__file__)))))
    return dying, log


def test_a_call_that_kills_its_daemon_costs_the_calls_before_it_nothing(world, tmp_path):
    from wrencore_runtime.daemon import Journal

    world.storage.put(layout.function_key("job1"), serialize.dumps_function(double_or_die))
    bodies = world.bodies(4)  # calls 0 to 3, one per message: 3 kills
    world.queue.send_batch(bodies[:3])
    dying, log = _start_dying_daemon(world, tmp_path, batch_size=1)
    try:
        procs.wait_until(lambda: log.read_text().count(" succeeded in ") == 3, 60,
                         "the first three calls")
        world.queue.send_batch(bodies[3:])  # the killer comes after them
        assert dying.wait(60) == -9, log.read_text()[-3000:]
    finally:
        procs.stop(dying)
    assert [k for k in world.storage.list("job1/") if "status" in k] == []  # none written
    held = Journal(str(tmp_path / "state"), "p0").load()
    assert len(held["messages"]) == 4 and held["done"] == []

    successor = world.daemon(batch_size=1)  # as supervisord starts it: it recovers first
    assert successor.statuses.gather > 0  # a visibility timeout of 60 s: writes gather
    deleted = []
    delete_many = successor.queue.delete_many
    successor.queue.delete_many = lambda messages: (
        deleted.extend(m.message_id for m in messages), delete_many(messages))
    successor.recover()
    statuses = world.statuses()
    assert sorted(statuses) == ["00000", "00001", "00002"]  # written by the successor
    assert [cloudpickle.loads(statuses[c]["result"]) for c in sorted(statuses)] == [0, 2, 4]
    assert successor.crashes.count(held["running"]) == 1  # the killer alone is blamed
    assert sorted(deleted) == sorted(m["message_id"] for m in held["messages"]
                                     if m["message_id"] != held["running"])
    assert successor.journal.load() == {}  # everything the dead daemon held is settled


def test_a_call_that_kills_its_daemon_costs_the_earlier_calls_of_its_receive_nothing(
        world, tmp_path):
    from wrencore_runtime.daemon import Journal

    world.storage.put(layout.function_key("job1"), serialize.dumps_function(double_or_die))
    world.queue.send_batch(world.bodies(4))  # calls 0 to 3, received together: 3 kills
    dying, log = _start_dying_daemon(world, tmp_path, batch_size=4)
    try:
        assert dying.wait(60) == -9, log.read_text()[-3000:]
    finally:
        procs.stop(dying)
    held = Journal(str(tmp_path / "state"), "p0").load()
    ran = sorted(line.split("/")[1].split()[0] for line in log.read_text().splitlines()
                 if " succeeded in " in line)  # the calls that ended before the killer ran
    receives = [m["message_id"] for m in held["messages"]]
    assert len(receives) == 4, "the four calls were not received together"
    assert ran, "the killer ran first in its receive: nothing to check"
    assert [k for k in world.storage.list("job1/") if "status" in k] == []  # none written

    successor = world.daemon(batch_size=1)
    successor.recover()
    statuses = world.statuses()
    assert sorted(statuses) == ran  # each call before the killer, written by the successor
    assert [cloudpickle.loads(statuses[c]["result"]) for c in ran] == [2 * int(c) for c in ran]
    assert successor.crashes.count(held["running"]) == 1  # the killer alone is blamed
