"""Future states as backends see them: claim, cancel, complete once."""

from __future__ import annotations

import concurrent.futures

import pytest

from wrencore.futures import Future, claim


def test_claim_skips_a_cancelled_call_and_wait_sees_it_done():
    cancelled, pending = Future("j", "00000"), Future("j", "00001")
    assert cancelled.cancel()
    done, not_done = concurrent.futures.wait([cancelled], timeout=0)
    assert cancelled in done and not not_done
    assert claim(cancelled) is False
    assert claim(pending) is True
    assert claim(pending) is True  # a requeued call is claimed again without error
    assert not pending.cancel()


def test_a_future_completes_once():
    future = Future("j", "00000")
    assert future._complete(result=1)
    assert not future._complete(result=2)
    assert not future.fail(RuntimeError("late"))
    assert future.result() == 1


def test_fail_reaches_result_with_its_type():
    future = Future("j", "00000")
    future.fail(TimeoutError("too slow"))
    with pytest.raises(TimeoutError, match="too slow"):
        future.result(timeout=1)
