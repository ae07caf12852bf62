"""Our layer over python-socketio and python-engineio: the only code that touches their internals.

- `server`: `SocketServer`, the AsyncServer the rest of the gateway talks to
  (rooms, writers, transports, closing) instead of reaching inside it;
- `writer`: each connection's byte-bounded outbound queue and direct frame
  writes, and the one flush policy (a loop turn's frames in one write);
- `driver`: our copy of python-engineio's aiohttp driver (no deflate, real
  client address, `Writer` queues); `proxies`: the client address behind
  trusted proxies;
- `conformance`: Engine.IO sessions as socket.io's protocol test suite
  defines them; `admission`: the handshake gate, the CONNECT deadline and
  attempts;
- `lean`: the lean websocket engine, `websocket` (one lean connection),
  `frames` (RFC 6455: the frames we write, the client's we read), `heartbeat` (one timer for every connection);
- `inbound`: guards on python-socketio's inbound dispatch;
- `packets`: packet encoding fixes (msgpack, polling copies of binary packets);
- `manager`: the client manager (in memory, or Redis with our reconnects);
- `versions`: the pinned versions this package is checked against at start-up;
- `gauges`: what `/metrics` shows of the engine.
"""
