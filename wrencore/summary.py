"""What a job did: one record per finished call, a summary, and the job's timeline file.

An executor keeps a compact :class:`CallRecord` for each call that finished (its state,
when it was submitted, started and finished, and where it ran) and summarizes them on
request (:meth:`wrencore.Executor.summary`): counts by state, the job's wall time, the
calls' total time and percentiles, the slowest calls and the workers and hosts that ran
them. With ``summary=True`` (argument or config) a one-line summary is printed to stderr
when a job ends. When a job ends its records are also written to its storage as
``{job_id}/timeline.json`` (see ``wrencore_runtime.layout.timeline_key``), which
``wrencore plot JOB`` reads.
"""

from __future__ import annotations

import concurrent.futures
import json
import math
from array import array
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, NamedTuple, Optional, Tuple

#: States a finished call can be in.
DONE, FAILED, CANCELLED = "done", "failed", "cancelled"


class CallRecord(NamedTuple):
    """One finished call: timestamps are Unix times (None when the worker never said)."""

    job_id: str
    call_id: str
    state: str
    submitted: Optional[float]
    started: Optional[float]
    finished: Optional[float]
    worker: str
    host: str
    error: str = ""

    @property
    def duration(self) -> Optional[float]:
        if self.started is None or self.finished is None:
            return None
        return max(0.0, self.finished - self.started)


def record_of(future: concurrent.futures.Future) -> CallRecord:  # type: ignore[type-arg]
    """The record of a finished wrencore future."""
    meta: Mapping[str, Any] = getattr(future, "metadata", {})
    error = ""
    if future.cancelled():
        state = CANCELLED
    else:
        exc = future.exception()
        state = DONE if exc is None else FAILED
        if exc is not None:
            error = type(exc).__name__
            if error == "CallCancelledError":
                state = CANCELLED
    started = meta.get("worker_start_timestamp")
    finished = meta.get("worker_end_timestamp")
    if finished is None and started is not None and meta.get("worker_exec_time") is not None:
        finished = started + meta["worker_exec_time"]
    return CallRecord(
        getattr(future, "job_id", ""), getattr(future, "call_id", ""), state,
        meta.get("host_submit_timestamp"), started, finished,
        str(meta.get("worker_id") or ""), str(meta.get("worker_hostname") or ""), error)


_STATES = (DONE, FAILED, CANCELLED)
_CANCELLED_STATES = ("CANCELLED", "CANCELLED_AND_NOTIFIED")
_FINISHED = "FINISHED"
#: Calls a :class:`JobRecords` queues before converting them.
RECORD_BATCH = 1024
_NAN = float("nan")


