"""The local backend: a pool of long-lived worker processes fed through pipes.

Calls are queued on the user's computer and handed to idle workers in batches whose size
shrinks as the queue drains (large batches amortize pipe round trips; small ones keep both
cores busy to the end). Each worker reports every call as it finishes, so the host always
knows which call a worker is running: if the worker dies, exactly that call fails with
:class:`WorkerCrashedError` and the rest of its batch is queued again; if it outruns its
timeout, the worker is killed and that call fails with :class:`CallTimeoutError`.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Deque, Dict, List, Optional, Tuple

from wrencore.backends import Backend, Call
from wrencore.config import Config
from wrencore.errors import CallTimeoutError, WorkerCrashedError, WrenError
from wrencore.futures import cancel, claim, complete_from_status
from wrencore_runtime.storage import Storage

from .framing import read_frame, write_frame

logger = logging.getLogger(__name__)

#: Seconds past a call's timeout before its worker is killed (the worker's own timer
#: raises CallTimeoutError inside the call first, when the call is interruptible).
KILL_GRACE = 1.0
#: Batches a worker may hold beyond the one it is running.
PREFETCH = 1
MAX_BATCH = 256

Task = Tuple[Dict[str, Any], Call]


class _Worker:
    def __init__(self, pool: "WorkerPool", index: int):
        self.pool = pool
        self.index = index
        self.inflight: Deque[Task] = collections.deque()
        self.batches: Deque[int] = collections.deque()  # sizes of unfinished batches
        self.current_started = 0.0
        self.kill_reason: Optional[BaseException] = None
        self.outbox: "queue.Queue[Any]" = queue.Queue()
        env = dict(os.environ, WRENCORE_WORKER_ID=f"local-{os.getpid()}-{index}")
        env.update(pool.extra_worker_env)
        self.proc = subprocess.Popen(
            [pool.python, "-c", "from wrencore_local.worker import main; raise SystemExit(main())"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None,
            cwd=pool.workdir, env=env, bufsize=1 << 16,
        )
        self.reader = threading.Thread(target=self._read_loop, daemon=True,
                                       name=f"wrencore-local-reader-{index}")
        self.writer = threading.Thread(target=self._write_loop, daemon=True,
                                       name=f"wrencore-local-writer-{index}")
        self.reader.start()
        self.writer.start()

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def send(self, job: Dict[str, Any], tasks: List[Task]) -> None:
        if not self.inflight:
            self.current_started = time.monotonic()
        self.inflight.extend(tasks)
        self.batches.append(len(tasks))
        self.outbox.put(("tasks", job, [call.message for _, call in tasks]))

    def _write_loop(self) -> None:
        while True:
            message = self.outbox.get()
            if message is None:
                return
            try:
                write_frame(self.proc.stdin, message)
            except (BrokenPipeError, OSError, ValueError):
                return  # the reader sees the exit and handles the calls

    def _read_loop(self) -> None:
        stdout = self.proc.stdout
        try:
            while True:
                frame = read_frame(stdout)
                if frame[0] == "done":
                    self.pool._on_done(self, frame[1], frame[2], frame[3])
        except EOFError:
            pass
        except Exception:
            logger.exception("local worker %d sent an unreadable frame", self.index)
            self.kill()
        self.proc.wait()
        self.outbox.put(None)
        self.pool._on_exit(self)

    def kill(self, reason: Optional[BaseException] = None) -> None:
        if reason is not None and self.kill_reason is None:
            self.kill_reason = reason
        try:
            self.proc.kill()
        except OSError:
            pass

    def stop(self) -> None:
        self.outbox.put(("exit",))


class WorkerPool:
    def __init__(self, size: int, storage: Storage, python: str,
                 extra_worker_env: Optional[Dict[str, str]] = None):
        self.size = size
        self.storage = storage
        self.python = python
        self.extra_worker_env = extra_worker_env or {}
        self.workdir = tempfile.mkdtemp(prefix="wrencore-local-")
        self._lock = threading.RLock()
        self._idle = threading.Condition(self._lock)
        self._pending: Deque[Tuple[Task, Optional[int]]] = collections.deque()
        self._workers: List[_Worker] = []
        self._closed = False
        self._watchdog: Optional[threading.Thread] = None
        self._next_index = 0

    # -- queueing and dispatch -------------------------------------------------------
    def enqueue(self, job: Dict[str, Any], calls: List[Call], chunksize: Optional[int]) -> None:
        with self._lock:
            if self._closed:
                raise WrenError("the local worker pool is shut down")
            for call in calls:
                self._pending.append(((job, call), chunksize))
            if not self._workers:
                self._start_workers()
            if job.get("timeout") and self._watchdog is None:
                self._watchdog = threading.Thread(target=self._watch_timeouts, daemon=True,
                                                  name="wrencore-local-watchdog")
                self._watchdog.start()
            self._dispatch()

    def _start_workers(self) -> None:
        while len(self._workers) < self.size:
            self._workers.append(_Worker(self, self._next_index))
            self._next_index += 1

    def _batch_size(self, chunksize: Optional[int]) -> int:
        if chunksize:
            return chunksize
        per_slot = len(self._pending) / (self.size * (PREFETCH + 1) * 2)
        return max(1, min(MAX_BATCH, math.ceil(per_slot)))

    def _dispatch(self) -> None:
        """Give queued calls to workers with free batch slots. Caller holds the lock."""
        for worker in self._workers:
            while self._pending and len(worker.batches) <= PREFETCH and worker.alive \
                    and worker.kill_reason is None:
                if worker.batches and len(self._pending) < self.size:
                    break  # the tail: keep it for whichever worker frees up first
                (job, _), chunksize = self._pending[0]
                size = self._batch_size(chunksize)
                batch: List[Task] = []
                while self._pending and len(batch) < size:
                    (task_job, call), _ = self._pending[0]
                    if task_job is not job:
                        break
                    self._pending.popleft()
                    if claim(call.future):
                        batch.append((task_job, call))
                if batch:
                    worker.send(job, batch)

    # -- worker events ---------------------------------------------------------------
    def _on_done(self, worker: _Worker, call_id: str, status: Dict[str, Any],
                 result: Optional[bytes]) -> None:
        with self._lock:
            if not worker.inflight or worker.inflight[0][1].call_id != call_id:
                logger.error("local worker %d reported call %s out of order", worker.index, call_id)
                return
            _, call = worker.inflight.popleft()
            worker.current_started = time.monotonic()
            worker.batches[0] -= 1
            if worker.batches[0] == 0:
                worker.batches.popleft()
                self._dispatch()
            if not worker.inflight:
                self._idle.notify_all()
        complete_from_status(call.future, status, result, self.storage)

    def _on_exit(self, worker: _Worker) -> None:
        with self._lock:
            lost = list(worker.inflight)
            worker.inflight.clear()
            worker.batches.clear()
            if worker in self._workers:
                self._workers.remove(worker)
            failed: Optional[Task] = lost[0] if lost else None
            requeue = lost[1:]
            for task in reversed(requeue):
                self._pending.appendleft((task, 1))
            if not self._closed:
                self._start_workers()
                self._dispatch()
            else:
                for _, call in requeue:
                    call.future.fail(WrenError("the executor was shut down before this call ran"))
            self._idle.notify_all()
        if failed is not None:
            job, call = failed
            error = worker.kill_reason or WorkerCrashedError(
                f"the local worker process running call {call.call_id} of job {job['job_id']} "
                f"died (exit code {worker.proc.returncode}); the call did not finish"
            )
            call.future.fail(error)

    def _watch_timeouts(self) -> None:
        while not self._closed:
            time.sleep(0.1)
            now = time.monotonic()
            with self._lock:
                for worker in self._workers:
                    if not worker.inflight or worker.kill_reason is not None:
                        continue
                    job, call = worker.inflight[0]
                    limit = job.get("timeout")
                    if limit and now - worker.current_started > limit + KILL_GRACE:
                        worker.kill(CallTimeoutError(
                            f"call {call.call_id} of job {job['job_id']} exceeded its timeout "
                            f"of {limit:g} s; its worker process was killed"))

    # -- shutdown --------------------------------------------------------------------
    def shutdown(self, wait: bool) -> None:
        with self._lock:
            if wait:
                while self._pending or any(w.inflight for w in self._workers):
                    self._idle.wait(0.5)
            self._closed = True
            workers = list(self._workers)
            abandoned = [task for task, _ in self._pending]
            self._pending.clear()
        for _, call in abandoned:
            if not cancel(call.future):
                call.future.fail(WrenError("the executor was shut down before this call ran"))
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
        try:
            os.rmdir(self.workdir)
        except OSError:
            pass


class LocalBackend(Backend):
    """Runs calls in worker processes on this computer (the default backend)."""

    default_storage = "localfs"
    args_inline_limit = 16 * 1024 * 1024
    result_inline_limit = 16 * 1024 * 1024
    default_chunksize = None

    def __init__(self, config: Config, storage: Storage) -> None:
        super().__init__(config, storage)
        section = config.section("local")
        workers = section.int("workers", os.cpu_count() or 1)
        if workers < 1:
            raise ValueError(f"config [local] workers must be at least 1, not {workers}")
        self.args_inline_limit = section.int("args_inline_limit", self.args_inline_limit)
        self.result_inline_limit = section.int("result_inline_limit", self.result_inline_limit)
        self.pool = WorkerPool(workers, storage, section.str("python", sys.executable))
        self._section = section
        self._isolated: Dict[str, WorkerPool] = {}  # runtime hash -> its workers

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
        self._pool_for(job).enqueue(job, calls, chunksize)

    def shutdown(self, wait: bool = True) -> None:
        self.pool.shutdown(wait)
        for pool in self._isolated.values():
            pool.shutdown(wait)
