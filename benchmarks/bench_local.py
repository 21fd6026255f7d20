"""wrencore's local backend against ProcessPoolExecutor and multiprocessing.Pool, side by side.

Run: ``python benchmarks/bench_local.py [--reps 5] [--fresh-only]``. All use 2 worker processes and warm
pools (created once, warmed up) except for the time-to-first-result cases: a new pool in this
process (for wrencore, its fork server already runs), and the first pool of a fresh Python
process (measured inside it from just after ``import wrencore`` or ``import
concurrent.futures`` to the first result, so it includes wrencore's plugin loading and the
start of its fork server). Repetitions
are interleaved and the order rotates. Medians are printed with two ratios,
wrencore / ProcessPoolExecutor and wrencore / multiprocessing.Pool (below 1: wrencore is
faster). Each pool's own ``map`` is used with its default chunksize, as a user would call it.

The issue's targets: 10,000 no-op calls through ``Executor.map`` (and ``map_futures``) in
at most 0.1 s (10 µs of client overhead per call), and a new executor's first result within
3x of a new ProcessPoolExecutor's. The first-result ratios are given two ways: of the
medians, and the median of each repetition's own ratio (both sides of a repetition ran
back to back, so under a varying load it is the steadier of the two). ``--fresh-only`` times
only the fresh processes' first results (with ``--reps 20`` or more: a quick, steady
check of that ratio). ``client CPU/call`` is this process's CPU time (every
thread) divided by the calls; on Linux it is also split by thread (``ended``: threads that
ended during the run, such as the one writing a job's timeline), and the worker processes'
CPU time in the same run is printed beside it (Linux).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import os
import re
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import wrencore  # noqa: E402

MIB = 1 << 20
WORKERS = 2


def noop(x):
    return x


def make_mib(x):
    return b"r" * MIB


def take_mib(blob):
    return len(blob)


def burn(ms):
    end = time.perf_counter() + ms / 1000
    n = 0
    while time.perf_counter() < end:
        n += 1
    return n


def run_wren_futures(executor, fn, items):
    return wrencore.get_all_results(executor.map_futures(fn, items))


def run_wren_map(executor, fn, items):
    return list(executor.map(fn, items))


def run_pool(pool, fn, items):
    return list(pool.map(fn, items))


def timed(fn, *args):
    start, cpu = time.perf_counter(), time.process_time()
    fn(*args)
    return time.perf_counter() - start, time.process_time() - cpu


def thread_cpu():
    """CPU seconds of each live thread of this process, by thread name (Linux only: {}
    elsewhere); numbered threads of one kind (``…-reader-0``, ``…-1``) are added up."""
    names = {str(t.native_id): re.sub(r"-\d+$", "-N", t.name) for t in threading.enumerate()}
    totals = {}
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return totals
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                seconds = int(f.read().split()[0]) / 1e9
        except OSError:
            continue
        name = names.get(tid, "other")
        totals[name] = totals.get(name, 0.0) + seconds
    return totals


def process_cpu(pid):
    """CPU seconds of every live thread of process ``pid`` (Linux only: 0.0 elsewhere)."""
    total = 0.0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return total
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0]) / 1e9
        except OSError:
            continue
    return total


def worker_pids(executor):
    """The pids of a wrencore executor's local worker processes (its private pool)."""
    return [worker.proc.pid for worker in executor.backend.pool._workers]


def timed_by_thread(fn, executor, *args):
    """``timed``, the CPU each thread spent (threads that ended meanwhile: "ended"), and
    under "workers" the CPU of the executor's worker processes."""
    before = thread_cpu()
    pids = worker_pids(executor)
    workers_before = {pid: process_cpu(pid) for pid in pids}
    wall, cpu = timed(fn, executor, *args)
    after = thread_cpu()
    spent = {name: seconds - before.get(name, 0.0) for name, seconds in after.items()}
    spent["ended"] = max(0.0, cpu - sum(spent.values()))
    workers = sum(process_cpu(pid) - workers_before[pid] for pid in pids
                  if pid in worker_pids(executor))
    return (wall, cpu), spent, workers


