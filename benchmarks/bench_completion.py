"""Benchmark: what finding finished calls costs the client, as jobs grow.

For no-op jobs of growing size at chunksize 1 — on the standalone fleet harness (moto +
simulated instances running the real daemon under supervisord) and on the Lambda harness
(moto + awslambdaric) — it counts the client's AWS requests by operation (botocore's
``before-call`` event hooks on every client the executor uses), its CPU seconds
(``time.process_time``; both harnesses run in other processes, and nothing traces memory
while it is measured) and the client process's peak resident memory
(``resource.getrusage``'s ``ru_maxrss``, which includes the interpreter and the SDKs), and prints requests per call and the growth exponent of total requests
between sizes, ``log(r2/r1) / log(n2/n1)``. The jobs stream their inputs (a generator,
``max_pending`` 2,000), as a million-call job would.

Targets at chunksize 1: at most 0.5 client requests per call, at most 1 ms of client CPU
per call, growth exponent at most 1.05 in total requests from 1,000 to 100,000 calls.
A Lambda invocation is one request per call by itself, so its rows also show the requests
spent on completion alone (everything but Invoke). The last lines project a
1,000,000-call job from the largest measured size of each harness.

Both harnesses run moto patched by ``tests/servers/moto_fast.py``: the same answers, but
without moto's work that grows with a queue's or a bucket's length (unpatched, a
100,000-call fleet job did not finish in hours on a 2-core machine; ``--plain-moto``
runs it unpatched to compare). The server records each operation's requests and CPU, and
the last lines show them: what the whole harness (daemons, Lambda sandboxes, the
benchmark's client) cost moto.

Run from the repository root:
``python benchmarks/bench_completion.py [--fleet 1000,10000,100000] [--lambda 1000,10000]
[--plain-moto]``.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import resource
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def noop(x):
    return x


def thread_cpu() -> dict:
    """CPU seconds of this process's live threads by name (``-N`` suffixes merged)."""
    import re
    import threading

    tick = os.sysconf("SC_CLK_TCK")
    names = {t.native_id: t.name for t in threading.enumerate()}
    cpu: dict = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = re.sub(r"[-_]\d+(_\d+)?$", "", names.get(int(tid), "other"))
        cpu[name] = cpu.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return cpu


