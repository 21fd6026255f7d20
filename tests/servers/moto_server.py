"""moto in server mode on a free loopback port."""

from __future__ import annotations

import os
import sys
import urllib.request
from typing import Dict, Optional

from . import procs

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class MotoServer:
    """Args:
        log_path: file the server's output is appended to.
        fast: run moto with tests/servers/moto_fast.py's patches (same answers, less work
            per request on long queues and large buckets), as the benchmarks do.
        stats_path: have the server write each operation's requests and CPU seconds
            there when it stops (see ``request_stats``), with or without ``fast``.
    """

    def __init__(self, log_path: str, *, fast: bool = False, stats_path: Optional[str] = None):
        self.fast = fast
        self.stats_path = stats_path
        self.port = procs.free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._log = open(log_path, "ab")
        self._start()

    def _start(self) -> None:
        env = dict(os.environ, MOTO_IAM_LOAD_MANAGED_POLICIES="true")
        if self.fast or self.stats_path:
            cmd = [sys.executable, "-m", "tests.servers.moto_fast"]
            cmd += [] if self.fast else ["--plain"]
            cmd += ["--stats", self.stats_path] if self.stats_path else []
        else:
            cmd = [sys.executable, "-m", "moto.server"]
        self.proc = procs.start(
            cmd + ["-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self._log, stderr=self._log, env=env, cwd=ROOT,
        )
        procs.wait_until(lambda: procs.port_open(self.port), 30, "moto server", self.proc)

    def restart(self) -> None:
        """Stop and start again on the same port: every bucket, queue and instance is gone,
        as after a region outage."""
        procs.stop(self.proc)
        self._start()

    def env(self) -> Dict[str, str]:
        """Environment for boto3 clients (and worker subprocesses) to reach this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
        }

    def reset(self) -> None:
        req = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST", data=b"")
        urllib.request.urlopen(req, timeout=10).read()

    def stop(self) -> None:
        procs.stop(self.proc)
        self._log.close()

    def request_stats(self) -> Optional[dict]:
        """After ``stop``: ``{"process_cpu": s, "operations": {"sqs:ReceiveMessage":
        {"requests": n, "cpu": s}, …}}`` if started with ``stats_path``."""
        import json

        if not self.stats_path or not os.path.exists(self.stats_path):
            return None
        with open(self.stats_path) as f:
            return json.load(f)
