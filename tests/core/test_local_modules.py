"""Which imported modules are the user's own (shipped with a job) and which are installed."""

from __future__ import annotations

import json
import os
import sysconfig
import types

import pluggy
import pytest

from wrencore import serialize


def _module(name: str, path) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__file__ = str(path)
    return module


@pytest.fixture
def scheme_reads(monkeypatch):
    """How often the install scheme is read (from a clean slate)."""
    reads = []
    read = sysconfig.get_paths

    def counting(*args, **kwargs):
        reads.append(1)
        return read(*args, **kwargs)

    monkeypatch.setattr(serialize, "_scheme_roots", None)
    monkeypatch.setattr(sysconfig, "get_paths", counting)
    return reads


def test_a_module_beside_the_script_is_the_users_and_installed_ones_are_not(tmp_path,
                                                                            scheme_reads):
    helper = tmp_path / "helper_mod.py"
    helper.write_text("X = 1\n")
    modules = {"json": json, "pluggy": pluggy, "helper_mod": _module("helper_mod", helper)}
    assert serialize.local_module_roots(modules) == {
        "helper_mod": os.path.realpath(helper)}


def test_the_install_scheme_is_read_only_for_a_module_outside_the_installed_directories(
        tmp_path, scheme_reads):
    assert serialize.local_module_roots({"json": json, "pluggy": pluggy}) == {}
    assert scheme_reads == []  # the standard library and site-packages: no need
    helper = tmp_path / "helper_mod.py"
    helper.write_text("X = 1\n")
    modules = {"json": json, "helper_mod": _module("helper_mod", helper)}
    assert list(serialize.local_module_roots(modules)) == ["helper_mod"]
    assert list(serialize.local_module_roots(modules)) == ["helper_mod"]
    assert scheme_reads == [1]  # read once, for the helper, and kept


def test_a_module_in_a_directory_only_the_install_scheme_names_is_installed(tmp_path,
                                                                            monkeypatch):
    scheme = tmp_path / "scheme-lib"
    scheme.mkdir()
    (scheme / "schemed.py").write_text("X = 1\n")
    monkeypatch.setattr(serialize, "_scheme_roots", [os.path.realpath(scheme) + os.sep])
    assert serialize.local_module_roots({"schemed": _module("schemed", scheme / "schemed.py")}) \
        == {}
