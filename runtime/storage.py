"""The storage interface workers and clients share, and the local-filesystem storage.

A storage is a flat key → bytes store. Implementations must make ``put`` atomic (a reader
sees the old object, the new one or nothing — never a partial one) and must treat a missing
key as "not yet", raising :class:`StorageKeyError`, never another error.

A storage travels to workers as a *spec*: ``{"class": "module:Class", "config": {...}}``;
:func:`storage_from_spec` rebuilds it there. Specs never hold credentials: workers take
theirs from their own environment.
"""

from __future__ import annotations

import abc
import json
import os
import threading

from . import spec_class
from .errors import StorageKeyError

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing is not imported at run time
    from typing import Any, Dict, List

__all__ = ["Storage", "LocalFileStorage", "storage_from_spec"]


class Storage(abc.ABC):
    """Abstract key → bytes store."""

    #: Configuration that rebuilds an equal storage on a worker (JSON-serializable).
    config: Dict[str, Any]

    @abc.abstractmethod
    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` atomically, replacing any previous object."""

    @abc.abstractmethod
    def get(self, key: str) -> bytes:
        """Return the object at ``key``; raise :class:`StorageKeyError` if there is none."""

    @abc.abstractmethod
    def list(self, prefix: str) -> List[str]:
        """Return every key that starts with ``prefix``, sorted."""

    @abc.abstractmethod
    def delete_prefix(self, prefix: str) -> int:
        """Delete every key that starts with ``prefix``; return how many were deleted."""

    def exists(self, key: str) -> bool:
        try:
            self.get(key)
        except StorageKeyError:
            return False
        return True

    def location(self, key: str) -> str:
        """Where ``key`` lives, for messages (a URL or path)."""
        return key

    def to_spec(self) -> Dict[str, Any]:
        cls = type(self)
        return {"class": f"{cls.__module__}:{cls.__qualname__}", "config": dict(self.config)}


_spec_cache: Dict[str, Storage] = {}
_spec_lock = threading.Lock()


def storage_from_spec(spec: Dict[str, Any]) -> Storage:
    """Rebuild (once per process) the storage a spec describes."""
    cache_key = json.dumps(spec, sort_keys=True)
    with _spec_lock:
        storage = _spec_cache.get(cache_key)
        if storage is None:
            storage = spec_class(spec)(**spec.get("config", {}))
            _spec_cache[cache_key] = storage
        return storage


class LocalFileStorage(Storage):
    """Objects as files under a root directory; ``put`` is write-to-temp then ``os.replace``."""

    def __init__(self, root: str):
        self.root = os.path.abspath(os.path.expanduser(root))
        self.config = {"root": self.root}
        os.makedirs(self.root, exist_ok=True)

    def _path(self, key: str) -> str:
        if key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"invalid storage key {key!r}")
        return os.path.join(self.root, *key.split("/"))

    def put(self, key: str, data: bytes) -> None:
        import tempfile  # not at the top: a worker that stores nothing never loads it

        path = self._path(key)
        directory = os.path.dirname(path)
        try:  # the directory usually exists: one system call less per object
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
        except FileNotFoundError:
            os.makedirs(directory, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise

    def get(self, key: str) -> bytes:
        try:
            with open(self._path(key), "rb") as f:
                return f.read()
        except (FileNotFoundError, NotADirectoryError):
            raise StorageKeyError(key) from None

    def exists(self, key: str) -> bool:
        return os.path.isfile(self._path(key))

    def location(self, key: str) -> str:
        return self._path(key)

    def list(self, prefix: str) -> List[str]:
        directory, _, _ = prefix.rpartition("/")
        base = self._path(directory) if directory else self.root
        keys = []
        for dirpath, _dirs, files in os.walk(base):
            rel = os.path.relpath(dirpath, self.root)
            rel = "" if rel == "." else rel.replace(os.sep, "/") + "/"
            for name in files:
                if name.startswith(".tmp-"):
                    continue
                key = rel + name
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def delete_prefix(self, prefix: str) -> int:
        keys = self.list(prefix)
        for key in keys:
            try:
                os.unlink(self._path(key))
            except FileNotFoundError:
                pass
        if prefix.endswith("/"):
            import shutil

            shutil.rmtree(self._path(prefix.rstrip("/")), ignore_errors=True)
        return len(keys)
