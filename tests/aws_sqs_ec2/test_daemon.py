"""The daemon's logic on the directory queue and local storage: no cloud involved."""

from __future__ import annotations

import contextlib
import os
import threading
import time

import cloudpickle
import pytest

from tests.stored_outcomes import stored_statuses
from wrencore import serialize
from wrencore.backends import seal_task
from wrencore_runtime.auth import FileKeySource, Signer
from wrencore_runtime import layout
from wrencore_runtime.daemon import Daemon, DaemonSettings, Heartbeat, IdleBoard, Journal
from wrencore_runtime.protocol import PYTHON, SERIALIZER, encode_json
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
        return stored_statuses(storage.list("job1/"), storage.get)[call_id]

    class World:
        pass

    w = World()
    w.storage, w.queue, w.job, w.make_daemon, w.task, w.status = (
        storage, queue, job, make_daemon, task, status)
    w.seal = lambda job, calls: seal_task(signer, job, calls)
    w.terminated = terminated
    return w


def run_steps(daemon, n=1):
    heartbeat = Heartbeat(daemon.queue, 1, 0.3)
    try:
        return sum(daemon.step(heartbeat) for _ in range(n))
    finally:
        daemon.drain()
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


class GatedStorage(LocalFileStorage):
    """Local files whose outcome writes wait for ``gate`` (or fail while ``failing``)."""

    gate = threading.Event()
    failing = False

    def put(self, key, data):
        if "status" in key.rsplit("/", 1)[-1]:
            type(self).gate.wait(30)
            if type(self).failing:
                raise OSError("the disk is full")
        super().put(key, data)


@pytest.fixture
def gated(world):
    GatedStorage.gate.clear()
    GatedStorage.failing = False
    world.job["storage"] = {"class": f"{__name__}:GatedStorage", "config": world.storage.config}
    yield GatedStorage
    GatedStorage.gate.set()


def test_outcomes_of_calls_that_end_during_a_write_share_the_next_write(world, gated):
    world.queue.send_batch([world.task(1, 2, 3, 4, 5)])
    daemon = world.make_daemon()
    stepping = threading.Thread(target=run_steps, args=(daemon,))
    stepping.start()
    deadline = time.monotonic() + 30
    while daemon.calls_run < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert world.queue.depth()["in_flight"] == 1  # not deleted before its outcomes are written
    gated.gate.set()  # the first call's write goes on; the four others waited for it
    stepping.join(30)
    # The write under way when the gate opened, and one for every call that ended meanwhile.
    written = [k for k in world.storage.list("job1/") if "status" in k]
    assert 1 <= len(written) <= 2 and any(layout.is_batch_status_key(k) for k in written)
    assert written[0].startswith("job1/00000/")
    assert [cloudpickle.loads(world.status(f"0000{i}")["result"]) for i in range(5)] == [
        3, 6, 9, 12, 15]
    assert world.queue.depth() == {"visible": 0, "in_flight": 0}


def nap(x):
    time.sleep(0.05)
    return 3 * x


def test_the_calls_of_a_receive_share_one_write_made_at_its_end(world):
    job = dict(world.job, job_id="job2", function_key=layout.function_key("job2"))
    world.storage.put(job["function_key"], serialize.dumps_function(nap))
    world.queue.send_batch([world.seal(job, [  # a call per message
        {"call_id": f"{i:05d}", "args": cloudpickle.dumps(((i,), {})), "args_key": None}])
        for i in range(5)])
    daemon = world.make_daemon(batch_size=10)
    daemon.statuses.linger = 60  # none waits that long: the end of the receive writes them
    assert run_steps(daemon) == 5
    written = [k for k in world.storage.list("job2/") if "status" in k]
    assert written == [layout.batch_status_key("job2", "00000", 0, "00004")]
    outcomes = stored_statuses(written, world.storage.get)
    assert [cloudpickle.loads(outcomes[f"{i:05d}"]["result"]) for i in range(5)] == [
        0, 3, 6, 9, 12]
    assert world.queue.depth() == {"visible": 0, "in_flight": 0}


