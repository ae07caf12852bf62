"""What a durable private event may be: one rule for the API, the emitter and the stream router."""

from __future__ import annotations

from typing import Any

from realtime.channels import names
from realtime.protocol import ErrorCode, GatewayError, role_room, user_room

MAX_EVENT_NAME = 64
MAX_USER = 256
MAX_ROLE = 64
# Events a service may not emit: the gateway's own (a forged price or auth
# event would be believed by every client) and socket.io-client's reserved names.
RESERVED_PREFIXES = ("price:", "auth:", "session:", "channel:", "state:")
RESERVED_EVENTS = frozenset({"connect", "connect_error", "disconnect", "disconnecting",
                             "newListener", "removeListener"})


def event_name(event: Any) -> str:
    """`event` if a service may emit it, else GatewayError (BAD_REQUEST or FORBIDDEN)."""
    if not isinstance(event, str) or not 0 < len(event) <= MAX_EVENT_NAME:
        raise GatewayError(ErrorCode.BAD_REQUEST, f"event must be a string of 1..{MAX_EVENT_NAME} characters")
    if event in RESERVED_EVENTS or event.startswith(RESERVED_PREFIXES):
        raise GatewayError(ErrorCode.FORBIDDEN, f"event {event!r} is reserved for the gateway")
    return event


def user(sub: Any) -> str:
    """The room of user `sub`."""
    if not isinstance(sub, str) or not 0 < len(sub) <= MAX_USER:
        raise GatewayError(ErrorCode.BAD_REQUEST, f"user must be a string of 1..{MAX_USER} characters")
    return user_room(sub)


def private_room(room: Any) -> str:
    """`room` if it is `user:<sub>`, `role:<role>` or `channel:<name>`, else GatewayError."""
    kind, _, name = room.partition(":") if isinstance(room, str) else ("", "", "")
    if kind == "user" and name:
        return user(name)
    if kind == "role" and 0 < len(name) <= MAX_ROLE:
        return role_room(name)
    if kind == "channel":
        return names.room(names.channel(name))
    raise GatewayError(ErrorCode.BAD_REQUEST, "room must be user:<sub>, role:<role> or channel:<name>")


def is_private(room: str) -> bool:
    """Durable rooms: the event log carries their events (keyed state's `state:` rooms too)."""
    return room.startswith(("user:", "role:", "channel:", "state:"))
