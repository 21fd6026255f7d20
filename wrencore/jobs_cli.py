"""``wrencore jobs``, ``wrencore logs JOB [CALL]`` and ``wrencore clean``: job data in storage.

A job's objects live under ``{job_id}/`` in the storage (see ``wrencore_runtime.layout``);
the job id starts with its UTC-free local submit time (``20250101T120000-…``). Calls whose
outcome travelled directly to the client (the local backend's small results) leave no
status behind, so ``jobs`` counts only outcomes that were stored.
"""

from __future__ import annotations

import datetime
import re
import time
from typing import Any, Dict, List, Optional, Tuple

import click

from wrencore_runtime import layout

JOB_ID = re.compile(r"^(\d{8}T\d{6})-[0-9a-f]{8}-\d+$")


def add_commands(cli: click.Group) -> None:
    for command in (jobs, logs, clean):
        cli.add_command(command)


def open_storage(backend: Optional[str], storage: Optional[str]) -> Any:
    """The job storage the configuration names, built without starting a backend."""
    from .config import Config
    from .plugins import get_registry

    overrides: Dict[str, Any] = {}
    if backend:
        overrides["backend"] = backend
    if storage:
        overrides["storage"] = storage
    cfg = Config(overrides)
    registry = get_registry()
    name = cfg.get("storage")
    if not name:
        backend_cls = registry.load("backend", str(cfg.get("backend") or "local"))
        name = backend_cls.default_storage
    return registry.load("storage", str(name))(cfg.section(str(name)))


def job_time(job_id: str) -> Optional[float]:
    match = JOB_ID.match(job_id)
    if not match:
        return None
    return time.mktime(time.strptime(match.group(1), "%Y%m%dT%H%M%S"))


def list_jobs(storage: Any) -> Dict[str, List[str]]:
    """Job id -> its keys, for every job in the storage (runtimes left out)."""
    found: Dict[str, List[str]] = {}
    for key in storage.list(""):
        job_id = key.split("/", 1)[0]
        if JOB_ID.match(job_id):
            found.setdefault(job_id, []).append(key)
    return found


def call_outcomes(storage: Any, job_id: str, keys: List[str]) -> Dict[str, Dict[str, Any]]:
    """Call id -> its latest stored status (from status and batch-status objects)."""
    from wrencore_runtime.protocol import decode_json

    outcomes: Dict[str, Dict[str, Any]] = {}
    for key in sorted(keys):
        name = key.rsplit("/", 1)[-1]
        if not (name.startswith("status") or name.startswith("batch-status")):
            continue
        try:
            data = decode_json(storage.get(key))
        except Exception:
            continue
        for status in data.get("statuses", [data]) if isinstance(data, dict) else []:
            if isinstance(status, dict) and "call_id" in status:
                previous = outcomes.get(status["call_id"])
                if previous is None or status.get("attempt", 0) >= previous.get("attempt", 0):
                    outcomes[status["call_id"]] = status
    return outcomes


def _summary(storage: Any, job_id: str, keys: List[str]) -> Tuple[str, int, int, int]:
    """``(function, calls seen, succeeded, failed)``."""
    from wrencore_runtime.protocol import decode_json

    function = "?"
    try:
        header = decode_json(storage.get(layout.job_header_key(job_id)))
        if "signed" in header and isinstance(header.get("body"), str):
            # A signed header (wrencore_runtime.auth): its body is the job, as written. Only
            # shown here, so it is read without checking its tag.
            header = decode_json(header["body"])
        function = header.get("function_name") or "?"
    except Exception:
        pass
    calls = {k.split("/")[1] for k in keys if k.count("/") >= 2}
    outcomes = call_outcomes(storage, job_id, keys)
    ok = sum(1 for s in outcomes.values() if s.get("success"))
    return function, len(calls | set(outcomes)), ok, len(outcomes) - ok


def _order(job_id: str) -> Tuple[str, int]:
    """Submission order: the time, then the client's job counter."""
    stamp, _, counter = job_id.rpartition("-")
    return stamp[:15], int(counter) if counter.isdigit() else 0


def _when(timestamp: Optional[float]) -> str:
    if timestamp is None:
        return "?"
    return datetime.datetime.fromtimestamp(timestamp).isoformat(" ", "seconds")


_storage_options = [
    click.option("--backend", default=None, metavar="NAME",
                 help="whose storage (default: config)"),
    click.option("--storage", default=None, metavar="NAME", help="the storage (default: "
                                                                 "the backend's)"),
]


def storage_options(fn: Any) -> Any:
    for option in reversed(_storage_options):
        fn = option(fn)
    return fn


@click.command()
@click.option("-n", "--limit", type=click.IntRange(min=1), default=20, show_default=True,
              help="how many of the most recent jobs")
@storage_options
def jobs(limit: int, backend: Optional[str], storage: Optional[str]) -> None:
    """List recent jobs in storage and the state of their calls.

    DONE counts the calls whose outcome is stored; on the local backend small results go
    straight to the client and are not stored.
    """
    store = open_storage(backend, storage)
    found = list_jobs(store)
    if not found:
        click.echo(f"no jobs in {store!r}")
        return
    click.echo(f"{'JOB':<34} {'SUBMITTED':<19} {'FUNCTION':<20} {'CALLS':>5} {'OK':>5} "
               f"{'FAILED':>6} STATE")
    for job_id in sorted(found, key=_order, reverse=True)[:limit]:
        function, calls, ok, failed = _summary(store, job_id, found[job_id])
        short = function.rsplit(".", 1)[-1][:20]
        state = ("failed" if failed else "done") if calls and ok + failed >= calls else \
            "no stored outcomes" if not ok + failed else "running or lost"
        counts = f"{calls:>5} {ok:>5} {failed:>6}" if calls else f"{'-':>5} {'-':>5} {'-':>6}"
        click.echo(f"{job_id:<34} {_when(job_time(job_id)):<19} {short:<20} {counts} {state}")