class JobRecords:
    """The finished calls of one job, kept column by column: about 40 bytes a call, so a
    job of millions of calls can be summarized without holding its futures."""

    __slots__ = ("job_id", "_calls", "_other_calls", "_states", "_times", "_places",
                 "_errors", "_names", "_name_index", "_place_index", "_batch_ids",
                 "_batch_metadata", "_batch_unusual")

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self._calls = array("q")           # the call id as a number, or -1 - index in _other_calls
        self._other_calls: List[str] = []
        self._states = bytearray()         # index in _STATES
        self._times = array("d")           # submitted, started, finished (nan: unknown)
        self._places = array("l")          # index in _names of "worker\0host"
        self._errors = array("l")          # index in _names of the error type (0: none)
        self._names: List[str] = [""]
        self._name_index: Dict[str, int] = {"": 0}
        self._place_index: Dict[Tuple[str, str], int] = {}
        # Calls added since the last _flush: their ids and metadata, and (index in the
        # batch, state, exception) of those not plainly done. Columns, not a tuple per
        # call: a tuple would be one more object per call for the cyclic collector.
        self._batch_ids: List[str] = []
        self._batch_metadata: List[Mapping[str, Any]] = []
        self._batch_unusual: List[Tuple[int, str, Optional[BaseException]]] = []

    def __len__(self) -> int:
        return len(self._states) + len(self._batch_ids)

    def _name(self, text: str) -> int:
        index = self._name_index.get(text)
        if index is None:
            index = self._name_index[text] = len(self._names)
            self._names.append(text)
        return index

    def add(self, future: concurrent.futures.Future) -> None:  # type: ignore[type-arg]
        """Record a finished wrencore future of this job. Called for every call, so it only
        queues what it needs; :meth:`_flush` converts a thousand calls at a time."""
        ids = self._batch_ids
        state, exc = future._state, future._exception  # type: ignore[attr-defined]
        if exc is not None or state != _FINISHED:
            self._batch_unusual.append((len(ids), state, exc))
        ids.append(future.call_id)  # type: ignore[attr-defined]
        self._batch_metadata.append(future.metadata)  # type: ignore[attr-defined]
        if len(ids) >= RECORD_BATCH:
            self._flush()

    def _flush(self) -> None:
        ids, metas, unusual = self._batch_ids, self._batch_metadata, self._batch_unusual
        if not ids:
            return
        self._batch_ids, self._batch_metadata, self._batch_unusual = [], [], []
        try:
            numbers = [int(call_id) for call_id in ids]
        except ValueError:
            for call_id in ids:
                if call_id.isdigit():
                    self._calls.append(int(call_id))
                else:
                    self._calls.append(-1 - len(self._other_calls))
                    self._other_calls.append(call_id)
        else:
            self._calls.extend(numbers)
        first = len(self._states)
        self._states.extend(bytes(len(ids)))  # done, no error; then the others are marked
        self._errors.extend(bytes(len(ids)))
        for index, state, exc in unusual:
            if state in _CANCELLED_STATES:
                self._states[first + index] = 2
            elif exc is not None:
                name = type(exc).__name__
                self._states[first + index] = 2 if name == "CallCancelledError" else 1
                self._errors[first + index] = self._name(name)
        nan = _NAN
        places = self._place_index
        times: List[float] = []
        place_indexes: List[int] = []
        for meta in metas:
            get = meta.get
            submitted = get("host_submit_timestamp")
            started = get("worker_start_timestamp")
            finished = get("worker_end_timestamp")
            if finished is None and started is not None and get("worker_exec_time") is not None:
                finished = started + get("worker_exec_time")
            times += (nan if submitted is None else submitted,
                      nan if started is None else started,
                      nan if finished is None else finished)
            place = (get("worker_id") or "", get("worker_hostname") or "")
            index = places.get(place)
            if index is None:
                index = places[place] = self._name(f"{place[0]}\0{place[1]}")
            place_indexes.append(index)
        self._times.extend(times)
        self._places.extend(place_indexes)

    def timeline_json(self) -> bytes:
        """The job's ``timeline.json``, column by column (encoded at C speed)::

            {"job_id": …, "states": ["done", "failed", "cancelled"],
             "names": ["", "worker\\u0000host", "ValueError", …], "other_calls": […],
             "calls": [call number, …], "state": [index in states, …],
             "times_us": [submitted, started, finished, …], "place": [index in names, …],
             "error": [index in names, …]}

        A call number below 0 is ``-1 - i`` for ``other_calls[i]`` (an id that is not a
        number); times are Unix timestamps in whole microseconds (integers encode several
        times faster than floats), null when unknown. (Files written before held ``"times"``
        in seconds; :func:`records_from_timeline` reads both.)
        """
        self._flush()
        times = [int(t * 1e6 + 0.5) if t == t else None for t in self._times]  # nan != nan
        return json.dumps({
            "job_id": self.job_id, "states": _STATES, "names": self._names,
            "other_calls": self._other_calls, "calls": self._calls.tolist(),
            "state": list(self._states), "times_us": times, "place": self._places.tolist(),
            "error": self._errors.tolist()}).encode()

    def records(self) -> List[CallRecord]:
        """The calls as :class:`CallRecord` objects, in the order they finished."""
        self._flush()
        out = []
        times = self._times
        for i, number in enumerate(self._calls):
            call_id = f"{number:05d}" if number >= 0 else self._other_calls[-1 - number]
            worker, _, host = self._names[self._places[i]].partition("\0")
            submitted, started, finished = (
                None if math.isnan(t) else t for t in times[3 * i:3 * i + 3])
            out.append(CallRecord(self.job_id, call_id, _STATES[self._states[i]], submitted,
                                  started, finished, worker, host,
                                  self._names[self._errors[i]]))
        return out


