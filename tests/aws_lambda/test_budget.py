"""The in-flight budget of the Lambda backend: permits, fairness, and whom a release wakes."""

from __future__ import annotations

import threading
import time

from wrencore_aws_lambda.backend import _CallBudget


def _start(budget, n, got):
    thread = threading.Thread(target=lambda: got.append((n, budget.acquire(n))), daemon=True)
    thread.start()
    return thread


def _wait_for_waiters(budget, count):
    deadline = time.monotonic() + 5
    while len(budget._waiters) < count and time.monotonic() < deadline:
        time.sleep(0.005)
    assert len(budget._waiters) == count


def test_waiters_get_permits_in_order_and_only_when_they_fit():
    budget = _CallBudget(4)
    assert budget.acquire(3) == 3
    got = []
    first = _start(budget, 2, got)
    _wait_for_waiters(budget, 1)
    second = _start(budget, 1, got)  # fits now, but waits its turn behind the first
    _wait_for_waiters(budget, 2)
    assert got == [] and budget.used == 3
    budget.release(2)  # 1 used: the first fits, then the second
    first.join(5), second.join(5)
    assert sorted(got) == [(1, 1), (2, 2)] and budget.used == 4


def test_a_release_wakes_only_the_waiters_it_lets_through():
    budget = _CallBudget(2)
    budget.acquire(2)
    got = []
    threads = [_start(budget, 1, got) for _ in range(5)]
    _wait_for_waiters(budget, 5)
    budget.release(1)
    threads[0].join(5)
    time.sleep(0.05)
    assert got == [(1, 1)] and len(budget._waiters) == 4 and budget.used == 2
    budget.release(2)
    threads[1].join(5), threads[2].join(5)
    assert len(got) == 3 and len(budget._waiters) == 2 and budget.used == 2
    budget.release(2)
    for thread in threads:
        thread.join(5)
    assert len(got) == 5 and budget.used == 2


def test_a_chunk_larger_than_the_limit_takes_the_whole_limit():
    budget = _CallBudget(3)
    assert budget.acquire(10) == 3 and budget.used == 3
    budget.release(3)
    assert budget.used == 0
