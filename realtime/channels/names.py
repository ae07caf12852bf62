"""Channel names (SPEC §10): `<namespace>:<id>` of `[A-Za-z0-9_.:-]`, at most 128 bytes.

A channel's events go to the room `channel:<name>`; the namespaces that name
the gateway's own rooms are reserved. A token's `channels` claim lists names
and patterns ending in `*` (a prefix: `bot:42:*` covers `bot:42:status`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from realtime.protocol import ErrorCode, GatewayError

MAX_NAME = 128
RESERVED = frozenset({"asset", "user", "role", "book", "channel"})
ROOM_PREFIX = "channel:"
_NAME = re.compile(r"[A-Za-z0-9_.-]+:[A-Za-z0-9_.:-]+")
_NAMESPACE = re.compile(r"[A-Za-z0-9_.-]+")
_PATTERN = re.compile(r"[A-Za-z0-9_.:-]*\*")


def channel(name: Any) -> str:
    """`name` if a client may ask for it, else GatewayError (BAD_REQUEST, or FORBIDDEN when reserved)."""
    if not isinstance(name, str) or len(name.encode()) > MAX_NAME or not _NAME.fullmatch(name):
        raise GatewayError(ErrorCode.BAD_REQUEST,
                           f"a channel is <namespace>:<id> of A-Z a-z 0-9 _ . : -, at most {MAX_NAME} bytes")
    if namespace(name) in RESERVED:
        raise GatewayError(ErrorCode.FORBIDDEN, f"the namespace {namespace(name)!r} is reserved")
    return name


def namespace(name: str) -> str:
    return name.partition(":")[0]


def room(name: str) -> str:
    """The room of channel `name`."""
    return ROOM_PREFIX + name


def of_room(room_name: str) -> str | None:
    """The channel of a `channel:` room; None for any other room."""
    return room_name[len(ROOM_PREFIX):] if room_name.startswith(ROOM_PREFIX) else None


def valid_namespace(value: str) -> bool:
    return bool(_NAMESPACE.fullmatch(value)) and value not in RESERVED


def valid_grant(value: Any) -> bool:
    """A `channels` claim entry: a channel name, or a pattern ending in `*`."""
    return (isinstance(value, str) and len(value.encode()) <= MAX_NAME
            and bool(_NAME.fullmatch(value) or _PATTERN.fullmatch(value)))


def granted(grants: Iterable[str], name: str) -> bool:
    """Whether a `channels` claim covers `name`."""
    for grant in grants:
        if grant == name or (grant.endswith("*") and name.startswith(grant[:-1])):
            return True
    return False
