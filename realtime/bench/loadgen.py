"""The load-generator worker: many real Engine.IO v4 websocket clients in one process.

Run as `python -m realtime.bench.loadgen`; it takes one JSON command per line
on stdin and answers one JSON line on stdout (see `Worker.handle`). Each
client speaks the real protocol — HTTP upgrade, Engine.IO open, Socket.IO
CONNECT with `{"token": ...}`, `price:subscribe` with an ack, pong to every
ping — but parses no more than it must: for a `price:update` (or a
`book:update`, whose `seq` is the newest change's) it only finds `"seq":`
(the ticker's publish time in µs) and records the latency. Clients may
subscribe to books instead (`book:subscribe`, one event per asset). A
python-socketio client would be the bottleneck long before the server.

Like socket.io-client, a client keeps the `pid` of its CONNECT reply and the
last argument of any other event when it is a string (its offset); in a
recovering storm it sends them beside its token, and it is back once the
server answers with the same pid and sends the latest price of its assets
(a client that is not recovered subscribes again, as an app would).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
import time
from collections import Counter
from typing import Any, cast

import orjson

from realtime.bench.latency import Histogram
from realtime.clients.auth import mint_token

PRICE_UPDATE = b'42["price:update"'
BOOK_UPDATE = b'42["book:update"'
SEQ = re.compile(rb'"seq":(\d+)')
# A private event the rates bench publishes to a client's user room, stamped with its publish time in µs.
PRIVATE = b'42["bench:private"'
SENT = re.compile(rb'"sent":(\d+)')
# RFC 6455 wants client frames masked; an all-zero key leaves the payload as it is.
ZERO_MASK = b"\x00\x00\x00\x00"
PONG = b"\x81\x81" + ZERO_MASK + b"3"


def client_frame(payload: bytes) -> bytes:
    """A masked text frame holding `payload`."""
    size = len(payload)
    if size < 126:
        head = bytes((0x81, 0x80 | size))
    elif size < 65536:
        head = bytes((0x81, 0xFE)) + size.to_bytes(2, "big")
    else:
        head = bytes((0x81, 0xFF)) + size.to_bytes(8, "big")
    return head + ZERO_MASK + payload


class Tally:
    """What this worker's clients received since the last `start`."""

    def __init__(self) -> None:
        self.since_us = 0
        self.histogram = Histogram()
        self.stray = 0
        self.closed = 0
        self.bytes = 0  # received on the sockets, frames and all: the server's bytes out to them
        self.private: list[int] = []  # private events' latencies, µs

    def reset(self, since_us: int) -> None:
        self.since_us = since_us
        self.histogram = Histogram()
        self.stray = 0
        self.bytes = 0
        self.private = []


