"""The AWS Lambda entry point: a thin adapter over :class:`~wrencore_runtime.runner.JobRunner`.

Handler string: ``wrencore_aws_lambda.handler.handler``. The event is a signed task
message (see :mod:`wrencore_runtime.protocol` and :mod:`wrencore_runtime.auth`), or — when
the message is larger than the asynchronous-invoke limit — a signed reference to it in
storage carrying its digest::

    {"storage": <spec>, "key": "<job_id>/payloads/<call_id>.json", "sha256": "<hex>"}

An event may also be a signed *relay* event, which carries calls for the function to invoke
itself, each with its own signed event (:func:`run_relay`; see ``wrencore_aws_lambda.backend``).

An event that is malformed or does not verify with the task key (read from the SSM
parameter ``WRENCORE_TASK_KEY`` names) is refused before anything of it is read or
unpickled: the invocation fails with :class:`MessageRefusedError` after a log line saying
why, and is not retried (the function's asynchronous retries are 0).

Each call's outcome is written to storage (result first, then status); the calls of a
chunk report in batch statuses (see ``layout.batch_status_key``) written behind the calls,
so a finished call keeps its outcome when a later call of its chunk times out or crashes.
Each write is then published to the client's completion channel, when the job has one
(see :mod:`wrencore_runtime.completion`). Before each call of a chunk the handler looks for
the call's cancel marker (``layout.cancel_key``, one listing of the job's markers serving the
calls of half a second); a cancelled call is not run and reports a cancelled status. A call gets at most
its own timeout and never more than what is left of the Lambda invocation, so a call that
would outlive the function's timeout fails with :class:`CallTimeoutError` that says so,
rather than being killed without a status.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from typing import Any, Dict, Optional

from wrencore_runtime import completion, layout
from wrencore_runtime.auth import Verifier, check_digest, open_or_refuse
from wrencore_runtime.errors import CallTimeoutError, IntegrityError, MessageRefusedError
from wrencore_runtime.protocol import encode_json
from wrencore_runtime.runner import (CancelChecks, JobRunner, cancelled_status, describe_exception,
                                     failed_status)
from wrencore_runtime.storage import storage_from_spec

logger = logging.getLogger(__name__)
# INFO whatever the root's level: each call's start line lets a client find, in the function's
# CloudWatch log group, what a call logged even if its sandbox died (wrencore_call_logs).
logger.setLevel(logging.INFO)

#: Seconds kept back from the invocation's remaining time to write the last call's outcome.
SAFETY_MARGIN = float(os.environ.get("WRENCORE_LAMBDA_SAFETY_MARGIN", "0.5"))

_runner: Optional[JobRunner] = None
_verifier: Optional[Verifier] = None
#: The function's environment variable naming where the task key is (not the key).
TASK_KEY_VARIABLE = "WRENCORE_TASK_KEY"


def _get_runner(context: Any) -> JobRunner:
    global _runner
    if _runner is None:
        stream = getattr(context, "log_stream_name", "") or ""
        _runner = JobRunner(worker_id=f"lambda-{stream or os.getpid()}")
    return _runner


def _get_verifier() -> Verifier:
    global _verifier
    if _verifier is None:
        spec = os.environ.get(TASK_KEY_VARIABLE)
        _verifier = Verifier.from_spec(json.loads(spec) if spec else None)
    return _verifier


def _load_message(event: Any, request_id: str = "") -> Dict[str, Any]:
    """The verified task message of ``event``; :class:`MessageRefusedError` if refused.

    A payload reference is verified before its object is read, and the object — itself a
    signed task message — must have the digest the reference carries.
    """
    verifier = _get_verifier()
    opened = open_or_refuse(verifier, event, request_id or "event", allow_payload=True,
                            allow_relay=True)
    if opened is not None and "payload" in opened:
        reference = opened["payload"]
        body = storage_from_spec(reference["storage"]).get(reference["key"])
        try:
            check_digest(body, reference["sha256"], f"the payload {reference['key']}")
        except IntegrityError as exc:
            verifier.refused += 1
            logger.error("refused event %s: %s", request_id or "event", exc)
            raise
        opened = open_or_refuse(verifier, body, reference["key"])
    if opened is None:
        raise MessageRefusedError(
            "this Lambda function refused the event (see the log line above): it runs only "
            "task messages signed with its task key; nothing of the event was run or read")
    return opened


def _out_of_time_status(job: Dict[str, Any], call: Dict[str, Any], budget: float) -> Dict[str, Any]:
    error = CallTimeoutError(
        f"call {call['call_id']} did not start: its Lambda invocation had {budget:.1f} s left of "
        f"the function's timeout after the earlier calls of its chunk. Use a smaller chunksize "
        f"or a larger [aws_lambda] timeout."
    )
    return {
        "job_id": job["job_id"], "call_id": call["call_id"],
        "attempt": call.get("attempt", 0), "success": False,
        "result_key": None, "exception": describe_exception(error), "stdout": "", "stderr": "",
        "metadata": {"host_submit_timestamp": call.get("host_submit_timestamp")},
    }


def _relabel_lambda_timeout(status: Dict[str, Any], limit: float, function_timeout: float) -> None:
    error = CallTimeoutError(
        f"call {status['call_id']} was stopped after {limit:.1f} s so that it could report "
        f"before the Lambda function's timeout of {function_timeout:g} s; raise "
        f"[aws_lambda] timeout or split the work"
    )
    original = status.get("exception") or {}
    described = describe_exception(error)
    described["traceback"] = original.get("traceback") or described["traceback"]
    status["exception"] = described


class _Reporter:
    """Writes outcomes: one status per call, or — for a chunk — batch statuses written behind.

    In a chunk, a writer thread puts the outcomes of finished calls as soon as its previous
    write is done, coalescing the calls that finished meanwhile into one batch status. A
    call's outcome is thus durable about one storage write after it ends — before a later
    call of its chunk can run into the function's timeout or kill the sandbox — while a
    chunk of quick calls still costs far fewer writes than calls.
    """

    def __init__(self, storage: Any, job: Dict[str, Any], batched: bool):
        self.storage, self.job, self.batched = storage, job, batched
        self._statuses: list = []
        self._results: Dict[str, bytes] = {}
        self._closing = False
        self._cond = threading.Condition()
        self._writer: Optional[threading.Thread] = None
        if batched:
            self._writer = threading.Thread(target=self._write_behind, daemon=True,
                                            name="wrencore-status-writer")
            self._writer.start()

    def add(self, status: Dict[str, Any], result: Optional[bytes]) -> None:
        job_id, call_id, attempt = self.job["job_id"], status["call_id"], status.get("attempt", 0)
        if not self.batched:
            if result is not None:
                key = layout.result_key(job_id, call_id, attempt)
                self.storage.put(key, result)
                status["result_key"] = key
            key = layout.status_key(job_id, call_id, attempt)
            self.storage.put(key, encode_json(status).encode())
            completion.publish(self.job, [status], {call_id: result} if result else None, key)
            return
        with self._cond:
            self._statuses.append(status)
            if result is not None:
                self._results[call_id] = result
            self._cond.notify_all()

    def _take(self) -> tuple:
        statuses, results = self._statuses, self._results
        self._statuses, self._results = [], {}
        return statuses, results

    def _put_batch(self, statuses: list, results: Dict[str, bytes]) -> None:
        key = layout.batch_status_key(self.job["job_id"], statuses[0]["call_id"],
                                      statuses[0].get("attempt", 0), statuses[-1]["call_id"])
        batch = {"job_id": self.job["job_id"], "statuses": statuses, "results": results}
        self.storage.put(key, encode_json(batch).encode())
        completion.publish(self.job, statuses, results, key)

    def _write_behind(self) -> None:
        while True:
            with self._cond:
                while not self._statuses and not self._closing:
                    self._cond.wait()
                if not self._statuses:
                    return
                statuses, results = self._take()
            try:
                self._put_batch(statuses, results)
            except Exception as exc:  # close() writes them again and reports the error
                logger.warning("writing the statuses of calls %s failed: %s",
                               [s["call_id"] for s in statuses], exc)
                with self._cond:
                    self._statuses[:0] = statuses
                    self._results.update(results)
                return

    def close(self) -> None:
        """Write every outcome not yet written and stop the writer."""
        if self._writer is not None:
            with self._cond:
                self._closing = True
                self._cond.notify_all()
            self._writer.join()
        with self._cond:
            statuses, results = self._take()
        if statuses:
            self._put_batch(statuses, results)


def run_message(message: Dict[str, Any], remaining_time, function_timeout: float,
                runner: JobRunner) -> Dict[str, int]:
    """Run every call of ``message``, each within the invocation's remaining time."""
    job = message["job"]
    storage = storage_from_spec(job["storage"])
    chunk = len(message["calls"]) > 1
    reporter = _Reporter(storage, job, batched=chunk)
    checks = CancelChecks(storage, job) if chunk else None
    succeeded = failed = cancelled = 0
    try:
        for call in message["calls"]:
            if checks is not None and checks.cancelled(call):
                reporter.add(cancelled_status(job, call, "before it started"), None)
                cancelled += 1
                continue
            budget = remaining_time() - SAFETY_MARGIN
            if budget <= 0.05:
                reporter.add(_out_of_time_status(job, call, max(budget, 0.0)), None)
                failed += 1
                continue
            job_timeout = job.get("timeout")
            lambda_binds = job_timeout is None or budget < float(job_timeout)
            call_job = dict(job, timeout=budget) if lambda_binds else job
            logger.info("call %s/%s started (attempt %d)", job["job_id"], call["call_id"],
                        call.get("attempt", 0))
            outcome = runner.run(call_job, call, store=False, storage=storage)
            status = outcome.status
            exc_type = (status.get("exception") or {}).get("type", "")
            if lambda_binds and exc_type.endswith("CallTimeoutError"):
                _relabel_lambda_timeout(status, budget, function_timeout)
            reporter.add(status, outcome.result)
            if status["success"]:
                succeeded += 1
            else:
                failed += 1
    finally:
        reporter.close()
    return {"calls": succeeded + failed + cancelled, "succeeded": succeeded, "failed": failed,
            "cancelled": cancelled}


