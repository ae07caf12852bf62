"""What a durable private event may be: one rule for the API, the emitter and the stream router.

Room names follow the one grammar of `realtime.rooms`. A back end may name a
private room (`user:<sub>`, `role:<role>`); the API also takes
`asset:<ASSET>` (best effort, through the manager), checked against the
catalog. An event's data is at most `MAX_DATA_BYTES` of JSON, whichever way
it comes in. Every refusal is a `GatewayError` (BAD_REQUEST, FORBIDDEN,
UNKNOWN_ASSET, PAYLOAD_TOO_LARGE) that the caller maps to its wire: an HTTP
status, a skipped stream entry, an exception.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from realtime import rooms
from realtime.catalog import Catalog
from realtime.channels import names
from realtime.protocol import ErrorCode, GatewayError

# The largest `data` of an event, as JSON text, whichever way it comes in (`POST /api/v1/publish`, the
# emitter, the events stream); the log reader skips anything larger. A replay is paced in whole entries,
# so this is also how far one of its parts may overshoot its budget.
MAX_DATA_BYTES = 64 * 1024
# A publish request's body: that data and the envelope around it (event, room).
MAX_BODY_BYTES = MAX_DATA_BYTES + 1024
MAX_EVENT_NAME = 64
# Events a service may not emit: the gateway's own (a forged price or auth
# event would be believed by every client) and socket.io-client's reserved names.
RESERVED_PREFIXES = ("price:", "auth:", "session:", "channel:", "state:")
RESERVED_EVENTS = frozenset({"connect", "connect_error", "disconnect", "disconnecting",
                             "newListener", "removeListener"})
# The fields of a publication (an API body, an events stream entry).
FIELDS = frozenset({"event", "room", "user", "data"})


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
    if not isinstance(sub, str) or not 0 < len(sub) <= rooms.MAX_USER:
        raise GatewayError(ErrorCode.BAD_REQUEST, f"user must be a string of 1..{rooms.MAX_USER} characters")
    return rooms.user_room(sub)


def room(name: Any, catalog: Catalog | None = None) -> str:
    """`name` if a back end may publish to it: a private room, or with `catalog` an asset's (in catalog spelling)."""
    expected = "user:<sub>, role:<role> or channel:<name>" + (" or asset:<ASSET>" if catalog is not None else "")
    if not isinstance(name, str) or not 0 < len(name) <= rooms.MAX_ROOM:
        raise GatewayError(ErrorCode.BAD_REQUEST, f"room must be a string: {expected}")
    kind, rest = rooms.parse(name)
    if kind == rooms.USER and rest:
        return user(rest)
    if kind == rooms.ROLE and 0 < len(rest) <= rooms.MAX_ROLE:
        return rooms.role_room(rest)
    if kind == rooms.CHANNEL and rest:
        return names.room(names.channel(rest))
    if kind == rooms.ASSET and rest and catalog is not None:
        asset = catalog.get(rest)
        if asset is None:
            raise GatewayError(ErrorCode.UNKNOWN_ASSET, f"unknown asset {rest[:64]!r}")
        return rooms.asset_room(asset.name)
    raise GatewayError(ErrorCode.BAD_REQUEST, f"room must be {expected}")


def address(fields: Mapping[str, Any], catalog: Catalog | None = None) -> tuple[str, str]:
    """(event, room) of a publication's `event` and `user` or `room` fields (see `room` for `catalog`)."""
    event = event_name(fields.get("event"))
    if ("user" in fields) == ("room" in fields):
        raise GatewayError(ErrorCode.BAD_REQUEST, "give exactly one of user and room")
    return event, user(fields["user"]) if "user" in fields else room(fields["room"], catalog)


def publication(body: Any, catalog: Catalog) -> tuple[str, str, Any]:
    """(event, room, data) of a `POST /api/v1/publish` body (JSON), else GatewayError."""
    if not isinstance(body, dict):
        raise GatewayError(ErrorCode.BAD_REQUEST, 'expected {"event", "room" or "user", "data"}')
    unknown = set(body) - FIELDS
    if unknown:
        raise GatewayError(ErrorCode.BAD_REQUEST, f"unknown fields: {', '.join(sorted(unknown))[:200]}")
    event, target = address(body, catalog)
    return event, target, body.get("data")