def wait_for_file(path):
    deadline = time.monotonic() + 10
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def counting_acknowledgements(daemon):
    deleted = []
    original = daemon.statuses.acknowledge

    def acknowledge(messages):
        deleted.append([m.message_id for m in messages])
        return original(messages)

    daemon.statuses.acknowledge = acknowledge
    return deleted


def test_quick_receives_are_journaled_one_by_one_written_and_acknowledged_together(world):
    world.queue.send_batch([world.task(i, start=i) for i in range(3)])  # a call per message
    daemon = world.make_daemon(batch_size=1)
    deleted = counting_acknowledgements(daemon)
    daemon.statuses.ack_linger = 30  # none waits that long: draining acknowledges them
    daemon.statuses.linger = daemon.statuses.gather = 30  # nor that long: nor writes them
    heartbeat = Heartbeat(daemon.queue, 1, 0.3)
    try:
        assert [daemon.step(heartbeat) for _ in range(3)] == [1, 1, 1]
        # A receive's outcomes are journaled before the next receive's calls run (a call
        # that kills the daemon takes no earlier outcome with it: see the replay test) ...
        journaled = [record[1] for _jobs, records in daemon.journal.load()["outcomes"]
                     for record in records if record[0] == "outcome"]
        assert len(set(journaled)) == 3
        time.sleep(0.3)
        assert [k for k in world.storage.list("job1/") if "status" in k] == []  # ... written
        assert world.queue.depth()["in_flight"] == 3 and deleted == []  # ... and acknowledged
        daemon.drain()  # together, here
    finally:
        heartbeat.stop()
    assert [k for k in world.storage.list("job1/") if "status" in k] == [
        layout.batch_status_key("job1", "00000", 0, "00002")]
    assert [cloudpickle.loads(world.status(f"{i:05d}")["result"]) for i in range(3)] == [
        0, 3, 6]
    assert len(deleted) == 1 and len(deleted[0]) == 3
    assert world.queue.depth() == {"visible": 0, "in_flight": 0}
    assert daemon.journal.load() == {}  # settled


def test_with_a_short_visibility_timeout_each_receive_is_written_before_the_next_runs(world):
    # A successor could not write journaled outcomes before their messages come back.
    world.queue.send_batch([world.task(i, start=i) for i in range(3)])  # a call per message
    daemon = world.make_daemon(batch_size=1)  # visibility timeout 1 s
    assert daemon.statuses.gather == 0
    daemon.statuses.linger = 30  # no write during a call: only the next step's settling
    heartbeat = Heartbeat(daemon.queue, 1, 0.3)
    try:
        assert [daemon.step(heartbeat) for _ in range(3)] == [1, 1, 1]
        written = [k for k in world.storage.list("job1/") if "status" in k]
        assert layout.status_key("job1", "00000") in written
        assert layout.status_key("job1", "00001") in written
    finally:
        daemon.drain()
        heartbeat.stop()


def test_done_messages_wait_to_be_acknowledged_only_while_the_daemon_is_busy(world):
    world.queue.send_batch([world.task(1)])
    daemon = world.make_daemon(batch_size=1)
    daemon.statuses.ack_linger = 30
    deleted = counting_acknowledgements(daemon)
    heartbeat = Heartbeat(daemon.queue, 1, 0.3)
    try:
        assert daemon.step(heartbeat) == 1
        deadline = time.monotonic() + 10
        while not world.storage.list("job1/00000/") and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.3)
        assert deleted == []  # written, its acknowledgement gathering others
        assert daemon.step(heartbeat) == 0  # nothing more: the daemon turns idle ...
        deadline = time.monotonic() + 10
        while not deleted and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(deleted) == 1  # ... and acknowledges at once
    finally:
        daemon.drain()
        heartbeat.stop()
    assert world.queue.depth() == {"visible": 0, "in_flight": 0}


