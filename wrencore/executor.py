"""The Executor: a :class:`concurrent.futures.Executor` over any backend."""

from __future__ import annotations

import concurrent.futures
import concurrent.futures.thread  # noqa: F401  (its exit hook must be registered before ours)
import contextlib
import functools
import hashlib
import itertools
import logging
import os
import sys
import threading
import time
import types
import uuid
import weakref
from collections import OrderedDict
from typing import (
    Any, Callable, Collection, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Set,
    Tuple, TypeVar, Union, overload,
)

from wrencore_runtime import layout
from wrencore_runtime.auth import KIND_JOB, sha256_hex
from wrencore_runtime.protocol import PYTHON, SERIALIZER, encode_json

from . import progress as _progress
from . import serialize
from .attempts import Attempts, RetryOn, RetryPolicy, SpeculationPolicy, speculation_policy
from .backends import Backend, Call
from .config import DEFAULT_BACKEND, Config, Section
from .errors import ConfigError, ExecutorShutdownError
from .futures import Future, add_done_callback_to_new
from .futures import cancel as cancel_future
from .plugins import get_plugin_manager, get_registry
from .streaming import MAX_PENDING, FutureStream
from .summary import CallRecord, JobRecords, JobSummary, summarize

_FINISHED = concurrent.futures._base.FINISHED

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

_job_counter = itertools.count()

#: How many functions ``submit`` keeps a job for (weakly: the functions stay collectable).
SUBMIT_JOB_CACHE = 64
#: Most call records an executor keeps for summaries and plots (the oldest jobs' go first).
RECORDS_KEPT = 1_000_000


class _JobEnd:
    """What happens when a job has ended (no more calls will start and all finished):
    its one-line summary (if asked), its ``timeline.json``, and, for jobs of the
    module-level ``map``, deleting its data. Holds no executor."""

    def __init__(self, storage: Any, print_summary: bool) -> None:
        self.storage = storage
        self.print_summary = print_summary
        self.cleanup: Set[str] = set()
        self._threads: List[threading.Thread] = []
        self._lock = threading.Lock()

    def __call__(self, job_id: str, records: Optional[JobRecords]) -> None:
        if self.print_summary:
            calls = records.records() if records is not None else []
            print(summarize(calls, jobs=[job_id]).line(), file=sys.stderr, flush=True)
        with self._lock:
            clean = job_id in self.cleanup
            self.cleanup.discard(job_id)
            self._threads = [t for t in self._threads if t.is_alive()]
            # Storage requests stay off the backend's threads, which complete futures.
            thread: Optional[threading.Thread] = threading.Thread(
                target=self._store, args=(job_id, records, clean), daemon=True,
                name="wrencore-job-end")
            try:
                thread.start()
            except RuntimeError:  # no new threads at interpreter exit: store it here
                thread = None
            else:
                self._threads.append(thread)
        if thread is None:
            self._store(job_id, records, clean)

    def _store(self, job_id: str, records: Optional[JobRecords], clean: bool) -> None:
        try:
            if clean:
                self.storage.delete_prefix(layout.job_prefix(job_id))
            elif records:
                self.storage.put(layout.timeline_key(job_id), records.timeline_json())
        except Exception as exc:
            logger.warning("could not %s job %s in storage: %s: %s",
                           "delete" if clean else "write the timeline of", job_id,
                           type(exc).__name__, exc)

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))


