"""wrencore's errors: one tree under :class:`WrenError`.

Errors a worker can raise live in ``wrencore_runtime.errors`` (so they unpickle to the same
classes on the client) and are re-exported here. ``WorkerCrashedError`` and
``InitializerError`` are made on first use there (their base, ``BrokenProcessPool``, pulls in
:mod:`multiprocessing`), and so on first use here too.
"""

from typing import TYPE_CHECKING

from wrencore_runtime.errors import (  # noqa: F401
    CallCancelledError,
    CallTimeoutError,
    DeserializationError,
    IntegrityError,
    MessageRefusedError,
    QueueError,
    RemoteError,
    RuntimeBuildError,
    RuntimeMismatchError,
    SerializationError,
    StatusError,
    StorageError,
    StorageKeyError,
    WrenError,
)

if TYPE_CHECKING:
    from wrencore_runtime.errors import InitializerError, WorkerCrashedError


class ConfigError(WrenError, ValueError):
    """A configuration value is missing or invalid."""


class UnknownNameError(WrenError, LookupError):
    """No backend, storage, queue or instance provider is registered under that name."""


class MissingDependencyError(WrenError, ImportError):
    """A registered plugin needs a package that is not installed; the message says which."""


class ExecutorShutdownError(WrenError, RuntimeError):
    """Work was submitted to an executor after ``shutdown()``."""


__all__ = [
    "WrenError", "ConfigError", "UnknownNameError", "MissingDependencyError",
    "ExecutorShutdownError", "CallCancelledError", "CallTimeoutError", "DeserializationError",
    "InitializerError", "QueueError", "RuntimeBuildError",
    "RemoteError", "RuntimeMismatchError", "SerializationError", "StatusError", "StorageError",
    "StorageKeyError",
    "WorkerCrashedError",
]


def __getattr__(name: str) -> type:
    if name in ("WorkerCrashedError", "InitializerError"):
        from wrencore_runtime import errors

        return getattr(errors, name)  # type: ignore[no-any-return]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
