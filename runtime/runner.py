"""The platform-agnostic job runner.

Given a task message's job and one of its calls, :class:`JobRunner` loads the function
(once per job and process) and the arguments, runs the call with its output captured,
and produces the call's outcome: a JSON-able *status* and, on success, the pickled result.

What happens to the outcome is the caller's choice. ``store=True`` (Lambda, standalone
daemon) writes the result and then the status to storage — the status last, as the commit
marker. ``store=False`` (local workers) returns both so the adapter can send them back
inline; results larger than the job's ``result_inline_limit`` are still staged in storage.

Status fields: ``job_id``, ``call_id``, ``attempt`` (echoed from the call), ``success``, ``result_key`` (None when the result is
inline), ``exception`` (``type``, ``message``, ``traceback``, ``pickled``), ``stdout``,
``stderr``, ``log_records`` (``[created, level, logger, message]`` for each record logged
during the call, wrencore's own excepted) and ``metadata``.

A caller that wants the call's output while it runs (the local worker) passes ``live``, an
object with a list attribute ``queue``: each write to stdout or stderr and each log record
is appended to ``live.queue`` as ``(stream, text)`` (``stream`` is ``"stdout"``,
``"stderr"`` or ``"log"``), from whichever thread produced it. The caller takes the output
by putting a new list in its place. Metadata keys follow the project's convention: ``host_…`` was
measured on the user's computer, ``worker_…`` on the worker; ``…_time`` is a duration in
seconds and ``…_timestamp`` a Unix timestamp.
"""

from __future__ import annotations

import _signal
import contextlib
import functools
import io
import json
import logging
import os
import pickle
import reprlib
import signal
import sys
import threading
import time
import traceback
from collections import OrderedDict
from operator import is_


from . import errors, layout
from .errors import (
    CallCancelledError,
    CallTimeoutError,
    DeserializationError,
    RuntimeMismatchError,
    SerializationError,
    StorageKeyError,
)
from .digest import check_digest
from .modules import ModuleInstaller
from .protocol import PYTHON, encode_json, version_mismatch
from .storage import Storage, storage_from_spec

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing is not imported at run time
    from typing import Any, Callable, Dict, List, Optional, Tuple

    LiveQueue = Any

try:
    import resource
except ImportError:  # not POSIX
    resource = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

#: Captured stdout/stderr beyond this many characters keep only their tail.
OUTPUT_LIMIT = 1 << 20
#: Log records kept per call (the newest).
LOG_RECORD_LIMIT = 10_000

#: Receives a running call's output in its ``queue`` list (see the module's docstring).
_write = io.StringIO.write
_getvalue = io.StringIO.getvalue


class CallOutcome:
    """A call's status, and its pickled result when it is returned inline."""

    __slots__ = ("status", "result")

    def __init__(self, status: Dict[str, Any], result: Optional[bytes] = None) -> None:
        self.status = status
        self.result = result

    def __repr__(self) -> str:
        return f"CallOutcome(status={self.status!r}, result={self.result!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CallOutcome):
            return NotImplemented
        return (self.status, self.result) == (other.status, other.result)


class _TailBuffer(io.StringIO):
    def getvalue(self) -> str:  # type: ignore[override]
        text = _getvalue(self)
        if len(text) > OUTPUT_LIMIT:
            return "[... output truncated ...]\n" + text[-OUTPUT_LIMIT:]
        return text


class _LiveBuffer(_TailBuffer):
    """A captured stream that also appends every write to a live queue (kept to an append
    and a write: a call may print in a tight loop)."""

    def __init__(self, name: str, live: LiveQueue) -> None:
        super().__init__()
        self._name = name
        self._live = live

    def write(self, text: str) -> int:
        self._live.queue.append((self._name, text))
        return _write(self, text)


def format_log_record(record: List[Any]) -> str:
    """One line (or more, with a traceback) for a ``[created, level, logger, message]`` record."""
    created, level, name, message = record
    stamp = time.strftime("%H:%M:%S", time.localtime(created)) + f".{int(created % 1 * 1000):03d}"
    return f"{stamp} {level} {name}: {message}"