def test_an_outcome_is_written_while_a_later_call_of_its_receive_runs(world):
    job = dict(world.job, job_id="job2", function_key=layout.function_key("job2"))
    world.storage.put(job["function_key"], serialize.dumps_function(wait_for_file))
    first = world.storage._path(layout.status_key("job2", "00000"))
    world.queue.send_batch([world.seal(job, [
        {"call_id": call_id, "args": cloudpickle.dumps(((path,), {})), "args_key": None}
        for call_id, path in (("00000", str(world.storage.root)), ("00001", first))])])
    daemon = world.make_daemon()
    assert run_steps(daemon) == 1
    later = stored_statuses(world.storage.list("job2/"), world.storage.get)["00001"]
    assert cloudpickle.loads(later["result"]) is True  # it saw the first call's outcome


def test_a_message_whose_outcomes_could_not_be_written_is_not_deleted(world, gated):
    gated.failing = True
    gated.gate.set()
    world.queue.send_batch([world.task(1, 2)])
    daemon = world.make_daemon()
    assert run_steps(daemon) == 1
    assert daemon.calls_run == 2
    time.sleep(1.2)  # its visibility timeout
    (again,) = world.queue.receive(wait_time=1)
    assert again.receive_count == 2


def test_redelivered_message_with_its_outcomes_in_a_batch_status_is_not_run_again(world):
    world.queue.send_batch([world.task(4, 5, 6)])
    (message,) = world.queue.receive(wait_time=1, visibility_timeout=0)  # a lost receive
    world.storage.put(layout.batch_status_key("job1", "00000"), encode_json({
        "job_id": "job1", "statuses": [{"call_id": "00000", "success": True},
                                       {"call_id": "00001", "success": True}],
        "results": {}}).encode())
    daemon = world.make_daemon()
    assert run_steps(daemon) == 1
    assert daemon.calls_run == 1  # only 00002
    assert cloudpickle.loads(world.status("00002")["result"]) == 18
    assert world.queue.depth() == {"visible": 0, "in_flight": 0}


def test_the_journal_keeps_the_last_unended_receive_and_skips_a_cut_line(tmp_path):
    journal = Journal(str(tmp_path), "p0")
    first, second = (type("M", (), {"message_id": i, "receipt": "r" + i, "receive_count": 1})
                     for i in ("a", "b"))
    journal.begin([first])
    journal.running(first)
    journal.finished(first)
    journal.end()
    assert journal.load() == {}
    journal.begin([first, second])
    journal.running(first)
    journal.finished(first)
    journal.running(second)
    with open(journal.path, "a") as f:
        f.write('{"done": ["b"')  # the machine stopped mid-line
    successor = Journal(str(tmp_path), "p0")
    entry = successor.load()
    assert [m["message_id"] for m in entry["messages"]] == ["a", "b"]
    assert entry["running"] == "b" and entry["done"] == ["a"]
    successor.end()  # on a line of its own
    assert successor.load() == {}


def test_the_journal_is_emptied_when_everything_ends_past_its_size_limit(tmp_path):
    journal = Journal(str(tmp_path), "p0")
    journal.MAX_BYTES = 1000
    message = type("M", (), {"message_id": "a", "receipt": "r", "receive_count": 1})
    for _ in range(100):  # receives settled one by one, as an idle daemon's are
        journal.begin([message])
        journal.running(message)
        journal.running(None)
        journal.finished(message)
        journal.end()
    assert os.path.getsize(journal.path) < 1200
    journal.begin([message])
    journal.finished(message)
    assert Journal(str(tmp_path), "p0").load()["done"] == ["a"]


def test_the_journal_keeps_every_receive_begun_since_the_last_end(tmp_path):
    journal = Journal(str(tmp_path), "p0")
    first, second, third = (
        type("M", (), {"message_id": i, "receipt": "r" + i, "receive_count": 1})
        for i in ("a", "b", "c"))
    journal.begin([first])
    journal.running(first)
    journal.running(None)  # its outcome is still being written ...
    journal.begin([second, third])  # ... while the next receive runs
    journal.running(second)
    journal.finished(first)
    entry = Journal(str(tmp_path), "p0").load()
    assert [m["message_id"] for m in entry["messages"]] == ["a", "b", "c"]
    assert entry["running"] == "b" and entry["done"] == ["a"]
    journal.end()
    assert Journal(str(tmp_path), "p0").load() == {}


