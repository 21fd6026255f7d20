"""The worker bootstrap: cloud-init user-data and supervisord's configuration."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile

import yaml

from tests.servers import cloudinit, procs
from wrencore_aws_sqs_ec2 import userdata
from wrencore_aws_sqs_ec2.settings import StandaloneSettings

QUEUE_SPEC = {"class": "wrencore_aws.sqs:SQSQueue",
              "config": {"name": "q", "max_receives": 3, "visibility_timeout": 30}}
RUNTIME_HASH = "ab" * 32
BUNDLE_URL = "https://bucket.example.invalid/jobs/runtimes/abab/bundle.tar?X-Amz-Signature=1&a=b"


def render(settings):
    return userdata.render_user_data(settings, QUEUE_SPEC, RUNTIME_HASH, BUNDLE_URL)


def test_rendered_user_data_passes_cloud_init_schema_check():
    settings = StandaloneSettings(idle_timeout=120, numprocs=3)
    result = cloudinit.check_schema(render(settings))
    assert result.valid, result.output


def test_schema_check_rejects_broken_cloud_config():
    broken = "#cloud-config\nruncmd: 5\nwrite_files: {path: /x}\n"
    result = cloudinit.check_schema(broken)
    assert not result.valid
    assert "runcmd" in result.output


def test_user_data_carries_daemon_settings_and_installs_only_the_stored_runtime():
    settings = StandaloneSettings(idle_timeout=42, min_uptime=7, log_group="grp", numprocs=0)
    document = yaml.safe_load(render(settings))
    files = {f["path"]: f["content"] for f in document["write_files"]}
    daemon = json.loads(files[userdata.SETTINGS_PATH])
    assert daemon["queue"] == QUEUE_SPEC
    assert (daemon["idle_timeout"], daemon["min_uptime"], daemon["log_group"]) == (42, 7, "grp")
    script = files[userdata.BOOTSTRAP_PATH]
    python = f"{sys.version_info[0]}.{sys.version_info[1]}"
    get_python = [line for line in script.splitlines()
                  if line.startswith(userdata.GET_PYTHON_PREFIX)]
    assert len(get_python) == 1 and f"python{python}" in get_python[0]
    assert f"'{BUNDLE_URL}'" in script and RUNTIME_HASH in script
    # The bundle is unpacked by the checking script, against the client's manifest digest.
    assert files[userdata.UNPACK_PATH] == userdata.UNPACK_SCRIPT
    assert "tarfile -e" not in script
    checked = userdata.render_user_data(settings, QUEUE_SPEC, RUNTIME_HASH, BUNDLE_URL,
                                        manifest_sha256="ab" * 32)
    assert f"{userdata.UNPACK_PATH} " in checked and f"'{'ab' * 32}'" in checked
    # Apart from getting a Python build, nothing is installed from a package index.
    rest = script.replace(get_python[0], "")
    assert "pip install" not in rest and "uv " not in rest and "wrencore[standalone]" not in rest
    assert f'="${{{userdata.NUMPROCS_ENV}:-$(nproc)}}"' in script  # one daemon per core
    assert f"supervisord -c {userdata.SUPERVISOR_CONF_PATH}" in script.splitlines()[-1]
    assert document["runcmd"] == [[userdata.BOOTSTRAP_PATH]]
    settings.numprocs = 2
    assert '="2"' in yaml.safe_load(render(settings))["write_files"][2]["content"]


def test_supervisord_runs_numprocs_from_environment_and_restarts_a_crashed_daemon():
    root = tempfile.mkdtemp(prefix="wsv-", dir="/tmp")  # short: unix socket path limit
    conf_text = userdata.supervisord_conf()
    for original, local in ((userdata.LOG_DIR, f"{root}/log"), (userdata.RUN_DIR, f"{root}/run")):
        os.makedirs(local, exist_ok=True)
        conf_text = conf_text.replace(original, local)
    # A stand-in program: the daemon itself is exercised in the end-to-end tests.
    conf_text = conf_text.replace(
        f"{userdata.PYTHON} -m wrencore_aws_sqs_ec2.worker --settings {userdata.SETTINGS_PATH}",
        f"{sys.executable} -c 'import time; time.sleep(600)'")
    conf = os.path.join(root, "supervisord.conf")
    with open(conf, "w") as f:
        f.write(conf_text)
    env = dict(os.environ, **{userdata.NUMPROCS_ENV: "3"})
    proc = procs.start([sys.executable, "-m", "supervisor.supervisord", "-n", "-c", conf],
                       env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def status():
        out = subprocess.run([sys.executable, "-m", "supervisor.supervisorctl", "-c", conf,
                              "status"], capture_output=True, text=True).stdout
        return {line.split()[0]: line.split() for line in out.splitlines() if "pid" in line}

    try:
        procs.wait_until(lambda: len(status()) == 3, 30, "three daemon processes")
        names = sorted(status())
        assert names == [f"wrencore-daemon:wrencore-daemon-0{i}" for i in range(3)]
        victim = int(status()[names[1]][3].rstrip(","))
        os.kill(victim, 9)
        procs.wait_until(lambda: names[1] in status()
                         and int(status()[names[1]][3].rstrip(",")) != victim,
                         30, "supervisord to restart the killed process")
    finally:
        procs.stop(proc, timeout=15)
        shutil.rmtree(root, ignore_errors=True)
