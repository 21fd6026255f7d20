"""An out-of-tree plugin package registers a backend exactly as the built-ins do."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

PLUGIN_MODULE = '''
"""A third-party backend: runs each call in a thread with wrencore's own job runner."""
import threading

from wrencore import hookimpl
from wrencore.backends import Backend
from wrencore.futures import claim, complete_from_status
from wrencore_runtime.runner import JobRunner

CALLS_SEEN = []


class ThreadBackend(Backend):
    default_storage = "localfs"

    def __init__(self, config, storage):
        super().__init__(config, storage)
        self.runner = JobRunner(worker_id="thread-backend")
        self.lock = threading.Lock()

    def invoke(self, job, calls, chunksize):
        def run():
            for call in calls:
                if claim(call.future):
                    with self.lock:
                        outcome = self.runner.run(job, call.message, store=True,
                                                  storage=self.storage)
                    complete_from_status(call.future, outcome.status, outcome.result,
                                         self.storage)
        threading.Thread(target=run, daemon=True).start()


@hookimpl
def wrencore_register_backends(register):
    register("thread_demo", ThreadBackend, description="threads in the client process")


@hookimpl
def wrencore_register_settings(register):
    from wrencore.settings import Setting

    register("thread_demo", [Setting("greeting", "str", "hello", "what the command says"),
                             Setting("threads", "int", 1, "threads", minimum=1)],
             doc="The thread_demo backend.")


@hookimpl
def wrencore_register_commands(cli):
    import click

    @cli.command("thread-demo")
    @click.option("--name", default="world")
    def thread_demo(name):
        """Greet NAME with the configured greeting."""
        from wrencore.config import Config

        click.echo(f"{Config().section('thread_demo').get('greeting', 'hello')}, {name}")
'''

PYPROJECT = '''
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "wrencore-thread-demo"
version = "0.1"

[project.entry-points.wrencore]
thread_demo = "wrencore_thread_demo"

[tool.setuptools]
py-modules = ["wrencore_thread_demo"]
'''

SCRIPT = '''
import wrencore
for bad in ({"greting": "hi"}, {"threads": 0}):
    try:
        wrencore.Executor(backend="thread_demo", config={"thread_demo": bad})
    except wrencore.ConfigError as exc:
        print("REFUSED", exc)
wrencore.Executor(backend="thread_demo", config={"thread_demo": {"threads": "2"}}).shutdown()
futures = wrencore.map(lambda x: x * 10, [1, 2, 3], backend="thread_demo")
print("RESULTS", wrencore.get_all_results(futures, timeout=60))
print("WORKER", futures[0].metadata["worker_id"])
'''


def test_out_of_tree_plugin_package_runs_a_map(tmp_path):
    source = tmp_path / "plugin-src"
    source.mkdir()
    (source / "pyproject.toml").write_text(PYPROJECT)
    (source / "wrencore_thread_demo.py").write_text(textwrap.dedent(PLUGIN_MODULE))
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
         "--target", str(target), str(source)],
        check=True, capture_output=True, text=True, timeout=300,
    )
    env = dict(os.environ, PYTHONPATH=str(target))
    result = subprocess.run([sys.executable, "-c", SCRIPT], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "RESULTS [10, 20, 30]" in result.stdout
    assert "WORKER thread-backend" in result.stdout
    assert ("REFUSED unknown config key 'greting' in table [thread_demo] (from the executor's "
            "config argument); did you mean 'greeting'?") in result.stdout
    assert ("REFUSED config [thread_demo] threads = 0 (from the executor's config argument) "
            "must be at least 1") in result.stdout
    command = subprocess.run([sys.executable, "-m", "wrencore", "thread-demo", "--name", "you"],
                             env=dict(env, WRENCORE_THREAD_DEMO__GREETING="hi"), cwd=tmp_path,
                             capture_output=True, text=True, timeout=120)
    assert (command.returncode, command.stdout) == (0, "hi, you\n"), command.stderr
