"""Calls that run more than once: retries of failed calls and backup attempts of stragglers.

This is a call-level policy in the core, the same for every backend. The executor hands each
call of a job that asks for retries or backups to :class:`Attempts`, which becomes the
future's attempt policy (``Future._attempts``). Backends report outcomes as always, through
``complete_from_status`` and ``Future.fail``; before an outcome completes the user's future,
:meth:`CallAttempts.settle` decides whether it does, or whether the call runs again — by
calling the backend's ``invoke`` once more with the call's message carrying the next
``attempt`` number. Every attempt writes its own status and result keys (see
``wrencore_runtime.layout``), so attempts never collide in storage.

**Retries.** ``retries`` is how many more attempts a call gets after its first. By default
only infrastructure failures are retried (:func:`is_infrastructure_failure`):

* :class:`WorkerCrashedError` — the worker died mid-call (local worker killed, Lambda
  sandbox crashed or timed out: ``LostCallError``; fleet message dead-lettered after its
  worker kept dying or its instance was terminated);
* a transient :class:`StorageError` or :class:`QueueError` — the job's storage, or the
  fleet's task queue, failed for ``storage_retry_for`` seconds with errors that repeating
  may fix;
* any error whose class sets ``infrastructure_failure = True`` — the Lambda backend's
  ``InvocationError`` (invocation refused, e.g. throttled past ``retry_for``).

Never by default: the user's own exceptions, :class:`CallTimeoutError`,
:class:`InitializerError`, :class:`RuntimeMismatchError`, (de)serialization errors and
:class:`StatusError`. The user's exceptions are retried when asked: ``retry_on`` is an
exception class, a tuple of them, ``True`` (any exception) or a predicate
``retry_on(exc) -> bool`` (as Ray's ``retry_exceptions``). Between attempts the call waits
a backoff with jitter: uniform in ``[d/2, d]``, ``d = min(backoff_cap, backoff * 2**n)``.

**Backup attempts (speculative execution).** With ``speculation`` on, once ``fraction`` of a
job's calls are done (and the job has at least ``min_calls`` calls), a call whose attempt has
been running longer than ``multiple`` times the median duration of the job's finished calls,
and at least ``min_time`` seconds, gets one backup attempt; the backend's idle workers run
it. The first attempt to succeed completes the future; the others still running are stopped
through the backend's :meth:`~wrencore.backends.Backend.stop_attempts` where it can (local:
the worker running one is killed and replaced; aws_sqs_ec2: the daemon stops it on its cancel
marker; aws_lambda: a chunk skips it if it has not started) and ignored otherwise (their
outcomes are never read). A call cancelled by the user (:class:`CallCancelledError`) is never
retried, and its other running attempts are stopped the same way. Backends do not say when a call starts, so its first attempt counts as
running from when it could have started, had the job's calls started in order on ``P``
workers (``P``: the distinct workers that finished calls of the job so far): call ``i``
starts when ``i - P + 1`` calls have finished. A call still queued behind others is thus not
taken for a straggler. Later attempts count from their dispatch.

**Metadata.** A call under a policy gets ``attempts`` (attempts started), ``attempt`` (the one
whose outcome the future holds), ``backups`` (backup attempts started) and
``attempt_errors``: for each failed attempt, ``{"attempt", "error", "host_failed_timestamp"}``.
"""

from __future__ import annotations

import array
import functools
import heapq
import itertools
import logging
import random
import statistics
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Set, Tuple, Union

from .backends import Call
from .config import Section
from .errors import CallCancelledError, ConfigError, QueueError, StorageError, WorkerCrashedError

logger = logging.getLogger(__name__)

RetryOn = Union[None, bool, type, Tuple[type, ...], Callable[[BaseException], bool]]
#: ``invoke(job, calls, chunksize)``: starts calls on the backend.
Invoke = Callable[[Dict[str, Any], List[Call], Optional[int]], None]
#: ``stop(future, attempts)``: stops running attempts of a decided call where the backend can.
Stop = Callable[[Any, List[int]], None]

#: How often the backup policy looks for stragglers, in seconds.
STRAGGLER_CHECK_INTERVAL = 0.1
#: Finished calls' durations kept per job for the median (a uniform sample beyond this).
DURATION_SAMPLE = 1001


def is_infrastructure_failure(exc: BaseException) -> bool:
    """Whether ``exc`` says the call's machinery failed, not the user's code."""
    if isinstance(exc, WorkerCrashedError):
        return True
    if isinstance(exc, (StorageError, QueueError)):
        return bool(exc.transient)
    return bool(getattr(type(exc), "infrastructure_failure", False))


