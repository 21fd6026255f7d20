"""The local backend: a pool of long-lived worker processes fed through pipes.

Calls are queued on the user's computer and handed to workers in batches whose size
shrinks as the queue drains (large batches amortize pipe round trips; small ones keep both
cores busy to the end). Each worker reports every call as it finishes, so the host always
knows which call a worker is running: if the worker dies, exactly that call fails with
:class:`WorkerCrashedError` and the rest of its batch is queued again; if it outruns its
timeout, the worker is killed and that call fails with :class:`CallTimeoutError`.

A call handed to a worker is not committed to it until the worker *claims* it, just before
running it, by marking the call's slot in its claim file (see ``wrencore_local.claims``).
A worker that runs out of work steals the unclaimed tail of the busiest worker's batch by
marking those slots first, so a stuck or slow worker never holds calls an idle one could
run, and no call runs twice: the victim skips a call whose slot it finds marked.

Each worker is the leader of its own session; at its exit the pool kills what is left in
its process group, so no process a call started outlives the worker. A worker whose call
changed process state that cannot be restored (see ``wrencore_runtime.runner``) retires
after reporting that call, and so does one that ran ``max_tasks_per_child`` calls.
"""

from __future__ import annotations

import collections
import fcntl
import itertools
import logging
import math
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Deque, Dict, List, Optional, Tuple

from wrencore.backends import Backend, Call
from wrencore.config import Config
from wrencore.errors import (
    CallCancelledError,
    CallTimeoutError,
    ConfigError,
    WorkerCrashedError,
    WrenError,
)
from wrencore.futures import cancel, claim, complete_from_results, complete_from_status
from wrencore_runtime.storage import Storage

from .claims import CLAIMED, SLOTS, ClaimSlots, claims_directory
from . import zygote
from .framing import FrameReader, encode_frame_parts

logger = logging.getLogger(__name__)

#: Seconds past a call's timeout before its worker is killed (the worker's own timer
#: raises CallTimeoutError inside the call first, when the call is interruptible).
KILL_GRACE = 1.0
MAX_BATCH = 256


@dataclass(eq=False)
class Task(Call):
    """A call queued on, or handed to, a worker: the executor makes the local backend's
    calls as tasks (``LocalBackend.call_type``); a plain :class:`Call` (a retry, a backup)
    is made into one when it is queued."""

    job: Any = field(default=None, repr=False)
    #: Calls per batch while queued (1 once requeued).
    chunksize: Optional[int] = None
    #: Its claim slot in its worker's claim file, set when it is sent.
    token: int = -1

    # Compared and hashed by identity, as the queues that hold tasks expect.
    __eq__ = object.__eq__
    __hash__ = object.__hash__

    @property
    def call(self) -> "Task":
        return self


#: Bytes a worker's pipes hold (Linux; the default is 64 KiB): large arguments and results
#: then pass in a few system calls (and wake-ups of a reader or the I/O thread), not one per
#: 64 KiB.
PIPE_SIZE = 1 << 20


def _widen_pipe(fd: int) -> None:
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)  # type: ignore[attr-defined]
    except (AttributeError, OSError):  # not Linux, or above /proc/sys/fs/pipe-max-size
        pass


