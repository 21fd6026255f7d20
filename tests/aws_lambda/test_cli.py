"""``wrencore lambda …`` commands, registered through the wrencore_register_commands hook."""

from __future__ import annotations

import argparse
import json
import zipfile

from wrencore import plugins


def _run(argv):
    parser = argparse.ArgumentParser(prog="wrencore")
    subparsers = parser.add_subparsers(dest="command", required=True)
    plugins.get_plugin_manager().hook.wrencore_register_commands(subparsers=subparsers)
    args = parser.parse_args(argv)
    return args.func(args)


def test_build_writes_a_complete_package(tmp_path, capsys):
    out = tmp_path / "runtime.zip"
    assert _run(["lambda", "build", str(out)]) == 0
    names = zipfile.ZipFile(out).namelist()
    assert "wrencore_runtime/lambda_handler.py" in names
    assert "wrencore_runtime/runner.py" in names
    assert "cloudpickle/__init__.py" in names
    assert not any(n.startswith(("wrencore/", "boto3/")) for n in names)


def test_deploy_then_status(lambda_env, monkeypatch, capsys):
    monkeypatch.setenv("WRENCORE_STORAGE", "s3")
    monkeypatch.setenv("WRENCORE_S3__BUCKET", lambda_env.bucket)
    monkeypatch.setenv("WRENCORE_AWS_LAMBDA__TIMEOUT", "20")
    assert _run(["lambda", "status"]) == 1
    assert "not deployed" in capsys.readouterr().err
    assert _run(["lambda", "deploy"]) == 0
    deployed = json.loads(capsys.readouterr().out)
    assert deployed["timeout"] == 20 and deployed["name"].startswith("wrencore-")
    assert _run(["lambda", "status"]) == 0
    assert json.loads(capsys.readouterr().out)["matches_client"] is True


def test_package_hash_is_stable_and_follows_content(tmp_path):
    import shutil

    import wrencore_runtime
    from wrencore_aws_lambda.package import build_package

    assert build_package().sha256 == build_package().sha256
    copy = tmp_path / "runtime"
    shutil.copytree(wrencore_runtime.__path__[0], copy,
                    ignore=shutil.ignore_patterns("__pycache__"))
    assert build_package(str(copy)).sha256 == build_package().sha256
    (copy / "runner.py").write_text((copy / "runner.py").read_text() + "\n# changed\n")
    assert build_package(str(copy)).sha256 != build_package().sha256


def test_demo_runs_on_lambda(lambda_env, monkeypatch, capsys):
    """The demo's function reaches a sandbox that has wrencore's runtime, not its client."""
    from wrencore.cli import main

    monkeypatch.setenv("WRENCORE_STORAGE", "s3")
    monkeypatch.setenv("WRENCORE_S3__BUCKET", lambda_env.bucket)
    assert main(["demo", "--backend", "aws_lambda", "--calls", "3"]) == 0
    out = capsys.readouterr().out
    assert "primes below 2000: 303" in out and "ran 3 calls on backend 'aws_lambda'" in out
