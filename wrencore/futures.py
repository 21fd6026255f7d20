"""wrencore's Future: a :class:`concurrent.futures.Future` that knows its call.

Backends complete futures only through :func:`complete_from_status` (or ``Future.fail``
for failures detected on the user's computer), which sets ``set_result``/``set_exception``
exactly once, so stdlib ``wait`` and ``as_completed`` work on them unchanged.

A future whose call may run more than once (retries, backup attempts) carries the
executor's :class:`wrencore.attempts.Attempts`, which sees every outcome first: it may hold
a failure back and run the call again, and it ignores outcomes of attempts already settled.
"""

from __future__ import annotations

import _thread
import collections
import concurrent.futures
import importlib
import logging
import pickle
import threading
import time
from typing import (
    Any, Callable, Deque, Dict, Iterable, List, Optional, Sequence, Tuple, TypeVar,
)

import cloudpickle

from wrencore_runtime.runner import format_log_record

from .errors import DeserializationError, RemoteError, StorageKeyError, WrenError
from .output import LiveOutput

logger = logging.getLogger(__name__)

#: The states in which ``Future.done()`` is true (read directly on the per-call path).
_DONE_STATES = frozenset((concurrent.futures._base.CANCELLED,
                          concurrent.futures._base.CANCELLED_AND_NOTIFIED,
                          concurrent.futures._base.FINISHED))

_T = TypeVar("_T")

_PENDING = concurrent.futures._base.PENDING
_RUNNING = concurrent.futures._base.RUNNING
_CANCELLED = concurrent.futures._base.CANCELLED
_FINISHED = concurrent.futures._base.FINISHED


class _FutureCondition(_thread.RLock):
    """A future's condition: an ``RLock`` that is also the condition waited on, with the
    ``wait``/``notify``/``notify_all`` of :class:`threading.Condition` (all that
    ``concurrent.futures`` asks of it). One object instead of a condition, its lock, a queue
    of waiting threads and five copies of the lock's methods: with a future per call, those
    were most of the objects the cyclic garbage collector tracks (and walks) while many
    calls are pending, and ``with`` on it runs no Python code.
    """

    #: The waiting threads' locks, made when a thread first waits (unset until then: no
    #: Python-level __init__ runs for each future).
    __slots__ = ("_waiters",)
    _waiters: Deque[Any]

    def wait(self, timeout: Optional[float] = None) -> bool:
        """As :meth:`threading.Condition.wait`."""
        if not self._is_owned():  # type: ignore[attr-defined]
            raise RuntimeError("cannot wait on un-acquired lock")
        waiter = _thread.allocate_lock()
        waiter.acquire()
        waiters = getattr(self, "_waiters", None)
        if waiters is None:
            waiters = self._waiters = collections.deque()
        waiters.append(waiter)
        saved_state = self._release_save()  # type: ignore[attr-defined]
        gotit = False
        try:
            if timeout is None:
                waiter.acquire()
                gotit = True
            elif timeout > 0:
                gotit = waiter.acquire(True, timeout)
            else:
                gotit = waiter.acquire(False)
            return gotit
        finally:
            self._acquire_restore(saved_state)  # type: ignore[attr-defined]
            if not gotit:
                try:
                    waiters.remove(waiter)
                except ValueError:
                    pass

    def notify(self, n: int = 1) -> None:
        """As :meth:`threading.Condition.notify`."""
        if not self._is_owned():  # type: ignore[attr-defined]
            raise RuntimeError("cannot notify on un-acquired lock")
        waiters = getattr(self, "_waiters", None)
        while waiters and n > 0:
            waiter = waiters[0]
            try:
                waiter.release()
            except RuntimeError:
                pass  # its wait timed out and it is removing itself
            else:
                n -= 1
            try:
                waiters.remove(waiter)
            except ValueError:
                pass

    def notify_all(self) -> None:
        """As :meth:`threading.Condition.notify_all`."""
        waiters = getattr(self, "_waiters", None)
        if waiters:
            self.notify(len(waiters))
        elif not self._is_owned():  # type: ignore[attr-defined]
            raise RuntimeError("cannot notify on un-acquired lock")