@click.command()
@click.argument("job")
@click.argument("call", required=False)
@click.option("--cloud", is_flag=True,
              help="also show each call's lines from its backend's logs (CloudWatch on "
                   "aws_lambda and aws_sqs_ec2); a CALL with no stored outcome shows them "
                   "anyway")
@storage_options
def logs(job: str, call: Optional[str], cloud: bool, backend: Optional[str],
         storage: Optional[str]) -> int:
    """Print the stored output and errors of a job's calls (or of one CALL).

    Shows each call's outcome, where and how long it ran, its stdout and stderr and, for a
    failed call, the traceback. A call whose worker died stored no outcome: its lines are
    read from the backend's logs, where the backend keeps them (--cloud: for every call).
    """
    from .errors import WrenError

    store = open_storage(backend, storage)
    keys = store.list(layout.job_prefix(job))
    if not keys:
        raise WrenError(f"no job {job!r} in {store!r}; `wrencore jobs` lists them")
    outcomes = call_outcomes(store, job, keys)
    if call is not None and call not in outcomes:
        lines = backend_logs(backend, job, call)
        if lines is None:
            raise WrenError(f"job {job} has no stored outcome for call {call!r}; calls with "
                            f"one: {', '.join(sorted(outcomes)) or 'none'}")
        click.echo(f"== call {call}: no stored outcome (its worker may have died)")
        _echo_backend_logs(lines)
        return 0
    if call is not None:
        outcomes = {call: outcomes[call]}
    if not outcomes:
        click.echo(f"job {job} has no stored call outcomes (the local backend returns small "
                   f"results directly)")
    for call_id in sorted(outcomes):
        status = outcomes[call_id]
        meta = status.get("metadata") or {}
        start, end = meta.get("worker_start_timestamp"), meta.get("worker_end_timestamp")
        took = f"{end - start:.3f} s" if start and end else "?"
        state = "ok" if status.get("success") else "failed"
        click.echo(f"== call {call_id} (attempt {status.get('attempt', 0)}): {state}, {took} "
                   f"on {meta.get('worker_hostname', '?')} pid {meta.get('worker_pid', '?')}")
        for stream in ("stdout", "stderr"):
            if status.get(stream):
                click.echo(f"-- {stream}\n{status[stream].rstrip()}")
        exc = status.get("exception")
        if exc:
            click.echo(f"-- exception\n{(exc.get('traceback') or exc.get('message')).rstrip()}")
        if cloud:
            lines = backend_logs(backend, job, call_id)
            if lines is None:
                raise WrenError("this backend keeps no logs of its own; leave out --cloud")
            _echo_backend_logs(lines)
    return 0


def backend_logs(backend: Optional[str], job_id: str, call_id: str) -> Optional[List[str]]:
    """A call's lines from its backend's logs (``wrencore_call_logs``); None if it has none."""
    from .config import DEFAULT_BACKEND, Config
    from .plugins import get_plugin_manager

    cfg = Config({"backend": backend} if backend else {})
    return get_plugin_manager().hook.wrencore_call_logs(
        backend=str(cfg.get("backend") or DEFAULT_BACKEND), config=cfg, job_id=job_id,
        call_id=call_id)


def _echo_backend_logs(lines: List[str]) -> None:
    click.echo("-- backend logs")
    for line in lines or ["(none found)"]:
        click.echo(line.rstrip("\n"))


def _age(text: str) -> float:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if not match:
        raise click.BadParameter(f"{text!r} is not an age like 30m, 12h, 7d",
                                 param_hint="--older-than")
    unit = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[match.group(2)]
    return float(match.group(1)) * unit


@click.command()
@click.argument("job", required=False)
@click.option("--all", "all_jobs", is_flag=True, help="every job")
@click.option("--older-than", default=None, metavar="AGE",
              help="jobs submitted longer ago than AGE (30m, 12h, 7d)")
@click.option("--dry-run", is_flag=True, help="say what would be deleted")
@storage_options
def clean(job: Optional[str], all_jobs: bool, older_than: Optional[str], dry_run: bool,
          backend: Optional[str], storage: Optional[str]) -> None:
    """Delete the stored data of one JOB, of --all jobs, or of jobs --older-than an age.

    Runtimes (`wrencore runtime list`) are kept: `wrencore runtime delete` removes them.
    """
    if sum(map(bool, (job, all_jobs, older_than))) != 1:
        raise click.UsageError("name one JOB, or pass --all, or --older-than AGE")
    limit = _age(older_than) if older_than else None
    store = open_storage(backend, storage)
    found = list_jobs(store)
    if job:
        if job not in found:
            from .errors import WrenError

            raise WrenError(f"no job {job!r} in {store!r}; `wrencore jobs` lists them")
        chosen = [job]
    elif limit is not None:
        now = time.time()
        chosen = [j for j in found if (job_time(j) or now) < now - limit]
    else:
        chosen = sorted(found)
    objects = 0
    for job_id in chosen:
        objects += len(found[job_id]) if dry_run else \
            store.delete_prefix(layout.job_prefix(job_id))
    verb = "would delete" if dry_run else "deleted"
    click.echo(f"{verb} {len(chosen)} jobs ({objects} objects) from {store!r}")
