"""Claim slots: whoever marks a call's slot first — its worker or a thief — owns the call.

Each worker has a small file (in ``/dev/shm`` where there is one) mapped into both the
worker and the pool: one byte per call slot, ``FREE`` until the worker marks it
``CLAIMED`` just before running the call, or the pool marks it ``STOLEN`` when it moves
the call to an idle worker. Every check-and-mark happens under the file's lock, so no call
runs twice; the lock is held for a few instructions.

The lock is a named POSIX semaphore where there is one (``_multiprocessing.SemLock``):
taking and releasing it free costs no system call, where ``flock`` costs two, which were
a third of a worker's cost for a quick call. The kernel does not release a semaphore whose
holder dies, so each side holds a shared ``flock`` from its start until its death (the
kernel releases that one): the worker on the claim file, the pool on a second file beside
it (``….pool``). When one side cannot take the semaphore for a while, an exclusive
``flock`` on the other's file that it can take proves the other died, perhaps holding the
semaphore: the pool then marks slots without it (nobody else marks them any more), and a
worker claims nothing more (its pool is gone). Without semaphores, the lock is ``flock``
on the claim file itself, which the kernel releases for a dead holder.

When the call ends the worker marks its slot ``DONE`` (no lock: a thief only ever changes
``FREE`` slots), before it reports the call. So once a worker has died the pool can tell
the call it was running (``CLAIMED``) from calls that finished but whose reports died with
it (``DONE``) and calls it had not started.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import time

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing is not imported at run time
    from typing import Any, Optional, Tuple

try:
    from _multiprocessing import SemLock, sem_unlink
except ImportError:  # a platform without POSIX semaphores: flock only
    SemLock = sem_unlink = None  # type: ignore[assignment,misc]

_SEMAPHORE = 1  # SemLock's kind for a plain (not recursive) semaphore

FREE, CLAIMED, STOLEN, DONE = 0, 1, 2, 3
#: Slots per worker, used round-robin; far more than the calls a worker holds at once.
SLOTS = 1 << 16


def claims_directory(prefix: str = "wrencore-claims-") -> str:
    """A fresh directory for claim files, in memory-backed ``/dev/shm`` when possible."""
    import tempfile

    shm = "/dev/shm"
    if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK):
        try:
            return tempfile.mkdtemp(prefix=prefix, dir=shm)
        except OSError:
            pass
    return tempfile.mkdtemp(prefix=prefix)


class _FlockLock:
    """``flock`` on the claim file, with the semaphore's ``acquire``/``release``."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def acquire(self, blocking: bool = True, timeout: Optional[float] = None) -> bool:
        if blocking and timeout is None:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
            return True
        deadline = time.monotonic() + (timeout or 0.0)
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if not blocking or time.monotonic() > deadline:
                    return False
                time.sleep(0.001)

    def release(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)


#: Bytes after the slots that hold the semaphore's name ("" for ``flock``).
_NAME_BYTES = 64
#: Longest the pool waits for the lock before it checks whether the worker died.
DEATH_CHECK_INTERVAL = 0.05
#: Longest :meth:`ClaimSlots.withdraw` waits for a lock a live process holds.
WITHDRAW_PATIENCE = 5.0


def _new_semaphore() -> Tuple[Any, str]:
    """A new named semaphore, free, and its name (short: macOS allows 31 characters)."""
    if SemLock is None:
        raise OSError("no POSIX semaphores")
    for _ in range(10):
        name = f"/wrc-{os.getpid()}-{os.urandom(4).hex()}"
        try:
            return SemLock(_SEMAPHORE, 1, 1, name, False), name
        except FileExistsError:
            continue
    raise OSError("no free semaphore name")


