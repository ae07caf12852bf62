"""realtime/engine/writer.py: the path choice, the byte bound and the frames, on a real socket pair.

How engine.io drives a Writer (its queue API, the attach on a websocket) is
covered by tests/test_upstream_hooks.py; here the Writer stands alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
from collections.abc import AsyncIterator
from typing import Any

from engineio import packet as eio_packet

from realtime.engine.frames import websocket_frame
from realtime.engine.writer import Writer, Writers
from tests.support import eventually


def message(text: str) -> eio_packet.Packet:
    return eio_packet.Packet(eio_packet.MESSAGE, text)


@contextlib.asynccontextmanager
async def websocket_writer(collapse: int = 1024, limit: int = 8192) -> AsyncIterator[tuple[Writer, socket.socket]]:
    """A Writer on a websocket (ready for direct writes), writing to one end of a real socket pair."""
    writer = Writers(collapse, limit)()
    ours, theirs = socket.socketpair()
    loop = asyncio.get_running_loop()
    sink, _ = await loop.create_unix_connection(asyncio.Protocol, sock=ours)
    writer.attach("sid1", sink, lambda: True)  # type: ignore[arg-type]
    try:
        yield writer, theirs
    finally:
        sink.close()
        theirs.close()


async def idle(writer: Writer) -> asyncio.Task[Any]:
    """Start a consumer blocked in get(), as engine.io's websocket writer is when idle."""
    getter = asyncio.create_task(writer.get())
    # One turn of the loop, not a timed wait: the new task runs until it blocks in
    # get(), which on an empty queue it does at once.
    await asyncio.sleep(0)
    return getter


