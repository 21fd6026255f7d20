"""Benchmark of job runtimes: what a new runtime costs, what a cached one costs.

Measured in one run, on the test harnesses (moto + awslambdaric for Lambda; moto + a
simulated instance running the real bootstrap and daemons for aws_sqs_ec2):

1. time from submit to first result of a job whose runtime is new (wheels built from the
   installed distributions, uploaded, delivered: a Lambda layer and function, or an
   environment built on the instance), and of the same job once its runtime is cached;
2. the submit latency runtime detection adds on a warm cache, per job, and the storage
   requests it makes (target: under 5 ms, and none when nothing changed).

Run from the repository root: ``python benchmarks/bench_runtime.py``.
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


def job(text):
    import msgpack
    import yaml

    return msgpack.unpackb(msgpack.packb(yaml.safe_load(text)))


def first_result(executor) -> float:
    start = time.perf_counter()
    executor.submit(job, "a: 1").result(timeout=600)
    return time.perf_counter() - start


def fresh_client_cache(work: str) -> None:
    """A new runtime: no wheel built before, nothing remembered as stored."""
    from wrencore import environment

    os.environ["WRENCORE_CACHE"] = os.path.join(work, f"cache-{uuid.uuid4().hex[:6]}")
    environment._stored.clear()
    environment._resolver = environment.Resolver()


def bench_lambda(work: str):
    import boto3

    import wrencore
    from tests.servers.lambda_harness import LambdaHarness

    harness = LambdaHarness(os.environ["AWS_ENDPOINT_URL"], work, concurrency=2)
    os.environ["AWS_ENDPOINT_URL_LAMBDA"] = harness.endpoint
    try:
        bucket = f"bench-{uuid.uuid4().hex[:8]}"
        boto3.client("s3").create_bucket(Bucket=bucket)
        config = {"storage": "s3", "s3": {"bucket": bucket, "prefix": "jobs"},
                  "aws_lambda": {"timeout": 60}}
        fresh_client_cache(work)
        with wrencore.Executor(backend="aws_lambda", config=config) as executor:
            new = first_result(executor)
        with wrencore.Executor(backend="aws_lambda", config=config) as executor:
            cached = first_result(executor)
        return new, cached
    finally:
        harness.stop()
        os.environ.pop("AWS_ENDPOINT_URL_LAMBDA", None)


def bench_fleet(work: str):
    import boto3

    import wrencore
    from tests.servers.fleet_harness import FleetHarness

    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    ami = boto3.client("ec2").describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    fleet = f"b{uuid.uuid4().hex[:8]}"
    config = {"s3": {"bucket": bucket, "prefix": "jobs"},
              "aws_sqs_ec2": {"queue_name": f"q-{fleet}", "fleet": fleet, "ami": ami,
                              "min_instances": 1, "max_instances": 1, "poll_wait": 1,
                              "visibility_timeout": 30}}
    env = {k: os.environ[k] for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID",
                                      "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    with FleetHarness(env, fleet, numprocs=1) as harness:
        start = time.perf_counter()
        with wrencore.Executor(backend="aws_sqs_ec2", config=config, runtime="none") as ex:
            ex.submit(abs, -1).result(timeout=600)  # boots the instance: not measured below
        boot = time.perf_counter() - start
        fresh_client_cache(work)
        with wrencore.Executor(backend="aws_sqs_ec2", config=config) as executor:
            new = first_result(executor)
        with wrencore.Executor(backend="aws_sqs_ec2", config=config) as executor:
            cached = first_result(executor)
        assert len(harness.instances) == 1
    return new, cached, boot


class CountingStorage:
    """Wraps a storage and counts the requests made through it."""

    def __init__(self, storage):
        self.storage, self.requests = storage, 0

    def __getattr__(self, name):
        attr = getattr(self.storage, name)
        if name in ("put", "get", "exists", "list", "delete_prefix"):
            def counted(*args, **kwargs):
                self.requests += 1
                return attr(*args, **kwargs)
            return counted
        return attr


def bench_detection(rounds: int):
    import wrencore
    from wrencore.environment import job_runtime

    with wrencore.Executor(backend="local", runtime="isolated") as executor:
        storage = CountingStorage(executor.storage)
        job_runtime(job, "auto", None, storage, executor.backend)  # warm the caches
        storage.requests = 0
        samples = []
        for _ in range(rounds):
            start = time.perf_counter()
            job_runtime(job, "auto", None, storage, executor.backend)
            samples.append(time.perf_counter() - start)
    return statistics.median(samples), max(samples), storage.requests


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=200, help="detection rounds")
    args = parser.parse_args()
    from tests.servers.moto_server import MotoServer

    with tempfile.TemporaryDirectory(prefix="bench-runtime-") as work:
        os.environ["WRENCORE_LOCALFS__ROOT"] = os.path.join(work, "storage")
        moto = MotoServer(os.path.join(work, "moto.log"))
        os.environ.update(moto.env())
        try:
            lambda_new, lambda_cached = bench_lambda(work)
            fleet_new, fleet_cached, boot = bench_fleet(work)
        finally:
            moto.stop()
        median, worst, requests = bench_detection(args.rounds)
    print("\n| measurement | new runtime | cached runtime |")
    print("|---|---|---|")
    print(f"| Lambda harness: submit → first result | {lambda_new:.2f} s | {lambda_cached:.2f} s |")
    print(f"| fleet harness (instance already up): submit → first result | {fleet_new:.2f} s "
          f"| {fleet_cached:.2f} s |")
    print(f"\nfleet harness: instance boot to first result (daemon runtime, real bootstrap): "
          f"{boot:.2f} s")
    print(f"runtime detection on a warm cache: median {median * 1000:.2f} ms per job "
          f"(max {worst * 1000:.2f} ms over {args.rounds}), {requests} storage requests "
          f"(target: < 5 ms, 0 requests)")
    return 0 if median < 0.005 and requests == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
