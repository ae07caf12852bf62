"""Tokens the test gateways accept: HS256 JWTs signed with the test secret."""

from __future__ import annotations

from realtime.clients.auth import mint_token

SECRET = "test-secret-that-is-long-enough-for-hs256"


def token(sub: str = "alice", *, roles: list[str] | None = None, assets: list[str] | None = None,
          ttl: int = 3600, secret: str = SECRET, delay: int | None = None, max_rate: float | None = None,
          channels: list[str] | None = None) -> str:
    """A signed token for `sub` (on the delayed tier `delay`, if given); every gateway the tests start verifies
    with `SECRET`."""
    return mint_token(secret, sub, roles=roles or [], assets=assets, ttl=ttl, delay=delay, max_rate=max_rate,
                      channels=channels)
