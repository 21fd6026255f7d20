"""Completing futures by watching storage, for backends whose workers write status there.

One background thread per watcher lists each watched job's prefix, reads the statuses of
calls that finished — one ``status.json`` per call, or a batch status for several calls
run together, whose key names the first and last (see ``wrencore_runtime.layout``) — with a small pool of fetch threads,
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
  refused and logged; when it still is after ``status_reads`` reads, its call — or every
  call a batch status covers — ends with :class:`StatusError` naming the object. Each attempt of a call writes its own status (see
  ``wrencore_runtime.layout``); only those of attempts the future still waits for are read
  (``Future.accepts_attempt``), and a call stays watched until its future is done.

Completion channel (why finished calls cost O(1) requests each)
-------------------------------------------------------------------
Listing a job's prefix to find finished calls costs requests in proportion to the job's
size on *every* poll (S3 returns 1,000 keys a page, three keys a call), then one GET a
status: a 100,000-call job pays for its whole listing again and again. So a backend may
hand the watcher a :class:`CompletionChannel` — an SQS queue on AWS — that workers publish
each outcome to right after writing it to storage (``wrencore_runtime.completion``). The
client receives up to ten messages a request and deletes them ten a request, and a message
carries the statuses (and small results) of a whole write, so finding a finished call costs
about 0.2 requests or less, whatever the job's size; no GET is needed for small results.

Storage stays the durable record and the listing stays as the fallback, so the guarantees
above hold whether or not the channel does: a job is listed as before while the channel
is unusable (not created, failing — and for good once it failed ``permanent_attempts``
times in a row with an error repeating cannot fix, such as a deleted queue, or for
``give_up_after`` seconds), and otherwise only after the channel has been quiet
for ``quiet_listing_after`` seconds while calls are pending — a worker that died between
its storage write and its publish, a status replaced in storage, a bucket gone — backing
off to ``quiet_listing_max`` between such listings (a listing costs requests in proportion
to the job, so the backoff starts over only when one finds outcomes the channel missed).
A status such a listing shows is read only if its calls are still unannounced
``quiet_listing_after`` seconds later: on a loaded fleet a worker's announcements trail its
writes, and reading every status a listing shows would cost a GET per call.
Receives and acknowledgements are kept full: the listener lets messages gather between
receives (up to ``channel_gather_max``) and acknowledges ten at a time. Channel messages are notifications: a
status in one is used only if it passes the same ownership check; anything else in it is
ignored (the listing then judges the stored status). Time-ordered storage keys listed with
``StartAfter`` were the alternative; they still cost a GET per call (a key cannot carry an
outcome) and S3 lists keys in name order, not write order, so late writers would need a
re-read window — the channel has neither cost.
"""

from __future__ import annotations

import abc
import bisect
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, Iterator, List, Optional, Set, Tuple

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


class CompletionChannel(abc.ABC):
    """Where workers publish outcomes for one client (see "Completion channel" above)."""

    @abc.abstractmethod
    def spec(self) -> Dict[str, Any]:
        """The channel's address for workers (``job["completion"]``); creates it on first use."""

    @property
    @abc.abstractmethod
    def ready(self) -> bool:
        """Whether the channel exists (workers may publish to it)."""

    @abc.abstractmethod
    def receive(self, wait: float) -> List[Tuple[Any, Any]]:
        """Up to a batch of ``(body, handle)``, waiting up to ``wait`` seconds for the first."""

    @abc.abstractmethod
    def acknowledge(self, handles: List[Any]) -> None:
        """Remove received messages for good."""

    @abc.abstractmethod
    def close(self) -> None:
        """Delete the channel (at shutdown)."""


