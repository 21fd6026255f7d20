"""Completing futures by watching storage, for backends whose workers write status there.

One background thread per watcher lists each watched job's prefix, reads the statuses of
calls that finished — one ``status.json`` per call, or a ``batch-status.json`` for several
calls run together (see ``wrencore_runtime.layout``) — with a small pool of fetch threads,
and completes their futures. The polling interval adapts: it shrinks
to ``min_interval`` while results arrive and grows to ``max_interval`` while none do. A
missing key is "not yet".

Every watched future ends, in bounded time, with its own outcome:

* A job whose listing keeps failing — for ``give_up_after`` seconds in a row, or
  ``permanent_attempts`` times in a row with an error that repeating cannot fix (a missing
  bucket, access denied) — ends its pending calls with :class:`StorageError`, which names
  the operation and resource. Each request has already been retried with backoff by the
  storage's client (botocore: 5 attempts) for throttling, 5xx and lost connections.
* The backend's deadline verdicts (lost call, dead letter, timeout) are asked for on every
  poll, whether or not the job's listing succeeded.
* A status is used only for the future it belongs to: its ``job_id``, ``call_id`` and
  ``attempt`` must match its key's. A status that is corrupt, unreadable or another call's is
  refused and logged; when it still is after ``status_reads`` reads, its call ends with
  :class:`StatusError` naming the object. Each attempt of a call writes its own status (see
  ``wrencore_runtime.layout``); only those of attempts the future still waits for are read
  (``Future.accepts_attempt``), and a call stays watched until its future is done.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, List, Optional, Set

from wrencore_runtime import layout
from wrencore_runtime.errors import StatusError, StorageError, StorageKeyError
from wrencore_runtime.protocol import decode_json
from wrencore_runtime.storage import Storage

from .config import Config
from .futures import Future, complete_from_status

logger = logging.getLogger(__name__)

#: ``deadline_check(future) -> BaseException | None``: a backend's verdict on a call that
#: has no status yet (e.g. its invocation failed or passed its deadline).
DeadlineCheck = Callable[[Future], Optional[BaseException]]

#: Defaults of :func:`watcher_options` (top-level configuration keys).
STORAGE_RETRY_FOR = 60.0
STATUS_READS = 3


def watcher_options(config: Config) -> Dict[str, Any]:
    """The watcher's limits from the top-level ``storage_retry_for`` and ``status_reads``."""
    return {"give_up_after": float(config.get("storage_retry_for", STORAGE_RETRY_FOR)),
            "status_reads": int(config.get("status_reads", STATUS_READS))}


def ownership_problem(status: Any, job_id: str, call_id: str, attempt: int = 0) -> Optional[str]:
    """Why ``status`` is not the status of call ``call_id`` (attempt) of ``job_id``, or None."""
    if not isinstance(status, dict):
        return f"is not a status object but {type(status).__name__}"
    if status.get("job_id") != job_id or status.get("call_id") != call_id:
        return (f"belongs to call {status.get('call_id')!r} of job {status.get('job_id')!r}, "
                f"not to call {call_id!r} of job {job_id!r}")
    if int(status.get("attempt") or 0) != attempt:
        return f"is of attempt {status.get('attempt')}, not of attempt {attempt}"
    return None


