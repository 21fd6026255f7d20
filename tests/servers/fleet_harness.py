"""Turns the EC2 instances the plugin launches in moto into real local "instances".

moto records RunInstances but boots nothing. The harness watches the fleet's instances in
moto and, for each new one, does what the instance's cloud-init would do with the plugin's
user-data: it writes the ``write_files`` of the cloud-config into a directory of its own
(instance paths such as ``/etc/wrencore`` and ``/opt/wrencore`` mapped under it), serves
that instance's id from a metadata endpoint on loopback, and runs the real bootstrap script,
which fetches the daemon's runtime the client stored, builds the instance's virtualenv from
it and starts supervisord, which runs the real daemons. One line of the bootstrap is
replaced: getting a Python build becomes this machine's Python of the same minor version.
Nothing of the test's own environment reaches an instance.

Each instance is one session: the bootstrap, then supervisord, leads it, and the daemons
it starts (each in a process group of its own) and whatever their calls start stay in it.
Stopping an instance powers it off: every process of the session is killed at once, so
nothing finishes a call.
"""

from __future__ import annotations

import base64
import http.server
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from typing import Dict, List

import boto3
import yaml

from wrencore_aws_sqs_ec2 import userdata
from wrencore_aws_sqs_ec2.fleet import FLEET_TAG

from . import procs


def machine_python() -> str:
    """This machine's own Python build of the test's minor version (not a virtualenv)."""
    return getattr(sys, "_base_executable", None) or sys.executable


class MetadataServer:
    """An instance metadata service (IMDSv2 token + instance id) on a loopback port."""

    def __init__(self, instance_id: str) -> None:
        instance = instance_id

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_PUT(self):
                if self.path == "/latest/api/token":
                    self._reply(200, "token-" + instance)
                else:
                    self._reply(404, "")

            def do_GET(self):
                if self.path == "/latest/meta-data/instance-id":
                    self._reply(200, instance)
                else:
                    self._reply(404, "")

            def _reply(self, code: int, text: str) -> None:
                body = text.encode()
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class SimulatedInstance:
    def __init__(self, instance_id: str, user_data: str, root: str, env: Dict[str, str],
                 numprocs: int) -> None:
        self.id = instance_id
        self.root = root
        self._stopped = False
        self.metadata = MetadataServer(instance_id)
        self.mapping = {
            userdata.ETC_DIR: os.path.join(root, "etc"),
            userdata.STATE_DIR: os.path.join(root, "state"),
            userdata.LOG_DIR: os.path.join(root, "log"),
            userdata.RUN_DIR: os.path.join(root, "run"),
            userdata.VENV_DIR: os.path.join(root, "venv"),
            userdata.BOOT_DIR: os.path.join(root, "boot-cache"),
        }
        for path in self.mapping.values():
            os.makedirs(path, exist_ok=True)
        self.cloud_config = yaml.safe_load(user_data)
        for entry in self.cloud_config["write_files"]:
            path = self.map(entry["path"])
            with open(path, "w", encoding="utf-8") as f:
                f.write(self.map(entry["content"]))
            os.chmod(path, int(entry.get("permissions", "0644"), 8))
        bootstrap = self.map(userdata.BOOTSTRAP_PATH)
        with open(bootstrap) as f:
            lines = f.read().splitlines(keepends=True)
        with open(bootstrap, "w") as f:
            for line in lines:
                if line.startswith(userdata.GET_PYTHON_PREFIX):
                    line = f'{userdata.GET_PYTHON_PREFIX}"{machine_python()}"\n'
                f.write(line)
        self.conf = self.map(userdata.SUPERVISOR_CONF_PATH)
        boot_file = os.path.join(root, "boot")
        open(boot_file, "w").close()
        env = dict(env)
        env.update({
            userdata.NUMPROCS_ENV: str(numprocs),  # what `nproc` says on this "instance"
            "WRENCORE_DAEMON__METADATA_URL": self.metadata.url,
            "WRENCORE_DAEMON__BOOT_TIME_FILE": boot_file,
            "WRENCORE_DAEMON__SHUTDOWN_COMMAND":
                f"{sys.executable} -m supervisor.supervisorctl -c {self.conf} shutdown",
            "WRENCORE_MODULE_CACHE": os.path.join(root, "modules"),
            "WRENCORE_SUPERVISORD_ARGS": "-n",  # stay in the foreground: this is its pid
        })
        for name in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"):
            env.pop(name, None)
        self.log = open(os.path.join(root, "supervisord.out"), "ab")
        self.proc = procs.start(["/bin/sh", bootstrap], env=env, stdout=self.log,
                                stderr=self.log, cwd=root)

    def map(self, text: str) -> str:
        for original in sorted(self.mapping, key=len, reverse=True):
            text = text.replace(original, self.mapping[original])
        return text

    @property
    def supervisord_running(self) -> bool:
        return self.proc.poll() is None

    def supervisorctl(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "supervisor.supervisorctl", "-c", self.conf, *args],
            capture_output=True, text=True, timeout=30, cwd=self.root)
        return result.stdout + result.stderr

    def daemon_pids(self) -> Dict[str, int]:
        pids = {}
        for line in self.supervisorctl("status").splitlines():
            parts = line.split()
            if len(parts) >= 4 and parts[1] in ("RUNNING", "STARTING") and parts[2] == "pid":
                pids[parts[0].split(":")[-1]] = int(parts[3].rstrip(","))
        return pids

    def processes(self) -> List[int]:
        """Every live process of this instance (its session)."""
        return procs.session_members(self.proc.pid)

    def log_text(self) -> str:
        chunks = []
        log_dir = self.mapping[userdata.LOG_DIR]
        for name in sorted(os.listdir(log_dir)):
            with open(os.path.join(log_dir, name), errors="replace") as f:
                chunks.append(f"== {name}\n{f.read()}")
        return "\n".join(chunks)

    def stop(self) -> None:
        """Power the instance off: kill every process of it at once."""
        if self._stopped:
            return
        self._stopped = True
        procs.kill_session(self.proc.pid)
        self.proc.wait(10)
        self.log.close()
        self.metadata.stop()