class _Lifecycle:
    """What outlives an executor object: its backend and its unfinished futures.

    Kept apart from the executor so a dropped executor can be collected (its finalizer
    releases the backend once the pending calls end) and so the interpreter-exit hook can
    wait for every executor's calls, as ``concurrent.futures`` does.
    """

    def __init__(self, backend: Backend, job_end: Optional[_JobEnd] = None):
        self.backend = backend
        self.job_end = job_end
        self.pid = os.getpid()
        self.pending: Set[Future] = set()
        #: Per job: calls unfinished; jobs that will start no more calls; finished calls.
        self.job_pending: Dict[str, int] = {}
        self.closed_jobs: Set[str] = set()
        self.records: "OrderedDict[str, JobRecords]" = OrderedDict()
        self._record_count = 0
        self.closed = False
        self.released = False
        self._release_done = threading.Event()
        self._lock = threading.Lock()

    def track(self, futures: List[Future]) -> None:
        """Follow ``futures`` (all of one job, just created) until they finish."""
        with self._lock:
            self.pending.update(futures)
            if futures:
                job_id = futures[0].job_id
                self.job_pending[job_id] = self.job_pending.get(job_id, 0) + len(futures)
        for future in futures:
            future._tracker = self  # told when each is done (see Future._tracker)

    def close_job(self, job_id: str) -> None:
        """No more calls of ``job_id`` will start: it ends when its last call finishes."""
        with self._lock:
            if job_id in self.closed_jobs:
                return
            self.closed_jobs.add(job_id)
            ended = not self.job_pending.get(job_id)
        if ended:
            self._job_ended(job_id)

    def _job_ended(self, job_id: str) -> None:
        with self._lock:
            self.job_pending.pop(job_id, None)
            job_records = self.records.get(job_id)
        if self.job_end is not None:
            self.job_end(job_id, job_records)

    def finished(self, future: Future) -> None:
        """A tracked future is done (see ``Future._tracker``)."""
        self.finished_many((future,))

    def finished_many(self, futures: Sequence[Future]) -> None:
        """Tracked futures are done: recorded under one acquisition of the lock."""
        ended: List[str] = []
        with self._lock:
            records, pending, job_pending = self.records, self.pending, self.job_pending
            job_id, job_records = None, None
            for future in futures:
                pending.discard(future)
                if future.job_id != job_id:
                    job_id = future.job_id
                    job_records = records.get(job_id)
                    if job_records is None:
                        job_records = records[job_id] = JobRecords(job_id)
                job_records.add(future)  # type: ignore[union-attr]
                left = job_pending.get(job_id, 1) - 1
                job_pending[job_id] = left
                if left <= 0 and job_id in self.closed_jobs and job_id not in ended:
                    ended.append(job_id)
            self._record_count += len(futures)
            while self._record_count > RECORDS_KEPT and len(records) > 1:
                self._record_count -= len(records.popitem(last=False)[1])
            drained = self.closed and not pending
        for job_id in ended:
            self._job_ended(job_id)
        if drained:
            # Done callbacks run on the backend's own threads, which a shutdown joins.
            threading.Thread(target=self.release, kwargs={"wait": True}, daemon=True,
                             name="wrencore-release").start()

    def snapshot(self) -> List[Future]:
        with self._lock:
            return list(self.pending)

    def close(self, *, wait: bool, cancel_futures: bool) -> None:
        """Stop taking calls; release the backend now (``wait``) or once the calls end."""
        with self._lock:
            self.closed = True
            open_jobs = [j for j in self.job_pending if j not in self.closed_jobs]
        if cancel_futures:
            for future in self.snapshot():
                cancel_future(future)
        for job_id in open_jobs:  # submit jobs stay open until now
            self.close_job(job_id)
        if wait:
            concurrent.futures.wait(self.snapshot())
            if self.job_end is not None:
                self.job_end.join(timeout=10)
            self.release(wait=True)
        else:
            with self._lock:
                drained = not self.pending
            if drained:
                self.release(wait=False)

    def abort(self) -> None:
        """Cancel what has not started and stop the backend without waiting (Ctrl-C at exit)."""
        with self._lock:
            self.closed = True
        for future in self.snapshot():
            cancel_future(future)
        self.release(wait=False)
        for future in self.snapshot():
            future.fail(ExecutorShutdownError(
                "the interpreter was interrupted while waiting for this call at exit"))

    def release(self, wait: bool) -> None:
        """Shut the backend down once; with ``wait``, also wait for a release in progress.

        Never in a forked child: its copy of the backend names the parent's workers.
        """
        if os.getpid() != self.pid:
            return
        with self._lock:
            first = not self.released
            self.released = True
        if not first:
            if wait:
                self._release_done.wait()
            return
        _live.discard(self)
        try:
            self.backend.shutdown(wait=wait)
        except Exception:
            logger.exception("shutting down the %s backend failed", type(self.backend).__name__)
        finally:
            self._release_done.set()


#: Lifecycles of executors that are open or still have unfinished calls.
_live: "Set[_Lifecycle]" = set()
_interpreter_exiting = False


def _wait_at_exit() -> None:
    """Like ``concurrent.futures``: at interpreter exit, wait for every executor's calls.

    Runs before ``atexit`` handlers (so a ``submit`` from one raises ``RuntimeError``).
    Ctrl-C during the wait cancels the calls not started and stops the workers.
    """
    global _interpreter_exiting
    _interpreter_exiting = True
    lifecycles = list(_live)
    try:
        for lifecycle in lifecycles:
            lifecycle.close(wait=True, cancel_futures=False)
    except KeyboardInterrupt:
        print("wrencore: interrupted while waiting for calls at exit; cancelling them",
              file=sys.stderr)
        for lifecycle in lifecycles:
            lifecycle.abort()


# Exit hooks run in reverse order of registration: ours runs before the stdlib thread pools
# stop taking work, which the backends' invoke and status-fetch pools still need.
threading._register_atexit(_wait_at_exit)  # type: ignore[attr-defined]
# A forked child (a fork-context ProcessPoolExecutor or multiprocessing.Pool worker) runs
# the exit hooks when it ends; the executors it inherited are its parent's to release.
os.register_at_fork(after_in_child=_live.clear)


def job_ids_of(futures: Iterable[concurrent.futures.Future]) -> Set[str]:
    return {getattr(f, "job_id", "") for f in futures} - {""}


def cancel_jobs(job_ids: Set[str]) -> int:
    """Cancel every unfinished call of these jobs, running ones too where their backend
    can; return how many were cancelled."""
    cancelled = 0
    for lifecycle in list(_live):
        mine = [f for f in lifecycle.snapshot() if f.job_id in job_ids and not f.done()]
        if not mine:
            continue
        try:
            cancelled += lifecycle.backend.cancel(futures=mine, running=True)
        except Exception:
            logger.exception("cancelling %d calls on the %s backend failed", len(mine),
                             type(lifecycle.backend).__name__)
    return cancelled


