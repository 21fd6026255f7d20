"""Remembered entry points: used while nothing installed changes, never once it does."""

from __future__ import annotations

import os
import sys

import pytest

from wrencore import entrypoints, plugins

PLUGIN = '''
from wrencore import hookimpl

@hookimpl
def wrencore_register_queues(register):
    register({name!r}, "queue.Queue", description="demo")
'''


def install(site, module, ep_name, meta="demo_ep_plugin-0.1.dist-info"):
    """What pip (dist-info) or ``setup.py develop`` (egg-info) leaves behind."""
    (site / f"{module}.py").write_text(PLUGIN.format(name=ep_name))
    info = site / meta
    info.mkdir(exist_ok=True)
    (info / ("METADATA" if meta.endswith("dist-info") else "PKG-INFO")).write_text(
        "Metadata-Version: 2.1\nName: demo-ep-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[wrencore]\n{ep_name} = {module}\n")
    return info


@pytest.fixture
def site(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.setenv("WRENCORE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(entrypoints, "SETTLE_SECONDS", 0.0)
    monkeypatch.syspath_prepend(str(site))
    yield site
    for name in list(sys.modules):
        if name.startswith("demo_ep_"):
            del sys.modules[name]
    plugins.reset()


def queues():
    plugins.reset()
    return plugins.get_registry().names("queue")


def no_discovery(monkeypatch):
    def fail(group):
        raise AssertionError("discovery ran: the remembered entry points were not used")
    monkeypatch.setattr(entrypoints, "discover", fail)


def test_remembered_entry_points_load_the_same_plugins(site, monkeypatch):
    install(site, "demo_ep_one", "demo_one")
    assert "demo_one" in queues()
    assert os.path.exists(entrypoints.cache_file())
    with monkeypatch.context() as m:
        no_discovery(m)
        assert "demo_one" in queues()
        assert "local" in plugins.get_registry().names("backend")
        m.setenv(plugins.DISABLE_ENV, "demo_one")
        assert "demo_one" not in queues()


def test_installing_uninstalling_and_editing_change_the_fingerprint(site, monkeypatch):
    assert "demo_new" not in queues()
    info = install(site, "demo_ep_new", "demo_new")  # installed after the cache was saved
    assert "demo_new" in queues()
    import shutil

    shutil.rmtree(info)  # uninstalled: its module would still import, so only the
    assert "demo_new" not in queues()  # fingerprint can tell
    # an editable install whose egg-info is rewritten in place with a new entry point
    info = install(site, "demo_ep_new", "demo_new", meta="demo_ep_plugin.egg-info")
    assert "demo_new" in queues()
    before = entrypoints.fingerprint()
    (site / "demo_ep_two.py").write_text(PLUGIN.format(name="demo_two"))
    with open(info / "entry_points.txt", "a") as f:
        f.write("demo_two = demo_ep_two\n")
    assert entrypoints.fingerprint() != before
    assert {"demo_new", "demo_two"} <= set(queues())


def test_a_new_sys_path_entry_is_a_different_cache(site, tmp_path, monkeypatch):
    assert "demo_other" not in queues()
    other = tmp_path / "other"
    other.mkdir()
    install(other, "demo_ep_other", "demo_other")
    monkeypatch.syspath_prepend(str(other))
    assert "demo_other" in queues()


def test_a_fresh_fingerprint_is_not_saved(site, monkeypatch):
    monkeypatch.setattr(entrypoints, "SETTLE_SECONDS", 3600.0)
    install(site, "demo_ep_fresh", "demo_fresh")
    assert "demo_fresh" in queues()
    assert not os.path.exists(entrypoints.cache_file())


def test_a_remembered_plugin_that_no_longer_imports_is_rediscovered(site):
    install(site, "demo_ep_gone", "demo_gone")
    fp = entrypoints.fingerprint()
    points = entrypoints.discover(plugins.ENTRY_POINT_GROUP)
    assert ("demo_gone", "demo_ep_gone", "demo_ep_plugin-0.1.dist-info") in points
    bogus = [p if p[0] != "demo_gone" else ("demo_gone", "demo_ep_missing_module", p[2])
             for p in points]
    assert entrypoints.save(plugins.ENTRY_POINT_GROUP, fp, bogus)
    assert entrypoints.load_cached(plugins.ENTRY_POINT_GROUP, fp) == bogus
    assert "demo_gone" in queues()  # found again through importlib.metadata
    assert entrypoints.load_cached(plugins.ENTRY_POINT_GROUP, fp) == points
