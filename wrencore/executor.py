"""The Executor: a :class:`concurrent.futures.Executor` over any backend."""

from __future__ import annotations

import concurrent.futures
import itertools
import logging
import os
import threading
import time
import uuid
import weakref
from collections import OrderedDict
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple

from wrencore_runtime import layout
from wrencore_runtime.protocol import PYTHON, SERIALIZER, encode_json

from . import serialize
from .backends import Backend, Call
from .config import DEFAULT_BACKEND, Config
from .errors import ConfigError, ExecutorShutdownError
from .futures import Future
from .futures import cancel as cancel_future
from .plugins import get_plugin_manager, get_registry

logger = logging.getLogger(__name__)

_job_counter = itertools.count()


def new_job_id() -> str:
    return f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}-{next(_job_counter)}"


def _check_timeout(timeout: Any) -> Optional[float]:
    if timeout is None:
        return None
    try:
        value = float(timeout)
    except (TypeError, ValueError):
        raise ConfigError(f"timeout must be a number of seconds or None, not {timeout!r}") from None
    if value <= 0:
        raise ConfigError(f"timeout must be positive, not {timeout!r}")
    return value


class Executor(concurrent.futures.Executor):
    """Runs calls on a backend chosen by name; a drop-in for ``ProcessPoolExecutor``.

    Args:
        backend: backend name (default: config ``backend``, else ``"local"``).
        storage: storage name (default: config ``storage``, else the backend's default).
        config: overrides of the configuration (same shape as the TOML file).
        chunksize: calls per invocation (None: the backend decides).
        timeout: per-call time limit in seconds (None: no limit).
        extra_env: environment variables set around each call on the worker.
        runtime: the workers' environment (see ``wrencore.environment``): ``"auto"``
            (detected from the function's imports), ``"explicit"`` (``requirements`` only),
            ``"isolated"`` (auto; local workers run in it too), ``"none"`` (the backend's
            own environment), or a stored runtime's ``"sha256:…"``. Default: the config's
            ``runtime``, else the backend's (auto on the cloud, none locally).
        requirements: requirement strings, or the path of a requirements file or
            pyproject.toml, added to the detected set.

    Raises:
        UnknownNameError: no backend or storage has that name.
        MissingDependencyError: the backend's SDK is not installed.
    """

    def __init__(self, backend: Optional[str] = None, storage: Optional[str] = None,
                 config: Optional[Mapping[str, Any]] = None, *, chunksize: Optional[int] = None,
                 timeout: Optional[float] = None, extra_env: Optional[Mapping[str, str]] = None,
                 runtime: Optional[str] = None, requirements: Any = None):
        overrides: Dict[str, Any] = dict(config or {})
        if backend is not None:
            overrides["backend"] = backend
        if storage is not None:
            overrides["storage"] = storage
        self.config = Config(overrides)
        registry = get_registry()
        self.backend_name = str(self.config.get("backend") or DEFAULT_BACKEND)
        backend_cls = registry.load("backend", self.backend_name)
        self.storage_name = str(self.config.get("storage") or backend_cls.default_storage)
        storage_factory = registry.load("storage", self.storage_name)
        self.storage = storage_factory(self.config.section(self.storage_name))
        self.backend: Backend = backend_cls(self.config, self.storage)
        self.chunksize = chunksize if chunksize is not None else self.config.get("chunksize")
        self.timeout = _check_timeout(timeout if timeout is not None else self.config.get("timeout"))
        self.extra_env = dict(extra_env or {})
        self.runtime = runtime if runtime is not None else self.config.get("runtime")
        self.requirements = requirements if requirements is not None else \
            self.config.get("requirements")
        self._shutdown = False
        self._lock = threading.RLock()
        self._job_ids: List[str] = []
        self._futures: "weakref.WeakSet[Future]" = weakref.WeakSet()
        self._submit_jobs: "OrderedDict[int, Tuple[Any, Dict[str, Any], itertools.count]]" = OrderedDict()
        self._pm = get_plugin_manager()

    def __repr__(self) -> str:
        return f"<wrencore.Executor backend={self.backend_name!r} storage={self.storage_name!r}>"

    # -- jobs ------------------------------------------------------------------------
    def _new_job(self, fn: Callable, timeout: Optional[float],
                 extra_env: Optional[Mapping[str, str]]) -> Dict[str, Any]:
        package = serialize.dumps_function(fn)
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
        }
        runtime = self._job_runtime(fn)
        if runtime is not None:
            job["runtime"] = runtime.job_entry()
        self.backend.preflight(job)
        self.storage.put(job["function_key"], package)
        self.storage.put(layout.job_header_key(job_id), encode_json(job).encode())
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
        for index, (args, kwargs) in enumerate(arg_pairs, start=first_index):
            call_id = f"{index:05d}"
            data = serialize.dumps_args(args, kwargs, call_id)
            message: Dict[str, Any] = {"call_id": call_id, "args": data, "args_key": None}
            if len(data) > self.backend.args_inline_limit:
                key = layout.args_key(job["job_id"], call_id)
                self.storage.put(key, data)
                message["args"], message["args_key"] = None, key
            future = Future(job["job_id"], call_id)
            calls.append(Call(call_id, message, future))
        now = time.time()
        for call in calls:
            call.message["host_submit_timestamp"] = now
            call.future.metadata["host_submit_timestamp"] = now
        return calls

    def _invoke(self, job: Dict[str, Any], calls: List[Call], chunksize: Optional[int]) -> None:
        finished_hook = self._pm.hook.wrencore_call_finished
        notify = bool(finished_hook.get_hookimpls())
        for call in calls:
            self._futures.add(call.future)
            if notify:
                call.future.add_done_callback(
                    lambda f: finished_hook(future=f, metadata=f.metadata))
        self._pm.hook.wrencore_before_invoke(backend=self.backend_name, job=job,
                                             call_ids=[c.call_id for c in calls])
        self.backend.invoke(job, calls, chunksize if chunksize is not None else self.chunksize)

    def _check_open(self) -> None:
        if self._shutdown:
            raise ExecutorShutdownError("cannot submit calls: this executor has been shut down")

    # -- public API ------------------------------------------------------------------
    def map_futures(self, fn: Callable, iterdata: Iterable, *, chunksize: Optional[int] = None,
                    timeout: Optional[float] = None,
                    extra_env: Optional[Mapping[str, str]] = None) -> List[Future]:
        """Call ``fn(x)`` for each ``x`` of ``iterdata``; return the futures in input order.

        Args:
            fn: the function; it and the objects it references must be picklable.
            iterdata: an iterable; each element is passed as the single argument.
            chunksize: calls per invocation (None: the executor's default).
            timeout: per-call time limit in seconds.
            extra_env: environment variables set around each call on the worker.

        Raises:
            TypeError: ``iterdata`` is not iterable.
            SerializationError: ``fn`` or an element cannot be pickled (nothing is invoked).
        """
        self._check_open()
        try:
            items = list(iterdata)
        except TypeError:
            raise TypeError(
                f"iterdata must be an iterable of arguments, not {type(iterdata).__name__}"
            ) from None
        return self._map_pairs(fn, [((x,), {}) for x in items], chunksize, timeout, extra_env)

    def _map_pairs(self, fn, pairs, chunksize, timeout, extra_env) -> List[Future]:
        if not pairs:
            return []
        job = self._new_job(fn, timeout, extra_env)
        calls = self._make_calls(job, pairs)
        self._invoke(job, calls, chunksize)
        return [c.future for c in calls]

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> Future:
        """Schedule ``fn(*args, **kwargs)``; return its :class:`Future`."""
        self._check_open()
        with self._lock:
            entry = self._submit_jobs.get(id(fn))
            if entry is None or entry[0] is not fn:
                entry = (fn, self._new_job(fn, None, None), itertools.count())
                self._submit_jobs[id(fn)] = entry
                while len(self._submit_jobs) > 64:
                    self._submit_jobs.popitem(last=False)
            _, job, counter = entry
            index = next(counter)
        calls = self._make_calls(job, [(args, kwargs)], first_index=index)
        self._invoke(job, calls, 1)
        return calls[0].future

    def map(self, fn: Callable, *iterables: Iterable, timeout: Optional[float] = None,
            chunksize: int = 1) -> Iterator[Any]:
        """Like :meth:`concurrent.futures.Executor.map`: results in order, lazily.

        ``timeout`` bounds the whole iteration (seconds from this call), as in the stdlib.
        """
        self._check_open()
        pairs = [(tuple(args), {}) for args in zip(*iterables)]
        futures = self._map_pairs(fn, pairs, chunksize if chunksize != 1 else None, None, None)
        deadline = None if timeout is None else time.monotonic() + timeout

        def results() -> Iterator[Any]:
            try:
                for future in futures:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    yield future.result(remaining)
            finally:
                for future in futures:
                    cancel_future(future)

        return results()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False,
                 cleanup: bool = False) -> None:
        """Stop accepting calls and release the backend.

        Args:
            wait: wait for calls already started to finish.
            cancel_futures: cancel calls that have not started.
            cleanup: delete this executor's job data from storage afterwards.
        """
        with self._lock:
            self._shutdown = True
        if cancel_futures:
            for future in list(self._futures):
                cancel_future(future)
        if wait:
            concurrent.futures.wait(list(self._futures))
        self.backend.shutdown(wait=wait)
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
