"""``wrencore runtime build|list|show|delete|test`` on the local storage."""

from __future__ import annotations

import re

from wrencore.cli import main


def test_build_list_show_test_delete(capsys):
    assert main(["runtime", "build", "tests.runtime_workload:yaml_and_msgpack",
                 "-r", "toolz"]) == 0
    built = capsys.readouterr().out
    runtime_hash = re.search(r"runtime sha256:([0-9a-f]{64})", built).group(1)
    assert re.search(r"pyyaml==\S+\s+[\d.]+ MB\s+yaml: imported in yaml_and_msgpack", built)
    assert re.search(r"toolz==\S+.*requirement toolz", built)

    assert main(["runtime", "build", "tests.runtime_workload:yaml_and_msgpack",
                 "-r", "toolz"]) == 0  # unchanged: the same hash
    assert runtime_hash in capsys.readouterr().out

    assert main(["runtime", "list"]) == 0
    assert f"sha256:{runtime_hash[:16]}" in capsys.readouterr().out
    assert main(["runtime", "show", runtime_hash[:12]]) == 0
    shown = capsys.readouterr().out
    assert "msgpack==" in shown and "unpacked" in shown

    assert main(["runtime", "test", "tests.runtime_workload:yaml_and_msgpack", '"a: 1"',
                 "--runtime", f"sha256:{runtime_hash}"]) == 0
    tested = capsys.readouterr().out
    assert "= {'a': 1}" in tested and runtime_hash in tested

    import json
    import os

    root = os.environ["WRENCORE_LOCALFS__ROOT"]
    with open(os.path.join(root, "runtimes", runtime_hash, "runtime.json")) as f:
        wheels = len(json.load(f)["wheels"])
    assert main(["runtime", "delete", f"sha256:{runtime_hash}"]) == 0
    assert f"deleted {wheels + 1} objects" in capsys.readouterr().out  # the wheels, the manifest
    assert main(["runtime", "list"]) == 0
    assert capsys.readouterr().out == "no runtimes stored\n"
    assert main(["runtime", "show", runtime_hash]) == 1