def _messages(*ids):
    return [type("M", (), {"message_id": i, "receipt": "r" + i, "receive_count": 1})
            for i in ids]


def _outcome(message, job_id="j1"):
    return [("outcome", message, {"job_id": job_id}, {"call_id": message.message_id}, b"r"),
            ("end", message, None, None, True)]


def test_receives_and_outcomes_go_to_the_mapped_area_not_the_lines(tmp_path):
    journal = Journal(str(tmp_path), "p0")
    a, b = _messages("a", "b")
    journal.begin([a, b])
    journal.outcomes(_outcome(a))
    journal.outcomes(_outcome(b))
    assert os.path.getsize(journal.path) == 0  # no write: stores to the mapped file
    entry = Journal(str(tmp_path), "p0").load()  # as a successor reads it
    assert [m["message_id"] for m in entry["messages"]] == ["a", "b"]
    assert [m["receipt"] for m in entry["messages"]] == ["ra", "rb"]
    assert [record[1] for _jobs, records in entry["outcomes"] for record in records] \
        == ["a", "a", "b", "b"]
    assert entry["outcomes"][0][0] == {"j1": {"job_id": "j1"}}  # the job, once
    assert entry["outcomes"][1][0] == {}
    journal.finished(a)  # a line (the status writer's thread)
    assert Journal(str(tmp_path), "p0").load()["done"] == ["a"]
    journal.end()  # the area's records are stale from here on ...
    assert Journal(str(tmp_path), "p0").load() == {}
    c, = _messages("c")
    journal.begin([c])  # ... and the next ones take their place
    entry = Journal(str(tmp_path), "p0").load()
    assert [m["message_id"] for m in entry["messages"]] == ["c"] and entry["outcomes"] == []


def test_a_record_cut_short_in_the_area_is_not_read_and_a_successor_appends(tmp_path):
    journal = Journal(str(tmp_path), "p0")
    a, b, c = _messages("a", "b", "c")
    journal.begin([a])
    journal.outcomes(_outcome(a))
    end = journal.area._end
    journal.begin([b])
    # The process died after storing the next record's bytes, before its header.
    journal.area._map[end:end + 8] = bytes(8)
    successor = Journal(str(tmp_path), "p0")
    assert [m["message_id"] for m in successor.load()["messages"]] == ["a"]
    successor.begin([c])  # appended after what it found, in the same epoch
    assert [m["message_id"] for m in Journal(str(tmp_path), "p0").load()["messages"]] \
        == ["a", "c"]


def test_records_the_area_has_no_room_for_are_lines(tmp_path, monkeypatch):
    from wrencore_runtime.daemon import JournalArea

    monkeypatch.setattr(JournalArea, "BYTES", 200)
    journal = Journal(str(tmp_path), "p0")
    messages = _messages(*"abcdef")
    journal.begin(messages)
    for message in messages:
        journal.outcomes(_outcome(message))
    assert os.path.getsize(journal.path) > 0  # the later ones
    assert journal.area._end > 8  # the first ones
    entry = Journal(str(tmp_path), "p0").load()
    assert [m["message_id"] for m in entry["messages"]] == list("abcdef")
    assert sorted(record[1] for _jobs, records in entry["outcomes"] for record in records
                  if record[0] == "outcome") == list("abcdef")
    assert {job_id for jobs, _records in entry["outcomes"] for job_id in jobs} == {"j1"}


def test_without_an_area_every_record_is_a_line(tmp_path, monkeypatch, caplog):
    import errno

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)  # the disk is full
    journal = Journal(str(tmp_path / "full"), "p0")
    assert "no journal area" in caplog.text
    a, = _messages("a")
    journal.begin([a])
    journal.outcomes(_outcome(a))
    assert os.path.getsize(journal.path) > 0
    entry = Journal(str(tmp_path / "full"), "p0").load()
    assert [m["message_id"] for m in entry["messages"]] == ["a"]
    assert [record[1] for _jobs, records in entry["outcomes"] for record in records] \
        == ["a", "a"]
    journal.end()
    assert Journal(str(tmp_path / "full"), "p0").load() == {}


