"""A bounded memory of tokens already verified, so a token is checked once per token and expiry.

Verifying an HS256 token costs tens of microseconds (an RS256 one far more),
and a client verifies the same token at every connect and reconnect, on a
pod that may take thousands at once (a reconnect storm). A verified token's
`Principal` is remembered under the token string, which holds the signature
and the claims (`exp` among them), so a changed token is a new key. An
entry is honoured only while the token is valid by the verifier's own rule
(`exp` + leeway); only successful verifications are remembered, so a refused
token is checked again every time. The memory is bounded in entries and in
token bytes, the oldest forgotten first.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from realtime.principal import Principal
from realtime.protocol import ErrorCode, GatewayError

MAX_ENTRIES = 16_384
MAX_TOKEN_BYTES = 8 * 1024 * 1024


class VerifiedTokens:
    """Principals of recently verified tokens, by token string."""

    def __init__(self, leeway: float, *, max_entries: int = MAX_ENTRIES, max_bytes: int = MAX_TOKEN_BYTES,
                 clock: Callable[[], float] = time.time) -> None:
        self.leeway = leeway
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.clock = clock
        self.hits = 0
        self._principals: dict[str, Principal] = {}  # insertion order = age
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._principals)

    def get(self, token: str) -> Principal | None:
        """The principal of `token` if it was verified and has not expired since; AUTH_EXPIRED once it has."""
        principal = self._principals.get(token)
        if principal is None:
            return None
        if principal.exp is not None and self.clock() >= principal.exp + self.leeway:
            self._forget(token)
            raise GatewayError(ErrorCode.AUTH_EXPIRED, "token has expired")
        self.hits += 1
        return principal

    def put(self, token: str, principal: Principal) -> None:
        if token in self._principals or len(token) > self.max_bytes:
            return
        self._principals[token] = principal
        self._bytes += len(token)
        while len(self._principals) > self.max_entries or self._bytes > self.max_bytes:
            self._forget(next(iter(self._principals)))

    def _forget(self, token: str) -> None:
        del self._principals[token]
        self._bytes -= len(token)
