"""The standalone worker daemon: pulls task messages off a queue and runs their calls.

Runs on a worker instance, one per supervisord process (``numprocs`` per instance)::

    python -m wrencore_runtime.daemon --settings /etc/wrencore/daemon.json

For each received message it runs every call through the shared
:class:`~wrencore_runtime.runner.JobRunner`. A :class:`StatusWriter` writes the outcomes
once the receive's messages are handled — a lone call's ``status.json``, or one batch status
for a job's consecutive calls (the commit markers; small results travel inside them, larger
ones are staged first); its thread writes an outcome sooner if a later call runs long —
and publishes each write to the client's completion channel when the job has one. The
messages of a receive whose outcomes are all written are then deleted in one request, while
the daemon receives again. While calls run, a heartbeat thread keeps the held messages
invisible. A redelivered message whose calls already have an outcome is deleted
without running them again. A message that is malformed or does not verify with the task key (see
:mod:`wrencore_runtime.auth`) is refused before anything of it is unpickled or read, logged,
counted, and released at once, so it reaches the dead-letter queue after ``max_receives``
receives; the client fails the futures of calls it finds there. A job whose runtime's environment cannot be built (the runtime is
missing from storage or broken) fails its calls at once with a ``RuntimeBuildError`` status
naming the runtime and what to do, and its message is settled, not received again.

The daemon talks to its queue and storages only through
:class:`~wrencore_runtime.queues.TaskQueue` and :class:`~wrencore_runtime.storage.Storage`;
whatever is specific to a cloud (the instance id, log shipping, giving the machine back)
is handed in by the entry point that starts it, which asks the plugins' hooks.

Cancellation: before it starts a call, a daemon looks for the call's cancel marker (see
``layout.cancel_key``); a cancelled call is not run, and gets a cancelled status instead.
While a call runs, the heartbeat looks for its marker too. A call running in a runtime's
environment process is stopped by killing that process (the next call gets a new one); a call
running in the daemon's own process is stopped by ending the daemon, which supervisord
replaces at once. Either way the call's cancelled status is written first, and the message
is settled as if the daemon had finished it, so no crash is blamed on it.

Idle self-termination: each process keeps a marker file in the instance's ``state_dir``
saying whether it is busy and since when. When the queue is empty, every one of the
instance's ``numprocs`` processes has been idle for ``idle_timeout`` seconds and the
instance is older than ``min_uptime``, one process (holding an exclusive lock) announces
termination, checks that no sibling turned busy meanwhile, releases its instance (the
``release_instance`` callable: the ``wrencore_release_instance`` hook — terminate the EC2
instance, or nothing on a plain machine; it may also keep the instance) and runs
``shutdown_command``. Siblings see the announcement and exit.

Settings come from a JSON file, overridden by ``WRENCORE_DAEMON__<KEY>`` variables.
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import gc
import json
import logging
import marshal
import mmap
import os
import shlex
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Dict, List, Optional

from . import completion, layout
from .environment import EnvironmentProcessDied, JobEnvironments
from .auth import Verifier, open_or_refuse
from .errors import RuntimeBuildError, StorageKeyError
from .protocol import decode_json, encode_json
from .queues import QueueMessage, TaskQueue, queue_from_spec
from .runner import (QUICK_KEYS, CancelChecks, JobRunner, QuickCalls, _CallLogHandler,
                     cancel_marker, cancelled_status, failed_status)
from .storage import storage_from_spec

logger = logging.getLogger(__name__)

#: Its own prefix, not the client's ``WRENCORE_AWS_SQS_EC2__``: user code on an instance that
#: builds an Executor must not see the daemon's settings as client configuration.
ENV_PREFIX = "WRENCORE_DAEMON__"
#: The exit code of a daemon that ended itself to stop a cancelled call (supervisord
#: restarts a daemon on any exit code but 0).
CANCELLED_EXIT_CODE = 75
DEFAULT_METADATA_URL = "http://169.254.169.254"
DEFAULT_LOG_GROUP = "wrencore-standalone"
#: Compact JSON of a journal record (one encoder for all: ``json.dumps`` with options
#: builds a new one per record).
_journal_json = json.JSONEncoder(separators=(",", ":")).encode
#: The daemon's lines saying a call started and ended (see :class:`LineHandler`).
CALL_STARTED = "call %s/%s started (attempt %d)"
CALL_ENDED = "call %s/%s %s in %.3f s"


@dataclass
class DaemonSettings:
    #: The queue's spec (``TaskQueue.to_spec()``).
    queue: Dict[str, Any] = field(default_factory=dict)
    #: Directory shared by the instance's daemon processes (idle markers, locks).
    state_dir: str = "/var/lib/wrencore"
    #: This process's name on the instance (default: supervisord's process name).
    process_name: str = ""
    #: How many daemon processes the instance runs (all must be idle to terminate).
    numprocs: int = 1
    idle_timeout: float = 300.0
    #: The instance is never terminated younger than this, seconds.
    min_uptime: float = 0.0
    #: File whose mtime is the instance's boot time (default: from /proc/uptime).
    boot_time_file: str = ""
    #: Release the instance when idle (False: only exit the daemons).
    terminate: bool = True
    #: The instance provider that launched this machine (``ec2``; empty: none), and what
    #: it needs to know to release it (e.g. its fleet and ``min_instances``).
    provider: str = ""
    provider_config: Dict[str, Any] = field(default_factory=dict)
    #: Command run after TerminateInstances (e.g. ``shutdown -h now``); empty for none.
    shutdown_command: str = ""
    poll_wait: float = 20.0
    batch_size: int = 10
    visibility_timeout: float = 60.0
    #: Seconds before a message whose call killed a daemon is delivered again (negative:
    #: when its visibility timeout ends). 0 spends a crash loop's receives at once.
    crash_redelivery: float = -1.0
    #: Start the next receive while a receive's calls run, so that its wait overlaps them,
    #: when the previous receive's calls took less than this many seconds (0: never). After
    #: longer calls the next messages are left to the instance's other daemons. Off by
    #: default: it pays where a receive waits long on the network with cores to spare; on a
    #: busy machine the CPU it costs (Pub/Sub: a hand-over to the queue's puller thread and
    #: back per pull) outweighs it.
    prefetch_below: float = 0.0
    #: Seconds between visibility extensions (default: a third of the visibility timeout).
    heartbeat_interval: float = 0.0
    metadata_url: str = DEFAULT_METADATA_URL
    #: Known instance id (skips the metadata service).
    instance_id: str = ""
    region: str = ""
    cloudwatch: bool = True
    log_group: str = DEFAULT_LOG_GROUP
    log_send_interval: float = 5.0
    log_level: str = "INFO"
    #: Where environments of job runtimes are built (default: ``{state_dir}/envs``), and
    #: when they are evicted: unused for ``env_max_age`` seconds, or beyond ``env_max_bytes``.
    env_dir: str = ""
    env_max_age: float = 7 * 24 * 3600.0
    env_max_bytes: int = 20 * 1024 ** 3
    #: Where the task key lives (a ``KeySource`` spec, see ``wrencore_runtime.auth``): the
    #: key's location, never the key. Without it every message is refused.
    task_key: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Optional[str] = None,
             env: Optional[Dict[str, str]] = None) -> "DaemonSettings":
        data: Dict[str, Any] = {}
        if path:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        env = os.environ if env is None else env
        known = {f.name: f for f in fields(cls)}
        for name, value in env.items():
            if name.startswith(ENV_PREFIX) and name[len(ENV_PREFIX):].lower() in known:
                data[name[len(ENV_PREFIX):].lower()] = value
        unknown = set(data) - set(known)
        if unknown:
            logger.warning("ignoring unknown daemon settings: %s", ", ".join(sorted(unknown)))
        settings = cls(**{k: v for k, v in data.items() if k in known})
        settings._coerce()
        return settings

    def _coerce(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type in ("float", float) and not isinstance(value, float):
                setattr(self, f.name, float(value))
            elif f.type in ("int", int) and not isinstance(value, int):
                setattr(self, f.name, int(value))
            elif f.type in ("bool", bool) and isinstance(value, str):
                setattr(self, f.name, value.strip().lower() in ("1", "true", "yes", "on"))
            elif f.name in ("queue", "provider_config", "task_key") and isinstance(value, str):
                setattr(self, f.name, json.loads(value))
        if not self.process_name:
            self.process_name = os.environ.get("SUPERVISOR_PROCESS_NAME") or f"pid{os.getpid()}"
        if not self.queue:
            raise ValueError("daemon settings name no queue")


# ------------------------------------------------------------------------------------
# the instance: uptime and idle markers
# ------------------------------------------------------------------------------------


def instance_uptime(boot_time_file: str = "") -> float:
    if boot_time_file:
        try:
            return time.time() - os.stat(boot_time_file).st_mtime
        except OSError:
            pass
    try:
        with open("/proc/uptime", encoding="ascii") as f:
            return float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return float("inf")


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class IdleBoard:
    """The instance's daemon processes' busy/idle markers, in a shared directory."""

    def __init__(self, state_dir: str, process_name: str) -> None:
        self.dir = os.path.join(state_dir, "processes")
        os.makedirs(self.dir, exist_ok=True)
        self.state_dir = state_dir
        self.process_name = process_name
        self.busy = False
        self.since = time.time()
        self._write()

    @property
    def terminating_path(self) -> str:
        return os.path.join(self.state_dir, "terminating")

    @property
    def terminated_path(self) -> str:
        return os.path.join(self.state_dir, "terminated")

    def _write(self) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".tmp-")
        with os.fdopen(fd, "w") as f:
            json.dump({"busy": self.busy, "since": self.since, "pid": os.getpid()}, f)
        os.replace(tmp, os.path.join(self.dir, self.process_name))

    def mark_busy(self) -> None:
        if not self.busy:
            self.busy, self.since = True, time.time()
            self._write()

    def mark_idle(self) -> None:
        if self.busy:
            self.busy, self.since = False, time.time()
            self._write()

    def markers(self) -> Dict[str, Dict[str, Any]]:
        found = {}
        for name in os.listdir(self.dir):
            if name.startswith(".tmp-"):
                continue
            try:
                with open(os.path.join(self.dir, name), encoding="utf-8") as f:
                    marker = json.load(f)
            except (OSError, ValueError):
                marker = {"busy": True, "since": time.time()}  # unreadable: assume busy
            if marker.get("busy") and not _alive(marker.get("pid")):
                marker["busy"] = False  # died mid-call and was not restarted: runs nothing
            found[name] = marker
        return found

    def all_idle_for(self, seconds: float, numprocs: int) -> bool:
        markers = self.markers()
        if len(markers) < numprocs:
            return False
        cutoff = time.time() - seconds
        return all(not m.get("busy") and m.get("since", 0) <= cutoff for m in markers.values())

    def announce_termination(self) -> Optional[int]:
        """Take the termination lock and announce; None if another process holds it."""
        fd = os.open(os.path.join(self.state_dir, "terminate.lock"), os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return None
        with open(self.terminating_path, "w") as f:
            f.write(self.process_name)
        return fd

    def withdraw(self, fd: int) -> None:
        try:
            os.unlink(self.terminating_path)
        except FileNotFoundError:
            pass
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def terminating(self) -> bool:
        return os.path.exists(self.terminating_path) or os.path.exists(self.terminated_path)


class Journal:
    """What a daemon process holds and runs, on disk, so its successor can settle it.

    An append-only file of JSON lines — a receive's messages, the message running, the
    outcomes of a receive's calls not yet known to be in storage (a write-ahead: see
    :meth:`outcomes`), the messages whose outcomes are durable, the end of everything
    begun so far — each one
    ``write`` to a file kept open: a record survives the process's death at once (it is in
    the kernel's cache), at a few microseconds instead of the milliseconds of rewriting and
    renaming a file. No fsync: the journal speaks for a process that died on a machine that
    lives on. Receives begun since the last end are all open (a receive's outcomes may
    still be written while the next ones run): the successor settles every one of them.

    The message running is not a line but a slot: a small file beside the journal, mapped
    into memory, that holds its id (``id`` and a newline; a newline alone: none runs; a
    zero byte: the journal's lines say). Setting it is a store to memory, no system call,
    and it survives the process just as a write does (the mapped page is the kernel's).

    The records written once or more per call — a receive's messages (:meth:`begin`) and
    the calls' outcomes (:meth:`outcomes`) — go the same way: into the *area*, a second
    mapped file (:class:`JournalArea`), as marshalled records, while it has room (else
    as lines). The lines that other threads write (:meth:`finished`) and the end stay
    lines; :meth:`load` reads both, whose order does not matter within what was begun
    since the last end.
    """

    #: The file is emptied when everything begun has ended and it is larger than this.
    MAX_BYTES = 1 << 20
    #: The running slot's size (a message id too long for it is written as a line).
    SLOT_BYTES = 1024

    def __init__(self, state_dir: str, process_name: str) -> None:
        directory = os.path.join(state_dir, "journal")
        os.makedirs(directory, exist_ok=True)
        self.path = os.path.join(directory, process_name + ".jsonl")
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        with open(self.path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            if size:
                f.seek(size - 1)
                if f.read(1) != b"\n":  # a predecessor's line cut short stays alone
                    size += os.write(self._fd, b"\n")
        #: The file's size, as this process's writes grew it (the status writer's thread
        #: appends too; a count lost to a race only delays the truncation).
        self._size = size
        #: Ids of the jobs whose header an :meth:`outcomes` line carried since the last
        #: :meth:`end`: later lines name them only (a job per call was most of a line).
        self._jobs_journaled: set = set()
        self.slot_path = os.path.join(directory, process_name + ".running")
        fd = os.open(self.slot_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if os.fstat(fd).st_size < self.SLOT_BYTES:
                os.ftruncate(fd, self.SLOT_BYTES)  # zeros: the journal's lines say
            try:
                os.posix_fallocate(fd, 0, self.SLOT_BYTES)  # its block now (see JournalArea)
            except OSError:
                pass
            self._slot = mmap.mmap(fd, self.SLOT_BYTES)
        finally:
            os.close(fd)  # the mapping keeps the file
        self.area = JournalArea(os.path.join(directory, process_name + ".area"))

    def _append(self, record: Dict[str, Any]) -> None:
        self._size += os.write(self._fd, (_journal_json(record) + "\n").encode())

    def begin(self, messages: List[QueueMessage]) -> None:
        """A receive's messages are held (with those begun before, until :meth:`end`)."""
        try:
            if self.area.add(marshal.dumps(
                    ("begin", [(m.message_id, m.receipt, m.receive_count) for m in messages]))):
                return
        except ValueError:  # a value of a type marshal does not know (a str subclass)
            pass
        self._append({"begin": [
            {"message_id": m.message_id, "body": "", "receipt": m.receipt,
             "receive_count": m.receive_count} for m in messages]})

    def running(self, message: Optional[QueueMessage]) -> None:
        """``message`` runs now (None: none does — the last one returned)."""
        if message is None:
            self._slot[0:1] = b"\n"
            return
        data = message.message_id.encode("utf-8", "surrogatepass") + b"\n"
        if len(data) < self.SLOT_BYTES and b"\0" not in data and data.count(b"\n") == 1:
            self._slot[0:len(data)] = data
        else:  # an id the slot cannot hold: a line says
            self._append({"running": message.message_id})
            self._slot[0:1] = b"\0"

    def outcomes(self, items: List[tuple]) -> None:
        """Outcomes handed to the status writer (its ``("outcome", message, job, status,
        result)`` and ``("end", message, None, None, completed)`` items), journaled before
        the next call runs: if the process dies before they are in storage, its successor
        writes them (see :meth:`Daemon.recover`), so that a call killing its daemon costs
        the calls before it nothing, while their storage writes are gathered. One
        marshalled record in the area (no system call; JSON took 50 microseconds a
        receive with its base64 of every result), a line when the area is full, and in
        JSON only if marshal cannot hold a value."""
        if not items:
            return
        jobs: Dict[str, Any] = {}
        records = []
        journaled = self._jobs_journaled
        for kind, message, job, status, extra in items:
            if job is not None and job["job_id"] not in journaled:
                jobs[job["job_id"]] = job
            records.append((kind, message.message_id, job and job["job_id"], status, extra))
        try:
            data = marshal.dumps(("outcomes", jobs, records))
        except ValueError:  # a value of a type marshal does not know (a str subclass)
            self._append({"outcomes_json": encode_json([jobs, records])})
        else:
            if not self.area.add(data):  # full: the JSON line {"outcomes": base64}
                self._size += os.write(self._fd, b'{"outcomes":"' + base64.b64encode(
                    marshal.dumps((jobs, records))) + b'"}\n')
        journaled.update(jobs)

    @staticmethod
    def _decode_outcomes(record: Dict[str, Any]) -> Any:
        """The ``(jobs, records)`` of an :meth:`outcomes` line, or None if unreadable."""
        try:
            if "outcomes" in record:
                return marshal.loads(base64.b64decode(record["outcomes"]))
            return decode_json(record["outcomes_json"])
        except (ValueError, TypeError, EOFError) as exc:
            logger.warning("a journaled line of outcomes cannot be read (%s); their "
                           "messages come back and run again", exc)
            return None

    def finished(self, *messages: QueueMessage) -> None:
        """The outcomes of these messages' calls are durable: they may be deleted."""
        self._append({"done": [m.message_id for m in messages]})

    def interrupted(self, message: QueueMessage) -> None:
        """The running message was given up on purpose: the successor releases it, blaming
        no crash on it."""
        self._append({"interrupted": message.message_id})
        self._slot[0:1] = b"\n"

    def end(self) -> None:
        """Every message begun is settled."""
        self._slot[0:1] = b"\n"
        # The area first: a successor reading its records after the end line would take
        # them for the next receives'.
        self.area.clear()
        self._append({"end": True})
        self._jobs_journaled.clear()  # a successor reads nothing before the end
        self._truncate_if_large()

    def _slot_running(self) -> Any:
        """The slot's message id; None when none runs; ``...`` when the lines say."""
        try:
            with open(self.slot_path, "rb") as f:
                data = f.read(self.SLOT_BYTES)
        except OSError:
            return ...
        if not data or data[:1] == b"\0" or b"\n" not in data:
            return ...
        return data.split(b"\n", 1)[0].decode("utf-8", "surrogatepass") or None

    def _truncate_if_large(self) -> None:
        if self._size > self.MAX_BYTES:
            os.ftruncate(self._fd, 0)
            self._size = 0

    def load(self) -> Dict[str, Any]:
        """What was begun since the last end, if anything: ``{"messages", "running",
        "done", "outcomes"}`` (outcomes: a list of ``(jobs, records)``, see
        :meth:`outcomes`); else {}."""
        try:
            with open(self.path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except OSError:
            return {}
        entry: Dict[str, Any] = {"messages": [], "running": None, "done": [], "outcomes": []}
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line cut short by the machine's own end
            if "begin" in record:
                entry["messages"] += record["begin"]
            elif "running" in record:
                entry["running"] = record["running"]
            elif "done" in record:
                entry["done"] += record["done"]
            elif "outcomes" in record or "outcomes_json" in record:
                outcomes = self._decode_outcomes(record)
                if outcomes is not None:
                    entry["outcomes"].append(outcomes)
            elif "interrupted" in record:
                if entry["running"] == record["interrupted"]:
                    entry["running"] = None
            elif "end" in record:
                entry = {"messages": [], "running": None, "done": [], "outcomes": []}
        for record in self.area.records():  # all written since the last end (see end)
            if record[0] == "begin":
                entry["messages"] += [
                    {"message_id": message_id, "body": "", "receipt": receipt,
                     "receive_count": receive_count}
                    for message_id, receipt, receive_count in record[1]]
            elif record[0] == "outcomes":
                entry["outcomes"].append((record[1], record[2]))
        if not entry["messages"]:
            return {}  # nothing begun since the last end
        running = self._slot_running()
        if running is not ...:
            entry["running"] = running
        return entry


class JournalArea:
    """A file mapped into memory that holds a :class:`Journal`'s frequent records.

    Adding a record is two stores to memory — no system call — and survives the process
    as a write does (the mapped pages are the kernel's). Layout: an 8-byte header whose
    first four bytes are the *epoch*, then records, each an 8-byte header (length, epoch)
    and the record's bytes. The records of the current epoch that follow each other from
    the start are the area's; :meth:`clear` starts a new epoch, so what follows is stale.
    A record's bytes are stored before its header, so a process that dies between the
    two leaves the earlier records whole, and the cut one unread. The file's blocks are
    reserved when it is made; only the pages used since the last clear take memory. Where
    the file cannot be made or mapped, there is no area: every record is a line.
    """

    #: The area's size; records that do not fit go to the journal's lines.
    BYTES = 1 << 20
    _HEADER = struct.Struct("<II")

    def __init__(self, path: str) -> None:
        self._map: Any = None
        self._epoch, self._end = 0, 8
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                if os.fstat(fd).st_size != self.BYTES:
                    os.ftruncate(fd, self.BYTES)
                # Its blocks now: a store into a page whose block the full disk cannot
                # give would kill the process (SIGBUS) instead of failing a write.
                os.posix_fallocate(fd, 0, self.BYTES)
                self._map = mmap.mmap(fd, self.BYTES)
            finally:
                os.close(fd)
        except OSError as exc:
            logger.warning("no journal area at %s (%s): the journal writes lines", path, exc)
            return
        self._epoch = self._HEADER.unpack_from(self._map, 0)[0]
        for _record in self._walk():  # a successor appends after what it found
            pass

    def _walk(self):
        """The current records' bytes, advancing ``_end`` past each."""
        offset, epoch, size = 8, self._epoch, self.BYTES
        unpack = self._HEADER.unpack_from
        while offset + 8 <= size:
            length, record_epoch = unpack(self._map, offset)
            if record_epoch != epoch or not 0 < length <= size - offset - 8:
                break
            self._end = offset + 8 + length
            yield self._map[offset + 8:self._end]
            offset = self._end

    def add(self, data: bytes) -> bool:
        """Append a record; False when the area has no room for it."""
        offset = self._end
        end = offset + 8 + len(data)
        if end > self.BYTES or not data or self._map is None:
            return False
        self._map[offset + 8:end] = data
        self._map[offset:offset + 8] = self._HEADER.pack(len(data), self._epoch)
        self._end = end
        return True

    def records(self) -> List[Any]:
        """The current records, unmarshalled (those that cannot be are left out)."""
        if self._map is None:
            return []
        self._epoch = self._HEADER.unpack_from(self._map, 0)[0]  # as another process left it
        found = []
        for data in self._walk():
            try:
                found.append(marshal.loads(data))
            except (ValueError, EOFError, TypeError):
                logger.warning("a journaled record cannot be read; its messages come "
                               "back and run again")
        return found

    def clear(self) -> None:
        """Every record so far is stale: a new epoch starts."""
        if self._map is None:
            return
        self._epoch = (self._epoch + 1) & 0xFFFFFFFF
        self._map[0:4] = self._epoch.to_bytes(4, "little")
        self._end = 8


class CrashLedger:
    """How often each message killed a daemon process of this instance."""

    def __init__(self, state_dir: str) -> None:
        self.dir = os.path.join(state_dir, "crashes")
        os.makedirs(self.dir, exist_ok=True)

    def _path(self, message_id: str) -> str:
        return os.path.join(self.dir, "".join(c if c.isalnum() or c in "-_" else "_"
                                              for c in message_id))

    def count(self, message_id: str) -> int:
        try:
            with open(self._path(message_id), encoding="ascii") as f:
                return int(f.read() or 0)
        except (OSError, ValueError):
            return 0

    def add(self, message_id: str) -> int:
        count = self.count(message_id) + 1
        with open(self._path(message_id), "w", encoding="ascii") as f:
            f.write(str(count))
        return count


# ------------------------------------------------------------------------------------
# the heartbeat
# ------------------------------------------------------------------------------------


class Heartbeat:
    """Extends the visibility of held messages until they are released."""

    def __init__(self, queue: TaskQueue, visibility_timeout: float, interval: float,
                 on_beat: Optional[Callable[[], None]] = None) -> None:
        self.queue = queue
        self.on_beat = on_beat
        self.visibility_timeout = visibility_timeout
        self.interval = interval
        self._held: Dict[str, QueueMessage] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wrencore-heartbeat", daemon=True)
        self._thread.start()

    def hold(self, messages: List[QueueMessage]) -> None:
        with self._lock:
            for m in messages:
                self._held[m.receipt] = m

    def release(self, messages: List[QueueMessage]) -> None:
        with self._lock:
            for m in messages:
                self._held.pop(m.receipt, None)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                held = list(self._held.values())
            for message in held:
                try:
                    self.queue.change_visibility(message, self.visibility_timeout)
                except Exception as exc:  # the message may have been deleted meanwhile
                    logger.warning("heartbeat for message %s failed: %s",
                                   message.message_id, exc)
            if self.on_beat is not None:
                try:
                    self.on_beat()
                except Exception:
                    logger.exception("the heartbeat's check of the running call failed")


# ------------------------------------------------------------------------------------
# the daemon
# ------------------------------------------------------------------------------------


class StatusWriter:
    """Writes the outcomes of a daemon's calls in a thread of its own, says which messages
    are done, and acknowledges them.

    Outcomes queue up as calls end. Once the daemon has handled a receive's messages (and
    journaled their outcomes, see :meth:`Journal.outcomes`) it has them written
    (:meth:`push`) while it receives the next: one object per job and run of consecutive
    calls — the call's ``status.json`` when alone, else a batch status
    (``layout.batch_status_key``) —, then published to the job's completion channel. While
    the daemon is busy, pushed outcomes wait ``gather`` seconds after the oldest was added
    for those of the next receives, and share one write with them (one object for many
    small receives, where a write per receive was a good part of the daemon's work); an
    idle, draining or settling daemon has them written at once. An
    outcome still waiting ``linger`` seconds after it was added while a later call runs
    (:meth:`call_starts`) is written without waiting for the push (within about twice
    ``linger``: while the daemon is busy the thread looks every ``linger`` seconds, so that
    a call's start costs no hand-over), so a call's outcome is durable soon after it ends —
    before a later call can crash the daemon — while the quick calls of a receive share one
    write and one hand-over to the thread. A message is done — safe to acknowledge — once
    its last outcome is written: ``on_done`` is told so (the daemon journals it), then the
    thread has it acknowledged (``acknowledge``), outside the write, so a flush never waits
    for an acknowledgement. While the daemon is busy, done messages gather for up to
    ``ack_linger`` seconds (or ``ack_batch`` messages) and are acknowledged in one request,
    as Pub/Sub's own client batches its acknowledgements: with small receives that is a
    request for many receives instead of one each, for the queue and for this process. A
    daemon that turns idle, drains, or is about to run a message that may crash it has them
    acknowledged at once (:meth:`wait_acknowledged`). A done message whose acknowledgement
    is lost (the process dies meanwhile) comes back and is settled without running again:
    its outcomes are found in storage.
    """

    #: Seconds an outcome may wait for the rest of its receive before the thread writes it.
    LINGER = 0.01
    #: Seconds pushed outcomes may wait, while the daemon is busy, for the next receives'
    #: to share their write.
    GATHER = 0.05
    #: Seconds a done message may wait for others to be acknowledged with, and how many
    #: make a request at once.
    ACK_LINGER = 0.05
    ACK_BATCH = 1000

    def __init__(self, on_done: Callable[[List[QueueMessage]], None],
                 linger: float = LINGER,
                 acknowledge: Optional[Callable[[List[QueueMessage]], None]] = None,
                 ack_linger: Optional[float] = None, gather: Optional[float] = None) -> None:
        self.on_done = on_done
        self.acknowledge = acknowledge
        self.linger = linger
        self.gather = self.GATHER if gather is None else gather
        self.ack_linger = self.ACK_LINGER if ack_linger is None else ack_linger
        #: ("outcome", message, job, status, pickled result) and ("end", message, ...).
        self._pending: List[tuple] = []
        #: The items added since :meth:`take_unjournaled` (by the daemon's thread only).
        self._unjournaled: List[tuple] = []
        self._first_added = 0.0  # when the oldest pending item was added (monotonic)
        self._writing = False
        self._urgent = False  # pushed: write what is pending without lingering
        self._armed = False   # a call started after the pending outcomes: write them soon
        self._busy = False    # the daemon runs calls: look at what is pending every linger
        self._to_ack: List[QueueMessage] = []
        self._acks_since = 0.0  # when the oldest of _to_ack was done (monotonic)
        self._acking = False
        self._ack_waiters = 0   # threads in wait_acknowledged: acknowledge without lingering
        self._failed: set = set()   # message ids with an outcome that could not be written
        self._storages: Dict[str, Any] = {}  # job id -> its storage (written by one thread)
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="wrencore-status-writer",
                                        daemon=True)
        self._thread.start()

    def _append(self, item: tuple) -> None:
        self._unjournaled.append(item)
        with self._cond:
            if not self._pending:
                self._first_added = time.monotonic()
            self._pending.append(item)

    def busy(self, busy: bool) -> None:
        """The daemon runs calls (True) or waits for messages: while it is busy the thread
        looks at what is pending every ``linger`` seconds."""
        if busy != self._busy:
            with self._cond:
                self._busy = busy
                self._cond.notify_all()

    def call_starts(self) -> None:
        """A call starts: what is pending is written within about twice ``linger`` of its
        adding, even if the call runs long (a receive of one call hands nothing over before
        its push). Only a flag: the thread, looking every ``linger`` while the daemon is
        busy, sees it."""
        if self._pending:
            self._armed = True

    def add(self, message: QueueMessage, job: Dict[str, Any], status: Dict[str, Any],
            result: Optional[bytes]) -> None:
        self._append(("outcome", message, job, status, result))

    def end_message(self, message: QueueMessage, completed: bool = True) -> None:
        """Every outcome of ``message`` was added (``completed``: else it was given up, and
        is not to be acknowledged)."""
        self._append(("end", message, None, None, completed))

    def take_unjournaled(self) -> List[tuple]:
        """The items added since the last call (for :meth:`Journal.outcomes`)."""
        items, self._unjournaled = self._unjournaled, []
        return items

    def push(self) -> None:
        """Have everything added so far written by the thread (without waiting): now, or
        while the daemon is busy ``gather`` seconds after the oldest was added (the thread,
        looking every ``linger`` then, is not woken for it)."""
        with self._cond:
            if self._pending:
                self._urgent = True
                if not (self._busy and self.gather):
                    self._cond.notify_all()

    def idle(self) -> bool:
        """Nothing is waiting to be written, nor being written."""
        with self._cond:
            return not self._pending and not self._writing

    def flush(self) -> None:
        """Write everything added so far: wait for the thread's write under way, then write
        what is still pending in the calling thread (the thread acknowledges it)."""
        while True:
            with self._cond:
                while self._writing:
                    self._cond.wait()
                if not self._pending:
                    return
                items, self._pending, self._urgent, self._armed = self._pending, [], False, False
                self._writing = True
            self._complete(items)

    def wait_acknowledged(self) -> None:
        """Have every done message acknowledged now, and wait until it is (or failed to be)."""
        with self._cond:
            self._ack_waiters += 1
            self._cond.notify_all()
            try:
                while self._to_ack or self._acking or (self._writing and self.acknowledge):
                    self._cond.wait()
            finally:
                self._ack_waiters -= 1

    def write_now(self, items: List[tuple]) -> List[QueueMessage]:
        """Write ``items`` in the calling thread, apart from what is pending (a previous
        daemon's journaled outcomes); return the messages they finish (not acknowledged:
        the caller does it)."""
        return self._write(items)

    def failed(self, message: QueueMessage) -> bool:
        with self._cond:
            return message.message_id in self._failed

    def _write_wait(self) -> Optional[float]:
        """0 when the pending outcomes are to be written now, else how long until they are
        (None: until told). Called with the lock held."""
        if not self._pending or self._writing:
            return None
        if self._urgent and not (self._busy and self.gather):
            return 0.0
        deadlines = ([self._first_added + self.gather] if self._urgent else []) + (
            [self._first_added + self.linger] if self._armed else [])
        return max(0.0, min(deadlines) - time.monotonic()) if deadlines else None

    def _ack_wait(self) -> Optional[float]:
        """0 when the done messages are to be acknowledged now, else how long until they
        are (None: there are none). Called with the lock held."""
        if not self._to_ack or self._acking:
            return None
        if self._ack_waiters or not self._busy or len(self._to_ack) >= self.ACK_BATCH:
            return 0.0
        return max(0.0, self._acks_since + self.ack_linger - time.monotonic())

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    write, ack = self._write_wait(), self._ack_wait()
                    if write == 0 or ack == 0:
                        break
                    # While the daemon is busy, look every linger (see call_starts).
                    waits = [w for w in (write, ack, self.linger if self._busy else None)
                             if w is not None]
                    self._cond.wait(min(waits) if waits else None)
                if write == 0:  # first: what it finishes is acknowledged with the rest
                    done: List[QueueMessage] = []
                    items, self._pending = self._pending, []
                    self._urgent = self._armed = False
                    self._writing = True
                else:
                    done, self._to_ack = self._to_ack, []
                    self._acking = True
            if done:
                self._acknowledge(done)
            else:
                self._complete(items)

    def _acknowledge(self, done: List[QueueMessage]) -> None:
        try:
            self.acknowledge(done)  # type: ignore[misc]
        except Exception as exc:  # they come back; their outcomes are found then
            logger.warning("could not delete messages %s: %s: %s",
                           [m.message_id for m in done], type(exc).__name__, exc)
        with self._cond:
            self._acking = False
            self._cond.notify_all()

    def _complete(self, items: List[tuple]) -> None:
        """Write ``items`` (taken by this thread, which set ``_writing``), note the messages
        they finish, and hand those to the writer's thread to acknowledge."""
        done: List[QueueMessage] = []
        try:
            done = self._write(items)
            if done:
                self.on_done(done)
        except Exception:  # never let a writer die: flush() would wait for ever
            logger.exception("the status writer failed")
            done = []
        with self._cond:
            self._writing = False
            if done and self.acknowledge is not None:
                if not self._to_ack:
                    self._acks_since = time.monotonic()
                self._to_ack += done
            self._cond.notify_all()

    def _write(self, items: List[tuple]) -> List[QueueMessage]:
        by_job: Dict[str, List[tuple]] = {}
        for item in items:
            if item[0] == "outcome":
                by_job.setdefault(item[2]["job_id"], []).append(item)
        for outcomes in (run for job_outcomes in by_job.values()
                         for run in _consecutive_runs(job_outcomes)):
            try:
                self._put(outcomes)
            except Exception as exc:  # storage unreachable: the messages are retried
                calls = [status["call_id"] for _k, _m, _j, status, _r in outcomes]
                logger.error("writing the outcomes of calls %s failed; their messages will "
                             "be retried: %s: %s", calls, type(exc).__name__, exc)
                with self._cond:
                    self._failed.update(m.message_id for _k, m, _j, _s, _r in outcomes)
        done = []
        with self._cond:
            for kind, message, _job, _status, completed in items:
                if kind == "end":
                    if completed and message.message_id not in self._failed:
                        done.append(message)
                    self._failed.discard(message.message_id)  # settled either way
        return done

    def _storage(self, job: Dict[str, Any]) -> Any:
        """The job's storage, built once for the last few jobs."""
        storage = self._storages.get(job["job_id"])
        if storage is None:
            if len(self._storages) >= 16:
                del self._storages[next(iter(self._storages))]
            storage = self._storages[job["job_id"]] = storage_from_spec(job["storage"])
        return storage

    def _put(self, outcomes: List[tuple]) -> None:
        job = outcomes[0][2]
        storage = self._storage(job)
        first = outcomes[0][3]
        if len(outcomes) == 1:
            status, result = dict(first), outcomes[0][4]
            if result is not None:
                status["result"] = result  # one write: the status carries the result
            key = layout.status_key(job["job_id"], first["call_id"], first.get("attempt", 0))
            storage.put(key, encode_json(status).encode())
            completion.publish(job, [status], None, key)
            return
        statuses = [status for _k, _m, _j, status, _r in outcomes]
        results = {status["call_id"]: result for _k, _m, _j, status, result in outcomes
                   if result is not None}
        key = layout.batch_status_key(job["job_id"], first["call_id"], first.get("attempt", 0),
                                      statuses[-1]["call_id"])
        storage.put(key, encode_json({"job_id": job["job_id"], "statuses": statuses,
                                      "results": results}).encode())
        completion.publish(job, statuses, results, key)


def quick_status(job: Dict[str, Any], call: Dict[str, Any], constants: Dict[str, Any],
                 values: tuple) -> Dict[str, Any]:
    """The status of a plain success reported short by :meth:`QuickCalls.run`: what
    ``JobRunner.run`` would have written for it."""
    metadata = {"host_submit_timestamp": call.get("host_submit_timestamp"),
                "worker_start_timestamp": values[0], **constants}
    metadata.update(zip(QUICK_KEYS, values))  # (the start again: its place is kept)
    return {"job_id": job["job_id"], "call_id": call["call_id"],
            "attempt": call.get("attempt", 0), "success": True, "result_key": None,
            "exception": None, "stdout": "", "stderr": "", "metadata": metadata}


def _consecutive_runs(outcomes: List[tuple]) -> List[List[tuple]]:
    """``outcomes`` (of one job) as runs of consecutive call ids at one attempt: a batch
    status's key names the first and last call it covers, so a batch must hold every call
    between them and no other (a batch that cannot be read then fails exactly its own)."""
    def order(item: tuple) -> tuple:
        status = item[3]
        call_id = status["call_id"]
        return status.get("attempt", 0), len(call_id), call_id

    runs: List[List[tuple]] = []
    previous = None
    for item in sorted(outcomes, key=order):
        status = item[3]
        attempt, call_id = status.get("attempt", 0), status["call_id"]
        if previous is not None and previous[0] == attempt and call_id.isdigit() \
                and previous[1].isdigit() and int(call_id) == int(previous[1]) + 1:
            runs[-1].append(item)
        else:
            runs.append([item])
        previous = (attempt, call_id)
    return runs


@dataclass(eq=False)
class _RunningCall:
    """A call a daemon runs: its message, and how to stop it if it is cancelled."""

    message: QueueMessage
    job: Dict[str, Any]
    call: Dict[str, Any]
    last: bool  # the message's last call
    process: Any = None  # the EnvironmentProcess running it, if not this process
    stopped: bool = False


class Daemon:
    #: Messages received before the daemon, however busy, waits for their outcomes to be
    #: written and starts its journal afresh (it does so whenever the status writer has
    #: nothing left to write).
    SETTLE_EVERY = 1000
    #: The shortest ``visibility_timeout`` with which a busy daemon gathers the storage
    #: writes of several receives (see :class:`StatusWriter`). Outcomes not yet written
    #: when a call kills the daemon are written by its successor from the journal, which
    #: must happen before their messages come back — at least two thirds of the timeout
    #: after the last heartbeat: a restart under load can take seconds. With a shorter
    #: timeout each receive's outcomes are written before the next receive's calls run.
    GATHER_MIN_VISIBILITY = 30.0

    def __init__(self, settings: DaemonSettings, *, queue: Optional[TaskQueue] = None,
                 instance_id: str = "",
                 terminate_instance: Optional[Callable[[str], Optional[bool]]] = None) -> None:
        self.settings = settings
        self.queue = queue or queue_from_spec(settings.queue)
        self.instance_id = instance_id or settings.instance_id or socket.gethostname()
        self.runner = JobRunner(worker_id=f"{self.instance_id}-{settings.process_name}")
        self.environments = JobEnvironments(
            settings.env_dir or os.path.join(settings.state_dir, "envs"),
            max_age=settings.env_max_age, max_bytes=settings.env_max_bytes,
            worker_id=self.runner.worker_id)
        self.board = IdleBoard(settings.state_dir, settings.process_name)
        #: Releases the instance; returns False to keep it (None counts as released).
        self._terminate_instance = terminate_instance or (lambda iid: None)
        self.journal = Journal(settings.state_dir, settings.process_name)
        self.crashes = CrashLedger(settings.state_dir)
        self.statuses = StatusWriter(
            on_done=self._written, acknowledge=self.queue.delete_many,
            gather=None if settings.visibility_timeout >= self.GATHER_MIN_VISIBILITY else 0.0)
        #: The last receive's messages until they are settled (:meth:`_settle`), and the
        #: heartbeat that holds them.
        self._unsettled: List[QueueMessage] = []
        self._heartbeat: Optional[Heartbeat] = None
        #: The next receive, started while the last one's calls ran (see :meth:`step`), and
        #: how long the last receive's calls took (None: no receive yet).
        self._next_receive: Any = None
        self._last_handling: Optional[float] = None
        #: One cancel-marker listing per job and half a second (the latest jobs only).
        self._cancel_checks: Dict[str, CancelChecks] = {}
        self.verifier = Verifier.from_spec(settings.task_key)
        self.stopping = threading.Event()
        self.calls_run = 0
        #: The receive's quick-call runners, by job id (see :meth:`_quick_calls`).
        self._quick: Dict[str, QuickCalls] = {}
        #: The call being run, for the heartbeat's cancel check (see :meth:`stop_if_cancelled`).
        self._running: Optional[_RunningCall] = None
        self._outcome_lock = threading.Lock()

    # -- messages --------------------------------------------------------------------
    def _done_calls(self, job: Dict[str, Any], calls: List[Dict[str, Any]]) -> set:
        """The ids of ``calls`` whose outcome is in storage: in its own status, or in a batch
        status that one of ``calls`` starts (how :class:`StatusWriter` wrote a message)."""
        storage = storage_from_spec(job["storage"])
        wanted = {(c["call_id"], c.get("attempt", 0)) for c in calls}
        done = set()
        for call_id, attempt in sorted(wanted):
            if call_id in done:
                continue
            # Batches that start at this call (one listing finds every form of their key).
            prefix = layout.batch_status_key(job["job_id"], call_id, 0).rsplit(".json", 1)[0]
            for key in storage.list(prefix):
                if (layout.attempt_of_batch_status_key(key) or 0) != attempt:
                    continue
                try:
                    batch = decode_json(storage.get(key))
                except (StorageKeyError, ValueError):
                    continue
                done.update(s.get("call_id") for s in batch.get("statuses") or []
                            if (s.get("call_id"), s.get("attempt", 0)) in wanted)
            if call_id not in done and storage.exists(
                    layout.status_key(job["job_id"], call_id, attempt)):
                done.add(call_id)
        return done

    def _put_status(self, job: Dict[str, Any], call: Dict[str, Any],
                    status: Dict[str, Any]) -> None:
        storage = storage_from_spec(job["storage"])
        key = layout.status_key(job["job_id"], call["call_id"], call.get("attempt", 0))
        storage.put(key, encode_json(status).encode())
        completion.publish(job, [status], None, key)  # the status carries its result

    def _cancelled(self, job: Dict[str, Any], call: Dict[str, Any]) -> bool:
        job_id, known = job["job_id"], self._cancel_checks
        checks = known.get(job_id)
        if checks is None:
            checks = CancelChecks(storage_from_spec(job["storage"]), job)
            if len(known) >= 16:
                del known[next(iter(known))]
            known[job_id] = checks
        elif next(reversed(known)) != job_id:
            known[job_id] = known.pop(job_id)  # the latest used last
        return checks.cancelled(call)

    def _skip_if_cancelled(self, message: QueueMessage, job: Dict[str, Any],
                           call: Dict[str, Any]) -> bool:
        """Record a cancelled status instead of starting a call the client cancelled."""
        if not self._cancelled(job, call):
            return False
        self.statuses.add(message, job, cancelled_status(job, call, "before it started"), None)
        logger.info("call %s/%s was cancelled; not running it", job["job_id"], call["call_id"])
        return True

    def _run_call(self, job: Dict[str, Any], call: Dict[str, Any],
                  running: "_RunningCall") -> None:
        self.statuses.call_starts()
        log_call_line(logger, CALL_STARTED, job["job_id"], call["call_id"],
                      call.get("attempt", 0))
        if job.get("runtime") and self.runner._runtime_mismatch(job):
            # Another runtime than this daemon's own: run it in that runtime's environment.
            try:
                process = self.environments.runner_for(job)
            except RuntimeBuildError as exc:  # missing or broken: no receive will fix it
                self._put_status(job, call, failed_status(job, call, exc))
                return
            running.process = process
            self._running = running
            try:
                outcome = process.run(job, call)
                status, result = outcome.status, outcome.result
            except EnvironmentProcessDied:
                if running.stopped:
                    return  # killed to cancel the call, whose status is written
                logger.error("the call killed its environment's process; exiting as if it "
                             "had killed this daemon")
                self.statuses.flush()  # the earlier calls' outcomes
                for handler in logging.getLogger().handlers:
                    handler.flush()  # what the call logged, for wrencore_call_logs
                os._exit(70)
        else:
            self._running = running
            quick = self._quick_calls(job)
            if quick is None:
                outcome = self.runner.run(job, call, store=False)
                status, result = outcome.status, outcome.result
            else:
                _tag, status, result, values = quick.run(call, None)
                if status is None:  # a plain success: its status is built here
                    status = quick_status(job, call, quick.constants, values)
        with self._outcome_lock:  # from here on, the heartbeat leaves the call alone
            self._running = None
            if running.stopped:
                return
        self.statuses.add(running.message, job, status, result)
        self.calls_run += 1
        log_call_line(logger, CALL_ENDED, job["job_id"], call["call_id"],
                      "succeeded" if status["success"] else "failed",
                      status["metadata"].get("worker_end_timestamp", 0)
                      - status["metadata"].get("worker_start_timestamp", 0))

    def _quick_calls(self, job: Dict[str, Any]) -> Optional[QuickCalls]:
        """The receive's runner of ``job``'s calls in this process that does once what
        ``JobRunner.run`` does per call (see :class:`QuickCalls`), or None while the job's
        calls need ``run`` (its first call here, a timeout, an environment)."""
        quick = self._quick.get(job["job_id"])
        if quick is None:
            quick = self.runner.quick_calls(job)
            if quick is not None:
                self._quick[job["job_id"]] = quick
        return quick

    def _finish_quick_calls(self) -> None:
        """The receive's calls are run: compare the process state exactly once more (see
        :meth:`QuickCalls.finish`)."""
        for quick in self._quick.values():
            quick.finish()
        self._quick.clear()

    def handle(self, message: QueueMessage) -> bool:
        """Run a message's calls, handing their outcomes to :attr:`statuses`; True when
        every call has its outcome (the message is done once they are written)."""
        task = open_or_refuse(self.verifier, message.body, message.message_id,
                              message.receive_count)
        if task is None:  # released at once: it reaches the dead-letter queue, never runs
            self._release(message)
            return False
        job, calls = task["job"], task["calls"]
        try:
            done = self._done_calls(job, calls) if message.receive_count > 1 else set()
            for index, call in enumerate(calls):
                if call["call_id"] in done:
                    logger.info("call %s/%s was already done; not running it again",
                                job["job_id"], call["call_id"])
                    continue
                if self._skip_if_cancelled(message, job, call):
                    continue
                self._run_call(job, call, _RunningCall(
                    message, job, call, last=index == len(calls) - 1))
        except Exception as exc:  # storage unreachable: leave the message for a retry
            logger.error("message %s could not be completed, it will be retried: %s: %s",
                         message.message_id, type(exc).__name__, exc)
            return False
        return True

    def stop_if_cancelled(self) -> None:
        """Stop the running call if the client cancelled it (called by the heartbeat)."""
        running = self._running
        if running is None:
            return
        marker = cancel_marker(storage_from_spec(running.job["storage"]), running.job,
                               running.call)
        if not marker or not marker.get("stop_running", True):
            return
        with self._outcome_lock:
            if self._running is not running:
                return  # it finished meanwhile
            job, call = running.job, running.call
            running.stopped = True
            self._put_status(job, call, cancelled_status(
                job, call, "while it ran; the worker process running it was stopped"))
            if running.process is not None:
                logger.info("call %s/%s was cancelled while it ran; stopping its environment "
                            "process", job["job_id"], call["call_id"])
                running.process.proc.kill()
                return
            logger.warning("call %s/%s was cancelled while it ran in this daemon's process; "
                           "the daemon exits and supervisord starts a new one",
                           job["job_id"], call["call_id"])
            self.statuses.flush()  # the outcomes of the message's earlier calls
            if running.last and not self.statuses.failed(running.message):
                self.journal.finished(running.message)  # the successor deletes it
            else:
                self.journal.interrupted(running.message)  # the rest of it runs elsewhere
            for handler in logging.getLogger().handlers:
                handler.flush()
            os._exit(CANCELLED_EXIT_CODE)

    def _release(self, message: QueueMessage, after: float = 0) -> None:
        try:
            self.queue.change_visibility(message, after)
        except Exception as exc:
            logger.warning("could not release message %s: %s", message.message_id, exc)

    def _order(self, messages: List[QueueMessage]) -> List[QueueMessage]:
        """Fresh messages first; redelivered ones after, known crashers last.

        A redelivered message may be one whose call killed a daemon. Running it after the
        others — which are deleted first — keeps a crash from costing them a receive.
        """
        return sorted(messages, key=lambda m: (
            m.receive_count > 1,
            self.crashes.count(m.message_id) if m.receive_count > 1 else 0,
            m.receive_count))

    def _receive(self) -> List[QueueMessage]:
        """The receive started ahead, if there is one, else a receive now."""
        pending, self._next_receive = self._next_receive, None
        if pending is not None:
            return pending.result()
        return self.queue.receive(max_messages=self.settings.batch_size,
                                  wait_time=self.settings.poll_wait,
                                  visibility_timeout=self.settings.visibility_timeout)

    def _receive_ahead(self, heartbeat: Heartbeat) -> None:
        """Start the next receive now, while this one's calls run, if its calls were quick:
        its messages are held (extended by the heartbeat) from the moment they arrive."""
        limit = self.settings.prefetch_below
        if limit <= 0 or self._last_handling is None or self._last_handling >= limit:
            return
        self._next_receive = self.queue.start_receive(
            max_messages=self.settings.batch_size, wait_time=self.settings.poll_wait,
            visibility_timeout=self.settings.visibility_timeout, on_arrival=heartbeat.hold)

    def _cancel_receive_ahead(self) -> None:
        """Give up the receive started ahead; release what it received anyway."""
        pending, self._next_receive = self._next_receive, None
        if pending is None:
            return
        for message in pending.cancel():
            self._release(message)
            if self._heartbeat is not None:
                self._heartbeat.release([message])

    def step(self, heartbeat: Heartbeat) -> int:
        """Receive once and handle what arrived; return the number of messages received.

        The outcomes are journaled (:meth:`Journal.outcomes`) before another call runs, so
        that a call that kills the daemon takes no other receive's outcome with it: its
        successor writes them (:meth:`recover`). They are written to storage behind the
        daemon's back, those of a busy daemon's receives together (see
        :class:`StatusWriter`; with a ``visibility_timeout`` under
        ``GATHER_MIN_VISIBILITY``, a receive's before the next one's calls run), and the
        messages acknowledged later still. A step settles the receives before it
        (:meth:`_settle`) when their outcomes are all written, or after ``SETTLE_EVERY``
        messages; :meth:`drain` settles them too. After quick calls the next
        receive is started before this one's calls run (``prefetch_below``); :meth:`drain`
        gives it up."""
        try:
            messages = self._receive()
        except BaseException:
            self._settle()
            raise
        if not messages:
            self._settle()
            self.statuses.busy(False)
            self.board.mark_idle()
            return 0
        # Only a process turning busy can meet an announced termination: the announcer
        # withdraws while any process is marked busy (see maybe_terminate).
        turned_busy = not self.board.busy
        self.board.mark_busy()
        self.statuses.busy(True)
        if turned_busy and self.board.terminating():
            self._settle()
            for message in messages:  # the instance is going away: give them back
                self._release(message)
            heartbeat.release(messages)
            return 0
        self._receive_ahead(heartbeat)  # under way while the last receive settles, too
        if not self.statuses.gather or len(self._unsettled) >= self.SETTLE_EVERY \
                or self.statuses.idle():
            self._settle()  # (not gathering: the last receive's are written before these run)
        self._heartbeat = heartbeat
        heartbeat.hold(messages)
        messages = self._order(messages)
        self.journal.begin(messages)
        self._unsettled = self._unsettled + messages
        started = time.monotonic()
        try:
            for message in messages:
                if self.stopping.is_set():
                    self._release(message)
                    heartbeat.release([message])
                    continue
                if message.receive_count > 1:  # may crash us: settle the others first
                    self.statuses.flush()
                    self.statuses.wait_acknowledged()
                self.journal.running(message)
                completed = self.handle(message)
                self.statuses.end_message(message, completed=completed)
                # In the journal before another call runs, also of this receive: a later
                # call that kills the daemon costs this one nothing (see recover); in
                # storage soon (see StatusWriter).
                self.journal.outcomes(self.statuses.take_unjournaled())
                if not completed:  # released, or left for a retry: no longer extended
                    heartbeat.release([message])
            self._finish_quick_calls()
            self.journal.running(None)
            self.journal.outcomes(self.statuses.take_unjournaled())
            self.statuses.push()
            flush_lines()
        except BaseException:
            self._finish_quick_calls()
            self._settle()
            raise
        self._last_handling = time.monotonic() - started
        return len(messages)

    def _written(self, done: List[QueueMessage]) -> None:
        """The outcomes of ``done`` are durable (called by the status writer, which then
        acknowledges them behind the daemon's back; :meth:`drain` waits for it): journal
        that, and stop extending them."""
        self.journal.finished(*done)
        if self._heartbeat is not None:
            self._heartbeat.release(done)

    def _settle(self) -> None:
        """Wait until the outcomes of the receives since the last settling are written (the
        done messages are then to be acknowledged), stop extending the rest, and end them
        in the journal."""
        if not self._unsettled:
            return
        self.statuses.flush()
        self.statuses.take_unjournaled()  # written
        if self._heartbeat is not None:
            self._heartbeat.release(self._unsettled)
        self.journal.end()
        self._unsettled = []

    def drain(self) -> None:
        """Settle the last receive, give up the one started ahead (releasing what it
        received), and wait until every acknowledgement is made."""
        self._settle()
        self._cancel_receive_ahead()
        self.statuses.wait_acknowledged()

    def recover(self) -> None:
        """After a crash: write the outcomes the previous daemon journaled but may not have
        written, blame the message that was running, settle the rest of what it held
        (acknowledge the done, release the others)."""
        entry = self.journal.load()
        if not entry:
            return
        by_id = {m["message_id"]: QueueMessage(**m) for m in entry["messages"]}
        entry["done"] += self._replay(entry["outcomes"], by_id, set(entry["done"]))
        culprit = entry.get("running")
        if culprit and culprit not in entry["done"]:
            count = self.crashes.add(culprit)
            logger.error("the previous daemon %s died running message %s (crash %d of it)",
                         self.settings.process_name, culprit, count)
            if self.settings.crash_redelivery >= 0 and culprit in by_id:
                self._release(by_id[culprit], self.settings.crash_redelivery)
        done = set(entry["done"])
        try:
            finished = [by_id[i] for i in done if i in by_id]
            if finished:
                self.queue.delete_many(finished)
        except Exception as exc:  # stale receipts: the messages come back on their own
            logger.warning("could not settle the previous daemon's messages: %s", exc)
        for message_id, message in by_id.items():
            if message_id != culprit and message_id not in done:
                try:
                    self.queue.change_visibility(message, 0)
                except Exception as exc:  # e.g. already released: it comes back anyway
                    logger.warning("could not release message %s of the previous daemon: "
                                   "%s", message_id, exc)
        self.journal.end()

    def _replay(self, outcomes: List[Any], by_id: Dict[str, QueueMessage],
                done: set) -> List[str]:
        """Write the journaled outcomes (see :meth:`Journal.outcomes`) of the previous
        daemon's messages not known to be done; journal and return the ids of the messages
        they finish. A write that fails leaves its messages to come back."""
        items = []
        jobs: Dict[str, Any] = {}  # a job's header is in the first line that needs it
        for line_jobs, _ in outcomes:
            jobs.update(line_jobs)
        for _, records in outcomes:
            for kind, message_id, job_id, status, extra in records:
                if message_id in done or message_id not in by_id or (
                        kind == "outcome" and job_id not in jobs):
                    continue
                items.append((kind, by_id[message_id], jobs.get(job_id), status, extra))
        if not items:
            return []
        finished = self.statuses.write_now(items)
        logger.info("wrote the outcomes of %d calls that the previous daemon %s had "
                    "journaled but maybe not written; %d messages are done",
                    sum(1 for item in items if item[0] == "outcome"),
                    self.settings.process_name, len(finished))
        if finished:
            self.journal.finished(*finished)
        return [m.message_id for m in finished]

    # -- idle ------------------------------------------------------------------------
    def maybe_terminate(self) -> bool:
        s = self.settings
        if not self.board.all_idle_for(s.idle_timeout, s.numprocs):
            return False
        if instance_uptime(s.boot_time_file) < s.min_uptime:
            return False
        self.drain()
        try:
            depth = self.queue.depth()
        except Exception as exc:
            if getattr(exc, "transient", True):
                return False  # unknown depth: stay, and ask again
            logger.warning("the queue cannot be read for good (%s); it is taken as empty", exc)
            depth = {}
        if depth.get("visible", 0) or depth.get("in_flight", 0):
            return False
        lock_fd = self.board.announce_termination()
        if lock_fd is None:
            return False
        # A sibling that received work marks itself busy before checking the announcement,
        # so after announcing either we see it busy here or it sees the announcement.
        if not self.board.all_idle_for(s.idle_timeout, s.numprocs):
            self.board.withdraw(lock_fd)
            return False
        logger.info("instance %s idle for %.0f s with an empty queue; releasing it",
                    self.instance_id, s.idle_timeout)
        try:
            if s.terminate and self._terminate_instance(self.instance_id) is False:
                logger.info("instance %s is kept (its provider says so); staying idle",
                            self.instance_id)
                self.board.withdraw(lock_fd)
                return False
        except Exception as exc:
            logger.error("could not terminate instance %s: %s", self.instance_id, exc)
            self.board.withdraw(lock_fd)
            return False
        with open(self.board.terminated_path, "w") as f:
            f.write(str(time.time()))
        if s.shutdown_command:
            logger.info("running %s", s.shutdown_command)
            for handler in logging.getLogger().handlers:
                handler.flush()
            subprocess.Popen(shlex.split(s.shutdown_command), start_new_session=True)
        return True

    # -- loop ------------------------------------------------------------------------
    def run(self) -> int:
        s = self.settings
        interval = s.heartbeat_interval or max(s.visibility_timeout / 3.0, 0.2)
        heartbeat = Heartbeat(self.queue, s.visibility_timeout, interval,
                              on_beat=self.stop_if_cancelled)
        logger.info("daemon %s on instance %s started (queue %s)", s.process_name,
                    self.instance_id, s.queue.get("config", {}).get("name", s.queue))
        self.recover()
        try:
            while not self.stopping.is_set():
                if os.path.exists(self.board.terminated_path):
                    logger.info("instance %s is terminating; daemon %s exits",
                                self.instance_id, s.process_name)
                    break
                try:
                    received = self.step(heartbeat)
                except Exception as exc:  # queue unreachable: back off, never die
                    logger.error("receiving failed: %s: %s", type(exc).__name__, exc)
                    self.board.mark_idle()
                    # A queue that is gone for good (deleted, access revoked) brings no more
                    # work: the instance is released once idle, as with an empty queue.
                    if not getattr(exc, "transient", True) and self.maybe_terminate():
                        break
                    self.stopping.wait(min(5.0, s.poll_wait + 0.5))
                    continue
                if not received and self.maybe_terminate():
                    break
        finally:
            self.drain()
            heartbeat.stop()
            self.environments.stop()
        return 0


# ------------------------------------------------------------------------------------
# logging and entry point
# ------------------------------------------------------------------------------------


def stream_name(instance_id: str, process_name: str) -> str:
    return f"{instance_id}-{process_name}"


#: The format of the daemon's lines.
LINE_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(process)d]: %(message)s"


class LineFormatter(logging.Formatter):
    """The daemon's log lines. The date and time of a timestamp are formatted once a
    second, not for every line (a daemon logs two lines per call)."""

    def __init__(self, fmt: str = LINE_FORMAT) -> None:
        super().__init__(fmt)
        self._second: tuple = (None, "")

    def formatTime(self, record: logging.LogRecord, datefmt: Optional[str] = None) -> str:
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        return self.time_text(record.created, record.msecs)

    def time_text(self, created: float, msecs: float) -> str:
        """``created`` (with its milliseconds ``msecs``) as a line's ``asctime``."""
        second, text = self._second
        if second != int(created):
            second = int(created)
            text = time.strftime(self.default_time_format, self.converter(created))
            self._second = (second, text)
        return self.default_msec_format % (text, msecs)


class LineHandler(logging.StreamHandler):
    """The daemon's stderr handler. A line is flushed at once — what a call logs is in the
    file before the call can take the process down — except the daemon's line saying a call
    ended: the next line, or the end of the receive (:func:`flush_lines`), writes it. So a
    call costs one write to the file, not two, and its start line is always written before
    it runs."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg is not CALL_ENDED:
            super().emit(record)
            return
        try:
            self.stream.write(self.format(record) + self.terminator)
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)


#: The handlers made by :func:`configure_logging` in this process.
_line_handlers: List[LineHandler] = []


def _sole_line_handler(log: logging.Logger) -> Optional[LineHandler]:
    """The :class:`LineHandler` that alone would write ``log``'s INFO lines, formatted as
    :func:`configure_logging` formats them, with no filter on the way; else None."""
    if not log.isEnabledFor(logging.INFO):
        return None
    found: Optional[LineHandler] = None
    node: Any = log
    while node is not None:
        if node.filters:
            return None
        for handler in node.handlers:
            if type(handler) is logging.NullHandler or (
                    type(handler) is _CallLogHandler and handler.ignores(logging.INFO)):
                continue
            if found is not None or handler not in _line_handlers or handler.filters \
                    or handler.level > logging.INFO \
                    or type(handler.formatter) is not LineFormatter \
                    or handler.formatter._fmt != LINE_FORMAT:
                return None
            found = handler
        node = node.parent if node.propagate else None
    return found


#: The part of a line between its time and its message, by logger name and process id.
_line_middles: Dict[tuple, str] = {}


def log_call_line(log: logging.Logger, msg: str, *args: Any) -> None:
    """Log one of the daemon's two lines of a call (its start, or :data:`CALL_ENDED`).

    When the daemon's own :class:`LineHandler` is the only handler that would take it (as
    on a worker that ships no logs elsewhere), the line is formatted and written straight
    to that handler's stream, exactly as logging would write it, without building a
    record: a call's two lines were a quarter of the daemon's own work per call. Any other
    handler (CloudWatch's, a test's) gets the record through logging as usual."""
    handler = _sole_line_handler(log)
    if handler is None:
        log.info(msg, *args)
        return
    created = time.time()  # as a LogRecord takes its time and milliseconds
    asctime = handler.formatter.time_text(  # type: ignore[union-attr]
        created, int((created - int(created)) * 1000) + 0.0)
    key = (log.name, os.getpid() if logging.logProcesses else None)
    middle = _line_middles.get(key)
    if middle is None:
        middle = _line_middles[key] = (
            f" {logging.getLevelName(logging.INFO)} {log.name} [{key[1]}]: ")
    line = asctime + middle + msg % args + "\n"
    try:
        with handler.lock:  # type: ignore[union-attr]
            handler.stream.write(line)
            if msg is not CALL_ENDED:  # see LineHandler
                handler.stream.flush()
    except Exception:  # stderr gone: logging's own error handling says so
        log.info(msg, *args)


def flush_lines() -> None:
    """Write out the daemon's lines held by its :class:`LineHandler` (only those: the
    plugins' handlers, such as CloudWatch's, send on their own schedule)."""
    for handler in _line_handlers:
        handler.flush()


def _buffered(stream: Any) -> Any:
    """A buffered text stream of its own on ``stream``'s file, for :class:`LineHandler`:
    ``sys.stderr`` writes through (a system call per line), and the handler holds a
    call's end line back (see there). What the calls print to ``sys.stderr`` comes
    between their start line, written before they run, and their end line, written
    after. ``stream`` itself when it has no file (a test's capture)."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return stream
    return open(os.dup(fd), "w", encoding=getattr(stream, "encoding", None) or "utf-8",
                errors="backslashreplace")


def configure_logging(settings: DaemonSettings) -> None:
    """The daemon is a program, not a library: it owns its process's logging.

    Every line goes to stderr, which supervisord keeps in a local file. Records carry no
    caller, thread or multiprocessing names (the daemon's lines name none, and finding
    the caller was a good part of a line's cost, two lines a call).
    """
    logging._srcfile = None  # type: ignore[attr-defined]  # documented: no caller lookup
    logging.logThreads = False
    logging.logMultiprocessing = False
    stream = LineHandler(_buffered(sys.stderr))
    stream.setFormatter(LineFormatter())
    _line_handlers.append(stream)
    root = logging.getLogger()
    root.setLevel(settings.log_level.upper())
    root.addHandler(stream)
    for noisy in ("botocore", "boto3", "urllib3", "google", "grpc"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def settle_startup_objects() -> None:
    """Collect the garbage of the process's start, then freeze what is left (the modules,
    clients and caches it built: some sixty thousand objects) out of the cyclic garbage
    collector's reach. A daemon allocates a few dicts per call, some of which live until
    their outcome is written, so full collections come every few thousand calls, and each
    walked every object of the process: 75 ms on a worker at a thousand calls a second.
    The calls' own objects are collected as before."""
    gc.collect()
    gc.freeze()


def serve(settings: DaemonSettings, instance_id: str,
          log_handlers: Optional[List[logging.Handler]] = None,
          release_instance: Optional[Callable[[str], Optional[bool]]] = None) -> int:
    """Run a daemon in this process until the instance terminates or SIGTERM arrives.

    Call :func:`configure_logging` first; ``log_handlers`` are added to it.
    ``release_instance(instance_id)`` gives the idle machine back (False: keep it).
    """
    for handler in log_handlers or []:
        logging.getLogger().addHandler(handler)
    daemon = Daemon(settings, instance_id=instance_id, terminate_instance=release_instance)
    signal.signal(signal.SIGTERM, lambda signum, frame: daemon.stopping.set())
    settle_startup_objects()
    try:
        return daemon.run()
    finally:
        logging.shutdown()


def main(argv: Optional[List[str]] = None) -> int:
    """Run a daemon without plugins: the instance id from the settings (or the host name),
    logs to stderr only, and an idle machine is not released (the daemons just exit).
    Entry points that ask the plugins are ``wrencore_workers.entry`` and
    ``wrencore_aws_sqs_ec2.worker``."""
    parser = argparse.ArgumentParser(prog="wrencore-daemon", description=__doc__.split("\n")[0])
    parser.add_argument("--settings", help="JSON settings file")
    args = parser.parse_args(argv)
    settings = DaemonSettings.load(args.settings)
    configure_logging(settings)
    return serve(settings, settings.instance_id or socket.gethostname())


if __name__ == "__main__":
    sys.exit(main())
