"""Every private python-engineio / python-socketio / aiohttp behaviour the gateway relies on.

All of it is used from `realtime.engine` only (checked below). The versions
are pinned in setup.cfg and checked at start-up (`realtime.engine.versions`);
when an upgrade changes one of these, the test that names it fails here
rather than as lost or reordered messages in production. Each test says
which module depends on it.
"""

from __future__ import annotations

import asyncio
import inspect
import re
from pathlib import Path
from typing import Any

import aiohttp
import engineio
import socketio
from aiohttp import web, web_protocol, web_runner, web_server
from engineio import async_socket, exceptions
from engineio import packet as eio_packet
from socketio import packet as sio_packet
from socketio.msgpack_packet import MsgPackPacket

from realtime.engine import driver, versions
from realtime.engine.frames import websocket_frame
from realtime.engine.packets import EngineServer
from realtime.engine.writer import Writer, Writers
from tests.support import eventually

ROOT = Path(__file__).resolve().parent.parent
# Private names of python-socketio / python-engineio: only realtime/engine/ may use them.
PRIVATE = re.compile(r"\b_async\b|_send_packet|eio\.sockets|manager\.rooms|\b_redis_|\b_ok\b|\.queue\b|_binary_packet"
                     r"|_handle_eio|_handle_event|_handle_connect|_handle_disconnect|_handle_emit|_engineio_server_class"
                     r"|manager_initialized|_websocket_handler|is_pre_connected|eio_sid_from_sid"
                     r"|_make_server|_request_count|RequestHandler")

# Every private attribute the adapter reads, overrides or calls, by owner.
HOOKS: dict[Any, tuple[str, ...]] = {
    socketio.AsyncServer: ("_handle_event", "_handle_eio_message", "_handle_eio_connect", "_handle_eio_disconnect",
                           "_handle_connect", "_handle_disconnect", "_engineio_server_class", "attach", "emit",
                           "disconnect", "enter_room", "leave_room", "_send_packet"),
    engineio.AsyncServer: ("_ok", "create_queue", "disconnect", "handle_request", "_handle_connect", "_upgrades",
                           "_bad_request", "_unauthorized", "_make_response", "_trigger_event", "_service_task",
                           "generate_id", "start_background_task"),
    async_socket.AsyncSocket: ("receive", "poll", "close", "_websocket_handler", "_upgrade_websocket", "_send_ping",
                               "schedule_ping", "send", "handle_get_request"),
    socketio.AsyncManager: ("emit", "eio_sid_from_sid", "sid_from_eio_sid", "is_connected", "is_pre_connected",
                            "initialize", "set_server", "connect", "can_disconnect", "basic_enter_room",
                            "basic_leave_room", "basic_disconnect"),
    socketio.AsyncRedisManager: ("_redis_connect", "_redis_listen_with_retries", "_publish", "_listen", "_thread",
                                 "_handle_emit"),
    MsgPackPacket: ("encode", "decode", "configure"),
    web_protocol.RequestHandler: ("connection_made", "data_received", "connection_lost", "force_close"),
    web.Server: ("__call__",),
    web.AppRunner: ("_make_server",),
}
# Instance attributes the adapter reads or replaces.
INSTANCE_HOOKS = {
    "socketio.AsyncServer": ("eio", "manager", "manager_initialized", "packet_class", "_binary_packet", "environ"),
    "engineio.AsyncServer": ("_async", "sockets", "reason", "handlers", "max_http_buffer_size", "ping_interval",
                             "ping_timeout", "ping_interval_grace_period", "start_service_task"),
    "engineio.AsyncSocket": ("queue", "upgraded", "upgrading", "closing", "closed", "sid", "connected", "last_ping"),
    "socketio.AsyncManager": ("rooms",),
    "MsgPackPacket": ("dumps_default", "uses_binary_events"),
}


def test_only_the_engine_package_touches_upstream_internals() -> None:
    offenders = []
    for path in sorted((ROOT / "realtime").rglob("*.py")):
        if path.parent.name == "engine":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if PRIVATE.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "private python-socketio/python-engineio names outside realtime/engine:\n" + "\n".join(
        offenders)