class ClaimSlots:
    """One worker's claim file, opened by the pool (``create=True``) or by the worker."""

    def __init__(self, path: str, *, create: bool = False):
        self.path = path
        flags = os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0)
        self.fd = os.open(path, flags, 0o600)
        self._semaphore_name = ""
        if create:
            os.ftruncate(self.fd, SLOTS + _NAME_BYTES)
        self.map = mmap.mmap(self.fd, SLOTS + _NAME_BYTES)
        self.lock: Any = _FlockLock(self.fd)
        #: The file whose shared flock the other side holds while it lives, and ours.
        self._other_alive = self._alive = -1
        self._other_dead = False
        self._creator = create
        pool_path = path + ".pool"
        if create:
            try:
                self.lock, self._semaphore_name = _new_semaphore()
            except OSError:
                pass
            else:
                self._alive = os.open(pool_path, flags, 0o600)
                fcntl.flock(self._alive, fcntl.LOCK_SH)  # held while the pool lives
                self._other_alive = self.fd
                self.map[SLOTS:SLOTS + len(self._semaphore_name)] = \
                    self._semaphore_name.encode()
        else:
            name = bytes(self.map[SLOTS:]).rstrip(b"\0").decode()
            if name:
                self.lock = SemLock._rebuild(0, _SEMAPHORE, 1, name)
                try:  # both sides hold it open now: no name is left behind if the pool dies
                    sem_unlink(name)  # before it hears that the worker is ready
                except OSError:
                    pass
                fcntl.flock(self.fd, fcntl.LOCK_SH)  # held while the worker lives
                self._alive, self._other_alive = self.fd, os.open(pool_path, os.O_RDWR)
        self._acquire, self._release = self.lock.acquire, self.lock.release

    def reset(self, slot: int) -> None:
        """Mark a slot free before its call is sent (the worker reads it only after)."""
        self.map[slot] = FREE

    def claim(self, slot: int) -> bool:
        """The worker's claim: True if the call is its to run."""
        if self._other_dead:
            return False  # the pool died holding the semaphore: nothing is worth running
        if not self._acquire(True, DEATH_CHECK_INTERVAL):
            while not self._acquire(True, DEATH_CHECK_INTERVAL):
                if self._other_died():
                    return False
        try:
            if self.map[slot] != FREE:
                return False
            self.map[slot] = CLAIMED
            return True
        finally:
            self._release()

    def _lock_as_pool(self, patience: float) -> bool:
        """Take the lock (the pool's side) within ``patience`` seconds; True if taken, or
        if the worker died holding it (then nobody marks slots but the pool)."""
        deadline = time.monotonic() + patience
        while True:
            wait = min(DEATH_CHECK_INTERVAL, max(0.0, deadline - time.monotonic()))
            if self._acquire(True, wait):
                return True
            if self._other_died():
                return True
            if time.monotonic() >= deadline:
                return False

    def _other_died(self) -> bool:
        """True if the other side (the worker, for the pool) no longer holds its lifetime
        ``flock``: it died (it takes that before it ever takes the semaphore). Then the
        semaphore is left alone: nobody else will mark these slots."""
        if self._other_dead:
            return True
        if self._other_alive < 0:
            return False  # flock: the kernel releases a dead holder's, the wait ends alone
        try:
            fcntl.flock(self._other_alive, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(self._other_alive, fcntl.LOCK_UN)
        self._other_dead = True
        if self._creator:  # the pool: marks the dead worker's slots without the lock
            self.lock = _DeadHolder()
            self._acquire, self._release = self.lock.acquire, self.lock.release
        return True

    def steal(self, slots, *, patience: float = 0.05) -> int:
        """Mark the given slots stolen, in order, until one is claimed; return how many.

        Gives up (returning 0) if the worker holds the lock for longer than ``patience``
        seconds, which only a worker stopped inside its claim can do.
        """
        if not self._lock_as_pool(patience):
            return 0
        try:
            taken = 0
            for slot in slots:
                if self.map[slot] != FREE:
                    break
                self.map[slot] = STOLEN
                taken += 1
            return taken
        finally:
            self._release()

    def withdraw(self, slots) -> list:
        """Mark each free slot of ``slots`` stolen; return the slots marked (none if the
        worker holds the lock for ``WITHDRAW_PATIENCE`` seconds)."""
        if not self._lock_as_pool(WITHDRAW_PATIENCE):
            return []
        try:
            taken = [slot for slot in slots if self.map[slot] == FREE]
            for slot in taken:
                self.map[slot] = STOLEN
            return taken
        finally:
            self._release()

    def finish(self, slot: int) -> None:
        """The worker's mark that the call ended (before it reports it)."""
        self.map[slot] = DONE

    def state(self, slot: int) -> int:
        return self.map[slot]

    def unlink_semaphore(self) -> None:
        """Remove the semaphore's name (the pool's side, once the worker opened it: the
        semaphore lives on for both, and no name is left behind should the pool never
        close)."""
        name, self._semaphore_name = self._semaphore_name, ""
        if name:
            try:
                sem_unlink(name)
            except OSError:
                pass

    def close(self, *, remove: bool = False) -> None:
        try:
            self.map.close()
        except (BufferError, ValueError):
            pass
        for fd in {self.fd, self._alive, self._other_alive} - {-1}:
            os.close(fd)
        if remove:
            try:
                os.unlink(self.path + ".pool")
            except FileNotFoundError:
                pass
            self.unlink_semaphore()
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass


class _DeadHolder:
    """The lock of a worker that died: nobody else marks its slots any more."""

    def acquire(self, blocking: bool = True, timeout: Optional[float] = None) -> bool:
        return True

    def release(self) -> None:
        pass
