"""Benchmark of the worker daemon over Pub/Sub against a plain google-cloud-pubsub loop,
on one Pub/Sub emulator.

Measured side by side in one run, for no-op calls, with 1 and 10 messages per pull:

- daemon: the real :class:`wrencore_runtime.daemon.Daemon` working off the ``gcp_pubsub``
  queue — pull, journal, verify and decode the signed task message, check for cancel
  markers, run the call through the shared JobRunner, log its two lines, journal the
  pull's outcomes (the write-ahead its successor replays after a crash), write the
  outcomes (with their results) to local-filesystem storage, and acknowledge the messages
  once their outcomes are written;
- plain loop: google-cloud-pubsub alone doing pull -> acknowledge on the same emulator:
  the ceiling the issue names;
- plain loop + write: the same, plus one object written per pull to the same
  local-filesystem storage (write to a temp file, rename) before the acknowledgement — a
  worker that keeps "acknowledge only after the status is durably written" pull by pull.

What makes the comparison fair:

- the same message bodies: every side drains the same kind of signed task message (the
  plain loops drain the very bodies the daemon's first round drains; each daemon round
  has a job of its own, so its statuses never land on an earlier round's);
- the same batch size (``max_messages`` of each pull), one process, one subscriber
  channel, at most one pull outstanding at a time on every side;
- the same storage (local files, write to a temp file then rename, no fsync);
- the daemon logs as ``wrencore worker`` does (``daemon.configure_logging``): its two INFO
  lines per call, formatted, to a file (where supervisord puts a worker's stderr), each
  call's start line written before the call runs;
- warm-up excluded: one unmeasured round of each side first; every side's subscriber
  channel is connected before its clock starts (the plain loops use the queue's own
  client, which created the subscription);
- several rounds, each side once per round in turn, medians reported.

Beside the rates it reports CPU per message: of this process (all its threads — the
daemon's, gRPC's), and of the emulator's JVM. On a busy machine the CPU per message is
the steadier figure. ``--threads`` breaks the daemon's CPU down by thread.

What the sides do not share: the daemon sends its requests straight on the client
library's gRPC channel (see ``wrencore_gcp.queue``), the plain loops through the client
library's methods, as a plain google-cloud-pubsub program does. The plain loops
acknowledge once per pull; the busy daemon acknowledges its done messages together within
50 ms (see ``StatusWriter``), as the client library's own streaming subscriber batches its
acknowledgements. Each pull is one request of the same size on every side. The daemon
appends each call's outcome to its local journal (a store into a local file mapped into
memory, see ``JournalArea``) before it runs the next call, and writes the outcomes of
the pulls it handles within some
milliseconds of each other to storage as one object ("plain loop + write" writes one
object per pull); a message is acknowledged only once its outcome is in storage, on every
side.

To measure another checkout's daemon with this benchmark, put that checkout's packages
first on ``PYTHONPATH`` (a directory of links named ``wrencore``, ``wrencore_runtime``,
``wrencore_gcp`` … to its ``wrencore``, ``runtime``, ``plugins/gcp`` … folders).

Run from the repository root: ``python benchmarks/bench_pubsub.py [--calls 2000]``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from typing import Dict, List

# Appended, not prepended: PYTHONPATH may point at another checkout's packages to measure
# them with this benchmark (the repository root holds the ``wrencore`` package too).
sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import _common  # noqa: E402


def fresh_queue():
    from wrencore_gcp.queue import PubSubQueue

    return PubSubQueue(f"bench-{uuid.uuid4().hex[:10]}", project="wrencore-bench",
                       max_receives=5, ack_deadline=60)


# ------------------------------------------------------------------------------------
# CPU clocks
# ------------------------------------------------------------------------------------


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) of process ``pid``."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu() -> Dict[str, float]:
    """CPU seconds of each of this process's threads (from the scheduler, in ns), by the
    Python name of the thread, or ``native`` for threads Python did not start (gRPC's)."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    found: Dict[str, float] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/schedstat", encoding="ascii") as f:
                seconds = int(f.read().split()[0]) / 1e9
        except OSError:
            continue
        name = names.get(int(tid), "native (gRPC)")
        found[name] = found.get(name, 0.0) + seconds
    return found


class Measure:
    """Wall time, this process's CPU, the emulator's CPU and per-thread CPU of a run."""

    def __init__(self, emulator_pid: int) -> None:
        self.emulator_pid = emulator_pid
        self.cpu = self.emulator_cpu = 0.0
        self.threads: Dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self):
        threads, cpu = thread_cpu(), time.process_time()
        emulator = process_cpu(self.emulator_pid)
        yield
        self.cpu = time.process_time() - cpu
        self.emulator_cpu = process_cpu(self.emulator_pid) - emulator
        after = thread_cpu()
        self.threads = {name: after[name] - threads.get(name, 0.0) for name in after}


# ------------------------------------------------------------------------------------
# the sides
# ------------------------------------------------------------------------------------


def run_daemon(storage, calls: int, batch: int, work: str, measure: Measure) -> float:
    return _common.run_daemon(fresh_queue(), storage, calls, batch, work, "bench", measure)