class RemoteTraceback(Exception):
    """Carries the worker-side traceback as the ``__cause__`` of a re-raised exception."""

    def __init__(self, tb: str):
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return "\n\n--- remote traceback ---\n" + self.tb.rstrip() + "\n--- end remote traceback ---"


class Future(concurrent.futures.Future[_T]):
    """The future of one remote call.

    Attributes:
        call_id: the call's id within its job.
        job_id: the job's id.
        metadata: the call's metadata once done (``host_…``/``worker_…`` keys;
            ``…_time`` durations in seconds, ``…_timestamp`` Unix timestamps).
        stdout: what the call printed to stdout (``""`` until done).
        stderr: what the call printed to stderr.
        log_records: what the call logged, as ``[created, level, logger, message]`` lists
            (empty until done; wrencore's own records are not included).
        attempt: the newest attempt of the call started (0: the first). Without retries or
            backups only its status is accepted; with them, see :meth:`accepts_attempt`.
    """

    #: Set when the call is done, if it logged anything (class defaults: no per-call cost).
    log_records: Sequence[List[Any]] = ()
    #: The call's output received while it runs (local backend), else None.
    _output: Optional[LiveOutput] = None
    #: Echo that output to this console (``live_output=True``).
    _echo = False
    #: Whether a status from the call's worker completed it (else: failed on this computer).
    _status_received = False
    #: ``(job_id, call_id) -> lines or None``: the backend's logs of a call (set by the executor).
    _fetch_logs: Optional[Callable[[str, str], Optional[List[str]]]] = None
    # Class defaults, set on the instance only when they change (a future per call).
    stdout = ""
    stderr = ""
    attempt = 0
    #: The executor's retry and backup policy for this call (None: one attempt only).
    _attempts: Any = None
    #: Serializes completions through the attempt policy (set with it; see ``_complete``).
    _completion_lock: Any = None

    def __init__(self, job_id: str = "", call_id: str = ""):
        # What ``concurrent.futures.Future.__init__`` sets, with a leaner condition (a test
        # checks the attributes still match the stdlib's).
        self._condition = _FutureCondition()
        self._state = _PENDING
        self._result = None
        self._exception: Optional[BaseException] = None
        self.job_id = job_id
        self.call_id = call_id
        self.metadata: Dict[str, Any] = {}

    # ``_waiters`` (what stdlib ``wait``/``as_completed`` install) and ``_done_callbacks``
    # are made when first used: most futures never have either, and two lists per call
    # were half of what the cyclic garbage collector tracks (and walks) while a job's
    # futures live. The methods below that would read them read the class default instead.
    _waiter_list: Optional[List[Any]] = None
    _callback_list: Optional[List[Callable[[Any], Any]]] = None

    @property
    def _waiters(self) -> List[Any]:
        waiters = self._waiter_list
        if waiters is None:
            waiters = self._waiter_list = []
        return waiters

    @_waiters.setter
    def _waiters(self, value: List[Any]) -> None:
        self._waiter_list = value

    @property
    def _done_callbacks(self) -> List[Callable[[Any], Any]]:
        callbacks = self._callback_list
        if callbacks is None:
            callbacks = self._callback_list = []
        return callbacks

    @_done_callbacks.setter
    def _done_callbacks(self, value: List[Callable[[Any], Any]]) -> None:
        self._callback_list = value

    #: What follows the future to its end (the executor's lifecycle): its ``finished(future)``
    #: runs once the future is done, before the done callbacks, and ``finished_many(futures)``
    #: for futures completed together (:func:`complete_from_results`). Not a done callback:
    #: every future has one, and a callback costs a list and a call through
    #: ``_invoke_callbacks`` per future.
    _tracker: Any = None

    def _invoke_callbacks(self) -> None:
        tracker = self._tracker
        if tracker is not None:
            try:
                tracker.finished(self)
            except Exception:
                logger.exception("the executor failed to record the end of %r", self)
        if self._callback_list:
            super()._invoke_callbacks()

    def set_running_or_notify_cancel(self) -> bool:
        """As :meth:`concurrent.futures.Future.set_running_or_notify_cancel`."""
        with self._condition:
            if self._state == _CANCELLED:
                self._state = concurrent.futures._base.CANCELLED_AND_NOTIFIED
                for waiter in self._waiter_list or ():
                    waiter.add_cancelled(self)
                return False
            if self._state == _PENDING:
                self._state = _RUNNING
                return True
        return super().set_running_or_notify_cancel()  # logs and raises, as the stdlib's

    def set_result(self, result: Any) -> None:
        """As :meth:`concurrent.futures.Future.set_result`."""
        with self._condition:
            if self._state in _DONE_STATES:
                raise concurrent.futures.InvalidStateError(f"{self._state}: {self!r}")
            self._result = result
            self._state = _FINISHED
            for waiter in self._waiter_list or ():
                waiter.add_result(self)
            self._condition.notify_all()
        self._invoke_callbacks()

    def set_exception(self, exception: Optional[BaseException]) -> None:
        """As :meth:`concurrent.futures.Future.set_exception`."""
        with self._condition:
            if self._state in _DONE_STATES:
                raise concurrent.futures.InvalidStateError(f"{self._state}: {self!r}")
            self._exception = exception
            self._state = _FINISHED
            for waiter in self._waiter_list or ():
                waiter.add_exception(self)
            self._condition.notify_all()
        self._invoke_callbacks()

    def _adopt_attempts(self, attempts: Any) -> None:
        """Put the future under an attempt policy (before its call is first invoked)."""
        self._completion_lock = threading.Lock()
        self._attempts = attempts

    def __repr__(self) -> str:
        return f"<wrencore.Future {self.job_id}/{self.call_id} state={self._state.lower()}>"

    def logs(self, source: str = "auto") -> str:
        """The call's output and log records, as text.

        On the local backend, what the call wrote to stdout and stderr and logged, in the
        order it happened, also while the call runs (what it produced so far). On every
        backend, once the call is done: its stdout, then its stderr, then its log records
        (one line each: time, level, logger, message), as its status carried them back.

        A call whose worker died (crashed, killed, lost) sent no status; its backend may
        still have what the worker logged (CloudWatch Logs on ``aws_lambda`` and
        ``aws_sqs_ec2``), fetched through the ``wrencore_call_logs`` hook.

        Args:
            source: ``"auto"``: the status's output, or — for a call done without a status
                from its worker — the backend's log lines for it. ``"status"``: only what
                the status carried. ``"cloud"``: only the backend's log lines (worker log
                lines naming the call and what the call logged while it ran; not its
                stdout), fetched anew on each call.

        Raises:
            ValueError: for another ``source``.
            WrenError: with ``source="cloud"``, if the call's backend keeps no logs of its
                own (e.g. the local backend) or they cannot be read.
        """
        if source not in ("auto", "status", "cloud"):
            raise ValueError(f"source must be 'auto', 'status' or 'cloud', not {source!r}")
        if source == "cloud":
            return self._backend_logs(strict=True)
        output = self._output
        if output is not None:
            return output.text()
        if not self.done():
            return ""
        if source == "auto" and not self._status_received and not self.cancelled():
            return self._backend_logs(strict=False)
        records = "".join(format_log_record(r) + "\n" for r in self.log_records)
        return self.stdout + self.stderr + records

    def _backend_logs(self, strict: bool) -> str:
        fetch = self._fetch_logs
        try:
            lines = fetch(self.job_id, self.call_id) if fetch is not None else None
        except Exception as exc:
            if strict:
                raise WrenError(f"could not read the logs of call {self.call_id} of job "
                                f"{self.job_id}: {type(exc).__name__}: {exc}") from exc
            logger.debug("could not read the logs of %s: %s", self, exc)
            return ""
        if lines is None:
            if strict:
                raise WrenError(f"call {self.call_id} of job {self.job_id} ran on a backend "
                                f"that keeps no logs of its own; use logs() or "
                                f"logs(source='status')")
            return ""
        return "".join(line if line.endswith("\n") else line + "\n" for line in lines)

    def _add_output(self, stream: str, text: str) -> None:
        """A chunk of the running call's output (``stream``: stdout, stderr or log)."""
        output = self._output
        if output is None:
            output = self._output = LiveOutput(self.call_id, self._echo)
            if self._echo:
                self.add_done_callback(lambda _: output.flush())
        output.add(stream, text)

    def cancel(self) -> bool:
        """Cancel the call if it has not started; True if it is (now) cancelled.

        Waiters are notified at once, so ``wait``/``as_completed`` see it without the
        backend having to reach the call first.
        """
        with self._condition:
            if not super().cancel():
                return False
            if self._state == concurrent.futures._base.CANCELLED:
                self.set_running_or_notify_cancel()
        return True

    def accepts_attempt(self, attempt: int) -> bool:
        """Whether an outcome of ``attempt`` can still complete this future."""
        if self._attempts is None:
            return attempt == self.attempt and self._state not in _DONE_STATES
        return self._attempts.accepts(self, attempt)

    def _complete(self, *, result: Any = None, exception: Optional[BaseException] = None,
                  attempt: Optional[int] = None) -> bool:
        """Complete once; later completions (e.g. a redelivered call) are ignored.

        ``attempt`` is the attempt the outcome belongs to (None: every attempt running). An
        attempt policy may hold a failure back to run the call again; then this returns False.
        """
        lock = self._completion_lock
        if lock is None:
            # Never under an attempt policy: set_result/set_exception check and set the
            # state atomically. (A future that had one keeps its lock: the policy lets go
            # of a decided call while its outcome is being set.)
            if self._state == _PENDING and not claim(self):
                return False  # cancelled (or completed) before a backend marked it running
            try:
                if exception is not None:
                    self.set_exception(exception)
                else:
                    self.set_result(result)
            except concurrent.futures.InvalidStateError:
                return False
            return True
        # Not self._condition: the attempt policy takes its own lock here, and holds it while
        # asking done(), which takes self._condition.
        with lock:
            # The state read without the condition's lock: it becomes done only under
            # this lock (or by a cancel, which a snapshot through done() races too).
            if self._state in _DONE_STATES:
                return False
            if self._attempts is not None and \
                    not self._attempts.settle(self, attempt, exception):
                return False
            if self._state == concurrent.futures._base.PENDING:
                # Completed before a backend marked it running (results found by polling).
                if not self.set_running_or_notify_cancel():
                    return False
            if exception is not None:
                self.set_exception(exception)
            else:
                self.set_result(result)
        return True

    def fail(self, exception: BaseException, attempt: Optional[int] = None) -> bool:
        """Complete with an error detected on the user's computer.

        ``attempt``: the attempt it concerns, if the caller knows (else the error's
        ``wrencore_attempt`` attribute, else every attempt running).
        """
        self.metadata.setdefault("host_status_timestamp", time.time())
        if attempt is None:
            attempt = getattr(exception, "wrencore_attempt", None)
        return self._complete(exception=exception, attempt=attempt)


