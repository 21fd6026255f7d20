"""Benchmark of the standalone daemon path against a plain boto3 loop, on one moto server.

Measured side by side in one run, for no-op calls, without batching (1 message per
receive, one delete per message) and with batching (10 per receive, batch deletes):

- daemon: the real :class:`wrencore_runtime.daemon.Daemon` working off an SQS queue —
  receive, decode the task message, run the call through the shared JobRunner, write the
  call's status (with its result) to S3, delete;
- plain loop: boto3 alone doing receive -> put a result object -> delete on the same
  server: the ceiling.

Both drain the same number of pre-filled messages; each figure is the median of several
rounds, run alternately. Target: the daemon reaches at least 80% of the plain loop.

Run from the repository root: ``python benchmarks/bench_standalone.py [--calls 400]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def noop(x):
    return x


def make_job(storage):
    from wrencore import serialize
    from wrencore_runtime import layout
    from wrencore_runtime.protocol import PYTHON, SERIALIZER

    job_id = f"bench-{uuid.uuid4().hex[:8]}"
    job = {"job_id": job_id, "storage": storage.to_spec(),
           "function_key": layout.function_key(job_id), "python": PYTHON,
           "serializer": SERIALIZER, "timeout": None, "extra_env": {},
           "result_inline_limit": 64 * 1024, "function_name": "noop"}
    storage.put(job["function_key"], serialize.dumps_function(noop))
    return job


def task_bodies(job, calls: int):
    import cloudpickle

    from wrencore_runtime.protocol import encode_json, make_message

    return [encode_json(make_message(job, [{
        "call_id": f"{i:05d}", "args": cloudpickle.dumps(((i,), {})), "args_key": None,
        "host_submit_timestamp": time.time()}])) for i in range(calls)]


def fresh_queue(batch: int):
    from wrencore_aws.sqs import SQSQueue

    return SQSQueue(f"bench-{uuid.uuid4().hex[:10]}", max_receives=5, visibility_timeout=60)


def run_daemon(storage, calls: int, batch: int, work: str) -> float:
    from wrencore_runtime.daemon import Daemon, DaemonSettings, Heartbeat

    queue = fresh_queue(batch)
    queue.send_batch(task_bodies(make_job(storage), calls))
    settings = DaemonSettings(queue=queue.to_spec(), state_dir=tempfile.mkdtemp(dir=work),
                              process_name="bench", poll_wait=1, batch_size=batch,
                              visibility_timeout=60, cloudwatch=False)
    daemon = Daemon(settings, queue=queue, instance_id="i-bench")
    heartbeat = Heartbeat(queue, 60, 20)
    start = time.perf_counter()
    while daemon.calls_run < calls:
        daemon.step(heartbeat)
    daemon.acks.drain()
    elapsed = time.perf_counter() - start
    heartbeat.stop()
    queue.delete_queues()
    return calls / elapsed


def run_plain(bucket: str, calls: int, batch: int) -> float:
    import boto3

    queue = fresh_queue(batch)
    queue.send_batch(["x" * 300] * calls)
    sqs, s3 = boto3.client("sqs"), boto3.client("s3")
    url, done = queue.url, 0
    start = time.perf_counter()
    while done < calls:
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=batch,
                                       WaitTimeSeconds=1).get("Messages", [])
        for m in messages:
            s3.put_object(Bucket=bucket, Key=f"plain/{m['MessageId']}/result.pickle",
                          Body=b"\x80\x05K\x01.")
        if batch == 1:
            for m in messages:
                sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
        elif messages:
            sqs.delete_message_batch(QueueUrl=url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                for i, m in enumerate(messages)])
        done += len(messages)
    elapsed = time.perf_counter() - start
    queue.delete_queues()
    return calls / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=400, help="calls per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from tests.servers.moto_server import MotoServer

    with tempfile.TemporaryDirectory(prefix="bench-standalone-") as work:
        moto = MotoServer(os.path.join(work, "moto.log"))
        try:
            os.environ.update(moto.env())
            import boto3

            from wrencore_aws.s3 import S3Storage

            bucket = f"bench-{uuid.uuid4().hex[:8]}"
            boto3.client("s3").create_bucket(Bucket=bucket)
            storage = S3Storage(bucket, prefix="jobs")
            run_plain(bucket, 20, 10)  # warm up both paths (imports, connections)
            run_daemon(storage, 20, 10, work)
            rows = []
            for batch in (1, 10):
                daemon_rates, plain_rates = [], []
                for _ in range(args.rounds):
                    plain_rates.append(run_plain(bucket, args.calls, batch))
                    daemon_rates.append(run_daemon(storage, args.calls, batch, work))
                rows.append((batch, statistics.median(daemon_rates),
                             statistics.median(plain_rates)))
        finally:
            moto.stop()

    print(f"\nstandalone daemon vs plain boto3 loop, {args.calls} no-op calls per round, "
          f"median of {args.rounds} rounds, one moto server\n")
    print(f"{'messages per receive':<22} {'daemon calls/s':>15} {'plain loop calls/s':>19} "
          f"{'ratio':>7}")
    ok = True
    for batch, daemon_rate, plain_rate in rows:
        ratio = daemon_rate / plain_rate
        ok &= ratio >= 0.8
        print(f"{batch:<22} {daemon_rate:>15.1f} {plain_rate:>19.1f} {ratio:>7.2f}")
    print(f"\ntarget: daemon >= 0.80 x plain loop: {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
