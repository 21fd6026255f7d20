"""The extension surface: every hook documented, every implementation matched to a spec."""

from __future__ import annotations

import inspect

import pluggy
import pytest

from wrencore import hookimpl, hookspecs, plugins


def _specs():
    return [(name, fn) for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
            if name.startswith("wrencore_")]


def test_there_are_hooks_for_each_concern():
    source = inspect.getsource(hookspecs)
    for concern in ("invoke", "queue", "storage", "logging", "instance lifecycle"):
        assert f"\n# {concern}\n" in source, f"no section banner for {concern}"
    assert len(_specs()) >= 9


@pytest.mark.parametrize("name,spec", _specs())
def test_every_hook_is_typed_and_documented(name, spec):
    doc = inspect.getdoc(spec) or ""
    assert doc.splitlines() and doc.splitlines()[0].strip(), f"{name} has no summary line"
    signature = inspect.signature(spec)
    for param in signature.parameters:
        assert f":param {param}:" in doc, f"{name} does not document {param}"
        assert signature.parameters[param].annotation is not inspect.Parameter.empty, \
            f"{name}({param}) is untyped"
    assert signature.return_annotation is not inspect.Signature.empty
    opts = getattr(spec, "wrencore_spec", {})
    if opts.get("firstresult"):
        assert "Stops at first non-None result" in doc
    if signature.return_annotation not in (None, "None"):
        assert ":returns:" in doc, f"{name} does not document what it returns"


def test_builtin_plugins_load_through_the_entry_point_group():
    pm = plugins.get_plugin_manager()
    names = {name for name, _ in pm.list_name_plugin()}
    assert {"local", "aws", "aws_lambda", "aws_sqs_ec2"} <= names
    # every loaded implementation has a spec: check_pending raises otherwise
    pm.check_pending()


def test_an_implementation_without_a_spec_fails_loudly():
    pm = plugins.get_plugin_manager()

    class Misspelled:
        @hookimpl
        def wrencore_register_backend(self, register):  # missing the final "s"
            pass

    pm.register(Misspelled(), name="misspelled")
    try:
        with pytest.raises(pluggy.PluginValidationError, match="wrencore_register_backend"):
            pm.check_pending()
    finally:
        pm.unregister(name="misspelled")
