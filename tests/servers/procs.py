"""Starting and stopping server processes on free loopback ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from typing import Callable, List, Optional


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check: Callable[[], bool], timeout: float, what: str,
               proc: Optional[subprocess.Popen] = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} before it was ready")
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{what} not ready after {timeout} s")


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def stop(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    """TERM, wait, then KILL — the process group if it leads one."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError, OSError):
        proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            proc.kill()
        proc.wait(timeout)


def start(cmd: List[str], **kwargs) -> subprocess.Popen:
    kwargs.setdefault("start_new_session", True)
    return subprocess.Popen(cmd, **kwargs)


def session_members(sid: int) -> List[int]:
    """The pids of every live process in session ``sid`` (Linux: from /proc)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        # After the command: state, ppid, pgrp, session; zombies are already dead.
        if len(fields) > 3 and fields[0] != "Z" and int(fields[3]) == sid:
            members.append(int(entry))
    return members


def kill_session(sid: int, timeout: float = 10.0) -> None:
    """SIGKILL every process of session ``sid`` — each process group in it, and any stray —
    until none is left (a power-off: nothing gets to finish its work)."""
    deadline = time.monotonic() + timeout
    while True:
        members = session_members(sid)
        if not members:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes {members} of session {sid} survived SIGKILL")
        for pid in members:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.02)
