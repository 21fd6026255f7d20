"""Benchmark of the aws_lambda backend against the test harness (moto + awslambdaric).

Measured side by side in one run:

1. invocation rate: how fast the backend issues 1,000 asynchronous invocations, against a
   plain threaded boto3 ``invoke`` loop (64 threads) sending the same payloads — the ceiling;
2. end-to-end time of a 1,000-call no-op map with chunksize 1 and with chunking, and the
   status objects each wrote (one PUT each: what batching statuses saves).

Targets: the backend reaches at least 80% of the plain loop's rate; chunking makes the
1,000-call map at least 5x faster than chunksize 1.

Run from the repository root: ``python benchmarks/bench_lambda.py [--calls 1000]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def noop(x):
    return x


def start_servers(work: str, concurrency: int):
    from tests.servers.lambda_harness import LambdaHarness
    from tests.servers.moto_server import MotoServer

    moto = MotoServer(os.path.join(work, "moto.log"))
    os.environ.update(moto.env())
    harness = LambdaHarness(moto.endpoint, work, concurrency=concurrency)
    os.environ["AWS_ENDPOINT_URL_LAMBDA"] = harness.endpoint
    return moto, harness


def wait_for_invocations(futures, timeout=300.0) -> float:
    """Seconds until every future's invocation was accepted (host_invoke_timestamp set)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stamps = [f.metadata.get("host_invoke_timestamp") for f in futures]
        if all(stamps):
            return max(stamps)
        time.sleep(0.005)
    raise TimeoutError("invocations not all accepted")


def bench_backend_invoke(executor, calls: int) -> float:
    start = time.time()
    futures = executor.map_futures(noop, range(calls), chunksize=1)
    elapsed = wait_for_invocations(futures) - start
    import wrencore

    wrencore.get_all_results(futures, timeout=600)
    return calls / elapsed


def bench_plain_loop(executor, calls: int, threads: int = 64) -> float:
    import boto3
    from botocore.config import Config

    import wrencore
    from wrencore_runtime.protocol import encode_json, make_message

    job = executor._new_job(noop, None, None)
    prepared = executor._make_calls(job, [((i,), {}) for i in range(calls)])
    payloads = [encode_json(make_message(job, [c.message])).encode() for c in prepared]
    client = boto3.client("lambda", config=Config(max_pool_connections=threads))
    name = executor.backend.function().name
    start = time.time()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda p: client.invoke(FunctionName=name, InvocationType="Event",
                                              Payload=p), payloads))
    elapsed = time.time() - start
    # Let the sandboxes finish this batch before the next measurement starts.
    executor.backend._watcher.watch(job["job_id"], {c.call_id: c.future for c in prepared})
    done, not_done = wrencore.wait([c.future for c in prepared], timeout=120)
    if not_done:
        # The plain loop has no lost-call detection of its own: report, don't hang.
        from wrencore_runtime import layout

        keys = set(executor.storage.list(layout.job_prefix(job["job_id"])))
        for future in not_done:
            print(f"plain loop: call {future.call_id} unfinished; status in storage: "
                  f"{layout.status_key(job['job_id'], future.call_id) in keys}", file=sys.stderr)
    return calls / elapsed


def bench_map(executor, calls: int, chunksize: int, status_objects: list) -> float:
    import wrencore
    from wrencore_runtime import layout

    start = time.time()
    futures = executor.map_futures(noop, range(calls), chunksize=chunksize)
    results = wrencore.get_all_results(futures, timeout=600)
    assert results == list(range(calls))
    elapsed = time.time() - start
    keys = executor.storage.list(layout.job_prefix(futures[0].job_id))
    status_objects.append(sum(k.endswith("status.json") for k in keys))
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--chunksize", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=4, help="harness sandboxes")
    args = parser.parse_args()

    import boto3

    import wrencore

    work = tempfile.mkdtemp(prefix="wrencore-bench-lambda-")
    moto, harness = start_servers(work, args.concurrency)
    try:
        bucket = f"bench-{uuid.uuid4().hex[:8]}"
        boto3.client("s3").create_bucket(Bucket=bucket)
        config = {"storage": "s3", "s3": {"bucket": bucket, "prefix": "bench"},
                  "aws_lambda": {"timeout": 120, "result_grace": 30}}
        with wrencore.Executor(backend="aws_lambda", config=config) as executor:
            executor.map_futures(noop, range(8))  # deploy and warm the sandboxes
            wrencore.get_all_results(executor.map_futures(noop, range(8)), timeout=120)
            plain, ours = [], []
            for _ in range(args.rounds):
                plain.append(bench_plain_loop(executor, args.calls))
                ours.append(bench_backend_invoke(executor, args.calls))
            map_one, map_chunked, objects_one, objects_chunked = [], [], [], []
            for _ in range(args.rounds):
                map_one.append(bench_map(executor, args.calls, 1, objects_one))
                map_chunked.append(bench_map(executor, args.calls, args.chunksize,
                                             objects_chunked))
        plain_rate, our_rate = statistics.median(plain), statistics.median(ours)
        t_one, t_chunked = statistics.median(map_one), statistics.median(map_chunked)
        n = args.calls
        print(f"\naws_lambda benchmark — {n} calls, harness with {args.concurrency} sandboxes, "
              f"median of {args.rounds} rounds\n")
        print(f"{'measurement':<48}{'value':>14}{'ratio':>12}   target")
        print("-" * 84)
        print(f"{'plain threaded boto3 invoke loop (64 threads)':<48}"
              f"{plain_rate:>10.0f}/s{'1.00':>12}")
        print(f"{'wrencore invoker (chunksize 1)':<48}{our_rate:>10.0f}/s"
              f"{our_rate / plain_rate:>12.2f}   >= 0.80 of plain")
        print(f"{f'{n}-call no-op map, chunksize 1':<48}{t_one:>12.2f} s{'1.00':>12}")
        print(f"{f'{n}-call no-op map, chunksize {args.chunksize}':<48}{t_chunked:>12.2f} s"
              f"{t_one / t_chunked:>11.1f}x   >= 5x faster")
        print(f"\nraw: plain {[round(r) for r in plain]}/s, ours {[round(r) for r in ours]}/s, "
              f"map1 {[round(t, 2) for t in map_one]} s, "
              f"map{args.chunksize} {[round(t, 2) for t in map_chunked]} s")
        print(f"status objects written (PUTs): chunksize 1 {objects_one}, "
              f"chunksize {args.chunksize} {objects_chunked}")
    finally:
        harness.stop()
        moto.stop()


if __name__ == "__main__":
    main()
