"""Streaming inputs on the local backend: a generator is read as the window allows."""

from __future__ import annotations

import gc
import threading
import tracemalloc

import pytest

import wrencore
from wrencore import hookimpl
from wrencore.errors import ConfigError
from wrencore.plugins import get_plugin_manager
from wrencore.streaming import FutureStream

N = 100_000
WINDOW = 2_000


def _identity(x):
    return x


class _FinishedCalls:
    """Counts finished calls through the ``wrencore_call_finished`` hook."""

    def __init__(self):
        self.count = 0
        self._lock = threading.Lock()

    @hookimpl
    def wrencore_call_finished(self, future, metadata):
        with self._lock:
            self.count += 1


@pytest.fixture
def finished_calls():
    counter = _FinishedCalls()
    pm = get_plugin_manager()
    pm.register(counter, name="test-finished-calls")
    try:
        yield counter
    finally:
        pm.unregister(counter)


def test_a_generator_of_100000_items_streams_with_bounded_memory_and_calls_in_flight(
        finished_calls):
    pulled = [0]
    most_in_flight = [0]
    results_before_exhausted = []

    def inputs():
        for i in range(N):
            # Every call started before this item is either finished or still in flight.
            most_in_flight[0] = max(most_in_flight[0], pulled[0] - finished_calls.count)
            pulled[0] += 1
            yield i

    tracemalloc.start()
    try:
        with wrencore.Executor(max_workers=2, max_pending=WINDOW) as executor:
            total = 0
            for index, result in enumerate(executor.map(_identity, inputs())):
                if index == 0:
                    results_before_exhausted.append(pulled[0])
                assert result == index
                total += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == N
    assert results_before_exhausted[0] < N, "the first result waited for the whole input"
    assert 0 < most_in_flight[0] <= WINDOW
    # 100,000 futures held at once take over 100 MB; a window of 2,000 a few MB.
    assert peak < 40 * 2**20, f"client memory peaked at {peak / 2**20:.1f} MiB"


def test_map_futures_over_a_generator_returns_a_stream_in_input_order():
    with wrencore.Executor(max_workers=2, max_pending=7) as executor:
        stream = executor.map_futures(_identity, (i for i in range(50)))
        assert isinstance(stream, FutureStream)
        assert [f.result(timeout=30) for f in stream] == list(range(50))
        assert isinstance(executor.map_futures(_identity, [1, 2]), list)


def test_an_error_in_the_input_is_raised_after_the_calls_before_it():
    def inputs():
        yield 1
        yield 2
        raise KeyError("bad input")

    with wrencore.Executor(max_workers=2) as executor:
        results = executor.map(_identity, inputs())
        assert [next(results), next(results)] == [1, 2]
        with pytest.raises(KeyError, match="bad input"):
            next(results)


def test_a_dropped_stream_stops_reading_its_input():
    pulled = [0]

    def endless():
        while True:
            pulled[0] += 1
            yield pulled[0]

    with wrencore.Executor(max_workers=2, max_pending=10) as executor:
        stream = executor.map_futures(_identity, endless())
        assert next(stream).result(timeout=30) == 1
        stream.close()
        del stream
        gc.collect()
        seen = pulled[0]
        assert seen <= 10 + 1
    assert pulled[0] == seen


def test_a_streamed_map_started_before_shutdown_runs_to_its_end():
    with wrencore.Executor(max_workers=2, max_pending=5) as executor:
        results = executor.map(_identity, (i for i in range(40)))
    assert list(results) == list(range(40))


@pytest.mark.parametrize("value", [0, -3, "many"])
def test_max_pending_is_checked(value):
    with pytest.raises(ConfigError, match="max_pending"):
        wrencore.Executor(max_pending=value)
    with pytest.raises(ConfigError, match="max_pending"):
        wrencore.Executor(config={"max_pending": value})
