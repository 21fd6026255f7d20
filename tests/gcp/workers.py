"""`wrencore worker` started as a user would, against the emulators on loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any, Dict, Optional

from tests.servers import procs


class WorkerProcess:
    """``wrencore worker`` in a session of its own (supervisord and its daemons)."""

    def __init__(self, state_dir: str, env: Dict[str, str], *, queue: str = "gcp_pubsub",
                 storage: str = "localfs", processes: int = 2, idle_timeout: float = 600,
                 config: Optional[Dict[str, Any]] = None) -> None:
        self.state_dir = state_dir
        os.makedirs(state_dir, exist_ok=True)
        self.log = open(os.path.join(state_dir, "worker.out"), "ab")
        self.proc = procs.start(
            [sys.executable, "-m", "wrencore", "worker", "--queue", queue, "--storage", storage,
             "--processes", str(processes), "--idle-timeout", str(idle_timeout),
             "--state-dir", state_dir, "--config", json.dumps(config or {})],
            env=env, stdout=self.log, stderr=self.log)

    def supervisorctl(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "supervisor.supervisorctl", "-c",
             os.path.join(self.state_dir, "supervisord.conf"), *args],
            capture_output=True, text=True, timeout=30)
        return result.stdout + result.stderr

    def wait_running(self, processes: int, timeout: float = 60) -> None:
        procs.wait_until(lambda: self.supervisorctl("status").count("RUNNING") == processes,
                         timeout, "the worker's daemons", self.proc)

    def output(self) -> str:
        logs = os.path.join(self.state_dir, "logs")
        text = []
        for name in sorted(os.listdir(logs)) if os.path.isdir(logs) else []:
            with open(os.path.join(logs, name), errors="replace") as f:
                text.append(f"--- {name}\n{f.read()[-4000:]}")
        return "\n".join(text)

    def wait(self, timeout: float) -> Optional[int]:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        procs.stop(self.proc, timeout=15)
        if self.proc.returncode is None or procs.session_members(self.proc.pid):
            procs.kill_session(self.proc.pid)
        self.log.close()


def worker_env(**extra: str) -> Dict[str, str]:
    env = dict(os.environ)
    for name in ("PYTHONPATH",):
        env.pop(name, None)
    env.update(extra)
    return env


def wait_for(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} did not happen within {timeout} s")
