"""Attacks on the websocket frame layer, against a gateway with default settings, on both engines (issue 18).

Each attack runs from a thread on a blocking socket, upgraded and
unauthenticated (no CONNECT, no token, as an attacker needs none), while the
test's loop times `GET /health` over and over and samples the pod's RSS:

- a TEXT frame without FIN, then empty continuation frames (finding 1: each
  used to re-sum every fragment so far, and none counted against the bound);
- pings from a socket that never reads (finding 2: PONGs went around the
  writer's bound, and the socket was read while its writes were paused);
- a frame that declares 16 MiB and streams it;
- a flood of tiny whole messages.

The loop may not stall and memory may not grow past the documented
per-connection bounds (README, Security). `/health` is asked every 20 ms; the
issue's target for the slowest answer is 100 ms. On a shared 2-core machine
the test process, the gateway and the attacker thread compete for the same
cores, so the bound asserted is `HEALTH_BOUND` (300 ms): the attacks of the
issue stalled the pod for 3.7 s and 31 s, so a return of the defect fails by a
factor of ten, while scheduling noise on a loaded machine does not.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
import pytest

from tests.support import Gateway, GatewayFactory, token
from tests.support.probe import CONTINUATION, PING, PONG, TEXT, Probe, frame
from tests.support.processes import rss_bytes
from tests.support.wire import tcp_send_buffer_max

pytestmark = pytest.mark.timing  # bounds on how soon the pod answers and delivers

ENGINES = pytest.mark.parametrize("engine", ["lean", "stock"])
HEALTH_BOUND = 0.3  # seconds; see the module's docstring
# The documented per-connection bound at default settings (docs/websocket.md): under 6 MiB, most of it
# the writer's 1 MiB and 64 waiting messages of 64 KiB. The pod's RSS also moves with the allocator.
RSS_BOUND = 8 * 1024 * 1024
PROBE_SECONDS = 2.0  # /health is timed this long at least, however soon an attack ends


def upgraded(port: int, receive_buffer: int | None = None) -> socket.socket:
    """A blocking socket upgraded to a websocket, past the Engine.IO OPEN; no Socket.IO CONNECT."""
    sock = socket.socket()
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                  f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    first, size = sock.recv(2)
    assert first == 0x81 and sock.recv(size).startswith(b"0")  # the OPEN packet
    return sock


@dataclass
class Attack:
    """What an attacker thread did: bytes sent, and whether (and how) the server ended the connection."""

    sent: int = 0
    close_code: int | None = None
    ended: bool = False
    seconds: float = 0.0
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)


def close_code_in(data: bytes) -> int | None:
    """The code of the first close frame among the server's frames in `data`."""
    pos = 0
    while pos + 2 <= len(data):
        first, size = data[pos], data[pos + 1] & 0x7F
        head = 2
        if size == 126:
            (size,) = struct.unpack_from("!H", data, pos + 2)
            head = 4
        elif size == 127:
            (size,) = struct.unpack_from("!Q", data, pos + 2)
            head = 10
        if first & 0x0F == 0x8 and pos + head + 2 <= len(data):
            return int(struct.unpack_from("!H", data, pos + head)[0])
        pos += head + size
    return None


def flood(sock: socket.socket, attack: Attack, chunk: bytes, limit: int, seconds: float, *,
          read: bool = True) -> None:
    """Send `chunk` until `limit` bytes or `seconds` pass, or the server ends the connection; then, if `read`,
    read what it sent until it closes."""
    started = time.monotonic()
    sock.settimeout(1.0)
    try:
        while attack.sent < limit and time.monotonic() - started < seconds:
            try:
                attack.sent += sock.send(chunk)
            except TimeoutError:
                continue  # the server is not reading: keep trying until the time is up
        if read:
            sock.settimeout(10.0)
            received = b""
            while data := sock.recv(65536):
                received += data
            attack.close_code = close_code_in(received)
            attack.ended = True
    except (BrokenPipeError, ConnectionResetError):
        attack.ended = True
    except TimeoutError:
        pass
    except BaseException as error:  # surfaced by the test
        attack.error = error
    finally:
        attack.seconds = time.monotonic() - started
        attack.done.set()


async def under_attack(gateway: Gateway, run: Callable[[Attack], None], seconds: float
                       ) -> tuple[Attack, list[float], int]:
    """Run the attack in a thread while timing /health (for `PROBE_SECONDS` at least): the attack, every
    /health time, the RSS growth."""
    assert gateway.process is not None
    pid = gateway.process.pid
    attack = Attack()
    baseline = rss_bytes(pid)
    peak = baseline
    times: list[float] = []
    thread = threading.Thread(target=run, args=(attack,), daemon=True)
    async with aiohttp.ClientSession() as http:
        thread.start()
        begun = time.monotonic()
        while (not attack.done.is_set() or time.monotonic() < begun + PROBE_SECONDS) \
                and time.monotonic() < begun + seconds:
            started = time.monotonic()
            async with http.get(gateway.url + "/health") as response:
                assert response.status == 200
            times.append(time.monotonic() - started)
            peak = max(peak, rss_bytes(pid))
            # The interval between two probes of /health, not a wait for something.
            await asyncio.sleep(0.02)
    await asyncio.to_thread(attack.done.wait, 15)
    thread.join(5)
    if attack.error is not None:
        raise attack.error
    return attack, times, peak - baseline


