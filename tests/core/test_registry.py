"""Choosing backends and storages by name; unknown names and missing SDKs."""

from __future__ import annotations

import time

import pytest

import wrencore
from wrencore import hookimpl, plugins


def test_unknown_backend_lists_the_available_ones():
    with pytest.raises(wrencore.UnknownNameError) as info:
        wrencore.Executor(backend="no_such_backend")
    message = str(info.value)
    assert "no_such_backend" in message
    for name in ("local", "aws_lambda", "aws_sqs_ec2"):
        assert name in message


def test_unknown_storage_lists_the_available_ones():
    with pytest.raises(wrencore.UnknownNameError, match="localfs.*s3|available: .*localfs"):
        wrencore.Executor(backend="local", storage="nope")


class _NeedsMissingSDK:
    @hookimpl
    def wrencore_register_backends(self, register):
        register("fancy_cloud", "fancy_cloud_sdk_not_installed.backend:Backend",
                 requires=("fancy_cloud_sdk_not_installed",),
                 install="pip install 'wrencore[fancy]'")


def test_backend_whose_sdk_is_missing_names_the_pip_install():
    plugins.get_plugin_manager().register(_NeedsMissingSDK(), name="fancy")
    with pytest.raises(wrencore.MissingDependencyError) as info:
        wrencore.map(abs, [1], backend="fancy_cloud")
    assert "pip install 'wrencore[fancy]'" in str(info.value)
    assert "fancy_cloud_sdk_not_installed" in str(info.value)
    assert isinstance(info.value, ImportError)


def test_each_concern_is_chosen_independently(tmp_path):
    with wrencore.Executor(backend="local", storage="localfs",
                           config={"localfs": {"root": str(tmp_path / "elsewhere")}}) as ex:
        assert ex.submit(abs, -3).result(timeout=60) == 3
        assert ex.storage.root == str(tmp_path / "elsewhere")


def test_disabled_plugins_are_not_loaded(monkeypatch):
    monkeypatch.setenv("WRENCORE_DISABLE_PLUGINS", "aws_lambda, aws_sqs_ec2, gcp, workers")
    plugins.reset()
    pm = plugins.get_plugin_manager()
    loaded = {name for name, plugin in pm.list_name_plugin() if plugin is not None}
    assert "aws_lambda" not in loaded and "gcp" not in loaded and "local" in loaded
    with pytest.raises(wrencore.UnknownNameError, match="available: local\\."):
        wrencore.Executor(backend="aws_lambda")


class _Recorder:
    def __init__(self):
        self.invoked, self.finished = [], []

    @hookimpl
    def wrencore_before_invoke(self, backend, job, call_ids):
        self.invoked.append((backend, job["job_id"], list(call_ids)))

    @hookimpl
    def wrencore_call_finished(self, future, metadata):
        self.finished.append((future.call_id, metadata["worker_end_timestamp"]))


def test_invoke_and_call_finished_hooks_fire_on_the_users_computer():
    recorder = _Recorder()
    plugins.get_plugin_manager().register(recorder, name="recorder")
    with wrencore.Executor(backend="local") as executor:
        futures = executor.map_futures(abs, [-1, -2, -3])
        assert [f.result(timeout=60) for f in futures] == [1, 2, 3]
    assert recorder.invoked == [("local", futures[0].job_id, ["00000", "00001", "00002"])]
    deadline = time.monotonic() + 10  # done-callbacks run just after waiters are woken
    while len(recorder.finished) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(call_id for call_id, _ in recorder.finished) == ["00000", "00001", "00002"]
    assert all(end > 0 for _, end in recorder.finished)
