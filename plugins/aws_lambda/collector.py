"""Collecting Lambda outcomes: per-call and batch statuses, fetched concurrently."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Set

from wrencore.futures import Future, complete_from_status
from wrencore.watcher import StatusWatcher
from wrencore_runtime import layout
from wrencore_runtime.errors import StorageKeyError
from wrencore_runtime.protocol import decode_json

logger = logging.getLogger(__name__)


class LambdaStatusWatcher(StatusWatcher):
    """A :class:`StatusWatcher` that also reads the batch statuses of chunked invocations
    and reads statuses and results with a pool of threads, one listing per job and poll."""

    def __init__(self, storage, *, fetch_threads: int = 16, **kwargs) -> None:
        super().__init__(storage, **kwargs)
        self._fetch_pool = ThreadPoolExecutor(fetch_threads,
                                              thread_name_prefix="wrencore-lambda-fetch")
        self._seen_batches: Dict[str, Set[str]] = {}

    def poll_once(self) -> int:
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

    def stop(self) -> None:
        super().stop()
        self._fetch_pool.shutdown(wait=False)
