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
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

from .errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ENV_PREFIX = "WRENCORE_"
DEFAULT_BACKEND = "local"



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


def _from_env(env: Mapping[str, str], top_level: Optional[Iterable[str]] = None
              ) -> Tuple[Dict[str, Any], Dict[str, str]]:
    """The ``WRENCORE_…`` variables as config data, and the variable behind each key
    (top-level keys among ``top_level``, by default every declared one)."""
    if top_level is None:
        from .settings import tables

        top_level = tables()[""].settings
    data: Dict[str, Any] = {}
    origins: Dict[str, str] = {}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        rest = name[len(ENV_PREFIX):].lower()
        if "__" in rest:
            section, _, key = rest.partition("__")
            data.setdefault(section, {})[key] = value
            origins[f"{section}.{key}"] = f"environment variable {name}"
        elif rest in top_level:
            data[rest] = value
            origins[rest] = f"environment variable {name}"
    return data, origins


def _merge(base: Dict[str, Any], override: Mapping[str, Any],
           origins: Optional[Dict[str, str]] = None, origin: Any = None,
           prefix: str = "") -> Dict[str, Any]:
    """Merge ``override`` into ``base``; record in ``origins`` where each key came from.

    ``origin`` is a description of the source, or a mapping of dotted key to description.
    """
    for key, value in override.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value, origins, origin, f"{dotted}.")
            continue
        base[key] = copy.deepcopy(value) if isinstance(value, Mapping) else value
        if origins is None:
            continue
        for sub in _dotted_keys(value, dotted):
            origins[sub] = origin.get(sub, "") if isinstance(origin, Mapping) else origin
    return base


def _dotted_keys(value: Any, dotted: str) -> List[str]:
    if isinstance(value, Mapping):
        return [k for key, sub in value.items() for k in _dotted_keys(sub, f"{dotted}.{key}")]
    return [dotted]


def _to_number(value: Any, kind: type) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise TypeError(value)
    if kind is int and isinstance(value, float):
        if not value.is_integer():
            raise ValueError(value)
        return int(value)
    return kind(value.strip() if isinstance(value, str) else value)


class Section(dict):
    """One table of the configuration, with typed getters.

    A value that is the wrong type or out of range raises :class:`ConfigError` naming the
    key, the value and where it came from (keyword argument, environment variable, file).
    """

    def __init__(self, name: str, data: Mapping[str, Any],
                 origins: Optional[Mapping[str, str]] = None):
        super().__init__(data)
        self.name = name
        self.origins = dict(origins or {})

    def describe(self, key: str, value: Any) -> str:
        """``[local] workers = 0 (from environment variable WRENCORE_LOCAL__WORKERS)``."""
        where = f"[{self.name}] {key}" if self.name else key
        origin = self.origins.get(key)
        return f"{where} = {value!r}" + (f" (from {origin})" if origin else "")

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
            if kind in (int, float):
                return _to_number(value, kind)
            return kind(value)
        except (TypeError, ValueError):
            article = "an" if kind.__name__[0] in "aeiou" else "a"
            raise ConfigError(
                f"config {self.describe(key, value)} is not {article} {kind.__name__}"
            ) from None

    def _number(self, key: str, default: Any, kind: type, minimum: Any, maximum: Any) -> Any:
        number = self._convert(key, default, kind)
        if number is None:
            return None
        if (minimum is not None and number < minimum) or \
                (maximum is not None and number > maximum):
            allowed = (f"between {minimum} and {maximum}" if minimum is not None and
                       maximum is not None else f"at least {minimum}" if minimum is not None
                       else f"at most {maximum}")
            raise ConfigError(f"config {self.describe(key, self.get(key, default))} "
                              f"must be {allowed}")
        return number

    def int(self, key: str, default: Optional[int] = None, *, minimum: Optional[int] = None,
            maximum: Optional[int] = None) -> Optional[int]:
        return self._number(key, default, int, minimum, maximum)

    def float(self, key: str, default: Optional[float] = None, *,
              minimum: Optional[float] = None,
              maximum: Optional[float] = None) -> Optional[float]:
        return self._number(key, default, float, minimum, maximum)

    def bool(self, key: str, default: Optional[bool] = None) -> Optional[bool]:
        return self._convert(key, default, bool)

    def str(self, key: str, default: Optional[str] = None) -> Optional[str]:
        return self._convert(key, default, str)


class Config:
    """The merged configuration of one executor, checked against the declared settings.

    An unknown table or key, or a value of the wrong type or range, raises
    :class:`ConfigError` naming its source (see :mod:`wrencore.settings`).
    """

    def __init__(self, overrides: Optional[Mapping[str, Any]] = None,
                 env: Optional[Mapping[str, str]] = None, file: Optional[str] = None):
        env = os.environ if env is None else env
        self.path = file if file is not None else config_file_path(env)
        self.data: Dict[str, Any] = {}
        #: dotted key -> where its value came from
        self.origins: Dict[str, str] = {}
        _merge(self.data, _read_file(self.path), self.origins, f"config file {self.path}")
        env_data, env_origins = _from_env(env)
        _merge(self.data, env_data, self.origins, env_origins)
        _merge(self.data, overrides or {}, self.origins, "the executor's config argument")
        from .settings import check, check_environment

        check_environment(env)
        check(self.data, self.origins)

    @classmethod
    def unchecked(cls, overrides: Optional[Mapping[str, Any]] = None,
                  env: Optional[Mapping[str, str]] = None) -> "Config":
        """The same sources merged but not checked, and without the settings the plugins
        declare (so without loading their declarations): only the core's top-level keys
        are read from the environment. For what must start before the checked config is
        ready (see :meth:`wrencore.backends.Backend.prepare`), never for what runs."""
        env = os.environ if env is None else env
        config = cls.__new__(cls)
        config.path = config_file_path(env)
        config.data, config.origins = {}, {}
        _merge(config.data, _read_file(config.path), config.origins, f"config file {config.path}")
        top_level: Iterable[str] = ()
        if any(name.startswith(ENV_PREFIX) and "__" not in name[len(ENV_PREFIX):] for name in env):
            from .settings import CORE_SETTINGS  # not imported before it is needed: ~1.5 ms

            top_level = {s.name for s in CORE_SETTINGS}
        env_data, env_origins = _from_env(env, top_level)
        _merge(config.data, env_data, config.origins, env_origins)
        _merge(config.data, overrides or {}, config.origins, "the executor's config argument")
        return config

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def top(self) -> Section:
        """The top-level keys (``chunksize``, ``timeout`` …) as a section named ``""``."""
        return Section("", {k: v for k, v in self.data.items() if not isinstance(v, Mapping)},
                       {k: v for k, v in self.origins.items() if "." not in k})

    def section(self, name: str) -> Section:
        value = self.data.get(name, {})
        if not isinstance(value, Mapping):
            raise ConfigError(f"config {name!r} must be a table, not {value!r}")
        prefix = f"{name}."
        return Section(name, value, {k[len(prefix):]: v for k, v in self.origins.items()
                                     if k.startswith(prefix)})

    def with_overrides(self, overrides: Mapping[str, Any], origin: str = "") -> "Config":
        clone = Config.__new__(Config)
        clone.path = self.path
        clone.origins = dict(self.origins)
        clone.data = _merge(copy.deepcopy(self.data), overrides, clone.origins,
                            origin or "an override")
        from .settings import check

        check(clone.data, clone.origins)
        return clone

    def source(self, key: str) -> str:
        """Where the value of ``key`` (``"chunksize"``, ``"local.workers"``) came from."""
        return self.origins.get(key, "")