def _matcher(retry_on: RetryOn) -> Callable[[BaseException], bool]:
    if retry_on is None or retry_on is False:
        return lambda exc: False
    if retry_on is True:
        return lambda exc: True
    if isinstance(retry_on, type) and issubclass(retry_on, BaseException):
        return lambda exc: isinstance(exc, retry_on)
    if isinstance(retry_on, tuple) and all(
            isinstance(c, type) and issubclass(c, BaseException) for c in retry_on):
        return lambda exc: isinstance(exc, retry_on)
    if callable(retry_on):
        return retry_on  # type: ignore[return-value]
    raise TypeError(f"retry_on must be an exception class, a tuple of them, True or a "
                    f"predicate, not {retry_on!r}")


@dataclass(frozen=True)
class RetryPolicy:
    """How many more attempts a call gets, and after which failures.

    Args:
        retries: attempts after the first (0: none).
        retry_on: the user's exceptions to retry too (see the module's docstring).
        backoff: the first backoff, in seconds; it doubles per retry.
        backoff_cap: the longest backoff, in seconds.
    """

    retries: int = 0
    retry_on: RetryOn = None
    backoff: float = 0.25
    backoff_cap: float = 10.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "_user_errors", _matcher(self.retry_on))

    def wants(self, exc: BaseException) -> bool:
        """Whether a call that failed with ``exc`` should run again (budget aside)."""
        if is_infrastructure_failure(exc):
            return True
        try:
            return bool(self._user_errors(exc))  # type: ignore[attr-defined]
        except Exception:
            logger.exception("the retry_on predicate failed on %r; not retrying", exc)
            return False

    def delay(self, retry_index: int) -> float:
        """Seconds before retry number ``retry_index`` (0: the first retry)."""
        ceiling = min(self.backoff_cap, self.backoff * (2 ** min(retry_index, 30)))
        return random.uniform(ceiling / 2, ceiling)


@dataclass(frozen=True)
class SpeculationPolicy:
    """When a straggling call gets a backup attempt (defaults stay quiet on small or
    uniform jobs).

    Args:
        fraction: share of the job's calls done before any backup starts.
        multiple: a call is a straggler once it has run this many times the median
            duration of the job's finished calls ...
        min_time: ... and at least this many seconds.
        min_calls: jobs with fewer calls never get backups.
    """

    fraction: float = 0.75
    multiple: float = 2.0
    min_time: float = 1.0
    min_calls: int = 20

    @classmethod
    def from_config(cls, top: Section) -> "SpeculationPolicy":
        """The knobs from the top-level ``speculation_…`` keys (checked, named on error)."""
        default = cls()
        return cls(
            fraction=top.float("speculation_fraction", default.fraction, minimum=0.0,
                               maximum=1.0),
            multiple=top.float("speculation_multiple", default.multiple, minimum=1.0),
            min_time=top.float("speculation_min_time", default.min_time, minimum=0.0),
            min_calls=top.int("speculation_min_calls", default.min_calls, minimum=1))


def speculation_policy(value: Any, top: Section) -> Optional[SpeculationPolicy]:
    """The policy for ``speculation=value`` (None: the config's ``speculation``).

    The configured knobs are checked whether or not speculation is on.
    """
    configured = SpeculationPolicy.from_config(top)
    if isinstance(value, SpeculationPolicy):
        return value
    if value is None:
        value = top.bool("speculation", False)
    elif not isinstance(value, bool):
        raise ConfigError(f"speculation must be True, False or a SpeculationPolicy, "
                          f"not {value!r}")
    return configured if value else None


