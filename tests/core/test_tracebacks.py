"""Remote tracebacks keep the user's file, line and source under every cloudpickle release.

cloudpickle is free to rewrite how it encodes code (3.1.3 names every file
``<dynamic-code>``); wrencore encodes code objects itself, so the answer must not depend
on the release installed. Each release runs a real job on the local backend in a fresh
interpreter with that release first on its path (the workers inherit it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from wrencore_runtime.runner import CALL_REPR_LIMIT, describe_call

JOB = textwrap.dedent('''
    import json, linecache, sys
    import cloudpickle, wrencore
    sys.path.insert(0, sys.argv[1])
    import user_helpers

    CELL = "def cell_fail(x):\\n    raise KeyError(x * 2)\\n"
    linecache.cache["<cell-1>"] = (len(CELL), None, CELL.splitlines(True), "<cell-1>")
    namespace = {"__name__": "__main__"}
    exec(compile(CELL, "<cell-1>", "exec"), namespace)

    report = {"cloudpickle": cloudpickle.__version__}
    with wrencore.Executor(backend="local", config={"local": {"workers": 1}}) as executor:
        for name, fn in (("cell", namespace["cell_fail"]), ("module", user_helpers.explode)):
            error = executor.submit(fn, 21).exception(timeout=60)
            report[name] = {"tb": error.__cause__.tb, "notes": error.__notes__}
    print(json.dumps(report))
''')


@pytest.fixture(scope="module")
def user_code(tmp_path_factory):
    directory = tmp_path_factory.mktemp("user_code")
    (directory / "user_helpers.py").write_text(
        "def explode(x):\n    y = x - 21\n    return x / y  # divides by zero\n")
    return str(directory)


@pytest.mark.parametrize("release", ["3.0.0", "3.1.2", "installed"])
def test_traceback_names_file_line_and_source(release, user_code, tmp_path):
    env = dict(os.environ)
    if release != "installed":
        target = tmp_path / "cloudpickle"
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                        "--target", str(target), f"cloudpickle=={release}"], check=True)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(target), env.get("PYTHONPATH")]))
    run = subprocess.run([sys.executable, "-c", JOB, user_code], env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout.splitlines()[-1])
    if release != "installed":
        assert report["cloudpickle"] == release
    cell, module = report["cell"], report["module"]
    assert 'File "<cell-1>", line 2, in cell_fail\n    raise KeyError(x * 2)\n' in cell["tb"]
    path = os.path.join(user_code, "user_helpers.py")
    assert f'File "{path}", line 3, in explode\n    return x / y  # divides by zero\n' \
        in module["tb"]
    assert cell["notes"][0].endswith(": cell_fail(21)")
    assert module["notes"][0].endswith(": explode(21)")


def test_call_description_is_short_or_absent():
    def fit(*args, **kwargs):
        pass

    assert describe_call(fit, (1, "a"), {"k": [1, 2]}) == "fit(1, 'a', k=[1, 2])"
    assert len(describe_call(fit, ("x" * 10_000,), {})) <= CALL_REPR_LIMIT
    assert describe_call(fit, tuple(range(500)), {}) is None

    class Unprintable:
        def __repr__(self):
            raise RuntimeError("no repr")

    assert describe_call(fit, (Unprintable(),), {}).startswith("fit(<Unprintable instance")
