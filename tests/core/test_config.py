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
    with pytest.raises(wrencore.ConfigError, match="timeout must be positive"):
        wrencore.Executor(backend="local", timeout=-1)


def test_config_file_chooses_the_backend_for_module_level_map(tmp_path, monkeypatch):
    (tmp_path / "wrencore.toml").write_text('backend = "missing_backend"\n')
    monkeypatch.chdir(tmp_path)
    with pytest.raises(wrencore.UnknownNameError, match="missing_backend"):
        wrencore.map(abs, [1])