def kill_process_group(pgid: int) -> None:
    """SIGKILL every process left in a worker's process group (the worker leads it)."""
    if pgid <= 0:  # a forked worker whose fork was never reported; never our own group
        return
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class _Worker:
    def __init__(self, pool: "WorkerPool", index: int):
        self.pool = pool
        self.index = index
        self.inflight: Deque[Task] = collections.deque()
        self.low_water = 1  # ask for more when this few calls are left
        self.done_count = 0
        self.retiring = False
        #: Whether the process runs (its "ready" frame came): its calls' clocks start then.
        self.ready = False
        self.current_started = 0.0
        self.kill_reason: Optional[BaseException] = None
        self.slots = ClaimSlots(os.path.join(pool.claims_dir, f"worker-{index}"), create=True)
        self._next_slot = itertools.count()
        env = dict(os.environ, WRENCORE_WORKER_ID=f"local-{os.getpid()}-{index}",
                   WRENCORE_LOCAL_CLAIMS=self.slots.path)
        env.update(pool.extra_worker_env)
        self.proc: Any = None
        if pool.fork_server:
            try:
                self.proc = zygote.start_worker(pool.python, env, pool.workdir,
                                                base_env=dict(os.environ))
            except OSError as exc:
                logger.warning("local fork server unavailable (%s); starting workers as "
                               "new interpreters", exc)
                pool.fork_server = False
        if self.proc is None:
            self.proc = subprocess.Popen(
                [pool.python, "-c",
                 "from wrencore_local.worker import main; raise SystemExit(main())"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None,
                cwd=pool.workdir, env=env, bufsize=1 << 16, start_new_session=True,
            )
        #: Set once the worker's exit was handled (its calls failed or queued again).
        self.exited = threading.Event()
        #: Frames (or their unwritten ends) not yet written to the worker's stdin (the I/O
        #: thread writes them when the pipe has room again); guarded by ``_out_lock``.
        self._out: List[memoryview] = []
        self._out_lock = threading.Lock()
        self._stdin_closed = False
        self.stdin_fd = self.proc.stdin.fileno()
        self.stdout_fd = self.proc.stdout.fileno()
        os.set_blocking(self.stdin_fd, False)
        os.set_blocking(self.stdout_fd, True)
        for fd in (self.stdin_fd, self.stdout_fd):
            _widen_pipe(fd)
        # A reader thread per worker (blocking reads): large results' copies out of the
        # pipes overlap across workers, which one thread reading every pipe serialized.
        self.reader = threading.Thread(target=self._read_loop, daemon=True,
                                       name=f"wrencore-local-reader-{index}")
        self.reader.start()

    @property
    def alive(self) -> bool:
        # The reader thread reaps the process; polling here would cost a system call.
        return self.proc.returncode is None

    @property
    def usable(self) -> bool:
        return self.alive and self.kill_reason is None and not self.retiring

    def quota_left(self) -> Optional[int]:
        limit = self.pool.max_tasks_per_child
        if limit is None:
            return None
        return max(0, limit - self.done_count - len(self.inflight))

    def send(self, job: Dict[str, Any], tasks: List[Task]) -> None:
        if not self.inflight:
            self.current_started = time.monotonic()
        for task in tasks:
            task.token = next(self._next_slot) % SLOTS
            self.slots.reset(task.token)
        self.inflight.extend(tasks)
        self.low_water = max(1, len(tasks) // 2)
        self._write(encode_frame_parts(("tasks", job, [(t.token, t.message) for t in tasks])))

    def _write(self, parts: Tuple[bytes, ...]) -> None:
        """Write a frame's ``parts`` to the worker's stdin now, as far as the pipe has room;
        the I/O thread writes the rest. Never blocks, so a thread holding the pool's lock
        can send while the worker waits for its reports to be read."""
        with self._out_lock:
            if self._stdin_closed:
                return  # the worker is gone; its exit handles the calls
            if self._out:
                self._out.extend(map(memoryview, parts))
                return
            try:
                written = os.writev(self.stdin_fd, parts)
            except BlockingIOError:
                written = 0
            except OSError:
                return  # the worker is gone; its exit handles the calls
            for part in parts:
                if written >= len(part):
                    written -= len(part)
                else:  # the unwritten rest is a view, never a copy
                    self._out.append(memoryview(part)[written:])
                    written = 0
            if not self._out:
                return
        self.pool._io.want_write(self)

    def flush_out(self) -> bool:
        """Write what waits for the pipe (I/O thread); True when all is written."""
        with self._out_lock:
            while self._out:
                frame = self._out[0]
                try:
                    written = os.write(self.stdin_fd, frame)
                except BlockingIOError:
                    return False
                except OSError:
                    self._out.clear()
                    self._stdin_closed = True
                    return True
                if written < len(frame):
                    self._out[0] = frame[written:]
                    return False
                self._out.pop(0)
            return True

    def on_frame(self, frame: Any) -> None:
        """A frame from the worker (its reader thread)."""
        kind = frame[0]
        if kind == "done":
            self.pool._on_done(self, frame[1], frame[2], frame[3])
        elif kind == "ready":
            self.pool._on_ready(self)
        elif kind == "output":
            self.pool._on_output(self, frame[1], frame[2])
        elif kind == "retire":
            self.pool._on_retire(self, frame[1])

    def _read_loop(self) -> None:
        fd = self.stdout_fd
        frames = FrameReader()
        on_frame = self.on_frame
        try:
            while True:
                try:
                    received = frames.read(fd)
                except OSError:
                    break  # the pipe failed: as if it ended
                if received is None:
                    break
                for frame in received:
                    on_frame(frame)
        except BaseException:  # never let this thread die: the worker's futures would hang
            logger.exception("local worker %d sent an unreadable frame", self.index)
            self.kill()
        try:
            self.proc.wait()
            kill_process_group(self.proc.pid)
            with self._out_lock:
                self._stdin_closed = True
                self._out.clear()
            self.pool._io.forget(self)  # the I/O thread closes the streams
            self.pool._on_exit(self)
        finally:
            self.exited.set()

    def kill(self, reason: Optional[BaseException] = None) -> None:
        if reason is not None and self.kill_reason is None:
            self.kill_reason = reason
        if self.proc.returncode is None:
            kill_group = getattr(self.proc, "kill_group", None)
            if kill_group is not None:
                kill_group()  # a forked worker: killed once its fork is reported
            else:
                kill_process_group(self.proc.pid)

    def stop(self) -> None:
        self._write(encode_frame_parts(("exit",)))


class _IOLoop:
    """The pool's one I/O thread: writes what a worker's stdin had no room for (task frames
    larger than the pipe's free space), so no worker needs a writer thread of its own.

    Only this thread touches the selector; other threads ask for changes through
    :attr:`_requests` and wake it through a pipe. Started when first needed.
    """

    def __init__(self, pool: "WorkerPool") -> None:
        self.pool = pool
        self._requests: Deque[Tuple[str, Any]] = collections.deque()
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        self._wake_r = self._wake_w = -1
        self._stopped = False

    def want_write(self, worker: _Worker) -> None:
        self._request("write", worker)

    def forget(self, worker: _Worker) -> None:
        """The worker exited: stop writing to it and close its pipes."""
        self._request("forget", worker)

    def stop(self) -> None:
        with self._lock:
            thread = self._thread
        self._request("stop", None)
        if thread is not None and thread is not threading.current_thread():
            thread.join(5)

    def _request(self, kind: str, worker: Optional[_Worker]) -> None:
        with self._lock:
            if self._thread is None and kind != "write":
                # Nothing to stop, and no selector holds the worker's pipes.
                if kind == "forget":
                    _close_pipes(worker)
                elif kind == "stop":
                    self._stopped = True
                return
            if self._stopped:
                if kind == "forget":
                    _close_pipes(worker)
                return
            self._requests.append((kind, worker))
            if kind == "stop":
                self._stopped = True
            if self._thread is None:
                self._wake_r, self._wake_w = os.pipe()
                os.set_blocking(self._wake_r, False)
                os.set_blocking(self._wake_w, False)
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="wrencore-local-io")
                self._thread.start()
                return
            try:  # under the lock: the thread closes the pipe under it when it ends
                os.write(self._wake_w, b"\0")
            except BlockingIOError:
                pass  # woken already (the pipe is full)

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self._wake_r, selectors.EVENT_READ, None)
        try:
            while True:
                try:
                    if not self._serve(selector):
                        break
                except Exception:  # never let this thread die: every future would hang
                    logger.exception("the local pool's I/O thread failed; it goes on")
        finally:
            with self._lock:
                self._thread = None
                os.close(self._wake_r)
                os.close(self._wake_w)
                # Workers that exit later close their own pipes (see _request).
                forgotten = [worker for kind, worker in self._requests if kind == "forget"]
                self._requests.clear()
            selector.close()
            for worker in forgotten:
                _close_pipes(worker)

    def _serve(self, selector: selectors.BaseSelector) -> bool:
        """Handle one round of requests and writable pipes; False once asked to stop."""
        while self._requests:
            with self._lock:
                kind, worker = self._requests.popleft()
            if kind == "stop":
                return False
            if kind == "forget":
                try:
                    selector.unregister(worker.stdin_fd)
                except (KeyError, ValueError):
                    pass
                _close_pipes(worker)
            elif kind == "write" and not worker.flush_out():
                try:
                    selector.register(worker.stdin_fd, selectors.EVENT_WRITE, worker)
                except KeyError:
                    pass  # waiting for room already
        for key, _ in selector.select():
            worker = key.data
            if worker is None:
                try:
                    while os.read(self._wake_r, 4096):
                        pass
                except BlockingIOError:
                    pass
            elif worker.flush_out():
                selector.unregister(key.fd)
        return True


