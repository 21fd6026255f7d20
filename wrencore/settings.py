"""Declared settings: what every configuration table may hold, checked before use.

Each plugin declares its settings (name, type, default, doc) in one place and hands them
to the core through the ``wrencore_register_settings`` hook::

    @hookimpl
    def wrencore_register_settings(register):
        register("my_backend", [
            Setting("workers", "int", 4, "worker processes", minimum=1),
            Setting("region", "str", None, "the cloud region"),
        ], doc="My backend.")

The core checks every source — the config file, ``WRENCORE_…`` environment variables and
keyword config — against the declarations when a :class:`~wrencore.config.Config` is built:

- a table or key nobody declared raises :class:`ConfigError` with a did-you-mean and the
  file or variable it came from (``[locl]``, ``backnd``, ``WRENCORE_BAKEND``);
- a value of the wrong type or out of range names the key, the value and its source.

Values are converted with msgspec (``"4"`` from an environment variable becomes ``4``,
``"false"`` becomes ``False``), imported only when a configuration is checked. The
configuration reference in ``docs/configuration.md`` is generated from the same
declarations (``python -m wrencore.docs``).
"""

from __future__ import annotations

import difflib
import threading
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

from .errors import ConfigError

#: The types a setting may declare (as written in the docs).
TYPES = ("str", "int", "float", "bool", "list[str]", "str or list[str]", "table")

#: ``WRENCORE_…`` variables that are not configuration keys (read by the client at import, or
#: set for workers), never mistaken for misspelt keys.
OTHER_ENV_VARIABLES = frozenset({
    "WRENCORE_CONFIG", "WRENCORE_DISABLE_PLUGINS", "WRENCORE_LOGLEVEL", "WRENCORE_CACHE",
    "WRENCORE_MODULE_CACHE", "WRENCORE_RUNTIME_HASH", "WRENCORE_ENVIRONMENT_HASH",
    "WRENCORE_FUNCTION_TIMEOUT", "WRENCORE_LAMBDA_SAFETY_MARGIN", "WRENCORE_SERIALIZER",
    "WRENCORE_PYTHON", "WRENCORE_WORKER_ID", "WRENCORE_SUPERVISORD_ARGS",
    "WRENCORE_LOCAL_CLAIMS", "WRENCORE_PUBSUB_EMULATOR",
})
#: How close (difflib's ratio) an unknown ``WRENCORE_…`` variable must be to a known one to
#: count as a misspelling of it.
ENV_TYPO_CUTOFF = 0.9


@dataclass(frozen=True)
class Setting:
    """One configuration key.

    Args:
        name: the key, as written in the file (``workers``).
        type: one of :data:`TYPES`.
        default: the value when unset (None: unset, the code decides; say how in ``doc``).
        doc: one or two sentences for the configuration reference.
        minimum, maximum: bounds of a number, inclusive.
        greater_than: an exclusive lower bound of a number.
        choices: the allowed values.
        required: the plugin cannot work without it (``wrencore config init`` leaves it
            for the user to fill in).
    """

    name: str
    type: str
    default: Any = None
    doc: str = ""
    minimum: Any = None
    maximum: Any = None
    greater_than: Any = None
    choices: Optional[Tuple[Any, ...]] = None
    required: bool = False

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise ValueError(f"setting {self.name!r}: type {self.type!r} is not one of {TYPES}")


@dataclass
class Table:
    """The declared settings of one configuration table (``""``: the top level)."""

    name: str
    doc: str = ""
    plugins: List[str] = field(default_factory=list)
    settings: Dict[str, Setting] = field(default_factory=dict)
    #: keys beyond the declared ones are passed through unchecked
    open: bool = False


# -- the core's own settings ------------------------------------------------------------