class _CallLogHandler(logging.Handler):
    """Collects the log records of the call this process runs.

    Installed once per process on the root logger; between :meth:`begin` and :meth:`end`
    every record that reaches the root (from any thread) is kept, except wrencore's own.
    """

    _installed: "Optional[_CallLogHandler]" = None

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: Optional[List[List[Any]]] = None
        self.live: Optional[LiveQueue] = None

    @classmethod
    def install(cls) -> "_CallLogHandler":
        if cls._installed is None:
            handler = cls._installed = cls()
            root = logging.getLogger()
            if not root.handlers and root.level == logging.WARNING:
                # An unconfigured process: let a call's INFO records through, as a user's
                # own script with basicConfig(level=INFO) would.
                root.setLevel(logging.INFO)
            root.addHandler(handler)
        return cls._installed

    def begin(self, live: Optional[LiveQueue]) -> None:
        self.records, self.live = [], live

    def end(self) -> List[List[Any]]:
        records, self.records, self.live = self.records or [], None, None
        return records[-LOG_RECORD_LIMIT:]

    def ignores(self, levelno: int) -> bool:
        """True when a record of ``levelno`` logged now passes by (see :meth:`handle`)."""
        return self.records is None and levelno < logging.WARNING

    def handle(self, record: logging.LogRecord) -> Any:
        # Between calls only a warning may concern this handler (see emit): a worker's own
        # per-call INFO lines pass by without taking its lock.
        if self.records is None and record.levelno < logging.WARNING:
            return False
        return super().handle(record)

    def emit(self, record: logging.LogRecord) -> None:
        records = self.records
        if records is None:
            if record.levelno >= logging.WARNING and logging.lastResort is not None \
                    and logging.getLogger().handlers == [self]:
                logging.lastResort.handle(record)  # as if this handler were not there
            return
        if record.name.startswith("wrencore"):  # the core's, the runtime's and plugins' own
            return
        try:
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + logging.Formatter().formatException(record.exc_info)
        except Exception:  # a record whose arguments do not format: keep what there is
            message = str(record.msg)
        entry = [record.created, record.levelname, record.name, message]
        records.append(entry)
        if len(records) > 2 * LOG_RECORD_LIMIT:
            del records[:LOG_RECORD_LIMIT]
        live = self.live
        if live is not None:
            live.queue.append(("log", format_log_record(entry) + "\n"))


def describe_exception(exc: BaseException) -> Dict[str, Any]:
    """The transportable form of an exception: names, message, traceback, pickle if possible."""
    cls = type(exc)
    try:
        import cloudpickle  # not at the top: see wrencore_runtime.sources

        pickled: Optional[bytes] = cloudpickle.dumps(exc)
        pickle.loads(pickled)
    except Exception:
        pickled = None
    return {
        "type": f"{cls.__module__}.{cls.__qualname__}",
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(cls, exc, exc.__traceback__)),
        "pickled": pickled,
    }


#: Types pickled the same by ``pickle`` and cloudpickle (no code, no classes by value).
_PLAIN = frozenset({int, float, str, bytes, bool, type(None), complex, bytearray})
_PLAIN_CONTAINERS = frozenset({tuple, list, dict, set, frozenset})