def buffered(peer: socket.socket) -> bytes:
    """What `peer` could read now, left unread (b"" for nothing yet, and for end of stream)."""
    try:
        return peer.recv(100, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return b""


def readable(peer: socket.socket) -> bool:
    """True once `peer` has bytes or the end of the stream to read."""
    return bool(select.select([peer], [], [], 0)[0])


def test_websocket_frames() -> None:
    assert websocket_frame("42") == b"\x81\x0242"
    assert websocket_frame(b"\x01") == b"\x82\x01\x01"
    assert websocket_frame("x" * 200)[:4] == b"\x81\x7e\x00\xc8"
    assert websocket_frame("x" * 70000)[:10] == b"\x81\x7f" + (70000).to_bytes(8, "big")


async def test_direct_only_while_the_consumer_waits_and_back_once_it_waits_again() -> None:
    async with websocket_writer() as (writer, peer):
        assert not writer.write_direct(b"a")  # nobody waits on the queue yet: keep the order
        getter = await idle(writer)
        assert writer.write_direct(b"a") and writer.write_direct(b"b")
        writer.flush()
        # Something queued (an ack, a ping) first flushes the held frames, then wakes the consumer.
        assert writer.write_direct(b"c")
        ack = message("ack")
        await writer.put(ack)
        assert await getter is ack
        assert not writer.write_direct(b"d")  # the consumer is busy writing the ack
        writer.task_done()
        getter = await idle(writer)
        assert writer.write_direct(b"e")  # waiting again: back on the direct path
        writer.flush()
        await eventually(lambda: len(buffered(peer)) >= 4)
        assert peer.recv(100) == b"abce"
        getter.cancel()


async def test_ticks_collapse_past_the_soft_bound_and_private_events_stay() -> None:
    async with websocket_writer(collapse=64, limit=1 << 20) as (writer, _):
        private = [message("p" * 40) for _ in range(3)]
        writer.put_price("BTC", message("btc-1"))
        writer.put_nowait(private[0])
        writer.put_price("BTC", message("btc-2"))  # 45 bytes queued: not behind yet
        writer.put_nowait(private[1])
        writer.put_price("BTC", message("btc-3"))  # behind: replaces btc-2, not btc-1's place
        writer.put_price("ETH", message("eth-1"))
        writer.put_nowait(private[2])
        writer.put_price("BTC", message("btc-4"))
        drained = [writer.get_nowait().data for _ in range(writer.qsize())]
        assert drained == ["btc-1", private[0].data, private[1].data, "eth-1", private[2].data, "btc-4"]
        assert writer.writers.collapsed == 2


async def test_past_the_hard_bound_the_connection_is_cut() -> None:
    async with websocket_writer(collapse=1024, limit=4096) as (writer, peer):
        getter = await idle(writer)
        writer.put_nowait(message("x" * 3000))
        assert (await getter).data == "x" * 3000  # the consumer took it, then stalls writing
        writer.put_nowait(message("y" * 3000))
        writer.put_nowait(message("z" * 3000))
        assert writer.cut and writer.writers.cut == 1 and writer.qsize() == 0
        writer.put_nowait(message("after"))  # nothing is kept any more
        assert writer.qsize() == 0
        try:
            await writer.get()
        except TimeoutError:
            pass
        else:
            raise AssertionError("get() did not end the session")
        await eventually(lambda: readable(peer))
        assert peer.recv(100) == b""  # the transport was aborted


class LeanStream(asyncio.Protocol):
    """The writer's `Stream` as the lean engine's connection is: paused by the transport's flow control."""

    def __init__(self) -> None:
        self.paused = False
        self.writer: Writer | None = None

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.writer is not None:
            self.writer.drain()

    def end(self) -> None:
        pass


async def test_a_burst_in_one_loop_turn_on_the_lean_engine_meets_the_hard_bound() -> None:
    # A peer that reads nothing, and one loop turn that sends 32 MiB: past the kernel's buffers the
    # transport pauses the stream, the rest is queued, and past the bound the connection is cut.
    # Held for one write instead, it would all sit in the transport.
    bound = 2**20
    writer = Writers(1024, bound)()
    ours, theirs = socket.socketpair()
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stream = LeanStream()
    transport, _ = await asyncio.get_running_loop().create_unix_connection(lambda: stream, sock=ours)
    transport.set_write_buffer_limits(high=64 * 1024)
    stream.writer = writer
    writer.attach_stream("sid1", transport, stream)  # type: ignore[arg-type]
    try:
        held = 0
        for n in range(512):
            writer.put_nowait(message(f"{n:04}" + "x" * 65536))
            held = max(held, transport.get_write_buffer_size())
        assert writer.cut and writer.writers.cut == 1
        assert held < bound + 4 * 65536, held
        assert not writer.drained
    finally:
        transport.close()
        theirs.close()


async def test_drained_says_when_a_paced_sender_may_send_more() -> None:
    writer = Writers(1024, 2**20)()
    assert writer.drained  # nothing queued, no socket yet (polling: the last GET took everything)
    writer.put_nowait(message("a"))
    assert not writer.drained
    writer.get_nowait()
    assert writer.drained
    async with websocket_writer(limit=2**20) as (ws, _peer):
        assert not ws.drained  # a stock websocket: drained once its writer task waits again
        getter = await idle(ws)
        assert ws.drained
        ws.put_nowait(message("b"))
        assert not ws.drained
        assert (await getter).data == "b"


class Stream:
    """The lean engine's connection as the Writer sees it: paused or not by TCP flow control."""

    def __init__(self) -> None:
        self.paused = False
        self.ended = False

    def end(self) -> None:
        self.ended = True


@contextlib.asynccontextmanager
async def stream_writer(limit: int = 8192) -> AsyncIterator[tuple[Writer, Stream, asyncio.Transport, socket.socket]]:
    """A Writer on a lean stream, writing to one end of a real socket pair."""
    writer = Writers(1024, limit)()
    ours, theirs = socket.socketpair()
    sink, _ = await asyncio.get_running_loop().create_unix_connection(asyncio.Protocol, sock=ours)
    stream = Stream()
    writer.attach_stream("sid1", sink, stream)
    try:
        yield writer, stream, sink, theirs
    finally:
        sink.close()
        theirs.close()


async def test_control_frames_go_in_order_and_count_against_the_bound() -> None:
    pong = bytes((0x8A, 3)) + b"abc"
    async with stream_writer(limit=8192) as (writer, stream, sink, peer):
        writer.put_nowait(message("first"))
        writer.put_frame(pong)
        await eventually(lambda: readable(peer))
        assert peer.recv(100) == websocket_frame("4first") + pong  # one write, in order
        # While the client does not read, PONGs are queued like packets, and past the bound the connection is cut.
        stream.paused = True
        for _ in range(8192 // len(pong)):
            writer.put_frame(pong)
        assert writer.qsize() == 8192 // len(pong) and not writer.cut
        writer.put_frame(pong)
        writer.put_frame(pong)
        assert writer.cut and sink.is_closing()
        assert writer.writers.cut == 1


async def test_the_last_frame_is_written_only_when_nothing_is_queued() -> None:
    close = bytes((0x88, 2)) + (1009).to_bytes(2, "big")
    async with stream_writer() as (writer, stream, _, peer):
        stream.paused = True
        writer.put_nowait(message("queued"))
        assert not writer.put_last(close)  # the caller aborts: the client is not reading
        stream.paused = False
        writer.drain()
        writer.put_frame(bytes((0x8A, 0)))
        assert writer.put_last(close)
        writer.put_nowait(message("after"))  # nothing more, ever
        writer.put_frame(bytes((0x8A, 0)))
        await eventually(lambda: readable(peer))
        await asyncio.sleep(0.05)  # anything written after the close frame would be here by now
        assert peer.recv(100) == websocket_frame("4queued") + bytes((0x8A, 0)) + close