def test_outcomes_marshal_cannot_hold_are_a_json_line(tmp_path):
    class Name(str):  # a str subclass: marshal refuses it
        pass

    journal = Journal(str(tmp_path), "p0")
    a, = _messages("a")
    journal.begin([a])
    journal.outcomes([("outcome", a, {"job_id": "j1"}, {"call_id": Name("a")}, b"\x00r"),
                      ("end", a, None, None, True)])
    with open(journal.path) as f:
        assert '"outcomes_json"' in f.read()
    ((jobs, records),) = Journal(str(tmp_path), "p0").load()["outcomes"]
    assert jobs == {"j1": {"job_id": "j1"}}
    assert [list(record) for record in records] == [
        ["outcome", "a", "j1", {"call_id": "a"}, b"\x00r"], ["end", "a", None, None, True]]


def test_the_running_message_is_found_in_its_slot_or_in_a_line_when_too_long(tmp_path):
    def message(message_id):
        return type("M", (), {"message_id": message_id, "receipt": "r", "receive_count": 1})

    journal = Journal(str(tmp_path), "p0")
    short, long = message("short-id"), message("x" * (Journal.SLOT_BYTES + 10))
    journal.begin([short, long])
    journal.running(short)
    assert Journal(str(tmp_path), "p0").load()["running"] == "short-id"
    journal.running(long)  # too long for the slot: a line says
    assert Journal(str(tmp_path), "p0").load()["running"] == long.message_id
    journal.running(short)
    journal.interrupted(short)
    assert Journal(str(tmp_path), "p0").load()["running"] is None
    journal.running(short)
    journal.running(None)
    assert Journal(str(tmp_path), "p0").load()["running"] is None


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



@contextlib.contextmanager
def daemon_lines(path):
    """The daemon's logging (``configure_logging``) into the file ``path``, as the only
    handler on the root logger (pytest's own handlers, added around each test's body, are
    put back afterwards)."""
    import io
    import logging
    import sys

    from wrencore_runtime import daemon as daemon_module
    from wrencore_runtime.runner import _CallLogHandler

    root = logging.getLogger()
    saved = root.handlers[:], root.level, sys.stderr
    root.handlers[:] = [_CallLogHandler.install()]  # the runner's: it lets these lines by
    # As Python makes sys.stderr on a file (supervisord's log): it writes through.
    sys.stderr = io.TextIOWrapper(open(path, "ab", buffering=0), encoding="utf-8",
                                  write_through=True)
    try:
        daemon_module.configure_logging(DaemonSettings(queue={"test": True}))
    finally:
        stream, sys.stderr = sys.stderr, saved[2]
    handler = daemon_module._line_handlers[-1]
    try:
        yield handler
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
        daemon_module._line_handlers.remove(handler)
        handler.stream.close()  # its own, on the file's descriptor
        stream.close()


def test_a_calls_lines_are_written_straight_as_logging_writes_them(tmp_path):
    import logging

    from wrencore_runtime import daemon as daemon_module

    path = tmp_path / "daemon.log"
    log = daemon_module.logger
    with daemon_lines(path) as handler:
        assert daemon_module._sole_line_handler(log) is handler
        written = []
        handler.emit = written.append  # logging's way: not taken
        daemon_module.log_call_line(log, daemon_module.CALL_STARTED, "job1", "00007", 2)
        start = path.read_text()  # written before the call runs, not held in a buffer
        daemon_module.log_call_line(log, daemon_module.CALL_ENDED, "job1", "00007",
                                    "succeeded", 0.25)
        assert path.read_text() == start  # held until the next line, as LineHandler does
        daemon_module.flush_lines()
        direct = path.read_text().splitlines()
        assert written == []
        del handler.emit
        log.info(daemon_module.CALL_STARTED, "job1", "00007", 2)
        log.info(daemon_module.CALL_ENDED, "job1", "00007", "succeeded", 0.25)
        daemon_module.flush_lines()
        through_logging = path.read_text().splitlines()[2:]
        assert [line.split(" ", 2)[2] for line in direct] == [
            line.split(" ", 2)[2] for line in through_logging] == [
            f"INFO wrencore_runtime.daemon [{os.getpid()}]: call job1/00007 started (attempt 2)",
            f"INFO wrencore_runtime.daemon [{os.getpid()}]: call job1/00007 succeeded in "
            f"0.250 s"]
        assert all(len(line.split(" ", 2)[1]) == len("12:00:00,000") for line in direct)

        # Another handler listening (CloudWatch's, a test's): logging's way, for both.
        other = []
        catcher = logging.Handler()
        catcher.emit = other.append
        logging.getLogger("wrencore_runtime").addHandler(catcher)
        try:
            assert daemon_module._sole_line_handler(log) is None
            daemon_module.log_call_line(log, daemon_module.CALL_STARTED, "job1", "00008", 0)
        finally:
            logging.getLogger("wrencore_runtime").removeHandler(catcher)
        assert [r.getMessage() for r in other] == ["call job1/00008 started (attempt 0)"]
        assert path.read_text().splitlines()[-1].endswith("call job1/00008 started (attempt 0)")


