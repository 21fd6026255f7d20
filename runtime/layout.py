"""The storage key layout: the one place that says where a job's objects live.

Every backend and every storage uses these keys, relative to the storage's own root or
prefix::

    {job_id}/job.json                  job header (JSON): versions, storage, options
    {job_id}/func.pickle               the function and the user's local modules
    {job_id}/{call_id}/args.pickle     a call's arguments, when too large to travel inline
    {job_id}/{call_id}/result.pickle   a call's pickled result, when not returned inline
    {job_id}/{call_id}/status.json     a call's outcome and metadata (and its pickled result
                                       under "result" when small); written last
    {job_id}/{call_id}/batch-status.json
                                       outcomes (and small results) of several calls run
                                       together, starting with {call_id}; written last

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

JOB_HEADER = "job.json"
FUNCTION = "func.pickle"
ARGS = "args.pickle"
RESULT = "result.pickle"
STATUS = "status.json"
BATCH_STATUS = "batch-status.json"


def job_prefix(job_id: str) -> str:
    return f"{job_id}/"


def job_header_key(job_id: str) -> str:
    return f"{job_id}/{JOB_HEADER}"


def function_key(job_id: str) -> str:
    return f"{job_id}/{FUNCTION}"


def call_prefix(job_id: str, call_id: str) -> str:
    return f"{job_id}/{call_id}/"


def args_key(job_id: str, call_id: str) -> str:
    return f"{job_id}/{call_id}/{ARGS}"


def result_key(job_id: str, call_id: str) -> str:
    return f"{job_id}/{call_id}/{RESULT}"


def status_key(job_id: str, call_id: str) -> str:
    return f"{job_id}/{call_id}/{STATUS}"


def call_id_of_status_key(key: str) -> "str | None":
    """The call id in a ``{job_id}/{call_id}/status.json`` key, or None for other keys."""
    parts = key.rstrip("/").split("/")
    if len(parts) >= 3 and parts[-1] == STATUS:
        return parts[-2]
    return None


def batch_status_key(job_id: str, first_call_id: str) -> str:
    return f"{job_id}/{first_call_id}/{BATCH_STATUS}"


def is_batch_status_key(key: str) -> bool:
    return key.rsplit("/", 1)[-1] == BATCH_STATUS


RUNTIMES = "runtimes/"


def runtime_prefix(runtime_hash: str) -> str:
    return f"{RUNTIMES}{runtime_hash}/"


def runtime_manifest_key(runtime_hash: str) -> str:
    return f"{RUNTIMES}{runtime_hash}/runtime.json"


def runtime_wheel_key(runtime_hash: str, filename: str) -> str:
    return f"{RUNTIMES}{runtime_hash}/wheels/{filename}"


def runtime_bundle_key(runtime_hash: str) -> str:
    return f"{RUNTIMES}{runtime_hash}/bundle.tar"