def run_job(executor, counter, calls: int) -> dict:
    import wrencore

    before = counter.snapshot()
    profile = None
    if os.environ.get("BENCH_PROFILE"):
        import cProfile
        profile = cProfile.Profile()
        profile.enable()
    threads_before = thread_cpu()
    cpu, wall = time.process_time(), time.monotonic()
    done = 0
    for future in executor.map_futures(noop, iter(range(calls)), max_pending=2000):
        future.result(timeout=1800)
        done += 1
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    threads = {name: spent - threads_before.get(name, 0.0)
               for name, spent in thread_cpu().items()}
    if profile is not None:
        profile.disable()
        profile.dump_stats(f"{os.environ['BENCH_PROFILE']}.{calls}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    assert done == calls
    counts = counter.snapshot()
    counts.subtract(before)
    counts = {k: v for k, v in counts.items() if v}
    del wrencore
    return {"calls": calls, "counts": counts, "cpu": cpu, "wall": wall, "peak": peak,
            "threads": {k: v for k, v in threads.items() if v >= 0.005}}


FLEET_HARNESS = """
import sys
sys.path.insert(0, {root!r})
from tests.servers.fleet_harness import FleetHarness
harness = FleetHarness({env!r}, {fleet!r}, numprocs={daemons}).__enter__()
print("ready", flush=True)
sys.stdin.read()
harness.stop()
"""


def bench_fleet(sizes, work, daemons, moto_stats):
    import boto3

    import wrencore
    from tests.request_counter import RequestCounter, fleet_clients
    from tests.servers.moto_server import MotoServer

    moto = MotoServer(os.path.join(work, "moto-fleet.log"), fast=not PLAIN_MOTO,
                      stats_path=os.path.join(work, "moto-fleet.json"))
    harness = None
    try:
        os.environ.update(moto.env())
        bucket, fleet = f"bench-{uuid.uuid4().hex[:8]}", f"f{uuid.uuid4().hex[:8]}"
        boto3.client("s3").create_bucket(Bucket=bucket)
        ami = boto3.client("ec2").describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
        env = dict(moto.env(), WRENCORE_DAEMON__LOG_SEND_INTERVAL="5")
        harness = subprocess.Popen(
            [sys.executable, "-c", FLEET_HARNESS.format(root=ROOT, env=env, fleet=fleet, daemons=daemons)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        assert harness.stdout.readline().strip() == "ready"
        config = {"aws_sqs_ec2": {"queue_name": f"q-{fleet}", "fleet": fleet, "ami": ami,
                                  "min_instances": 1, "max_instances": 1, "numprocs": 0,
                                  "idle_timeout": 3600, "poll_wait": 1, "batch_size": 10},
                  "s3": {"bucket": bucket, "prefix": "jobs"}}
        rows = []
        with wrencore.Executor(backend="aws_sqs_ec2", config=config, chunksize=1) as executor:
            assert executor.submit(noop, 1).result(timeout=300) == 1  # boot, runtime
            counter = RequestCounter().attach(fleet_clients(executor))
            for size in sizes:
                rows.append(run_job(executor, counter, size))
                print(f"  fleet {size}: {rows[-1]['wall']:.1f} s", file=sys.stderr)
                progress_row("fleet", rows[-1], {"SendMessageBatch"})
        return rows
    finally:
        if harness is not None:
            harness.stdin.close()
            harness.wait(60)
        moto.stop()
        moto_stats.append(moto.request_stats())


def bench_lambda(sizes, work, moto_stats):
    import boto3

    import wrencore
    from tests.request_counter import RequestCounter, lambda_clients
    from tests.servers.lambda_harness import LambdaHarness
    from tests.servers.moto_server import MotoServer

    moto = MotoServer(os.path.join(work, "moto-lambda.log"), fast=not PLAIN_MOTO,
                      stats_path=os.path.join(work, "moto-lambda.json"))
    harness = None
    try:
        os.environ.update(moto.env())
        harness = LambdaHarness(moto.endpoint, work, concurrency=4)
        os.environ["AWS_ENDPOINT_URL_LAMBDA"] = harness.endpoint
        bucket = f"bench-{uuid.uuid4().hex[:8]}"
        boto3.client("s3").create_bucket(Bucket=bucket)
        config = {"s3": {"bucket": bucket, "prefix": "jobs"},
                  "aws_lambda": {"timeout": 60, "invoke_threads": 16}}
        rows = []
        with wrencore.Executor(backend="aws_lambda", config=config, chunksize=1) as executor:
            assert executor.submit(noop, 1).result(timeout=300) == 1  # deploy, warm
            counter = RequestCounter().attach(lambda_clients(executor))
            for size in sizes:
                rows.append(run_job(executor, counter, size))
                print(f"  lambda {size}: {rows[-1]['wall']:.1f} s", file=sys.stderr)
                progress_row("lambda", rows[-1], {"Invoke"})
        return rows
    finally:
        os.environ.pop("AWS_ENDPOINT_URL_LAMBDA", None)
        if harness is not None:
            harness.stop()
        moto.stop()
        moto_stats.append(moto.request_stats())


def row_figures(row, dispatch_ops):
    """``(requests, completion requests, "Op n, …" by count)`` of one measured size."""
    total = sum(row["counts"].values())
    completion = sum(n for (_, op), n in row["counts"].items() if op not in dispatch_ops)
    ops = ", ".join(f"{op} {n}" for (_, op), n in sorted(row["counts"].items(),
                                                         key=lambda kv: -kv[1]))
    return total, completion, ops


def progress_row(name, row, dispatch_ops):
    """One size's figures on stderr as soon as they are measured, so a long run that is
    stopped before its last size keeps what it measured."""
    total, completion, ops = row_figures(row, dispatch_ops)
    print(f"  {name} {row['calls']}: {total / row['calls']:.3f} requests/call "
          f"({completion / row['calls']:.3f} completion), "
          f"{1000 * row['cpu'] / row['calls']:.3f} ms client CPU/call, "
          f"{row['peak'] / 2**20:.1f} MiB; {ops}", file=sys.stderr, flush=True)


def report(name, rows, dispatch_ops):
    print(f"\n{name} (chunksize 1)")
    print(f"{'calls':>8} {'wall s':>8} {'requests':>9} {'req/call':>9} {'compl/call':>11} "
          f"{'CPU ms/call':>12} {'RSS MiB':>9}  requests by operation")
    for row in rows:
        total, completion, ops = row_figures(row, dispatch_ops)
        print(f"{row['calls']:>8} {row['wall']:>8.1f} {total:>9} {total / row['calls']:>9.3f} "
              f"{completion / row['calls']:>11.3f} {1000 * row['cpu'] / row['calls']:>12.3f} "
              f"{row['peak'] / 2**20:>9.1f}  {ops}")
    for row in rows:
        spent = ", ".join(f"{name} {1000 * seconds / row['calls']:.3f}" for name, seconds in
                          sorted(row["threads"].items(), key=lambda kv: -kv[1]))
        print(f"{row['calls']:>8} client CPU ms/call by thread: {spent}")
    for a, b in zip(rows, rows[1:]):
        ra, rb = sum(a["counts"].values()), sum(b["counts"].values())
        exponent = math.log(rb / ra) / math.log(b["calls"] / a["calls"])
        print(f"growth exponent of total requests {a['calls']} -> {b['calls']}: {exponent:.3f}")
    if len(rows) >= 2:
        first, last = rows[0], rows[-1]
        exponent = math.log(sum(last["counts"].values()) / sum(first["counts"].values())) / \
            math.log(last["calls"] / first["calls"])
        print(f"growth exponent {first['calls']} -> {last['calls']}: {exponent:.3f}")
    last = rows[-1]
    scale = 1_000_000 / last["calls"]
    total = sum(last["counts"].values())
    print(f"projected 1,000,000-call job: {total * scale:,.0f} requests "
          f"({total / last['calls']:.3f} a call), {last['cpu'] * scale:,.0f} s of client CPU")


def report_moto(name, stats):
    """The moto server's own costs over the whole harness run (every client: the
    benchmark's, the daemons', the harness's), by operation."""
    if not stats:
        return
    operations = sorted(stats["operations"].items(), key=lambda kv: -kv[1]["cpu"])
    requests = sum(op["requests"] for _, op in operations)
    handled = sum(op["cpu"] for _, op in operations)
    print(f"\nmoto server under the {name} ({'unpatched' if PLAIN_MOTO else 'tests/servers/moto_fast.py'}):"
          f" {requests} requests, {stats['process_cpu']:.1f} s CPU in all "
          f"({1000 * stats['process_cpu'] / max(requests, 1):.2f} ms a request), "
          f"{handled:.1f} s in request threads ({1000 * handled / max(requests, 1):.2f} ms a request)")
    for op, figures in operations[:12]:
        print(f"  {op:<36} {figures['requests']:>8} requests {figures['cpu']:>8.1f} s "
              f"{1000 * figures['cpu'] / figures['requests']:>7.2f} ms a request")


#: Run the harnesses' moto unpatched (``--plain-moto``), to compare with the patched one.
PLAIN_MOTO = False


def main() -> int:
    global PLAIN_MOTO
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fleet", default="1000,10000,100000")
    parser.add_argument("--lambda", dest="lambda_", default="1000,10000")
    parser.add_argument("--daemons", type=int, default=2, help="daemons on the fleet's instance")
    parser.add_argument("--plain-moto", action="store_true",
                        help="moto without tests/servers/moto_fast.py's patches (slow on long jobs)")
    args = parser.parse_args()
    PLAIN_MOTO = args.plain_moto
    moto_fleet, moto_lambda = [], []
    sizes = lambda text: [int(x) for x in text.split(",") if x]  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="bench-completion-") as work:
        fleet = bench_fleet(sizes(args.fleet), work, args.daemons, moto_fleet) \
            if sizes(args.fleet) else []
        lam = bench_lambda(sizes(args.lambda_), work, moto_lambda) if sizes(args.lambda_) else []
    if fleet:
        report(f"standalone fleet harness (1 instance, {args.daemons} daemons)", fleet, {"SendMessageBatch"})
    if lam:
        report("Lambda harness (concurrency 4)", lam, {"Invoke"})
    for name, stats in (("fleet harness", moto_fleet), ("Lambda harness", moto_lambda)):
        report_moto(name, stats[0] if stats else None)
    print("\ntargets: <= 0.5 requests a call, <= 1 ms client CPU a call, growth <= 1.05")
    return 0


if __name__ == "__main__":
    sys.exit(main())
