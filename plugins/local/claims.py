"""Claim slots: whoever marks a call's slot first — its worker or a thief — owns the call.

Each worker has a small file (in ``/dev/shm`` where there is one) mapped into both the
worker and the pool: one byte per call slot, ``FREE`` until the worker marks it
``CLAIMED`` just before running the call, or the pool marks it ``STOLEN`` when it moves
the call to an idle worker. Every check-and-mark happens under ``flock`` on the file, so
no call runs twice; the lock is held for a few instructions, and the kernel releases it
if its holder dies. A claim costs two system calls, not the creation and removal of a file.

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


class ClaimSlots:
    """One worker's claim file, opened by the pool (``create=True``) or by the worker."""

    def __init__(self, path: str, *, create: bool = False):
        self.path = path
        flags = os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0)
        self.fd = os.open(path, flags, 0o600)
        if create:
            os.ftruncate(self.fd, SLOTS)
        self.map = mmap.mmap(self.fd, SLOTS)

    def reset(self, slot: int) -> None:
        """Mark a slot free before its call is sent (the worker reads it only after)."""
        self.map[slot] = FREE

    def claim(self, slot: int) -> bool:
        """The worker's claim: True if the call is its to run."""
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        try:
            if self.map[slot] != FREE:
                return False
            self.map[slot] = CLAIMED
            return True
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)

    def steal(self, slots, *, patience: float = 0.05) -> int:
        """Mark the given slots stolen, in order, until one is claimed; return how many.

        Gives up (returning 0) if the worker holds the lock for longer than ``patience``
        seconds, which only a worker stopped inside its claim can do.
        """
        deadline = time.monotonic() + patience
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    return 0
                time.sleep(0.001)
        try:
            taken = 0
            for slot in slots:
                if self.map[slot] != FREE:
                    break
                self.map[slot] = STOLEN
                taken += 1
            return taken
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)

    def withdraw(self, slots) -> list:
        """Mark each free slot of ``slots`` stolen; return the slots marked."""
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        try:
            taken = [slot for slot in slots if self.map[slot] == FREE]
            for slot in taken:
                self.map[slot] = STOLEN
            return taken
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)

    def finish(self, slot: int) -> None:
        """The worker's mark that the call ended (before it reports it)."""
        self.map[slot] = DONE

    def state(self, slot: int) -> int:
        return self.map[slot]

    def close(self, *, remove: bool = False) -> None:
        try:
            self.map.close()
        except (BufferError, ValueError):
            pass
        os.close(self.fd)
        if remove:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