def first_result_cold(who):
    start = time.perf_counter()
    if who == "wrencore":
        with wrencore.Executor(backend="local", max_workers=WORKERS) as ex:
            ex.submit(noop, 1).result()
            elapsed = time.perf_counter() - start
    elif who == "ppe":
        with concurrent.futures.ProcessPoolExecutor(max_workers=WORKERS) as pool:
            pool.submit(noop, 1).result()
            elapsed = time.perf_counter() - start
    else:
        with multiprocessing.Pool(WORKERS) as pool:
            pool.apply_async(noop, (1,)).get()
            elapsed = time.perf_counter() - start
    return elapsed, 0.0


FIRST_IN_PROCESS = {
    "wrencore": ("import time, wrencore\n"
                 "def noop(x):\n"
                 "    return x\n"
                 "start = time.perf_counter()\n"
                 "with wrencore.Executor(backend='local', max_workers={workers}) as ex:\n"
                 "    ex.submit(noop, 1).result()\n"
                 "    print(time.perf_counter() - start)\n"),
    "ppe": ("import time, concurrent.futures\n"
            "def noop(x):\n"
            "    return x\n"
            "start = time.perf_counter()\n"
            "with concurrent.futures.ProcessPoolExecutor(max_workers={workers}) as pool:\n"
            "    pool.submit(noop, 1).result()\n"
            "    print(time.perf_counter() - start)\n"),
    "pool": ("import time, multiprocessing\n"
             "def noop(x):\n"
             "    return x\n"
             "if __name__ == '__main__':\n"
             "    start = time.perf_counter()\n"
             "    with multiprocessing.Pool({workers}) as pool:\n"
             "        pool.apply_async(noop, (1,)).get()\n"
             "        print(time.perf_counter() - start)\n"),
}


def first_result_fresh_process(who):
    """The first pool of a new interpreter: timed inside it, after its imports."""
    code = FIRST_IN_PROCESS[who].replace("{workers}", str(WORKERS))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=os.path.dirname(os.path.abspath(__file__)))
    return float(out.stdout.split()[-1]), 0.0


def first_result_line(name, times):
    """The ratio of wrencore's first result to ProcessPoolExecutor's, both ways."""
    medians = statistics.median(times["wrencore"]) / statistics.median(times["ppe"])
    per_rep = statistics.median(w / p for w, p in zip(times["wrencore"], times["ppe"]))
    return (f"{name}: {medians:.2f}x ProcessPoolExecutor, median of per-repetition ratios "
            f"{per_rep:.2f}x (target <= 3x)")


