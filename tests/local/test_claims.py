"""Claim slots: no call is claimed by both sides, and a side that died holding the
semaphore does not stop the other (the kernel keeps no semaphore for the dead)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from wrencore_local import claims
from wrencore_local.claims import CLAIMED, FREE, STOLEN, ClaimSlots

_DIE_HOLDING = (
    "import os, sys\n"
    "from wrencore_local.claims import ClaimSlots\n"
    "slots = ClaimSlots(sys.argv[1], create=sys.argv[2] == 'pool')\n"
    "slots.lock.acquire()\n"
    "os._exit(0)\n"
)


def _die_holding_the_lock(path, side):
    subprocess.run([sys.executable, "-c", _DIE_HOLDING, path, side], check=True, timeout=60)


@pytest.fixture(params=["semaphore", "flock"])
def pool_slots(request, tmp_path, monkeypatch):
    if request.param == "flock":
        monkeypatch.setattr(claims, "SemLock", None)
    else:  # Linux, where the suite runs, has them: the claims must not fall back to flock
        assert claims.SemLock is not None, "no POSIX semaphores: claims would use flock"
    slots = ClaimSlots(str(tmp_path / "worker-0"), create=True)
    yield slots
    slots.close(remove=True)


def test_a_slot_is_claimed_by_one_side_only(pool_slots):
    worker = ClaimSlots(pool_slots.path)
    try:
        for slot in (1, 2, 3):
            pool_slots.reset(slot)
        assert worker.claim(1)
        assert pool_slots.steal([3, 2, 1]) == 2  # stops at the claimed one
        assert not worker.claim(2) and not worker.claim(3)
        assert [pool_slots.state(s) for s in (1, 2, 3)] == [CLAIMED, STOLEN, STOLEN]
        pool_slots.reset(4)
        assert pool_slots.withdraw([1, 4]) == [4] and not worker.claim(4)
    finally:
        worker.close()


def test_the_pool_marks_slots_of_a_worker_that_died_holding_the_lock(pool_slots):
    pool_slots.reset(7)
    pool_slots.reset(8)
    _die_holding_the_lock(pool_slots.path, "worker")
    start = time.monotonic()
    assert pool_slots.steal([8]) == 1
    assert pool_slots.withdraw([7]) == [7]
    assert time.monotonic() - start < 2  # not WITHDRAW_PATIENCE: the death is noticed
    assert pool_slots.state(7) == pool_slots.state(8) == STOLEN


def test_a_worker_claims_nothing_once_its_pool_died_holding_the_lock(tmp_path):
    assert claims.SemLock is not None, "no POSIX semaphores: claims would use flock"
    path = str(tmp_path / "worker-0")
    _die_holding_the_lock(path, "pool")
    worker = ClaimSlots(path)
    try:
        # The worker removed the semaphore's name once it had it open: the dead pool, which
        # never heard it was ready, leaves nothing behind in /dev/shm.
        name = bytes(worker.map[claims.SLOTS:]).rstrip(b"\0").decode()
        assert name and not os.path.exists("/dev/shm/sem" + name.replace("/", "."))
        assert worker.map[5] == FREE
        start = time.monotonic()
        assert not worker.claim(5)  # returns instead of waiting forever
        assert not worker.claim(6)  # and at once from then on
        assert time.monotonic() - start < 2
    finally:
        worker.close()