def test_every_private_hook_still_exists() -> None:
    for owner, names in HOOKS.items():
        for name in names:
            assert callable(getattr(owner, name, None)), f"{owner.__module__}.{owner.__qualname__}.{name}"
    sio = _server()
    socket = async_socket.AsyncSocket(sio.eio, "sid1")
    instances = {"socketio.AsyncServer": sio, "engineio.AsyncServer": sio.eio, "engineio.AsyncSocket": socket,
                 "socketio.AsyncManager": sio.manager, "MsgPackPacket": MsgPackPacket}
    for owner_name, names in INSTANCE_HOOKS.items():
        for name in names:
            assert hasattr(instances[owner_name], name), f"{owner_name}().{name}"


def test_the_overrides_keep_upstream_signatures() -> None:
    # engine/packets.py: EngineServer._ok; engine/manager.py: the Redis manager's hooks.
    assert list(inspect.signature(engineio.AsyncServer._ok).parameters) == [
        "self", "packets", "headers", "jsonp_index"]
    assert list(inspect.signature(EngineServer._ok).parameters) == ["self", "packets", "headers", "jsonp_index"]
    assert list(inspect.signature(socketio.AsyncRedisManager._publish).parameters) == ["self", "data"]
    assert list(inspect.signature(socketio.AsyncServer._handle_event).parameters) == [
        "self", "eio_sid", "namespace", "id", "data"]
    assert list(inspect.signature(socketio.AsyncServer._handle_eio_message).parameters) == ["self", "eio_sid", "data"]
    # engine/admission.py and engine/inbound.py: the handshake gate and the CONNECT/DISCONNECT wrappers.
    assert list(inspect.signature(engineio.AsyncServer._handle_connect).parameters) == [
        "self", "environ", "transport", "jsonp_index"]
    assert list(inspect.signature(socketio.AsyncServer._handle_connect).parameters) == [
        "self", "eio_sid", "namespace", "data"]
    assert list(inspect.signature(socketio.AsyncServer._handle_disconnect).parameters) == [
        "self", "eio_sid", "namespace", "reason"]
    assert list(inspect.signature(socketio.AsyncServer.disconnect).parameters) == [
        "self", "sid", "namespace", "ignore_queue"]
    # Every CONNECT and DISCONNECT packet goes through the attributes inbound.py replaces; python-engineio
    # opens every session in `_handle_connect`, which the gate wraps, and that is all it calls for one.
    dispatch = inspect.getsource(socketio.AsyncServer._handle_eio_message)
    assert "self._handle_connect(" in dispatch and "self._handle_disconnect(" in dispatch
    assert "self._handle_connect(environ" in inspect.getsource(engineio.AsyncServer.handle_request)
    # The stock listener reads messages from `_redis_listen_with_retries`, which RedisManager replaces,
    # and publishes through `self.redis`, which our `_redis_connect` makes.
    assert "self._redis_listen_with_retries()" in inspect.getsource(socketio.AsyncRedisManager._listen)
    assert "self.redis.publish" in inspect.getsource(socketio.AsyncRedisManager._publish)
    # engine/server.py: the CONNECT reply carries the pid. python-socketio sends it through
    # `_send_packet` with {"sid": ...} after the connect handler, then marks the sid connected.
    assert list(inspect.signature(socketio.AsyncServer._send_packet).parameters) == ["self", "eio_sid", "pkt"]
    connect = inspect.getsource(socketio.AsyncServer._handle_connect)
    assert connect.index("_trigger_event(") < connect.rindex("packet.CONNECT, {'sid': sid}")
    assert "self._send_packet(eio_sid, self.packet_class(\n                packet.CONNECT, {'sid': sid}" in connect
    # engine/manager.py: a published emit's data as `_handle_emit` turns it into arguments.
    assert list(inspect.signature(socketio.AsyncRedisManager._handle_emit).parameters) == ["self", "message"]
    handle_emit = inspect.getsource(socketio.AsyncRedisManager._handle_emit)
    assert "data = tuple(data)" in handle_emit and "data = data[0]" in handle_emit
    # The msgpack packet: `dumps_default` is how python-socketio's encoder handles non-msgpack types.
    assert "dumps_default" in inspect.getsource(MsgPackPacket.encode)
    # engine/manager.py RoomEvents: every join and leave (disconnects and close_room too) goes through these two.
    assert list(inspect.signature(socketio.AsyncManager.basic_enter_room).parameters) == [
        "self", "sid", "namespace", "room", "eio_sid"]
    assert list(inspect.signature(socketio.AsyncManager.basic_leave_room).parameters) == [
        "self", "sid", "namespace", "room"]
    assert "self.basic_leave_room(" in inspect.getsource(socketio.AsyncManager.basic_disconnect)
    assert "self.basic_leave_room(" in inspect.getsource(socketio.AsyncManager.basic_close_room)
    assert "self.basic_enter_room(" in inspect.getsource(socketio.AsyncManager.enter_room)
    assert "self.basic_leave_room(" in inspect.getsource(socketio.AsyncManager.leave_room)


