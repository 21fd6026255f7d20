"""wrencore's local backend against concurrent.futures.ProcessPoolExecutor, side by side.

Run: ``python benchmarks/bench_local.py [--reps 5]``. Both use 2 worker processes, warm
pools (created once, warmed up) except for the cold time-to-first-result case; repetitions
are interleaved and the order alternates, and medians are printed with ratios
(wrencore / ProcessPoolExecutor: below 1 is faster).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import wrencore  # noqa: E402

MIB = 1 << 20


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


def run_wren(executor, fn, items):
    futures = executor.map_futures(fn, items)
    return wrencore.get_all_results(futures)


def run_ppe(pool, fn, items):
    return list(pool.map(fn, items))


def timed(fn, *args):
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def first_result_cold_wren():
    start = time.perf_counter()
    with wrencore.Executor(backend="local", config={"local": {"workers": 2}}) as ex:
        ex.submit(noop, 1).result()
        elapsed = time.perf_counter() - start
    return elapsed


def first_result_cold_ppe():
    start = time.perf_counter()
    with concurrent.futures.ProcessPoolExecutor(max_workers=2) as pool:
        pool.submit(noop, 1).result()
        elapsed = time.perf_counter() - start
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()

    blob = b"a" * MIB
    cases = {
        "1,000 no-op tasks": (noop, list(range(1000))),
        "100 tasks returning 1 MiB": (make_mib, list(range(100))),
        "100 tasks taking a 1 MiB argument": (take_mib, [blob] * 100),
        "40 CPU-bound tasks of ~50 ms": (burn, [50] * 40),
    }
    executor = wrencore.Executor(backend="local", config={"local": {"workers": 2}})
    pool = concurrent.futures.ProcessPoolExecutor(max_workers=2)
    for fn, items in cases.values():  # warm both pools and wrencore's function cache
        run_wren(executor, fn, items[:4])
        run_ppe(pool, fn, items[:4])

    times = {name: {"wrencore": [], "ppe": []} for name in cases}
    times["time to first result (cold pool)"] = {"wrencore": [], "ppe": []}
    times["time to first result (warm pool)"] = {"wrencore": [], "ppe": []}
    for rep in range(args.reps):
        order = ("wrencore", "ppe") if rep % 2 == 0 else ("ppe", "wrencore")
        for name, (fn, items) in cases.items():
            for who in order:
                if who == "wrencore":
                    times[name][who].append(timed(run_wren, executor, fn, items))
                else:
                    times[name][who].append(timed(run_ppe, pool, fn, items))
        for who in order:
            cold = first_result_cold_wren if who == "wrencore" else first_result_cold_ppe
            times["time to first result (cold pool)"][who].append(cold())
            warm = (lambda: executor.submit(noop, 1).result()) if who == "wrencore" \
                else (lambda: pool.submit(noop, 1).result())
            times["time to first result (warm pool)"][who].append(timed(warm))

    serial = statistics.median(timed(burn, 50) for _ in range(5))
    ideal = serial * 40 / 2
    executor.shutdown()
    pool.shutdown()

    print(f"{'case':38} {'wrencore':>10} {'ProcessPool':>12} {'ratio':>7}")
    for name, result in times.items():
        w, p = statistics.median(result["wrencore"]), statistics.median(result["ppe"])
        print(f"{name:38} {w * 1000:8.1f}ms {p * 1000:10.1f}ms {w / p:7.2f}")
    cpu = statistics.median(times["40 CPU-bound tasks of ~50 ms"]["wrencore"])
    cpu_ppe = statistics.median(times["40 CPU-bound tasks of ~50 ms"]["ppe"])
    print(f"CPU-bound efficiency vs the 2-core ideal ({ideal * 1000:.0f} ms): "
          f"wrencore {ideal / cpu:.0%}, ProcessPoolExecutor {ideal / cpu_ppe:.0%}")
    print(f"medians of {args.reps} interleaved repetitions; ratio = wrencore / ProcessPoolExecutor")


if __name__ == "__main__":
    main()
