"""What a client's request may say: the assets it names and the `maxRate` it asks for (SPEC §2, §11).

Read by the price and rate events (`clients.prices`, `clients.rates`) and the
token's `maxRate` claim (`clients.auth`); a payload of any other shape raises
`GatewayError` (BAD_REQUEST unless the caller names another code).
"""

from __future__ import annotations

from typing import Any

from realtime.protocol import MAX_RATE, MIN_RATE, ErrorCode, GatewayError

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
