"""Configuration precedence: keyword arguments > environment > config file > defaults."""

from __future__ import annotations

import pytest

import wrencore
from wrencore.config import Config, config_file_path


def test_precedence_kwargs_over_env_over_file(tmp_path, monkeypatch):
    path = tmp_path / "wrencore.toml"
    path.write_text('backend = "from_file"\nchunksize = 3\n[local]\nworkers = 7\npython = "p"\n')
    monkeypatch.setenv("WRENCORE_CONFIG", str(path))
    monkeypatch.setenv("WRENCORE_BACKEND", "from_env")
    monkeypatch.setenv("WRENCORE_LOCAL__WORKERS", "5")
    config = Config({"local": {"python": "from_kwargs"}})
    assert config.path == str(path)
    assert config.get("backend") == "from_env"
    assert config.get("chunksize") == 3
    assert config.section("local").int("workers") == 5
    assert config.section("local").str("python") == "from_kwargs"
    assert Config({"backend": "kw"}).get("backend") == "kw"


def test_file_lookup_order(tmp_path, monkeypatch):
    xdg = tmp_path / "xdg" / "wrencore"
    xdg.mkdir(parents=True)
    (xdg / "config.toml").write_text('backend = "xdg"\n')
    monkeypatch.chdir(tmp_path)
    assert Config().get("backend") == "xdg"
    (tmp_path / "wrencore.toml").write_text('backend = "cwd"\n')
    assert config_file_path() == str(tmp_path / "wrencore.toml")
    assert Config().get("backend") == "cwd"


def test_bad_values_get_clear_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("WRENCORE_LOCAL__WORKERS", "many")
    with pytest.raises(wrencore.ConfigError, match=r"\[local\] workers = 'many'"):
        wrencore.Executor(backend="local")
    monkeypatch.setenv("WRENCORE_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(wrencore.ConfigError, match="not a file"):
        Config()
    bad = tmp_path / "bad.toml"
    bad.write_text("backend = \n")
    monkeypatch.setenv("WRENCORE_CONFIG", str(bad))
    with pytest.raises(wrencore.ConfigError, match="not valid TOML"):
        Config()


def test_timeout_must_be_positive():
    with pytest.raises(wrencore.ConfigError,
                       match=r"timeout = -1 \(from the timeout argument\) must be a positive"):
        wrencore.Executor(backend="local", timeout=-1)


def test_negative_chunksize_is_refused_at_once_from_every_source(tmp_path, monkeypatch):
    with pytest.raises(wrencore.ConfigError,
                       match=r"chunksize = -5 \(from the chunksize argument\) must be at least 1"):
        wrencore.Executor(backend="local", chunksize=-5)
    with pytest.raises(wrencore.ConfigError, match=r"chunksize = -5 \(from the chunksize arg"):
        wrencore.map(abs, [1, 2], chunksize=-5)  # refused, not a map that never ends
    with pytest.raises(wrencore.ConfigError, match=r"chunksize = 0 \(from the executor's config"):
        wrencore.Executor(backend="local", config={"chunksize": 0})
    monkeypatch.setenv("WRENCORE_CHUNKSIZE", "-5")
    with pytest.raises(wrencore.ConfigError,
                       match=r"chunksize = '-5' \(from environment variable WRENCORE_CHUNKSIZE\)"):
        wrencore.Executor(backend="local")
    monkeypatch.delenv("WRENCORE_CHUNKSIZE")
    path = tmp_path / "settings.toml"
    path.write_text("chunksize = -5\n")
    monkeypatch.setenv("WRENCORE_CONFIG", str(path))
    with pytest.raises(wrencore.ConfigError, match=rf"chunksize = -5 \(from config file {path}\)"):
        wrencore.Executor(backend="local")


def test_chunksize_as_text_is_a_number_or_a_clear_error():
    with wrencore.Executor(backend="local", chunksize="3") as executor:
        assert executor.chunksize == 3
        assert wrencore.get_all_results(executor.map_futures(abs, [-1, -2]), timeout=60) == [1, 2]
    for bad in ("three", 2.5, True, [3]):
        with pytest.raises(wrencore.ConfigError, match=r"chunksize = .* is not an int"):
            wrencore.Executor(backend="local", chunksize=bad)


def test_zero_local_workers_names_the_key_and_its_source(monkeypatch):
    with pytest.raises(wrencore.ConfigError,
                       match=r"\[local\] workers = 0 \(from the executor's config argument\) "
                             r"must be at least 1"):
        wrencore.Executor(backend="local", config={"local": {"workers": 0}})
    monkeypatch.setenv("WRENCORE_LOCAL__WORKERS", "0")
    with pytest.raises(wrencore.ConfigError, match="environment variable WRENCORE_LOCAL__WORKERS"):
        wrencore.Executor(backend="local")


def test_plugin_numbers_are_checked_against_their_ranges():
    from wrencore_aws_lambda.deploy import LambdaSettings
    from wrencore_aws_sqs_ec2.settings import StandaloneSettings

    with pytest.raises(wrencore.ConfigError, match=r"\[aws_lambda\] memory = 64 .* between 128 and"):
        LambdaSettings.from_config(Config({"aws_lambda": {"memory": 64}}))
    with pytest.raises(wrencore.ConfigError, match=r"\[aws_sqs_ec2\] batch_size = 11 .* between 1"):
        StandaloneSettings.from_config(Config({"aws_sqs_ec2": {"batch_size": 11}}))
    with pytest.raises(wrencore.ConfigError, match=r"\[aws_sqs_ec2\] idle_timeout = -1 .* at least 0"):
        StandaloneSettings.from_config(Config({"aws_sqs_ec2": {"idle_timeout": -1}}))


def test_the_removed_install_spec_setting_is_refused():
    with pytest.raises(wrencore.ConfigError, match=r"unknown config key 'install_spec' in "
                                                   r"table \[aws_sqs_ec2\]"):
        Config({"aws_sqs_ec2": {"install_spec": "wrencore==0.1"}}).section("aws_sqs_ec2")


def test_unknown_log_level_warns_and_import_carries_on():
    import os
    import subprocess
    import sys

    env = dict(os.environ, WRENCORE_LOGLEVEL="verbose")
    run = subprocess.run([sys.executable, "-c", "import wrencore; print(wrencore.__version__)"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stdout.strip() == wrencore.__version__
    assert "WRENCORE_LOGLEVEL='verbose' is not a logging level" in run.stderr


def test_config_file_chooses_the_backend_for_module_level_map(tmp_path, monkeypatch):
    (tmp_path / "wrencore.toml").write_text('backend = "missing_backend"\n')
    monkeypatch.chdir(tmp_path)
    with pytest.raises(wrencore.UnknownNameError, match="missing_backend"):
        wrencore.map(abs, [1])
