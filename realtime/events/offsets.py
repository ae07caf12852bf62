"""Offsets: the log's entry ids (`<ms>-<n>`), one id space for every room.

They are compared as (int, int) tuples, never as strings: "10-0" > "9-0".
"""

from __future__ import annotations

import re

Offset = str
ZERO: Offset = "0-0"
_SHAPE = re.compile(r"\d{1,20}-\d{1,20}")


def parse(value: object) -> Offset | None:
    """`value` if it is a well-formed offset, else None (a client may send anything)."""
    return value if isinstance(value, str) and _SHAPE.fullmatch(value) else None


def key(offset: Offset) -> tuple[int, int]:
    ms, _, n = offset.partition("-")
    return int(ms), int(n or 0)


def later(a: Offset, b: Offset) -> Offset:
    """The later of two offsets."""
    return a if key(a) >= key(b) else b
