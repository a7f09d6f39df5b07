"""Stable hashes of ids: the same on every run, machine and Python process (unlike ``hash()``).

Splits, shard assignment and augmentation seeds all derive from these, which is what makes reruns
byte-identical and an id land in the same split every time.
"""

from __future__ import annotations

import hashlib


def stable_int(*parts: object) -> int:
    """A 64-bit integer from the parts' text (e.g. ``stable_int("shard", "Abyssinian_1", 0)``)."""
    text = "\x1f".join(str(p) for p in parts).encode("utf-8")
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "big")


def stable_fraction(*parts: object) -> float:
    """A number in [0, 1), uniform over ids, from the parts' text."""
    return stable_int(*parts) / 2.0**64
