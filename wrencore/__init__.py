"""wrencore: run Python functions at scale on any backend, through plugins.

    >>> import wrencore
    >>> futures = wrencore.map(pow2, range(10))            # local processes by default
    >>> wrencore.get_all_results(futures)

The API follows :mod:`concurrent.futures`: :class:`Future` is a stdlib future, and
:class:`Executor` is a stdlib executor. ``from wrencore import hookimpl`` is all a plugin
author needs.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import logging
import os
import threading
import time
import warnings
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION
from typing import (
    TYPE_CHECKING, Any, Callable, Collection, Dict, Iterable, Iterator, List, Mapping, Optional,
    Tuple, TypeVar, Union, overload,
)

import pluggy

from .errors import (
    CallCancelledError,
    CallTimeoutError,
    ConfigError,
    DeserializationError,
    ExecutorShutdownError,
    InitializerError,
    IntegrityError,
    MessageRefusedError,
    MissingDependencyError,
    QueueError,
    RemoteError,
    RuntimeBuildError,
    RuntimeMismatchError,
    SerializationError,
    StatusError,
    StorageError,
    UnknownNameError,
    WorkerCrashedError,
    WrenError,
)
from .executor import Executor, cancel_on_interrupt, job_ids_of
from . import progress as _progress
from .futures import _DONE_STATES, _FINISHED, Future
from .streaming import FutureStream

if TYPE_CHECKING:
    from concurrent.futures._base import DoneAndNotDoneFutures

__version__ = "0.1.0"

_T = TypeVar("_T")

#: Marker for hook implementations: ``@wrencore.hookimpl``.
#:
#: A plugin package registers its module under the ``wrencore`` entry-point group::
#:
#:     [project.entry-points.wrencore]
#:     my_plugin = "my_package.plugin"
hookimpl = pluggy.HookimplMarker("wrencore")

__all__ = [
    "ALL_COMPLETED", "FIRST_COMPLETED", "FIRST_EXCEPTION",
    "Executor", "Future", "hookimpl",
    "map", "call_async", "map_reduce", "wait", "as_completed", "get_all_results",
    "shutdown_default_executors",
    "WrenError", "CallCancelledError", "CallTimeoutError", "ConfigError",
    "DeserializationError", "ExecutorShutdownError", "InitializerError", "IntegrityError",
    "MessageRefusedError", "MissingDependencyError", "QueueError",
    "RemoteError", "RuntimeBuildError", "RuntimeMismatchError", "SerializationError",
    "StatusError", "StorageError",
    "UnknownNameError", "WorkerCrashedError",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())
logging.getLogger("wrencore_runtime").addHandler(logging.NullHandler())


def _console_logging_from_env() -> None:
    name = os.environ.get("WRENCORE_LOGLEVEL", "").strip()
    if not name:
        return
    level = int(name) if name.isdigit() else logging.getLevelName(name.upper())
    if not isinstance(level, int):
        warnings.warn(
            f"WRENCORE_LOGLEVEL={name!r} is not a logging level; use one of debug, info, "
            f"warning, error, critical (or a number). Console logging stays off.",
            RuntimeWarning, stacklevel=2)
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("wrencore", "wrencore_runtime"):
        log = logging.getLogger(name)
        log.addHandler(handler)
        log.setLevel(level)


_console_logging_from_env()

_default_lock = threading.Lock()
_default_executors: Dict[Tuple[Optional[str], Optional[str]], Executor] = {}


def _default_executor(backend: Optional[str], storage: Optional[str]) -> Executor:
    key = (backend, storage)
    with _default_lock:
        executor = _default_executors.get(key)
        if executor is None or executor._shutdown:
            executor = Executor(backend=backend, storage=storage)
            _default_executors[key] = executor
        return executor


@atexit.register
def shutdown_default_executors() -> None:
    """Shut down the executors that module-level ``map``/``call_async`` created."""
    with _default_lock:
        executors = list(_default_executors.values())
        _default_executors.clear()
    for executor in executors:
        executor.shutdown(wait=False, cancel_futures=True)


@overload
def map(f: Callable[..., _T], iterdata: Collection[Any], *, backend: Optional[str] = None,
        storage: Optional[str] = None, chunksize: Optional[int] = None,
        timeout: Optional[float] = None,
        extra_env: Optional[Mapping[str, str]] = None, retries: Optional[int] = None,
        retry_on: Any = None, speculation: Optional[bool] = None,
        max_pending: Optional[int] = None, cleanup: Optional[bool] = None) -> List[Future[_T]]: ...


@overload
def map(f: Callable[..., _T], iterdata: Iterable[Any], *, backend: Optional[str] = None,
        storage: Optional[str] = None, chunksize: Optional[int] = None,
        timeout: Optional[float] = None,
        extra_env: Optional[Mapping[str, str]] = None, retries: Optional[int] = None,
        retry_on: Any = None, speculation: Optional[bool] = None,
        max_pending: Optional[int] = None, cleanup: Optional[bool] = None) -> FutureStream[_T]: ...


def map(f: Callable[..., _T], iterdata: Iterable[Any], *, backend: Optional[str] = None,
        storage: Optional[str] = None, chunksize: Optional[int] = None,
        timeout: Optional[float] = None,
        extra_env: Optional[Mapping[str, str]] = None, retries: Optional[int] = None,
        retry_on: Any = None, speculation: Optional[bool] = None,
        max_pending: Optional[int] = None, cleanup: Optional[bool] = None
        ) -> Union[List[Future[_T]], FutureStream[_T]]:
    """Call ``f(x)`` for each ``x`` in ``iterdata`` on a backend.

    Args:
        f: the function to run; it must be picklable by cloudpickle.
        iterdata: the arguments, one call per element.
        backend: backend name (default: configured, else ``"local"``).
        storage: storage name (default: configured, else the backend's own).
        chunksize: calls per invocation (None: the backend decides).
        timeout: per-call time limit in seconds; a call over it fails with
            :class:`CallTimeoutError`.
        extra_env: environment variables set on the worker around each call.
        retries: how many more attempts a failed call gets (default: config ``retries``,
            else 0); only infrastructure failures unless ``retry_on`` names more.
        retry_on: the user's exceptions to retry too: an exception class, a tuple of
            them, True (any) or a predicate ``retry_on(exc) -> bool``.
        speculation: give straggling calls a backup attempt (default: config
            ``speculation``, else off). See :mod:`wrencore.attempts`.
        max_pending: for an ``iterdata`` of unknown length, the most calls unfinished or
            not yet taken from the returned stream (None: config ``max_pending``).
        cleanup: delete what the job stored (its function, large arguments and results)
            once every call has finished and its result has been read into its future
            (None: config ``cleanup``, else True). Its ``timeline.json`` is not written.

    Returns:
        One :class:`Future` per element, in input order: a list when ``iterdata`` is sized,
        else a :class:`~wrencore.streaming.FutureStream` that reads ``iterdata`` lazily
        (see :meth:`Executor.map_futures`).

    Raises:
        TypeError: ``iterdata`` is not iterable.
        SerializationError: ``f`` or an argument cannot be pickled.
        UnknownNameError, MissingDependencyError: the backend or storage cannot be used.
    """
    executor = _default_executor(backend, storage)
    return executor.map_futures(f, iterdata, chunksize=chunksize, timeout=timeout,
                                extra_env=extra_env, retries=retries, retry_on=retry_on,
                                speculation=speculation, max_pending=max_pending,
                                cleanup=executor.cleanup_maps if cleanup is None else cleanup)


def call_async(f: Callable[..., _T], *args: Any, backend: Optional[str] = None,
               storage: Optional[str] = None, **kwargs: Any) -> Future[_T]:
    """Run ``f(*args, **kwargs)`` on a backend; return its :class:`Future`."""
    return _default_executor(backend, storage).submit(f, *args, **kwargs)


def map_reduce(map_f: Callable[..., Any], iterdata: Iterable[Any], reduce_f: Callable[..., _T], *,
               backend: Optional[str] = None, storage: Optional[str] = None,
               chunksize: Optional[int] = None, timeout: Optional[float] = None,
               extra_env: Optional[Mapping[str, str]] = None) -> Future[_T]:
    """Map ``map_f`` over ``iterdata``, then run ``reduce_f(results)`` as one more call.

    Returns:
        The :class:`Future` of the reduce call. If a map call fails, it fails with that
        call's exception and ``reduce_f`` does not run.
    """
    executor = _default_executor(backend, storage)
    map_futures = list(executor.map_futures(map_f, iterdata, chunksize=chunksize,
                                            timeout=timeout, extra_env=extra_env))
    reduce_future: Future[_T] = Future(call_id="reduce")
    remaining = [len(map_futures)]
    lock = threading.Lock()

    def start_reduce() -> None:
        try:
            results = [f.result() for f in map_futures]
            inner = executor.submit(reduce_f, results)
        except BaseException as exc:
            reduce_future.fail(exc)
            return

        def relay(done: concurrent.futures.Future) -> None:
            reduce_future.metadata.update(getattr(done, "metadata", {}))
            reduce_future.stdout, reduce_future.stderr = done.stdout, done.stderr
            reduce_future.job_id = done.job_id
            if done.cancelled():
                reduce_future.cancel()
            elif done.exception() is not None:
                reduce_future._complete(exception=done.exception())
            else:
                reduce_future._complete(result=done.result())

        inner.add_done_callback(relay)

    def on_map_done(_: concurrent.futures.Future) -> None:
        with lock:
            remaining[0] -= 1
            last = remaining[0] == 0
        if last:
            start_reduce()

    if not map_futures:
        start_reduce()
    for future in map_futures:
        future.add_done_callback(on_map_done)
    return reduce_future


def wait(fs: Iterable[concurrent.futures.Future[_T]], timeout: Optional[float] = None,
         return_when: str = ALL_COMPLETED, *, progress: Optional[bool] = None
         ) -> "DoneAndNotDoneFutures[_T]":
    """Wait for futures; same contract as :func:`concurrent.futures.wait`.

    Args:
        progress: show a progress bar while waiting (None: config ``progress``, else only
            when a person watches a terminal or notebook).

    Returns:
        ``(done, not_done)`` sets, as a named tuple.
    """
    fs = list(fs)
    with cancel_on_interrupt(job_ids_of(fs)), _progress.bar_for(fs, progress):
        return concurrent.futures.wait(fs, timeout=timeout, return_when=return_when)


def as_completed(fs: Iterable[concurrent.futures.Future[_T]], timeout: Optional[float] = None,
                 *, progress: Optional[bool] = None
                 ) -> Iterator[concurrent.futures.Future[_T]]:
    """Yield futures as they complete; same contract as :func:`concurrent.futures.as_completed`.

    Args:
        progress: show a progress bar while iterating (None: config ``progress``, else
            only when a person watches a terminal or notebook).
    """
    fs = list(fs)
    job_ids = job_ids_of(fs)
    completed = concurrent.futures.as_completed(fs, timeout=timeout)
    bar = _progress.start(fs, progress)
    del fs

    def yielding() -> Iterator[concurrent.futures.Future[_T]]:
        try:
            while True:
                with cancel_on_interrupt(job_ids):
                    try:
                        future = next(completed)
                    except StopIteration:
                        return
                yield future
        finally:
            if bar is not None:
                bar.close()

    return yielding()


def get_all_results(fs: Iterable[concurrent.futures.Future[_T]], timeout: Optional[float] = None,
                    *, progress: Optional[bool] = None) -> List[_T]:
    """Results of ``fs`` in order; re-raises the first failed call's exception.

    Args:
        timeout: seconds to wait for all of them (None: no limit).
        progress: show a progress bar while waiting (None: config ``progress``, else only
            when a person watches a terminal or notebook).

    Raises:
        TimeoutError: not all finished within ``timeout``.
    """
    futures = list(fs)
    with cancel_on_interrupt(job_ids_of(futures)), _progress.bar_for(futures, progress):
        unfinished = _wait_in_order(futures, timeout)
    if unfinished:
        raise TimeoutError(f"{unfinished} of {len(futures)} calls unfinished after {timeout} s")
    # A finished call's result is taken without locking (it is never unset once finished).
    return [f._result if f._state == _FINISHED and f._exception is None  # type: ignore[attr-defined]
            else f.result() for f in futures]


def _wait_in_order(futures: List[concurrent.futures.Future[Any]],
                   timeout: Optional[float]) -> int:
    """Wait until every future is done, or ``timeout`` seconds: how many are not done.

    One future at a time, in order, not ``concurrent.futures.wait``: that installs a waiter
    on every future, which is then told of each completion, and for a job of small calls
    that doubled the client's CPU per call. The calls still finish in any order; one found
    done costs a read of its state.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    for index, future in enumerate(futures):
        if future._state in _DONE_STATES:  # type: ignore[attr-defined]
            continue
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            future.exception(remaining)
        except concurrent.futures.CancelledError:
            continue
        except concurrent.futures.TimeoutError:
            return sum(1 for f in futures[index:] if not f.done())
    return 0