class _Job:
    """What the backup policy knows of one job."""

    def __init__(self, job: Dict[str, Any], retry: RetryPolicy,
                 speculation: Optional[SpeculationPolicy]):
        self.job = job
        self.retry = retry
        self.speculation = speculation
        self.total = 0
        self.done = 0
        self.durations: List[float] = []
        self.durations_seen = 0
        self.workers: Set[str] = set()
        self.unfinished: Set["CallAttempts"] = set()
        self.completions = array.array("d")  # when each finished call finished, in order

    def finished(self, call: "CallAttempts", metadata: Dict[str, Any], success: bool) -> None:
        self.done += 1
        self.completions.append(time.time())
        self.unfinished.discard(call)
        if success:
            start = metadata.get("worker_start_timestamp")
            end = metadata.get("worker_end_timestamp")
            if isinstance(start, (int, float)) and isinstance(end, (int, float)):
                self._sample(max(0.0, end - start))
            if metadata.get("worker_id"):
                self.workers.add(str(metadata["worker_id"]))

    def could_start_at(self, index: int) -> Optional[float]:
        """When the job's call ``index`` could have started on its workers, or None if not yet:
        once ``index - P + 1`` calls finished, ``P`` the workers seen so far."""
        before = index - len(self.workers)
        if before < 0:
            return 0.0
        return self.completions[before] if before < len(self.completions) else None

    def _sample(self, duration: float) -> None:
        self.durations_seen += 1
        if len(self.durations) < DURATION_SAMPLE:
            self.durations.append(duration)
        else:
            slot = random.randrange(self.durations_seen)
            if slot < DURATION_SAMPLE:
                self.durations[slot] = duration

    def straggler_threshold(self) -> Optional[float]:
        """Seconds a call may run before it gets a backup, or None while none may start."""
        policy = self.speculation
        if policy is None or self.total < policy.min_calls or not self.durations \
                or self.done < policy.fraction * self.total:
            return None
        return max(policy.multiple * statistics.median(self.durations), policy.min_time)


class CallAttempts:
    """One call's attempts: which run, how each failed, what runs next."""

    def __init__(self, owner: "Attempts", job: _Job, call: Call, index: int):
        self.owner = owner
        self.job = job
        self.call = call
        self.index = index  # its place in the job's order of dispatch
        self.live: Dict[int, float] = {0: time.time()}  # attempt -> dispatched at
        self.next_attempt = 1
        self.retries_used = 0
        self.backups = 0
        self.retry_pending = False
        self.errors: List[Dict[str, Any]] = []

    def accepts(self, future: Any, attempt: int) -> bool:
        with self.owner.lock:
            return attempt in self.live and not future.done()

    def settle(self, future: Any, attempt: Optional[int],
               exception: Optional[BaseException]) -> bool:
        """Called before ``future`` completes; True lets the outcome complete it."""
        with self.owner.lock:
            if attempt is not None and attempt not in self.live:
                return False  # an attempt already settled (or never started)
            concerned = list(self.live) if attempt is None else [attempt]
            if exception is None or isinstance(exception, CallCancelledError):
                # The call is decided: attempts still running lost (or were cancelled).
                losers = [n for n in self.live if n not in concerned]
                self.live.clear()
                if losers:
                    self.owner.schedule(0, functools.partial(self.owner.stop, future, losers))
                return self._final(future, attempt if attempt is not None else future.attempt,
                                   success=exception is None)
            if not concerned and self.retry_pending:
                return False  # a verdict on no running attempt: the retry is on its way
            now = time.time()
            for number in concerned:
                self.live.pop(number, None)
                self.errors.append({"attempt": number,
                                    "error": f"{type(exception).__name__}: {exception}",
                                    "host_failed_timestamp": now})
            if self.live:
                return False  # another attempt of the call still runs
            policy = self.job.retry
            if self.retries_used < policy.retries and policy.wants(exception):
                delay = policy.delay(self.retries_used)
                self.retries_used += 1
                self.retry_pending = True
                number = self._new_attempt_number()
                logger.info("call %s of job %s failed (%s: %s); attempt %d in %.2f s",
                            self.call.call_id, self.job.job["job_id"],
                            type(exception).__name__, exception, number, delay)
                self.owner.schedule(delay, lambda: self.owner.run_again(future, self, number))
                return False
            return self._final(future, max(concerned, default=future.attempt), success=False)

    def _new_attempt_number(self) -> int:
        number = self.next_attempt
        self.next_attempt += 1
        return number

    def _final(self, future: Any, attempt: int, success: bool) -> bool:
        future.metadata.update(attempts=self.next_attempt, attempt=attempt,
                               backups=self.backups, attempt_errors=list(self.errors))
        self.job.finished(self, future.metadata, success)
        if not self.job.unfinished and self.owner._jobs.get(self.job.job["job_id"]) is self.job:
            del self.owner._jobs[self.job.job["job_id"]]
        future._attempts = None  # outcomes arriving later are refused; the call is let go
        return True