class FleetHarness:
    """Boots every pending/running instance of ``fleet`` that moto knows, as it appears.

    Args:
        env: environment of the simulated instances (the moto endpoint and credentials).
        fleet: the fleet whose instances to boot.
        numprocs: the core count the instances report (daemon processes per instance).
        reap_terminated: stop an instance's supervisord once moto says it is terminated,
            as EC2 would power it off (off: only the instance itself may stop it).
    """

    def __init__(self, env: Dict[str, str], fleet: str, *, numprocs: int = 2,
                 reap_terminated: bool = True, poll_interval: float = 0.2) -> None:
        self.env = dict(os.environ, **env)
        self.fleet = fleet
        self.numprocs = numprocs
        self.reap_terminated = reap_terminated
        self.poll_interval = poll_interval
        self.root = tempfile.mkdtemp(prefix="wf-", dir="/tmp")  # short: unix socket paths
        self.instances: Dict[str, SimulatedInstance] = {}
        self.errors: List[BaseException] = []
        self.ec2 = boto3.client("ec2", endpoint_url=env["AWS_ENDPOINT_URL"],
                                region_name=env["AWS_DEFAULT_REGION"])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fleet-harness", daemon=True)

    def __enter__(self) -> "FleetHarness":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def states(self) -> Dict[str, str]:
        found = {}
        response = self.ec2.describe_instances(
            Filters=[{"Name": f"tag:{FLEET_TAG}", "Values": [self.fleet]}])
        for reservation in response["Reservations"]:
            for inst in reservation["Instances"]:
                found[inst["InstanceId"]] = inst["State"]["Name"]
        return found

    def sync(self) -> None:
        for instance_id, state in self.states().items():
            if state in ("pending", "running") and instance_id not in self.instances:
                raw = self.ec2.describe_instance_attribute(
                    InstanceId=instance_id, Attribute="userData")["UserData"]["Value"]
                text = base64.b64decode(raw).decode()
                self.instances[instance_id] = SimulatedInstance(
                    instance_id, text, os.path.join(self.root, instance_id), self.env,
                    self.numprocs)
            elif (state in ("shutting-down", "terminated") and self.reap_terminated
                  and instance_id in self.instances
                  and self.instances[instance_id].supervisord_running):
                self.instances[instance_id].stop()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sync()
            except Exception as exc:  # reported by wait_for_instances / the test
                self.errors.append(exc)
            self._stop.wait(self.poll_interval)

    def wait_for_instances(self, count: int, timeout: float = 30) -> List[SimulatedInstance]:
        procs.wait_until(lambda: len(self.instances) >= count or self.errors, timeout,
                         f"{count} simulated instances")
        if self.errors:
            raise self.errors[0]
        return list(self.instances.values())

    def wait_for_daemons(self, count_per_instance: int, timeout: float = 60) -> None:
        for instance in list(self.instances.values()):
            procs.wait_until(lambda: len(instance.daemon_pids()) >= count_per_instance,
                             timeout, f"daemons of {instance.id}")

    def logs(self) -> str:
        return "\n".join(f"##### {i.id}\n{i.log_text()}" for i in self.instances.values())

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        for instance in self.instances.values():
            instance.stop()
        shutil.rmtree(self.root, ignore_errors=True)