CORE_SETTINGS = [
    Setting("backend", "str", "local", "The backend that runs calls (`wrencore plugins` lists "
            "them)."),
    Setting("storage", "str", None, "The storage of job data; unset: the backend's default "
            "(`localfs` for local, `s3` for the AWS backends)."),
    Setting("chunksize", "int", None, "Calls per invocation; unset: the backend's default.",
            minimum=1),
    Setting("timeout", "float", None, "Seconds a call may run before it fails with "
            "`TimeoutError`; unset: no limit.", greater_than=0),
    Setting("retries", "int", 0, "Attempts after a call's first, for infrastructure failures.",
            minimum=0),
    Setting("max_pending", "int", 10000, "Calls a `map` over an iterator of unknown length "
            "keeps unfinished at once.", minimum=1),
    Setting("speculation", "bool", False, "Run a backup of calls that take much longer than "
            "their peers; the first result wins."),
    Setting("speculation_fraction", "float", 0.75, "Fraction of a job's calls that must be "
            "done before backups start.", minimum=0.0, maximum=1.0),
    Setting("speculation_multiple", "float", 2.0, "A call is slow past this multiple of the "
            "median duration.", minimum=1.0),
    Setting("speculation_min_time", "float", 1.0, "Seconds a call must have run before it "
            "gets a backup.", minimum=0.0),
    Setting("speculation_min_calls", "int", 20, "Jobs with fewer calls get no backups.",
            minimum=1),
    Setting("runtime", "str", None, "The job runtime: `auto`, `explicit`, `none`, `isolated` "
            "or `sha256:…`; unset: the backend's default."),
    Setting("requirements", "str or list[str]", None, "Requirements added to the runtime, or the "
            "path of a requirements.txt / pyproject.toml."),
    Setting("completion_channel", "bool", True, "Learn of finished calls through a queue "
            "(AWS backends) instead of listing storage only."),
    Setting("storage_retry_for", "float", 60.0, "Seconds storage reads are retried before "
            "pending calls fail with `StorageError`.", minimum=0),
    Setting("status_reads", "int", 3, "Reads of an unreadable status before its call fails.",
            minimum=1),
    Setting("loglevel", "str", None, "Level of a stderr handler on the `wrencore` logger "
            "(`DEBUG`, `INFO` …); unset: the library configures no logging. Read from "
            "`WRENCORE_LOGLEVEL` at import."),
    Setting("progress", "bool", None, "Show a progress bar while blocked on futures; unset: "
            "when stderr is a terminal or in a notebook."),
    Setting("live_output", "bool", False, "Echo each call's output and log records while it "
            "runs (local backend), prefixed with its call id."),
    Setting("summary", "bool", False, "Print a one-line summary when a job ends."),
    Setting("cleanup", "bool", True, "Module-level `map` deletes its job's stored data once "
            "its results are read."),
]


# -- the registry of tables --------------------------------------------------------------

_lock = threading.Lock()
_tables: Optional[Dict[str, Table]] = None


def tables() -> Dict[str, Table]:
    """Every declared table by name, built once from the core and the plugins' hooks."""
    global _tables
    with _lock:
        if _tables is None:
            from .plugins import get_plugin_manager

            found: Dict[str, Table] = {}
            _add(found, "", CORE_SETTINGS, "The top level: what runs, and how.", "wrencore",
                 False)
            pm = get_plugin_manager()
            for impl in pm.hook.wrencore_register_settings.get_hookimpls():
                plugin = pm.get_name(impl.plugin) or ""

                def register(table: str, settings: Iterable[Setting], *, doc: str = "",
                             open: bool = False, _plugin: str = plugin) -> None:
                    _add(found, table, settings, doc, _plugin, open)

                impl.function(register=register)
            _tables = found
        return _tables


def reset() -> None:
    """Forget the declarations (with :func:`wrencore.plugins.reset`)."""
    global _tables
    with _lock:
        _tables = None


def _add(found: Dict[str, Table], name: str, settings: Iterable[Setting], doc: str,
         plugin: str, open_: bool) -> None:
    table = found.setdefault(name, Table(name))
    if doc:
        table.doc = f"{table.doc}\n\n{doc}".strip()
    if plugin not in table.plugins:
        table.plugins.append(plugin)
    table.open = table.open or open_
    for setting in settings:
        table.settings[setting.name] = setting


def defaults(table: str) -> Dict[str, Any]:
    """The declared defaults of one table."""
    return {s.name: s.default for s in tables()[table].settings.values()}


# -- checking ----------------------------------------------------------------------------

def _suggest(word: str, candidates: Iterable[str], fmt: str = "{}") -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean {fmt.format(close[0])}?" if close else ""


def _where(origin: str) -> str:
    return f" (from {origin})" if origin else ""


def _describe(table: str, key: str, value: Any, origin: str) -> str:
    where = f"[{table}] {key}" if table else key
    return f"config {where} = {value!r}{_where(origin)}"


def _number_bounds(setting: Setting) -> Dict[str, Any]:
    bounds = {}
    if setting.minimum is not None:
        bounds["ge"] = setting.minimum
    if setting.maximum is not None:
        bounds["le"] = setting.maximum
    if setting.greater_than is not None:
        bounds["gt"] = setting.greater_than
    return bounds


def _allowed(setting: Setting) -> str:
    low, high = setting.minimum, setting.maximum
    if setting.greater_than is not None:
        return f"greater than {setting.greater_than}"
    if low is not None and high is not None:
        return f"between {low} and {high}"
    return f"at least {low}" if low is not None else f"at most {high}"


_EXACT_TYPES = {"str": str, "int": int, "float": float, "bool": bool}


def _within_bounds(setting: Setting, value: Any) -> bool:
    return ((setting.minimum is None or value >= setting.minimum)
            and (setting.maximum is None or value <= setting.maximum)
            and (setting.greater_than is None or value > setting.greater_than))