def report(name: str, attack: Attack, times: list[float], growth: int) -> str:
    return (f"{name}: {attack.sent} bytes sent in {attack.seconds:.1f}s, closed with {attack.close_code}, "
            f"/health max {max(times) * 1000:.0f} ms over {len(times)}, RSS +{growth / 2**20:.1f} MiB")


@ENGINES
async def test_empty_continuation_frames_are_closed_with_1009_and_the_pod_answers(
        start_process: GatewayFactory, engine: str) -> None:
    gateway = start_process(engine=engine)
    sock = upgraded(gateway.port)
    # 150 KB on the wire: 25 000 empty continuation frames after an unfinished TEXT frame.
    chunk = frame(TEXT, b"4", fin=False) + frame(CONTINUATION, fin=False) * 25_000

    def run(attack: Attack) -> None:
        # The stock engine takes the flood (aiohttp's reader has no fragment bound; it is linear).
        flood(sock, attack, chunk, len(chunk), 30, read=engine == "lean")

    try:
        attack, times, growth = await under_attack(gateway, run, 40)
    finally:
        sock.close()
    print(report("continuation flood", attack, times, growth))
    if engine == "lean":
        assert attack.ended and attack.close_code == 1009
    assert max(times) < HEALTH_BOUND, times
    assert growth < RSS_BOUND


@ENGINES
async def test_a_ping_flood_that_never_reads_is_bounded_and_cut(start_process: GatewayFactory, engine: str) -> None:
    # Pings every second, answered within one: a client that reads nothing is dropped after ~2 s, and its
    # socket cut CLOSE_TIMEOUT (5 s) later at most, whatever is still queued for it.
    gateway = start_process(engine=engine, ping_interval=1, ping_timeout=1)
    sock = upgraded(gateway.port, receive_buffer=4096)
    chunk = frame(PING, b"p" * 125) * 500  # 65 KB a send, each ping asking for a 127-byte PONG

    def run(attack: Attack) -> None:
        flood(sock, attack, chunk, 256 * 2**20, 12, read=False)

    try:
        attack, times, growth = await under_attack(gateway, run, 20)
    finally:
        sock.close()
    print(report("ping flood", attack, times, growth))
    if engine == "lean":  # python-engineio's websocket stays open (its memory is bounded all the same)
        assert attack.ended, "the connection was never cut"
    assert max(times) < HEALTH_BOUND, times
    assert growth < RSS_BOUND


@ENGINES
async def test_a_frame_over_the_bound_is_refused_from_its_header(start_process: GatewayFactory, engine: str) -> None:
    gateway = start_process(engine=engine)
    sock = upgraded(gateway.port)
    head = bytes((0x81, 0xFF)) + (16 << 20).to_bytes(8, "big") + os.urandom(4)

    def run(attack: Attack) -> None:
        sock.sendall(head)
        flood(sock, attack, os.urandom(65536), 16 << 20, 20)

    try:
        attack, times, growth = await under_attack(gateway, run, 30)
    finally:
        sock.close()
    print(report("16 MiB frame", attack, times, growth))
    assert attack.ended
    if engine == "lean":
        assert attack.close_code == 1009
    assert max(times) < HEALTH_BOUND, times
    assert growth < RSS_BOUND


@ENGINES
async def test_a_flood_of_tiny_messages_leaves_the_pod_answering(start_process: GatewayFactory,
                                                                 engine: str) -> None:
    # Engine.IO NOOPs ("6"), which the server drops: as cheap a whole message as a client can send.
    gateway = start_process(engine=engine)
    sock = upgraded(gateway.port)
    chunk = frame(TEXT, b"6") * 10_000

    def run(attack: Attack) -> None:
        flood(sock, attack, chunk, 8 * 2**20, 5, read=False)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)

    try:
        attack, times, growth = await under_attack(gateway, run, 30)
    finally:
        sock.close()
    print(report("tiny messages", attack, times, growth))
    assert max(times) < HEALTH_BOUND, times
    assert growth < RSS_BOUND


@ENGINES
async def test_a_client_that_stops_reading_then_reads_gets_every_pong_in_order(
        start_process: GatewayFactory, engine: str) -> None:
    # Reading stops while the answers cannot be written, and starts again as they drain: nothing is lost.
    gateway = start_process(engine=engine)
    probe = await Probe.open(gateway.url, {"token": token("reader")}, receive_buffer=4096)
    try:
        count = 2 * tcp_send_buffer_max() // 100  # pongs: twice what the server's socket may buffer
        probe.write(b"".join(frame(PING, f"{i:08d}".encode().ljust(100, b".")) for i in range(count)))
        await asyncio.sleep(1)  # the server fills what it can and stops
        for i in range(count):
            received = await probe.read()
            assert received.opcode == PONG and received.payload[:8] == f"{i:08d}".encode(), (i, received)
        ack_id, payload = probe.event("price:subscribe", "BTC_USDC_PERP")
        probe.send(TEXT, payload)
        assert (await probe.ack(ack_id))["ok"] is True
    finally:
        await probe.close()
