"""Room names: the one grammar, used by the client handlers, the feed, the API and the event validation.

A room is `<kind>:<name>` (SPEC §3): `asset:<ASSET>` (with `@<delay>` for a
delayed tier, `asset:<ASSET>@<delay>`, and `~<rate>` for a rate tier,
`asset:<ASSET>~2` or `asset:<ASSET>@900~0.5`), `user:<sub>`, `role:<role>`, and
`book:<ASSET>:<depth>` for an order book's top-`depth` view (`~<rate>` for a
rate room, `book:<ASSET>:10~2`; sessions record the book room), `trades:<ASSET>` and
`candles:<ASSET>:<interval>[@<delay>]` (SPEC §9), and (SPEC §10)
`channel:<name>` and a keyed state's `state:<name>:<owner room>`. Clients
never name rooms; back ends do (`POST /api/v1/publish`, the events stream,
the emitter), and `realtime.events.validation` holds them to this grammar.
"""

from __future__ import annotations

from typing import NamedTuple

ASSET, USER, ROLE, BOOK, CHANNEL, STATE = "asset", "user", "role", "book", "channel", "state"
TRADES, CANDLES = "trades", "candles"
# Private rooms: their events are durable (the event log) and recoverable.
PRIVATE = (USER, ROLE, CHANNEL, STATE)
MAX_USER = 256  # characters of a user's `sub`
MAX_ROLE = 64
# Longer than any room a back end may name: "user:" + MAX_USER characters.
MAX_ROOM = 300


class Room(NamedTuple):
    kind: str  # "" when the name has no `<kind>:`
    name: str


def parse(room: str) -> Room:
    """`user:42` → Room("user", "42"); a name without a colon has kind ""."""
    kind, sep, name = room.partition(":")
    return Room(kind, name) if sep else Room("", room)


def asset_room(asset: str) -> str:
    return f"{ASSET}:{asset}"


def tier_room(asset: str, delay: int) -> str:
    """The room of an asset's ticks as a connection on `delay` (s) sees them: `asset:<A>` or `asset:<A>@<delay>`."""
    return asset_room(asset) if not delay else f"{asset_room(asset)}@{delay}"


def rate_room(base: str, rate: float) -> str:
    """The room of a tier room's ticks at most `rate` per second: `<base>~<rate>` (`asset:BTC~2`)."""
    return f"{base}~{rate:g}"


def room_asset(room: str) -> str | None:
    """The asset of a tier or rate room (`asset:<A>`, `asset:<A>@<delay>`, `…~<rate>`); None for any other room."""
    kind, name = parse(room)
    if kind != ASSET:
        return None
    return name.partition("~")[0].partition("@")[0] or None


def is_delayed(room: str) -> bool:
    """Whether `room` is a delayed tier's (or one of its rate rooms)."""
    return "@" in parse(room).name


def book_room(asset: str, depth: int) -> str:
    """The room of an asset's top-`depth` book view: `book:<A>:<depth>` (also how a session records it)."""
    return f"{BOOK}:{asset}:{depth}"


def room_book(room: str) -> tuple[str, int] | None:
    """(asset, depth) of a book room; None for any other room."""
    kind, name = parse(room)
    asset, _, depth = name.rpartition(":")
    if kind != BOOK or not asset or not depth.isdigit():
        return None
    return asset, int(depth)


def trades_room(asset: str) -> str:
    """The room of an asset's `trade` events: `trades:<A>` (also how a session records it)."""
    return f"{TRADES}:{asset}"


def candles_room(asset: str, interval: str, delay: int) -> str:
    """The room of an asset's bars at `interval` as a connection on `delay` (s) sees them:
    `candles:<A>:<interval>` or `candles:<A>:<interval>@<delay>`. A session records the real-time name."""
    room = f"{CANDLES}:{asset}:{interval}"
    return room if not delay else f"{room}@{delay}"


def room_market(room: str) -> tuple[str, str, str | None] | None:
    """("trades", asset, None) or ("candles", asset, interval) of a trade or (real-time) candle room."""
    kind, name = parse(room)
    if kind == TRADES and name:
        return kind, name, None
    asset, _, interval = name.rpartition(":")
    if kind == CANDLES and asset and interval and "@" not in interval:
        return kind, asset, interval
    return None


def user_room(sub: str) -> str:
    return f"{USER}:{sub}"


def role_room(role: str) -> str:
    return f"{ROLE}:{role}"


def is_private(room: str) -> bool:
    """Whether `room` is a user's, a role's, a channel's or a keyed state's: its events go through the event log."""
    return parse(room).kind in PRIVATE
