// A socket.io-client 4.x session for the engine tests; prints one JSON line per thing it sees.
//   node tests/js/engine.mjs '{"url", "auth", "transports", "msgpack", "subscribe", "silent", "stall"}'
// silent: stop answering the server's pings once connected (engine.io-client 6.6's `_sendPacket`).
// stall: stop reading the websocket once subscribed, until {"cmd": "resume"} arrives on stdin.
import { io } from "socket.io-client";
import { createInterface } from "node:readline";

const plan = JSON.parse(process.argv[2]);
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const options = { reconnection: false, timeout: 10000, transports: plan.transports ?? ["websocket"] };
if (plan.auth) options.auth = plan.auth;
if (plan.msgpack) options.parser = (await import("socket.io-msgpack-parser")).default;

const socket = io(plan.url, options);
socket.io.on("open", () => {
  socket.io.engine.on("upgrade", (transport) => out({ type: "upgrade", transport: transport.name }));
});
socket.on("connect_error", (err) => out({ type: "connect_error", message: err.message, data: err.data ?? null }));
socket.on("disconnect", (reason) => out({ type: "disconnect", reason }));
socket.on("price:update", (update) => out({ type: "update", update }));
socket.onAny((event, ...args) => { if (event !== "price:update") out({ type: "event", event, args }); });
socket.on("connect", async () => {
  const engine = socket.io.engine;
  out({ type: "connect", transport: engine.transport.name });
  engine.on("ping", () => out({ type: "ping" }));
  if (plan.silent) {
    const send = engine._sendPacket.bind(engine);
    engine._sendPacket = (type, ...rest) => { if (type !== "pong") send(type, ...rest); };
  }
  if (plan.subscribe) {
    const ack = await socket.timeout(5000).emitWithAck("price:subscribe", plan.subscribe);
    out({ type: "ack", ack });
  }
  if (plan.stall) {
    engine.transport.ws._socket.pause();
    out({ type: "stalled" });
  }
  out({ type: "ready" });
});

createInterface({ input: process.stdin }).on("line", (line) => {
  const command = JSON.parse(line);
  if (command.cmd === "resume") socket.io.engine.transport.ws?._socket?.resume();
  if (command.cmd === "close") socket.close();
});
