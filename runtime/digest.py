"""SHA-256 digests of stored objects, and their check against the digest a task carries.

Kept apart from :mod:`wrencore_runtime.auth` (which re-exports both), so a worker that only
checks digests loads neither the key handling nor what it imports.

Small objects (a job's function, a call's arguments) are hashed with CPython's built-in
SHA-256, so a new worker does not load OpenSSL (``_hashlib``: 2 ms on an idle machine, 7 on
a busy one) for its first call; large ones with :mod:`hashlib`, many times faster there.
"""

from __future__ import annotations


from .errors import IntegrityError

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing is not imported at run time
    from typing import Any, Optional

#: Objects up to this size are hashed without :mod:`hashlib`.
SMALL = 1 << 16


def _builtin_sha256() -> Any:
    """CPython's built-in SHA-256 constructor (module ``_sha2`` from 3.12, ``_sha256``
    before), or None on an implementation without one (hashlib then does everything)."""
    for module in ("_sha2", "_sha256"):
        try:
            return __import__(module).sha256
        except (ImportError, AttributeError):
            continue
    return None


_small_sha256 = _builtin_sha256()
try:  # hmac.compare_digest without importing hmac (which loads OpenSSL)
    from _operator import _compare_digest as compare_digest
except ImportError:
    from hmac import compare_digest


def sha256_hex(data: bytes) -> str:
    if _small_sha256 is not None and len(data) <= SMALL:
        return _small_sha256(data).hexdigest()
    import hashlib

    return hashlib.sha256(data).hexdigest()


def check_digest(data: bytes, expected: Optional[str], what: str) -> None:
    """Raise :class:`IntegrityError` if ``data`` does not have the signed digest ``expected``."""
    if expected is not None and not compare_digest(sha256_hex(data), str(expected)):
        raise IntegrityError(
            f"{what} in storage does not match the digest its signed task message carries: "
            f"it was changed after the client wrote it, so it is not loaded. Check who can "
            f"write to the job storage.")