def claim(future: concurrent.futures.Future) -> bool:
    """Mark a future running before its call is dispatched; False if it was cancelled.

    Safe to call again on a future already running (a requeued call) or already cancelled,
    and it notifies waiters of a cancellation, which stdlib ``wait`` needs to return.
    """
    with future._condition:
        state = future._state
        if state == _RUNNING:
            return True
        if state == _PENDING:  # what set_running_or_notify_cancel does, without its call
            future._state = _RUNNING
            return True
        if state == _CANCELLED:
            return future.set_running_or_notify_cancel()
        return False


def add_done_callback_to_new(futures: Sequence[concurrent.futures.Future],
                             fn: Callable[[Any], Any]) -> None:
    """``future.add_done_callback(fn)`` for futures just created, which no other thread
    holds yet (so none is done and no lock is needed)."""
    for future in futures:
        future._done_callbacks.append(fn)


def cancel(future: concurrent.futures.Future) -> bool:
    """Cancel a call that has not started and notify waiters; False if it has started."""
    if not future.cancel():
        return False
    claim(future)
    return True


def add_note(exc: BaseException, note: str) -> None:
    """``exc.add_note(note)``, also before Python 3.11 (where tracebacks do not print it)."""
    if hasattr(exc, "add_note"):
        exc.add_note(note)
    else:  # pragma: no cover - Python < 3.11
        exc.__notes__ = [*getattr(exc, "__notes__", []), note]


