"""Channels (SPEC §10) with the node socket.io-client on two pods behind nginx.

Who may subscribe (public namespaces, the token's claim, the customer's
subscribe hook, with its denials, failures, timeout, cache and breaker),
channel events from the API and the events stream to every subscriber once,
in order, with offsets, recovery after a dropped transport, and a recovery
after access was withdrawn.
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis

from realtime.events import offsets
from tests.support import ClusterFactory, free_port, sample, scrape, token
from tests.support.channels import ChannelClient, channel_client, publish, subscribe_hook


def refused(ack: dict[str, Any]) -> str:
    assert ack["ok"] is False, ack
    code: str = ack["error"]["code"]
    return code


async def subscribe(client: ChannelClient, channel: str) -> dict[str, Any]:
    return await client.emit("channel:subscribe", {"channel": channel})


async def test_the_claim_public_namespaces_and_the_hook_allow_what_they_should(start_cluster: ClusterFactory) -> None:
    async with subscribe_hook() as hook:
        hook.rules.update({"bot:7": "allow", "bot:8": "deny", "bot:500": "error", "bot:slow": "slow",
                           "bot:9": "allow", "bot:10": "allow", "bot:11": "allow"})
        cluster = start_cluster(2, subscribe_hook=hook.url, public_channels="announcements,news",
                                subscribe_hook_timeout=0.5, subscribe_hook_breaker=1.5, max_channels=8)
        async with channel_client(cluster.url, "alice", channels=["bot:42:*", "desk:fx"]) as alice:
            # Public namespaces and the claim: the hook is never asked.
            for channel in ("announcements:all", "news:eu", "bot:42:status", "bot:42:trades", "desk:fx"):
                assert await subscribe(alice, channel) == {"ok": True, "channel": channel}
            assert sum(hook.calls.values()) == 0
            # The claim names exactly what it names; the rest goes to the hook, which denies by default.
            assert refused(await subscribe(alice, "desk:fxx")) == "FORBIDDEN"
            assert refused(await subscribe(alice, "bot:43:status")) == "FORBIDDEN"
            assert hook.calls["desk:fxx"] == 1 and hook.calls["bot:43:status"] == 1
            # The hook allows; its answer is cached (one call for two subscribes), and so is a denial.
            assert await subscribe(alice, "bot:7") == {"ok": True, "channel": "bot:7"}
            assert (await alice.emit("channel:unsubscribe", {"channel": "bot:7"}))["ok"] is True
            assert (await subscribe(alice, "bot:7"))["ok"] is True
            assert refused(await subscribe(alice, "bot:8")) == "FORBIDDEN"
            assert refused(await subscribe(alice, "bot:8")) == "FORBIDDEN"
            assert hook.calls["bot:7"] == 1 and hook.calls["bot:8"] == 1
            assert hook.questions[-1] == {"sub": "alice", "roles": [], "channel": "bot:8"}
            # A failing hook is UNAVAILABLE, never an allow; then the breaker spares it for a while.
            assert refused(await subscribe(alice, "bot:500")) == "UNAVAILABLE"
            assert refused(await subscribe(alice, "bot:9")) == "UNAVAILABLE"
            assert hook.calls["bot:9"] == 0
            assert (await subscribe(alice, "bot:7"))["ok"] is True  # cached answers still count
            await asyncio.sleep(1.6)
            assert (await subscribe(alice, "bot:9"))["ok"] is True
            # A slow hook times out: UNAVAILABLE, not an allow.
            assert refused(await subscribe(alice, "bot:slow")) == "UNAVAILABLE"
            await asyncio.sleep(1.6)
            # Reserved namespaces and bad names, whatever the claim or the hook would say.
            for channel in ("user:bob", "role:risk", "asset:BTC_USDC_PERP", "book:x", "channel:bot:42"):
                assert refused(await subscribe(alice, channel)) == "FORBIDDEN", channel
            for bad in ("bot", "bot 1:x", ":x", "x:" + "a" * 127, 42, {"channel": "bot:1", "x": 1}):
                ack = await alice.emit("channel:subscribe", bad if not isinstance(bad, str) else {"channel": bad})
                assert refused(ack) == "BAD_REQUEST", bad
            # Eight channels at most: bot:10 is the eighth, bot:11 would be the ninth.
            assert (await subscribe(alice, "bot:10"))["ok"] is True
            assert refused(await subscribe(alice, "bot:11")) == "TOO_MANY_SUBSCRIPTIONS"
            assert hook.calls["bot:11"] == 0
        # Anonymous users are not in the hook's business; bob without a claim only gets public ones.
        async with channel_client(cluster.url, "bob") as bob:
            assert (await subscribe(bob, "announcements:all"))["ok"] is True
            assert refused(await subscribe(bob, "bot:42:status")) == "FORBIDDEN"
            assert hook.questions[-1]["sub"] == "bob"
        # The hook's metrics, summed over the pods.
        totals = {"calls": 0.0, "allow": 0.0, "deny": 0.0, "timeout": 0.0, "status": 0.0, "breaker": 0.0}
        for pod in cluster.pods:
            samples = await scrape(pod.url)
            totals["calls"] += sample(samples, "realtime_subscribe_hook_calls_total")
            totals["allow"] += sample(samples, "realtime_subscribe_hook_answers_total", answer="allow")
            totals["deny"] += sample(samples, "realtime_subscribe_hook_answers_total", answer="deny")
            for reason in ("timeout", "status", "breaker"):
                totals[reason] += sample(samples, "realtime_subscribe_hook_failures_total", reason=reason)
        assert totals == {"calls": sum(hook.calls.values()), "allow": 3, "deny": 4, "timeout": 1, "status": 1,
                          "breaker": 1}, (totals, hook.calls)


async def test_channel_events_reach_every_subscriber_once_in_order_and_are_recovered(
        start_cluster: ClusterFactory) -> None:
    stream = f"events-{free_port()}"  # its own: a new consumer group routes a stream from its start
    cluster = start_cluster(2, events_stream=stream)
    redis = aioredis.Redis.from_url(cluster.redis.url)
    sent: list[int] = []

    async def send(n: int) -> None:
        # Alternately through each pod's API and through the events stream.
        if n % 3 == 2:
            await redis.xadd(stream, {"event": "bot:trade", "room": "channel:bot:42",
                                                 "data": f'{{"n": {n}}}'})
        else:
            await publish(cluster.pods[n % 2].url, "bot:trade", {"n": n}, room="channel:bot:42")
        sent.append(n)

    def trades(client: ChannelClient) -> list[tuple[int, str]]:
        return [(args[0]["n"], args[1]) for args in client.events("bot:trade")]

    try:
        async with (channel_client(cluster.url, "alice", channels=["bot:42"]) as alice,
                    channel_client(cluster.url, "bob", channels=["bot:*"]) as bob,
                    channel_client(cluster.url, "carol") as carol):
            for client in (alice, bob):
                assert (await subscribe(client, "bot:42"))["ok"] is True
            assert refused(await subscribe(carol, "bot:42")) == "FORBIDDEN"
            for n in range(1, 13):
                await send(n)
            for client in (alice, bob):
                await client.wait(lambda c=client: len(trades(c)) == 12)
            # Bob drops; what is sent meanwhile reaches him when he comes back, once, in order.
            await bob.drop()
            for n in range(13, 25):
                await send(n)
            connect = await bob.reconnect()
            assert connect["recovered"] is True, bob.lines[-5:]
            for n in range(25, 31):
                await send(n)
            for client in (alice, bob):
                await client.wait(lambda c=client: len(trades(c)) >= 30)
            await asyncio.sleep(0.3)  # nothing more comes
            for client in (alice, bob):
                seen = trades(client)
                assert sorted(n for n, _ in seen) == sent, seen
                # The log's order: each way in keeps its own order (the stream's entries are routed
                # a moment after their XADD, so they may land after an API publish sent later).
                for way in (0, 1, 2):
                    assert [n for n, _ in seen if n % 3 == way] == [n for n in sent if n % 3 == way], seen
                keys = [offsets.key(offset) for _, offset in seen]
                assert keys == sorted(keys) and len(set(keys)) == len(keys)
            assert trades(alice) == trades(bob)  # the same offset for every recipient
            assert carol.events("bot:trade") == []
    finally:
        await redis.aclose()


async def test_a_recovery_after_access_was_withdrawn_closes_the_channel(start_cluster: ClusterFactory) -> None:
    async with subscribe_hook() as hook:
        hook.rules.update({"bot:1": "allow-nocache", "bot:2": "allow-nocache"})
        cluster = start_cluster(2, subscribe_hook=hook.url)
        async with channel_client(cluster.url, "alice", channels=["desk:*"]) as alice:
            for channel in ("bot:1", "bot:2", "desk:fx"):
                assert (await subscribe(alice, channel))["ok"] is True
            await publish(cluster.pods[0].url, "bot:log", {"n": 1}, room="channel:bot:1")
            await alice.until("event", lambda line: line["event"] == "bot:log")
            # Access to bot:1 is withdrawn at the back end, and the desk claim with a new token.
            await alice.drop()
            hook.rules["bot:1"] = "deny"
            await alice.session.send({"cmd": "token", "token": token("alice")})
            connect = await alice.reconnect()
            assert connect["recovered"] is True
            await alice.wait(lambda: len(alice.events("channel:closed")) == 2)
            closed = sorted((args[0]["channel"], args[0]["code"]) for args in alice.events("channel:closed"))
            assert closed == [("bot:1", "FORBIDDEN"), ("desk:fx", "FORBIDDEN")]
            # No further events of the closed channels; bot:2 (still allowed) goes on.
            for room in ("channel:bot:1", "channel:desk:fx", "channel:bot:2"):
                await publish(cluster.pods[0].url, "bot:log", {"n": 2, "room": room}, room=room)
            await alice.until("event", lambda line: line["event"] == "bot:log" and line["args"][0]["n"] == 2)
            await asyncio.sleep(0.3)
            later = [args[0] for args in alice.events("bot:log") if args[0]["n"] == 2]
            assert later == [{"n": 2, "room": "channel:bot:2"}]
            # Subscribing again asks again: still refused.
            assert refused(await subscribe(alice, "bot:1")) == "FORBIDDEN"



async def test_a_refreshed_token_without_the_claim_closes_the_channel(start_cluster: ClusterFactory) -> None:
    cluster = start_cluster(2)
    async with channel_client(cluster.url, "alice", channels=["desk:*", "bot:1"]) as alice:
        for channel in ("desk:fx", "bot:1"):
            assert (await subscribe(alice, channel))["ok"] is True
        assert (await alice.emit("state:subscribe", {"name": "book", "channel": "desk:fx"}))["ok"] is True
        ack = await alice.emit("auth:refresh", {"token": token("alice", channels=["bot:1"])})
        assert ack["ok"] is True, ack
        assert alice.events("channel:closed") == [[{"channel": "desk:fx", "code": "FORBIDDEN"}]]
        for room in ("channel:desk:fx", "channel:bot:1"):
            await publish(cluster.pods[0].url, "desk:quote", {"room": room}, room=room)
        await alice.until("event", lambda line: line["event"] == "desk:quote")
        await asyncio.sleep(0.3)
        assert [args[0] for args in alice.events("desk:quote")] == [{"room": "channel:bot:1"}]
        # The session follows: a recovery restores bot:1 only, and closes nothing more.
        await alice.drop()
        assert (await alice.reconnect())["recovered"] is True
        await publish(cluster.pods[0].url, "desk:quote", {"n": 2}, room="channel:bot:1")
        await alice.until("event", lambda line: line["event"] == "desk:quote" and line["args"][0] == {"n": 2})
        assert len(alice.events("channel:closed")) == 1
