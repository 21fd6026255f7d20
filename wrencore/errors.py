"""wrencore's errors: one tree under :class:`WrenError`.

Errors a worker can raise live in ``wrencore_runtime.errors`` (so they unpickle to the same
classes on the client) and are re-exported here.
"""

from wrencore_runtime.errors import (  # noqa: F401
    CallCancelledError,
    CallTimeoutError,
    DeserializationError,
    InitializerError,
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
    WorkerCrashedError,
    WrenError,
)


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
