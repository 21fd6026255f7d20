"""The public API from a typed user's point of view: ``py.typed`` is shipped, and
``mypy --strict`` passes on a typical script and catches mistakes in a wrong one."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent / "typing"


@pytest.fixture(scope="module")
def mypy_output(tmp_path_factory):
    """mypy --strict on both scripts, with wrencore found as an installed package."""
    tmp = tmp_path_factory.mktemp("typing")
    site = tmp / "site"
    site.mkdir()
    # As installed: the package directories under their import names, outside the
    # checked files' tree, so mypy treats them as a third party's and reads py.typed.
    os.symlink(REPO / "wrencore", site / "wrencore")
    os.symlink(REPO / "runtime", site / "wrencore_runtime")
    for name in ("user_script.py", "wrong_use.py"):
        (tmp / name).write_text((HERE / name).read_text())
    env = dict(os.environ, PYTHONPATH=str(site))
    env.pop("MYPYPATH", None)
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--cache-dir",
         str(tmp / "cache"), "--no-error-summary", "user_script.py", "wrong_use.py"],
        cwd=tmp, env=env, capture_output=True, text=True, timeout=170)
    return done.stdout + done.stderr


def test_py_typed_is_shipped():
    assert (REPO / "wrencore" / "py.typed").exists()
    assert re.search(r'"\*" = \[[^\]]*"py\.typed"', (REPO / "pyproject.toml").read_text())


def test_a_typical_script_passes_mypy_strict(mypy_output):
    assert "user_script.py" not in mypy_output, mypy_output
    assert "wrencore/" not in mypy_output  # the library's own modules are not reported


def test_wrong_uses_fail_mypy_strict(mypy_output):
    errors = [line for line in mypy_output.splitlines()
              if line.startswith("wrong_use.py") and ": error:" in line]
    assert len(errors) == 4, mypy_output
    assert 'No overload variant of "map" matches argument types' in errors[0]
    assert 'expression has type "int", variable has type "str"' in errors[1]
    assert 'Argument "timeout" to "wait" has incompatible type "str"' in errors[2]
    assert 'expression has type "int", variable has type "str"' in errors[3]
