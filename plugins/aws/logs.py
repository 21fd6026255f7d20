"""A call's log lines from CloudWatch Logs, for the ``wrencore_call_logs`` hook.

Workers log one line when a call starts, ``call JOB/CALL started (attempt N)`` (the
standalone daemon and the Lambda handler both do), and the daemon one when it ends. What the
call itself logs carries no id, so a call's lines are the lines naming it plus, in each log
stream where it started, every line from its start up to the next call's (or a restarted
daemon's) start line: what it logged before its worker died is found there too.

Reads are bounded: a few pages of ``filter_log_events`` per group and of ``get_log_events``
per stream.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any, Dict, Iterable, List, Optional, Tuple

from .clients import error_code

logger = logging.getLogger(__name__)

#: A line that begins another call's (or a new worker process's) part of a stream.
NEXT_START = re.compile(r"\bcall \S+/\S+ started\b|\bdaemon \S+ on instance \S+ started\b")
PAGE_LIMIT = 500


def call_log_lines(client: Any, groups: Iterable[str], job_id: str, call_id: str, *,
                   max_pages: int = 4) -> List[str]:
    """The lines of ``groups`` that belong to call ``call_id`` of ``job_id``, oldest first.

    :param client: a boto3 ``logs`` client.
    :param groups: the log groups the call's workers log to (missing ones are skipped).
    :param max_pages: at most this many pages of each listing.
    """
    token = f"{job_id}/{call_id}"
    start_line = f"call {token} started"
    events: Dict[str, Dict[str, Any]] = {}
    starts: List[Tuple[str, str, int]] = []
    since = _job_start_ms(job_id)
    for group in groups:
        for event in _filtered(client, group, token, since, max_pages):
            events[event["eventId"]] = event
            if start_line in event["message"]:
                starts.append((group, event["logStreamName"], event["timestamp"]))
    for group, stream, timestamp in starts:
        for event in _window(client, group, stream, timestamp, start_line, max_pages):
            events.setdefault(event.get("eventId") or f"{stream}/{event['timestamp']}/"
                              f"{event['message']}", event)
    ordered = sorted(events.values(), key=lambda e: (e["timestamp"], e.get("ingestionTime", 0)))
    return [e["message"].rstrip("\n") for e in ordered]


def _job_start_ms(job_id: str) -> Optional[int]:
    """An hour before the job's submit time (its id starts with the local time), in ms."""
    match = re.match(r"(\d{8}T\d{6})-", job_id)
    if not match:
        return None
    submitted = time.mktime(time.strptime(match.group(1), "%Y%m%dT%H%M%S"))
    return int((submitted - 3600) * 1000)  # clocks and time zones changing: be generous


def _filtered(client: Any, group: str, token: str, since: Optional[int],
              max_pages: int) -> List[Dict[str, Any]]:
    found: List[Dict[str, Any]] = []
    kwargs: Dict[str, Any] = {"logGroupName": group, "filterPattern": f'"{token}"'}
    if since is not None:  # the job's lines are not older: CloudWatch scans less
        kwargs["startTime"] = since
    for _ in range(max_pages):
        try:
            page = client.filter_log_events(**kwargs)
        except Exception as exc:
            if error_code(exc) == "ResourceNotFoundException":
                return found  # nothing was ever logged there
            raise
        # A pattern is a hint some servers apply loosely: keep only the lines naming the call.
        found.extend(e for e in page.get("events", []) if token in e.get("message", ""))
        if not page.get("nextToken"):
            break
        kwargs["nextToken"] = page["nextToken"]
    return found


def _window(client: Any, group: str, stream: str, timestamp: int, start_line: str,
            max_pages: int) -> List[Dict[str, Any]]:
    """The lines of ``stream`` from the call's start line up to the next start line."""
    lines: List[Dict[str, Any]] = []
    kwargs: Dict[str, Any] = {"logGroupName": group, "logStreamName": stream,
                              "startTime": timestamp, "startFromHead": True,
                              "limit": PAGE_LIMIT}
    begun = False
    for _ in range(max_pages):
        page = client.get_log_events(**kwargs)
        for event in page.get("events", []):
            message = event.get("message", "")
            if not begun:
                begun = start_line in message
                if not begun:
                    continue  # lines of the same millisecond before the start
            elif NEXT_START.search(message):
                return lines
            event = dict(event, logStreamName=stream)
            lines.append(event)
        token = page.get("nextForwardToken")
        if not page.get("events") or not token or token == kwargs.get("nextToken"):
            break
        kwargs["nextToken"] = token
    return lines
