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

QUEUE_SPEC = {"class": "wrencore_runtime.queue_sqs:SQSQueue",
              "config": {"name": "q", "max_receives": 3, "visibility_timeout": 30}}


def test_rendered_user_data_passes_cloud_init_schema_check():
    settings = StandaloneSettings(idle_timeout=120, numprocs=3)
    result = cloudinit.check_schema(userdata.render_user_data(settings, QUEUE_SPEC))
    assert result.valid, result.output


def test_schema_check_rejects_broken_cloud_config():
    broken = "#cloud-config\nruncmd: 5\nwrite_files: {path: /x}\n"
    result = cloudinit.check_schema(broken)
    assert not result.valid
    assert "runcmd" in result.output


def test_user_data_carries_daemon_settings_and_pins_client_versions():
    settings = StandaloneSettings(idle_timeout=42, min_uptime=7, log_group="grp", numprocs=0)
    document = yaml.safe_load(userdata.render_user_data(settings, QUEUE_SPEC))
    files = {f["path"]: f["content"] for f in document["write_files"]}
    daemon = json.loads(files[userdata.SETTINGS_PATH])
    assert daemon["queue"] == QUEUE_SPEC
    assert (daemon["idle_timeout"], daemon["min_uptime"], daemon["log_group"]) == (42, 7, "grp")
    script = files[userdata.BOOTSTRAP_PATH]
    versions = userdata.client_versions()
    assert f"uv venv --python {sys.version_info[0]}.{sys.version_info[1]}" in script
    for name in ("wrencore[standalone]", "cloudpickle", "boto3", "watchtower", "supervisor"):
        key = name.split("[")[0]
        assert f"'{name}=={versions[key]}'" in script
    assert '="$(nproc)"' in script  # one daemon per core by default
    assert script.rstrip().endswith(f"supervisord -c {userdata.SUPERVISOR_CONF_PATH}")
    assert document["runcmd"] == [[userdata.BOOTSTRAP_PATH]]


def test_install_spec_replaces_the_pypi_requirement():
    settings = StandaloneSettings(install_spec="https://example.invalid/wrencore.whl")
    script = userdata.bootstrap_script(userdata.client_versions(), settings.install_spec, 2)
    assert "'https://example.invalid/wrencore.whl'" in script
    assert "wrencore[standalone]==" not in script
    assert '="2"' in script


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