#: Invocations a relay event's handler sends at once.
RELAY_THREADS = 8


def _relay_failure_status(job: Dict[str, Any], call: Dict[str, Any], function: str,
                          exc: BaseException) -> Dict[str, Any]:
    from wrencore_runtime.errors import WorkerCrashedError

    error = WorkerCrashedError(
        f"call {call['call_id']} of job {job['job_id']} was never started: the invocation "
        f"relaying it could not invoke {function}: {type(exc).__name__}: {exc}")
    return failed_status(job, call, error)


def run_relay(relay: Dict[str, Any], client: Any = None) -> Dict[str, int]:
    """Invoke each call of a relay event (see ``wrencore_aws_lambda.backend``) as its own
    asynchronous invocation of ``relay["function"]``, with the event the client signed for
    it. A call cancelled meanwhile (its cancel marker, as a chunk's handler looks for) is
    not invoked and gets a cancelled status; a call that cannot be invoked (botocore has
    retried throttling and transient errors) gets a failed status saying why, so its
    future ends at once."""
    if client is None:
        import boto3  # in every Lambda Python runtime
        from botocore.config import Config

        client = boto3.client("lambda", region_name=relay.get("region") or None,
                              endpoint_url=relay.get("endpoint_url") or None,
                              config=Config(retries={"mode": "standard", "max_attempts": 8},
                                            max_pool_connections=RELAY_THREADS))
    job, function = relay["job"], relay["function"]
    storage = storage_from_spec(job["storage"])
    checks = CancelChecks(storage, job)
    failures = []

    def invoke(call: Dict[str, Any]) -> None:
        try:
            response = client.invoke(FunctionName=function, InvocationType="Event",
                                     Payload=call["event"].encode())
            response["Payload"].read()
        except Exception as exc:
            logger.error("could not relay call %s/%s: %s: %s", job["job_id"], call["call_id"],
                         type(exc).__name__, exc)
            failures.append(_relay_failure_status(job, call, function, exc))

    from concurrent.futures import ThreadPoolExecutor

    calls, cancelled = [], []
    for call in relay["calls"]:
        if checks.cancelled(call):
            cancelled.append(cancelled_status(job, call, "before it was invoked"))
        else:
            calls.append(call)
    with ThreadPoolExecutor(max(1, min(RELAY_THREADS, len(calls)))) as pool:
        list(pool.map(invoke, calls))
    if failures or cancelled:
        reporter = _Reporter(storage, job, batched=False)
        for status in failures + cancelled:
            reporter.add(status, None)
    return {"relayed": len(calls) - len(failures), "failed": len(failures),
            "cancelled": len(cancelled)}


def handler(event: Dict[str, Any], context: Any) -> Dict[str, int]:
    message = _load_message(event, getattr(context, "aws_request_id", ""))
    if "relay" in message:
        return run_relay(message["relay"])
    function_timeout = float(os.environ.get("WRENCORE_FUNCTION_TIMEOUT", "0") or 0)

    def remaining_time() -> float:
        return context.get_remaining_time_in_millis() / 1000.0

    return run_message(message, remaining_time, function_timeout or remaining_time(),
                       _get_runner(context))


if os.environ.get(TASK_KEY_VARIABLE):  # in the sandbox's init phase, not an invocation's time
    _get_verifier().prefetch()