@contextlib.contextmanager
def cancel_on_interrupt(job_ids: Set[str]) -> Iterator[None]:
    """On Ctrl-C in the block: cancel the rest of these jobs, say so in one line on
    stderr, and re-raise the KeyboardInterrupt."""
    try:
        yield
    except KeyboardInterrupt:
        count = cancel_jobs(job_ids)
        print(f"wrencore: interrupted; cancelled {count} call{'' if count == 1 else 's'}",
              file=sys.stderr, flush=True)
        raise


def _result_or_cancel(future: Future, timeout: Optional[float]) -> Any:
    """``future.result(timeout)``; the call is cancelled if that raises (a timeout, a
    Ctrl-C). A finished call's result is taken without locking (it is never unset)."""
    if future._state == _FINISHED and future._exception is None:
        return future._result
    try:
        return future.result(timeout)
    except BaseException:
        cancel_future(future)
        raise


def _call_logs(hook: Any, backend: str, config: Config, job_id: str,
               call_id: str) -> Optional[List[str]]:
    """The backend's log lines of a call (``wrencore_call_logs``); None if it keeps none."""
    return hook.wrencore_call_logs(backend=backend, config=config, job_id=job_id,
                                   call_id=call_id)


def _function_id(fn: Callable) -> Optional[Tuple[int, Any]]:
    """A cache key for jobs of ``fn`` that holds it weakly, or None if it cannot be cached.

    Only plain and built-in functions: a bound method or callable object carries state that
    must be pickled afresh at each submit, as the stdlib does.
    """
    if not isinstance(fn, (types.FunctionType, types.BuiltinFunctionType)):
        return None
    try:
        return id(fn), weakref.ref(fn)
    except TypeError:
        return None


def _pickled_initializer(initializer: Optional[Callable], initargs: tuple) -> Optional[Dict[str, Any]]:
    if initializer is None:
        return None
    if not callable(initializer):
        raise TypeError(f"initializer must be callable, not {type(initializer).__name__}")
    name = getattr(initializer, "__qualname__", repr(initializer))
    with serialize.local_modules_by_value():
        try:
            blob = serialize.dumps_initializer(initializer, tuple(initargs))
        except Exception as exc:
            raise serialize.SerializationError(
                f"cannot pickle the initializer {name!r} or its initargs: "
                f"{type(exc).__name__}: {exc}") from exc
    return {"name": name, "id": hashlib.sha256(blob).hexdigest()[:32], "blob": blob}


def new_job_id() -> str:
    return f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}-{next(_job_counter)}"


def _setting(name: str, value: Any, origin: str) -> Section:
    return Section("", {name: value}, {name: origin})


def _check_timeout(timeout: Any, section: Optional[Section] = None) -> Optional[float]:
    """A per-call limit in seconds (positive) or None; ConfigError names where it came from."""
    section = section if section is not None else _setting("timeout", timeout, "the timeout argument")
    value = section.float("timeout")
    if value is not None and value <= 0:
        raise ConfigError(f"config {section.describe('timeout', section['timeout'])} must be "
                          f"a positive number of seconds, or None for no limit")
    return value


def _check_chunksize(chunksize: Any, section: Optional[Section] = None) -> Optional[int]:
    """Calls per invocation (at least 1) or None; ConfigError names where it came from."""
    section = section if section is not None else \
        _setting("chunksize", chunksize, "the chunksize argument")
    return section.int("chunksize", minimum=1)


def _check_retries(retries: Any, section: Optional[Section] = None) -> int:
    """Attempts after a call's first (at least 0); ConfigError names where it came from."""
    section = section if section is not None else \
        _setting("retries", retries, "the retries argument")
    return section.int("retries", 0, minimum=0)


def _reinvoker(backend: Backend, pm: Any, backend_name: str):
    """``invoke(job, calls, chunksize)`` for attempts after the first (holds no executor)."""
    def invoke(job: Dict[str, Any], calls: List[Call], chunksize: Optional[int]) -> None:
        pm.hook.wrencore_before_invoke(backend=backend_name, job=job,
                                       call_ids=[c.call_id for c in calls])
        backend.invoke(job, calls, chunksize)
    return invoke


def _prepare_backend(registry: Any, overrides: Mapping[str, Any]) -> None:
    """Call the chosen backend's ``prepare`` before the config is checked: checking loads
    every plugin's settings, and what ``prepare`` starts (the local fork server) is what a
    new executor's first result waits for. Any error is left to the checked config and the
    constructor to report."""
    try:
        config = Config.unchecked(overrides)
        name = str(config.get("backend") or DEFAULT_BACKEND)
        registry.load("backend", name).prepare(config)
    except Exception:
        logger.debug("preparing the backend failed", exc_info=True)


def _check_max_pending(max_pending: Any, section: Optional[Section] = None) -> int:
    """Calls a streamed map keeps in flight (at least 1); ConfigError names where it came from."""
    section = section if section is not None else \
        _setting("max_pending", max_pending, "the max_pending argument")
    return section.int("max_pending", MAX_PENDING, minimum=1)


