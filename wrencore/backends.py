"""What a plugin implements: the client side of a backend, and of an instance provider.

A backend receives a job (see ``wrencore_runtime.protocol``) and its calls, starts them,
and completes each call's :class:`wrencore.Future` — pushing results itself (as the local
backend does) or by polling storage with :class:`wrencore.watcher.StatusWatcher`.
"""

from __future__ import annotations

import abc
import threading
import time
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Tuple, TypeVar

from wrencore_runtime import layout
from wrencore_runtime.auth import KIND_RELAY, KIND_TASK, RELOAD_INTERVAL, Signer
from wrencore_runtime.protocol import encode_json, make_message
from wrencore_runtime.storage import Storage

from .config import Config
from .errors import CallCancelledError, ConfigError, MessageRefusedError
from .futures import Future
from .futures import cancel as cancel_future


@dataclass
class Call:
    """One call of a job, as handed to a backend."""

    call_id: str
    #: The call's entry in a task message: ``call_id``, ``args`` or ``args_key``,
    #: ``host_submit_timestamp``.
    message: Dict[str, Any]
    future: Future


class Backend(abc.ABC):
    """Client side of a compute backend.

    Subclasses are registered with ``wrencore_register_backends`` and constructed once per
    executor with ``(config, storage)``.
    """

    #: The storage used when the user names none.
    default_storage: str = "localfs"
    #: Pickled arguments larger than this are staged in storage instead of sent inline.
    args_inline_limit: int = 64 * 1024
    #: Results larger than this are staged in storage instead of returned inline.
    result_inline_limit: int = 64 * 1024
    #: The chunk size used when the user gives none (None: the backend decides).
    default_chunksize: Optional[int] = 1
    #: The runtime a job gets when the user names none: ``"auto"`` (detect the function's
    #: distributions and ship them) or None (the workers' own environment).
    default_runtime: Optional[str] = None
    #: What the backend's worker code needs in every runtime.
    runtime_requirements: Tuple[str, ...] = ("wrencore",)
    #: The workers' platform (``sysconfig.get_platform()`` form); None: this computer's.
    runtime_platform: Optional[str] = None
    #: Seals task messages and job headers with the deployment's task key (see
    #: ``wrencore_runtime.auth``); None only for a backend whose workers receive nothing
    #: anyone else could write (the local backend's private pipes).
    signer: Optional[Signer] = None
    #: The class the executor makes a job's calls of, as ``call_type(call_id, message,
    #: future)``: :class:`Call`, or a subclass in which the backend keeps its own
    #: bookkeeping of each call (one object per call instead of two). Calls made again
    #: (retries, backups) may still arrive as plain :class:`Call` objects.
    call_type: type = Call

    def __init__(self, config: Config, storage: Storage) -> None:
        self.config = config
        self.storage = storage

    @classmethod
    def prepare(cls, config: Config) -> None:
        """Called by an executor as soon as it has chosen this backend, before it checks the
        config against the declared settings and makes the storage and the backend: start
        here what takes long and needs only the config (the local backend starts its fork
        server). ``config`` is :meth:`Config.unchecked <wrencore.config.Config.unchecked>`:
        read its values with the typed getters, which raise on a bad one. Errors are the
        caller's to ignore: the constructor must work without it."""

    @abc.abstractmethod
    def invoke(self, job: Dict[str, Any], calls: List[Call], chunksize: Optional[int]) -> None:
        """Start ``calls`` of ``job``; never block until they finish.

        Mark each future running with :func:`wrencore.futures.claim` when its call is
        actually dispatched (it returns False for cancelled ones, which are skipped), and complete it with
        :func:`wrencore.futures.complete_from_status` or ``future.fail(error)``.
        """

    def apply_pool_options(self, *, max_workers: Optional[int], mp_context: Any,
                           max_tasks_per_child: Optional[int]) -> None:
        """Honour ``ProcessPoolExecutor``'s pool arguments, or refuse them with ValueError.

        Called once, right after construction; None means "not given". A backend without
        worker processes of its own refuses every argument that is given.
        """
        given = {name: value for name, value in (("max_workers", max_workers),
                                                  ("mp_context", mp_context),
                                                  ("max_tasks_per_child", max_tasks_per_child))
                 if value is not None}
        if given:
            raise ConfigError(
                f"the {type(self).__name__} backend does not manage a pool of worker processes, "
                f"so it cannot honour {', '.join(sorted(given))}; size it through its own "
                f"configuration section instead")

    def cancel(self, *, futures: List[Future], running: bool = True) -> int:
        """Cancel calls of this backend; return how many were cancelled.

        Calls not started must end ``cancelled()`` and never start. With ``running``, calls
        already started are also stopped where the backend can, and their futures end with
        :class:`~wrencore.errors.CallCancelledError`; where it cannot, the call runs on but
        its future still ends that way at once, and its outcome is ignored. This default
        cancels only what has not started.

        :param futures: futures of calls this backend was given; others are ignored.
        :param running: also stop calls that already started.
        """
        return sum(1 for future in futures if cancel_future(future))

    def stop_attempts(self, *, future: Future, attempts: List[int]) -> None:
        """Stop ``attempts`` of a call whose future is already decided (another attempt won,
        or the call was cancelled), where the backend can; do nothing where it cannot.

        Never touches the future, which is done. This default does nothing.

        :param future: the call's future (done).
        :param attempts: the call's attempt numbers still running.
        """

    def preflight(self, job: Dict[str, Any]) -> None:
        """Check, before any call of ``job`` is invoked, that it can run (e.g. versions)."""

    def shutdown(self, wait: bool = True) -> None:
        """Release workers, threads and connections. With ``wait``, finish started calls."""


