"""Configuration: keyword arguments > environment variables > config file > defaults.

The config file is TOML, read with the standard library. It is looked up, first found wins:

1. the path in ``$WRENCORE_CONFIG``;
2. ``./wrencore.toml`` in the current directory;
3. ``$XDG_CONFIG_HOME/wrencore/config.toml`` (``~/.config/wrencore/config.toml``).

Top-level keys (``backend``, ``storage``, ``chunksize``, ``timeout``) choose what runs; each
plugin reads its own table (``[local]``, ``[localfs]``, ``[aws_lambda]`` …). Environment
variables override the file: ``WRENCORE_BACKEND=local`` for a top-level key,
``WRENCORE_LOCAL__WORKERS=4`` (double underscore) for a key of a table. Keyword arguments
(``Executor(config={"local": {"workers": 4}})``) override both.
"""

from __future__ import annotations

import copy
import os
import sys
from typing import Any, Dict, Mapping, Optional

from .errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ENV_PREFIX = "WRENCORE_"
DEFAULT_BACKEND = "local"

_TOP_LEVEL = {"backend", "storage", "chunksize", "timeout", "loglevel", "config"}


def config_file_path(env: Mapping[str, str] = os.environ) -> Optional[str]:
    explicit = env.get("WRENCORE_CONFIG")
    if explicit:
        if not os.path.isfile(explicit):
            raise ConfigError(f"WRENCORE_CONFIG names {explicit!r}, which is not a file")
        return explicit
    candidates = [
        os.path.join(os.getcwd(), "wrencore.toml"),
        os.path.join(
            env.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config"), "wrencore", "config.toml"
        ),
    ]
    return next((p for p in candidates if os.path.isfile(p)), None)


def _read_file(path: Optional[str]) -> Dict[str, Any]:
    if not path:
        return {}
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc


def _from_env(env: Mapping[str, str]) -> Dict[str, Any]:
    data: Dict[str, Any] = {}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        rest = name[len(ENV_PREFIX):].lower()
        if "__" in rest:
            section, _, key = rest.partition("__")
            data.setdefault(section, {})[key] = value
        elif rest in _TOP_LEVEL:
            data[rest] = value
    return data


def _merge(base: Dict[str, Any], override: Mapping[str, Any]) -> Dict[str, Any]:
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value) if isinstance(value, Mapping) else value
    return base


class Section(dict):
    """One table of the configuration, with typed getters."""

    def __init__(self, name: str, data: Mapping[str, Any]):
        super().__init__(data)
        self.name = name

    def _convert(self, key: str, default: Any, kind: type) -> Any:
        value = self.get(key, default)
        if value is None:
            return None
        try:
            if kind is bool and isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off", ""):
                    return False
                raise ValueError(value)
            return kind(value)
        except (TypeError, ValueError):
            raise ConfigError(
                f"config [{self.name}] {key} = {value!r} is not a valid {kind.__name__}"
            ) from None

    def int(self, key: str, default: Optional[int] = None) -> Optional[int]:
        return self._convert(key, default, int)

    def float(self, key: str, default: Optional[float] = None) -> Optional[float]:
        return self._convert(key, default, float)

    def bool(self, key: str, default: Optional[bool] = None) -> Optional[bool]:
        return self._convert(key, default, bool)

    def str(self, key: str, default: Optional[str] = None) -> Optional[str]:
        return self._convert(key, default, str)


class Config:
    """The merged configuration of one executor."""

    def __init__(self, overrides: Optional[Mapping[str, Any]] = None,
                 env: Optional[Mapping[str, str]] = None, file: Optional[str] = None):
        env = os.environ if env is None else env
        self.path = file if file is not None else config_file_path(env)
        self.data: Dict[str, Any] = {}
        _merge(self.data, _read_file(self.path))
        _merge(self.data, _from_env(env))
        _merge(self.data, overrides or {})

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def section(self, name: str) -> Section:
        value = self.data.get(name, {})
        if not isinstance(value, Mapping):
            raise ConfigError(f"config {name!r} must be a table, not {value!r}")
        return Section(name, value)

    def with_overrides(self, overrides: Mapping[str, Any]) -> "Config":
        clone = Config.__new__(Config)
        clone.path = self.path
        clone.data = _merge(copy.deepcopy(self.data), overrides)
        return clone