class Client(asyncio.Protocol):
    """One websocket connection through handshake, CONNECT and subscribe, then counting."""

    def __init__(self, tally: Tally, upgrade: bytes, auth: dict[str, Any], subscribes: list[bytes],
                 subject: str = "", *, recover: tuple[str, str | None] | None = None) -> None:
        self.tally = tally
        self.subject = subject
        self.plan = (upgrade, auth, subscribes, subject)  # to connect again as the same client (the storm)
        self.upgrade = upgrade
        # The CONNECT: the token, and in a recovering storm the pid and offset socket.io-client adds.
        self.asked_pid = recover[0] if recover else None
        if recover is not None:
            pid, offset = recover
            auth = {"pid": pid, **({"offset": offset} if offset is not None else {}), **auth}
        self.connect = client_frame(b"40" + orjson.dumps(auth))
        self.subscribes = b"".join(client_frame(subscribe) for subscribe in subscribes)
        self.acks_wanted = len(subscribes)
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.handshaking = True
        self.buffer = b""
        self.pid: str | None = None  # of the last CONNECT reply
        self.offset: str | None = None  # the last argument of the last private event, when a string
        self.recovered = False
        self.awaiting_price = False  # recovered: back once the latest price of its assets arrives
        self.count = 0  # price updates counted since the tally's start

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.upgrade)

    def connection_lost(self, exc: Exception | None) -> None:
        self.tally.closed += 1
        self._fail("CLOSED")

    def _fail(self, code: str) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(code))

    def data_received(self, data: bytes) -> None:
        self.tally.bytes += len(data)
        if self.buffer:
            data = self.buffer + data
            self.buffer = b""
        if self.handshaking:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = data
                return
            if not data.startswith(b"HTTP/1.1 101"):
                self._fail("HTTP_" + data[9:12].decode(errors="replace"))
                assert self.transport is not None
                self.transport.close()
                return
            self.handshaking = False
            data = data[end + 4:]
        # The hot loop: one pass over the frames, latencies of this read collected in a list.
        now_us = time.time_ns() // 1000
        since_us = self.tally.since_us
        latencies: list[int] = []
        stray = 0
        size = len(data)
        pos = 0
        while size - pos >= 2:
            length = data[pos + 1] & 0x7F
            start = pos + 2
            if length == 126:
                if size - pos < 4:
                    break
                length = int.from_bytes(data[pos + 2:pos + 4], "big")
                start = pos + 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(data[pos + 2:pos + 10], "big")
                start = pos + 10
            end = start + length
            if end > size:
                break
            if data.startswith(PRICE_UPDATE, start) or data.startswith(BOOK_UPDATE, start):
                if self.awaiting_price:
                    self.awaiting_price = False
                    if not self.ready.done():
                        self.ready.set_result(None)
                match = SEQ.search(data, start, end)
                if match is not None:
                    sent_us = int(match[1])
                    if sent_us >= since_us:
                        latencies.append(now_us - sent_us)
                    else:
                        stray += 1
            elif data[pos] & 0x0F == 0x8:  # close frame
                assert self.transport is not None
                self.transport.close()
                return
            else:
                self._packet(data[start:end])
            pos = end
        if pos < size:
            self.buffer = data[pos:]
        if latencies:
            self.count += len(latencies)
            self.tally.histogram.extend(latencies)
        self.tally.stray += stray

    def _packet(self, packet: bytes) -> None:
        """Everything but price updates: the handshake steps and pings."""
        transport = self.transport
        assert transport is not None
        if packet == b"2":
            transport.write(PONG)
        elif packet.startswith(PRIVATE):
            match = SENT.search(packet)
            if match is not None:
                self.tally.private.append(time.time_ns() // 1000 - int(match[1]))
        elif packet.startswith(b"0{"):  # Engine.IO open: send the Socket.IO CONNECT with the token
            transport.write(self.connect)
        elif packet.startswith(b"40"):  # CONNECT accepted: subscribe (ack ids from 0) unless recovered
            reply = orjson.loads(packet[2:]) if len(packet) > 2 else {}
            self.pid = reply.get("pid") if isinstance(reply, dict) else None
            if self.asked_pid is not None and self.pid == self.asked_pid:
                self.recovered = True
                self.awaiting_price = True  # its subscriptions come back with their latest prices
            else:
                transport.write(self.subscribes)
        elif packet.startswith(b"42["):  # another event: its last argument may be an offset
            with contextlib.suppress(orjson.JSONDecodeError):
                args = orjson.loads(packet[2:])
                if self.pid is not None and isinstance(args, list) and isinstance(args[-1], str):
                    self.offset = args[-1]
        elif packet.startswith(b"43"):
            if b'"ok":true' in packet:
                self.acks_wanted -= 1
                if self.acks_wanted == 0 and not self.ready.done():
                    self.ready.set_result(None)
            else:
                self._fail("SUBSCRIBE_REFUSED")
        elif packet.startswith(b"44"):  # CONNECT refused: {"message": code, ...}
            match = re.search(rb'"message":"([A-Z_]+)"', packet)
            self._fail(match.group(1).decode() if match else "CONNECT_REFUSED")


class Worker:
    """Holds this process's clients and answers the bench's commands."""

    def __init__(self) -> None:
        self.tally = Tally()
        self.clients: list[Client] = []

    async def handle(self, command: dict[str, Any]) -> dict[str, Any]:
        kind = command["cmd"]
        if kind == "connect":
            return await self.connect(**command["args"])
        if kind == "start":
            self.tally.reset(int(command["since_us"]))
            for client in self.clients:
                client.count = 0
            return {"ok": True}
        if kind == "counts":  # per client, in order: the spread of delivered rates; bytes; private latencies
            return {"counts": [client.count for client in self.clients], "bytes": self.tally.bytes,
                    "private_us": self.tally.private, "subjects": [client.subject for client in self.clients]}
        if kind == "stats":
            histogram = self.tally.histogram
            return {"received": histogram.count, "max_us": histogram.max_us, "hist": histogram.sparse(),
                    "stray": self.tally.stray, "closed": self.tally.closed, "open": len(self.clients),
                    "bytes": self.tally.bytes}
        if kind == "storm":
            return await self.storm(**command["args"])
        if kind == "close":
            for client in self.clients:
                if client.transport is not None:
                    client.transport.close()
            self.clients.clear()
            await asyncio.sleep(0.2)
            return {"ok": True}
        return {"error": f"unknown command {kind!r}"}

    async def connect(self, *, host: str, port: int, path: str, secret: str, first: int, count: int,
                      assets: list[str], per_client: int, concurrency: int, timeout: float,
                      depths: list[int] | None = None, max_rate: float | None = None) -> dict[str, Any]:
        """Open `count` clients numbered from `first`; client i subscribes to `per_client` assets from i.

        With `depths`, to those assets' books instead (asset i + j at depth `depths[(i + j) % len(depths)]`).
        With `max_rate`, quotes at most that many updates per second per asset.
        """
        loop = asyncio.get_running_loop()
        upgrade = (f"GET {path}?EIO=4&transport=websocket HTTP/1.1\r\nHost: {host}:{port}\r\n"
                   "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: cmVhbHRpbWUtYmVuY2gtMQ==\r\n"
                   "Sec-WebSocket-Version: 13\r\n\r\n").encode()
        # Tokens are minted before the clock starts: the connect rate is the server's.
        plans: list[tuple[dict[str, Any], list[bytes], list[str], str]] = []
        for i in range(first, first + count):
            chosen = [assets[(i + j) % len(assets)] for j in range(per_client)]
            token = mint_token(secret, f"bench-{i}", ttl=24 * 3600)
            if depths:
                subscribes = [b"42%d" % j + orjson.dumps(["book:subscribe", {
                    "asset": asset, "depth": depths[(i + j) % len(depths)]}]) for j, asset in enumerate(chosen)]
            else:
                payload: Any = chosen if max_rate is None else {"assets": chosen, "maxRate": max_rate}
                subscribes = [b"420" + orjson.dumps(["price:subscribe", payload])]
            plans.append(({"token": token}, subscribes, chosen, f"bench-{i}"))
        errors: Counter[str] = Counter()
        subscribers: Counter[str] = Counter()
        gate = asyncio.Semaphore(concurrency)

        async def open_one(auth: dict[str, Any], subscribes: list[bytes], chosen: list[str], subject: str) -> None:
            async with gate:
                try:
                    _, client = await asyncio.wait_for(loop.create_connection(
                        lambda: Client(self.tally, upgrade, auth, subscribes, subject), host, port),
                        timeout)
                    await asyncio.wait_for(client.ready, timeout)
                except (OSError, ConnectionError, TimeoutError) as exc:
                    errors[str(exc) if isinstance(exc, ConnectionError) and str(exc) else type(exc).__name__] += 1
                    return
                self.clients.append(client)
                subscribers.update(chosen)

        started = time.monotonic()
        await asyncio.gather(*(open_one(*plan) for plan in plans))
        elapsed = time.monotonic() - started
        return {"connected": count - sum(errors.values()), "errors": dict(errors), "elapsed": elapsed,
                "subscribers": dict(subscribers)}

    async def storm(self, *, host: str, port: int, concurrency: int, timeout: float,
                    recover: bool = False) -> dict[str, Any]:
        """Every client loses its transport at once and connects again (same token, same subscription).

        With `recover`, each sends the pid and offset it had (connection state recovery). Returns, for
        each client, the seconds from the loss until it was subscribed again (its subscribe ack, or
        when recovered its restored subscription's latest price), sorted, and how many recovered.
        """
        loop = asyncio.get_running_loop()
        plans = [(*client.plan, (client.pid, client.offset) if recover and client.pid else None)
                 for client in self.clients]
        started = time.monotonic()
        for client in self.clients:
            if client.transport is not None:
                client.transport.abort()
        self.clients = []
        errors: Counter[str] = Counter()
        times: list[float] = []
        gate = asyncio.Semaphore(concurrency)

        recovered = 0

        async def again(upgrade: bytes, auth: dict[str, Any], subscribes: list[bytes], subject: str,
                        resume: tuple[str, str | None] | None) -> None:
            nonlocal recovered
            async with gate:
                made: list[Client] = []

                def make() -> Client:
                    made.append(Client(self.tally, upgrade, auth, subscribes, subject, recover=resume))
                    return made[0]

                try:
                    _, client = await asyncio.wait_for(loop.create_connection(make, host, port), timeout)
                    await asyncio.wait_for(client.ready, timeout)
                except (OSError, ConnectionError, TimeoutError) as exc:
                    errors[str(exc) if isinstance(exc, ConnectionError) and str(exc) else type(exc).__name__] += 1
                    for failed in made:  # a failed client must not linger into the next target
                        if failed.transport is not None:
                            failed.transport.close()
                    return
                times.append(time.monotonic() - started)
                recovered += client.recovered
                self.clients.append(client)

        await asyncio.gather(*(again(*plan) for plan in plans))
        return {"times": sorted(times), "errors": dict(errors), "recovered": recovered}


async def serve(worker: Worker) -> None:
    """Answer JSON commands from stdin until it closes."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    out = sys.stdout.buffer
    while line := await reader.readline():
        try:
            reply = await worker.handle(orjson.loads(line))
        except Exception as exc:  # answer, so the bench reports it instead of hanging
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        out.write(orjson.dumps(reply) + b"\n")
        out.flush()
    await worker.handle({"cmd": "close"})


def main() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    # Nothing here is long-lived garbage; the collector only adds pauses.
    import gc

    gc.freeze()
    asyncio.run(serve(Worker()))
    os._exit(0)


if __name__ == "__main__":
    main()
