"""moto in server mode on a free loopback port."""

from __future__ import annotations

import os
import sys
import urllib.request
from typing import Dict

from . import procs

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class MotoServer:
    """Args:
        log_path: file the server's output is appended to.
        fast: run moto with tests/servers/moto_fast.py's patches (same answers, less work
            per request on long queues and large buckets), as the benchmarks do.
    """

    def __init__(self, log_path: str, *, fast: bool = False):
        self.fast = fast
        self.port = procs.free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._log = open(log_path, "ab")
        self._start()

    def _start(self) -> None:
        env = dict(os.environ, MOTO_IAM_LOAD_MANAGED_POLICIES="true")
        module = "tests.servers.moto_fast" if self.fast else "moto.server"
        self.proc = procs.start(
            [sys.executable, "-m", module, "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self._log, stderr=self._log, env=env, cwd=ROOT if self.fast else None,
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
