"""The ``aws_sqs_ec2`` backend: calls go to an SQS queue that an EC2 fleet works off.

``invoke`` makes sure the queue and enough instances exist, then sends one task message
per chunk of calls (arguments inline when small, else staged in storage by the executor;
results come back through storage). A :class:`~wrencore.watcher.StatusWatcher` completes
futures from the statuses workers publish to an SQS completion queue (storage is listed as
the fallback). Calls whose message reached the dead-letter
queue — because it kept crashing its worker — fail with :class:`WorkerCrashedError`. When
the task queue fails for good (deleted, access denied; see :class:`_QueueHealth`), every
pending call ends with :class:`QueueError` naming the operation and the queue, after
``storage_retry_for`` seconds of failures in a row or 3 that repeating cannot fix. When
it has held nothing for ``lost_after_empty`` seconds (see :class:`_EmptyQueue`), the calls
still waiting lost their messages (purged by hand) and fail with
:class:`WorkerCrashedError`.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Dict, List, Optional

from wrencore.backends import (Backend, Call, Every, cancelled_error, index_dead_letters,
                               of_attempt, refused_error, task_message_bodies,
                               write_cancel_markers)
from wrencore.config import Config
from wrencore.errors import QueueError, WorkerCrashedError
from wrencore.futures import Future, claim
from wrencore.futures import cancel as cancel_future
from wrencore.watcher import StatusWatcher, watcher_options
from wrencore_aws.completion import channel_for, with_channel
from wrencore_runtime.auth import Signer
from wrencore_runtime.storage import Storage

from .api import Standalone

logger = logging.getLogger(__name__)

#: SQS accepts bodies up to 256 KiB; chunks are split to stay well below.
MESSAGE_LIMIT = 200 * 1024
#: Seconds after a send before SQS's approximate counts can be trusted to include it.
SQS_COUNTS_SETTLE = 60.0


class _QueueHealth:
    """The task queue's consecutive failures, judged as the watcher judges storage's: give
    up after ``give_up_after`` seconds of failures in a row, or ``permanent_attempts`` in a
    row that repeating cannot fix (a deleted queue, access denied). Each request was already
    retried with backoff by boto3 (throttling, 5xx, lost connections)."""

    def __init__(self, queue_name: str, give_up_after: float, permanent_attempts: int = 3):
        self.queue_name = queue_name
        self.give_up_after = give_up_after
        self.permanent_attempts = permanent_attempts
        self.started = 0.0
        self.attempts = 0
        #: The error every pending call ends with once the queue is given up; None while it
        #: works (a later success clears it).
        self.failure: Optional[QueueError] = None

    def succeeded(self) -> None:
        self.attempts, self.failure = 0, None

    def failed(self, exc: BaseException) -> None:
        now = time.monotonic()
        if self.attempts == 0:
            self.started = now
        self.attempts += 1
        failing_for = now - self.started
        transient = getattr(exc, "transient", True)
        if failing_for < self.give_up_after and (
                transient or self.attempts < self.permanent_attempts):
            logger.warning("the task queue %s failed (%d in a row, %.1f s), will retry: %s",
                           self.queue_name, self.attempts, failing_for, exc)
            return
        what = str(exc) if isinstance(exc, QueueError) else (
            f"a request to queue {self.queue_name} failed: {type(exc).__name__}: {exc}")
        if self.failure is None:
            logger.error("giving up on the calls queued on %s: %s", self.queue_name, what)
        self.failure = QueueError(
            f"{what} (failed {self.attempts} times in a row over {failing_for:.1f} s; the "
            f"call's message can no longer reach a worker or be found — check the queue "
            f"{self.queue_name}, then run the call again)", transient=transient)
        self.failure.__cause__ = exc


class _EmptyQueue:
    """Whether the task queue has looked empty long enough that the calls still waiting
    for an outcome can no longer be in it.

    SQS's counts are approximate, and a message sent a moment ago may not be counted yet
    (they settle within about a minute: ``settle``). So the queue counts as empty only in
    looks that find nothing waiting and nothing in flight, taken ``grace`` seconds (and
    ``settle`` at least) after this client last sent to it, one after the other for
    ``grace`` seconds. A message that a worker is running stays in flight (its heartbeat
    holds it), and one whose outcome is stored is deleted only after it is: so a call
    still waiting then lost its message (purged, deleted by hand) and nothing will run
    it. The watcher reads the job's outcomes once more before it gives such a call up."""

    def __init__(self, grace: float, settle: float = 60.0) -> None:
        self.grace = grace
        self.settle = max(grace, settle)
        self._sent = -float("inf")
        self._empty_since: Optional[float] = None
        self._lock = threading.Lock()  # sends (the caller's thread), looks (the watcher's)

    def sent(self) -> None:
        with self._lock:
            self._sent, self._empty_since = time.monotonic(), None

    def looked(self, depth: Dict[str, int]) -> None:
        with self._lock:
            now = time.monotonic()
            if depth.get("visible") or depth.get("in_flight") \
                    or now - self._sent < self.settle:
                self._empty_since = None
            elif self._empty_since is None:
                self._empty_since = now

    def for_long(self) -> Optional[float]:
        """Seconds the queue has looked empty, once that is ``grace`` or more; else None."""
        if self.grace <= 0:
            return None
        with self._lock:
            since = self._empty_since
        if since is None:
            return None
        empty_for = time.monotonic() - since
        return empty_for if empty_for >= self.grace else None


