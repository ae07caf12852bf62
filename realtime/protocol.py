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

# Trades and candles (SPEC §9): client -> server and server -> client.
TRADES_SUBSCRIBE = "trades:subscribe"
TRADES_UNSUBSCRIBE = "trades:unsubscribe"
CANDLES_SUBSCRIBE = "candles:subscribe"
CANDLES_UNSUBSCRIBE = "candles:unsubscribe"
TRADE = "trade"
CANDLE = "candle"
FEED_TRADE = "trade"

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


class TradeEvent(TypedDict):
    """`trade`: prices and quantities are the feed's decimal strings, `ts` in ms."""

    asset: str
    id: str
    price: str
    qty: str
    side: str
    ts: int


class CandleEvent(TypedDict):
    """`candle`: `t` the interval's start (ms); prices and `v` decimal strings; `n` trades (or ticks)."""

    asset: str
    interval: str
    t: int
    o: str
    h: str
    l: str  # noqa: E741
    c: str
    v: str
    n: int
    closed: bool


class TradesAck(TypedDict):
    ok: bool
    asset: str
    trades: list[TradeEvent]


class CandlesAck(TypedDict):
    ok: bool
    asset: str
    interval: str
    candles: list[CandleEvent]


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


# `maxRate`: price updates per second per asset (SPEC §11).
MIN_RATE = 0.1
MAX_RATE = 1000.0
