"""The ``wrencore demo`` job. Its function travels by value, so a worker needs nothing of
this package, only what every worker has (the standard library)."""

from __future__ import annotations

import math
import os


def count_primes(n: int) -> dict:
    """Count the primes below ``2000 + n``; report which process did it."""
    limit = 2000 + n
    primes = sum(1 for k in range(2, limit) if all(k % d for d in range(2, math.isqrt(k) + 1)))
    return {"n": n, "primes_below": limit, "count": primes, "worker_pid": os.getpid()}