class _FailureStreak:
    """Consecutive failures of one job's listing."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.attempts = 0


class StatusWatcher:
    def __init__(self, storage: Storage, *, min_interval: float = 0.05,
                 max_interval: float = 2.0, deadline_check: Optional[DeadlineCheck] = None,
                 fetch_threads: int = 16, give_up_after: float = STORAGE_RETRY_FOR,
                 permanent_attempts: int = 3, status_reads: int = STATUS_READS):
        self.storage = storage
        self.min_interval = min_interval
        self.max_interval = max_interval
        self.deadline_check = deadline_check
        self.give_up_after = give_up_after
        self.permanent_attempts = permanent_attempts
        self.status_reads = max(1, status_reads)
        self._pending: Dict[str, Dict[str, Future]] = {}
        self._seen_batches: Dict[str, Set[str]] = {}
        self._failures: Dict[str, _FailureStreak] = {}
        self._bad_reads: Dict[str, int] = {}  # status key -> unusable reads so far
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = False
        self._fresh_work = False
        self._thread: Optional[threading.Thread] = None
        self._fetch_pool = ThreadPoolExecutor(fetch_threads,
                                              thread_name_prefix="wrencore-status-fetch")

    def watch(self, job_id: str, futures: Dict[str, Future]) -> None:
        with self._lock:
            self._pending.setdefault(job_id, {}).update(futures)
            self._fresh_work = True
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="wrencore-watcher",
                                                daemon=True)
                self._thread.start()
        self._wake.set()

    def pending_count(self) -> int:
        with self._lock:
            return sum(len(v) for v in self._pending.values())

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._fetch_pool.shutdown(wait=False)

    def poll_once(self) -> int:
        """Complete every watched call whose status exists; return how many completed."""
        with self._lock:
            jobs = {job: dict(calls) for job, calls in self._pending.items()}
        completed = 0
        for job_id, calls in jobs.items():
            for call_id, future in list(calls.items()):
                if future.done():  # cancelled, or failed at once by Executor.cancel
                    self._forget(job_id, call_id)
            completed += self._collect(job_id, calls)
            completed += self._apply_deadlines(job_id, calls)
        with self._lock:
            for finished in (set(self._seen_batches) | set(self._failures)) - set(self._pending):
                self._seen_batches.pop(finished, None)
                self._failures.pop(finished, None)
        return completed

    def _collect(self, job_id: str, calls: Dict[str, Future]) -> int:
        """Read the statuses the job's listing shows; end the job's calls if it keeps failing."""
        try:
            keys = self.storage.list(layout.job_prefix(job_id))
        except Exception as exc:
            return self._listing_failed(job_id, calls, exc)
        self._failures.pop(job_id, None)
        seen = self._seen_batches.setdefault(job_id, set())
        singles = {parsed for parsed in map(layout.parse_status_key, keys)
                   if parsed and parsed[0] in calls
                   and calls[parsed[0]].accepts_attempt(parsed[1])}
        batches = [k for k in keys if layout.is_batch_status_key(k) and k not in seen]
        tasks = [self._fetch_pool.submit(self._complete_single, job_id, call_id,
                                         calls[call_id], attempt)
                 for call_id, attempt in singles]
        tasks += [self._fetch_pool.submit(self._complete_batch, job_id, key, calls)
                  for key in batches]
        return sum(len(task.result()) for task in tasks)

    def _listing_failed(self, job_id: str, calls: Dict[str, Future], exc: Exception) -> int:
        streak = self._failures.setdefault(job_id, _FailureStreak())
        streak.attempts += 1
        failing_for = time.monotonic() - streak.started
        transient = getattr(exc, "transient", True)
        if failing_for < self.give_up_after and (
                transient or streak.attempts < self.permanent_attempts):
            logger.warning("listing job %s failed (%d in a row, %.1f s), will retry: %s",
                           job_id, streak.attempts, failing_for, exc)
            return 0
        what = str(exc) if isinstance(exc, StorageError) else (
            f"listing {self.storage.location(layout.job_prefix(job_id))} failed: "
            f"{type(exc).__name__}: {exc}")
        error = StorageError(
            f"{what} (failed {streak.attempts} times in a row over {failing_for:.1f} s; the "
            f"call's outcome cannot be read — check the storage, then run it again)",
            transient=transient)
        error.__cause__ = exc
        del self._failures[job_id]  # calls watched later under this job start afresh
        logger.error("giving up on the %d pending calls of job %s: %s",
                     sum(not f.done() for f in calls.values()), job_id, error)
        ended = 0
        for call_id, future in calls.items():
            if future.fail(error):
                ended += 1
            self._forget(job_id, call_id)
        return ended

    def _apply_deadlines(self, job_id: str, calls: Dict[str, Future]) -> int:
        if self.deadline_check is None:
            return 0
        ended = 0
        for call_id, future in calls.items():
            if future.done():
                continue
            try:
                error = self.deadline_check(future)
            except Exception:
                logger.exception("deadline check of %s/%s failed", job_id, call_id)
                continue
            if error is not None and future.fail(error):
                self._forget(job_id, call_id)
                ended += 1
        return ended

    def _complete_single(self, job_id: str, call_id: str, future: Future,
                         attempt: int = 0) -> List[str]:
        key = layout.status_key(job_id, call_id, attempt)
        try:
            status = decode_json(self.storage.get(key))
        except StorageKeyError:
            return []
        except StorageError as exc:
            if exc.transient:
                logger.warning("reading status of %s/%s failed, will retry: %s",
                               job_id, call_id, exc)
                return []
            return self._refuse(key, future, f"could not be read: {exc}")
        except Exception as exc:
            return self._refuse(key, future, f"is corrupt: {type(exc).__name__}: {exc}")
        problem = ownership_problem(status, job_id, call_id, attempt)
        if problem:
            return self._refuse(key, future, problem)
        self._bad_reads.pop(key, None)
        complete_from_status(future, status, None, self.storage)
        self._forget(job_id, call_id)
        return [call_id]

    def _refuse(self, key: str, future: Optional[Future], problem: str) -> List[str]:
        """Count an unusable read of ``key``; end ``future`` once reads are exhausted."""
        reads = self._bad_reads.get(key, 0) + 1
        self._bad_reads[key] = reads
        location = self.storage.location(key)
        logger.warning("refused status %s (read %d of %d): it %s", location, reads,
                       self.status_reads, problem)
        if reads < self.status_reads or future is None:
            return []
        self._bad_reads.pop(key, None)
        ended = future.fail(StatusError(
            f"the status of call {future.call_id} of job {future.job_id} at {location} "
            f"{problem} (refused after {reads} reads); the call's outcome is unknown"))
        self._forget(future.job_id, future.call_id)
        return [future.call_id] if ended else []

    def _complete_batch(self, job_id: str, key: str, calls: Dict[str, Future]) -> List[str]:
        first_call_id = key.rstrip("/").split("/")[-2]
        try:
            batch = decode_json(self.storage.get(key))
        except StorageKeyError:
            return []
        except StorageError as exc:
            if exc.transient:
                logger.warning("reading batch status %s failed, will retry: %s", key, exc)
                return []
            return self._refuse_batch(job_id, key, calls.get(first_call_id),
                                      f"could not be read: {exc}")
        except Exception as exc:
            return self._refuse_batch(job_id, key, calls.get(first_call_id),
                                      f"is corrupt: {type(exc).__name__}: {exc}")
        statuses = batch.get("statuses") if isinstance(batch, dict) else None
        first = statuses[0] if isinstance(statuses, list) and statuses else None
        problem = ownership_problem(first, job_id, first_call_id,
                                    layout.attempt_of_batch_status_key(key) or 0)
        if problem is None and batch.get("job_id", job_id) != job_id:
            problem = f"belongs to job {batch.get('job_id')!r}, not to job {job_id!r}"
        if problem:
            return self._refuse_batch(job_id, key, calls.get(first_call_id), problem)
        self._bad_reads.pop(key, None)
        done = []
        results = batch.get("results") or {}
        for status in statuses:
            call_id = status.get("call_id") if isinstance(status, dict) else None
            future = calls.get(call_id)
            if future is None:
                continue
            attempt = int(status.get("attempt") or 0)
            if not future.accepts_attempt(attempt):
                continue  # an attempt the future no longer waits for
            problem = ownership_problem(status, job_id, call_id, attempt)
            if problem:
                logger.warning("refused a status in %s: it %s", self.storage.location(key),
                               problem)
                continue
            complete_from_status(future, status, results.get(call_id), self.storage)
            self._forget(job_id, call_id)
            done.append(call_id)
        with self._lock:
            self._seen_batches.setdefault(job_id, set()).add(key)
        return done

    def _refuse_batch(self, job_id: str, key: str, first: Optional[Future],
                      problem: str) -> List[str]:
        """Refuse a batch status; once reads are exhausted, end its first call and skip it.

        Its other calls are not named by the key; the backend's deadline verdict ends them.
        """
        ended = self._refuse(key, first, problem)
        if self._bad_reads.get(key, self.status_reads) >= self.status_reads:
            with self._lock:
                self._seen_batches.setdefault(job_id, set()).add(key)
            self._bad_reads.pop(key, None)
        return ended

    def _forget(self, job_id: str, call_id: str) -> None:
        """Stop watching a call whose future is done (one being run again stays watched)."""
        with self._lock:
            calls = self._pending.get(job_id)
            if calls is not None:
                future = calls.get(call_id)
                if future is not None and not future.done():
                    return
                calls.pop(call_id, None)
                if not calls:
                    del self._pending[job_id]

    def _run(self) -> None:
        interval = self.min_interval
        while not self._stopped:
            self._wake.wait(interval)
            self._wake.clear()
            if self._stopped:
                break
            if not self.pending_count():
                interval = self.max_interval
                continue
            if self._fresh_work:  # new calls: their results may come soon
                self._fresh_work = False
                interval = self.min_interval
            started = time.monotonic()
            try:
                progressed = self.poll_once()
            except Exception:  # never let the watcher die: futures would hang
                logger.exception("status watcher poll failed")
                progressed = 0
            interval = self.min_interval if progressed else min(interval * 1.5, self.max_interval)
            # Listing grows with the job; keep polling to at most a third of this thread's
            # time so it never starves the threads that invoke.
            interval = max(interval, 2 * (time.monotonic() - started))
