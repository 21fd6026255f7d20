"""The Pub/Sub emulator (Java, preinstalled) and gcp-storage-emulator on loopback ports."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from typing import Dict

from . import procs

PUBSUB_EMULATOR = "/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator"


def pubsub_emulator_path() -> str:
    """The emulator's launcher, or '' when this machine has none."""
    found = os.environ.get("WRENCORE_PUBSUB_EMULATOR") or PUBSUB_EMULATOR
    if os.access(found, os.X_OK):
        return found
    return shutil.which("cloud-pubsub-emulator") or ""


class PubSubEmulator:
    def __init__(self, log_path: str) -> None:
        self.port = procs.free_port()
        self.host = f"127.0.0.1:{self.port}"
        self._log = open(log_path, "ab")
        # The launcher execs java, so this pid is the JVM's.
        self.proc = procs.start(
            [pubsub_emulator_path(), "--host=127.0.0.1", f"--port={self.port}"],
            stdout=self._log, stderr=self._log,
            env=dict(os.environ, JAVA_OPTS="-Xmx256m"))
        procs.wait_until(lambda: procs.port_open(self.port), 60, "the Pub/Sub emulator",
                         self.proc)

    def env(self) -> Dict[str, str]:
        return {"PUBSUB_EMULATOR_HOST": self.host}

    def stop(self) -> None:
        procs.stop(self.proc)
        self._log.close()


class StorageEmulator:
    def __init__(self, log_path: str) -> None:
        self.port = procs.free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._log = open(log_path, "ab")
        self.proc = procs.start(
            [os.path.join(os.path.dirname(sys.executable), "gcp-storage-emulator"), "start",
             "--host=127.0.0.1", f"--port={self.port}", "--in-memory"],
            stdout=self._log, stderr=self._log)
        procs.wait_until(lambda: procs.port_open(self.port), 30, "gcp-storage-emulator",
                         self.proc)

    def env(self) -> Dict[str, str]:
        return {"STORAGE_EMULATOR_HOST": self.endpoint}

    def stop(self) -> None:
        procs.stop(self.proc)
        self._log.close()
