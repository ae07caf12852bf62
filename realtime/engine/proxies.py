"""Who is asking: the client address behind trusted proxies.

Per-address limits key on it and Engine.IO's `REMOTE_ADDR` carries it. The
peer is believed as it is unless it is one of `REALTIME_TRUSTED_PROXIES`; then
the right-most hop of `X-Forwarded-For` that is not a trusted proxy is the
client (what a client writes into the header itself sits further left, so it
cannot pass for another address).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable

from aiohttp import web

# Answers remembered per address string: parsing an address costs more than the rest of a lookup.
REMEMBERED_ADDRESSES = 4096


class Networks:
    """A set of IP networks (`10.0.0.0/8`, `::1`) that answers `address in networks`."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.networks = [ipaddress.ip_network(entry, strict=False) for entry in entries]
        self._answers: dict[str, bool] = {}

    def __contains__(self, address: str) -> bool:
        answer = self._answers.get(address)
        if answer is None:
            try:
                ip = ipaddress.ip_address(address)
            except ValueError:
                answer = False
            else:
                answer = any(ip in network for network in self.networks)
            if len(self._answers) >= REMEMBERED_ADDRESSES:
                self._answers.clear()
            self._answers[address] = answer
        return answer


def client_address(request: web.Request, trusted: Networks) -> str:
    """The peer, or the right-most untrusted hop of X-Forwarded-For behind trusted proxies."""
    peer = request.remote or ""
    if peer not in trusted:
        return peer
    hops = [hop.strip() for hop in request.headers.get("X-Forwarded-For", "").split(",") if hop.strip()]
    for hop in reversed(hops):
        if hop not in trusted:
            return hop
    return hops[0] if hops else peer


def address_of(trusted_proxies: Iterable[str]) -> Callable[[web.Request], str]:
    """`client_address` bound to the trusted proxies."""
    trusted = Networks(trusted_proxies)
    return lambda request: client_address(request, trusted)