def cancel_marker(storage: Storage, job: Dict[str, Any],
                  call: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The call's cancel marker (``{"stop_running": bool}``, see ``layout.cancel_key``), or
    None when the client has not cancelled it (or the marker cannot be read)."""
    key = layout.cancel_key(job["job_id"], call["call_id"], call.get("attempt", 0))
    try:
        marker = json.loads(storage.get(key))
    except StorageKeyError:
        return None
    except Exception as exc:  # storage unreachable: the call is not known to be cancelled
        logger.warning("could not read the cancel marker %s: %s: %s", key,
                       type(exc).__name__, exc)
        return None
    return marker if isinstance(marker, dict) else {"stop_running": True}


#: Seconds a listing of a job's cancel markers is trusted before the next.
CANCEL_CHECK_INTERVAL = 0.5


class CancelChecks:
    """Says whether a call of a job was cancelled, from one listing of the job's cancel
    markers at most every ``CANCEL_CHECK_INTERVAL`` seconds (quick calls share a listing,
    so a worker's loop stays quick and its statuses keep sharing batch writes)."""

    def __init__(self, storage: Storage, job: Dict[str, Any]):
        self.storage, self.job = storage, job
        self._markers: set = set()
        self._listed_at = -float("inf")

    def cancelled(self, call: Dict[str, Any]) -> bool:
        now = time.monotonic()
        if now - self._listed_at >= CANCEL_CHECK_INTERVAL:
            self._listed_at = now
            try:
                self._markers = set(self.storage.list(layout.cancel_prefix(self.job["job_id"])))
            except Exception as exc:  # storage unreachable: run the call
                logger.warning("could not list the job's cancel markers: %s", exc)
        markers = self._markers  # (mostly none: no key to build)
        return bool(markers) and layout.cancel_key(self.job["job_id"], call["call_id"],
                                                   call.get("attempt", 0)) in markers


def cancelled_status(job: Dict[str, Any], call: Dict[str, Any], when: str) -> Dict[str, Any]:
    """The status of a call cancelled ``when`` (e.g. "before it started")."""
    error = CallCancelledError(f"call {call['call_id']} of job {job['job_id']} was cancelled "
                               f"{when}")
    return failed_status(job, call, error, "worker_cancelled_timestamp")


def failed_status(job: Dict[str, Any], call: Dict[str, Any], error: BaseException,
                  timestamp_key: str = "worker_end_timestamp") -> Dict[str, Any]:
    """The status of a call that fails with ``error`` without running."""
    return {
        "job_id": job["job_id"], "call_id": call["call_id"],
        "attempt": call.get("attempt", 0), "success": False,
        "result_key": None, "exception": describe_exception(error), "stdout": "", "stderr": "",
        "metadata": {"host_submit_timestamp": call.get("host_submit_timestamp"),
                     timestamp_key: time.time()},
    }


def _hostname() -> str:
    """This computer's name, as ``socket.gethostname()`` gives it (on POSIX, without
    importing :mod:`socket`, which a worker otherwise never needs)."""
    uname = getattr(os, "uname", None)
    if uname is not None:
        return uname().nodename
    import socket

    return socket.gethostname()


def is_plain(value: Any, budget: int = 64) -> bool:
    """True if ``value`` is built only of plain data (small enough to check quickly).

    Such values pickle identically with the standard pickler, which is many times faster
    than creating a cloudpickle pickler for each call's arguments or result.
    """
    kind = type(value)
    if kind in _PLAIN:
        return True
    if kind not in _PLAIN_CONTAINERS or len(value) > budget:
        return False
    # Loops, not all(<generator>): this runs for every call's arguments and result.
    if kind is dict:
        for k, v in value.items():
            if type(k) not in _PLAIN or not is_plain(v, budget // 2):
                return False
        return True
    for v in value:
        if type(v) not in _PLAIN and not is_plain(v, budget // 2):
            return False
    return True


def dumps_result(value: Any) -> bytes:
    """Pickle a call's result: plain data with the standard pickler, the rest by cloudpickle."""
    if is_plain(value):
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    import cloudpickle  # not at the top: see wrencore_runtime.sources

    return cloudpickle.dumps(value)


_call_repr = reprlib.Repr()
_call_repr.maxstring = _call_repr.maxother = 60
_call_repr.maxlevel = 2
#: A call's description is left out when longer than this: then the call id must do.
CALL_REPR_LIMIT = 200


def describe_call(func: Callable, args: tuple, kwargs: Dict[str, Any]) -> Optional[str]:
    """``name(arg, key=value)`` for an error note, or None when it would not be short."""
    try:
        parts = [_call_repr.repr(a) for a in args]
        parts += [f"{k}={_call_repr.repr(v)}" for k, v in kwargs.items()]
        name = getattr(func, '__qualname__', type(func).__name__).rpartition('<locals>.')[2]
        text = f"{name}({', '.join(parts)})"
    except Exception:  # a user's __repr__ may fail; the call id still identifies the call
        return None
    return text if len(text) <= CALL_REPR_LIMIT else None


def _failure(exc: BaseException, func: Optional[Callable], args: Optional[tuple],
             kwargs: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """A failed call's ``exception`` status field."""
    if isinstance(exc, errors.InitializerError):
        # The same initializer failure for every call: no worker-side traceback noise.
        exc.__traceback__ = None
    described = describe_exception(exc)
    # Described when it fails (arguments the call changed show as changed).
    described["call"] = describe_call(func, args, kwargs or {}) \
        if func is not None and args is not None else None
    return described


def _call_streams(live: Optional[LiveQueue]) -> Tuple[io.StringIO, io.StringIO]:
    """A call's captured stdout and stderr: kept (the tail), or also sent to ``live``."""
    if live is None:
        return _TailBuffer(), _TailBuffer()
    return _LiveBuffer("stdout", live), _LiveBuffer("stderr", live)


def _dumps_call_result(value: Any, call: Dict[str, Any]) -> bytes:
    """``dumps_result(value)``, or the :class:`SerializationError` that names the call."""
    try:
        return dumps_result(value)
    except Exception as exc:
        raise SerializationError(
            f"the result of call {call['call_id']} ({type(value).__qualname__}) "
            f"could not be pickled: {type(exc).__name__}: {exc}"
        ) from exc


def _call_redirected(func: Callable, args: tuple, kwargs: Dict[str, Any],
                     stdout: io.StringIO, stderr: io.StringIO) -> Any:
    """``func(*args, **kwargs)`` with ``sys.stdout``/``sys.stderr`` redirected, as
    ``contextlib.redirect_stdout``/``redirect_stderr`` nested would, without building them."""
    saved_stdout = sys.stdout
    sys.stdout = stdout
    try:
        saved_stderr = sys.stderr
        sys.stderr = stderr
        try:
            return func(*args, **kwargs)
        finally:
            sys.stderr = saved_stderr
    finally:
        sys.stdout = saved_stdout


@contextlib.contextmanager
def _environment(extra_env: Optional[Dict[str, str]]):
    if not extra_env:
        yield
        return
    saved = {k: os.environ.get(k) for k in extra_env}
    os.environ.update({k: str(v) for k, v in extra_env.items()})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def _time_limit(seconds: Optional[float]):
    """Raise CallTimeoutError in the call after ``seconds`` (main thread, POSIX only)."""
    usable = (
        seconds
        and hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
    )
    if not usable:
        yield
        return

    def expire(signum, frame):
        raise CallTimeoutError(f"call exceeded its timeout of {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


_RLIMITS = sorted({getattr(resource, name) for name in dir(resource)
                   if name.startswith("RLIMIT_")}) if resource is not None else []
_UNCATCHABLE = {getattr(signal, name) for name in ("SIGKILL", "SIGSTOP") if hasattr(signal, name)}
# Plain signal numbers, read through the C module: ``signal.getsignal`` converts every
# number to an enum, which made saving the handlers the dearest part of a short call.
_SIGNALS = [int(s) for s in signal.valid_signals() if s not in _UNCATCHABLE]


class _LimitChanges:
    """Notes calls of ``resource.setrlimit``/``prlimit`` that set a limit.

    Reading fifteen limits costs fifteen system calls; with this, a restore compares them
    only after a call set one.
    """

    changed = False
    _installed = False

    @classmethod
    def install(cls) -> None:
        if cls._installed or resource is None:
            return
        cls._installed = True
        for name, sets_from in (("setrlimit", 0), ("prlimit", 2)):
            original = getattr(resource, name, None)
            if original is None:
                continue

            def noting(*args, _original=original, _sets_from=sets_from, **kwargs):
                if len(args) > _sets_from or kwargs:
                    cls.changed = _StateChanges.noted = True
                return _original(*args, **kwargs)

            noting.__doc__, noting.__name__ = original.__doc__, original.__name__
            setattr(resource, name, noting)
_getsignal = getattr(_signal, "getsignal", signal.getsignal)


def _noting(original: Callable, note: Callable[[], None]) -> Callable:
    """``original``, calling ``note()`` first."""
    def noting(*args, **kwargs):
        note()
        return original(*args, **kwargs)

    return functools.update_wrapper(noting, original)


class _StateChanges:
    """Notes the calls through which Python code changes process state a call must not
    leave behind: ``os.chdir``/``fchdir``, ``os.umask``, writes to and deletions from
    ``os.environ``, ``signal.signal`` (which calls ``_signal.signal``) and
    ``resource.setrlimit``/``prlimit``.

    :class:`QuickCalls` checks this flag after each call instead of comparing the state
    (a ``getcwd``, the environment and sixty signal handlers: a third of a quick call's
    cost); it compares exactly after a batch's last call, so a change made by other means
    (C code calling ``chdir(2)`` or ``umask(2)``; the environment and signal handlers that
    the comparison sees change only through these functions) is put back then.
    :meth:`ProcessState.restore` clears it.
    """

    noted = False
    _installed = False

    @classmethod
    def note(cls) -> None:
        cls.noted = True

    @classmethod
    def install(cls) -> None:
        if cls._installed:
            return
        cls._installed = True
        _LimitChanges.install()
        for module, name in ((os, "chdir"), (os, "fchdir"), (os, "umask"),
                             (_signal, "signal")):
            original = getattr(module, name, None)
            if original is not None:
                setattr(module, name, _noting(original, cls.note))
        environ_class = type(os.environ)
        for name in ("__setitem__", "__delitem__"):
            original = getattr(environ_class, name, None)
            if original is not None and environ_class is not dict:
                setattr(environ_class, name, _noting(original, cls.note))


def _environ_snapshot() -> Dict[Any, Any]:
    """A copy of the environment; of ``os.environ``'s raw (encoded) dict where it has one."""
    raw = getattr(os.environ, "_data", None)
    return dict(raw) if isinstance(raw, dict) else dict(os.environ)


def _environ_changed(saved: Dict[Any, Any]) -> bool:
    raw = getattr(os.environ, "_data", None)
    return (raw if isinstance(raw, dict) else dict(os.environ)) != saved


class ProcessState:
    """The process-wide state a call can change: working directory, environment, umask,
    resource limits and (in the main thread) Python signal handlers.

    :meth:`capture` before a call and :meth:`restore` after it put everything back that can
    be put back (resource limits are compared only when the call set one through
    :mod:`resource`, the way Python code changes them); what cannot (a hard resource limit lowered by an unprivileged process) is
    returned, so the worker can be replaced instead.
    """

    def __init__(self) -> None:
        self.cwd: Optional[str] = None
        self.environ: Dict[Any, Any] = {}
        self.umask = 0
        self.rlimits: Dict[int, Tuple[int, int]] = {}
        self.handlers: Dict[int, Any] = {}
        #: ``_getsignal`` of every signal of ``_SIGNALS``, in order, when captured in the
        #: main thread: one C-level ``map`` and a list compare check them all after a call.
        self.signal_table: Optional[List[Any]] = None
        #: The ``os.environ`` object captured (a call may replace it).
        self.environ_object: Any = None

    @classmethod
    def capture(cls) -> "ProcessState":
        state = cls()
        try:
            state.cwd = os.getcwd()
        except OSError:
            state.cwd = None
        state.environ = _environ_snapshot()
        state.umask = os.umask(0o022)
        os.umask(state.umask)
        _StateChanges.install()
        _LimitChanges.changed = False
        state.environ_object = os.environ
        for limit in _RLIMITS:
            state.rlimits[limit] = resource.getrlimit(limit)
        if threading.current_thread() is threading.main_thread():
            table = state.signal_table = list(map(_getsignal, _SIGNALS))
            state.handlers = {signum: handler for signum, handler in zip(_SIGNALS, table)
                              if handler is not None}
        _StateChanges.noted = False
        return state

    def restore(self) -> List[str]:
        """Undo changes made since :meth:`capture`; return what could not be restored."""
        failed = self._restore()
        _StateChanges.noted = False
        return failed

    def _restore(self) -> List[str]:
        failed: List[str] = []
        if self.environ_object is not None and os.environ is not self.environ_object:
            os.environ = self.environ_object  # a call replaced the mapping itself
        if self.cwd is not None:
            try:
                if os.getcwd() != self.cwd:
                    os.chdir(self.cwd)
            except OSError as exc:
                failed.append(f"working directory {self.cwd} ({exc})")
        if _environ_changed(self.environ):
            self._restore_environ()
        os.umask(self.umask)
        if not _LimitChanges.changed:
            return self._restore_handlers(failed)
        for limit, saved in self.rlimits.items():
            if resource.getrlimit(limit) != saved:
                try:
                    resource.setrlimit(limit, saved)
                except (ValueError, OSError) as exc:
                    failed.append(f"resource limit {limit} {saved} ({exc})")
        _LimitChanges.changed = False
        return self._restore_handlers(failed)

    def _restore_handlers(self, failed: List[str]) -> List[str]:
        table = self.signal_table
        if table is not None and all(map(is_, map(_getsignal, _SIGNALS), table)):
            # Every handler is the very object captured: the per-signal loop below would
            # find nothing to restore (both loops run in C here).
            return failed
        for signum, handler in self.handlers.items():
            if _getsignal(signum) is not handler:
                try:
                    signal.signal(signum, handler)
                except (ValueError, OSError, TypeError) as exc:
                    failed.append(f"signal handler {signum} ({exc})")
        return failed

    def _restore_environ(self) -> None:
        raw = getattr(os.environ, "_data", None)
        if isinstance(raw, dict):
            decode = os.environ.decodekey, os.environ.decodevalue  # type: ignore[attr-defined]
            saved = {decode[0](k): decode[1](v) for k, v in self.environ.items()}
        else:
            saved = self.environ
        for key in [k for k in os.environ if k not in saved]:
            del os.environ[key]
        for key, value in saved.items():
            if os.environ.get(key) != value:
                os.environ[key] = value


class JobRunner:
    """Runs calls; keeps the last few jobs' functions loaded.

    Each call runs between a capture and a restore of :class:`ProcessState` (captured once
    and reused while every restore succeeds and no initializer runs). When a call
    changed something that cannot be restored, :attr:`needs_replacement` says what, and a
    worker that can be replaced (a local worker) should exit after reporting the call.

    An executor's ``initializer`` travels in the function package; it runs once per runner
    (that is, per worker process or warm sandbox) before the first call that names it. If
    it fails, every call naming it fails with :class:`InitializerError`; it is not retried.
    """

    def __init__(self, worker_id: str = "", *, function_cache_size: int = 8) -> None:
        self.worker_id = worker_id or f"{_hostname()}-{os.getpid()}"
        #: job key -> (function, module bundle, bundle hash, initializer), most recently used last.
        self._functions: "OrderedDict[str, Tuple[Callable, Optional[bytes], Optional[str], Optional[bytes]]]" = \
            OrderedDict()
        self._cache_size = function_cache_size
        self._modules = ModuleInstaller()
        #: initializer id -> None (it ran) or the error message of its failure.
        self._initialized: Dict[str, Optional[str]] = {}
        #: Why this process should be replaced before its next call, or None.
        self.needs_replacement: Optional[str] = None
        self._runtimes_checked: Dict[str, Optional[str]] = {}
        #: The state every call returns to, captured once, again after an initializer runs
        #: or a restore fails; with the thread that captured it.
        self._baseline: Optional[Tuple[int, ProcessState]] = None
        self._hostname = _hostname()
        self._pid = os.getpid()
        #: job id -> (its version mismatch or None, its storage once needed), newest last.
        self._jobs: "OrderedDict[str, List[Any]]" = OrderedDict()
        self._call_logs = _CallLogHandler.install()

    def _runtime_mismatch(self, job: Dict[str, Any]) -> Optional[str]:
        """Checked once per runtime and process: does this process run the job's runtime?"""
        runtime = job.get("runtime")
        if not runtime:
            return None
        if runtime["hash"] not in self._runtimes_checked:
            from .environment import environment_mismatch  # only for jobs naming a runtime

            self._runtimes_checked[runtime["hash"]] = environment_mismatch(runtime)
        return self._runtimes_checked[runtime["hash"]]

    def _job_entry(self, job: Dict[str, Any]) -> List[Any]:
        """What is checked or built once per job: the version check, then the storage."""
        entry = self._jobs.get(job["job_id"])
        if entry is None:
            entry = self._jobs[job["job_id"]] = [version_mismatch(job), None]
            while len(self._jobs) > self._cache_size:
                self._jobs.popitem(last=False)
        return entry

    def _storage(self, job: Dict[str, Any]) -> Storage:
        entry = self._job_entry(job)
        if entry[1] is None:
            entry[1] = storage_from_spec(job["storage"])
        return entry[1]

    # -- loading ---------------------------------------------------------------------
    def _loaded_function(self, job: Dict[str, Any]) -> Optional[Callable]:
        """The job's function if it is loaded and its initializer ran; else None."""
        entry = self._functions.get(f"{job['job_id']}:{job['function_key']}")
        spec = job.get("initializer")
        if entry is None or (spec and self._initialized.get(spec["id"], "") is not None):
            return None
        self._modules.activate(entry[1], entry[2])
        return entry[0]

    def _prepare_function(self, job: Dict[str, Any], storage: Storage) -> Callable:
        """The job's function, loaded once per process, with its module bundle active."""
        key = f"{job['job_id']}:{job['function_key']}"
        entry = self._functions.get(key)
        if entry is not None:
            self._functions.move_to_end(key)
            func, modules, modules_hash, initializer = entry
            self._modules.activate(modules, modules_hash)
            self._initialize(job, initializer)
            return func
        blob = storage.get(job["function_key"])
        check_digest(blob, job.get("function_sha256"), f"the function of job {job['job_id']}")
        try:
            package = pickle.loads(blob)
            modules, modules_hash = package.get("modules"), package.get("modules_hash")
            self._modules.activate(modules, modules_hash)
            func = pickle.loads(package["function"])
        except Exception as exc:
            raise DeserializationError(
                f"could not load the function of job {job['job_id']}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        initializer = package.get("initializer")
        self._functions[key] = (func, modules, modules_hash, initializer)
        while len(self._functions) > self._cache_size:
            self._functions.popitem(last=False)
        self._initialize(job, initializer)
        return func

    def _initialize(self, job: Dict[str, Any], blob: Optional[bytes]) -> None:
        """Run the job's initializer if this process has not; raise if it ever failed."""
        spec = job.get("initializer")
        if not spec or blob is None:
            return
        init_id, name = spec["id"], spec["name"]
        if init_id in self._initialized:
            failure = self._initialized[init_id]
            if failure is not None:
                raise errors.InitializerError(failure)
            return
        try:
            initializer, initargs = pickle.loads(blob)
            initializer(*initargs)
        except BaseException as exc:
            failure = (f"the initializer {name} failed on worker {self.worker_id}: "
                       f"{type(exc).__name__}: {exc}; this worker runs none of the "
                       f"executor's calls (the initializer is not retried)")
            self._initialized[init_id] = failure
            raise errors.InitializerError(failure) from exc
        self._initialized[init_id] = None
        self._baseline = None  # the state calls return to now includes the initializer's
    @staticmethod
    def _load_args(job: Dict[str, Any], call: Dict[str, Any], storage: Storage):
        data = call.get("args")
        if data is None:
            data = storage.get(call["args_key"])
            check_digest(data, call.get("args_sha256"),
                         f"the arguments of call {call['call_id']}")
        try:
            args, kwargs = pickle.loads(data)
        except BaseException as exc:  # a SystemExit from a __reduce__ fails only this call
            raise DeserializationError(
                f"could not load the arguments of call {call['call_id']}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        return args, kwargs

    # -- running ---------------------------------------------------------------------
    def run(
        self,
        job: Dict[str, Any],
        call: Dict[str, Any],
        *,
        store: bool = True,
        storage: Optional[Storage] = None,
        live: Optional[LiveQueue] = None,
    ) -> CallOutcome:
        """Run one call and return (and, with ``store``, durably write) its outcome.

        ``live``, if given, receives the call's output in ``live.queue`` as it is
        produced (see the module's docstring).
        """
        start = time.time()
        metadata: Dict[str, Any] = {
            "host_submit_timestamp": call.get("host_submit_timestamp"),
            "worker_start_timestamp": start,
            "worker_id": self.worker_id,
            "worker_hostname": self._hostname,
            "worker_pid": self._pid,
            "worker_python": PYTHON,
        }
        status: Dict[str, Any] = {
            "job_id": job["job_id"],
            "call_id": call["call_id"],
            "attempt": call.get("attempt", 0),
            "success": False,
            "result_key": None,
            "exception": None,
            "stdout": "",
            "stderr": "",
            "metadata": metadata,
        }
        result_bytes: Optional[bytes] = None
        stdout, stderr = _call_streams(live)
        self._call_logs.begin(live)
        func = args = kwargs = None
        try:
            entry = self._job_entry(job)
            mismatch = entry[0] or self._runtime_mismatch(job)
            if mismatch:
                raise RuntimeMismatchError(
                    f"the worker's runtime does not match the client: {mismatch}"
                )
            if not storage:
                storage = entry[1] if entry[1] is not None else self._storage(job)
            func = self._loaded_function(job)
            if func is None:
                with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
                    func = self._prepare_function(job, storage)  # may run the initializer
            args, kwargs = self._load_args(job, call, storage)
            exec_start = time.time()
            metadata["worker_setup_time"] = exec_start - start
            saved = self._state_to_restore()
            try:
                extra_env, timeout = job.get("extra_env"), job.get("timeout")
                if extra_env or timeout:
                    with _environment(extra_env), _time_limit(timeout):
                        value = _call_redirected(func, args, kwargs, stdout, stderr)
                else:  # no context manager to build and enter for the common call
                    value = _call_redirected(func, args, kwargs, stdout, stderr)
            finally:
                metadata["worker_exec_time"] = time.time() - exec_start
                self._restore(saved, call)
            result_start = time.time()
            result_bytes = _dumps_call_result(value, call)
            metadata["worker_result_size"] = len(result_bytes)
            limit = job.get("result_inline_limit")
            if store or (limit is not None and len(result_bytes) > limit):
                key = layout.result_key(job["job_id"], call["call_id"], call.get("attempt", 0))
                storage.put(key, result_bytes)
                status["result_key"] = key
                result_bytes = None
            metadata["worker_result_time"] = time.time() - result_start
            status["success"] = True
        except (Exception, SystemExit) as exc:
            status["exception"] = _failure(exc, func, args, kwargs)
            result_bytes = None
        status["stdout"], status["stderr"] = stdout.getvalue(), stderr.getvalue()
        records = self._call_logs.end()
        if records:
            status["log_records"] = records
        metadata["worker_end_timestamp"] = time.time()
        if store:
            storage = storage or self._storage(job)
            storage.put(
                layout.status_key(job["job_id"], call["call_id"], call.get("attempt", 0)),
                encode_json(status).encode(),
            )
        return CallOutcome(status=status, result=result_bytes)

    def _state_to_restore(self) -> ProcessState:
        """The state before the call: the baseline, unless another thread captured it."""
        thread = threading.get_ident()
        if self._baseline is None or self._baseline[0] != thread:
            self._baseline = (thread, ProcessState.capture())
        return self._baseline[1]

    def _restore(self, saved: ProcessState, call: Dict[str, Any]) -> None:
        failed = saved.restore()
        if failed:
            self._baseline = None
            self.needs_replacement = "; ".join(failed)
            logger.warning("call %s changed process state that cannot be restored: %s",
                           call.get("call_id"), self.needs_replacement)

    # -- quick calls -----------------------------------------------------------------
    def quick_calls(self, job: Dict[str, Any],
                    live: Optional[LiveQueue] = None) -> "Optional[QuickCalls]":
        """A runner of ``job``'s calls that does once what :meth:`run` does for every call
        (see :class:`QuickCalls`), or None while its calls need :meth:`run`: a job with a
        timeout or an environment, one refused or whose function is not loaded yet (its
        first call here), or when this thread is not the one calls return to a state of."""
        if job.get("timeout") or job.get("extra_env") or self.needs_replacement:
            return None
        entry = self._jobs.get(job["job_id"])
        if entry is None or entry[0] or entry[1] is None or self._runtime_mismatch(job):
            return None
        func = self._loaded_function(job)
        if func is None:
            return None
        baseline = self._baseline
        if baseline is None or baseline[0] != threading.get_ident():
            return None
        return QuickCalls(self, job, func, entry[1], baseline, live)


#: The metadata of a plain call in :meth:`QuickCalls.run`'s short report, in order.
QUICK_KEYS = ("worker_start_timestamp", "worker_setup_time", "worker_exec_time",
              "worker_result_size", "worker_result_time", "worker_end_timestamp")
_time = time.time
_load_args = JobRunner._load_args


class QuickCalls:
    """Runs a batch of one job's calls (a local worker's frame) as :meth:`JobRunner.run`
    with ``store=False`` would, sharing what ``run`` builds per call.

    The job's entry, function and storage are looked up once; the captured streams are
    replaced only after a call wrote to them; the process state is compared exactly only
    when a call changed it through Python (see :class:`_StateChanges`) and once more in
    :meth:`finish`; and a call that succeeded with its result inline and printed and
    logged nothing is reported without a status (see :meth:`run`).
    """

    def __init__(self, runner: JobRunner, job: Dict[str, Any], func: Callable,
                 storage: Storage, baseline: Tuple[int, "ProcessState"],
                 live: Optional[LiveQueue]) -> None:
        self.runner, self.job, self.func, self.storage = runner, job, func, storage
        self.live = live
        self._baseline = baseline
        self._state = baseline[1]
        self._limit = job.get("result_inline_limit")
        self._logs = runner._call_logs
        self._new_streams()
        #: The last call run here, while the state was not compared exactly since.
        self._unchecked: Optional[Dict[str, Any]] = None
        #: The fields of a short report's values that are the same for every call.
        self.constants = {"worker_id": runner.worker_id, "worker_hostname": runner._hostname,
                          "worker_pid": runner._pid, "worker_python": PYTHON}

    def _new_streams(self) -> None:
        self._stdout, self._stderr = _call_streams(self.live)

    def run(self, call: Dict[str, Any], tag: Any) -> Tuple[Any, ...]:
        """Run ``call``; return ``(tag, status, result, None)``, or ``(tag, None, result,
        values)`` for a call that succeeded with its result inline and printed and logged
        nothing: its status's metadata is :attr:`constants` and ``zip(QUICK_KEYS, values)``
        (and the call's own ``host_submit_timestamp``)."""
        runner = self.runner
        if call.get("args") is None or runner._baseline is not self._baseline:
            outcome = runner.run(self.job, call, store=False, live=self.live)
            return (tag, outcome.status, outcome.result, None)
        start = _time()
        logs = self._logs
        logs.records, logs.live = [], self.live
        stdout, stderr = self._stdout, self._stderr
        func, state = self.func, self._state
        self._unchecked = call
        args = kwargs = failure = result_key = None
        exec_start = exec_end = None
        result = b""
        try:
            args, kwargs = _load_args(self.job, call, self.storage)
            exec_start = _time()
            try:
                value = _call_redirected(func, args, kwargs, stdout, stderr)
            finally:
                exec_end = _time()
                if _StateChanges.noted or os.environ is not state.environ_object:
                    runner._restore(state, call)
            result = _dumps_call_result(value, call)
            limit = self._limit
            if limit is not None and len(result) > limit:
                result_key = layout.result_key(self.job["job_id"], call["call_id"],
                                               call.get("attempt", 0))
                self.storage.put(result_key, result)
        except (Exception, SystemExit) as exc:
            failure = _failure(exc, func, args, kwargs)
        end = _time()
        records = logs.records
        logs.records = logs.live = None
        if failure is None and result_key is None and not records \
                and not stdout.tell() and not stderr.tell():
            return (tag, None, result, (start, exec_start - start, exec_end - exec_start,
                                        len(result), end - exec_end, end))
        metadata: Dict[str, Any] = {"host_submit_timestamp": call.get("host_submit_timestamp"),
                                    "worker_start_timestamp": start, **self.constants}
        if exec_start is not None:
            metadata["worker_setup_time"] = exec_start - start
            metadata["worker_exec_time"] = exec_end - exec_start
        if failure is None:
            metadata["worker_result_size"] = len(result)
            metadata["worker_result_time"] = end - exec_end
        status: Dict[str, Any] = {
            "job_id": self.job["job_id"], "call_id": call["call_id"],
            "attempt": call.get("attempt", 0), "success": failure is None,
            "result_key": result_key, "exception": failure,
            "stdout": stdout.getvalue(), "stderr": stderr.getvalue(), "metadata": metadata,
        }
        if stdout.tell() or stderr.tell():
            self._new_streams()
        if records:
            status["log_records"] = records[-LOG_RECORD_LIMIT:]
        metadata["worker_end_timestamp"] = _time()
        return (tag, status, None if failure or result_key else result, None)

    def finish(self) -> None:
        """Compare the process state exactly after the batch's last call (and put back
        what a call changed other than through the functions :class:`_StateChanges`
        watches)."""
        call, self._unchecked = self._unchecked, None
        if call is not None and self.runner._baseline is self._baseline:
            self.runner._restore(self._state, call)
