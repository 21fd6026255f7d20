"""Pictures of a job: a timeline of every call and a histogram of their durations.

``Executor.plot(path)`` draws the calls it ran; ``wrencore plot JOB`` draws a job from
its ``timeline.json`` in storage (written when the job ended). matplotlib is an optional
dependency: ``pip install 'wrencore[plot]'``. Drawing uses matplotlib's object API with
the Agg canvas, so it needs no display and leaves pyplot's global state alone.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

from wrencore_runtime import layout

from .errors import MissingDependencyError, StorageKeyError, WrenError
from .summary import CANCELLED, DONE, FAILED, CallRecord, records_from_timeline, summarize

#: Colour of a call's running bar, by its state.
STATE_COLOURS = {DONE: "tab:blue", FAILED: "tab:red", CANCELLED: "tab:gray"}


def _matplotlib() -> Any:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.collections import LineCollection
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise MissingDependencyError(
            f"plotting needs matplotlib ({exc}); install it with "
            f"pip install 'wrencore[plot]'") from None
    return Figure, FigureCanvasAgg, LineCollection


def plot_records(records: Sequence[CallRecord], path: Optional[str] = None,
                 title: str = "") -> Any:
    """Draw ``records``: a timeline by worker over a histogram of durations.

    The timeline has one row per worker; each call is a thin grey segment from when it was
    submitted to when it started and a thick one, coloured by its state, from when it
    started to when it finished (collections with gid ``"waiting"`` and ``"running"``,
    one segment per call that ran). The histogram counts the calls by duration.

    Args:
        records: the calls (see :class:`wrencore.summary.CallRecord`).
        path: where to save the PNG (None: do not save).
        title: the figure's title.

    Returns:
        The matplotlib ``Figure``.
    """
    Figure, FigureCanvasAgg, LineCollection = _matplotlib()
    ran = [r for r in records if r.started is not None and r.finished is not None]
    workers = sorted({r.worker or r.host or "?" for r in ran})
    row = {worker: index for index, worker in enumerate(workers)}
    origin = min([r.submitted for r in records if r.submitted is not None] +
                 [r.started for r in ran] or [0.0])

    figure = Figure(figsize=(10, 3 + 0.25 * min(len(workers), 40) + 3))
    FigureCanvasAgg(figure)
    timeline, histogram = figure.subplots(2, 1, gridspec_kw={"height_ratios": [2, 1]})

    waiting: List[List[tuple]] = []
    running: List[List[tuple]] = []
    colours: List[str] = []
    for record in ran:
        y = row[record.worker or record.host or "?"]
        start, end = record.started - origin, record.finished - origin
        if record.submitted is not None:
            waiting.append([(record.submitted - origin, y), (start, y)])
        running.append([(start, y), (end, y)])
        colours.append(STATE_COLOURS.get(record.state, "tab:purple"))
    timeline.add_collection(LineCollection(waiting, colors="0.8", linewidths=1,
                                           gid="waiting"))
    timeline.add_collection(LineCollection(running, colors=colours, linewidths=6,
                                           gid="running"))
    timeline.autoscale()
    timeline.set_yticks(range(len(workers)))
    timeline.set_yticklabels(workers if len(workers) <= 40 else [""] * len(workers),
                             fontsize=7)
    timeline.set_xlabel("seconds since the first call was submitted")
    timeline.set_ylabel("worker")
    summary = summarize(records)
    timeline.set_title(f"{title}: " + summary.line().split(": ", 2)[-1] if title else
                       summary.line(), fontsize=8, wrap=True)

    durations = [r.duration for r in ran if r.duration is not None]
    histogram.hist(durations, bins=min(50, max(1, len(durations))), color="tab:blue",
                   gid="durations")
    histogram.set_xlabel("call duration, seconds")
    histogram.set_ylabel("calls")
    figure.tight_layout()
    if path is not None:
        figure.savefig(path, format="png", dpi=100)
    return figure


def job_records(job_id: str, storage: Any) -> List[CallRecord]:
    """The records of ``job_id`` from its ``timeline.json`` in ``storage``.

    Raises:
        WrenError: the job has no timeline (it has not ended, or its data was cleaned up).
    """
    try:
        data = storage.get(layout.timeline_key(job_id))
    except StorageKeyError:
        raise WrenError(
            f"job {job_id} has no {layout.TIMELINE} in {storage.location(layout.job_prefix(job_id))}: "
            f"it is written when a job ends, unless its data was cleaned up "
            f"(wrencore.map cleans up by default; set cleanup = false to keep it)") from None
    return records_from_timeline(data)


def plot_job(job_id: str, path: str, storage: Any) -> Dict[str, Any]:
    """Draw job ``job_id`` from its storage into the PNG ``path``; return its summary."""
    records = job_records(job_id, storage)
    plot_records(records, path, title=f"job {job_id}")
    return summarize(records, jobs=[job_id]).to_dict()


def configured_storage(backend: Optional[str] = None, storage: Optional[str] = None) -> Any:
    """The storage an ``Executor(backend, storage)`` would use, without starting a backend."""
    from .config import DEFAULT_BACKEND, Config
    from .plugins import get_registry

    overrides = {k: v for k, v in (("backend", backend), ("storage", storage)) if v}
    config = Config(overrides)
    registry = get_registry()
    backend_name = str(config.get("backend") or DEFAULT_BACKEND)
    storage_name = str(config.get("storage") or
                       registry.load("backend", backend_name).default_storage)
    return registry.load("storage", storage_name)(config.section(storage_name))


def plot_command(job_id: str, output: Optional[str] = None, backend: Optional[str] = None,
                 storage: Optional[str] = None) -> int:
    """``wrencore plot JOB``: save the job's picture (default ``JOB.png``) and print its
    one-line summary; return the exit code."""
    path = output or f"{job_id}.png"
    summary = plot_job(job_id, path, configured_storage(backend, storage))
    calls = summary["calls"]
    print(f"wrote {path}: {calls} call{'s' if calls != 1 else ''} of job {job_id}")
    return 0
