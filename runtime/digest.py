"""SHA-256 digests of stored objects, and their check against the digest a task carries.

Kept apart from :mod:`wrencore_runtime.auth` (which re-exports both), so a worker that only
checks digests loads neither the key handling nor what it imports.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Optional

from .errors import IntegrityError


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_digest(data: bytes, expected: Optional[str], what: str) -> None:
    """Raise :class:`IntegrityError` if ``data`` does not have the signed digest ``expected``."""
    if expected is not None and not hmac.compare_digest(sha256_hex(data), str(expected)):
        raise IntegrityError(
            f"{what} in storage does not match the digest its signed task message carries: "
            f"it was changed after the client wrote it, so it is not loaded. Check who can "
            f"write to the job storage.")