def test_our_copy_of_the_engineio_handshake_matches_upstreams() -> None:
    # engine/conformance.py: ConformingServer._handle_connect is python-engineio 4.15's, with our session
    # class and OPEN packet; Session._send_ping is its ping plus Node's timeout.
    source = inspect.getsource(engineio.AsyncServer._handle_connect)
    for step in ("async_socket.AsyncSocket(self, sid)", "self.sockets[sid] = s", "await s.send(pkt)",
                 "self._trigger_event('connect', sid, environ,", "s.schedule_ping()",
                 "await s.handle_get_request(environ)", "s.connected = True", "await s.poll()",
                 "int(self.ping_timeout * 1000)"):
        assert step in source, step
    assert list(inspect.signature(engineio.AsyncServer._handle_connect).parameters) == [
        "self", "environ", "transport", "jsonp_index"]
    ping = inspect.getsource(async_socket.AsyncSocket._send_ping)
    assert "self.last_ping = time.time()" in ping and "packet.PING" in ping
    assert "self.last_ping = None" in inspect.getsource(async_socket.AsyncSocket.schedule_ping)
    # A client's CLOSE arrives as close(reason=CLIENT_DISCONNECT).
    assert "reason=self.server.reason.CLIENT_DISCONNECT" in inspect.getsource(async_socket.AsyncSocket.receive)


def test_our_room_index_replaces_the_whole_basic_disconnect() -> None:
    # engine/manager.py: IndexedRooms.basic_disconnect is python-socketio 5.18's with the sid's rooms from
    # an index; if upstream's grows a step, this fails.
    source = inspect.getsource(socketio.base_manager.BaseManager.basic_disconnect)
    steps = ("self.rooms[namespace].copy().items()", "self.basic_leave_room(sid, namespace, room)",
             "del self.callbacks[sid]", "self.pending_connect[namespace].remove(sid)",
             "self.pending_disconnect[namespace].remove(sid)")
    assert all(step in source for step in steps)
    assert source.count("\n") <= 22, "python-socketio's basic_disconnect changed"
    for name in ("basic_enter_room", "basic_leave_room"):
        assert name in inspect.getsource(socketio.base_manager.BaseManager)


def test_what_the_lean_engine_takes_from_aiohttp() -> None:
    # engine/lean.py takes a connection from aiohttp's RequestHandler after the handshake: it reads the
    # bytes past the request (`_message_tail`), sets `_force_close` and `transport = None` so that start()
    # neither loops nor closes the socket, and tells the server (`_manager`) the connection is gone.
    source = inspect.getsource(web_protocol.RequestHandler.start)
    assert "while not self._force_close:" in source
    assert "if not self._force_close:" in source and "self.transport.close()" in source
    assert "self._keepalive = bool(resp.keep_alive)" in source
    assert "self._message_tail = tail" in inspect.getsource(web_protocol.RequestHandler.data_received)
    finish = inspect.getsource(web_protocol.RequestHandler.finish_response)
    assert "await prepare_meth(request)" in finish and "await resp.write_eof()" in finish
    assert list(inspect.signature(web_server.Server.connection_lost).parameters) == ["self", "handler", "exc"]
    for name in ("_message_tail", "_force_close", "_manager", "keep_alive", "force_close"):
        assert name in web_protocol.RequestHandler.__slots__ or hasattr(web_protocol.RequestHandler, name), name
    # python-socketio keeps each session's environ in `environ` and reads it at every CONNECT.
    assert "self.environ[eio_sid]" in inspect.getsource(socketio.AsyncServer._handle_connect)
    assert list(inspect.signature(socketio.AsyncServer._handle_connect).parameters) == [
        "self", "eio_sid", "namespace", "data"]
    # python-socketio makes the engine.io server call its message handler inline, not in a task.
    assert "engineio_options['async_handlers'] = False" in inspect.getsource(socketio.base_server.BaseServer)