def _is_sized(iterable: Any) -> bool:
    """Whether ``iterable`` knows its length (a list, tuple, range …), so it can be listed."""
    try:
        len(iterable)
    except TypeError:
        return False
    return True


def _attempt_stopper(backend: Backend):
    """``stop(future, attempts)`` for attempts that lost (holds no executor)."""
    def stop(future: Future, attempts: List[int]) -> None:
        backend.stop_attempts(future=future, attempts=attempts)
    return stop


class Executor(concurrent.futures.Executor):
    """Runs calls on a backend chosen by name; a drop-in for ``ProcessPoolExecutor``.

    Args:
        backend: backend name (default: config ``backend``, else ``"local"``).
        storage: storage name (default: config ``storage``, else the backend's default).
        config: overrides of the configuration (same shape as the TOML file).
        max_workers: worker processes (local backend; as ``ProcessPoolExecutor``).
        mp_context: a :mod:`multiprocessing` context; local workers are always fresh
            interpreters, so only ``None`` or a ``"spawn"`` context is accepted.
        initializer: called as ``initializer(*initargs)`` once in each worker process
            (each warm sandbox on Lambda) before its first call of this executor.
        initargs: arguments of ``initializer``.
        max_tasks_per_child: calls a local worker runs before it is replaced.
        chunksize: calls per invocation (None: the backend decides).
        timeout: per-call time limit in seconds (None: no limit).
        max_pending: most calls a ``map`` over an iterator of unknown length keeps
            unfinished or untaken at once (config ``max_pending``, default 10,000).
        extra_env: environment variables set around each call on the worker.
        runtime: the workers' environment (see ``wrencore.environment``): ``"auto"``
            (detected from the function's imports), ``"explicit"`` (``requirements`` only),
            ``"isolated"`` (auto; local workers run in it too), ``"none"`` (the backend's
            own environment), or a stored runtime's ``"sha256:…"``. Default: the config's
            ``runtime``, else the backend's (auto on the cloud, none locally).
        requirements: requirement strings, or the path of a requirements file or
            pyproject.toml, added to the detected set.
        retries: how many more attempts a failed call gets (default: config ``retries``,
            else 0). Only infrastructure failures are retried unless ``retry_on`` says
            otherwise (see :mod:`wrencore.attempts`).
        retry_on: the user's exceptions to retry too: an exception class, a tuple of
            them, True (any) or a predicate ``retry_on(exc) -> bool``.
        speculation: start a backup attempt of straggling calls: True, False, or a
            :class:`wrencore.attempts.SpeculationPolicy` (default: config ``speculation``).
        progress: show a progress bar while :meth:`map`'s results are awaited (default:
            config ``progress``, else only when a person watches a terminal or notebook).
        live_output: echo each call's output and log records to this console as they
            happen, each line prefixed with the call id (local backend; default: config
            ``live_output``, else off). ``Future.logs()`` has them either way.
        summary: print a one-line :class:`~wrencore.summary.JobSummary` to stderr when
            each job ends (default: config ``summary``, else off).

    Raises:
        UnknownNameError: no backend or storage has that name.
        MissingDependencyError: the backend's SDK is not installed.
        ValueError: ``max_workers`` or ``max_tasks_per_child`` is not positive, or the
            backend cannot honour one of the ``ProcessPoolExecutor`` arguments given.
    """

    def __init__(self, backend: Optional[str] = None, storage: Optional[str] = None,
                 config: Optional[Mapping[str, Any]] = None, *,
                 max_workers: Optional[int] = None, mp_context: Any = None,
                 initializer: Optional[Callable] = None, initargs: tuple = (),
                 max_tasks_per_child: Optional[int] = None, chunksize: Optional[int] = None,
                 timeout: Optional[float] = None, extra_env: Optional[Mapping[str, str]] = None,
                 runtime: Optional[str] = None, requirements: Any = None,
                 retries: Optional[int] = None, retry_on: RetryOn = None,
                 speculation: Any = None, max_pending: Optional[int] = None,
                 progress: Optional[bool] = None, live_output: Optional[bool] = None,
                 summary: Optional[bool] = None):
        if max_workers is not None and max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        if max_tasks_per_child is not None and (
                not isinstance(max_tasks_per_child, int) or max_tasks_per_child < 1):
            raise ValueError("max_tasks_per_child must be >= 1")
        overrides: Dict[str, Any] = dict(config or {})
        if backend is not None:
            overrides["backend"] = backend
        if storage is not None:
            overrides["storage"] = storage
        registry = get_registry()
        _prepare_backend(registry, overrides)
        self.config = Config(overrides)
        self.backend_name = str(self.config.get("backend") or DEFAULT_BACKEND)
        backend_cls = registry.load("backend", self.backend_name)
        self.storage_name = str(self.config.get("storage") or backend_cls.default_storage)
        storage_factory = registry.load("storage", self.storage_name)
        self.storage = storage_factory(self.config.section(self.storage_name))
        self.backend: Backend = backend_cls(self.config, self.storage)
        self.backend.apply_pool_options(max_workers=max_workers, mp_context=mp_context,
                                        max_tasks_per_child=max_tasks_per_child)
        self._initializer = _pickled_initializer(initializer, initargs)
        top = self.config.top()
        self.chunksize = _check_chunksize(chunksize) if chunksize is not None else \
            _check_chunksize(None, top)
        self.timeout = _check_timeout(timeout) if timeout is not None else \
            _check_timeout(None, top)
        self.max_pending = _check_max_pending(max_pending) if max_pending is not None else \
            _check_max_pending(None, top)
        self.extra_env = dict(extra_env or {})
        self.retry_policy = RetryPolicy(
            retries=_check_retries(retries) if retries is not None else _check_retries(None, top),
            retry_on=retry_on)
        self.speculation = speculation_policy(speculation, top)
        self._settings = top
        self.progress = progress
        _progress.enabled(None, top)  # a bad config value fails here, not at the first wait
        self.live_output = bool(live_output if live_output is not None else
                                top.bool("live_output", False))
        print_summary = bool(summary if summary is not None else top.bool("summary", False))
        self.cleanup_maps = bool(top.bool("cleanup", True))
        self.runtime = runtime if runtime is not None else self.config.get("runtime")
        self.requirements = requirements if requirements is not None else \
            self.config.get("requirements")
        self._shutdown = False
        self._lock = threading.RLock()
        self._job_ids: List[str] = []
        self._streams: "weakref.WeakSet[FutureStream]" = weakref.WeakSet()
        self._submit_jobs: "OrderedDict[int, Tuple[weakref.ref, Dict[str, Any], itertools.count]]" \
            = OrderedDict()
        self._pm = get_plugin_manager()
        self._attempts = Attempts(_reinvoker(self.backend, self._pm, self.backend_name),
                                  _attempt_stopper(self.backend))
        self._lifecycle = _Lifecycle(self.backend, _JobEnd(self.storage, print_summary))
        _live.add(self._lifecycle)
        # A dropped executor lets its calls finish, then releases its workers and threads.
        weakref.finalize(self, self._lifecycle.close, wait=False, cancel_futures=False)

    def __repr__(self) -> str:
        return f"<wrencore.Executor backend={self.backend_name!r} storage={self.storage_name!r}>"

    # -- jobs ------------------------------------------------------------------------
    def _new_job(self, fn: Callable, timeout: Optional[float],
                 extra_env: Optional[Mapping[str, str]]) -> Dict[str, Any]:
        package = serialize.dumps_function(
            fn, initializer=self._initializer["blob"] if self._initializer else None)
        job_id = new_job_id()
        job = {
            "job_id": job_id,
            "storage": self.storage.to_spec(),
            "function_key": layout.function_key(job_id),
            "python": PYTHON,
            "serializer": SERIALIZER,
            "timeout": _check_timeout(timeout) if timeout is not None else self.timeout,
            "extra_env": {**self.extra_env, **dict(extra_env or {})},
            "result_inline_limit": self.backend.result_inline_limit,
            "function_name": getattr(fn, "__qualname__", repr(fn)),
            "function_sha256": sha256_hex(package),
        }
        if self._initializer:
            job["initializer"] = {"name": self._initializer["name"], "id": self._initializer["id"]}
        runtime = self._job_runtime(fn)
        if runtime is not None:
            job["runtime"] = runtime.job_entry()
        self.backend.preflight(job)
        self.storage.put(job["function_key"], package)
        header = encode_json(job)
        signer = self.backend.signer
        if signer is not None:  # signed, so a worker can trust it (see wrencore_runtime.auth)
            header = signer.seal_text(KIND_JOB, header)
        self.storage.put(layout.job_header_key(job_id), header.encode())
        with self._lock:
            self._job_ids.append(job_id)
        return job

    def _job_runtime(self, fn: Callable):
        if self.runtime is None and self.requirements is None \
                and getattr(self.backend, "default_runtime", None) is None:
            return None  # the default local path imports nothing more
        from . import environment

        return environment.job_runtime(fn, self.runtime, self.requirements, self.storage,
                                       self.backend)

    def _make_calls(self, job: Dict[str, Any], arg_pairs: Iterable[Tuple[tuple, dict]],
                    first_index: int = 0) -> List[Call]:
        with serialize.local_modules_by_value():
            return self._build_calls(job, arg_pairs, first_index)

    def _build_calls(self, job: Dict[str, Any], arg_pairs: Iterable[Tuple[tuple, dict]],
                     first_index: int) -> List[Call]:
        calls = []
        # One fetcher for the job's futures; it must not hold the executor (a dropped
        # executor is collected while its futures live on).
        fetch_logs = functools.partial(_call_logs, self._pm.hook, self.backend_name,
                                       self.config)
        job_id, inline_limit, echo = job["job_id"], self.backend.args_inline_limit, \
            self.live_output
        dumps_args, make_call = serialize.dumps_args, self.backend.call_type
        for index, (args, kwargs) in enumerate(arg_pairs, start=first_index):
            call_id = f"{index:05d}"
            data = dumps_args(args, kwargs, call_id)
            message: Dict[str, Any] = {"call_id": call_id, "args": data, "args_key": None}
            if len(data) > inline_limit:
                key = layout.args_key(job_id, call_id)
                self.storage.put(key, data)
                message["args"], message["args_key"] = None, key
                message["args_sha256"] = sha256_hex(data)
            future = Future(job_id, call_id)
            future._fetch_logs = fetch_logs
            if echo:
                future._echo = True
            calls.append(make_call(call_id, message, future))
        now = time.time()
        for call in calls:
            call.message["host_submit_timestamp"] = now
            call.future.metadata["host_submit_timestamp"] = now
        return calls

    def _attempt_policies(self, retries: Optional[int], retry_on: RetryOn, speculation: Any
                          ) -> Tuple[RetryPolicy, Optional[SpeculationPolicy]]:
        """The executor's retry and backup policies with one map's overrides."""
        retry = self.retry_policy
        if retries is not None or retry_on is not None:
            retry = RetryPolicy(
                retries=_check_retries(retries) if retries is not None else retry.retries,
                retry_on=retry_on if retry_on is not None else retry.retry_on)
        backup = self.speculation if speculation is None else \
            speculation_policy(speculation, self.config.top())
        return retry, backup

    def _invoke(self, job: Dict[str, Any], calls: List[Call], chunksize: Optional[int],
                policies: Optional[Tuple[RetryPolicy, Optional[SpeculationPolicy]]] = None
                ) -> None:
        retry, backup = policies or (self.retry_policy, self.speculation)
        if retry.retries or backup is not None:
            self._attempts.adopt(job, calls, retry, backup)
        finished_hook = self._pm.hook.wrencore_call_finished
        notify = bool(finished_hook.get_hookimpls())
        futures = [call.future for call in calls]
        self._lifecycle.track(futures)
        if notify:
            add_done_callback_to_new(
                futures, lambda f: finished_hook(future=f, metadata=f.metadata))
        self._pm.hook.wrencore_before_invoke(backend=self.backend_name, job=job,
                                             call_ids=[c.call_id for c in calls])
        self.backend.invoke(job, calls, chunksize if chunksize is not None else self.chunksize)

    def _check_open(self) -> None:
        if self._shutdown:
            raise ExecutorShutdownError("cannot submit calls: this executor has been shut down")
        if _interpreter_exiting:
            raise ExecutorShutdownError("cannot schedule new futures after interpreter shutdown")

    # -- public API ------------------------------------------------------------------
    @overload
    def map_futures(self, fn: Callable[..., _T], iterdata: Collection[Any], *,
                    chunksize: Optional[int] = None, timeout: Optional[float] = None,
                    extra_env: Optional[Mapping[str, str]] = None,
                    retries: Optional[int] = None, retry_on: RetryOn = None,
                    speculation: Any = None, max_pending: Optional[int] = None,
                    cleanup: bool = False) -> List[Future[_T]]: ...

    @overload
    def map_futures(self, fn: Callable[..., _T], iterdata: Iterable[Any], *,
                    chunksize: Optional[int] = None, timeout: Optional[float] = None,
                    extra_env: Optional[Mapping[str, str]] = None,
                    retries: Optional[int] = None, retry_on: RetryOn = None,
                    speculation: Any = None, max_pending: Optional[int] = None,
                    cleanup: bool = False) -> FutureStream[_T]: ...

    def map_futures(self, fn: Callable[..., _T], iterdata: Iterable[Any], *,
                    chunksize: Optional[int] = None, timeout: Optional[float] = None,
                    extra_env: Optional[Mapping[str, str]] = None,
                    retries: Optional[int] = None, retry_on: RetryOn = None,
                    speculation: Any = None, max_pending: Optional[int] = None,
                    cleanup: bool = False) -> Union[List[Future[_T]], FutureStream[_T]]:
        """Call ``fn(x)`` for each ``x`` of ``iterdata``; return the futures in input order.

        A sized ``iterdata`` (list, tuple, range …) starts every call at once and returns a
        list. Any other iterable (a generator, a file) streams: a
        :class:`~wrencore.streaming.FutureStream` is returned at once, an iterator of the
        futures in input order, which reads ``iterdata`` only as the window allows — at most
        ``max_pending`` calls unfinished or not yet taken from it — so the inputs are never
        all in memory. ``list(stream)`` gives the list of futures when that is wanted.

        Args:
            fn: the function; it and the objects it references must be picklable.
            iterdata: an iterable; each element is passed as the single argument.
            chunksize: calls per invocation (None: the executor's default).
            timeout: per-call time limit in seconds.
            extra_env: environment variables set around each call on the worker.
            retries, retry_on, speculation: this map's retry and backup policies (None:
                the executor's; see :class:`Executor`).
            max_pending: the window of a streamed map (None: the executor's).
            cleanup: delete what this map stored (function, large arguments and results)
                once every call has finished and its result has been read.

        Returns:
            ``list[Future]`` for a sized ``iterdata``, else a ``FutureStream``.

        Raises:
            TypeError: ``iterdata`` is not iterable.
            SerializationError: ``fn`` or an element cannot be pickled (for a list,
                nothing is invoked; for a stream, ``next`` raises it after the calls before).
        """
        self._check_open()
        policies = self._attempt_policies(retries, retry_on, speculation)
        if _is_sized(iterdata):
            return self._map_pairs(fn, (((x,), {}) for x in iterdata), len(iterdata),
                                   chunksize, timeout, extra_env, policies,
                                   cleanup)
        try:
            items = iter(iterdata)
        except TypeError:
            raise TypeError(
                f"iterdata must be an iterable of arguments, not {type(iterdata).__name__}"
            ) from None
        return self._stream_pairs(fn, (((x,), {}) for x in items), chunksize, timeout,
                                  extra_env, max_pending, policies, cleanup)

    def _map_pairs(self, fn, pairs, count: int, chunksize, timeout, extra_env,
                   policies=None, cleanup: bool = False) -> List[Future]:
        """The calls of ``pairs``, an iterable of ``count`` argument pairs: taken one at a
        time as their calls are made, so no pair outlives its call's making."""
        chunksize = _check_chunksize(chunksize)
        if not count:
            return []
        job = self._new_job(fn, timeout, extra_env)
        if cleanup:
            self._lifecycle.job_end.cleanup.add(job["job_id"])
        calls = self._make_calls(job, pairs)
        try:
            self._invoke(job, calls, chunksize, policies)
        finally:
            self._lifecycle.close_job(job["job_id"])
        return [c.future for c in calls]

    def _stream_pairs(self, fn, pairs, chunksize, timeout, extra_env,
                      max_pending: Optional[int], policies=None,
                      cleanup: bool = False) -> FutureStream:
        chunksize = _check_chunksize(chunksize)
        window = _check_max_pending(max_pending) if max_pending is not None else \
            self.max_pending
        job = self._new_job(fn, timeout, extra_env)
        if cleanup:
            self._lifecycle.job_end.cleanup.add(job["job_id"])
        lifecycle = self._lifecycle

        def submit(batch: List[Tuple[tuple, dict]], first_index: int) -> List[Future]:
            if _interpreter_exiting:
                raise ExecutorShutdownError("cannot start calls after interpreter shutdown")
            calls = self._make_calls(job, batch, first_index)
            self._invoke(job, calls, chunksize, policies)
            return [c.future for c in calls]

        stream = FutureStream(pairs, submit, window,
                              on_exhausted=lambda: lifecycle.close_job(job["job_id"]))
        with self._lock:
            self._streams.add(stream)
        return stream

    def submit(self, fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> Future[_T]:
        """Schedule ``fn(*args, **kwargs)``; return its :class:`Future`."""
        self._check_open()
        with self._lock:
            job, index = self._submit_job(fn)
        calls = self._make_calls(job, [(args, kwargs)], first_index=index)
        self._invoke(job, calls, 1)
        return calls[0].future

    def _submit_job(self, fn: Callable) -> Tuple[Dict[str, Any], int]:
        """The job for ``fn`` (reused while ``fn`` lives) and the next call index in it."""
        key = _function_id(fn)
        if key is None:
            return self._new_job(fn, None, None), 0
        entry = self._submit_jobs.get(key[0])
        if entry is None or entry[0]() is not fn:
            entry = (key[1], self._new_job(fn, None, None), itertools.count())
            self._submit_jobs[key[0]] = entry
            while len(self._submit_jobs) > SUBMIT_JOB_CACHE:
                self._submit_jobs.popitem(last=False)
        self._submit_jobs.move_to_end(key[0])
        return entry[1], next(entry[2])

    def map(self, fn: Callable[..., _T], *iterables: Iterable[Any],
            timeout: Optional[float] = None,
            chunksize: int = 1, retries: Optional[int] = None, retry_on: RetryOn = None,
            speculation: Any = None) -> Iterator[_T]:
        """Like :meth:`concurrent.futures.Executor.map`: results in order, lazily.

        ``timeout`` bounds the whole iteration (seconds from this call), as in the stdlib.
        Each future is dropped as its result is yielded, so results are not kept alive.
        ``retries``, ``retry_on`` and ``speculation`` override the executor's policies.
        When every iterable is sized, every call starts at once, as in the stdlib; otherwise
        the inputs stream (see :meth:`map_futures`): at most ``max_pending`` calls are
        unfinished or unread at a time, and closing the iterator stops reading the inputs.

        Raises:
            ValueError: ``chunksize`` is less than 1.
        """
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        self._check_open()
        policies = self._attempt_policies(retries, retry_on, speculation)
        size = chunksize if chunksize != 1 else None
        deadline = None if timeout is None else time.monotonic() + timeout
        if all(_is_sized(it) for it in iterables):
            count = min(map(len, iterables)) if iterables else 0  # zip's length
            futures = self._map_pairs(fn, ((args, {}) for args in zip(*iterables)), count,
                                      size, None, None, policies)
            futures.reverse()
            job_ids = job_ids_of(futures[-1:])  # for Ctrl-C
            bar = _progress.start(futures, self.progress, self._settings)

            def results() -> Iterator[Any]:
                try:
                    # One interrupt guard for the whole loop (it spans each yield either
                    # way); a result already there is taken without waiting.
                    with cancel_on_interrupt(job_ids):
                        while futures:
                            if deadline is None:
                                last = futures[-1]  # _result_or_cancel's fast path, inline
                                done = last._state == _FINISHED and last._exception is None
                                del last  # no local keeps a future (or result) alive
                                yield futures.pop()._result if done else \
                                    _result_or_cancel(futures.pop(), None)
                            else:
                                yield _result_or_cancel(futures.pop(),
                                                        deadline - time.monotonic())
                finally:
                    for future in futures:
                        cancel_future(future)
                    if bar is not None:
                        bar.close()

            return results()
        stream = self._stream_pairs(fn, ((tuple(args), {}) for args in zip(*iterables)),
                                    size, None, None, None, policies)

        show_bar = _progress.enabled(self.progress, self._settings)

        def streamed_results() -> Iterator[Any]:
            bar = _progress.Bar(None) if show_bar else None
            try:
                for future in stream:
                    if bar is not None:
                        bar.grow(1)
                        bar.watch([future])
                    remaining = None if deadline is None else deadline - time.monotonic()
                    with cancel_on_interrupt({future.job_id}):
                        yield _result_or_cancel(future, remaining)
            finally:
                stream.close()
                if bar is not None:
                    bar.close()

        return streamed_results()

    def summary(self, job_id: Optional[str] = None) -> JobSummary:
        """What this executor's calls did (or those of ``job_id``): counts by state,
        wall time, total and percentile call times, the slowest calls, workers and hosts.

        ``print(executor.summary())`` prints it in one line. Covers the calls finished so
        far (``pending`` counts the others) of the most recent jobs (up to
        ``RECORDS_KEPT`` calls).
        """
        records, pending, jobs = self._records(job_id)
        return summarize(records, pending=pending, jobs=jobs)

    def plot(self, path: str, job_id: Optional[str] = None) -> str:
        """Save a picture of this executor's calls (or those of ``job_id``) as PNG.

        A timeline of every finished call — from submitted to started (thin) and from
        started to finished (thick), one row per worker — over a histogram of the calls'
        durations. Needs matplotlib (``pip install 'wrencore[plot]'``).

        Returns:
            ``path``.
        """
        from .plot import plot_records

        records, _, jobs = self._records(job_id)
        title = f"job {jobs[0]}" if len(jobs) == 1 else f"{len(jobs)} jobs"
        plot_records(records, path, title=title)
        return path

    def _records(self, job_id: Optional[str]) -> Tuple[List[CallRecord], int, List[str]]:
        lifecycle = self._lifecycle
        with lifecycle._lock:
            jobs = [job_id] if job_id is not None else \
                list(dict.fromkeys([*lifecycle.records, *lifecycle.job_pending]))
            kept = [lifecycle.records.get(j) for j in jobs]
            records = [r for job_records in kept if job_records is not None
                       for r in job_records.records()]
            pending = sum(max(0, lifecycle.job_pending.get(j, 0)) for j in jobs)
        return records, pending, jobs

    def cancel(self, futures: Iterable[concurrent.futures.Future[Any]], *,
               running: bool = True) -> int:
        """Cancel calls of this executor; return how many were cancelled.

        Calls not started end ``cancelled()``, as with ``future.cancel()``. With
        ``running``, calls already running are stopped where the backend can (local: their
        worker process is killed and replaced; aws_sqs_ec2: the worker stops the call;
        aws_lambda: chunk calls not yet started are skipped) and their futures end with
        :class:`CallCancelledError` at once, whether or not the call could be stopped.
        Futures already done, or of other executors, are left alone.

        Args:
            futures: the futures to cancel.
            running: also stop calls that already started.
        """
        mine = set(self._lifecycle.snapshot())
        targets = [f for f in futures if f in mine and not f.done()]
        if not targets:
            return 0
        return self.backend.cancel(futures=targets, running=running)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False,
                 cleanup: bool = False) -> None:
        """Stop accepting calls and release the backend, as the stdlib does.

        Args:
            wait: wait for the pending calls to finish and the backend to stop. Without it,
                return at once: pending calls still run and the backend is released
                after the last one.
            cancel_futures: cancel calls that have not started, and stop streamed maps
                from reading more inputs. Without it, a streamed map's remaining inputs
                are all started first, as the stdlib's ``map`` would have done.
            cleanup: delete this executor's job data from storage afterwards (with
                ``wait=False``, only what is there when this returns).
        """
        with self._lock:
            self._shutdown = True
            streams = list(self._streams)
        for stream in streams:  # a map started before shutdown runs to its end, as stdlib's
            stream.close() if cancel_futures else stream.drain()
        self._lifecycle.close(wait=wait, cancel_futures=cancel_futures)
        if cleanup:
            self.cleanup()

    def cleanup(self, job_ids: Optional[Iterable[str]] = None) -> int:
        """Delete job data (default: every job of this executor); return keys deleted."""
        with self._lock:
            targets = list(job_ids) if job_ids is not None else list(self._job_ids)
        deleted = 0
        for job_id in targets:
            deleted += self.storage.delete_prefix(layout.job_prefix(job_id))
        with self._lock:
            self._job_ids = [j for j in self._job_ids if j not in targets]
        return deleted