def run_plain(bodies, batch: int, measure: Measure, storage=None) -> float:
    from google.api_core import exceptions

    calls = len(bodies)
    queue = fresh_queue()
    queue.send_batch(bodies)
    subscriber = queue.subscriber  # connected: it created the subscription
    done = 0
    with measure():
        start = time.perf_counter()
        while done < calls:
            try:
                response = subscriber.pull(request={"subscription": queue.subscription,
                                                    "max_messages": batch},
                                           timeout=1, retry=None)
            except exceptions.DeadlineExceeded:
                continue
            ack_ids = [m.ack_id for m in response.received_messages]
            if storage is not None and ack_ids:
                ids = ",".join(m.message.message_id for m in response.received_messages)
                storage.put(f"plain/{uuid.uuid4().hex}/status.json",
                            ('{"done": "%s"}' % ids).encode())
            if ack_ids:
                subscriber.acknowledge(request={"subscription": queue.subscription,
                                                "ack_ids": ack_ids})
            done += len(ack_ids)
        elapsed = time.perf_counter() - start
    queue.delete_queues()
    return calls / elapsed


def log_as_a_worker(path: str) -> None:
    """The daemon's own logging (``daemon.configure_logging``, as under ``wrencore worker``),
    into a file instead of supervisord's: its stderr handler is made while ``sys.stderr``
    is that file."""
    from wrencore_runtime.daemon import DaemonSettings, configure_logging

    stderr, sys.stderr = sys.stderr, open(path, "a", encoding="utf-8")
    try:
        configure_logging(DaemonSettings(queue={"bench": True}))
    finally:
        sys.stderr = stderr


SIDES = ("daemon", "plain", "plain+write")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batches", default="1,10", help="messages per pull, comma-separated")
    parser.add_argument("--threads", action="store_true",
                        help="also break the daemon's CPU down by thread")
    parser.add_argument("--label", default="", help="a name for this run's table")
    args = parser.parse_args()

    from tests.servers.gcp_emulators import PubSubEmulator, pubsub_emulator_path

    if not pubsub_emulator_path():
        print("the Pub/Sub emulator is not installed", file=sys.stderr)
        return 1
    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-pubsub-") as work:
        emulator = PubSubEmulator(os.path.join(work, "emulator.log"))
        try:
            os.environ.update(emulator.env())
            log_as_a_worker(os.path.join(work, "daemon.log"))
            from wrencore_runtime.storage import LocalFileStorage

            storage = LocalFileStorage(os.path.join(work, "storage"))
            measure = Measure(emulator.proc.pid)
            bodies = _common.task_bodies(_common.make_job(storage), args.calls, work)
            # Warm-up, unmeasured: imports, the JVM's JIT, the first job's function load.
            run_plain(bodies[:200], 10, measure)
            run_plain(bodies[:200], 10, measure, storage)
            run_daemon(storage, 200, 10, work, measure)
            for batch in (int(b) for b in args.batches.split(",")):
                figures: Dict[str, List[tuple]] = {side: [] for side in SIDES}
                threads: Dict[str, float] = {}
                for _ in range(args.rounds):
                    for side in SIDES:
                        if side == "daemon":
                            rate = run_daemon(storage, args.calls, batch, work, measure)
                            for name, seconds in measure.threads.items():
                                threads[name] = threads.get(name, 0.0) + seconds
                        else:
                            rate = run_plain(bodies, batch, measure,
                                             storage if side == "plain+write" else None)
                        figures[side].append((rate, measure.cpu / args.calls * 1e6,
                                              measure.emulator_cpu / args.calls * 1e6))
                rows.append((batch, {side: tuple(statistics.median(f[i] for f in figures[side])
                                                 for i in range(3))
                                     for side in SIDES},
                             {name: seconds / (args.calls * args.rounds) * 1e6
                              for name, seconds in threads.items()}))
        finally:
            emulator.stop()
    load_after = os.getloadavg()

    print(f"\n{args.label + ': ' if args.label else ''}worker daemon over Pub/Sub vs plain "
          f"pull -> ack loop, {args.calls} no-op calls per round, median of {args.rounds} "
          f"rounds, one Pub/Sub emulator; load average {load_before[0]:.1f} before, "
          f"{load_after[0]:.1f} after\n")
    print(f"{'per pull':<9} {'daemon/s':>9} {'plain/s':>9} {'ratio':>6} {'plain+write/s':>14} "
          f"{'ratio':>6}   CPU us/msg here (emulator): {'daemon':>13} {'plain':>13} "
          f"{'plain+write':>13}")
    ok = True
    for batch, medians, _threads in rows:
        daemon, plain, written = (medians[side] for side in SIDES)
        ratio = daemon[0] / plain[0]
        ok &= ratio >= 0.8
        cpu = " ".join(f"{f[1]:>6.0f} ({f[2]:>4.0f})" for f in (daemon, plain, written))
        print(f"{batch:<9} {daemon[0]:>9.0f} {plain[0]:>9.0f} {ratio:>6.2f} {written[0]:>14.0f} "
              f"{daemon[0] / written[0]:>6.2f}   {'':>27} {cpu}")
    if args.threads:
        for batch, _medians, per_thread in rows:
            print(f"\ndaemon CPU per call by thread, {batch} per pull (us, all rounds): " +
                  ", ".join(f"{name} {us:.0f}" for name, us in
                            sorted(per_thread.items(), key=lambda kv: -kv[1]) if us >= 0.5))
    print(f"\ntarget: daemon >= 0.80 x plain loop: {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