def convert(setting: Setting, value: Any, table: str = "", origin: str = "") -> Any:
    """``value`` as the setting's type; ConfigError naming key, value and source if not."""
    if value is None:
        return None
    if type(value) is _EXACT_TYPES.get(setting.type) and setting.choices is None and \
            (setting.type in ("str", "bool") or _within_bounds(setting, value)):
        return value  # already what it must be (the common case: no msgspec import)
    import msgspec
    from typing import Annotated

    if setting.type == "list[str]" and isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if setting.type == "str or list[str]" and isinstance(value, str):
        return value
    given = value
    if setting.type in ("int", "float", "bool") and isinstance(value, str):
        value = value.strip()
    if setting.type == "bool" and isinstance(value, str):
        # msgspec reads "true"/"false"/"1"/"0"; environment variables also say yes/no, on/off
        value = {"yes": "true", "on": "true", "no": "false", "off": "false", "": "false"}.get(
            value.strip().lower(), value.strip().lower())
    base: Any = {"str": str, "int": int, "float": float, "bool": bool,
                 "list[str]": List[str], "str or list[str]": List[str],
                 "table": Dict[str, Any]}[setting.type]
    try:
        converted = msgspec.convert(value, base, strict=False)
    except msgspec.ValidationError:
        kind = {"list[str]": "list of strings", "str or list[str]": "string or list of strings",
                "table": "table"}.get(setting.type, setting.type)
        article = "an" if kind[0] in "aeiou" else "a"
        raise ConfigError(f"{_describe(table, setting.name, given, origin)} is not "
                          f"{article} {kind}") from None
    if setting.type in ("int", "float") and _number_bounds(setting):
        try:
            msgspec.convert(converted, Annotated[base, msgspec.Meta(**_number_bounds(setting))])
        except msgspec.ValidationError:
            raise ConfigError(f"{_describe(table, setting.name, value, origin)} must be "
                              f"{_allowed(setting)}") from None
    if setting.choices is not None and converted not in setting.choices:
        raise ConfigError(f"{_describe(table, setting.name, value, origin)} must be one of "
                          f"{', '.join(repr(c) for c in setting.choices)}"
                          f"{_suggest(str(converted), map(str, setting.choices), '{!r}')}")
    return converted


def _table_origin(origins: Mapping[str, str], table: str) -> str:
    prefix = f"{table}."
    return next((o for k, o in origins.items() if k.startswith(prefix) and o), "")


def _env_name(table: str, key: str) -> str:
    return f"WRENCORE_{table.upper()}__{key.upper()}" if table else f"WRENCORE_{key.upper()}"


def check(data: Dict[str, Any], origins: Mapping[str, str]) -> None:
    """Check (and convert in place) merged configuration ``data`` against the declarations."""
    declared = tables()
    top = declared[""]
    for key in list(data):
        value = data[key]
        origin = origins.get(key, "") or _table_origin(origins, key)
        if isinstance(value, Mapping):
            table = declared.get(key)
            if table is None or key == "":
                if key in top.settings:
                    raise ConfigError(f"config {key!r}{_where(origin)} is a top-level "
                                      f"setting, not a table: write {key} = …")
                raise ConfigError(f"unknown config table [{key}]{_where(origin)}"
                                  f"{_suggest(key, [t for t in declared if t], '[{}]')} "
                                  f"(known tables: {', '.join(sorted(t for t in declared if t))})")
            _check_table(table, value, origins)
            continue
        setting = top.settings.get(key)
        if setting is None:
            if key in declared:
                raise ConfigError(f"config {key} = {value!r}{_where(origin)} must be a table: "
                                  f"write [{key}] with its keys")
            raise ConfigError(f"unknown config key {key!r}{_where(origin)}"
                              f"{_suggest(key, top.settings, '{!r}')} (known top-level keys: "
                              f"{', '.join(sorted(top.settings))})")
        data[key] = convert(setting, value, "", origin)


def _check_table(table: Table, values: Dict[str, Any], origins: Mapping[str, str]) -> None:
    for key in list(values):
        origin = origins.get(f"{table.name}.{key}", "")
        setting = table.settings.get(key)
        if setting is None:
            if table.open:
                continue
            raise ConfigError(f"unknown config key {key!r} in table [{table.name}]"
                              f"{_where(origin)}{_suggest(key, table.settings, '{!r}')} "
                              f"(known keys: {', '.join(sorted(table.settings)) or 'none'})")
        values[key] = convert(setting, values[key], table.name, origin)


def check_environment(env: Mapping[str, str]) -> None:
    """A ``WRENCORE_…`` variable that looks like a misspelt top-level key is an error.

    Other single-underscore ``WRENCORE_…`` variables are left alone: workers and tools set
    some (``WRENCORE_CACHE`` …). Table keys (``WRENCORE_TABLE__KEY``) are checked with the
    rest of the configuration.
    """
    known = {_env_name("", k) for k in tables()[""].settings} | OTHER_ENV_VARIABLES
    for name in env:
        if not name.startswith("WRENCORE_") or "__" in name or name in known:
            continue
        close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=ENV_TYPO_CUTOFF)
        if close:
            raise ConfigError(f"unknown environment variable {name}; did you mean {close[0]}? "
                              f"(unset it, or rename it)")
