"""The ``aws_lambda`` backend: asynchronous invocations out, statuses in S3 back.

Chunks of calls are invoked with ``InvocationType="Event"`` from a bounded thread pool,
never more than ``max_in_flight`` calls at once; after each function's first Invoke, the
request botocore built is re-signed and sent again for about half the client CPU
(:class:`~wrencore_aws_lambda.invoke.EventInvoker`). Throttling and transient errors are
retried with full-jitter backoff for up to ``retry_for`` seconds, so a throttled map slows
down instead of failing. A message over the asynchronous-invoke limit travels through the
job storage. Results come back through :class:`~wrencore.watcher.StatusWatcher`, which hears
of them on an SQS completion queue (``wrencore_aws.completion``) and lists S3 only as a
fallback; a call with
no status once its invocation's deadline (function timeout + ``result_grace``) has passed,
and no call has finished for as long (so it cannot still be queued behind others), fails
with :class:`LostCallError` (a :class:`WorkerCrashedError`) instead of hanging.

A function sends the record of each failed event to its failure queue (its on-failure
destination, see ``deploy``). While calls are pending the backend peeks at it; an event
that names a call of ours and whose tag does not verify with our key was refused by the
function, so that call fails with :class:`MessageRefusedError` at once, as the queue
backends do with their dead-letter queues (``wrencore.backends.index_dead_letters``).
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Optional, Set, Tuple

from wrencore.backends import (Backend, Call, Every, cancelled_error, index_dead_letters,
                               of_attempt, refused_error, seal_task, write_cancel_markers)
from wrencore.config import Config
from wrencore.errors import WorkerCrashedError, WrenError
from wrencore.futures import Future, claim
from wrencore.futures import cancel as cancel_future
from wrencore.watcher import StatusWatcher, watcher_options
from wrencore_aws.clients import (call_with_retries, error_code, make_client,
                                  require_region_and_credentials)
from wrencore_aws.completion import channel_for, with_channel
from wrencore_runtime.auth import KIND_PAYLOAD, KIND_RELAY, Signer, sha256_hex
from wrencore_runtime.protocol import encode_json
from wrencore_aws.sqs import peek
from wrencore_runtime.storage import Storage

from .deploy import FAILURE_QUEUE_SUFFIX, Deployer, DeployedFunction, LambdaSettings
from .invoke import EventInvoker

logger = logging.getLogger(__name__)

#: AWS's limit for an asynchronous invocation's payload is 256 KB; keep a margin.
ASYNC_PAYLOAD_LIMIT = 256 * 1024 - 2048


class LostCallError(WorkerCrashedError):
    """A call's invocation was accepted but it never reported: its worker crashed or timed out."""


class InvocationError(WrenError):
    """Lambda refused an invocation for good (not throttling, or throttled past ``retry_for``)."""

    #: Retried by the executor's ``retries`` like a crashed worker (see wrencore.attempts).
    infrastructure_failure = True


def payload_key(job_id: str, first_call_id: str, attempt: int = 0) -> str:
    suffix = f".{attempt}" if attempt else ""
    return f"{job_id}/payloads/{first_call_id}{suffix}.json"


class _CallBudget:
    """A counting semaphore over calls in flight that can take several permits at once.

    Waiters are served first come, first served, and a release wakes only the waiters it
    lets through: with thousands of calls queued behind ``max_in_flight``, waking every
    invoking thread at each finished call cost more client CPU than the invocations.
    """

    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0
        self._lock = threading.Lock()
        self._waiters: "collections.deque[Tuple[int, threading.Event]]" = collections.deque()

    def acquire(self, n: int) -> int:
        n = min(n, self.limit)
        with self._lock:
            if not self._waiters and self.used + n <= self.limit:
                self.used += n
                return n
            turn = threading.Event()
            self._waiters.append((n, turn))
        turn.wait()  # release() counted these permits as used before setting it
        return n

    def release(self, n: int = 1) -> None:
        with self._lock:
            self.used -= n
            while self._waiters and self.used + self._waiters[0][0] <= self.limit:
                wanted, turn = self._waiters.popleft()
                self.used += wanted
                turn.set()


