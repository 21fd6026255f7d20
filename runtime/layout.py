"""The storage key layout: the one place that says where a job's objects live.

Every backend and every storage uses these keys, relative to the storage's own root or
prefix::

    {job_id}/job.json                  job header (JSON): versions, storage, options
    {job_id}/func.pickle               the function and the user's local modules
    {job_id}/timeline.json             written by the client when the job ends: each call's
                                       state, submit/start/finish times and worker
    {job_id}/{call_id}/args.pickle     a call's arguments, when too large to travel inline
    {job_id}/{call_id}/result.pickle   a call's pickled result, when not returned inline
    {job_id}/{call_id}/status.json     a call's outcome and metadata (and its pickled result
                                       under "result" when small); written last
    {job_id}/{call_id}/batch-status[-to-{last_call_id}].json
                                       outcomes (and small results) of several calls run
                                       together, {call_id} through {last_call_id} of one
                                       chunk; written last
    {job_id}/cancel/{call_id}.json     the call's cancel marker: the client asks workers not
                                       to start the call (and, if its ``stop_running`` says
                                       so, to stop it while it runs); all of a job's markers
                                       share a prefix, so one listing finds them

A call run again (a retry, or a backup of a straggler; see ``wrencore.attempts``) writes
under names of its own: attempt ``n`` > 0 of a call writes ``result.{n}.pickle``,
``status.{n}.json``, ``batch-status.{n}.json`` and ``cancel/{call_id}.{n}.json``, so a late outcome of one attempt can never
overwrite or be mistaken for another's, and cancelling one attempt (the loser of a backup
race) leaves the others running. Attempt 0 keeps the plain names.

A worker that finds a call's cancel marker before starting it writes a cancelled status
(:class:`~wrencore_runtime.errors.CallCancelledError`) instead of running it; the standalone
daemon also looks for the marker of the call it runs, and stops it.

``status.json`` is the commit marker: a worker writes ``result.pickle`` first and
``status.json`` after it, and every storage writes objects atomically, so a reader that sees
a status never sees a partial result. Writes are idempotent: a redelivered call rewrites the
same keys with an equivalent outcome. Deleting ``{job_id}/`` removes everything of a job.

Runtimes (worker environments, see ``runtime/environment.py``) live beside the jobs, shared
by every job that uses them::

    runtimes/{hash}/wheels/{wheel file}   the runtime's distributions
    runtimes/{hash}/runtime.json          its manifest; written last (the commit marker)
    runtimes/{hash}/bundle.tar            the wheels in one object (for instance bootstrap)
"""

import re

JOB_HEADER = "job.json"
TIMELINE = "timeline.json"
FUNCTION = "func.pickle"
ARGS = "args.pickle"
RESULT = "result.pickle"
STATUS = "status.json"
BATCH_STATUS = "batch-status.json"
CANCEL_DIR = "cancel"


def job_prefix(job_id: str) -> str:
    return f"{job_id}/"


def job_header_key(job_id: str) -> str:
    return f"{job_id}/{JOB_HEADER}"


def timeline_key(job_id: str) -> str:
    return f"{job_id}/{TIMELINE}"


def function_key(job_id: str) -> str:
    return f"{job_id}/{FUNCTION}"


def call_prefix(job_id: str, call_id: str) -> str:
    return f"{job_id}/{call_id}/"


def args_key(job_id: str, call_id: str) -> str:
    return f"{job_id}/{call_id}/{ARGS}"


def _of_attempt(name: str, attempt: int) -> str:
    """``status.json`` for attempt 0, ``status.{attempt}.json`` for a later one."""
    if not attempt:
        return name
    stem, _, extension = name.rpartition(".")
    return f"{stem}.{int(attempt)}.{extension}"


def _attempt_of(filename: str, name: str) -> "int | None":
    """The attempt whose ``name`` (e.g. ``status.json``) ``filename`` is, or None."""
    if filename == name:
        return 0
    stem, _, extension = name.rpartition(".")
    if filename.startswith(stem + ".") and filename.endswith("." + extension):
        number = filename[len(stem) + 1:-len(extension) - 1]
        if number.isdigit() and not number.startswith("0"):
            return int(number)
    return None


