"""The memory of verified tokens (clients/tokens.py), and the verifier using it."""

from __future__ import annotations

import pytest

from realtime.clients.auth import TokenVerifier
from realtime.clients.tokens import VerifiedTokens
from realtime.config import Settings
from realtime.principal import Principal
from realtime.protocol import ErrorCode, GatewayError
from tests.support import SECRET, token


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_verified_token_is_remembered_until_exp_plus_leeway() -> None:
    clock = Clock()
    tokens = VerifiedTokens(10, clock=clock)
    alice = Principal("alice", exp=int(clock.now) + 60)
    tokens.put("t1", alice)
    assert tokens.get("t1") is alice
    clock.now += 69
    assert tokens.get("t1") is alice
    clock.now += 1  # exp + leeway: expired by the verifier's own rule
    with pytest.raises(GatewayError) as refused:
        tokens.get("t1")
    assert refused.value.code is ErrorCode.AUTH_EXPIRED
    assert tokens.get("t1") is None and len(tokens) == 0


def test_the_memory_is_bounded_in_entries_and_bytes_oldest_first() -> None:
    tokens = VerifiedTokens(0, max_entries=3, max_bytes=10, clock=Clock())
    for name in ("a", "b", "c", "d"):
        tokens.put(name, Principal(name))
    assert [t for t in "abcd" if tokens.get(t) is not None] == ["b", "c", "d"]
    tokens.put("x" * 8, Principal("x"))  # 3 + 8 bytes > 10: the oldest go until it fits
    assert len(tokens) == 3 and tokens.get("b") is None and tokens.get("x" * 8) is not None
    tokens.put("y" * 11, Principal("y"))  # larger than the whole memory: never kept
    assert tokens.get("y" * 11) is None


def test_the_verifier_checks_a_token_once_and_refusals_every_time() -> None:
    verifier = TokenVerifier(Settings(jwt_secret=SECRET))
    good = token("alice", roles=["trader"])
    first = verifier.verify(good)
    assert verifier.verify(good) is first and verifier.verified.hits == 1
    bad = good[:-2] + ("AA" if not good.endswith("AA") else "BB")
    for _ in range(2):
        with pytest.raises(GatewayError) as refused:
            verifier.verify(bad)
        assert refused.value.code is ErrorCode.AUTH_INVALID
    assert len(verifier.verified) == 1


def test_the_verifier_remembers_with_its_own_leeway() -> None:
    assert TokenVerifier(Settings(jwt_secret=SECRET, jwt_leeway=3)).verified.leeway == 3
