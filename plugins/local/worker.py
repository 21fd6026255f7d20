"""A local worker process: a thin adapter between stdin/stdout frames and the JobRunner.

The protocol's pipes are moved off fds 0 and 1 first, so a call (or a C extension it uses)
that prints to stdout cannot corrupt them. Imports only the runtime.

Frames in:  ``("tasks", job, [(claim, call), ...])`` or ``("exit",)``; ``claim`` is the
            call's slot in this worker's claim file ``$WRENCORE_LOCAL_CLAIMS``.
Frames out: ``("ready", pid)``, then ``("done", reports, keys, constants)`` for the calls
            run since the last report, and ``("retire", reason)`` before
            exiting when the worker must be replaced. While a call runs, its writes to
            stdout and stderr and its log records are sent within ``LIVE_DELAY`` seconds
            as ``("output", claim, [(stream, text), ...])``, whichever thread made them.

A report is ``(claim, status, result_bytes, None)``, or, for a call that succeeded with its
result inline and printed and logged nothing, ``(claim, None, result_bytes, values)``:
its status's metadata values, whose keys are the frame's ``keys``, with the frame's
``constants`` (the worker's id, host name, pid and Python, sent once per frame) unless None
(pickling and unpickling a status per call was most of the pipe's cost for quick calls).

A frame's calls after the first of its job in this worker run through the runner's
``QuickCalls``, which sets up once per frame what ``JobRunner.run`` sets up per call.

Reports of quick calls are sent together: a report waits at most ``REPORT_DELAY`` seconds
of further quick calls, never for a call of a job with a timeout (the pool times the call
from the report before it), and never while the worker waits for work.

A call is run only if this worker marks its claim slot first; one already marked was
taken by another worker and is skipped silently (see ``wrencore_local.claims``).
"""

from __future__ import annotations

import _thread
import os
import sys
import threading
import time
from itertools import chain, groupby, islice
from operator import itemgetter

from wrencore_runtime.runner import QUICK_KEYS, JobRunner

from .claims import ClaimSlots
from .framing import read_frame, write_frame

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing is not imported at run time
    from typing import List, Optional, Tuple


def _claim_pipes():
    proto_in = os.fdopen(os.dup(0), "rb")
    proto_out = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    return proto_in, proto_out


#: Longest a finished call's report waits to be sent with the reports of later calls.
REPORT_DELAY = 0.001
#: Most reports sent in one frame.
REPORT_BATCH = 64
#: Longest a running call's output waits to be sent with its later output.
LIVE_DELAY = 0.02


class _Frames:
    """The protocol's output pipe, shared by the main thread and a call's own threads."""

    def __init__(self, stream) -> None:
        self.stream = stream
        self._lock = threading.Lock()

    def send(self, frame: tuple) -> None:
        with self._lock:
            write_frame(self.stream, frame)


class _LiveOutput:
    """Sends the running call's output, which the runner appends to :attr:`queue`.

    A write only appends to the list; while a call runs, a sender thread takes the list
    (putting a new one in its place) every ``LIVE_DELAY`` seconds and sends it as one
    ``("output", claim, [(stream, text), ...])`` frame, consecutive writes to one stream
    joined, so a call printing in a tight loop pays an append per write, not a frame. An
    append that raced the swap lands in the list taken before and goes with the next
    frame. :meth:`stop` sends the rest before the call's report; what a thread the call
    left behind writes while no call runs is dropped.
    """

    def __init__(self, frames: _Frames) -> None:
        self.frames = frames
        self.token: Optional[int] = None
        self.queue: List[Tuple[str, str]] = []
        #: The list taken last and how much of it was sent.
        self._taken: Tuple[List[Tuple[str, str]], int] = ([], 0)
        self._lock = threading.Lock()
        self._running = threading.Event()
        # Not threading.Thread.start(), which waits until the thread runs: on a busy machine
        # that costs the worker's first call milliseconds, and the loop waits for a call anyway.
        _thread.start_new_thread(self._send_loop, ())

    def start(self, token: int) -> None:
        if self.queue or self._taken[0]:
            self.queue, self._taken = [], ([], 0)
        self.token = token
        if not self._running.is_set():  # kept set while calls follow one another
            self._running.set()

    def _send_loop(self) -> None:
        while True:
            self._running.wait()
            time.sleep(LIVE_DELAY)
            if self.queue or len(self._taken[0]) > self._taken[1]:
                self.send()
            elif self.token is None:
                self._running.clear()  # no call ran for a while: sleep until the next

    def send(self) -> None:
        with self._lock:  # held while sending, so stop() cannot overtake a frame in flight
            previous, sent = self._taken
            taken = self.queue
            self.queue = []
            count = len(taken)
            self._taken = (taken, count)
            if self.token is None:
                return
            writes = chain(islice(previous, sent, None), islice(taken, count))
            chunks = [(stream, "".join(map(itemgetter(1), group)))
                      for stream, group in groupby(writes, key=itemgetter(0))]
            if not chunks:
                return
            try:
                self.frames.send(("output", self.token, chunks))
            except (OSError, ValueError):
                pass  # the pool went away; the call's status still carries its output

    def stop(self) -> None:
        if self.queue or len(self._taken[0]) > self._taken[1]:
            self.send()
        with self._lock:  # a frame the sender thread is sending goes before the report
            self.token = None


