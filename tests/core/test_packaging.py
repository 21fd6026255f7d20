"""The release wheel: every importable name is wrencore-prefixed, and the plugins are in it."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import zipfile

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_wheel_installs_only_wrencore_prefixed_top_level_names(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w",
                    str(tmp_path), str(ROOT)], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("wrencore-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top_level, names
    assert all(name.startswith("wrencore") for name in top_level), top_level
    assert {"wrencore", "wrencore_runtime", "wrencore_local", "wrencore_aws",
            "wrencore_aws_lambda", "wrencore_aws_sqs_ec2"} <= top_level
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[wrencore]" in text and "local = wrencore_local.plugin" in text
