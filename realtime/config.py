"""Settings: every production knob, read from `REALTIME_*` once and passed down.

Each field is also a `realtime serve` flag (`--redis-url` for `REALTIME_REDIS_URL`);
flags win over the environment. A bad value stops start-up with one line that
names the variable (see `load_settings`). What one value may be is `realtime.values`;
the rules between settings are here (`_consistent`).
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from realtime import values
from realtime.catalog import Asset, parse_assets

ENV_PREFIX = "REALTIME_"
# Values never echoed in a configuration error.
SECRET_FIELDS = frozenset({"jwt_secret", "subscribe_hook_secret"})
DEFAULT_ASSETS = "BTC_USDC_PERP:4,ETH_USDC_PERP:4,SOL_USDC_PERP:4"


class ConfigError(Exception):
    """A setting has a value the gateway cannot run with."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem


class Settings(BaseSettings):
    """The gateway's configuration. Field `x_y` is `REALTIME_X_Y` and `--x-y`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="forbid", frozen=True, validate_default=True
    )

    # Listening.
    host: str = Field("0.0.0.0", description="listen address")
    port: int = Field(7070, ge=0, le=65535, description="listen port (0 = any free port)")
    instance_id: str = Field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}",
        min_length=1, max_length=128, description="name of this pod in /health and acks (default: host-pid)",
    )

    # Redis: unset means embedded mode (in-memory manager, simulated feed).
    redis_url: values.RedisUrl = Field(
        None, description="Redis for the manager and the feed; unset or memory:// = embedded mode"
    )
    manager_channel: str = Field("socketio", min_length=1, description="python-socketio manager channel")
    price_channel: str = Field("exness:price-updates", min_length=1, description="price feed channel")
    price_channels: Literal["single", "per-asset", "both"] = Field(
        "both", description="where to listen for ticks: the price channel, `<channel>:<ASSET>` per asset (on a "
                            "Redis Cluster sharded), or both, which hears a feed of either layout"
    )
    price_linger: float = Field(
        10.0, ge=0, le=3600, description="seconds a pod keeps an asset's channel after its last local subscriber left"
    )
    redis_timeout: float = Field(2.0, gt=0, le=60, description="Redis socket and connect timeout, seconds")
    redis_retry_max: float = Field(5.0, gt=0, le=300, description="longest backoff between Redis reconnects, seconds")

    # Catalog and the embedded simulated feed.
    assets: values.Assets = Field(DEFAULT_ASSETS, description="catalog NAME:DECIMALS,...")
    stale_after: float = Field(
        10.0, gt=0, le=86_400, description="seconds without an accepted tick after which an asset is stale "
                                           "(per asset: NAME:DECIMALS:SECONDS in the catalog)",
    )
    delay_tiers: values.Delays = Field(
        default_factory=lambda: [0, 900],
        description="delays (s) a token's `delay` claim may ask for; other values are refused at connect",
    )
    price_band: float = Field(
        0.1, ge=0, le=100, description="a tick whose mid moves more than this fraction from the last accepted "
                                       "mid is held until a second tick confirms it (0 = off)",
    )
    simulated_rate: float = Field(
        2.0, ge=0, le=10_000, description="embedded mode: simulated ticks per second per asset (0 = off)"
    )

    # Authentication.
    jwt_secret: values.Secret = Field(
        None, description=f"HS256 shared secret, at least {values.MIN_SECRET_BYTES} bytes"
    )
    jwt_public_key_file: str | None = Field(None, description="PEM public key for RS256/ES256")
    jwt_algorithms: values.Algorithms = Field(
        default_factory=list,
        description="accepted JWT algorithms (default: HS256 with a secret, RS256,ES256 with a key)",
    )
    jwt_issuer: str | None = Field(None, description="required `iss` claim, when set")
    jwt_audience: str | None = Field(None, description="required `aud` claim, when set")
    jwt_leeway: float = Field(10.0, ge=0, le=300, description="clock skew allowed on exp/nbf/iat, seconds")
    dev: bool = Field(
        False, description="dev mode with Redis: no JWT key, tokens signed with a per-process secret and handed "
                           "to anyone at /board/token (embedded mode without a key is always dev mode)",
    )
    allow_anonymous: bool = Field(False, description="accept connections without a token (public prices only)")
    jwt_max_bytes: int = Field(4096, ge=256, le=65536, description="longest token accepted, bytes")
    auth_expiry_notice: float = Field(
        60.0, ge=0, le=3600, description="seconds before a token expires that `auth:expiring` is sent"
    )

    # Socket.IO / Engine.IO.
    cors_origins: values.Strings = Field(
        default_factory=list, description="allowed origins, comma-separated ('*' = any; empty = same origin only)"
    )
    serializer: Literal["json", "msgpack"] = Field("json", description="Socket.IO packet serializer")
    ping_interval: float = Field(25.0, gt=0, le=600, description="Engine.IO ping interval, seconds")
    ping_timeout: float = Field(20.0, gt=0, le=600, description="Engine.IO ping timeout, seconds")
    websocket_compression: bool = Field(
        False, description="offer permessage-deflate (costs ~60% CPU per message and ~100 KB per connection)"
    )
    max_message_bytes: int = Field(
        64 * 1024, ge=1024, le=16 * 1024 * 1024, description="largest inbound Engine.IO message, bytes"
    )
    engine: Literal["lean", "stock"] = Field(
        "lean", description="websocket engine: lean (the gateway owns the socket after the upgrade) "
                            "or stock (python-engineio's; a diagnostic, for comparison and as a fallback)"
    )

    # Send path.
    fanout: Literal["direct", "stock"] = Field(
        "direct", description="price fan-out: frame once and write to every websocket (direct), "
                              "or python-socketio's emit (stock: a diagnostic, for comparison only)"
    )
    slow_consumer_bytes: int = Field(
        64 * 1024, ge=1024, description="queued bytes past which a connection's queued price ticks "
                                        "collapse to the newest per asset"
    )
    slow_consumer_max_bytes: int = Field(
        1024 * 1024, ge=4096, description="queued bytes past which a connection is cut as a slow consumer"
    )

    # The price board at GET /.
    client_bundle_dir: str | None = Field(
        None, description="directory with socket.io-client's dist bundles for the price board (default: the copy "
                          "built into the package, else node_modules/socket.io-client/dist in the checkout)",
    )

    # Limits.
    max_subscriptions: int = Field(100, ge=1, le=100_000, description="assets one connection may subscribe to")
    max_connections: int = Field(
        50_000, ge=1, description="Engine.IO sessions one pod holds, authenticated or not, with the connections "
                                  "still sending a request head (503 past it)"
    )
    max_connections_per_user: int = Field(
        0, ge=0, le=10_000,
        description="connections one user may hold across all pods; past it the oldest is closed (0 = no cap)",
    )
    event_rate: float = Field(
        10.0, ge=0, le=100_000, description="client events per second per connection, sustained (0 = unlimited)"
    )
    event_burst: int = Field(50, ge=1, le=100_000, description="client events one connection may send at once")
    event_abuse_limit: int = Field(
        100, ge=0, le=1_000_000,
        description="refused events a connection may pile up beyond its rate before it is cut (0 = never cut)",
    )
    event_abuse_window: float = Field(
        10.0, ge=0, le=3600,
        description="seconds a connection must keep sending past its abuse limit before it is cut (a burst is not)",
    )
    connect_rate: float = Field(
        10.0, ge=0, le=100_000, description="new connections per second per client address, sustained (0 = unlimited)"
    )
    connect_burst: int = Field(60, ge=1, le=100_000, description="new connections one client address may open at once")
    connect_addresses: int = Field(
        100_000, ge=100, le=10_000_000,
        description="client addresses the connection rate remembers; past it idle ones, then the oldest, are forgotten",
    )
    connect_timeout: float = Field(
        10.0, gt=0, le=600,
        description="seconds an Engine.IO session may stay without a successful Socket.IO CONNECT before it is closed",
    )
    connect_attempts: int = Field(
        3, ge=1, le=100, description="CONNECT packets one Engine.IO session may send; past it the session is closed"
    )
    trusted_proxies: values.Strings = Field(
        default_factory=lambda: ["127.0.0.1", "::1"],
        description="peers whose X-Forwarded-For is believed",
    )

    # HTTP connections (realtime.engine.heads): slowloris heads are cut and counted, idle ones closed.
    header_timeout: float = Field(
        5.0, gt=0, le=300,
        description="seconds a connection has to send a whole HTTP request head (from the moment it opens, or from "
                    "the first byte of a later request); past it 408 and close",
    )
    keepalive_timeout: float = Field(
        75.0, gt=0, le=3600,
        description="seconds an idle HTTP keep-alive connection (between two requests) is kept open; above the "
                    "proxy's own idle timeout (nginx's upstream keepalive_timeout: 60 s), so the proxy closes first",
    )

    # Demand signal: subscribers per asset across all pods.
    demand_interval: float = Field(
        2.0, ge=0.1, le=300, description="seconds between writes of this pod's subscriber counts to the demand store"
    )
    demand_key: str = Field(
        "realtime:demand", min_length=1, max_length=200,
        description="Redis key prefix (and channel) of the demand signal",
    )

    # Connection state recovery and durable private events (realtime.events).
    recovery_window: float = Field(
        120.0, ge=0, le=86_400,
        description="seconds a dropped session stays recoverable, with the private events it missed (0 = off)",
    )
    events_stream: str = Field(
        "realtime:events", min_length=1, max_length=200,
        description="Redis Stream of private events that back ends append (XADD) for the gateway to route",
    )

    # One Redis namespace for every key and channel the gateway owns (realtime.namespace, docs/redis.md).
    namespace: str | None = Field(
        None, min_length=1, max_length=100, pattern=r"^[^{}\s]+$",
        description="prefix of every Redis key and channel the gateway owns (unset: the names derived from "
                    "REALTIME_MANAGER_CHANNEL, REALTIME_PRICE_CHANNEL and REALTIME_DEMAND_KEY)",
    )

    # How fast a client is fed (SPEC §11, docs/rates.md).
    max_rate: float | None = Field(
        None, ge=0.1, le=1000, description="price updates per second per asset any connection gets at most "
                                           "(unset: no cap; a token's maxRate claim and the request may lower it)",
    )
    overload_lag: float = Field(
        100.0, ge=0, le=60_000, description="event-loop lag, or lag behind the feed, (ms) past which the pod "
                                            "lowers every connection's price rate evenly until it recovers (0 = off)",
    )

    # Order books (realtime.books).
    book_depths: values.Depths = Field(
        default_factory=lambda: [10, 20, 50], description="depths a client may ask `book:subscribe` for",
    )
    book_interval: int = Field(
        100, ge=10, le=10_000, description="ms between two `book:update` of one asset and depth (changes in between "
                                           "are conflated)",
    )

    # Trades and candles (realtime.trades).
    trades_history: int = Field(
        100, ge=1, le=10_000, description="trades kept per asset: the most `trades:subscribe` may ask for",
    )
    candles_history: int = Field(
        500, ge=1, le=10_000, description="closed candles kept per asset and interval: the most "
                                          "`candles:subscribe` may ask for",
    )

    # Channels and keyed state (SPEC §10; realtime.channels, realtime.events.state).
    public_channels: values.Namespaces = Field(
        default_factory=list, description="channel namespaces anyone may subscribe to (e.g. announcements)",
    )
    max_channels: int = Field(
        100, ge=1, le=10_000, description="channels one connection may subscribe to, and as many states",
    )
    subscribe_hook: values.HttpUrl = Field(
        None, description="URL the gateway POSTs {sub, roles, channel} to, to ask whether a user may subscribe",
    )
    subscribe_hook_secret: values.Secret = Field(
        None, description="HS256 secret of the service JWT sent to the subscribe hook (default: REALTIME_JWT_SECRET)",
    )
    subscribe_hook_timeout: float = Field(2.0, gt=0, le=60, description="seconds the subscribe hook may take")
    subscribe_hook_ttl: float = Field(
        60.0, ge=0, le=86_400, description="seconds an answer of the subscribe hook without a ttl is cached",
    )
    subscribe_hook_cache: int = Field(
        100_000, ge=0, le=10_000_000, description="answers of the subscribe hook kept (user and channel pairs)",
    )
    subscribe_hook_breaker: float = Field(
        5.0, ge=0, le=3600, description="seconds the subscribe hook is not called after it failed (0 = always)",
    )
    state_max_keys: int = Field(1000, ge=1, le=1_000_000, description="keys one keyed state may hold")
    state_max_value_bytes: int = Field(
        4096, ge=16, le=1024 * 1024, description="JSON bytes of one value of a keyed state",
    )
    state_replay: int = Field(
        1000, ge=0, le=5000,
        description="missed updates of one state a recovery replays; past it the client gets state:snapshot",
    )

    # Lifecycle and logs.
    shutdown_grace: float = Field(10.0, ge=0, le=600, description="seconds SIGTERM waits for clients to leave")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="log level")
    log_format: Literal["text", "json"] = Field("text", description="log line format")

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.jwt_secret is not None and self.jwt_public_key_file is not None:
            raise ValueError("set REALTIME_JWT_SECRET or REALTIME_JWT_PUBLIC_KEY_FILE, not both")
        if self.jwt_public_key_file and any(a.startswith("HS") for a in self.jwt_algorithms):
            raise ValueError("REALTIME_JWT_ALGORITHMS: HS* cannot be used with a public key")
        if self.jwt_secret is not None and any(not a.startswith("HS") for a in self.jwt_algorithms):
            raise ValueError("REALTIME_JWT_ALGORITHMS: only HS* can be used with a shared secret")
        if self.dev and self.has_key:
            raise ValueError("REALTIME_DEV: dev mode signs its own tokens and hands them out; "
                             "unset REALTIME_JWT_SECRET / REALTIME_JWT_PUBLIC_KEY_FILE, or REALTIME_DEV")
        if self.subscribe_hook and not (self.subscribe_hook_secret or self.jwt_secret or self.dev_mode):
            raise ValueError("REALTIME_SUBSCRIBE_HOOK: set REALTIME_SUBSCRIBE_HOOK_SECRET (or REALTIME_JWT_SECRET) "
                             "to sign the service JWT the hook receives")
        if self.slow_consumer_max_bytes <= self.slow_consumer_bytes:
            raise ValueError("REALTIME_SLOW_CONSUMER_MAX_BYTES must be above REALTIME_SLOW_CONSUMER_BYTES")
        return self

    # Derived views, so callers never re-parse.

    @property
    def embedded(self) -> bool:
        """No Redis: in-memory manager and the built-in simulated feed."""
        return self.redis_url is None or self.redis_url.startswith("memory://")

    @property
    def catalog(self) -> tuple[Asset, ...]:
        return parse_assets(self.assets)

    @property
    def has_key(self) -> bool:
        """A JWT key is configured (a shared secret or a public key file)."""
        return self.jwt_secret is not None or self.jwt_public_key_file is not None

    @property
    def dev_mode(self) -> bool:
        """No JWT key, and embedded or REALTIME_DEV: tokens are signed with a per-process random secret.

        Only dev mode serves `/board/token`. Redis mode without a key is refused
        by `check_serving`; were it let through, it would accept no token at all.
        """
        return not self.has_key and (self.embedded or self.dev)


def variable_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


def flag_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def load_settings(overrides: Mapping[str, Any] | None = None) -> Settings:
    """Build settings from the environment, with `overrides` (CLI flags) on top.

    Raises `ConfigError` naming the first offending variable.
    """
    try:
        return Settings(**{k: v for k, v in (overrides or {}).items() if v is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = [str(part) for part in first.get("loc", ()) if part != "__root__"]
        message = first.get("msg", "invalid value").removeprefix("Value error, ")
        if loc:
            field = loc[0]
            raw = first.get("input")
            shown = (f" (got {raw!r})" if isinstance(raw, (str, int, float)) and len(str(raw)) < 80
                     and field not in SECRET_FIELDS else "")
            raise ConfigError(f"{variable_name(field)} ({flag_name(field)})", message + shown) from None
        raise ConfigError("configuration", message) from None


def check_serving(settings: Settings) -> None:
    """What `realtime serve` needs beyond valid values: a JWT key in Redis mode, unless REALTIME_DEV.

    `feed` and `bench` share the settings but verify no tokens, so this is not
    part of the model. Raises `ConfigError` naming the variables.
    """
    if not settings.embedded and not settings.has_key and not settings.dev:
        raise ConfigError("REALTIME_JWT_SECRET or REALTIME_JWT_PUBLIC_KEY_FILE",
                          "Redis mode needs a JWT key to verify tokens: set one "
                          "(or REALTIME_DEV=true for a development gateway that hands out its own tokens)")


def dev_secret() -> str:
    """A per-process signing secret for dev mode: tokens never outlive the process."""
    return secrets.token_urlsafe(32)
