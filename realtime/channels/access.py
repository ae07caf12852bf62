"""Who may subscribe to a channel (SPEC §10), asked in order.

1. the channel's namespace is in `REALTIME_PUBLIC_CHANNELS`;
2. the token's `channels` claim lists the name or a `*` pattern covering it;
3. `REALTIME_SUBSCRIBE_HOOK` answers allow (a failing hook: UNAVAILABLE).
Otherwise FORBIDDEN. A reserved namespace is refused before any of them.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import jwt
from prometheus_client import CollectorRegistry

from realtime.channels import names
from realtime.channels.hook import AUDIENCE, SubscribeHook
from realtime.config import Settings
from realtime.principal import Principal
from realtime.protocol import ErrorCode, GatewayError

SERVICE_ROLE = "service"
TOKEN_TTL = 60


def channel_access(settings: Settings, dev_secret: str | None, registry: CollectorRegistry) -> ChannelAccess:
    """The access rules of the settings; the hook's service JWT signed with its secret (else the JWT secret,
    else `dev_secret`, dev mode's)."""
    hook = None
    if settings.subscribe_hook:
        secret = settings.subscribe_hook_secret or settings.jwt_secret or dev_secret
        assert secret is not None  # config refuses a hook without a secret
        hook = SubscribeHook(settings.subscribe_hook, service_token(secret, settings.instance_id),
                             timeout=settings.subscribe_hook_timeout, default_ttl=settings.subscribe_hook_ttl,
                             cache_size=settings.subscribe_hook_cache, breaker=settings.subscribe_hook_breaker,
                             registry=registry)
    return ChannelAccess(frozenset(settings.public_channels), hook)


def service_token(secret: str, instance: str) -> Callable[[], str]:
    """A minute-long service JWT for the hook, signed again when half of it is spent."""
    minted = ("", 0.0)

    def current() -> str:
        nonlocal minted
        token, until = minted
        if time.time() >= until:
            token = jwt.encode({"sub": instance, "roles": [SERVICE_ROLE], "aud": AUDIENCE,
                                "iat": int(time.time()), "exp": int(time.time()) + TOKEN_TTL}, secret)
            minted = (token, time.time() + TOKEN_TTL / 2)
        return token

    return current


class ChannelAccess:
    def __init__(self, public: frozenset[str], hook: SubscribeHook | None) -> None:
        self.public = public
        self.hook = hook

    async def check(self, principal: Principal, channel: str) -> None:
        """Return if `principal` may subscribe to `channel` (a valid name); else GatewayError."""
        names.channel(channel)
        if names.namespace(channel) in self.public:
            return
        if principal.sub is None:
            raise GatewayError(ErrorCode.FORBIDDEN, f"channel {channel!r} needs a signed-in user")
        if names.granted(principal.channels, channel):
            return
        if self.hook is not None and await self.hook.allows(principal.sub, principal.roles, channel):
            return
        raise GatewayError(ErrorCode.FORBIDDEN, f"not allowed to subscribe to {channel!r}")

    async def close(self) -> None:
        if self.hook is not None:
            await self.hook.close()
