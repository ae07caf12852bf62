"""The wire contract (SPEC §2): event names, payload shapes, error codes.

Everything a client or a neighbour can see is declared here, so the protocol is
greppable in one file. Errors are raised as `GatewayError(code)` anywhere and
mapped to the wire in exactly one place per transport: `ack_error` for acks,
`refusal` for connect, the HTTP layer for REST.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, NotRequired, TypedDict

import socketio

# Client -> server events.
PRICE_SUBSCRIBE = "price:subscribe"
PRICE_UNSUBSCRIBE = "price:unsubscribe"
AUTH_REFRESH = "auth:refresh"
# Client -> server: change a connection's price rate live. Server -> client: the pod's overload cap changed.
PRICE_RATE = "price:rate"
# Channels and keyed state (SPEC §10).
CHANNEL_SUBSCRIBE = "channel:subscribe"
CHANNEL_UNSUBSCRIBE = "channel:unsubscribe"
STATE_SUBSCRIBE = "state:subscribe"
STATE_UNSUBSCRIBE = "state:unsubscribe"

# Server -> client events.
PRICE_UPDATE = "price:update"
# An asset's liveness changed: live, stale (no tick for a while) or halted (by the feed).
PRICE_STATUS = "price:status"
AUTH_EXPIRING = "auth:expiring"
# Sent just before the server closes a connection for good (e.g. the user opened too many).
SESSION_CLOSED = "session:closed"
# A recovered channel subscription (or a channel's state) that is no longer allowed: not restored.
CHANNEL_CLOSED = "channel:closed"
# Keyed state: each change (through the event log, with its offset), and the whole state when a
# recovery cannot replay the changes.
STATE_UPDATE = "state:update"
STATE_SNAPSHOT = "state:snapshot"

# Connection state recovery (realtime.events): the CONNECT reply's data carries "pid"; socket.io-client's
# CONNECT auth carries {"pid", "offset"} beside "token"; every private event (user and role rooms) ends
# with its offset, a string, as its last argument, and no other event ends with a string.
AUTH_PID = "pid"
AUTH_OFFSET = "offset"

# Order books (SPEC §9): client -> server, server -> client, and the feed's resync request.
BOOK_SUBSCRIBE = "book:subscribe"
BOOK_SNAPSHOT = "book:snapshot"
BOOK_UNSUBSCRIBE = "book:unsubscribe"
BOOK_UPDATE = "book:update"
BOOK_STATUS = "book:status"
BOOK_RESYNC = "book:resync"
# A feed message's `type`: untyped messages are quote ticks.
FEED_BOOK = "book"

class ErrorCode(StrEnum):
    # Connect refusals.
    AUTH_REQUIRED = "AUTH_REQUIRED"
    AUTH_INVALID = "AUTH_INVALID"
    AUTH_EXPIRED = "AUTH_EXPIRED"
    TOO_MANY_CONNECTIONS = "TOO_MANY_CONNECTIONS"
    # Ack failures.
    BAD_REQUEST = "BAD_REQUEST"
    UNKNOWN_ASSET = "UNKNOWN_ASSET"
    FORBIDDEN = "FORBIDDEN"
    RATE_LIMITED = "RATE_LIMITED"
    TOO_MANY_SUBSCRIPTIONS = "TOO_MANY_SUBSCRIPTIONS"
    INTERNAL = "INTERNAL"
    # HTTP API only.
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    UNAVAILABLE = "UNAVAILABLE"


class TickOutcome(StrEnum):
    """What the feed's gate did with a tick: the `outcome` label of `realtime_feed_ticks_total`."""

    OK = "ok"
    MALFORMED = "malformed"
    UNKNOWN = "unknown"
    CROSSED = "crossed"
    STALE = "stale"
    HALTED = "halted"
    BAND = "band"


class GatewayError(Exception):
    """An error with a wire code; its message is safe to show to the client."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ErrorBody(TypedDict):
    code: str
    message: str


class PriceUpdate(TypedDict):
    """`price:update`: prices are integers; value = bid / 10**decimals."""

    asset: str
    bid: int
    ask: int
    decimals: int
    seq: int
    ts: int


class PriceStatus(TypedDict):
    """`price:status`: `status` is live, stale or halted, since `since` (ms)."""

    asset: str
    status: str
    since: int


class Rejection(TypedDict):
    asset: str
    code: str


class SubscribeAck(TypedDict):
    ok: bool
    subscribed: list[str]
    rejected: list[Rejection]
    prices: list[PriceUpdate]
    statuses: list[PriceStatus]
    instance: str
    maxRate: float | None  # the granted rate of these subscriptions; None: every tick


class RateAck(TypedDict):
    """`price:rate` answered: the grant now in force for `assets` (null: every tick)."""

    ok: bool
    maxRate: float | None
    assets: list[str]


class RateNotice(TypedDict):
    """`price:rate` from the server: under overload the pod sends at most `maxRate` per asset (null: it ended)."""

    maxRate: float | None
    overload: bool


class UnsubscribeAck(TypedDict):
    ok: bool
    unsubscribed: list[str]


class RefreshAck(TypedDict):
    ok: bool
    exp: int


class ChannelAck(TypedDict):
    """`channel:subscribe` / `channel:unsubscribe`."""

    ok: bool
    channel: str


class ChannelClosed(TypedDict):
    """`channel:closed`: a recovered subscription that is no longer allowed (`code` FORBIDDEN or UNAVAILABLE)."""

    channel: str
    code: str


class StateAck(TypedDict):
    """`state:subscribe` (and the `state:snapshot` event): `channel` only for a channel's state."""

    ok: bool
    name: str
    channel: NotRequired[str]
    version: int
    items: dict[str, Any]


