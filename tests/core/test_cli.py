"""The ``wrencore`` command line: help, version, exit codes, one-line errors, config and jobs."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import click
import pytest

import wrencore
from wrencore.cli import build_cli, main

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _commands(group, path=()):
    for name, command in group.commands.items():
        yield path + (name,), command
        if isinstance(command, click.Group):
            yield from _commands(command, path + (name,))


@pytest.mark.parametrize("path", [p for p, _ in _commands(build_cli())] + [()],
                         ids=lambda p: " ".join(p) or "wrencore")
def test_every_help_is_plain_text(capsys, path):
    code, out, err = run(capsys, *path, "--help")
    assert code == 0 and out.startswith("Usage: wrencore")
    for markup in ("``", ":param", ":class:", ":func:", "wrencore_", ".. "):
        assert markup not in out, f"{' '.join(path)} --help shows {markup!r}"


def test_version(capsys):
    from importlib.metadata import version

    assert run(capsys, "--version") == (0, f"wrencore {version('wrencore')}\n", "")


def test_exit_codes(capsys):
    for argv, text in ((["no-such-command"], "No such command 'no-such-command'"),
                       (["demo", "--calls", "0"], "'--calls': 0 is not in the range"),
                       (["clean"], "name one JOB, or pass --all, or --older-than AGE"),
                       (["standalone", "--config", "[1]", "list"], "must be a JSON object")):
        code, out, err = run(capsys, *argv)
        assert (code, out) == (2, "") and err.startswith("wrencore: error: ")
        assert text in err and err.count("\n") == 1, err
    code, _, err = run(capsys)
    assert code == 2 and err.startswith("Usage: wrencore")
    code, _, err = run(capsys, "demo", "--backend", "nope")
    assert code == 1 and err.startswith("wrencore: error: unknown backend 'nope'")
    assert err.count("\n") == 1
    code, _, err = run(capsys, "standalone", "--config", "{nope", "list")
    assert code == 2 and "not valid JSON" in err


@pytest.mark.parametrize("where,setup,expected", [
    ("file key", lambda tmp, mp: _write(tmp, 'backnd = "local"\n'),
     r"unknown config key 'backnd' \(from config file .*wrencore.toml\); did you mean "
     r"'backend'\?"),
    ("file table", lambda tmp, mp: _write(tmp, "[locl]\nworkers = 2\n"),
     r"unknown config table \[locl\] \(from config file .*wrencore.toml\); did you mean "
     r"\[local\]\?"),
    ("table key", lambda tmp, mp: _write(tmp, "[local]\nworker = 2\n"),
     r"unknown config key 'worker' in table \[local\] \(from config file .*\); did you mean "
     r"'workers'\?"),
    ("env top", lambda tmp, mp: mp.setenv("WRENCORE_BAKEND", "local"),
     r"unknown environment variable WRENCORE_BAKEND; did you mean WRENCORE_BACKEND\?"),
    ("env table", lambda tmp, mp: mp.setenv("WRENCORE_LOCL__WORKERS", "2"),
     r"unknown config table \[locl\] \(from environment variable WRENCORE_LOCL__WORKERS\)"),
    ("bad type", lambda tmp, mp: _write(tmp, "[aws_lambda]\nmemory = \"lots\"\n"),
     r"config \[aws_lambda\] memory = 'lots' \(from config file .*\) is not an int"),
    ("bad range", lambda tmp, mp: mp.setenv("WRENCORE_AWS_LAMBDA__TIMEOUT", "901"),
     r"\[aws_lambda\] timeout = '901' \(from environment variable "
     r"WRENCORE_AWS_LAMBDA__TIMEOUT\) must be between 1 and 900"),
    ("bad choice", lambda tmp, mp: _write(tmp, "[aws_lambda]\narchitecture = \"arm\"\n"),
     r"architecture = 'arm' .* must be one of 'x86_64', 'arm64'; did you mean 'arm64'\?"),
])
def test_configuration_mistakes_are_one_line_errors(tmp_path, monkeypatch, capsys, where,
                                                    setup, expected):
    monkeypatch.chdir(tmp_path)
    setup(tmp_path, monkeypatch)
    code, out, err = run(capsys, "config", "show")
    assert code == 1 and out == ""
    assert err.startswith("wrencore: error: ") and err.count("\n") == 1
    assert re.search(expected, err), err
    with pytest.raises(wrencore.ConfigError, match=expected):
        wrencore.Executor()


def _write(tmp_path, text):
    (tmp_path / "wrencore.toml").write_text(text)


def test_keyword_config_is_checked_too():
    with pytest.raises(wrencore.ConfigError, match=r"'chunksiz' \(from the executor's config "
                                                   r"argument\); did you mean 'chunksize'"):
        wrencore.Executor(config={"chunksiz": 2})
    with pytest.raises(wrencore.ConfigError, match=r"\[local\] workers = 'two'"):
        wrencore.Executor(config={"local": {"workers": "two"}})


def test_config_show_names_each_source(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path, "chunksize = 3\n[local]\nworkers = 2\n")
    monkeypatch.setenv("WRENCORE_LOCAL__PYTHON", sys.executable)
    code, out, _ = run(capsys, "config", "show")
    assert code == 0
    lines = {line.split("#")[0].strip(): line.split("#", 1)[1].strip()
             for line in out.splitlines() if "=" in line}
    assert lines["chunksize = 3"] == f"config file {tmp_path / 'wrencore.toml'}"
    assert lines["workers = 2"] == f"config file {tmp_path / 'wrencore.toml'}"
    assert lines[f'python = "{sys.executable}"'] == \
        "environment variable WRENCORE_LOCAL__PYTHON"
    assert lines['backend = "local"'] == "default"
    assert "[local]" in out


@pytest.mark.parametrize("backend", ["local", "aws_lambda", "aws_sqs_ec2", "gcp_pubsub",
                                     "queue"])
def test_config_init_writes_a_file_that_loads(tmp_path, monkeypatch, capsys, backend):
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(capsys, "config", "init", "--backend", backend)
    assert code == 0 and "wrote wrencore.toml" in out
    text = (tmp_path / "wrencore.toml").read_text()
    data = tomllib.loads(text)
    assert data["backend"] == backend
    assert f"[{backend}]" in text and "# memory = 1024" in text if backend == "aws_lambda" \
        else True
    if backend in ("aws_lambda", "aws_sqs_ec2"):
        assert "[s3]" in text and 'bucket = ""' in text
    data.get("s3", {}).pop("bucket", None)
    data.get("aws_sqs_ec2", {}).pop("ami", None)
    data.get("sqs", {}).pop("name", None)
    (tmp_path / "wrencore.toml").write_text("")
    wrencore.config.Config(data)  # every key it leaves set is valid
    code, _, err = run(capsys, "config", "init", "--backend", backend)
    assert code == 1 and "exists; pass --force" in err


def test_config_check_local(capsys, tmp_path, monkeypatch):
    code, out, _ = run(capsys, "config", "check")
    assert code == 0 and "ok      worker interpreter" in out and "all 2 checks passed" in out
    monkeypatch.setenv("WRENCORE_LOCAL__PYTHON", str(tmp_path / "no-python"))
    code, out, err = run(capsys, "config", "check")
    assert code == 1 and "MISSING worker interpreter" in out and "1 of 2 checks failed" in err


def test_hello_reports_each_step(capsys):
    code, out, _ = run(capsys, "hello")
    assert code == 0
    for step in ("read the configuration", "create the executor", "run one call",
                 "run ten calls", "shut down"):
        assert re.search(rf"  {step} … \d+\.\d\d s", out), out
    assert "hello from 'local': 11 calls" in out


def _job():
    def f(x):
        print("out", x)
        return x

    with wrencore.Executor(config={"local": {"workers": 1}}) as executor:
        futures = executor.map_futures(f, range(3))
        wrencore.wait(futures)
        return executor._job_ids[-1]


def test_jobs_and_clean(capsys, tmp_path):
    first, second = _job(), _job()
    code, out, _ = run(capsys, "jobs")
    assert code == 0 and first in out and second in out and " f " in out
    assert out.index(second) < out.index(first)  # newest first
    code, out, _ = run(capsys, "clean", first, "--dry-run")
    assert code == 0 and out.startswith("would delete 1 jobs")
    assert first in run(capsys, "jobs")[1]
    code, out, _ = run(capsys, "clean", first)
    assert code == 0 and out.startswith("deleted 1 jobs")
    jobs = run(capsys, "jobs")[1]
    assert first not in jobs and second in jobs
    assert run(capsys, "clean", "--older-than", "1h")[1].startswith("deleted 0 jobs")
    code, _, err = run(capsys, "clean", "--older-than", "soon")
    assert code == 2 and "not an age" in err
    assert run(capsys, "clean", "--all")[1].startswith("deleted 1 jobs")
    assert run(capsys, "jobs")[1].startswith("no jobs in")
    code, _, err = run(capsys, "logs", second)
    assert code == 1 and f"no job '{second}'" in err


def test_python_m_wrencore_demo_is_unchanged():
    """The README's first command, as a user runs it."""
    done = subprocess.run([sys.executable, "-m", "wrencore", "demo"], capture_output=True,
                          text=True, timeout=120, env={**os.environ})
    assert done.returncode == 0, done.stderr
    assert re.search(r"ran 20 calls on backend 'local' in \d+ worker processes, \d+\.\d\d s",
                     done.stdout)
    assert done.stdout.startswith("  primes below 2000: 303\n")