def fresh_only(reps):
    """Only "first result, fresh process", repetitions interleaved in rotating order."""
    who_all = ("wrencore", "ppe", "pool")
    times = {who: [] for who in who_all}
    for rep in range(reps):
        for who in who_all[rep % 3:] + who_all[:rep % 3]:
            times[who].append(first_result_fresh_process(who)[0])
    print("  ".join(f"{who} {statistics.median(times[who]) * 1000:.1f}ms" for who in who_all))
    print(first_result_line("first result, fresh process", times))
    print(f"medians of {reps} interleaved repetitions; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--fresh-only", action="store_true",
                        help="only the first result of a fresh process")
    args = parser.parse_args()
    if args.fresh_only:
        fresh_only(args.reps)
        return

    blob = b"a" * MIB
    no_ops = list(range(10_000))
    # case -> (function, items, how wrencore runs it)
    cases = {
        "10,000 no-ops, Executor.map": (noop, no_ops, run_wren_map),
        "10,000 no-ops, map_futures+results": (noop, no_ops, run_wren_futures),
        "1,000 no-op tasks": (noop, no_ops[:1000], run_wren_futures),
        "100 tasks returning 1 MiB": (make_mib, list(range(100)), run_wren_futures),
        "100 tasks taking a 1 MiB argument": (take_mib, [blob] * 100, run_wren_futures),
        "40 CPU-bound tasks of ~50 ms": (burn, [50] * 40, run_wren_futures),
    }
    executor = wrencore.Executor(backend="local", max_workers=WORKERS)
    ppe = concurrent.futures.ProcessPoolExecutor(max_workers=WORKERS)
    mpp = multiprocessing.Pool(WORKERS)
    pools = {"wrencore": executor, "ppe": ppe, "pool": mpp}
    for fn, items, run_wren in cases.values():  # warm the pools and wrencore's function cache
        run_wren(executor, fn, items[:4])
        run_pool(ppe, fn, items[:4])
        run_pool(mpp, fn, items[:4])

    who_all = ("wrencore", "ppe", "pool")
    names = list(cases) + ["first result, fresh process", "first result, new pool",
                           "first result, warm pool"]
    times = {name: {who: [] for who in who_all} for name in names}
    cpus = {name: {who: [] for who in who_all} for name in names}

    by_thread = []  # per repetition: thread name -> CPU seconds, wrencore's Executor.map
    worker_cpu = []  # per repetition: CPU seconds of its worker processes, the same run

    def record(name, who, measured):
        times[name][who].append(measured[0])
        cpus[name][who].append(measured[1])

    for rep in range(args.reps):
        order = who_all[rep % 3:] + who_all[:rep % 3]
        for name, (fn, items, run_wren) in cases.items():
            for who in order:
                run = run_wren if who == "wrencore" else run_pool
                if who == "wrencore" and name == "10,000 no-ops, Executor.map":
                    measured, spent, workers = timed_by_thread(run, pools[who], fn, items)
                    by_thread.append(spent)
                    worker_cpu.append(workers)
                    record(name, who, measured)
                else:
                    record(name, who, timed(run, pools[who], fn, items))
        for who in order:
            record("first result, fresh process", who, first_result_fresh_process(who))
            record("first result, new pool", who, first_result_cold(who))
            warm = {"wrencore": lambda: executor.submit(noop, 1).result(),
                    "ppe": lambda: ppe.submit(noop, 1).result(),
                    "pool": lambda: mpp.apply_async(noop, (1,)).get()}[who]
            record("first result, warm pool", who, timed(warm))

    serial = statistics.median(timed(burn, 50)[0] for _ in range(5))
    ideal = serial * 40 / WORKERS
    executor.shutdown()
    ppe.shutdown()
    mpp.close()
    mpp.join()

    print(f"{'case':36} {'wrencore':>10} {'ProcessPool':>12} {'mp.Pool':>10} "
          f"{'w/PPE':>6} {'w/Pool':>7}")
    for name in names:
        w, p, m = (statistics.median(times[name][who]) for who in who_all)
        print(f"{name:36} {w * 1000:8.1f}ms {p * 1000:10.1f}ms {m * 1000:8.1f}ms "
              f"{w / p:6.2f} {w / m:7.2f}")
    for name in ("10,000 no-ops, Executor.map", "10,000 no-ops, map_futures+results"):
        wall = statistics.median(times[name]["wrencore"])
        cpu = statistics.median(cpus[name]["wrencore"])
        print(f"{name}: {wall / 10_000 * 1e6:.1f} µs wall/call, "
              f"{cpu / 10_000 * 1e6:.1f} µs client CPU/call (target: 10,000 in <= 100 ms)")
    threads = sorted({n for spent in by_thread for n in spent},
                     key=lambda n: -statistics.median(s.get(n, 0.0) for s in by_thread))
    print("10,000 no-ops, Executor.map: client CPU/call by thread (median): " + ", ".join(
        f"{n} {statistics.median(s.get(n, 0.0) for s in by_thread) / 10_000 * 1e6:.2f} µs"
        for n in threads if any(s.get(n, 0.0) for s in by_thread)))
    print(f"10,000 no-ops, Executor.map: worker processes' CPU/call (median, all "
          f"{WORKERS} together): {statistics.median(worker_cpu) / 10_000 * 1e6:.2f} µs")
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for name in ("first result, fresh process", "first result, new pool"):
        print(first_result_line(name, times[name]))
    cpu_w, cpu_p = (statistics.median(times["40 CPU-bound tasks of ~50 ms"][who])
                    for who in ("wrencore", "ppe"))
    print(f"CPU-bound efficiency vs the {WORKERS}-core ideal ({ideal * 1000:.0f} ms): "
          f"wrencore {ideal / cpu_w:.0%}, ProcessPoolExecutor {ideal / cpu_p:.0%}")
    print(f"medians of {args.reps} interleaved repetitions; w/PPE = wrencore / "
          f"ProcessPoolExecutor, w/Pool = wrencore / multiprocessing.Pool; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