def test_what_request_heads_take_from_aiohttp() -> None:
    # engine/heads.py: our Server makes our RequestHandler with what aiohttp's would get, and AppRunner
    # builds its server in `_make_server`.
    assert "RequestHandler(self, loop=self._loop, **self._kwargs)" in inspect.getsource(web_server.Server.__call__)
    assert list(inspect.signature(web_server.Server.__init__).parameters) == [
        "self", "handler", "request_factory", "handler_cancellation", "loop", "kwargs"]
    for name in ("request_handler", "request_factory", "handler_cancellation"):
        assert name in inspect.getsource(web_server.Server.__init__), name
    assert "self._server = await self._make_server()" in inspect.getsource(web_runner.BaseRunner.setup)
    assert "self._app._make_handler(" in inspect.getsource(web.AppRunner._make_server)
    # A head is whole when the parser gives a message (counted in `_request_count`, a 400 included); the
    # handler waits for the next request on `_waiter`; the keep-alive timer, set once, is not moved by data.
    received = inspect.getsource(web_protocol.RequestHandler.data_received)
    assert "self._request_count += 1" in received and "_ErrInfo(status=400" in received
    assert "self._keepalive_handle" not in received
    assert "self._waiter = loop.create_future()" in inspect.getsource(web_protocol.RequestHandler.start)
    assert "self._manager.connection_made(self, real_transport)" in inspect.getsource(
        web_protocol.RequestHandler.connection_made)
    for name in ("_waiter", "_request_count", "_force_close", "_loop", "transport"):
        assert any(name in getattr(c, "__slots__", ()) for c in web_protocol.RequestHandler.__mro__), name


def test_start_up_checks_the_versions_setup_cfg_pins() -> None:
    pins = dict(re.findall(r"^\s+([\w-]+)(?:\[\w+\])?==([\w.]+)", (ROOT / "setup.cfg").read_text(), re.M))
    for package, version in versions.PINNED.items():
        assert pins[package] == version, package
    versions.check()  # the test environment has exactly the pins


def _server(**options: Any) -> socketio.AsyncServer:
    sio = socketio.AsyncServer(async_mode="aiohttp", **options)
    driver.install(sio.eio, compression=False, trusted_proxies=[], writers=Writers(1024, 4096))
    return sio


# engine.io: the socket's queue (realtime/engine/driver.py, realtime/engine/writer.py).

async def test_sockets_get_their_queue_from_server_create_queue() -> None:
    sio = _server()
    socket = async_socket.AsyncSocket(sio.eio, "sid1")
    assert isinstance(socket.queue, Writer)
    for attribute in ("upgraded", "upgrading", "closing", "closed", "sid"):
        assert hasattr(socket, attribute), attribute


async def test_poll_drains_the_queue_and_ends_on_a_failed_get() -> None:
    sio = _server()
    socket = async_socket.AsyncSocket(sio.eio, "sid1")
    one, two = eio_packet.Packet(eio_packet.MESSAGE, "a"), eio_packet.Packet(eio_packet.MESSAGE, "b")
    await socket.queue.put(one)
    await socket.queue.put(two)
    assert await socket.poll() == [one, two]
    # A get() that raises TimeoutError (the writer was cut) ends the session.
    socket.queue.put_nowait(eio_packet.Packet(eio_packet.MESSAGE, "x" * 8192))  # past the 4096 bound
    assert socket.queue.cut
    try:
        await socket.poll()
    except exceptions.QueueEmpty:
        pass
    else:
        raise AssertionError("poll() did not end on a cut writer")


async def test_close_waits_for_the_queue_to_be_written() -> None:
    sio = _server()
    socket = async_socket.AsyncSocket(sio.eio, "sid1")
    socket.connected = True
    closing = asyncio.create_task(socket.close(wait=True))
    await eventually(lambda: socket.queue.qsize() == 1)
    assert not closing.done()  # the CLOSE packet is queued, not yet taken
    assert [packet.packet_type for packet in await socket.poll()] == [eio_packet.CLOSE]
    await asyncio.wait_for(closing, 5)