class StateUpdate(TypedDict):
    """`state:update`: applying `ops` (set, merge with the changed fields only, delete) to the state at
    `version` - 1 gives it at `version`; the event's last argument is its offset."""

    name: str
    channel: NotRequired[str]
    version: int
    ops: list[dict[str, Any]]


class ErrorAck(TypedDict):
    ok: bool
    error: ErrorBody


class SessionClosed(TypedDict):
    """`session:closed`: why the server is about to disconnect this client."""

    code: str
    message: str


class ExpiringEvent(TypedDict):
    exp: int


class FeedTick(TypedDict):
    """A tick on the price channel (SPEC §4); prices may also be decimal strings, `ts` a float.

    `{"asset", "status": "halted" | "open"}` on the same channel halts and resumes an asset.
    """

    asset: str
    bid: int
    ask: int
    ts: NotRequired[int]
    seq: NotRequired[int]


class BookView(TypedDict):
    """The `book:subscribe` / `book:snapshot` ack and the `book:snapshot` event of a recovery.

    Levels are `[price, quantity]` decimal strings, best first; `status` says
    whether updates flow (`live`) or the pod waits for the feed's snapshot.
    """

    ok: bool
    asset: str
    depth: int
    seq: int
    bids: list[list[str]]
    asks: list[list[str]]
    ts: int
    status: str


class BookUpdate(TypedDict):
    """`book:update`: the levels of the top-`depth` view that changed since `prevSeq` (`"0"`: it left)."""

    asset: str
    depth: int
    seq: int
    prevSeq: int
    bids: list[list[str]]
    asks: list[list[str]]
    ts: int


class BookStatus(TypedDict):
    """`book:status`: `live`, or `resyncing` while the pod waits for the feed's snapshot."""

    asset: str
    status: str


class BookUnsubscribeAck(TypedDict):
    ok: bool


class AssetInfo(TypedDict):
    """An entry of `GET /api/v1/assets`; `price` is null until the asset has ticked (or if not entitled)."""

    name: str
    decimals: int
    price: PriceUpdate | None
    status: PriceStatus


class DemandReport(TypedDict):
    """`GET /api/v1/demand`, the Redis key and message: subscribers per asset across all pods."""

    assets: dict[str, int]
    pods: int
    ts: int


class HttpError(TypedDict):
    error: ErrorBody


def error_body(code: ErrorCode, message: str) -> ErrorBody:
    return {"code": code.value, "message": message}


def ack_error(error: GatewayError) -> ErrorAck:
    return {"ok": False, "error": error_body(error.code, error.message)}


def refusal(error: GatewayError) -> socketio.exceptions.ConnectionRefusedError:
    """The connect refusal: the client's `err.message` is the code, `err.data` the body."""
    return socketio.exceptions.ConnectionRefusedError(error.code.value, error_body(error.code, error.message))


# A request may name at most this many assets (beyond any catalog we expect).
MAX_ASSETS_PER_REQUEST = 1000


def asset_names(payload: Any, limit: int) -> list[str]:
    """Validate a subscribe/unsubscribe payload: a name or a list of names.

    Raises BAD_REQUEST for anything else, including lists longer than `limit`.
    """
    if isinstance(payload, str):
        payload = [payload]
    if not isinstance(payload, list):
        raise GatewayError(ErrorCode.BAD_REQUEST, "expected an asset name or a list of asset names")
    if not payload:
        raise GatewayError(ErrorCode.BAD_REQUEST, "the list of assets is empty")
    if len(payload) > limit:
        raise GatewayError(ErrorCode.BAD_REQUEST, f"at most {limit} assets per request")
    names: list[str] = []
    for item in payload:
        if not isinstance(item, str) or not 0 < len(item) <= 64:
            raise GatewayError(ErrorCode.BAD_REQUEST, "asset names are non-empty strings of at most 64 characters")
        names.append(item)
    return names


# `maxRate`: price updates per second per asset (SPEC §11).
MIN_RATE = 0.1
MAX_RATE = 1000.0


def parse_rate(value: Any, code: ErrorCode = ErrorCode.BAD_REQUEST) -> float | None:
    """A `maxRate` value: a number MIN_RATE..MAX_RATE, or None (no limit). Raises GatewayError(code) otherwise."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not MIN_RATE <= value <= MAX_RATE:
        raise GatewayError(code, f"maxRate is a number of updates per second, {MIN_RATE:g}..{MAX_RATE:g}, "
                                 "or null for every tick")
    return round(float(value), 3)


def grant_rate(*limits: float | None) -> float | None:
    """The least of the limits that are set (the request, the token's claim, the server's cap); None if none is."""
    present = [limit for limit in limits if limit is not None]
    return min(present) if present else None


def subscribe_request(payload: Any, limit: int) -> tuple[list[str], float | None]:
    """A `price:subscribe` payload: a name, a list of names, or `{"assets": [...], "maxRate": N}`.

    Returns the names and the requested rate (None: no limit asked). Raises BAD_REQUEST for anything else.
    """
    if not isinstance(payload, dict):
        return asset_names(payload, limit), None
    unknown = set(payload) - {"assets", "maxRate"}
    if unknown or "assets" not in payload:
        raise GatewayError(ErrorCode.BAD_REQUEST, 'expected {"assets": [...], "maxRate": N}')
    return asset_names(payload["assets"], limit), parse_rate(payload.get("maxRate"))