def _call_note(future: "Future", info: Dict[str, Any]) -> str:
    where = f"call {future.call_id} of job {future.job_id}"
    return f"wrencore: raised by {where}: {info['call']}" if info.get("call") else \
        f"wrencore: raised by {where}"


def _load_exception(info: Dict[str, Any]) -> BaseException:
    exc: Optional[BaseException] = None
    if info.get("pickled"):
        try:
            exc = cloudpickle.loads(info["pickled"])
        except BaseException as err:  # class not importable here, or its unpickling exits
            logger.debug("could not unpickle remote %s: %s", info.get("type"), err)
    if exc is None:
        exc = _instantiate_by_name(info)
    if info.get("traceback"):
        exc.__cause__ = RemoteTraceback(info["traceback"])
    return exc


def _instantiate_by_name(info: Dict[str, Any]) -> BaseException:
    module_name, _, qualname = info.get("type", "").rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), qualname)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            return cls(info.get("message", ""))
    except BaseException:
        pass
    return RemoteError(info.get("type", "Exception"), info.get("message", ""),
                       info.get("traceback", ""))


def complete_from_status(future: Future, status: Dict[str, Any], result: Optional[bytes],
                         storage, received: Optional[float] = None) -> bool:
    """Complete ``future`` from a worker's status (and inline result, if any).

    ``received``: when the status arrived (``time.time()``; None: now), for the statuses
    of a batch read together.

    Returns False if the future was already done. Failures to fetch or unpickle the result
    become that future's exception; they never escape to the caller.
    """
    attempt = int(status.get("attempt") or 0)
    if future._state in _DONE_STATES or not future.accepts_attempt(attempt):
        return False
    future._status_received = True
    metadata = future.metadata
    metadata.update(status.get("metadata") or ())
    metadata["host_status_timestamp"] = time.time() if received is None else received
    stdout, stderr = status.get("stdout") or "", status.get("stderr") or ""
    if stdout or future.stdout:  # else the class default stays: no per-call attribute
        future.stdout = stdout
    if stderr or future.stderr:
        future.stderr = stderr
    records = status.get("log_records")
    if records:
        future.log_records = records
    if not status.get("success"):
        info = status.get("exception") or {}
        exc = _load_exception(info)
        add_note(exc, _call_note(future, info))
        return future._complete(exception=exc, attempt=attempt)
    if result is None and status.get("result") is not None:
        result = status["result"]  # inlined in the status by workers that write one object
    return _complete_with_result(future, result, status, storage, attempt)