class StandaloneBackend(Backend):
    default_storage = "s3"
    # Inline arguments are base64-encoded in a JSON body, which SQS caps at 256 KiB.
    args_inline_limit = 32 * 1024
    result_inline_limit = 64 * 1024
    default_chunksize = 1
    default_runtime = "auto"
    #: A job's environment on an instance also reads and writes S3.
    runtime_requirements = ("wrencore[aws]",)

    def __init__(self, config: Config, storage: Storage) -> None:
        from wrencore_aws.clients import require_region_and_credentials

        super().__init__(config, storage)
        self.standalone = Standalone(config, storage=storage)
        self.settings = self.standalone.settings
        require_region_and_credentials(dict(config.section("aws_sqs_ec2")))
        self.signer = Signer(self.standalone.key_source)
        self.runtime_platform = self.settings.platform
        self.channel = channel_for(config, {"region": self.settings.region})
        self.watcher = StatusWatcher(storage, deadline_check=self._dead_letter_check,
                                     before_sweep=self._periodic_checks,
                                     channel=self.channel, **watcher_options(config))
        #: job id -> (call id, attempt) -> receives
        self._dead: Dict[str, Dict[tuple, int]] = {}
        self._dead_letter_checks = Every(self.settings.dead_letter_check_interval)
        self._fleet_checks = Every(self.settings.fleet_check_interval, start_due=False)
        self._dead_lock = threading.Lock()
        self._queue_health = _QueueHealth(self.settings.queue_name,
                                          watcher_options(config)["give_up_after"])
        self._empty_queue = _EmptyQueue(self.settings.lost_after_empty, SQS_COUNTS_SETTLE)

    # -- invoke ----------------------------------------------------------------------
    def invoke(self, job: Dict[str, Any], calls: List[Call], chunksize: Optional[int]) -> None:
        live = [c for c in calls if claim(c.future)]
        if not live:
            return
        self.watcher.watch(job["job_id"], {c.call_id: c.future for c in live})
        try:
            bodies = task_message_bodies(with_channel(job, self.channel), live,
                                         max(1, int(chunksize or 1)), MESSAGE_LIMIT,
                                         "SQS's limit", self.signer)
            queue = self.standalone.queue
            self._empty_queue.sent()  # before and after: no look in between counts
            queue.send_batch([body for body, _ in bodies])
            self._empty_queue.sent()
        except Exception as exc:
            for call in live:
                call.future.fail(exc, attempt=call.message.get("attempt", 0))
            return
        try:
            launched = self.standalone.ensure_fleet(len(bodies))
            if launched:
                logger.info("launched %d worker instance(s) for job %s", len(launched),
                            job["job_id"])
        except Exception as exc:
            # Queued calls are not lost: running instances or a later launch run them.
            logger.error("could not launch worker instances: %s: %s", type(exc).__name__, exc)
            if not self.standalone.provider.live():
                for call in live:
                    call.future.fail(exc)

    # -- cancellation ----------------------------------------------------------------
    def cancel(self, *, futures: List[Future], running: bool = True) -> int:
        """Calls not yet sent end ``cancelled()``. Queued or running ones get a cancel
        marker: a daemon does not start such a call and, with ``running``, stops it while it
        runs (see ``wrencore_runtime.daemon``); with ``running`` their futures also end with
        :class:`CallCancelledError` at once, without them they end with what the daemon
        reports (a cancelled status if it had not started the call)."""
        cancelled = 0
        sent = []
        for future in futures:
            if cancel_future(future):
                cancelled += 1
            elif not future.done():
                sent.append(future)
        if not sent:
            return cancelled
        write_cancel_markers(self.storage, [(f, list(range(f.attempt + 1))) for f in sent],
                             stop_running=running)
        if running:
            cancelled += sum(f.fail(cancelled_error(f, "by the user; its worker stops it"))
                             for f in sent)
        return cancelled

    def stop_attempts(self, *, future: Future, attempts: List[int]) -> None:
        write_cancel_markers(self.storage, [(future, attempts)], stop_running=True)

    # -- dead letters ----------------------------------------------------------------
    def _refresh_dead_letters(self) -> None:
        if not self._dead_letter_checks.due():
            return
        try:
            depth = self.standalone.queue.depth()  # the task queue, not only its dead letters
            letters = self.standalone.dead_letters()
        except Exception as exc:
            self._queue_health.failed(exc)
            return
        self._queue_health.succeeded()
        self._empty_queue.looked(depth)
        dead = index_dead_letters(((letter.body, letter.receive_count) for letter in letters),
                                  self.signer)
        with self._dead_lock:
            self._dead = dead

    def _keep_fleet(self) -> None:
        """Follow the queue: relaunch if calls wait but no instance is live (e.g. one idled
        out as they came), grow with the queue's depth, keep ``min_instances``."""
        if not self._fleet_checks.due():
            return
        try:
            launched = self.standalone.ensure_fleet()  # as many as the queue's depth asks
        except Exception as exc:
            logger.warning("could not check the fleet: %s: %s", type(exc).__name__, exc)
            return
        if launched:
            logger.info("relaunched %d worker instance(s) for waiting calls", len(launched))

    def _periodic_checks(self) -> None:
        """Once per pass of the watcher over the pending calls (not once per call)."""
        self._keep_fleet()
        self._refresh_dead_letters()

    def _dead_letter_check(self, future: Future) -> Optional[BaseException]:
        dead = self._dead.get(future.job_id)  # replaced whole by _refresh_dead_letters
        receives = dead.get((future.call_id, future.attempt)) if dead else None
        if receives is None:
            if self.watcher.listing_failing(future.job_id):
                return None  # storage fails too (e.g. the region's endpoint): StorageError
            return self._queue_health.failure or self._lost_message(future)
        if isinstance(receives, str):
            return refused_error(future, receives, f"{self.settings.queue_name}-dlq")
        return of_attempt(WorkerCrashedError(
            f"call {future.call_id} of job {future.job_id} never reported a result: its "
            f"message was received {self.settings.max_receives} times and moved to the "
            f"dead-letter queue {self.settings.queue_name}-dlq. The call probably kills its "
            f"worker process (os._exit, a segfault, running out of memory); its message is "
            f"still there for inspection."), future.attempt)

    def _lost_message(self, future: Future) -> Optional[BaseException]:
        empty_for = self._empty_queue.for_long()
        if empty_for is None:
            return None
        return of_attempt(WorkerCrashedError(
            f"call {future.call_id} of job {future.job_id} never reported a result and its "
            f"message is no longer queued: the task queue {self.settings.queue_name} has "
            f"held nothing, waiting or in flight, for {empty_for:.0f} s (lost_after_empty). "
            f"It was purged or its message deleted by hand, so no worker will run the call; "
            f"run it again."), future.attempt)

    def shutdown(self, wait: bool = True) -> None:
        if wait:
            deadline = time.monotonic() + 3600
            while self.watcher.pending_count() and time.monotonic() < deadline:
                time.sleep(0.1)
        self.watcher.stop()
