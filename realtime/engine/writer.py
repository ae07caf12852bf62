"""The per-connection writer: one byte-bounded outbound queue, plus direct writes.

python-engineio gives every socket an `asyncio.Queue` that its websocket
writer task (or a long-poll GET) drains, without bound. `Writer` replaces that
queue (through `AsyncServer.create_queue`, see `realtime.engine.driver`) and speaks the same
queue API, so acks, pings, private events and everything else python-socketio
sends still go through it in order. It adds:

- **Direct writes.** While a websocket connection's writer task is idle
  (waiting on an empty queue) everything sent before has been handed to the
  transport, so a shared, ready-made frame can be written straight to it
  without breaking order. Frames written this way within one loop turn are
  joined into one write at the end of the turn (`Writers.defer`, `flush`):
  the one flush policy of every send. Anything put on the queue flushes them
  first, and once the queue drains and the writer waits again the connection
  is back on the direct path: the return is part of `get()`, not a guess.
- **A byte bound.** Past `collapse_bytes` queued, a price tick replaces the
  queued tick of the same asset (only the newest price matters; the client
  sees `seq` jump); other packets are never dropped. Past `max_bytes` the
  connection is cut: the websocket transport is aborted, the queue emptied,
  and the next `get()` ends the session in engine.io's own way.

On the lean websocket engine (`realtime.engine.lean`) there is no consumer
task: the connection is a `Stream` (`attach_stream`). A packet put while the
stream is not paused by TCP flow control and nothing is queued becomes a
frame held for this loop turn's one write (`Writers.defer`), up to
`DIRECT_BUFFER_LIMIT` (then what is held is written at once, which may pause
the stream); otherwise it is queued, and `drain()` (on the transport's
`resume_writing`) writes the queue out. The end-of-queue marker `None` ends
the stream once what precedes it is written. A PONG (`put_frame`) takes the
packets' path and bounds; a close frame (`put_last`) is written only while
nothing is queued. `drained` tells a sender that paces itself (a recovery
replay) when the connection can take more.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from realtime.engine.frames import websocket_frame
from realtime.engine.packets import packet_size

logger = logging.getLogger(__name__)

# Direct writes stop while this much is already buffered in the transport: the
# client is not keeping up, and the queue (with its bound) takes over.
DIRECT_BUFFER_LIMIT = 64 * 1024

class Stream(Protocol):
    """A lean websocket connection as its writer sees it."""

    @property
    def paused(self) -> bool:
        """Whether TCP flow control paused writing (the transport's buffer is past its high mark)."""
        ...

    def end(self) -> None:
        """Close the websocket once what was written before is sent."""
        ...


def frame_of(packet: Any) -> bytes:
    """An engine.io packet as one websocket frame (text, or binary for binary data)."""
    return websocket_frame(packet.encode())


class Writers:
    """Makes every connection's `Writer` and keeps the counters they share.

    Installed as the engine.io server's `create_queue`, so each new socket
    gets a `Writer` as its queue. `cut` and `collapsed` are plain counters for
    the metrics.
    """

    def __init__(self, collapse_bytes: int, max_bytes: int) -> None:
        self.collapse_bytes = collapse_bytes
        self.max_bytes = max_bytes
        self.cut = 0  # connections cut past max_bytes
        self.collapsed = 0  # queued price ticks replaced by a newer one of the same asset
        self._deferred: list[Writer] = []  # writers holding frames for this loop turn's write

    def __call__(self, *_: Any, **__: Any) -> Writer:
        return Writer(self)

    def defer(self, writer: Writer) -> None:
        """Flush `writer` at the end of this loop turn (its frames of the turn go in one write)."""
        if not self._deferred:
            asyncio.get_running_loop().call_soon(self._flush_deferred)
        self._deferred.append(writer)

    def _flush_deferred(self) -> None:
        deferred, self._deferred = self._deferred, []
        for writer in deferred:
            writer.flush()


class _Entry:
    __slots__ = ("packet", "size")

    def __init__(self, packet: Any, size: int) -> None:
        self.packet = packet  # None once sent or dropped
        self.size = size  # -1 once sent or dropped


class Writer:
    """One connection's outbound queue (engine.io's queue API) and direct frame writes."""

    __slots__ = ("_bytes", "_entries", "_getters", "_joiners", "_latest", "_live", "_pending",
                 "_pending_bytes", "_ready", "_sid", "_stream", "_tombstones", "_transport", "_unfinished", "cut",
                 "writers")

    def __init__(self, writers: Writers) -> None:
        self.writers = writers
        self.cut = False
        # Lists and deques are made when needed: most connections, most of the
        # time, have nothing queued, and an empty deque alone costs ~760 bytes.
        self._entries: deque[_Entry] | None = None
        self._live = 0  # entries not yet sent or dropped
        self._tombstones = 0  # dropped entries still in the deque
        self._bytes = 0  # their size
        self._unfinished = 0  # for join(): put but not yet task_done()
        self._getters: list[asyncio.Future[None]] = []
        self._joiners: list[asyncio.Future[None]] = []
        self._latest: dict[str, _Entry] | None = None  # newest queued tick per asset
        self._pending: list[bytes] = []  # direct frames of this loop turn
        self._pending_bytes = 0
        self._sid: str | None = None  # known once on a websocket
        self._ready: Callable[[], bool] | None = None
        self._transport: asyncio.Transport | None = None
        self._stream: Stream | None = None  # the lean engine's connection, which has no consumer task

    # The websocket: known once the driver has accepted it.

    def attach(self, sid: str, transport: asyncio.Transport, ready: Callable[[], bool]) -> None:
        """Direct writes may go to `transport` whenever `ready()` (the websocket is the transport, not closing)."""
        self._sid = sid
        self._transport = transport
        self._ready = ready

    def attach_stream(self, sid: str, transport: asyncio.Transport, stream: Stream) -> None:
        """The lean engine: write to `transport` directly, queue only while `stream` is paused."""
        self._sid = sid
        self._transport = transport
        self._stream = stream

    # engine.io's queue API.

    async def put(self, packet: Any) -> None:
        self.put_nowait(packet)

    def put_nowait(self, packet: Any) -> None:
        if self.cut:
            return  # nothing more is kept for a connection being cut
        stream = self._stream
        if stream is not None and packet is not None and not self._live:
            if self._pending_bytes >= DIRECT_BUFFER_LIMIT:
                # A burst within one loop turn (a replay): hand what is held to the transport now, so that
                # TCP flow control pauses the stream and the rest meets the byte bound in the queue.
                self.flush()
            if not stream.paused:
                self._hold(frame_of(packet))
                return
        self.flush()  # direct frames were sent earlier: they go first
        self._append(_Entry(packet, 0 if packet is None else packet_size(packet)))
        if stream is not None:
            self.drain()

    async def get(self) -> Any:
        while not self._live:
            if self.cut:
                # engine.io's poll() takes a failed get as the end of the session:
                # the websocket writer exits, a long-poll GET closes the socket.
                raise TimeoutError("connection cut as a slow consumer")
            getter = asyncio.get_running_loop().create_future()
            self._getters.append(getter)
            try:
                await getter
            except BaseException:
                getter.cancel()
                if getter in self._getters:
                    self._getters.remove(getter)
                raise
        return self.get_nowait()

    def get_nowait(self) -> Any:
        entries = self._entries
        while entries:
            entry = entries.popleft()
            if not entries:
                self._entries = self._latest = None
            if entry.size < 0:
                self._tombstones -= 1
                continue
            packet = entry.packet
            self._live -= 1
            self._bytes -= entry.size
            entry.packet, entry.size = None, -1
            return packet
        raise asyncio.QueueEmpty

    def task_done(self) -> None:
        self._done(1)

    async def join(self) -> None:
        if self._unfinished > 0:
            joiner = asyncio.get_running_loop().create_future()
            self._joiners.append(joiner)
            await joiner

    def empty(self) -> bool:
        return self._live == 0

    def qsize(self) -> int:
        return self._live

    # The send path.

    @property
    def drained(self) -> bool:
        """Whether everything put so far has left for the socket, which keeps up: a paced sender may put more."""
        if self.cut or self._live or self._pending:
            return False
        if self._stream is not None:
            return not self._stream.paused
        if self._transport is not None:
            # A stock websocket: its writer task waits on the queue again, so it has sent what it took.
            return bool(self._getters) and self._transport.get_write_buffer_size() <= DIRECT_BUFFER_LIMIT
        return True  # polling: the last GET took everything

    def write_direct(self, frame: bytes) -> bool:
        """Hold `frame` for this loop turn's one write if the connection can take it now; else False.

        The held frames leave together at the end of the turn (`Writers.defer`), or
        earlier if something is queued behind them.
        """
        transport = self._transport
        stream = self._stream
        if stream is not None:
            if (transport is None or self._live or self.cut or stream.paused or transport.is_closing()
                    or self._pending_bytes > DIRECT_BUFFER_LIMIT):
                return False
        elif (
            transport is None
            or not self._getters  # the writer task is busy (or there is none): keep the order
            or self._live
            or self.cut
            or transport.is_closing()
            or transport.get_write_buffer_size() + self._pending_bytes > DIRECT_BUFFER_LIMIT
        ):
            return False
        elif self._ready is None or not self._ready():
            return False
        self._hold(frame)
        return True

    def _hold(self, frame: bytes) -> None:
        if not self._pending:
            self.writers.defer(self)
        self._pending.append(frame)
        self._pending_bytes += len(frame)

    def drain(self) -> None:
        """Lean engine: write out what is queued while the stream is not paused; end it at the marker."""
        stream, transport = self._stream, self._transport
        if stream is None or transport is None:
            return
        self.flush()
        chunks: list[bytes] = []
        size = 0
        while self._live and not stream.paused and not self.cut:
            packet = self.get_nowait()
            self._done(1)
            if packet is None:
                if chunks:
                    transport.write(b"".join(chunks))
                stream.end()
                return
            frame = packet if isinstance(packet, bytes) else frame_of(packet)
            chunks.append(frame)
            size += len(frame)
            if size >= DIRECT_BUFFER_LIMIT:  # one write per buffer's worth; it may pause the stream
                transport.write(b"".join(chunks))
                chunks, size = [], 0
        if chunks:
            transport.write(b"".join(chunks))

    def flush(self) -> None:
        """Write this turn's direct frames in one write."""
        if not self._pending:
            return
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending.clear()
        self._pending_bytes = 0
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def put_frame(self, frame: bytes) -> None:
        """Lean engine: a ready-made frame (a PONG), in order with the packets and within the same bounds."""
        stream = self._stream
        if self.cut or stream is None:
            return
        if not self._live and not stream.paused:
            if self._pending_bytes + len(frame) > DIRECT_BUFFER_LIMIT:
                self.flush()  # may pause the stream
            if not stream.paused:
                self._hold(frame)
                return
        self.flush()
        self._append(_Entry(frame, len(frame)))
        self.drain()

    def put_last(self, frame: bytes) -> bool:
        """Lean engine: `frame` (a close frame) after this turn's frames, then nothing ever; False, and nothing
        written, while packets are queued or the stream is paused (the client is not reading: abort it)."""
        stream, transport = self._stream, self._transport
        if self.cut or stream is None or transport is None or self._live or stream.paused:
            return False
        self.flush()
        transport.write(frame)
        self.cut = True  # nothing more is written or kept
        return True

    def put_price(self, asset: str, packet: Any) -> None:
        """Queue a price tick; when behind, it replaces the queued tick of its asset."""
        if self.cut:
            return
        self.flush()
        if self._latest is None:
            self._latest = {}
        if self._bytes > self.writers.collapse_bytes:
            previous = self._latest.get(asset)
            if previous is not None and previous.size >= 0:
                self._drop(previous)
                self.writers.collapsed += 1
        entry = _Entry(packet, packet_size(packet))
        self._latest[asset] = entry
        self._append(entry)
        if self._stream is not None:
            self.drain()

    # Internals.

    def _append(self, entry: _Entry) -> None:
        if self._entries is None:
            self._entries = deque()
        self._entries.append(entry)
        self._live += 1
        self._bytes += entry.size
        self._unfinished += 1
        if self._bytes > self.writers.max_bytes:
            self._cut()
            return
        while self._getters:
            getter = self._getters.pop(0)
            if not getter.done():
                getter.set_result(None)
                break

    def _drop(self, entry: _Entry) -> None:
        self._bytes -= entry.size
        entry.packet, entry.size = None, -1
        self._live -= 1
        self._done(1)
        # Dropped entries stay in the deque until popped; a writer that never
        # drains would keep them all, so compact once they outnumber the rest.
        self._tombstones += 1
        if self._tombstones > self._live + 64:
            self._entries = deque(e for e in self._entries or () if e.size >= 0) or None
            self._tombstones = 0

    def _done(self, count: int) -> None:
        self._unfinished = max(0, self._unfinished - count)
        if self._unfinished == 0 and self._joiners:
            for joiner in self._joiners:
                if not joiner.done():
                    joiner.set_result(None)
            self._joiners.clear()

    def _cut(self) -> None:
        self.cut = True
        self.writers.cut += 1
        logger.warning("cut a slow consumer%s: %d bytes queued (REALTIME_SLOW_CONSUMER_MAX_BYTES=%d)",
                    f" (sid {self._sid})" if self._sid else "", self._bytes, self.writers.max_bytes)
        dropped = self._live
        self._entries = None
        self._latest = None
        self._pending.clear()
        self._live = self._bytes = self._pending_bytes = self._tombstones = 0
        self._done(dropped)
        if self._transport is not None:
            self._transport.abort()
        for getter in self._getters:
            if not getter.done():
                getter.set_result(None)
        self._getters.clear()
