"""The error tree shared by client and workers.

Errors raised on a worker must unpickle to the same class on the client, so the tree lives
here, in the package both sides have. ``wrencore.errors`` re-exports it and adds client-only
errors under the same root.

Where a stdlib class means the same thing, wrencore's error also subclasses it, so code
written for :mod:`concurrent.futures` keeps catching it: a crashed worker or a failed
initializer is a ``BrokenProcessPool`` (a ``BrokenExecutor``), a pickling failure a
``pickle.PicklingError``, an unpickling failure a ``pickle.UnpicklingError``.
"""

from __future__ import annotations

import pickle
import threading

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing is not imported at run time
    from typing import Dict

_lock = threading.Lock()


class WrenError(Exception):
    """Root of every error wrencore raises itself."""


class RuntimeMismatchError(WrenError):
    """The worker's Python or serializer version differs from the client's.

    Code pickled by one Python minor version cannot be trusted to load on another; make the
    worker's runtime match the client (for Lambda: redeploy; for standalone: relaunch).
    """


class RuntimeBuildError(WrenError):
    """A job's runtime could not be built — on the client (a distribution without a wheel
    for the workers) or on a worker (the stored runtime is missing or broken); the message
    names the runtime or distribution and what to do."""


class CallTimeoutError(WrenError, TimeoutError):
    """A call ran longer than its ``timeout``."""


class CallCancelledError(WrenError):
    """A call was cancelled: it never ran, or it was stopped while it ran."""


class SerializationError(WrenError, pickle.PicklingError):
    """A function, argument or result could not be pickled."""


class DeserializationError(WrenError, pickle.UnpicklingError):
    """A function, argument or result could not be unpickled on the receiving side."""


class RemoteError(WrenError):
    """A remote exception whose own class could not be recreated on this side.

    ``remote_type`` is the dotted name of the original class; the message and traceback
    are the original ones.
    """

    def __init__(self, remote_type: str, message: str, traceback_text: str = ""):
        super().__init__(f"{remote_type}: {message}")
        self.remote_type = remote_type
        self.remote_message = message
        self.traceback_text = traceback_text

    def __reduce__(self):
        return (type(self), (self.remote_type, self.remote_message, self.traceback_text))


class StorageError(WrenError):
    """A storage request failed: the message names the operation, the resource and the error.

    ``transient`` says whether repeating the request may help (throttling, a 5xx, a lost
    connection) or not (a missing bucket, access denied). A watched job whose storage keeps
    failing ends its pending calls with this error instead of waiting forever.
    """

    def __init__(self, message: str, *, transient: bool = False):
        super().__init__(message)
        self.transient = transient

    def __reduce__(self):
        return (_storage_error, (type(self), str(self), self.transient))


def _storage_error(cls, message, transient):
    return cls(message, transient=transient)


class QueueError(WrenError):
    """A queue request failed: the message names the operation, the queue and the error.

    ``transient`` as for :class:`StorageError`. A backend whose task queue keeps failing
    (deleted, access denied) ends its pending calls with this error instead of waiting
    forever: their messages can no longer reach a worker or be found.
    """

    def __init__(self, message: str, *, transient: bool = False):
        super().__init__(message)
        self.transient = transient

    def __reduce__(self):
        return (_storage_error, (type(self), str(self), self.transient))


class StatusError(DeserializationError):
    """A call's status object could not be used: unreadable, corrupt, or not this call's.

    The message names the object. The call's real outcome is unknown; run it again.
    """


class StorageKeyError(WrenError, KeyError):
    """A key is not (or not yet) present in storage."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "missing key"


class MessageRefusedError(WrenError):
    """A worker refused a task message: it was malformed, or its authentication tag did not
    verify with the task key the workers hold (forged, altered, or signed with another
    deployment's or a retired key). Nothing of it was unpickled or read from storage."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class IntegrityError(WrenError):
    """A storage object a signed task message names (the function, staged arguments, a
    large payload) does not have the digest the message carries: it was changed after the
    client wrote it, so it is not loaded."""


# WorkerCrashedError and InitializerError subclass BrokenProcessPool, whose module pulls in
# multiprocessing (~15 ms of a worker's start); a worker needs them only when a call fails.
# They are made on first use (the module's __getattr__) and named as if defined here, so
# they pickle by reference and every import of them gets the same classes.
if TYPE_CHECKING:
    from concurrent.futures.process import BrokenProcessPool

    class WorkerCrashedError(WrenError, BrokenProcessPool): ...

    class InitializerError(WrenError, BrokenProcessPool): ...


def _broken_pool_errors() -> Dict[str, type]:
    from concurrent.futures.process import BrokenProcessPool

    class WorkerCrashedError(WrenError, BrokenProcessPool):
        """The process running a call died before it reported a result.

        Unlike the stdlib's ``BrokenProcessPool``, only that call fails: the executor
        replaces the worker and keeps running the other calls.
        """

    class InitializerError(WrenError, BrokenProcessPool):
        """The executor's ``initializer`` failed on the worker; that worker's calls fail
        with it.

        The initializer is not retried on that worker; its error is this one's
        ``__cause__``.
        """

    made: Dict[str, type] = {"WorkerCrashedError": WorkerCrashedError,
                             "InitializerError": InitializerError}
    for name, cls in made.items():
        cls.__module__ = __name__
        cls.__qualname__ = name
    return made


def __getattr__(name: str) -> type:
    if name in ("WorkerCrashedError", "InitializerError"):
        with _lock:
            if name not in globals():
                globals().update(_broken_pool_errors())
        return globals()[name]  # type: ignore[no-any-return]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