def _percentile(sorted_values: List[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


@dataclass
class JobSummary:
    """Counts, times and places of a job's calls (or of every job of an executor).

    Attributes:
        jobs: the job ids summarized.
        calls: calls finished, whatever their state.
        pending: calls not finished yet.
        states: calls by state (``done``, ``failed``, ``cancelled``).
        errors: failed calls by exception type.
        wall_time: seconds from the first submit to the last finish (None: unknown).
        call_time: the calls' durations summed, seconds.
        percentiles: call durations at ``p50``, ``p90``, ``p99`` and ``max``, seconds.
        slowest: the slowest calls, as ``(job_id/call_id, seconds)``, slowest first.
        workers: calls run by each worker.
        hosts: calls run on each host.
    """

    jobs: List[str] = field(default_factory=list)
    calls: int = 0
    pending: int = 0
    states: Dict[str, int] = field(default_factory=dict)
    errors: Dict[str, int] = field(default_factory=dict)
    wall_time: Optional[float] = None
    call_time: float = 0.0
    percentiles: Dict[str, float] = field(default_factory=dict)
    slowest: List[Tuple[str, float]] = field(default_factory=list)
    workers: Dict[str, int] = field(default_factory=dict)
    hosts: Dict[str, int] = field(default_factory=dict)

    def line(self) -> str:
        """The summary in one line, e.g. for the end of a job."""
        what = f"job {self.jobs[0]}" if len(self.jobs) == 1 else f"{len(self.jobs)} jobs"
        states = ", ".join(f"{n} {state}" for state, n in sorted(self.states.items()))
        text = f"wrencore: {what}: {self.calls} calls ({states or 'none finished'})"
        if self.pending:
            text += f", {self.pending} pending"
        if self.wall_time is not None:
            text += f" in {self.wall_time:.2f} s"
        if self.percentiles:
            p = self.percentiles
            text += (f"; call time total {self.call_time:.2f} s, p50 {p['p50']:.3f} s, "
                     f"p90 {p['p90']:.3f} s, p99 {p['p99']:.3f} s, max {p['max']:.3f} s")
            if self.slowest:
                text += f" ({self.slowest[0][0]})"
        if self.workers:
            text += f"; {len(self.workers)} worker{'s' if len(self.workers) != 1 else ''}"
            text += f" on {len(self.hosts)} host{'s' if len(self.hosts) != 1 else ''}"
        return text

    def __str__(self) -> str:
        return self.line()

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def summarize(records: Iterable[CallRecord], pending: int = 0, jobs: Iterable[str] = (),
              slowest: int = 5) -> JobSummary:
    """A :class:`JobSummary` of ``records`` (and ``pending`` unfinished calls)."""
    records = list(records)
    summary = JobSummary(jobs=sorted(set(jobs) | {r.job_id for r in records}),
                         calls=len(records), pending=pending)
    for record in records:
        summary.states[record.state] = summary.states.get(record.state, 0) + 1
        if record.error:
            summary.errors[record.error] = summary.errors.get(record.error, 0) + 1
        if record.worker:
            summary.workers[record.worker] = summary.workers.get(record.worker, 0) + 1
        if record.host:
            summary.hosts[record.host] = summary.hosts.get(record.host, 0) + 1
    timed = [(r.duration, r) for r in records if r.duration is not None]
    if timed:
        durations = sorted(d for d, _ in timed)
        summary.call_time = sum(durations)
        summary.percentiles = {"p50": _percentile(durations, 0.5),
                               "p90": _percentile(durations, 0.9),
                               "p99": _percentile(durations, 0.99), "max": durations[-1]}
        timed.sort(key=lambda pair: pair[0], reverse=True)
        summary.slowest = [(f"{r.job_id}/{r.call_id}", d) for d, r in timed[:slowest]]
    starts = [r.submitted for r in records if r.submitted is not None]
    ends = [r.finished for r in records if r.finished is not None]
    if starts and ends:
        summary.wall_time = max(0.0, max(ends) - min(starts))
    return summary


def records_from_timeline(data: bytes) -> List[CallRecord]:
    """The calls of a ``timeline.json`` (see :meth:`JobRecords.timeline_json`)."""
    document = json.loads(data)
    job_id, names, others = document["job_id"], document["names"], document["other_calls"]
    if "times_us" in document:
        times = [None if t is None else t / 1e6 for t in document["times_us"]]
    else:  # written before times were kept in microseconds
        times = document["times"]
    records = []
    for i, number in enumerate(document["calls"]):
        call_id = f"{number:05d}" if number >= 0 else others[-1 - number]
        worker, _, host = names[document["place"][i]].partition("\0")
        records.append(CallRecord(job_id, call_id, _STATES[document["state"][i]],
                                  times[3 * i], times[3 * i + 1], times[3 * i + 2],
                                  worker, host, names[document["error"][i]]))
    return records