#: The fields of a status that a report without one stands for (see the module docstring).
_PLAIN_STATUS_FIELDS = frozenset(("job_id", "call_id", "attempt", "success", "result_key",
                                  "exception", "stdout", "stderr", "metadata"))


class _Reports:
    def __init__(self, stream: _Frames) -> None:
        self.stream = stream
        self.pending: list = []
        self.keys: Optional[tuple] = None  # the metadata keys of this frame's short reports
        #: Metadata the same for each of this frame's short reports (QuickCalls.constants).
        self.constants: Optional[dict] = None
        self.since = 0.0

    def add(self, token: int, status: dict, result: Optional[bytes]) -> None:
        self._append(self._report(token, status, result))

    def add_quick(self, report: tuple, constants: dict) -> None:
        """A report from ``QuickCalls.run``."""
        if report[3] is not None and self.keys is not QUICK_KEYS:
            if self.keys is not None:
                self.flush()  # that frame's short reports have other keys
            self.keys, self.constants = QUICK_KEYS, constants
        self._append(report)

    def _append(self, report: tuple) -> None:
        if not self.pending:
            self.since = time.monotonic()
        self.pending.append(report)
        if len(self.pending) >= REPORT_BATCH:
            self.flush()

    def _report(self, token: int, status: dict, result: Optional[bytes]) -> tuple:
        if status["success"] and result is not None and not status["stdout"] \
                and not status["stderr"] and status.keys() == _PLAIN_STATUS_FIELDS:
            metadata = status["metadata"]
            keys = tuple(metadata)
            if self.keys is None:
                self.keys = keys
            if keys == self.keys:
                return (token, None, result, tuple(metadata.values()))
        return (token, status, result, None)

    def due(self, job) -> bool:
        return bool(self.pending) and (
            bool(job.get("timeout")) or time.monotonic() - self.since > REPORT_DELAY)

    def flush(self) -> None:
        if self.pending:
            self.stream.send(("done", self.pending, self.keys, self.constants))
            self.pending = []
            self.keys = self.constants = None


def main() -> int:
    try:
        return _serve()
    except (BrokenPipeError, KeyboardInterrupt):
        return 0  # the pool went away (or was interrupted): nothing to report, no traceback


def _serve() -> int:
    proto_in, proto_out = _claim_pipes()
    claims = ClaimSlots(os.environ["WRENCORE_LOCAL_CLAIMS"])
    runner = JobRunner(worker_id=os.environ.get("WRENCORE_WORKER_ID", ""))
    frames = _Frames(proto_out)
    reports = _Reports(frames)
    live = _LiveOutput(frames)
    frames.send(("ready", os.getpid()))
    while True:
        reports.flush()
        try:
            message = read_frame(proto_in)
        except EOFError:
            return 0
        if message[0] == "exit":
            return 0
        _, job, calls = message
        quick = None
        try:
            for token, call in calls:
                if reports.due(job):
                    reports.flush()
                if not claims.claim(token):
                    continue
                live.start(token)
                if quick is None:
                    quick = runner.quick_calls(job, live)
                if quick is not None:
                    report = quick.run(call, token)
                    live.stop()
                    claims.finish(token)
                    reports.add_quick(report, quick.constants)
                else:
                    outcome = runner.run(job, call, store=False, live=live)
                    live.stop()
                    claims.finish(token)
                    reports.add(token, outcome.status, outcome.result)
                if runner.needs_replacement:
                    break
        finally:
            if quick is not None:
                quick.finish()
        if runner.needs_replacement:
            reports.flush()
            frames.send(("retire", runner.needs_replacement))
            return 0


if __name__ == "__main__":
    sys.exit(main())