def _close_pipes(worker: _Worker) -> None:
    for stream in (worker.proc.stdin, worker.proc.stdout):
        try:
            stream.close()
        except OSError:
            pass


class WorkerPool:
    def __init__(self, size: int, storage: Storage, python: str,
                 extra_worker_env: Optional[Dict[str, str]] = None,
                 max_tasks_per_child: Optional[int] = None, fork_server: bool = False):
        self.size = size
        #: Fork workers from this process's fork server (see ``wrencore_local.zygote``).
        self.fork_server = fork_server and python == sys.executable and zygote.SUPPORTED
        self.storage = storage
        self.python = python
        self.extra_worker_env = extra_worker_env or {}
        self.max_tasks_per_child = max_tasks_per_child
        self.workdir = tempfile.mkdtemp(prefix="wrencore-local-")
        self.claims_dir = claims_directory()
        self._lock = threading.RLock()
        self._idle = threading.Condition(self._lock)
        self._pending: Deque[Task] = collections.deque()
        self._workers: List[_Worker] = []
        #: Futures of running calls whose worker is being killed to cancel them.
        self._cancelled: "weakref.WeakSet[Any]" = weakref.WeakSet()
        self._closed = False
        self._watchdog: Optional[threading.Thread] = None
        self._next_index = 0
        self._io = _IOLoop(self)
        if self.fork_server:  # it imports the worker's modules while the first calls are made
            zygote.prestart(python, base_env=dict(os.environ))

    # -- queueing and dispatch -------------------------------------------------------
    def enqueue(self, job: Dict[str, Any], calls: List[Call], chunksize: Optional[int]) -> None:
        with self._lock:
            if self._closed:
                raise WrenError("the local worker pool is shut down")
            for call in calls:
                task = call if type(call) is Task else \
                    Task(call.call_id, call.message, call.future)
                task.job, task.chunksize = job, chunksize
                self._pending.append(task)
            if not self._workers:
                self._start_workers()
            if job.get("timeout") and self._watchdog is None:
                self._watchdog = threading.Thread(target=self._watch_timeouts, daemon=True,
                                                  name="wrencore-local-watchdog")
                self._watchdog.start()
            self._dispatch()

    def _requeue(self, task: Task) -> None:
        """Put a call back at the head of the queue, to be sent on its own."""
        task.chunksize = 1
        self._pending.appendleft(task)

    def _start_workers(self) -> None:
        while len(self._workers) < self.size:
            self._workers.append(_Worker(self, self._next_index))
            self._next_index += 1

    def _batch_size(self, chunksize: Optional[int]) -> int:
        if chunksize:
            return chunksize
        per_slot = len(self._pending) / (self.size * 4)
        return max(1, min(MAX_BATCH, math.ceil(per_slot)))

    def _wants_work(self, worker: _Worker) -> bool:
        if not worker.usable or worker.quota_left() == 0:
            return False
        if not worker.inflight:
            return True
        # Prefetch while the queue is long; the tail is left to whichever worker frees up.
        return len(worker.inflight) <= worker.low_water and len(self._pending) >= self.size

    def _dispatch(self) -> None:
        """Give queued calls to workers that want work, then let idle ones steal. Caller holds the lock."""
        for worker in self._workers:
            while self._pending and self._wants_work(worker):
                first = self._pending[0]
                size = self._batch_size(first.chunksize)
                quota = worker.quota_left()
                if quota is not None:
                    size = min(size, quota)
                batch: List[Task] = []
                while self._pending and len(batch) < size:
                    task = self._pending[0]
                    if task.job is not first.job:
                        break
                    self._pending.popleft()
                    if claim(task.future):
                        batch.append(task)
                if batch:
                    worker.send(first.job, batch)
        if not self._pending:
            self._steal()

    def _steal(self) -> None:
        """Move the unclaimed tail of the busiest worker's calls to each idle worker."""
        for thief in self._workers:
            if thief.inflight or not self._wants_work(thief):
                continue
            victim = max(self._workers, key=lambda w: len(w.inflight))
            if len(victim.inflight) < 2:
                return
            tail = list(victim.inflight)[len(victim.inflight) // 2:]
            tail.reverse()
            # Stops at the first call the victim claimed; it runs its calls in order.
            stolen = tail[:victim.slots.steal([task.token for task in tail])]
            if not stolen:
                continue
            for task in stolen:
                victim.inflight.remove(task)
            stolen.reverse()
            logger.debug("local worker %d takes %d calls from worker %d",
                         thief.index, len(stolen), victim.index)
            quota = thief.quota_left()
            if quota is not None and quota < len(stolen):
                for task in reversed(stolen[quota:]):
                    self._requeue(task)
                stolen = stolen[:quota]
            by_job: Dict[int, List[Task]] = {}
            for task in stolen:
                by_job.setdefault(id(task.job), []).append(task)
            for tasks in by_job.values():
                thief.send(tasks[0].job, tasks)

    # -- worker events ---------------------------------------------------------------
    def _on_ready(self, worker: _Worker) -> None:
        """The worker runs: a call sent before (while its fork server started) is timed
        from now, not from when it was sent."""
        worker.slots.unlink_semaphore()  # the worker opened it before it said so
        with self._lock:
            worker.ready = True
            worker.current_started = time.monotonic()

    def _on_done(self, worker: _Worker, reports: List[Tuple[Any, ...]],
                 keys: Optional[Tuple[str, ...]], constants: Optional[Dict[str, Any]]) -> None:
        """Reports ``(claim, status, result, None)``, or ``(claim, None, result, values)``
        for a plain success whose status metadata is ``constants`` and
        ``zip(keys, values)``."""
        finished: List[Task] = []
        with self._lock:
            inflight = worker.inflight
            for report in reports:
                if not inflight or inflight[0].token != report[0]:
                    logger.error("local worker %d reported a call out of order", worker.index)
                    break
                finished.append(inflight.popleft())
            worker.done_count += len(finished)
            worker.current_started = time.monotonic()
            limit = self.max_tasks_per_child
            if limit is not None and worker.done_count >= limit and not inflight:
                worker.retiring = True
                worker.stop()
            self._dispatch()
            if not inflight:
                self._idle.notify_all()
        received = time.time()
        storage = self.storage
        quick = []
        for task, (_, status, result, values) in zip(finished, reports):
            if status is None:
                quick.append((task.future, result, values, task.message.get("attempt", 0)))
            else:
                complete_from_status(task.call.future, status, result, storage, received)
        if quick:
            complete_from_results(quick, keys or (), received, constants)

    def _on_output(self, worker: _Worker, token: int, chunks: List[Tuple[str, str]]) -> None:
        """A running call's output: kept on its future (and echoed, if asked)."""
        with self._lock:
            task = next((t for t in worker.inflight if t.token == token), None)
        if task is not None:
            for stream, text in chunks:
                task.call.future._add_output(stream, text)

    def _on_retire(self, worker: _Worker, reason: str) -> None:
        """The worker exits after its last report; calls it had not started go to others."""
        logger.info("local worker %d is replaced: %s", worker.index, reason)
        with self._lock:
            worker.retiring = True
            for task in reversed(worker.inflight):
                self._requeue(task)
            worker.inflight.clear()
            self._dispatch()

    def _on_exit(self, worker: _Worker) -> None:
        with self._lock:
            lost = list(worker.inflight)
            worker.inflight.clear()
            if worker in self._workers:
                self._workers.remove(worker)
            # The call it was running is the one it claimed and had not finished. Calls
            # before it finished, but their reports died with the worker: they run again.
            failed: Optional[Task] = next(
                (t for t in lost if worker.slots.state(t.token) == CLAIMED), None)
            worker.slots.close(remove=True)
            requeue = [t for t in lost if t is not failed]
            # A call cancelled as it finished is not run again.
            withdrawn = [t for t in requeue if t.call.future in self._cancelled]
            requeue = [t for t in requeue if t.call.future not in self._cancelled]
            for task in reversed(requeue):
                self._requeue(task)
            if not self._closed:
                self._start_workers()
                self._dispatch()
            else:
                for task in requeue:
                    task.call.future.fail(WrenError("the executor was shut down before this call ran"))
            self._idle.notify_all()
        for task in withdrawn:
            task.call.future.fail(CallCancelledError(
                f"call {task.call.call_id} of job {task.job['job_id']} was cancelled"))
        if failed is not None:
            call = failed.call
            error = worker.kill_reason or WorkerCrashedError(
                f"the local worker process running call {call.call_id} of job "
                f"{failed.job['job_id']} died (exit code {worker.proc.returncode}); "
                f"the call did not finish"
            )
            call.future.fail(error, attempt=call.message.get("attempt", 0))

    def _watch_timeouts(self) -> None:
        while not self._closed:
            time.sleep(0.1)
            now = time.monotonic()
            with self._lock:
                for worker in self._workers:
                    if not worker.inflight or worker.kill_reason is not None or \
                            not worker.ready:
                        continue
                    task = worker.inflight[0]
                    limit = task.job.get("timeout")
                    if limit and now - worker.current_started > limit + KILL_GRACE:
                        worker.kill(CallTimeoutError(
                            f"call {task.call.call_id} of job {task.job['job_id']} exceeded "
                            f"its timeout of {limit:g} s; its worker process was killed"))

    # -- cancellation ----------------------------------------------------------------
    def cancel(self, futures: List[Any], running: bool) -> int:
        """Cancel queued calls and withdraw those handed to a worker but not started; with
        ``running``, also kill (and replace) each worker running one of them."""
        wanted = set(futures)
        cancelled = 0
        doomed: List[Task] = []
        with self._lock:
            kept: Deque[Task] = collections.deque()
            for task in self._pending:
                if task.call.future in wanted:
                    cancelled += cancel(task.call.future)
                else:
                    kept.append(task)
            self._pending = kept
            for worker in self._workers:  # handed to a worker: withdrawn unless started
                mine = [t for t in worker.inflight if t.call.future in wanted]
                if not mine:
                    continue
                withdrawn = set(worker.slots.withdraw([t.token for t in mine]))
                for task in mine:
                    if task.token in withdrawn:
                        worker.inflight.remove(task)
                        doomed.append(task)
                    elif running and worker.slots.state(task.token) == CLAIMED:
                        self._cancelled.add(task.call.future)
                        worker.kill(CallCancelledError(
                            f"call {task.call.call_id} of job {task.job['job_id']} was "
                            f"cancelled while it ran; its worker process was killed"))
                        cancelled += not task.call.future.done()
            self._dispatch()
            self._idle.notify_all()
        for task in doomed:
            cancelled += task.call.future.fail(CallCancelledError(
                f"call {task.call.call_id} of job {task.job['job_id']} was cancelled "
                f"before it started"))
        return cancelled

    def stop_attempts(self, future: Any, attempts: List[int]) -> None:
        """Drop queued or unstarted ``attempts`` of ``future``'s call, and kill (and replace)
        the worker running one of them; the future, already decided, is left alone."""
        wanted = set(attempts)

        def losing(task: Task) -> bool:
            return task.call.future is future and task.call.message.get("attempt", 0) in wanted

        with self._lock:
            self._pending = collections.deque(t for t in self._pending if not losing(t))
            for worker in self._workers:
                mine = [t for t in worker.inflight if losing(t)]
                if not mine:
                    continue
                withdrawn = set(worker.slots.withdraw([t.token for t in mine]))
                for task in mine:
                    if task.token in withdrawn:
                        worker.inflight.remove(task)
                    elif worker.slots.state(task.token) == CLAIMED:
                        worker.kill(CallCancelledError(
                            f"attempt {task.call.message.get('attempt', 0)} of call "
                            f"{task.call.call_id} of job {task.job['job_id']} was stopped: "
                            f"another attempt decided the call"))
            self._dispatch()
            self._idle.notify_all()

    # -- shutdown --------------------------------------------------------------------
    def shutdown(self, wait: bool) -> None:
        with self._lock:
            if wait:
                while self._pending or any(w.inflight for w in self._workers):
                    self._idle.wait(0.5)
            self._closed = True
            workers = list(self._workers)
            abandoned = list(self._pending)
            self._pending.clear()
        for task in abandoned:
            if not cancel(task.call.future):
                task.call.future.fail(WrenError("the executor was shut down before this call ran"))
        for worker in workers:
            if wait:
                worker.stop()
            else:
                worker.kill(WrenError("the executor was shut down while this call ran"))
        deadline = time.monotonic() + 5
        for worker in workers:
            try:
                worker.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.kill()
        for worker in workers:
            worker.exited.wait(max(0.0, deadline + 5 - time.monotonic()))
        self._io.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
        shutil.rmtree(self.claims_dir, ignore_errors=True)


class LocalBackend(Backend):
    """Runs calls in worker processes on this computer (the default backend)."""

    default_storage = "localfs"
    args_inline_limit = 16 * 1024 * 1024
    result_inline_limit = 16 * 1024 * 1024
    default_chunksize = None
    call_type = Task

    def __init__(self, config: Config, storage: Storage) -> None:
        super().__init__(config, storage)
        section = config.section("local")
        workers = section.int("workers", os.cpu_count() or 1, minimum=1)
        self.args_inline_limit = section.int("args_inline_limit", self.args_inline_limit,
                                             minimum=0)
        self.result_inline_limit = section.int("result_inline_limit", self.result_inline_limit,
                                               minimum=0)
        self.pool = WorkerPool(
            workers, storage, section.str("python", sys.executable),
            max_tasks_per_child=section.int("max_tasks_per_child", None, minimum=1),
            fork_server=bool(section.bool("fork_server", True)))
        self._section = section
        self._isolated: Dict[str, WorkerPool] = {}  # runtime hash -> its workers

    @classmethod
    def prepare(cls, config: Config) -> None:
        """Start this process's fork server now, while the executor checks its config and
        makes its storage (the pool asks for the same server, started or not)."""
        section = config.section("local")
        python = section.str("python", sys.executable)
        if section.bool("fork_server", True) and python == sys.executable and zygote.SUPPORTED:
            zygote.prestart(python, base_env=dict(os.environ))

    def apply_pool_options(self, *, max_workers: Optional[int], mp_context: Any,
                           max_tasks_per_child: Optional[int]) -> None:
        """``max_workers`` and ``max_tasks_per_child`` are honoured; ``mp_context`` only if
        it is ``"spawn"``, since every local worker is a fresh interpreter."""
        if mp_context is not None:
            method = mp_context.get_start_method()
            if method != "spawn":
                raise ConfigError(
                    f"mp_context with start method {method!r} is not supported: local workers "
                    f"are always fresh interpreters, as with 'spawn'. Pass "
                    f"multiprocessing.get_context('spawn') or no mp_context.")
        if max_workers is not None:
            self.pool.size = max_workers
        if max_tasks_per_child is not None:
            self.pool.max_tasks_per_child = max_tasks_per_child

    def _pool_for(self, job: Dict[str, Any]) -> WorkerPool:
        runtime = job.get("runtime")
        if not runtime:
            return self.pool
        pool = self._isolated.get(runtime["hash"])
        if pool is None:
            from .isolated import IsolatedEnvironments

            python = IsolatedEnvironments(self._section, self.storage).python_for(
                runtime, in_use=set(self._isolated))
            pool = self._isolated[runtime["hash"]] = WorkerPool(self.pool.size, self.storage,
                                                                python)
        return pool

    def invoke(self, job: Dict[str, Any], calls: List[Call], chunksize: Optional[int]) -> None:
        try:
            pool = self._pool_for(job)
        except Exception as exc:  # the job's runtime cannot be built: its calls cannot run
            from wrencore_runtime.environment import unbuildable

            error = unbuildable(job["runtime"]["hash"], self.storage, exc)
            logger.error("%s", error)
            for call in calls:
                call.future.fail(error, attempt=call.message.get("attempt", 0))
            return
        pool.enqueue(job, calls, chunksize)

    def cancel(self, *, futures: List[Any], running: bool = True) -> int:
        return sum(pool.cancel(futures, running) for pool in self._pools())

    def stop_attempts(self, *, future: Any, attempts: List[int]) -> None:
        for pool in self._pools():
            pool.stop_attempts(future, attempts)

    def _pools(self) -> List[WorkerPool]:
        return [self.pool, *self._isolated.values()]

    def shutdown(self, wait: bool = True) -> None:
        self.pool.shutdown(wait)
        for pool in self._isolated.values():
            pool.shutdown(wait)
