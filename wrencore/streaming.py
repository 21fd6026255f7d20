"""Streaming inputs: calls over an iterator of any length, with a bounded window.

``map`` over a list knows its size and returns a list of futures. Over an iterator (a
generator of a million items, a file read line by line) it returns a :class:`FutureStream`
instead: an iterator of the futures in input order, fed by a background thread that pulls
inputs only as the window allows. At most ``max_pending`` futures exist at once that are
unfinished or not yet taken from the stream, so the inputs are never materialized, at most
``max_pending`` calls are in flight, and the client's memory stays flat however long the
input is — as long as the consumer drops the futures it has taken (as ``Executor.map`` does).
"""

from __future__ import annotations

import collections
import logging
import sys
import threading
from typing import Any, Callable, Deque, Iterator, List, Optional, Tuple, TypeVar

from .futures import Future
from .futures import cancel as cancel_future

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

#: Default of the top-level ``max_pending`` setting.
MAX_PENDING = 10_000

#: Most calls started in one batch (one ``invoke``), so a drained stream still streams.
FEED_BATCH = 10_000

#: Submit = ``submit(pairs, first_index) -> futures``: starts calls of the stream's job.
Submit = Callable[[List[Tuple[tuple, dict]], int], List[Future]]


class _Feed:
    """A stream's state and its feeder thread (kept apart so a dropped stream is closed)."""

    def __init__(self, pairs: Iterator[Tuple[tuple, dict]], submit: Submit, max_pending: int,
                 on_exhausted: Optional[Callable[[], None]] = None):
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self.max_pending = max_pending
        self._pairs = pairs
        self._submit = submit
        self._on_exhausted = on_exhausted
        self._ready: Deque[Future] = collections.deque()
        self._unfinished = 0
        self._submitted = 0
        self._error: Optional[BaseException] = None
        self._exhausted = False
        self._closed = False
        self._cond = threading.Condition()
        #: Most calls in flight at once, and most futures held, since the stream began.
        self.peak_unfinished = 0
        self.peak_held = 0
        self._feeder = threading.Thread(target=self._feed, daemon=True,
                                        name="wrencore-map-feeder")
        self._feeder.start()

    def next(self) -> Future:
        with self._cond:
            while not self._ready and not self._exhausted and not self._closed:
                self._cond.wait()
            if self._ready:
                future = self._ready.popleft()
                self._cond.notify_all()
                return future
            if self._error is not None:
                error, self._error = self._error, None
                raise error
            raise StopIteration

    def close(self) -> None:
        """Stop reading the input; cancel the calls not taken that have not started."""
        with self._cond:
            self._closed = True
            left = list(self._ready)
            self._ready.clear()
            self._cond.notify_all()
        for future in left:
            cancel_future(future)

    def drain(self) -> None:
        with self._cond:
            self.max_pending = sys.maxsize
            self._cond.notify_all()
        if self._feeder is not threading.current_thread():
            self._feeder.join()

    # -- the feeder thread ---------------------------------------------------------------
    def _slots(self) -> int:
        return self.max_pending - max(self._unfinished, len(self._ready))

    def _finished(self, _future: Any) -> None:
        with self._cond:
            self._unfinished -= 1
            if self._slots() >= self._refill_at():
                self._cond.notify_all()

    def _refill_at(self) -> int:
        """Refill in batches (a quarter of the window) rather than one call per completion."""
        return max(1, self.max_pending // 4)

    def _feed(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._closed and self._slots() < min(
                            self._refill_at(), self.max_pending):
                        self._cond.wait()
                    if self._closed:
                        return
                    want = min(self._slots(), FEED_BATCH)
                batch: List[Tuple[tuple, dict]] = []
                try:
                    for pair in self._pairs:
                        batch.append(pair)
                        if len(batch) >= want:
                            break
                finally:  # the calls read before an error in the input still run
                    if batch:
                        self._start(batch)
                if len(batch) < want:
                    return  # the input is exhausted
        except BaseException as exc:  # the input's own error, or starting its calls failed
            with self._cond:
                self._error = exc
        finally:
            with self._cond:
                self._exhausted = True
                self._pairs = iter(())  # drop the generator and what it holds
                self._cond.notify_all()
            if self._on_exhausted is not None:
                try:
                    self._on_exhausted()
                except Exception:
                    logger.exception("ending a streamed map's input failed")

    def _start(self, batch: List[Tuple[tuple, dict]]) -> None:
        futures = self._submit(batch, self._submitted)
        with self._cond:
            self._submitted += len(batch)
            self._unfinished += len(futures)
            self._ready.extend(futures)
            self.peak_unfinished = max(self.peak_unfinished, self._unfinished)
            self.peak_held = max(self.peak_held, len(self._ready))
            self._cond.notify_all()
        for future in futures:
            future.add_done_callback(self._finished)


class FutureStream(Iterator[Future[_T]]):
    """The futures of a streamed ``map``, in input order, produced as the window allows.

    Args:
        pairs: an iterator of ``(args, kwargs)``; read on a background thread.
        submit: starts a batch of calls (see :data:`Submit`).
        max_pending: most futures unfinished or not yet taken from the stream.
        on_exhausted: called (on the feeder thread) once no more calls will start.

    Iterating yields each future once. An error reading the input or starting its calls
    is raised by ``next`` after the futures before it. :meth:`close` (also when the
    stream is dropped) stops reading the input and cancels the calls not taken yet that
    have not started.
    """

    def __init__(self, pairs: Iterator[Tuple[tuple, dict]], submit: Submit, max_pending: int,
                 on_exhausted: Optional[Callable[[], None]] = None):
        self._feed = _Feed(pairs, submit, max_pending, on_exhausted)

    def __iter__(self) -> "FutureStream[_T]":
        return self

    def __next__(self) -> "Future[_T]":
        return self._feed.next()

    @property
    def max_pending(self) -> int:
        return self._feed.max_pending

    @property
    def submitted(self) -> int:
        """How many calls the stream has started so far."""
        return self._feed._submitted

    def close(self) -> None:
        """Stop reading the input; cancel the calls not taken that have not started."""
        self._feed.close()

    def drain(self) -> None:
        """Start every call left in the input now, whatever the window; return when done.

        What an executor's shutdown does, so a streamed map started before it runs to the
        end, as the stdlib's ``map`` (which submits everything at once) would.
        """
        self._feed.drain()

    def __del__(self) -> None:  # a dropped stream must not keep a feeder waiting
        feed = getattr(self, "_feed", None)
        if feed is not None:
            feed.close()