class LambdaBackend(Backend):
    """Runs calls on AWS Lambda. Configuration: ``[aws_lambda]`` (see :class:`LambdaSettings`)."""

    default_storage = "s3"
    default_chunksize = 1
    args_inline_limit = 64 * 1024
    default_runtime = "auto"

    def __init__(self, config: Config, storage: Storage) -> None:
        super().__init__(config, storage)
        self.settings = LambdaSettings.from_config(config)
        require_region_and_credentials(self.settings.client_section)
        self.runtime_platform = ("linux-aarch64" if self.settings.architecture == "arm64"
                                 else "linux-x86_64")
        self.deployer = Deployer(self.settings, storage)  # type: ignore[arg-type]
        self.signer = Signer(self.deployer.key_source)
        self._functions: Dict[str, DeployedFunction] = {}  # by job runtime hash
        self._last_function: Optional[DeployedFunction] = None
        self._function_lock = threading.Lock()
        self._client: Any = None
        self._invoker: Optional[EventInvoker] = None
        self._pool = ThreadPoolExecutor(self.settings.invoke_threads,
                                        thread_name_prefix="wrencore-lambda-invoke")
        self._budget = _CallBudget(self.settings.max_in_flight)
        self._deadlines: Dict[Future, Tuple[float, int]] = {}  # -> (deadline, attempt)
        self._last_progress = 0.0
        self._deadlines_lock = threading.Lock()
        self._channel = channel_for(config, self.settings.client_section)
        #: Calls claimed but not yet invoked (waiting for the max_in_flight budget).
        self._uninvoked: Set[Future] = set()
        #: Calls whose handler looks for cancel markers: in chunks of several, or relayed.
        self._chunked: "weakref.WeakSet[Future]" = weakref.WeakSet()
        self._invoke_lock = threading.Lock()
        self._sqs: Any = None
        self._failure_checks = Every(self.settings.dead_letter_check_interval)
        #: job id -> (call id, attempt) -> why the function refused its event (from the
        #: failure queues; replaced whole by each peek).
        self._refused: Dict[str, Dict[Tuple[str, int], Tuple[str, str]]] = {}
        #: Storage key of each staged (large) event -> its calls, so a refused reference to
        #: one fails those calls as a refused event does (kept while any is pending).
        self._staged: Dict[str, List[Tuple[Future, int]]] = {}
        self._watcher = StatusWatcher(storage, min_interval=0.05, max_interval=1.0,
                                      deadline_check=self._deadline_check,
                                      before_sweep=self._refresh_refusals,
                                      channel=self._channel, **watcher_options(config))

    # -- deployment ------------------------------------------------------------------
    def function(self, job: Optional[Dict[str, Any]] = None) -> DeployedFunction:
        """The checked function for this client and the job's runtime (deployed on first
        use with ``auto_deploy``); one function per runtime, its layer delivering it."""
        if job is None and self._functions:
            return self._last_function
        runtime = (job or {}).get("runtime")
        key = runtime["hash"] if runtime else ""
        with self._function_lock:
            function = self._functions.get(key)
            if function is None:
                deployer = (Deployer(self.settings, self.storage, runtime)  # type: ignore[arg-type]
                            if runtime else self.deployer)
                function = self._functions[key] = deployer.ensure()
            self._last_function = function
            return function

    def preflight(self, job: Dict[str, Any]) -> None:
        self.function(job)

    @property
    def client(self) -> Any:
        if self._client is None:
            with self._function_lock:
                if self._client is None:
                    # botocore tries once; call_with_retries owns backoff and jitter.
                    self._client = make_client("lambda", self.settings.client_section,
                                               max_pool_connections=self.settings.invoke_threads,
                                               max_attempts=1)
        return self._client

    # -- invoking ----------------------------------------------------------------------
    def invoke(self, job: Dict[str, Any], calls: List[Call], chunksize: Optional[int]) -> None:
        function = self.function(job)
        job = with_channel(job, self._channel)
        size = max(1, int(chunksize or self.default_chunksize or 1))
        self._watcher.watch(job["job_id"], {c.call_id: c.future for c in calls})
        relay = self.settings.relay_size
        if size == 1 and self.settings.relay_min and len(calls) >= self.settings.relay_min:
            for start in range(0, len(calls), relay):
                self._pool.submit(self._invoke_relay, function, job, calls[start:start + relay])
            return
        for start in range(0, len(calls), size):
            chunk = calls[start:start + size]
            self._pool.submit(self._invoke_chunk, function, job, chunk)

    @property
    def invoker(self) -> EventInvoker:
        if self._invoker is None:
            client = self.client
            with self._function_lock:
                if self._invoker is None:
                    self._invoker = EventInvoker(client)
        return self._invoker

    def _invoke_event(self, name: str, payload: bytes) -> None:
        self.invoker.invoke(name, payload)

    def _invoke_chunk(self, function: DeployedFunction, job: Dict[str, Any],
                      chunk: List[Call]) -> None:
        try:
            live = self._admit(chunk, marked_from=2)
            if not live:
                return
            payload = self._payload(job, live)
            start = time.time()
            call_with_retries(lambda: self._invoke_event(function.name, payload),
                              retry_for=self.settings.retry_for, what=f"Invoke {function.name}")
        except Exception as exc:
            self._fail_invocation(function, job, chunk, exc)
            return
        self._invoked(live, start, start + function.timeout + self.settings.result_grace)

    def _admit(self, calls: List[Call], marked_from: int) -> List[Call]:
        """Claim ``calls`` and wait for ``max_in_flight`` room for them: the ones to invoke now
        (those cancelled meanwhile are not), each releasing its room and its deadline when
        done. Their handler looks for cancel markers when at least ``marked_from`` are
        invoked together (a chunk of one is invoked as a single call, which does not)."""
        live = [c for c in calls if claim(c.future)]
        if not live:
            return []
        with self._deadlines_lock:  # an earlier attempt's deadline is no longer this one's
            for call in live:
                self._deadlines.pop(call.future, None)
        with self._invoke_lock:
            self._uninvoked.update(c.future for c in live)
        try:
            taken = self._budget.acquire(len(live))
        finally:
            with self._invoke_lock:  # calls cancelled while waiting are not invoked
                self._uninvoked.difference_update(c.future for c in live)
                live = [c for c in live if not c.future.done()]
                if len(live) >= marked_from:
                    self._chunked.update(c.future for c in live)
        if taken > len(live):
            self._budget.release(taken - len(live))
            taken = len(live)
        for index, call in enumerate(live):
            call.future.add_done_callback(self._forget_deadline)
            if index < taken:  # a chunk larger than the cap holds only the cap
                call.future.add_done_callback(self._release_budget)
        return live

    def _invoked(self, calls: List[Call], start: float, deadline: float) -> None:
        """``calls`` were invoked at ``start``: each is lost if silent past ``deadline``."""
        with self._deadlines_lock:
            for call in calls:
                call.future.metadata["host_invoke_timestamp"] = start
                if not call.future.done():
                    self._deadlines[call.future] = (deadline, call.message.get("attempt", 0))

    def _invoke_relay(self, function: DeployedFunction, job: Dict[str, Any],
                      group: List[Call]) -> None:
        """Invoke single calls through relay events: each call gets the signed event it would
        be invoked with, and a relay event (signed too) carries up to ``relay_size`` of them
        to the function, which invokes each itself (``handler.run_relay``). One Invoke from
        this computer per relay event instead of one per call."""
        try:
            live = self._admit(group, marked_from=1)  # the relay looks for markers
            if not live:
                return
            events = [self._payload(job, [call]).decode() for call in live]
        except Exception as exc:
            self._fail_invocation(function, job, group, exc)
            return
        client = self.client
        head = {"function": function.name, "region": client.meta.region_name,
                "endpoint_url": client.meta.endpoint_url, "job": job}
        start = time.time()
        for part in self._relay_parts(head, live, events):
            payload = self.signer.seal_text(KIND_RELAY, encode_json(
                dict(head, calls=[{"call_id": c.call_id, "attempt": c.message.get("attempt", 0),
                                   "event": e} for c, e in part]))).encode()
            try:
                call_with_retries(lambda: self._invoke_event(function.name, payload),
                                  retry_for=self.settings.retry_for,
                                  what=f"Invoke {function.name} (relay)")
            except Exception as exc:
                self._fail_invocation(function, job, [c for c, _ in part], exc)
                continue
            # The relay runs first, then the call: each within the function's timeout.
            self._invoked([c for c, _ in part], start,
                          start + 2 * function.timeout + self.settings.result_grace)

    def _relay_parts(self, head: Dict[str, Any], calls: List[Call],
                     events: List[str]) -> List[List[Tuple[Call, str]]]:
        """``calls`` with their events, split so that each relay event stays under the
        asynchronous event limit (a call's event is at most that limit itself)."""
        base = len(encode_json(head)) + 1024  # the envelope, the signature, the call list
        parts: List[List[Tuple[Call, str]]] = [[]]
        size = base
        for call, event in zip(calls, events):
            cost = len(event) + len(call.call_id) + 64
            if parts[-1] and size + cost > ASYNC_PAYLOAD_LIMIT:
                parts.append([])
                size = base
            parts[-1].append((call, event))
            size += cost
        return parts

    def _fail_invocation(self, function: DeployedFunction, job: Dict[str, Any],
                         calls: List[Call], exc: BaseException) -> None:
        error = InvocationError(
            f"Lambda did not accept the invocation of {function.name} for calls "
            f"{', '.join(c.call_id for c in calls)} of job {job['job_id']}: "
            f"{error_code(exc) or type(exc).__name__}: {exc}")
        for call in calls:
            call.future.fail(error, attempt=call.message.get("attempt", 0))

    # -- cancellation ----------------------------------------------------------------
    def cancel(self, *, futures: List[Future], running: bool = True) -> int:
        """Calls not yet invoked (queued, or waiting for the ``max_in_flight`` budget) are
        never invoked and end cancelled. Invoked calls in a chunk get a cancel marker, so
        the handler skips them if they have not started; with ``running``, every invoked
        call's future ends with :class:`CallCancelledError` at once (a started invocation
        runs on; its outcome is ignored)."""
        cancelled = 0
        invoked = []
        with self._invoke_lock:
            for future in futures:
                if cancel_future(future):
                    cancelled += 1
                elif future in self._uninvoked:
                    cancelled += future.fail(cancelled_error(future, "before it was invoked"))
                elif not future.done():
                    invoked.append(future)
        chunked = [f for f in invoked if f in self._chunked]
        if chunked:
            write_cancel_markers(self.storage, [(f, list(range(f.attempt + 1))) for f in chunked],
                                 stop_running=running)
        if running:
            cancelled += sum(f.fail(cancelled_error(
                f, "after it was invoked; a call already running runs on")) for f in invoked)
        return cancelled

    def stop_attempts(self, *, future: Future, attempts: List[int]) -> None:
        """Losing attempts still waiting in a chunk are skipped by its handler."""
        if future in self._chunked:
            write_cancel_markers(self.storage, [(future, attempts)], stop_running=True)

    def _payload(self, job: Dict[str, Any], calls: List[Call]) -> bytes:
        """The signed event of ``calls``; a large one is staged in storage and the event is a
        signed reference to it that carries its digest."""
        body = seal_task(self.signer, job, [c.message for c in calls]).encode()
        if len(body) <= ASYNC_PAYLOAD_LIMIT:
            return body
        key = payload_key(job["job_id"], calls[0].call_id, calls[0].message.get("attempt", 0))
        self.storage.put(key, body)
        with self._deadlines_lock:
            self._staged[key] = [(c.future, int(c.message.get("attempt") or 0)) for c in calls]
        reference = {"storage": self.storage.to_spec(), "key": key, "sha256": sha256_hex(body)}
        return self.signer.seal_text(KIND_PAYLOAD, encode_json(reference)).encode()

    def _forget_deadline(self, future: Future) -> None:
        with self._deadlines_lock:
            self._deadlines.pop(future, None)
        if not future.cancelled() and not isinstance(future.exception(), LostCallError):
            self._last_progress = time.time()

    def _release_budget(self, future: Future) -> None:
        self._budget.release(1)

    # -- refused events ----------------------------------------------------------------
    def _refresh_refusals(self) -> None:
        """Peek at the failure queues of this client's functions (while invoked calls are
        pending, at most every ``dead_letter_check_interval`` seconds)."""
        with self._deadlines_lock:
            waiting = bool(self._deadlines)
        if not waiting or not self._failure_checks.due():
            return
        if self._sqs is None:
            self._sqs = make_client("sqs", self.settings.client_section)
        refused: Dict[str, Dict[Tuple[str, int], Tuple[str, str]]] = {}
        for function in list(self._functions.values()):
            if not function.failure_queue_url:
                continue
            name = function.name + FAILURE_QUEUE_SUFFIX
            try:
                letters = peek(self._sqs, function.failure_queue_url, name)
            except Exception as exc:
                logger.warning("could not read the failure queue %s: %s", name, exc)
                return  # keep what the last peek found
            events = [failed_event(m.body) for m in letters]
            dead = index_dead_letters(((event, "") for event in events), self.signer)
            for event in events:
                for future, attempt, reason in self._refused_reference(event):
                    dead.setdefault(future.job_id, {})[(future.call_id, attempt)] = reason
            for job_id, calls in dead.items():
                for key, reason in calls.items():
                    if reason:  # a record whose event verifies failed for another reason
                        refused.setdefault(job_id, {})[key] = (reason, name)
        self._refused = refused

    def _refused_reference(self, event: str) -> List[Tuple[Future, int, str]]:
        """The calls of a staged event whose signed reference the function refused (a
        reference names only its storage key; this client knows which calls it staged there)."""
        from wrencore_runtime.auth import RELOAD_INTERVAL, parse_text
        from wrencore_runtime.errors import MessageRefusedError

        try:
            envelope = parse_text(event)
            key = json.loads(envelope["body"])["key"] \
                if envelope.get("signed") == KIND_PAYLOAD else None
        except Exception:
            return []
        with self._deadlines_lock:
            futures = self._staged.get(key) if isinstance(key, str) else None
            for staged in [k for k, calls in self._staged.items()
                           if all(future.done() for future, _ in calls)]:
                del self._staged[staged]
        if not futures:
            return []
        try:
            self.signer.ring().unseal(envelope, KIND_PAYLOAD)
            self.signer.ring(max_age=RELOAD_INTERVAL).unseal(envelope, KIND_PAYLOAD)
            return []  # it verifies: the invocation failed for another reason
        except MessageRefusedError as exc:
            reason = exc.reason
        except Exception as exc:  # the key unreachable: say so rather than guess
            reason = f"could not check its tag: {exc}"
        return [(future, attempt, reason) for future, attempt in futures if not future.done()]

    def _refused_check(self, future: Future) -> Optional[BaseException]:
        refused = self._refused.get(future.job_id)  # replaced whole by _refresh_refusals
        found = refused.get((future.call_id, future.attempt)) if refused else None
        return refused_error(future, *found) if found else None

    def _deadline_check(self, future: Future) -> Optional[BaseException]:
        refused = self._refused_check(future)
        if refused is not None:
            return refused
        # Every invocation ends within the function's timeout, so while calls keep
        # finishing, a silent one may still be waiting in Lambda's event queue. It is lost
        # once both its own deadline and one timeout (+ grace) without any progress passed.
        with self._deadlines_lock:
            deadline, attempt = self._deadlines.get(future, (None, 0))
        now = time.time()
        stall_limit = self.settings.timeout + self.settings.result_grace
        if deadline is None or now < deadline or now < self._last_progress + stall_limit:
            return None
        function = self._last_function
        name = function.name if function else "?"
        waited = now - future.metadata.get("host_invoke_timestamp", deadline)
        return of_attempt(LostCallError(
            f"call {future.call_id} of job {future.job_id} has no result {waited:.0f} s after "
            f"Lambda accepted its invocation (function {name}, timeout "
            f"{function.timeout if function else '?'} s): the worker process crashed or was "
            f"stopped by the Lambda timeout. See the CloudWatch log group /aws/lambda/{name}."
        ), attempt)

    def shutdown(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait)
        if wait or not self._watcher.pending_count():
            self._watcher.stop()  # and delete the completion queue


def failed_event(record: str) -> str:
    """The original event (JSON text) of a failure record Lambda sent to a failure queue;
    "" if the record has none."""
    try:
        payload = json.loads(record).get("requestPayload")
    except (ValueError, AttributeError):
        return ""
    if payload is None:
        return ""
    return payload if isinstance(payload, str) else json.dumps(payload)
