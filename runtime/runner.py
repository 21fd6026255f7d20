"""The platform-agnostic job runner.

Given a task message's job and one of its calls, :class:`JobRunner` loads the function
(once per job and process) and the arguments, runs the call with its output captured,
and produces the call's outcome: a JSON-able *status* and, on success, the pickled result.

What happens to the outcome is the caller's choice. ``store=True`` (Lambda, standalone
daemon) writes the result and then the status to storage — the status last, as the commit
marker. ``store=False`` (local workers) returns both so the adapter can send them back
inline; results larger than the job's ``result_inline_limit`` are still staged in storage.

Status fields: ``job_id``, ``call_id``, ``success``, ``result_key`` (None when the result is
inline), ``exception`` (``type``, ``message``, ``traceback``, ``pickled``), ``stdout``,
``stderr`` and ``metadata``. Metadata keys follow the project's convention: ``host_…`` was
measured on the user's computer, ``worker_…`` on the worker; ``…_time`` is a duration in
seconds and ``…_timestamp`` a Unix timestamp.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import pickle
import signal
import socket
import sys
import threading
import time
import traceback
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple

import cloudpickle

from . import layout
from .errors import (
    CallTimeoutError,
    DeserializationError,
    RuntimeMismatchError,
    SerializationError,
)
from .environment import environment_mismatch
from .modules import ModuleInstaller
from .protocol import PYTHON, encode_json, version_mismatch
from .storage import Storage, storage_from_spec

logger = logging.getLogger(__name__)

#: Captured stdout/stderr beyond this many characters keep only their tail.
OUTPUT_LIMIT = 1 << 20


@dataclass
class CallOutcome:
    status: Dict[str, Any]
    result: Optional[bytes] = None  # pickled result, when returned inline


class _TailBuffer(io.StringIO):
    def getvalue(self) -> str:  # type: ignore[override]
        text = super().getvalue()
        if len(text) > OUTPUT_LIMIT:
            return "[... output truncated ...]\n" + text[-OUTPUT_LIMIT:]
        return text


def describe_exception(exc: BaseException) -> Dict[str, Any]:
    """The transportable form of an exception: names, message, traceback, pickle if possible."""
    cls = type(exc)
    try:
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


class JobRunner:
    """Runs calls; keeps the last few jobs' functions loaded."""

    def __init__(self, worker_id: str = "", *, function_cache_size: int = 8) -> None:
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}"
        #: job key -> (function, module bundle, bundle hash), most recently used last.
        self._functions: "OrderedDict[str, Tuple[Callable, Optional[bytes], Optional[str]]]" = \
            OrderedDict()
        self._cache_size = function_cache_size
        self._modules = ModuleInstaller()
        self._runtimes_checked: Dict[str, Optional[str]] = {}

    def _runtime_mismatch(self, job: Dict[str, Any]) -> Optional[str]:
        """Checked once per runtime and process: does this process run the job's runtime?"""
        runtime = job.get("runtime")
        if not runtime:
            return None
        if runtime["hash"] not in self._runtimes_checked:
            self._runtimes_checked[runtime["hash"]] = environment_mismatch(runtime)
        return self._runtimes_checked[runtime["hash"]]

    # -- loading ---------------------------------------------------------------------
    def _prepare_function(self, job: Dict[str, Any], storage: Storage) -> Callable:
        """The job's function, loaded once per process, with its module bundle active."""
        key = f"{job['job_id']}:{job['function_key']}"
        entry = self._functions.get(key)
        if entry is not None:
            self._functions.move_to_end(key)
            func, modules, modules_hash = entry
            self._modules.activate(modules, modules_hash)
            return func
        blob = storage.get(job["function_key"])
        try:
            package = pickle.loads(blob)
            modules, modules_hash = package.get("modules"), package.get("modules_hash")
            self._modules.activate(modules, modules_hash)
            func = cloudpickle.loads(package["function"])
        except Exception as exc:
            raise DeserializationError(
                f"could not load the function of job {job['job_id']}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        self._functions[key] = (func, modules, modules_hash)
        while len(self._functions) > self._cache_size:
            self._functions.popitem(last=False)
        return func

    @staticmethod
    def _load_args(job: Dict[str, Any], call: Dict[str, Any], storage: Storage):
        data = call.get("args")
        if data is None:
            data = storage.get(call["args_key"])
        try:
            args, kwargs = cloudpickle.loads(data)
        except Exception as exc:
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
    ) -> CallOutcome:
        """Run one call and return (and, with ``store``, durably write) its outcome."""
        start = time.time()
        metadata: Dict[str, Any] = {
            "host_submit_timestamp": call.get("host_submit_timestamp"),
            "worker_start_timestamp": start,
            "worker_id": self.worker_id,
            "worker_hostname": socket.gethostname(),
            "worker_pid": os.getpid(),
            "worker_python": PYTHON,
        }
        status: Dict[str, Any] = {
            "job_id": job["job_id"],
            "call_id": call["call_id"],
            "success": False,
            "result_key": None,
            "exception": None,
            "stdout": "",
            "stderr": "",
            "metadata": metadata,
        }
        result_bytes: Optional[bytes] = None
        stdout, stderr = _TailBuffer(), _TailBuffer()
        try:
            mismatch = version_mismatch(job) or self._runtime_mismatch(job)
            if mismatch:
                raise RuntimeMismatchError(
                    f"the worker's runtime does not match the client: {mismatch}"
                )
            storage = storage or storage_from_spec(job["storage"])
            func = self._prepare_function(job, storage)
            args, kwargs = self._load_args(job, call, storage)
            exec_start = time.time()
            metadata["worker_setup_time"] = exec_start - start
            try:
                with _environment(job.get("extra_env")), _time_limit(job.get("timeout")), \
                        contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
                    value = func(*args, **kwargs)
            finally:
                metadata["worker_exec_time"] = time.time() - exec_start
            result_start = time.time()
            try:
                result_bytes = cloudpickle.dumps(value)
            except Exception as exc:
                raise SerializationError(
                    f"the result of call {call['call_id']} ({type(value).__qualname__}) "
                    f"could not be pickled: {type(exc).__name__}: {exc}"
                ) from exc
            metadata["worker_result_size"] = len(result_bytes)
            limit = job.get("result_inline_limit")
            if store or (limit is not None and len(result_bytes) > limit):
                key = layout.result_key(job["job_id"], call["call_id"])
                storage.put(key, result_bytes)
                status["result_key"] = key
                result_bytes = None
            metadata["worker_result_time"] = time.time() - result_start
            status["success"] = True
        except (Exception, SystemExit) as exc:
            status["exception"] = describe_exception(exc)
            result_bytes = None
        status["stdout"], status["stderr"] = stdout.getvalue(), stderr.getvalue()
        metadata["worker_end_timestamp"] = time.time()
        if store:
            storage = storage or storage_from_spec(job["storage"])
            storage.put(
                layout.status_key(job["job_id"], call["call_id"]),
                encode_json(status).encode(),
            )
        return CallOutcome(status=status, result=result_bytes)
