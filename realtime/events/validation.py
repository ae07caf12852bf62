"""What a durable private event may be: one rule for the API, the emitter and the stream router."""

from __future__ import annotations

from typing import Any

import orjson

from realtime.protocol import ErrorCode, GatewayError, role_room, user_room

# The largest `data` of an event, as JSON text, whichever way it comes in (`POST /api/v1/publish`, the
# emitter, the events stream); the log reader skips anything larger. A replay is paced in whole entries,
# so this is also how far one of its parts may overshoot its budget.
MAX_DATA_BYTES = 64 * 1024
# A publish request's body: that data and the envelope around it (event, room).
MAX_BODY_BYTES = MAX_DATA_BYTES + 1024
MAX_EVENT_NAME = 64
MAX_USER = 256
MAX_ROLE = 64
# Events a service may not emit: the gateway's own (a forged price or auth
# event would be believed by every client) and socket.io-client's reserved names.
RESERVED_PREFIXES = ("price:", "auth:", "session:")
RESERVED_EVENTS = frozenset({"connect", "connect_error", "disconnect", "disconnecting",
                             "newListener", "removeListener"})


def event_name(event: Any) -> str:
    """`event` if a service may emit it, else GatewayError (BAD_REQUEST or FORBIDDEN)."""
    if not isinstance(event, str) or not 0 < len(event) <= MAX_EVENT_NAME:
        raise GatewayError(ErrorCode.BAD_REQUEST, f"event must be a string of 1..{MAX_EVENT_NAME} characters")
    if event in RESERVED_EVENTS or event.startswith(RESERVED_PREFIXES):
        raise GatewayError(ErrorCode.FORBIDDEN, f"event {event!r} is reserved for the gateway")
    return event


def data_text(data: Any) -> bytes:
    """`data` as JSON text, if it is at most MAX_DATA_BYTES long, else GatewayError (PAYLOAD_TOO_LARGE)."""
    return sized(orjson.dumps(data))


def sized(text: bytes) -> bytes:
    """`text` (an event's JSON data) if it is at most MAX_DATA_BYTES long, else GatewayError."""
    if len(text) > MAX_DATA_BYTES:
        raise GatewayError(ErrorCode.PAYLOAD_TOO_LARGE,
                           f"data is {len(text)} bytes of JSON; at most {MAX_DATA_BYTES} are accepted")
    return text


def user(sub: Any) -> str:
    """The room of user `sub`."""
    if not isinstance(sub, str) or not 0 < len(sub) <= MAX_USER:
        raise GatewayError(ErrorCode.BAD_REQUEST, f"user must be a string of 1..{MAX_USER} characters")
    return user_room(sub)


def private_room(room: Any) -> str:
    """`room` if it is `user:<sub>` or `role:<role>`, else GatewayError."""
    kind, _, name = room.partition(":") if isinstance(room, str) else ("", "", "")
    if kind == "user" and name:
        return user(name)
    if kind == "role" and 0 < len(name) <= MAX_ROLE:
        return role_room(name)
    raise GatewayError(ErrorCode.BAD_REQUEST, "room must be user:<sub> or role:<role>")


def is_private(room: str) -> bool:
    return room.startswith(("user:", "role:"))