class Attempts:
    """An executor's retry and backup policy: runs calls again through ``invoke``."""

    def __init__(self, invoke: Invoke, stop: Optional[Stop] = None):
        self._invoke = invoke
        self._stop = stop
        self.lock = threading.RLock()
        self._timers: List[Tuple[float, int, Callable[[], None]]] = []
        self._sequence = itertools.count()
        self._jobs: Dict[str, _Job] = {}
        self._wake = threading.Condition(self.lock)
        self._thread: Optional[threading.Thread] = None

    def adopt(self, job: Dict[str, Any], calls: List[Call], retry: RetryPolicy,
              speculation: Optional[SpeculationPolicy]) -> None:
        """Put ``calls`` (about to be invoked for the first time) under the policies."""
        with self.lock:
            state = self._jobs.get(job["job_id"])
            if state is None or state.retry != retry or state.speculation != speculation:
                state = self._jobs[job["job_id"]] = _Job(job, retry, speculation)
            for call in calls:
                attempts = CallAttempts(self, state, call, state.total)
                state.total += 1
                state.unfinished.add(attempts)
                call.future._adopt_attempts(attempts)
            if speculation is not None:
                self._ensure_thread()

    # -- running again ---------------------------------------------------------------
    def schedule(self, delay: float, action: Callable[[], None]) -> None:
        with self.lock:
            heapq.heappush(self._timers, (time.monotonic() + delay, next(self._sequence), action))
            self._ensure_thread()
            self._wake.notify_all()

    def run_again(self, future: Any, call: CallAttempts, number: int,
                  backup: bool = False) -> None:
        """Start attempt ``number`` of ``call`` (a retry, or a backup of a straggler)."""
        with self.lock:
            if future.done():
                if not backup:
                    call.retry_pending = False
                return
            if not backup:
                call.retry_pending = False
            call.live[number] = time.time()
            future.attempt = max(future.attempt, number)
        message = dict(call.call.message, attempt=number)
        try:
            self._invoke(call.job.job, [Call(call.call.call_id, message, future)], 1)
        except Exception as exc:
            logger.warning("could not start attempt %d of call %s: %s", number,
                           call.call.call_id, exc)
            future.fail(exc, attempt=number)

    def stop(self, future: Any, attempts: List[int]) -> None:
        """Stop ``attempts`` of a call that another attempt (or a cancel) decided."""
        if self._stop is None:
            return
        logger.info("stopping attempt(s) %s of call %s of job %s: the call is decided",
                    ", ".join(map(str, attempts)), future.call_id, future.job_id)
        self._stop(future, attempts)

    def _backups_due(self, now: float) -> List[Tuple[Any, CallAttempts, int]]:
        """The stragglers that get a backup now (caller holds the lock)."""
        due = []
        for job_id, state in list(self._jobs.items()):
            if not state.unfinished:
                del self._jobs[job_id]
                continue
            threshold = state.straggler_threshold()
            if threshold is None:
                continue
            for call in state.unfinished:
                if call.backups or call.retry_pending or len(call.live) != 1:
                    continue
                [(attempt, started)] = call.live.items()
                if attempt == 0:
                    could_start = state.could_start_at(call.index)
                    if could_start is None:
                        continue
                    started = max(started, could_start)
                running = now - started
                future = call.call.future
                if running > threshold and not future.done():
                    call.backups += 1
                    due.append((future, call, call._new_attempt_number()))
                    logger.info("call %s of job %s has run %.1f s (over %.1f s): starting a "
                                "backup attempt", call.call.call_id, job_id, running, threshold)
        return due

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, daemon=True,
                                            name="wrencore-attempts")
            self._thread.start()

    def _speculating(self) -> bool:
        return any(s.speculation is not None and s.unfinished for s in self._jobs.values())

    def _next_work(self) -> Optional[List[Callable[[], None]]]:
        """Wait for what is due (retries, backups) and return it; None when nothing is left.

        The caller holds the lock (released while waiting).
        """
        while True:
            now = time.monotonic()
            if self._timers and self._timers[0][0] <= now:
                return [heapq.heappop(self._timers)[2]]
            speculating = self._speculating()
            if not self._timers and not speculating:
                return None
            if speculating:
                due = self._backups_due(time.time())
                if due:
                    return [functools.partial(self.run_again, future, call, number, backup=True)
                            for future, call, number in due]
            wait = self._timers[0][0] - now if self._timers else STRAGGLER_CHECK_INTERVAL
            self._wake.wait(min(wait, STRAGGLER_CHECK_INTERVAL) if speculating else wait)

    def _run(self) -> None:
        while True:
            with self.lock:
                work = self._next_work()
                if work is None:
                    self._jobs = {k: v for k, v in self._jobs.items() if v.unfinished}
                    self._thread = None
                    return
            for action in work:
                try:
                    action()
                except Exception:  # never let this thread die: retries would never start
                    logger.exception("running a call again failed")
