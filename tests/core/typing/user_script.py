"""A user's script, type-checked with ``mypy --strict`` by tests/core/test_typing.py."""

from __future__ import annotations

import concurrent.futures
from typing import Iterator, List

import wrencore
from wrencore.summary import JobSummary


def square(x: int) -> int:
    return x * x


def numbers() -> Iterator[int]:
    yield from range(5)


def main() -> int:
    futures: List[wrencore.Future[int]] = wrencore.map(square, [1, 2, 3])
    results: List[int] = wrencore.get_all_results(futures, timeout=10.0, progress=False)
    stream = wrencore.map(square, numbers())
    streamed = [f.result() for f in stream]
    done, not_done = wrencore.wait(futures, timeout=5, return_when=wrencore.FIRST_COMPLETED)
    for future in wrencore.as_completed(futures, timeout=5):
        value: int = future.result()
    total = 0
    with wrencore.Executor(backend="local", max_workers=2, retries=1, progress=False) as ex:
        one: wrencore.Future[int] = ex.submit(square, 7)
        total += one.result(timeout=1.0)
        squares: List[int] = list(ex.map(square, [1, 2], timeout=3.0))
        total += sum(squares)
        listed = ex.map_futures(square, range(3))
        total += len(listed)
        print(one.call_id, one.job_id, one.metadata.get("worker_exec_time"), one.logs())
        summary: JobSummary = ex.summary()
        print(summary.line(), summary.percentiles.get("p50"))
        ex.cancel(listed, running=True)
    call = wrencore.call_async(square, 3)
    if isinstance(call.exception(), wrencore.WrenError):
        return 1
    pending: concurrent.futures.Future[int] = concurrent.futures.Future()
    del pending, done, not_done, streamed
    return total + sum(results)
