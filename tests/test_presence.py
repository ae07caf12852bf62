"""Presence: the per-user connection cap, in memory and through a real embedded gateway."""

from __future__ import annotations

from realtime.cluster.presence import MemoryPresence, Slot
from tests.support import InProcessFactory, connected, eventually, token


async def test_memory_presence_names_the_oldest_past_the_cap() -> None:
    presence = MemoryPresence(cap=2, pod="pod")
    assert await presence.admit("alice", "a1") == []
    assert await presence.admit("alice", "a2") == []
    assert await presence.admit("bob", "b1") == []
    assert await presence.admit("alice", "a3") == [Slot("pod", "a1")]
    await presence.leave("alice", "a2")
    await presence.leave("alice", "a2")  # twice is harmless
    assert await presence.admit("alice", "a4") == []
    assert await presence.admit("alice", "a5") == [Slot("pod", "a3")]
    await presence.stop()
    assert await presence.admit("alice", "a6") == []


async def test_no_cap_counts_nothing() -> None:
    presence = MemoryPresence(cap=0, pod="pod")
    assert [await presence.admit("alice", f"a{i}") for i in range(100)] == [[]] * 100


async def test_embedded_gateway_closes_the_oldest_with_a_reason(start_gateway: InProcessFactory) -> None:
    gateway = await start_gateway(max_connections_per_user=1)
    async with connected(gateway.url, auth={"token": token("alice")}) as old:
        async with connected(gateway.url, auth={"token": token("alice")}, transports=["polling"]) as new:
            reason = await old.wait_for("session:closed", timeout=10)
            assert reason == [{"code": "TOO_MANY_CONNECTIONS",
                               "message": "at most 1 connections per user: this one, the oldest, is closed"}]
            await eventually(lambda: not old.client.connected, timeout=10)
            assert new.client.connected
            assert (await new.call("price:subscribe", ["BTC_USDC_PERP"]))["ok"] is True
