"""Benchmark of backup attempts for stragglers (speculative execution).

A 200-call job of ``--median``-second calls in which 5% of the calls (chosen with a fixed
seed) stall for 10× the median on their first attempt only — as a slow machine would, not
slow input — runs on the local backend and on the standalone fleet harness (moto + one
simulated instance running the real bootstrap, supervisord and daemons), each:

1. with no stragglers (the reference),
2. with stragglers, without speculation,
3. with stragglers, with ``speculation=True`` (the default policy: backups once 75% of the
   job is done, for calls running over 2× the median and at least 1 s).

It prints each job's wall time relative to the reference. How much a straggler costs
depends on how many waves the job runs in: with W waves the last one's straggler ends the
job at about (W - 1 + 10) / W of the reference without speculation, and no backup can start
before the median call has run twice, so a single-wave job cannot get near 1× with any
policy. The defaults here run 8 waves (25 local workers; 25 daemons on the instance).

Run from the repository root: ``python benchmarks/bench_speculation.py``.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CALLS = 200
STRAGGLER_SHARE = 0.05
STALL = 10


def call(x, directory, stragglers, median):
    """``median`` seconds; a straggler's first attempt takes ``STALL`` times as long."""
    import os
    import time

    seconds = median
    if x in stragglers:
        try:
            os.close(os.open(os.path.join(directory, f"stalled-{x}"),
                             os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            seconds = median * STALL
        except FileExistsError:
            pass
    time.sleep(seconds)
    return x


def stragglers(seed: int):
    return set(random.Random(seed).sample(range(CALLS), int(CALLS * STRAGGLER_SHARE)))


def run_job(executor, work: str, median: float, slow: set, speculation: bool) -> float:
    import wrencore

    directory = tempfile.mkdtemp(dir=work)
    start = time.perf_counter()
    futures = executor.map_futures(lambda x: call(x, directory, slow, median), range(CALLS),
                                   speculation=speculation)
    results = wrencore.get_all_results(futures)
    elapsed = time.perf_counter() - start
    assert results == list(range(CALLS))
    backups = sum(f.metadata.get("backups", 0) for f in futures)
    won = sum(f.metadata.get("attempt", 0) > 0 for f in futures)
    return elapsed, backups, won


def scenario(executor, work: str, median: float, seed: int):
    warm = executor.map_futures(lambda x: call(x, work, set(), 0.05), range(CALLS))
    [f.result() for f in warm]  # every worker started
    reference, _, _ = run_job(executor, work, median, set(), False)
    uniform, uniform_backups, _ = run_job(executor, work, median, set(), True)
    without, _, _ = run_job(executor, work, median, stragglers(seed), False)
    with_backups, backups, won = run_job(executor, work, median, stragglers(seed), True)
    return reference, uniform, uniform_backups, without, with_backups, backups, won


def bench_local(work: str, workers: int, median: float, seed: int):
    import wrencore

    with wrencore.Executor(backend="local", max_workers=workers) as executor:
        return scenario(executor, work, median, seed)


def bench_fleet(work: str, workers: int, median: float, seed: int):
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
                              "batch_size": 1, "visibility_timeout": 30}}
    env = {k: os.environ[k] for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID",
                                      "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    with FleetHarness(env, fleet, numprocs=workers):
        with wrencore.Executor(backend="aws_sqs_ec2", config=config) as executor:
            return scenario(executor, work, median, seed)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--median", type=float, default=0.4, help="seconds per normal call")
    parser.add_argument("--workers", type=int, default=25,
                        help="local workers, and daemons on the fleet's instance")
    parser.add_argument("--seed", type=int, default=9)
    parser.add_argument("--skip-fleet", action="store_true")
    args = parser.parse_args()
    from tests.servers.moto_server import MotoServer

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-speculation-") as work:
        os.environ["WRENCORE_LOCALFS__ROOT"] = os.path.join(work, "storage")
        rows.append(("local", *bench_local(work, args.workers, args.median, args.seed)))
        if not args.skip_fleet:
            moto = MotoServer(os.path.join(work, "moto.log"))
            os.environ.update(moto.env())
            try:
                rows.append(("fleet harness",
                             *bench_fleet(work, args.workers, args.median, args.seed)))
            finally:
                moto.stop()
    waves = CALLS / args.workers
    print(f"\n{CALLS} calls of {args.median:g} s, {int(CALLS * STRAGGLER_SHARE)} of them stalling "
          f"{STALL}x on their first attempt; {args.workers} workers ({waves:g} waves)\n")
    print("| backend | no stragglers | no stragglers, speculation (backups) "
          "| stragglers, no speculation | stragglers, speculation | backups started (won) |")
    print("|---|---|---|---|---|---|")
    for name, reference, uniform, uniform_backups, without, with_backups, backups, won in rows:
        print(f"| {name} | {reference:.2f} s (1.00x) | {uniform:.2f} s "
              f"({uniform / reference:.2f}x, {uniform_backups}) | {without:.2f} s "
              f"({without / reference:.2f}x) | {with_backups:.2f} s "
              f"({with_backups / reference:.2f}x) | {backups} ({won}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