def complete_from_result(future: Future, result: bytes, metadata: Iterable[Tuple[str, Any]],
                         attempt: int, received: float,
                         constants: Optional[Dict[str, Any]] = None) -> bool:
    """Complete ``future`` from a successful call's inline ``result``, for a worker that
    reports such a call without a status: the call printed and logged nothing, and
    ``metadata`` holds its status's metadata as ``(key, value)`` pairs, with ``constants``
    (metadata the same for a batch of calls) if given.

    As :func:`complete_from_status` otherwise. The local backend's common case (no attempt
    policy, the future running) is written out in :func:`complete_from_results`, which
    hands this the others.
    """
    if future._state in _DONE_STATES:
        return False
    if future._attempts is None:
        if attempt != future.attempt:
            return False
    elif not future._attempts.accepts(future, attempt):
        return False
    future._status_received = True
    fields = future.metadata
    if constants:
        fields.update(constants)
    fields.update(metadata)
    fields["host_status_timestamp"] = received
    return _complete_with_result(future, result, None, None, attempt)


def complete_from_results(batch: Sequence[Tuple[Future, bytes, Sequence[Any], int]],
                          keys: Sequence[str], received: float,
                          constants: Optional[Dict[str, Any]] = None) -> None:
    """:func:`complete_from_result` for the quick calls a worker reported together, as
    ``(future, result, values, attempt)``: ``values`` are the status metadata's values for
    ``keys``. A running future with no attempt policy is completed here, with no Python
    call per future beyond the result's unpickling, and its tracker is told of the whole
    batch at once; any other goes through :func:`complete_from_result`.
    """
    done: List[Future] = []
    perf_counter, loads = time.perf_counter, pickle.loads
    for future, result, values, attempt in batch:
        if future._state != _RUNNING or future._completion_lock is not None \
                or attempt != future.attempt:
            complete_from_result(future, result, zip(keys, values), attempt, received,
                                 constants)
            continue
        fields = future.metadata
        if constants:
            fields.update(constants)
        fields.update(zip(keys, values))
        fields["host_status_timestamp"] = received
        start = perf_counter()
        try:
            value = loads(result)
        except BaseException:  # reported as _complete_with_result does
            future._status_received = True
            _complete_with_result(future, result, None, None, attempt)
            continue
        fields["host_result_time"] = perf_counter() - start
        future._status_received = True
        condition = future._condition
        with condition:
            if future._state != _RUNNING:
                continue  # completed meanwhile (e.g. failed by a timeout): that outcome stands
            future._result = value
            future._state = _FINISHED
            waiters = future._waiter_list
            if waiters:
                for waiter in waiters:
                    waiter.add_result(future)
            if getattr(condition, "_waiters", None):
                condition.notify_all()
        done.append(future)
    if not done:
        return
    tracker = done[0]._tracker
    if tracker is not None and all(f._tracker is tracker for f in done):
        try:
            tracker.finished_many(done)
        except Exception:
            logger.exception("the executor failed to record the end of %d calls", len(done))
        for future in done:
            if future._callback_list:
                concurrent.futures.Future._invoke_callbacks(future)
    else:
        for future in done:
            future._invoke_callbacks()


def _complete_with_result(future: Future, result: Optional[bytes],
                          status: Optional[Dict[str, Any]], storage, attempt: int) -> bool:
    """Complete a successful call's future with its result: ``result``, else the one
    stored under the status's ``result_key``."""
    start = time.perf_counter()
    try:
        data = result if result is not None else storage.get(status["result_key"])
        value = pickle.loads(data)
    except StorageKeyError as exc:
        return future._complete(attempt=attempt, exception=DeserializationError(
            f"call {future.call_id}: status says done but its result is missing ({exc})"))
    except BaseException as exc:  # SystemExit from a __reduce__ must not kill the caller's thread
        error = DeserializationError(
            f"the result of call {future.call_id} could not be unpickled on this computer: "
            f"{type(exc).__name__}: {exc}")
        error.__cause__ = exc
        return future._complete(exception=error, attempt=attempt)
    future.metadata["host_result_time"] = time.perf_counter() - start
    return future._complete(result=value, attempt=attempt)
