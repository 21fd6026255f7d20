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


def _third_party_imports(directory: pathlib.Path) -> set:
    import ast

    names = set()
    for path in directory.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names
            and not n.startswith("wrencore") and n != "__future__"}


def test_every_package_the_core_imports_is_a_declared_dependency():
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        import tomli as tomllib
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {Requirement(r).name.lower() for r in project["dependencies"]}
    imported = _third_party_imports(ROOT / "wrencore") | _third_party_imports(ROOT / "runtime")
    # Imported only where an optional dependency is present (cloud SDKs of the plugins that
    # runtime/ ships to workers, matplotlib for plots); each import is lazy and says what to
    # install.
    optional = {"boto3", "botocore", "google", "supervisor", "watchtower", "matplotlib"}
    assert imported - optional <= declared, imported - optional - declared
