"""Completing futures by watching storage, for backends whose workers write status there.

One background thread per watcher lists each watched job's prefix, reads the statuses of
calls that finished — one ``status.json`` per call, or a ``batch-status.json`` for several
calls run together (see ``wrencore_runtime.layout``) — with a small pool of fetch threads,
and completes their futures. The polling interval adapts: it shrinks
to ``min_interval`` while results arrive and grows to ``max_interval`` while none do. A
missing key is "not yet"; a storage error is logged and retried, never fatal.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, List, Optional, Set

from wrencore_runtime import layout
from wrencore_runtime.errors import StorageKeyError
from wrencore_runtime.protocol import decode_json
from wrencore_runtime.storage import Storage

from .futures import Future, complete_from_status

logger = logging.getLogger(__name__)

#: ``deadline_check(future) -> BaseException | None``: a backend's verdict on a call that
#: has no status yet (e.g. its invocation failed or passed its deadline).
DeadlineCheck = Callable[[Future], Optional[BaseException]]


class StatusWatcher:
    def __init__(self, storage: Storage, *, min_interval: float = 0.05,
                 max_interval: float = 2.0, deadline_check: Optional[DeadlineCheck] = None,
                 fetch_threads: int = 16):
        self.storage = storage
        self.min_interval = min_interval
        self.max_interval = max_interval
        self.deadline_check = deadline_check
        self._pending: Dict[str, Dict[str, Future]] = {}
        self._seen_batches: Dict[str, Set[str]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = False
        self._fresh_work = False
        self._thread: Optional[threading.Thread] = None
        self._fetch_pool = ThreadPoolExecutor(fetch_threads,
                                              thread_name_prefix="wrencore-status-fetch")

    def watch(self, job_id: str, futures: Dict[str, Future]) -> None:
        with self._lock:
            self._pending.setdefault(job_id, {}).update(futures)
            self._fresh_work = True
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="wrencore-watcher",
                                                daemon=True)
                self._thread.start()
        self._wake.set()

    def pending_count(self) -> int:
        with self._lock:
            return sum(len(v) for v in self._pending.values())

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._fetch_pool.shutdown(wait=False)

    def poll_once(self) -> int:
        """Complete every watched call whose status exists; return how many completed."""
        with self._lock:
            jobs = {job: dict(calls) for job, calls in self._pending.items()}
        completed = 0
        for job_id, calls in jobs.items():
            for call_id, future in list(calls.items()):
                if future.cancelled():
                    self._forget(job_id, call_id)
            try:
                keys = self.storage.list(layout.job_prefix(job_id))
            except Exception as exc:
                logger.warning("listing job %s failed, will retry: %s", job_id, exc)
                continue
            seen = self._seen_batches.setdefault(job_id, set())
            singles = ({layout.call_id_of_status_key(k) for k in keys} - {None}) & calls.keys()
            batches = [k for k in keys if layout.is_batch_status_key(k) and k not in seen]
            tasks = [self._fetch_pool.submit(self._complete_single, job_id, call_id,
                                             calls[call_id]) for call_id in singles]
            tasks += [self._fetch_pool.submit(self._complete_batch, job_id, key, calls)
                      for key in batches]
            for task in tasks:
                completed += len(task.result())
            if self.deadline_check is not None:
                for call_id, future in calls.items():
                    if future.done():
                        continue
                    error = self.deadline_check(future)
                    if error is not None and future.fail(error):
                        self._forget(job_id, call_id)
                        completed += 1
        with self._lock:
            for job_id in list(self._seen_batches):
                if job_id not in self._pending:
                    del self._seen_batches[job_id]
        return completed

    def _complete_single(self, job_id: str, call_id: str, future: Future) -> List[str]:
        try:
            status = decode_json(self.storage.get(layout.status_key(job_id, call_id)))
        except StorageKeyError:
            return []
        except Exception as exc:
            logger.warning("reading status of %s/%s failed: %s", job_id, call_id, exc)
            return []
        complete_from_status(future, status, None, self.storage)
        self._forget(job_id, call_id)
        return [call_id]

    def _complete_batch(self, job_id: str, key: str, calls: Dict[str, Future]) -> List[str]:
        try:
            batch = decode_json(self.storage.get(key))
        except StorageKeyError:
            return []
        except Exception as exc:
            logger.warning("reading batch status %s failed: %s", key, exc)
            return []
        done = []
        results = batch.get("results") or {}
        for status in batch.get("statuses") or ():
            call_id = status.get("call_id")
            future = calls.get(call_id)
            if future is None:
                continue
            complete_from_status(future, status, results.get(call_id), self.storage)
            self._forget(job_id, call_id)
            done.append(call_id)
        with self._lock:
            self._seen_batches.setdefault(job_id, set()).add(key)
        return done

    def _forget(self, job_id: str, call_id: str) -> None:
        with self._lock:
            calls = self._pending.get(job_id)
            if calls is not None:
                calls.pop(call_id, None)
                if not calls:
                    del self._pending[job_id]

    def _run(self) -> None:
        interval = self.min_interval
        while not self._stopped:
            self._wake.wait(interval)
            self._wake.clear()
            if self._stopped:
                break
            if not self.pending_count():
                interval = self.max_interval
                continue
            if self._fresh_work:  # new calls: their results may come soon
                self._fresh_work = False
                interval = self.min_interval
            started = time.monotonic()
            try:
                progressed = self.poll_once()
            except Exception:  # never let the watcher die: futures would hang
                logger.exception("status watcher poll failed")
                progressed = 0
            interval = self.min_interval if progressed else min(interval * 1.5, self.max_interval)
            # Listing grows with the job; keep polling to at most a third of this thread's
            # time so it never starves the threads that invoke.
            interval = max(interval, 2 * (time.monotonic() - started))