class _FailureStreak:
    """Consecutive failures of one job's listing."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.attempts = 0


class StatusWatcher:
    def __init__(self, storage: Storage, *, min_interval: float = 0.05,
                 max_interval: float = 2.0, deadline_check: Optional[DeadlineCheck] = None,
                 fetch_threads: int = 16, give_up_after: float = STORAGE_RETRY_FOR,
                 permanent_attempts: int = 3, status_reads: int = STATUS_READS,
                 channel: Optional[CompletionChannel] = None, quiet_listing_after: float = 3.0,
                 quiet_listing_max: float = 30.0, channel_wait: float = 2.0,
                 channel_gather: float = 0.2, channel_gather_max: float = 1.0,
                 acknowledge_after: float = 30.0, sweep_every: float = 1.0,
                 before_sweep: Optional[Callable[[], None]] = None):
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
        #: job -> {status key a quiet listing showed: when}: read only if the channel has not
        #: announced its calls ``quiet_listing_after`` seconds later (see :meth:`_collect`).
        self._held: Dict[str, Dict[str, float]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = False
        self._fresh_work = False
        self._thread: Optional[threading.Thread] = None
        self._fetch_pool = ThreadPoolExecutor(fetch_threads,
                                              thread_name_prefix="wrencore-status-fetch")
        self.channel = channel
        self.quiet_listing_after = quiet_listing_after
        self.quiet_listing_max = quiet_listing_max
        self.channel_wait = channel_wait
        self.channel_gather = channel_gather
        self.channel_gather_max = max(channel_gather, channel_gather_max)
        self.acknowledge_after = acknowledge_after
        self._channel_healthy = True  # until a receive fails
        #: Why the channel was given up for good (then storage is listed), or None.
        self.channel_failure: Optional[BaseException] = None
        self._last_heard = time.monotonic()
        self._quiet_interval = quiet_listing_after
        self._next_quiet_listing = 0.0
        self._next_reread = 0.0
        self._channel_thread: Optional[threading.Thread] = None
        self._channel_wake = threading.Event()
        self._stop_event = threading.Event()
        self._last_sweep = 0.0
        self._sweep_every = 0.0
        self.min_sweep_every = sweep_every
        self.before_sweep = before_sweep

    def watch(self, job_id: str, futures: Dict[str, Future]) -> None:
        with self._lock:
            self._pending.setdefault(job_id, {}).update(futures)
            self._fresh_work = True
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="wrencore-watcher",
                                                daemon=True)
                self._thread.start()
            if self.channel is not None and self._channel_thread is None:
                self._channel_thread = threading.Thread(
                    target=self._listen, name="wrencore-completion", daemon=True)
                self._channel_thread.start()
        self._wake.set()
        self._channel_wake.set()

    def listing_failing(self, job_id: str) -> bool:
        """Whether the job's listing is failing now (its own verdict, StorageError, is due)."""
        return job_id in self._failures

    def pending_count(self) -> int:
        with self._lock:
            return sum(len(v) for v in self._pending.values())

    def stop(self) -> None:
        """Stop watching; delete the completion channel, if any."""
        self._stopped = True
        self._stop_event.set()
        self._wake.set()
        self._channel_wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._channel_thread is not None:
            self._channel_thread.join(timeout=self.channel_wait + 10)
        if self.channel is not None:
            try:
                self.channel.close()
            except Exception as exc:
                logger.warning("could not delete the completion channel: %s", exc)
        self._fetch_pool.shutdown(wait=False)

    def poll_once(self) -> int:
        """Complete every watched call whose status exists; return how many completed."""
        completed = 0
        sweep = self._sweep_due()
        quiet_listing = self._quiet_listing_due()
        with self._lock:
            jobs = {job: calls for job, calls in self._pending.items()
                    if sweep or quiet_listing or self._listing_needed(job)}
            jobs = {job: dict(calls) for job, calls in jobs.items()}  # only those visited
        if sweep and self.before_sweep is not None:
            try:
                self.before_sweep()
            except Exception:
                logger.exception("the backend's periodic check failed")
        listing_started, listed = time.monotonic(), 0
        for job_id, calls in jobs.items():
            if sweep:
                for call_id, future in list(calls.items()):
                    if future.done():  # cancelled, or failed at once by Executor.cancel
                        self._forget(job_id, call_id)
            read = self._listing_needed(job_id)
            if read:
                listed += self._collect(job_id, calls)
            elif quiet_listing:
                listed += self._collect(job_id, calls, hold=True)
            if sweep:
                completed += self._apply_deadlines(job_id, calls, read)
        completed += listed
        if quiet_listing:
            self._quiet_listing_done(listing_started, listed)
        missed = self._read_held()
        if missed:  # the channel missed outcomes: keep listing while it does, as without it
            self._quiet_interval = self.quiet_listing_after
            self._next_quiet_listing = min(self._next_quiet_listing,
                                           time.monotonic() + self.quiet_listing_after)
        completed += missed
        if sweep:
            self._sweep_done(sweep)
        with self._lock:
            for finished in (set(self._seen_batches) | set(self._failures)
                             | set(self._held)) - set(self._pending):
                self._seen_batches.pop(finished, None)
                self._failures.pop(finished, None)
                self._held.pop(finished, None)
            for key in [k for k in list(self._bad_reads)
                        if k.split("/", 1)[0] not in self._pending]:
                self._bad_reads.pop(key, None)  # its job ended (e.g. by a deadline verdict)
        return completed

    # -- when to list and sweep -------------------------------------------------------
    def _listing_needed(self, job_id: str) -> bool:
        """List on every poll without a working channel, and while a listing fails."""
        return (self.channel is None or not self.channel.ready or not self._channel_healthy
                or job_id in self._failures)

    def _quiet_listing_due(self) -> bool:
        """With a working channel: list once it has been quiet a while, backing off.

        Such a listing costs requests in proportion to the job's size, so the backoff is
        not undone by the channel speaking again, only by a listing that found outcomes the
        channel had not brought (see :meth:`_quiet_listing_done`): on a healthy channel a
        long job is listed a bounded number of times per ``quiet_listing_max``. A status
        refused by a read is read again within a second, until it is accepted or
        ``status_reads`` is exhausted.
        """
        if self.channel is None or not self.channel.ready or not self._channel_healthy:
            return False
        now = time.monotonic()
        if self._bad_reads and now >= self._next_reread:
            self._next_reread = now + min(1.0, self.quiet_listing_after)
            return True
        if now < self._next_quiet_listing or now - self._last_heard < self.quiet_listing_after:
            return False
        self._next_quiet_listing = now + self._quiet_interval
        self._quiet_interval = min(self._quiet_interval * 2, self.quiet_listing_max)
        return True

    def _quiet_listing_done(self, started: float, completed: int) -> None:
        now = time.monotonic()
        if completed:  # the channel missed outcomes: keep listing while it does, as without it
            self._quiet_interval = self.quiet_listing_after
            self._next_quiet_listing = now + 2 * (now - started)
        else:  # nothing missed: never more than 5% of the time listing, however large the job
            self._next_quiet_listing = max(self._next_quiet_listing, now + 20 * (now - started))

    def _heard(self) -> None:
        self._last_heard = time.monotonic()

    def _sweep_due(self) -> float:
        """Whether to pass over every pending call (cancellations, deadline verdicts) now.

        Such a pass costs client CPU in proportion to the calls pending, so it runs at most
        every ``sweep_every`` seconds and every 20 times as long as the last one took (never
        more than 5% of a core). A call waiting in a large job's window is passed over once
        a second, not on every poll.
        """
        now = time.monotonic()
        due = now - self._last_sweep >= max(self._sweep_every, self.min_sweep_every)
        return now if due else 0.0

    def _sweep_done(self, started: float) -> None:
        self._last_sweep = time.monotonic()
        self._sweep_every = 20 * (self._last_sweep - started)

    def _collect(self, job_id: str, calls: Dict[str, Future], hold: bool = False) -> int:
        """Read the statuses the job's listing shows; end the job's calls if it keeps failing.

        With ``hold`` (a quiet listing beside a working channel), a status is not read at
        once: its announcement may simply still be on the way (a loaded worker publishes
        behind its writes), and reading every such status would cost a GET per call on a
        slow channel. It is held, and read only if its calls are still pending
        ``quiet_listing_after`` seconds later (:meth:`_read_held`); a status refused by an
        earlier read is read again at once.
        """
        try:
            keys = self.storage.list(layout.job_prefix(job_id))
        except Exception as exc:
            return self._listing_failed(job_id, calls, exc)
        self._failures.pop(job_id, None)
        if hold:
            now = time.monotonic()
            order = sorted(map(layout.call_order, calls))
            with self._lock:
                held = self._held.setdefault(job_id, {})
                for key in keys:
                    if key not in self._bad_reads and key not in held \
                            and self._pending_status(job_id, key, calls, order):
                        held[key] = now
            keys = [key for key in keys if key in self._bad_reads]
        return self._read_statuses(job_id, keys, calls)

    def _pending_status(self, job_id: str, key: str, calls: Dict[str, Future],
                        order: Optional[List[Tuple[int, str]]] = None) -> bool:
        """Whether ``key`` is a status that can still end one of ``calls`` (``order``: their
        ids sorted by :func:`layout.call_order`, to find a batch's calls by bisection)."""
        parsed = layout.parse_status_key(key)
        if parsed:
            return parsed[0] in calls and calls[parsed[0]].accepts_attempt(parsed[1])
        covered = layout.batch_status_range(key)
        if covered is None or key in self._seen_batches.get(job_id, ()):
            return False
        if order is None:
            order = sorted(map(layout.call_order, calls))
        attempt = layout.attempt_of_batch_status_key(key) or 0
        last = layout.call_order(covered[1])
        for index in range(bisect.bisect_left(order, layout.call_order(covered[0])), len(order)):
            if order[index] > last:
                break
            if calls[order[index][1]].accepts_attempt(attempt):
                return True
        return False

    def _read_statuses(self, job_id: str, keys: List[str], calls: Dict[str, Future]) -> int:
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

    def _read_held(self) -> int:
        """Read the held statuses whose calls the channel has not announced in time."""
        if not self._held:
            return 0
        due = time.monotonic() - self.quiet_listing_after
        work = []
        with self._lock:
            for job_id, held in self._held.items():
                calls = dict(self._pending.get(job_id, {}))
                keys = [key for key, since in held.items() if since <= due]
                for key in keys:
                    del held[key]
                order = sorted(map(layout.call_order, calls)) if keys else []
                keys = [key for key in keys if self._pending_status(job_id, key, calls, order)]
                if keys:
                    work.append((job_id, keys, calls))
        return sum(self._read_statuses(job_id, keys, calls) for job_id, keys, calls in work)

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

    def _apply_deadlines(self, job_id: str, calls: Dict[str, Future], read: bool) -> int:
        """End the calls the backend's verdicts say will never report. Unless this pass
        has just read the job's listing (``read``), it is read first: an outcome stored
        but not seen yet (its announcement lost, or held beside a quiet channel) ends its
        call instead of the verdict."""
        if self.deadline_check is None:
            return 0
        verdicts = []
        for call_id, future in calls.items():
            if future.done():
                continue
            try:
                error = self.deadline_check(future)
            except Exception:
                logger.exception("deadline check of %s/%s failed", job_id, call_id)
                continue
            if error is not None:
                verdicts.append((call_id, future, error))
        if not verdicts:
            return 0
        ended = 0 if read else self._collect(
            job_id, {call_id: future for call_id, future, _ in verdicts})
        for call_id, future, error in verdicts:
            if future.fail(error):
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
        return self._refuse_for(key, [future] if future is not None else [], problem)

    def _refuse_for(self, key: str, futures: List[Future], problem: str) -> List[str]:
        """Count an unusable read of ``key``; end every one of ``futures`` (the calls whose
        outcome it holds) once reads are exhausted."""
        reads = self._bad_reads.get(key, 0) + 1
        self._bad_reads[key] = reads
        location = self.storage.location(key)
        logger.warning("refused status %s (read %d of %d): it %s", location, reads,
                       self.status_reads, problem)
        if reads < self.status_reads or not futures:
            return []
        self._bad_reads.pop(key, None)
        ended = []
        for future in futures:
            if future.fail(StatusError(
                    f"the status of call {future.call_id} of job {future.job_id} at {location} "
                    f"{problem} (refused after {reads} reads); the call's outcome is unknown")):
                ended.append(future.call_id)
            self._forget(future.job_id, future.call_id)
        return ended

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
            return self._refuse_batch(job_id, key, calls, f"could not be read: {exc}")
        except Exception as exc:
            return self._refuse_batch(job_id, key, calls,
                                      f"is corrupt: {type(exc).__name__}: {exc}")
        statuses = batch.get("statuses") if isinstance(batch, dict) else None
        first = statuses[0] if isinstance(statuses, list) and statuses else None
        problem = ownership_problem(first, job_id, first_call_id,
                                    layout.attempt_of_batch_status_key(key) or 0)
        if problem is None and batch.get("job_id", job_id) != job_id:
            problem = f"belongs to job {batch.get('job_id')!r}, not to job {job_id!r}"
        if problem:
            return self._refuse_batch(job_id, key, calls, problem)
        self._bad_reads.pop(key, None)
        done = []
        results = batch.get("results") or {}

        def refused(call_id: str, problem: str) -> None:
            logger.warning("refused a status in %s: it %s", self.storage.location(key), problem)

        for call_id, future, status in self._accept_statuses(job_id, statuses, calls, refused):
            complete_from_status(future, status, results.get(call_id), self.storage)
            self._forget(job_id, call_id)
            done.append(call_id)
        with self._lock:
            self._seen_batches.setdefault(job_id, set()).add(key)
        return done

    def _refuse_batch(self, job_id: str, key: str, calls: Dict[str, Future],
                      problem: str) -> List[str]:
        """Refuse a batch status; once reads are exhausted, end every pending call it covers
        (its key names them: ``layout.batch_status_covers``) and skip it."""
        attempt = layout.attempt_of_batch_status_key(key) or 0
        covered = [f for call_id, f in calls.items()
                   if layout.batch_status_covers(key, call_id) and f.accepts_attempt(attempt)]
        ended = self._refuse_for(key, covered, problem)
        if self._bad_reads.get(key, self.status_reads) >= self.status_reads:
            with self._lock:
                self._seen_batches.setdefault(job_id, set()).add(key)
            self._bad_reads.pop(key, None)
        return ended

    # -- the completion channel -------------------------------------------------------
    def _listen(self) -> None:
        """Receive outcomes from the channel while calls are pending; acknowledge in batches.

        Each receive and each acknowledgement is one request of up to ten messages, so both
        are kept full: after a receive the thread waits for the next batch to gather (see
        :meth:`_next_gather`), and handles are acknowledged ten at a time — a partial batch
        only once nothing more arrives, nothing is pending, or it is ``acknowledge_after``
        seconds old (far below the queue's visibility timeout).
        """
        unacknowledged: List[Any] = []
        oldest = 0.0
        failures = 0
        streak = _FailureStreak()
        gather = self.channel_gather
        while not self._stopped:
            if not self.pending_count() or not self.channel.ready:
                self._flush_acknowledgements(unacknowledged)
                self._channel_wake.wait(1.0)
                self._channel_wake.clear()
                continue
            try:
                messages = self.channel.receive(self.channel_wait)
            except Exception as exc:
                failures += 1
                if failures == 1:
                    streak = _FailureStreak()
                streak.attempts += 1 if not getattr(exc, "transient", True) else 0
                if self._channel_healthy or failures == 1:
                    logger.warning("the completion channel failed; listing storage instead "
                                   "until it works again: %s", exc)
                self._channel_healthy = False
                self._wake.set()  # the listing takes over at once
                if (streak.attempts >= self.permanent_attempts
                        or time.monotonic() - streak.started >= self.give_up_after):
                    logger.error("the completion channel failed %d times in a row over %.1f s; "
                                 "storage is listed instead from now on: %s", failures,
                                 time.monotonic() - streak.started, exc)
                    self.channel_failure = exc
                    break  # the listing, which needs no channel, ends every call
                self._stop_event.wait(min(10.0, 0.5 * failures))
                continue
            if not self._channel_healthy:
                self._heard()  # listing was on until now; no quiet to make up for
            failures = 0
            self._channel_healthy = True
            if messages:
                self._heard()
                if not unacknowledged:
                    oldest = time.monotonic()
                for body, handle in messages:
                    self._complete_message(body)
                    unacknowledged.append(handle)
            while len(unacknowledged) >= 10:
                self._flush_acknowledgements(unacknowledged, 10)
                oldest = time.monotonic()
            if unacknowledged and (not messages or
                                   time.monotonic() - oldest >= self.acknowledge_after):
                self._flush_acknowledgements(unacknowledged)
            gather = self._next_gather(gather, len(messages))
            if messages and gather > 0:
                self._stop_event.wait(gather)
        self._flush_acknowledgements(unacknowledged)

    def _next_gather(self, gather: float, received: int) -> float:
        """How long to let messages gather before the next receive.

        A receive returns as soon as one message is there, so without a pause a slow stream
        of outcomes costs a request per message. The pause grows while receives come back
        part full and shrinks while they come back full: a receive then takes about ten
        messages whatever the rate, and a call's outcome waits at most
        ``channel_gather_max`` longer to be seen (never the first one after a quiet spell:
        the long poll returns it at once).
        """
        if received >= 10:
            return gather * 0.5 if gather > 0.01 else 0.0
        if received == 0:
            return gather
        return min(self.channel_gather_max,
                   max(gather, self.channel_gather) * min(2.0, 10.0 / received))

    def _flush_acknowledgements(self, handles: List[Any], count: Optional[int] = None) -> None:
        """Acknowledge the first ``count`` handles (all by default) and drop them."""
        batch = handles[:count] if count is not None else list(handles)
        if not batch:
            return
        del handles[:len(batch)]
        try:
            self.channel.acknowledge(batch)
        except Exception as exc:  # they come again after the visibility timeout: no harm
            logger.warning("could not acknowledge %d completion messages: %s",
                           len(batch), exc)

    def _complete_message(self, body: Any) -> None:
        """Complete the calls a channel message reports; ignore what is not ours."""
        try:
            message = decode_json(body)
            job_id = message["job_id"]
        except Exception as exc:
            logger.warning("ignored an unreadable completion message: %s", exc)
            return
        with self._lock:
            calls = self._pending.get(job_id)
            calls = dict(calls) if calls is not None and "keys" in message else calls
        if not calls:
            return
        for key in message.get("keys") or ():  # too large for a message: read from storage
            parsed = layout.parse_status_key(key)
            if parsed is not None and parsed[0] in calls:
                call_id, attempt = parsed
                if calls[call_id].accepts_attempt(attempt):
                    self._fetch_pool.submit(self._complete_single, job_id, call_id,
                                            calls[call_id], attempt)
            elif layout.is_batch_status_key(key):
                self._fetch_pool.submit(self._complete_batch, job_id, key, calls)

        def refused(call_id: str, problem: str) -> None:
            logger.info("ignored a completion message for %s/%s: it %s", job_id, call_id,
                        problem)

        results = message.get("results") or {}
        statuses = message.get("statuses") or ()
        for call_id, future, status in self._accept_statuses(job_id, statuses, calls, refused):
            result = results.get(call_id)
            if status.get("success") and result is None and status.get("result") is None:
                self._fetch_pool.submit(self._complete_with_stored_result, future, status)
            else:
                complete_from_status(future, status, result, self.storage)
                self._forget(job_id, call_id)

    @staticmethod
    def _accept_statuses(job_id: str, statuses: Any, calls: Dict[str, Future],
                         refused: Callable[[str, str], None]
                         ) -> Iterator[Tuple[str, Future, Any]]:
        """``(call_id, future, status)`` for each of ``statuses`` (of a batch status or a
        completion message) that completes a call: a call of ``calls``, an attempt its future
        still waits for, and a status that call owns. ``refused(call_id, problem)`` hears of
        each status for a watched call that it does not own; the rest are skipped silently."""
        for status in statuses:
            call_id = status.get("call_id") if isinstance(status, dict) else None
            future = calls.get(call_id) if isinstance(call_id, str) else None
            if future is None:
                continue
            attempt = int(status.get("attempt") or 0)
            if not future.accepts_attempt(attempt):
                continue  # an attempt the future no longer waits for
            problem = ownership_problem(status, job_id, call_id, attempt)
            if problem:
                refused(call_id, problem)
                continue
            yield call_id, future, status

    def _complete_with_stored_result(self, future: Future, status: Dict[str, Any]) -> None:
        complete_from_status(future, status, None, self.storage)
        self._forget(future.job_id, future.call_id)

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
            if self.channel is not None and self.channel.ready and self._channel_healthy:
                interval = max(interval, 0.25)  # only sweeps and quiet listings happen here
            # Listing grows with the job; keep polling to at most a third of this thread's
            # time so it never starves the threads that invoke.
            interval = max(interval, 2 * (time.monotonic() - started))
