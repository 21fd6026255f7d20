"""The plugin manager and the name registries built from it.

Plugins — built-in and third-party alike — are modules registered under the ``wrencore``
entry-point group::

    [project.entry-points.wrencore]
    my_backend = "my_package.plugin"

``WRENCORE_DISABLE_PLUGINS`` (comma-separated entry-point names) keeps named plugins from
loading. After loading, ``check_pending()`` makes a hook implementation with no matching
spec (usually a typo) fail loudly.

The entry points found are remembered between processes (see :mod:`wrencore.entrypoints`),
so a new process skips :mod:`importlib.metadata` while the installed distributions are
unchanged; the plugins are then loaded and registered just as pluggy's
``load_setuptools_entrypoints`` would (without ``list_plugin_distinfo`` records).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union

import pluggy

from . import entrypoints, hookspecs
from .errors import MissingDependencyError, UnknownNameError

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "wrencore"
DISABLE_ENV = "WRENCORE_DISABLE_PLUGINS"
CONCERNS = ("backend", "storage", "queue", "instance_provider")

_lock = threading.RLock()
_manager: Optional[pluggy.PluginManager] = None
_registry: Optional["Registry"] = None


def disabled_plugins() -> List[str]:
    return [n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()]


def get_plugin_manager() -> pluggy.PluginManager:
    """The process's plugin manager, built on first use."""
    global _manager
    with _lock:
        if _manager is None:
            fp = entrypoints.fingerprint()
            cached = entrypoints.load_cached(ENTRY_POINT_GROUP, fp)
            pm = None
            if cached is not None:
                try:
                    pm = _build_manager(cached)
                except ImportError as exc:  # a stale list: discover them again
                    logger.debug("remembered entry points failed (%s); rediscovering", exc)
                    entrypoints.forget()
            if pm is None:
                points = entrypoints.discover(ENTRY_POINT_GROUP)
                pm = _build_manager(points)
                entrypoints.save(ENTRY_POINT_GROUP, fp, points)
            _manager = pm
        return _manager


def _build_manager(points: List[entrypoints.EntryPoint]) -> pluggy.PluginManager:
    pm = pluggy.PluginManager("wrencore")
    pm.add_hookspecs(hookspecs)
    for name in disabled_plugins():
        pm.set_blocked(name)
    for name, value, _dist in points:
        if pm.has_plugin(name) or pm.is_blocked(name):
            continue
        pm.register(entrypoints.resolve(value), name=name)
    pm.check_pending()
    return pm


def reset() -> None:
    """Forget the plugin manager and registry (tests; after installing a plugin)."""
    global _manager, _registry
    from . import settings

    with _lock:
        _manager = None
        _registry = None
    settings.reset()


@dataclass
class Registration:
    concern: str
    name: str
    target: Union[str, Any]
    requires: Tuple[str, ...] = ()
    install: Optional[str] = None
    description: str = ""
    plugin: str = ""
    _loaded: Any = field(default=None, repr=False)

    def missing_modules(self) -> List[str]:
        return [m for m in self.requires if importlib.util.find_spec(m) is None]

    def load(self) -> Any:
        if self._loaded is not None:
            return self._loaded
        missing = self.missing_modules()
        if missing:
            raise MissingDependencyError(self._missing_message(missing))
        if isinstance(self.target, str):
            module_name, _, attr = self.target.partition(":")
            try:
                obj: Any = importlib.import_module(module_name)
            except ImportError as exc:
                if exc.name and exc.name.split(".")[0] in {m.split(".")[0] for m in self.requires}:
                    raise MissingDependencyError(self._missing_message([exc.name])) from exc
                raise
            for part in attr.split(".") if attr else ():
                obj = getattr(obj, part)
        else:
            obj = self.target
        self._loaded = obj
        return obj

    def _missing_message(self, missing: Iterable[str]) -> str:
        fix = self.install or f"pip install {' '.join(self.requires)}"
        return (
            f"{self.concern} {self.name!r} needs {', '.join(missing)}, which is not installed; "
            f"run: {fix}"
        )


class Registry:
    """Backends, storages, queues and instance providers, by concern and name."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self._entries: Dict[str, Dict[str, Registration]] = {c: {} for c in CONCERNS}
        hooks = {
            "backend": pm.hook.wrencore_register_backends,
            "storage": pm.hook.wrencore_register_storages,
            "queue": pm.hook.wrencore_register_queues,
            "instance_provider": pm.hook.wrencore_register_instance_providers,
        }
        for concern, hook in hooks.items():
            for impl in hook.get_hookimpls():
                plugin_name = pm.get_name(impl.plugin) or ""
                impl.function(register=self._registrar(concern, plugin_name))

    def _registrar(self, concern: str, plugin_name: str) -> Callable[..., None]:
        def register(name: str, target: Any, *, requires: Iterable[str] = (),
                     install: Optional[str] = None, description: str = "") -> None:
            existing = self._entries[concern].get(name)
            if existing is not None:
                logger.warning("%s %r from plugin %r replaces the one from %r",
                               concern, name, plugin_name, existing.plugin)
            self._entries[concern][name] = Registration(
                concern, name, target, tuple(requires), install, description, plugin_name
            )
        return register

    def names(self, concern: str) -> List[str]:
        return sorted(self._entries[concern])

    def get(self, concern: str, name: str) -> Registration:
        try:
            return self._entries[concern][name]
        except KeyError:
            known = ", ".join(self.names(concern)) or "none"
            raise UnknownNameError(
                f"unknown {concern.replace('_', ' ')} {name!r}; available: {known}. "
                f"(Plugins are found through the {ENTRY_POINT_GROUP!r} entry-point group; "
                f"is the package that provides it installed?)"
            ) from None

    def load(self, concern: str, name: str) -> Any:
        return self.get(concern, name).load()


def get_registry() -> Registry:
    """The process's registry, built on first use."""
    global _registry
    with _lock:
        if _registry is None:
            _registry = Registry(get_plugin_manager())
        return _registry
