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


# -- functions sent by value are rebuilt without cloudpickle (wrencore_runtime.sources) --
_SCALE = 3


def _helper(x):
    return x * _SCALE


def _make_closure(n):
    import math

    empty_later = None

    def inner(x, *, scale=2):
        """inner's doc"""
        return _helper(x) + n + math.floor(1.5) * scale + (empty_later or 0)

    def recursive(k):
        return 0 if k == 0 else k + recursive(k - 1)

    inner.tag = "tagged"
    inner.recursive = recursive
    return inner


def test_a_function_sent_by_value_is_rebuilt_where_cloudpickle_cannot_be_imported():
    import subprocess
    import sys

    func = _make_closure(10)
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        data = serialize.dumps(func)
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert b"cloudpickle.cloudpickle" not in data and b"_make_function" not in data
    code = ("import sys, json, pickle\n"
            "sys.modules['cloudpickle'] = None  # any import of it fails\n"
            "f = pickle.loads(sys.stdin.buffer.read())\n"
            "print(json.dumps([f(1), f(1, scale=5), f.tag, f.__name__, f.__doc__,\n"
            "                  f.__kwdefaults__, f.recursive(4), f.__module__]))")
    out = subprocess.run([sys.executable, "-c", code], input=data, capture_output=True,
                         check=True, cwd="/")
    assert json.loads(out.stdout) == [
        func(1), func(1, scale=5), "tagged", "inner", "inner's doc", {"scale": 2},
        func.recursive(4), func.__module__]


def test_a_class_sent_by_value_still_names_cloudpickle_to_rebuild_it():
    class Local:
        pass

    data = serialize.dumps(Local)
    assert b"cloudpickle" in data  # the unpickler imports it on the worker
    assert serialize.pickle.loads(data).__name__ == "Local"
