"""Checking that processes are gone (a zombie counts as gone: it runs nothing)."""

from __future__ import annotations

import time
from typing import Iterable


def is_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            state = stat.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def wait_until_gone(pids: Iterable[int], timeout: float) -> None:
    """Return once every pid is gone; fail the test naming the survivors after ``timeout``."""
    pids = set(pids)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = {pid for pid in pids if not is_gone(pid)}
        if not alive:
            return
        time.sleep(0.05)
    raise AssertionError(f"processes left behind after {timeout} s: {sorted(alive)}")
