"""What one setting's value may be: the grammars behind the `REALTIME_*` values that are more than a
number or a choice (a comma-separated list, a Redis URL, an HS secret, ...).

Each is an `Annotated` type that `config.Settings` gives its fields; the rules
that tie several settings together stay with the settings. A bad value raises
`ValueError`, which `config.load_settings` turns into one line naming the variable.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator
from pydantic_settings import NoDecode

from realtime.catalog import parse_assets

# RFC 7518 §3.2: an HS256 key must be at least as long as the hash (256 bits).
MIN_SECRET_BYTES = 32
ALGORITHMS = frozenset({"HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "ES512"})
REDIS_SCHEMES = frozenset({"redis", "rediss", "unix", "memory", "redis+cluster"})
# Channel namespaces that name the gateway's own rooms.
RESERVED_NAMESPACES = frozenset({"asset", "user", "role", "book", "channel"})


def split_csv(value: Any) -> Any:
    """`"a, b,,c"` → `["a", "b", "c"]`; anything but a string is left to the field's type."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def catalog(value: str) -> str:
    parse_assets(value)
    return value


def delays(value: list[int]) -> list[int]:
    if any(not 0 <= delay <= 86_400 for delay in value):
        raise ValueError("each delay is 0..86400 seconds")
    return sorted(set(value))


def depths(value: list[int]) -> list[int]:
    if not value or any(not 1 <= depth <= 1000 for depth in value):
        raise ValueError("one or more depths, each 1..1000")
    return sorted(set(value))


def redis_url(value: str | None) -> str | None:
    if value is None or value.strip() == "":
        return None
    scheme = value.split("://", 1)[0].lower() if "://" in value else ""
    if scheme not in REDIS_SCHEMES:
        raise ValueError("expected redis://, rediss://, unix://, redis+cluster://host:port[,host:port...] "
                         "or memory://")
    if scheme == "redis+cluster":
        nodes = [node.strip().rpartition(":") for node in
                 value.split("://", 1)[1].rpartition("@")[2].split("/", 1)[0].split(",")]
        if not all(host and port.isdigit() for host, _, port in nodes):
            raise ValueError("redis+cluster:// needs host:port[,host:port...]")
    return value


def namespaces(value: list[str]) -> list[str]:
    for namespace in value:
        if namespace in RESERVED_NAMESPACES or not all(c.isalnum() or c in "_.-" for c in namespace):
            raise ValueError(f"{namespace!r} is not a channel namespace one may open (A-Z a-z 0-9 _ . -, "
                             f"not {', '.join(sorted(RESERVED_NAMESPACES))})")
    return value


def http_url(value: str | None) -> str | None:
    if value is not None and not value.startswith(("http://", "https://")):
        raise ValueError("expected an http:// or https:// URL")
    return value or None


def secret(value: str | None) -> str | None:
    if value is not None and len(value.encode()) < MIN_SECRET_BYTES:
        raise ValueError(f"an HS secret must be at least {MIN_SECRET_BYTES} bytes, got {len(value.encode())}; "
                         "generate one with `openssl rand -base64 48`")
    return value


def algorithms(value: list[str]) -> list[str]:
    for alg in value:
        if alg not in ALGORITHMS:
            raise ValueError(f"{alg!r} is not accepted; choose from {', '.join(sorted(ALGORITHMS))}")
    return value


# Comma-separated in the environment and on the command line (never JSON).
Strings = Annotated[list[str], NoDecode, BeforeValidator(split_csv)]
Assets = Annotated[str, AfterValidator(catalog)]
Delays = Annotated[list[int], NoDecode, BeforeValidator(split_csv), AfterValidator(delays)]
Depths = Annotated[list[int], NoDecode, BeforeValidator(split_csv), AfterValidator(depths)]
RedisUrl = Annotated[str | None, AfterValidator(redis_url)]
Namespaces = Annotated[list[str], NoDecode, BeforeValidator(split_csv), AfterValidator(namespaces)]
HttpUrl = Annotated[str | None, AfterValidator(http_url)]
Secret = Annotated[str | None, AfterValidator(secret)]
Algorithms = Annotated[list[str], NoDecode, BeforeValidator(split_csv), AfterValidator(algorithms)]