def triple_loudly(x):
    if x == 2:
        print("two")
    return 3 * x


def test_a_receives_quick_calls_have_the_statuses_jobrunner_run_writes(world):
    from wrencore_runtime.runner import QuickCalls

    job = dict(world.job, job_id="job2", function_key=layout.function_key("job2"))
    world.storage.put(job["function_key"], serialize.dumps_function(triple_loudly))
    world.queue.send_batch([world.seal(job, [
        {"call_id": f"{i:05d}", "args": cloudpickle.dumps(((i,), {})), "args_key": None,
         "host_submit_timestamp": 12.5} for i in range(4)])])
    daemon = world.make_daemon()
    runs = []
    quick_run = QuickCalls.run
    QuickCalls.run = lambda self, call, tag: runs.append(call["call_id"]) or quick_run(
        self, call, tag)
    try:
        assert run_steps(daemon) == 1
    finally:
        QuickCalls.run = quick_run
    assert runs == ["00001", "00002", "00003"]  # the first loads the function: run()
    statuses = stored_statuses(world.storage.list("job2/"), world.storage.get)
    first = statuses["00000"]
    for call_id in ("00001", "00003"):  # plain successes, reported short, built here
        status = statuses[call_id]
        assert list(status) == list(first) and list(status["metadata"]) == list(
            first["metadata"])
        assert {k: v for k, v in status.items() if k not in ("call_id", "metadata",
                                                              "result")} == {
            k: v for k, v in first.items() if k not in ("call_id", "metadata", "result")}
        assert status["metadata"]["host_submit_timestamp"] == 12.5
        assert status["metadata"]["worker_id"] == first["metadata"]["worker_id"]
    assert statuses["00002"]["stdout"] == "two\n"
    assert [cloudpickle.loads(statuses[f"{i:05d}"]["result"]) for i in range(4)] == [
        0, 3, 6, 9]


def test_a_daemon_process_freezes_its_start_up_objects_out_of_the_collectors_way():
    import gc

    from wrencore_runtime.daemon import settle_startup_objects

    assert gc.get_freeze_count() == 0
    settle_startup_objects()
    try:
        assert gc.get_freeze_count() > 1000  # the modules, clients and caches of a start
        assert gc.isenabled()  # the calls' own garbage is still collected
    finally:
        gc.unfreeze()


def test_serve_freezes_the_start_up_objects_before_its_daemon_runs(monkeypatch):
    import gc
    import logging
    import signal
    import threading

    from wrencore_runtime import daemon as daemon_module

    def built(self, settings, **kwargs):
        self.stopping = threading.Event()

    monkeypatch.setattr(daemon_module.Daemon, "__init__", built)
    monkeypatch.setattr(daemon_module.Daemon, "run", lambda self: gc.get_freeze_count())
    monkeypatch.setattr(logging, "shutdown", lambda: None)
    handler = signal.getsignal(signal.SIGTERM)
    assert gc.get_freeze_count() == 0
    try:
        assert daemon_module.serve(DaemonSettings(queue={"test": True}), "i-test") > 1000
    finally:
        gc.unfreeze()
        signal.signal(signal.SIGTERM, handler)
