"""Benchmark of the worker daemon over Pub/Sub against a plain google-cloud-pubsub loop,
on one Pub/Sub emulator.

Measured side by side in one run, for no-op calls, with 1 and 10 messages per pull:

- daemon: the real :class:`wrencore_runtime.daemon.Daemon` working off the ``gcp_pubsub``
  queue — pull, journal, verify and decode the signed task message, check for cancel
  markers, run the call through the shared JobRunner, write its outcome (with its result)
  to local-filesystem storage — one batch status for the calls that ended during the
  previous write —, and acknowledge the pull's messages once their outcomes are written
  (in a thread of its own, overlapping the next pull);
- plain loop: google-cloud-pubsub alone doing pull -> acknowledge on the same emulator:
  the ceiling the issue names;
- plain loop + write: the same, plus one result file written per message to the same
  local-filesystem storage (write to a temp file, rename) — the least a worker that keeps
  "acknowledge only after the status is durably written" must do.

Both drain the same pre-published signed task messages; each figure is the median of
several rounds, run alternately. Target: the daemon reaches at least 80% of the plain loop.

Run from the repository root: ``python benchmarks/bench_pubsub.py [--calls 2000]``.
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

from benchmarks import _common  # noqa: E402


def fresh_queue():
    from wrencore_gcp.queue import PubSubQueue

    return PubSubQueue(f"bench-{uuid.uuid4().hex[:10]}", project="wrencore-bench",
                       max_receives=5, ack_deadline=60)


def run_daemon(storage, calls: int, batch: int, work: str) -> float:
    return _common.run_daemon(fresh_queue(), storage, calls, batch, work, "bench")


def run_plain(bodies, batch: int, storage=None) -> float:
    from google.api_core import exceptions
    from google.cloud import pubsub_v1

    calls = len(bodies)
    queue = fresh_queue()
    queue.send_batch(bodies)
    subscriber = pubsub_v1.SubscriberClient()
    done = 0
    start = time.perf_counter()
    while done < calls:
        try:
            response = subscriber.pull(request={"subscription": queue.subscription,
                                                "max_messages": batch}, timeout=1, retry=None)
        except exceptions.DeadlineExceeded:
            continue
        ack_ids = [m.ack_id for m in response.received_messages]
        if storage is not None:
            for m in response.received_messages:
                storage.put(f"plain/{m.message.message_id}/status.json", b'{"result": 1}')
        if ack_ids:
            subscriber.acknowledge(request={"subscription": queue.subscription,
                                            "ack_ids": ack_ids})
        done += len(ack_ids)
    elapsed = time.perf_counter() - start
    queue.delete_queues()
    return calls / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=400, help="calls per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from tests.servers.gcp_emulators import PubSubEmulator, pubsub_emulator_path

    if not pubsub_emulator_path():
        print("the Pub/Sub emulator is not installed", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="bench-pubsub-") as work:
        emulator = PubSubEmulator(os.path.join(work, "emulator.log"))
        try:
            os.environ.update(emulator.env())
            from wrencore_runtime.storage import LocalFileStorage

            storage = LocalFileStorage(os.path.join(work, "storage"))
            # The plain loop drains the same signed task messages as the daemon.
            bodies = _common.task_bodies(_common.make_job(storage), args.calls, work)
            run_plain(bodies[:20], 10)  # warm up both paths (imports, connections, the JVM)
            run_daemon(storage, 20, 10, work)
            rows = []
            for batch in (1, 10):
                daemon_rates, plain_rates, written_rates = [], [], []
                for _ in range(args.rounds):
                    plain_rates.append(run_plain(bodies, batch))
                    written_rates.append(run_plain(bodies, batch, storage))
                    daemon_rates.append(run_daemon(storage, args.calls, batch, work))
                rows.append((batch, statistics.median(daemon_rates),
                             statistics.median(plain_rates), statistics.median(written_rates)))
        finally:
            emulator.stop()

    print(f"\nworker daemon over Pub/Sub vs plain pull -> ack loop, {args.calls} no-op calls "
          f"per round, median of {args.rounds} rounds, one Pub/Sub emulator\n")
    print(f"{'messages per pull':<18} {'daemon calls/s':>15} {'plain loop':>11} {'ratio':>6} "
          f"{'plain loop + write':>19} {'ratio':>6}")
    ok = True
    for batch, daemon_rate, plain_rate, written_rate in rows:
        ratio = daemon_rate / plain_rate
        ok &= ratio >= 0.8
        print(f"{batch:<18} {daemon_rate:>15.1f} {plain_rate:>11.1f} {ratio:>6.2f} "
              f"{written_rate:>19.1f} {daemon_rate / written_rate:>6.2f}")
    print(f"\ntarget: daemon >= 0.80 x plain loop: {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
