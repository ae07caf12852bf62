"""Our layer over python-socketio and python-engineio: the only code that touches their internals.

- `server`: `SocketServer`, the AsyncServer the rest of the gateway talks to
  (rooms, writers, transports, closing) instead of reaching inside it;
- `driver`: our copy of python-engineio's aiohttp driver (no deflate, real
  client address, `Writer` queues);
- `inbound`: guards on python-socketio's inbound dispatch;
- `packets`: packet encoding fixes (msgpack, polling copies of binary packets);
- `manager`: the client manager (in memory, or Redis with our reconnects);
- `versions`: the pinned versions this package is checked against at start-up.
"""
