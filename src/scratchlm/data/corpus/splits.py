"""Seeding and splitting: what makes every generator a pure function of ``(split, n, seed)``.

Each stream draws from its own ``random.Random`` seeded through SHA-256, never from global state or
Python's salted ``hash()``. An item belongs to the split chosen by a SHA-256 bucket of its text, and a
split's stream drops items that hash to another split, so identical texts always land in the same split
and no item can appear in two.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator
from typing import TypeVar

SPLITS: tuple[str, ...] = ("train", "validation", "heldout")

# Out of 100 hash buckets: train takes 90, validation and heldout 5 each.
_BUCKET_LIMITS: tuple[tuple[int, str], ...] = ((90, "train"), (95, "validation"), (100, "heldout"))

Item = TypeVar("Item")


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits are {', '.join(SPLITS)}")


def check_count(n: int) -> None:
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")


def seeded_rng(stream: str, split: str, seed: int) -> random.Random:
    """An RNG whose state depends only on its arguments, identical across runs, machines and versions."""
    digest = hashlib.sha256(f"scratchlm.corpus|{stream}|{split}|{seed}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def split_of(digest: bytes) -> str:
    """The split that owns a text, from the SHA-256 digest of that text."""
    bucket = int.from_bytes(digest[:8], "big") % 100
    return next(name for limit, name in _BUCKET_LIMITS if bucket < limit)


def split_stream(make: Callable[[], Item], text_of: Callable[[Item], str], split: str) -> Iterator[Item]:
    """The endless stream of ``make()`` items whose text belongs to ``split``, each text at most once."""
    seen: set[bytes] = set()
    while True:
        item = make()
        digest = hashlib.sha256(text_of(item).encode()).digest()
        if split_of(digest) == split and digest not in seen:
            seen.add(digest)
            yield item
