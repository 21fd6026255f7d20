"""The daemon's logic on the directory queue and local storage: no cloud involved."""

from __future__ import annotations

import os
import time

import cloudpickle
import pytest

from wrencore import serialize
from wrencore.backends import seal_task
from wrencore_runtime.auth import FileKeySource, Signer
from wrencore_runtime import layout
from wrencore_runtime.daemon import Daemon, DaemonSettings, Heartbeat, IdleBoard
from wrencore_runtime.protocol import PYTHON, SERIALIZER, decode_json, encode_json, make_message
from wrencore_runtime.queue_local import LocalQueue
from wrencore_runtime.storage import LocalFileStorage


def triple(x):
    return 3 * x


@pytest.fixture
def world(tmp_path):
    storage = LocalFileStorage(str(tmp_path / "storage"))
    queue = LocalQueue(str(tmp_path / "queue"), max_receives=2, visibility_timeout=1)
    job = {"job_id": "job1", "storage": storage.to_spec(),
           "function_key": layout.function_key("job1"), "python": PYTHON,
           "serializer": SERIALIZER, "timeout": None, "extra_env": {},
           "result_inline_limit": 1024}
    storage.put(job["function_key"], serialize.dumps_function(triple))
    terminated = []
    keys = FileKeySource(str(tmp_path / "task-key.json"))
    signer = Signer(keys)

    def make_daemon(name="p0", **overrides):
        settings = DaemonSettings(queue=queue.to_spec(), state_dir=str(tmp_path / "state"),
                                  process_name=name, poll_wait=0.2, visibility_timeout=1,
                                  cloudwatch=False, task_key=keys.to_spec(), **overrides)
        return Daemon(settings, instance_id="i-test", terminate_instance=terminated.append)

    def task(*xs, start=0):
        calls = [{"call_id": f"{start + i:05d}", "args": cloudpickle.dumps(((x,), {})),
                  "args_key": None, "host_submit_timestamp": time.time()}
                 for i, x in enumerate(xs)]
        return seal_task(signer, job, calls)

    def status(call_id):
        return decode_json(storage.get(layout.status_key("job1", call_id)))

    class World:
        pass

    w = World()
    w.storage, w.queue, w.job, w.make_daemon, w.task, w.status = (
        storage, queue, job, make_daemon, task, status)
    w.terminated = terminated
    return w


def run_steps(daemon, n=1):
    heartbeat = Heartbeat(daemon.queue, 1, 0.3)
    try:
        return sum(daemon.step(heartbeat) for _ in range(n))
    finally:
        heartbeat.stop()


def test_runs_calls_writes_status_with_inline_result_then_deletes(world):
    world.queue.send_batch([world.task(1, 2), world.task(5, start=2)])
    daemon = world.make_daemon()
    assert run_steps(daemon) == 2
    for call_id, value in (("00000", 3), ("00001", 6), ("00002", 15)):
        status = world.status(call_id)
        assert status["success"] and cloudpickle.loads(status["result"]) == value
    assert world.queue.depth() == {"visible": 0, "in_flight": 0}
    assert daemon.calls_run == 3


def test_redelivered_message_with_a_status_is_deleted_without_running_again(world):
    world.queue.send_batch([world.task(4)])
    (message,) = world.queue.receive(wait_time=1, visibility_timeout=0)  # a lost receive
    daemon = world.make_daemon()
    world.storage.put(layout.status_key("job1", "00000"), b'{"success": true, "done": "before"}')
    assert run_steps(daemon) == 1
    assert daemon.calls_run == 0
    assert world.status("00000")["done"] == "before"
    assert world.queue.depth() == {"visible": 0, "in_flight": 0}


def test_undecodable_message_is_released_until_it_is_dead(world):
    world.queue.send_batch(["{garbage"])
    daemon = world.make_daemon()
    run_steps(daemon, 3)
    assert [m.body for m in world.queue.dead_letters()] == ["{garbage"]