#: Threads that write cancel markers (one storage write per call attempt).
CANCEL_MARKER_THREADS = 16


def write_cancel_markers(storage: Storage, targets: List[Tuple[Future, List[int]]], *,
                         stop_running: bool) -> None:
    """Write the cancel marker of each ``(future, attempts)`` (see ``layout.cancel_key``), for
    workers that look for it: they skip a call whose marker they find before starting it,
    and, where they can and ``stop_running`` says so, stop it while it runs."""
    from concurrent.futures import ThreadPoolExecutor

    body = encode_json({"stop_running": stop_running}).encode()
    keys = [layout.cancel_key(future.job_id, future.call_id, attempt)
            for future, attempts in targets for attempt in attempts]
    if len(keys) == 1:
        storage.put(keys[0], body)
        return
    with ThreadPoolExecutor(min(CANCEL_MARKER_THREADS, len(keys) or 1),
                            thread_name_prefix="wrencore-cancel") as pool:
        for done in [pool.submit(storage.put, key, body) for key in keys]:
            done.result()


def cancelled_error(future: Future, when: str) -> CallCancelledError:
    return CallCancelledError(f"call {future.call_id} of job {future.job_id} was cancelled "
                              f"{when}")


class InstanceProvider(abc.ABC):
    """Client side of an instance-lifecycle plugin (constructed with ``(config)``)."""

    @abc.abstractmethod
    def launch(self, count: int, **options: Any) -> List[str]:
        """Start ``count`` instances; return their ids."""

    @abc.abstractmethod
    def list(self, **filters: Any) -> List[Dict[str, Any]]:
        """Describe the provider's instances (at least ``id`` and ``state``)."""

    @abc.abstractmethod
    def terminate(self, instance_ids: List[str]) -> None:
        """Terminate the given instances."""


def seal_task(signer: Signer, job: Dict[str, Any], messages: List[Dict[str, Any]]) -> str:
    """The signed task message (JSON text of its envelope) of ``messages`` of ``job``."""
    return signer.seal_text(KIND_TASK, encode_json(make_message(job, messages)))