async def test_the_websocket_driver_gets_the_sockets_bound_handler() -> None:
    sio = _server()
    socket = async_socket.AsyncSocket(sio.eio, "sid1")
    calls: list[tuple[Any, Any]] = []

    class Recording:
        def __init__(self, handler: Any, server: Any) -> None:
            calls.append((handler, server))

        async def __call__(self, environ: dict[str, Any]) -> str:
            return "response"

    sio.eio._async = {**sio.eio._async, "websocket": Recording}
    assert await socket._upgrade_websocket({}) == "response"
    handler, server = calls[0]
    assert handler.__self__ is socket and handler.__func__ is async_socket.AsyncSocket._websocket_handler
    assert server is sio.eio
    assert set(engineio.async_drivers.aiohttp._async) >= {"translate_request", "websocket"}


# socket.io: rooms, packets, the stock emit (realtime/engine/server.py).

async def test_rooms_map_sids_to_engineio_sids() -> None:
    sio = _server()
    sio.manager.set_server(sio)
    sio.manager.initialize()
    sid = await sio.manager.connect("eio-sid-1", "/")
    await sio.enter_room(sid, "asset:BTC_USDC_PERP")
    room = sio.manager.rooms["/"]["asset:BTC_USDC_PERP"]
    assert dict(room) == {sid: "eio-sid-1"}
    assert list(room.values()) == ["eio-sid-1"]


def test_packet_encodings() -> None:
    update = {"asset": "BTC_USDC_PERP", "seq": 1}
    text = _server().packet_class(sio_packet.EVENT, namespace="/", data=["price:update", update]).encode()
    assert text == '2["price:update",{"asset":"BTC_USDC_PERP","seq":1}]'
    binary = _server(serializer="msgpack").packet_class(sio_packet.EVENT, namespace="/",
                                                        data=["price:update", update]).encode()
    assert isinstance(binary, bytes)
    attachments = _server().packet_class(sio_packet.EVENT, namespace="/", data=["x", {"b": b"\x00"}]).encode()
    assert isinstance(attachments, list) and attachments[1] == b"\x00"
    # DirectFanout frames parts itself with these rules; Writer never calls encode(),
    # whose cache would keep raw bytes where a polling client needs base64.
    assert eio_packet.Packet(eio_packet.MESSAGE, text).encode() == "4" + text
    assert eio_packet.Packet(eio_packet.MESSAGE, b"\x00").encode() == b"\x00"
    assert eio_packet.Packet(eio_packet.MESSAGE, b"\x00").encode(b64=True) == "bAA=="


def test_the_stock_emit_takes_namespace_and_room() -> None:
    parameters = inspect.signature(socketio.AsyncManager.emit).parameters
    assert list(parameters)[:5] == ["self", "event", "data", "namespace", "room"]


# aiohttp: frames written to the request's transport interleave with the
# websocket's own, whole and in order (realtime/engine/driver.py, realtime/engine/writer.py).

async def test_direct_frames_and_aiohttp_frames_share_one_ordered_stream() -> None:
    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=False)
        await ws.prepare(request)
        assert request.transport is not None
        await ws.send_str("one")
        request.transport.write(websocket_frame("two") + websocket_frame(b"three"))
        await ws.send_str("four")
        await ws.receive()
        return ws

    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as session, \
                session.ws_connect(f"http://127.0.0.1:{port}/", compress=15) as ws:
            assert ws.compress == 0  # deflate was asked for and refused
            received = [(await ws.receive()).data for _ in range(4)]
            assert received == ["one", "two", b"three", "four"]
    finally:
        await runner.cleanup()


# socket.io: a disconnect asked for a sid still in its connect handler is ignored
# (realtime/engine/server.py: SocketServer.disconnect remembers it, engine/admission.py carries it out).

async def test_python_socketio_ignores_a_disconnect_during_connect() -> None:
    sio = _server()
    sio.manager.set_server(sio)
    sio.manager.initialize()
    sid = await sio.manager.pre_connect("eio-sid-1", "/")
    assert sio.manager.is_pre_connected(sid, "/") and not sio.manager.is_connected(sid, "/")
    assert await sio.manager.can_disconnect(sid, "/") is False
    assert sio.manager.eio_sid_from_sid(sid, "/") == "eio-sid-1"
    await sio.manager.connect(sid, "/")
    assert sio.manager.is_connected(sid, "/")
