"""What the daemon benchmarks share: the no-op job, its task messages, and one daemon
draining a queue of them (``bench_standalone`` on SQS, ``bench_pubsub`` on Pub/Sub).

Task messages are signed as a client signs them, with a task key kept in a file of the
benchmark's work directory, and the daemon verifies them with it (a daemon without a task
key refuses every message).
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid


def noop(x):
    return x


def key_source(work: str):
    """The benchmark's task key, in ``work`` (created on first use)."""
    from wrencore_runtime.auth import FileKeySource

    return FileKeySource(os.path.join(work, "task-key.json"))


def make_job(storage):
    """A job of :func:`noop` whose function package is in ``storage``."""
    from wrencore import serialize
    from wrencore_runtime import layout
    from wrencore_runtime.auth import sha256_hex
    from wrencore_runtime.protocol import PYTHON, SERIALIZER

    job_id = f"bench-{uuid.uuid4().hex[:8]}"
    job = {"job_id": job_id, "storage": storage.to_spec(),
           "function_key": layout.function_key(job_id), "python": PYTHON,
           "serializer": SERIALIZER, "timeout": None, "extra_env": {},
           "result_inline_limit": 64 * 1024, "function_name": "noop"}
    package = serialize.dumps_function(noop)
    job["function_sha256"] = sha256_hex(package)
    storage.put(job["function_key"], package)
    return job


def task_bodies(job, calls: int, work: str):
    """One signed task message per call, call ids ``00000`` upwards."""
    import cloudpickle

    from wrencore.backends import seal_task
    from wrencore_runtime.auth import Signer

    signer = Signer(key_source(work))
    return [seal_task(signer, job, [{
        "call_id": f"{i:05d}", "args": cloudpickle.dumps(((i,), {})), "args_key": None,
        "host_submit_timestamp": time.time()}]) for i in range(calls)]


def run_daemon(queue, storage, calls: int, batch: int, work: str, instance_id: str,
               measure=None) -> float:
    """Fill ``queue`` with ``calls`` no-op calls, drain it with one daemon receiving
    ``batch`` messages at a time, delete the queue; return calls per second.

    ``measure``, if given, is a context manager factory wrapped around the timed part
    (the daemon is built, and its queue filled, before it)."""
    import contextlib

    from wrencore_runtime import daemon as daemon_module
    from wrencore_runtime.daemon import Daemon, DaemonSettings, Heartbeat

    queue.send_batch(task_bodies(make_job(storage), calls, work))
    settings = DaemonSettings(queue=queue.to_spec(), state_dir=tempfile.mkdtemp(dir=work),
                              process_name="bench", poll_wait=1, batch_size=batch,
                              visibility_timeout=60, cloudwatch=False,
                              task_key=key_source(work).to_spec())
    daemon = Daemon(settings, queue=queue, instance_id=instance_id)
    heartbeat = Heartbeat(queue, 60, 20)
    settle = getattr(daemon_module, "settle_startup_objects", None)
    if settle is not None:  # as ``serve`` does before its daemon runs
        settle()
    with (measure or contextlib.nullcontext)():
        start = time.perf_counter()
        while daemon.calls_run < calls:
            daemon.step(heartbeat)
        daemon.drain()
        elapsed = time.perf_counter() - start
    heartbeat.stop()
    # Idle, as the daemon's next receive (empty) would make it: its status writer stops
    # looking every few milliseconds, which the next rounds' sides would share the CPU with.
    daemon.statuses.busy(False)
    stop = getattr(daemon, "stop", None)
    if stop is not None:  # releases what a daemon holds beyond its receive (a prefetch)
        stop()
    queue.delete_queues()
    return calls / elapsed