def dead_letter_calls(body: str, signer: Signer) -> List[Tuple[str, str, int, str]]:
    """``(job_id, call_id, attempt, refused)`` of each call a dead letter names.

    ``refused`` is why workers must have refused it ("" if its tag verifies with the
    client's key, so it died for another reason): a dead letter whose body names a call of
    ours but does not verify was altered (or signed with a key since retired). A letter
    that names nothing gives nothing. A Lambda relay event (``wrencore_aws_lambda``) names
    the calls it carries.
    """
    from wrencore_runtime.auth import decode_relay, decode_task, parse_text

    try:
        envelope = parse_text(body)
        kind = KIND_RELAY if envelope.get("signed") == KIND_RELAY else KIND_TASK
        task = decode_relay(envelope["body"])["relay"] if kind == KIND_RELAY \
            else decode_task(envelope["body"])
    except Exception:
        return []
    try:
        signer.ring().unseal(envelope, kind)
        # It verifies with the ring this client holds, which may predate a rotation whose
        # grace period has ended since: the workers' ring is the one to judge by.
        signer.ring(max_age=RELOAD_INTERVAL).unseal(envelope, kind)
        refused = ""
    except MessageRefusedError as exc:
        refused = exc.reason
    except Exception as exc:  # the key unreachable: say so rather than guess
        refused = f"could not check its tag: {exc}"
    job_id = task["job"]["job_id"]
    return [(job_id, call["call_id"], int(call.get("attempt") or 0), refused)
            for call in task["calls"]]


def index_dead_letters(letters: Iterable[Tuple[str, Any]], signer: Signer
                       ) -> Dict[str, Dict[Tuple[str, int], Any]]:
    """``job_id -> (call_id, attempt) -> verdict`` over dead letters ``(body, verified)``.

    The verdict is why workers must have refused the letter (a non-empty string, see
    :func:`dead_letter_calls`), or ``verified`` if its tag verifies with the client's key.
    """
    dead: Dict[str, Dict[Tuple[str, int], Any]] = {}
    for body, verified in letters:
        for job_id, call_id, attempt, refused in dead_letter_calls(body, signer):
            dead.setdefault(job_id, {})[(call_id, attempt)] = refused or verified
    return dead


class Every:
    """Says a periodic check is due at most once per ``interval`` seconds (thread-safe)."""

    def __init__(self, interval: float, *, start_due: bool = True) -> None:
        self.interval = interval
        self._last = -float("inf") if start_due else time.monotonic()
        self._lock = threading.Lock()

    def due(self) -> bool:
        now = time.monotonic()
        with self._lock:
            if now - self._last < self.interval:
                return False
            self._last = now
            return True


E = TypeVar("E", bound=BaseException)


def of_attempt(error: E, attempt: int) -> E:
    """``error``, marked as the outcome of the call's ``attempt`` (a backend's verdict on
    an attempt that will never report; see :meth:`Future.fail`)."""
    error.wrencore_attempt = attempt  # type: ignore[attr-defined]
    return error


def refused_error(future: Future, reason: str, where: str) -> MessageRefusedError:
    """The error of a call whose task message the workers refused."""
    return of_attempt(MessageRefusedError(
        f"call {future.call_id} of job {future.job_id} was never run: the workers refused its "
        f"task message ({reason}) and it went to the dead-letter queue {where}. Someone "
        f"altered it on the way, or the task key was rotated past its grace period; submit "
        f"the call again."), future.attempt)


def task_message_bodies(job: Dict[str, Any], calls: List["Call"], chunksize: int, limit: int,
                        limit_name: str, signer: Signer) -> List[Tuple[str, List["Call"]]]:
    """Signed queue message bodies for ``calls`` in chunks of ``chunksize``, each under
    ``limit`` bytes.

    A chunk whose message is too large is halved until it fits; a single call that still
    does not fit raises ValueError naming it and ``limit_name``.
    """
    bodies = []
    for start in range(0, len(calls), chunksize):
        pending = [calls[start:start + chunksize]]
        while pending:
            part = pending.pop()
            body = seal_task(signer, job, [c.message for c in part])
            if len(body) > limit and len(part) > 1:
                half = len(part) // 2
                pending += [part[half:], part[:half]]
                continue
            if len(body) > limit:
                raise ValueError(f"the task message of call {part[0].call_id} is "
                                 f"{len(body)} bytes, over {limit_name}")
            bodies.append((body, part))
    return bodies