def test_crash_recovery_blames_the_running_message_and_settles_the_batch(world):
    world.queue.send_batch([world.task(1), world.task(2, start=1), world.task(3, start=2)])
    messages = world.queue.receive(max_messages=3, wait_time=1, visibility_timeout=30)
    crashed = world.make_daemon()
    crashed.journal.begin(messages)
    crashed.journal.running(messages[0])
    crashed.journal.finished(messages[0])
    crashed.journal.running(messages[1])  # ... and the process died here
    successor = world.make_daemon()
    successor.recover()
    assert successor.crashes.count(messages[1].message_id) == 1
    assert world.queue.depth() == {"visible": 1, "in_flight": 1}  # 3rd released, 2nd held
    (released,) = world.queue.receive(wait_time=0)
    assert released.message_id == messages[2].message_id
    # A batch holding a known crasher runs it last, after the others are deleted.
    ordered = successor._order([
        type(released)(messages[1].message_id, "", "r1", 2),
        type(released)("other", "", "r2", 2),
        type(released)("fresh", "", "r3", 1)])
    assert [m.message_id for m in ordered] == ["fresh", "other", messages[1].message_id]


def test_idle_instance_terminates_only_when_every_process_is_idle(world):
    first = world.make_daemon("p0", idle_timeout=0.3, numprocs=2)
    second = world.make_daemon("p1", idle_timeout=0.3, numprocs=2)
    first.board.mark_busy()  # running a call
    time.sleep(0.5)
    second.board.mark_idle()
    assert not second.maybe_terminate()
    assert world.terminated == [] and not os.path.exists(second.board.terminating_path)
    first.board.mark_idle()
    assert not second.maybe_terminate()  # first has not been idle long enough yet
    time.sleep(0.4)
    world.queue.send_batch([world.task(1)])
    assert not second.maybe_terminate()  # work is waiting
    world.queue.purge()
    assert second.maybe_terminate()
    assert world.terminated == ["i-test"]
    assert first.board.terminating()


def test_not_terminated_before_min_uptime_or_with_a_missing_process(world, tmp_path):
    boot = tmp_path / "boot"
    boot.write_text("")
    young = world.make_daemon("p0", idle_timeout=0, min_uptime=60, boot_time_file=str(boot))
    assert not young.maybe_terminate()
    lonely = world.make_daemon("p0", idle_timeout=0, numprocs=3)
    assert not lonely.maybe_terminate()  # p1 and p2 never reported
    assert world.terminated == []


def test_a_sibling_that_turns_busy_during_the_announcement_stops_termination(world):
    board_dir = world.make_daemon("p0").settings.state_dir
    terminator = world.make_daemon("p0", idle_timeout=0, numprocs=2)
    sibling = IdleBoard(board_dir, "p1")
    original = terminator.board.announce_termination

    def announce_while_sibling_receives():
        fd = original()
        sibling.mark_busy()  # received work between the two checks
        return fd

    terminator.board.announce_termination = announce_while_sibling_receives
    assert not terminator.maybe_terminate()
    assert world.terminated == []
    assert not terminator.board.terminating()


def test_a_process_that_died_mid_call_does_not_keep_the_instance_alive(world):
    import json
    import subprocess

    dead = subprocess.Popen(["true"])
    dead.wait()
    terminator = world.make_daemon("p0", idle_timeout=0, numprocs=2)
    crashed = IdleBoard(terminator.settings.state_dir, "p1")
    crashed.mark_busy()
    marker = os.path.join(crashed.dir, "p1")
    with open(marker) as f:
        content = json.load(f)
    assert not terminator.maybe_terminate()  # alive and busy: blocks
    content["pid"] = dead.pid
    with open(marker, "w") as f:
        json.dump(content, f)
    assert terminator.maybe_terminate()
    assert world.terminated == ["i-test"]