def result_key(job_id: str, call_id: str, attempt: int = 0) -> str:
    return f"{job_id}/{call_id}/{_of_attempt(RESULT, attempt)}"


def status_key(job_id: str, call_id: str, attempt: int = 0) -> str:
    return f"{job_id}/{call_id}/{_of_attempt(STATUS, attempt)}"


def parse_status_key(key: str) -> "tuple[str, int] | None":
    """``(call_id, attempt)`` of a call's status key (any attempt), or None for other keys."""
    parts = key.rstrip("/").split("/")
    if len(parts) < 3:
        return None
    attempt = _attempt_of(parts[-1], STATUS)
    return None if attempt is None else (parts[-2], attempt)


def call_id_of_status_key(key: str) -> "str | None":
    """The call id in a ``{job_id}/{call_id}/status[.n].json`` key, or None for other keys."""
    parsed = parse_status_key(key)
    return parsed[0] if parsed else None


def cancel_prefix(job_id: str) -> str:
    """Where every cancel marker of a job lives."""
    return f"{job_id}/{CANCEL_DIR}/"


def cancel_key(job_id: str, call_id: str, attempt: int = 0) -> str:
    """The cancel marker of ``attempt`` of a call (see the module's docstring)."""
    return f"{job_id}/{CANCEL_DIR}/{_of_attempt(call_id + '.json', attempt)}"


def batch_status_key(job_id: str, first_call_id: str, attempt: int = 0,
                     last_call_id: "str | None" = None) -> str:
    """Where the outcomes of a run of a chunk's calls, from ``first_call_id`` through
    ``last_call_id`` (at ``attempt``), are written: ``batch-status.json`` for a single call,
    ``batch-status-to-{last_call_id}.json`` for several. The key names every call it covers
    (a chunk's calls in call-id order), so a batch that cannot be read still says whose
    outcomes it held."""
    name = BATCH_STATUS if last_call_id in (None, first_call_id) \
        else f"batch-status-to-{last_call_id}.json"
    return f"{job_id}/{first_call_id}/{_of_attempt(name, attempt)}"


_BATCH_NAME = re.compile(r"batch-status(?:-to-(?P<last>[^/.]+))?(?:\.(?P<attempt>[1-9][0-9]*))?"
                         r"\.json\Z")


def attempt_of_batch_status_key(key: str) -> "int | None":
    """The attempt of a batch status key's first call, or None for other keys."""
    match = _BATCH_NAME.match(key.rsplit("/", 1)[-1])
    return None if match is None else int(match["attempt"] or 0)


def is_batch_status_key(key: str) -> bool:
    return attempt_of_batch_status_key(key) is not None


def _call_order(call_id: str) -> "tuple[int, str]":
    return len(call_id), call_id  # "00009" < "00010" < "100000"


def call_order(call_id: str) -> "tuple[int, str]":
    """A sort key putting call ids in the order calls were made."""
    return _call_order(call_id)


def batch_status_range(key: str) -> "tuple[str, str] | None":
    """The first and last call ids a batch status key covers, or None for other keys."""
    parts = key.rstrip("/").split("/")
    match = _BATCH_NAME.match(parts[-1]) if len(parts) >= 3 else None
    if match is None:
        return None
    return parts[-2], match["last"] or parts[-2]


def batch_status_covers(key: str, call_id: str) -> bool:
    """Whether the batch status ``key`` holds the outcome of ``call_id`` (of its attempt)."""
    covered = batch_status_range(key)
    if covered is None:
        return False
    return _call_order(covered[0]) <= _call_order(call_id) <= _call_order(covered[1])


RUNTIMES = "runtimes/"


def runtime_prefix(runtime_hash: str) -> str:
    return f"{RUNTIMES}{runtime_hash}/"


def runtime_manifest_key(runtime_hash: str) -> str:
    return f"{RUNTIMES}{runtime_hash}/runtime.json"


def runtime_wheel_key(runtime_hash: str, filename: str) -> str:
    return f"{RUNTIMES}{runtime_hash}/wheels/{filename}"


def runtime_bundle_key(runtime_hash: str) -> str:
    return f"{RUNTIMES}{runtime_hash}/bundle.tar"
