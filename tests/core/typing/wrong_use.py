"""Mistakes ``mypy --strict`` must catch in a user's script (tests/core/test_typing.py)."""

from __future__ import annotations

import wrencore


def square(x: int) -> int:
    return x * x


def main() -> None:
    wrencore.map(square, 5)
    text: str = wrencore.get_all_results(wrencore.map(square, [1]))[0]
    wrencore.wait(wrencore.map(square, [1]), timeout="soon")
    with wrencore.Executor() as ex:
        name: str = ex.submit(square, 2).result()
    print(text, name)
