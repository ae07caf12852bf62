// A socket.io-client 4.x session driven by a JSON plan; prints one JSON line per thing it sees.
//   node tests/js/client.mjs '{"url": "...", "auth": {...}, "subscribe": [...], "updates": 3}'
import { io } from "socket.io-client";

const plan = JSON.parse(process.argv[2]);
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const options = { reconnection: false, timeout: 10000, transports: plan.transports ?? ["websocket"] };
if (plan.auth) options.auth = plan.auth;
if (plan.query) options.query = plan.query;
if (plan.headers) options.extraHeaders = plan.headers;
if (plan.msgpack) options.parser = (await import("socket.io-msgpack-parser")).default;

const socket = io(plan.url, options);
const done = (code = 0) => { socket.close(); setTimeout(() => process.exit(code), 10); };
setTimeout(() => { out({ type: "timeout" }); done(1); }, plan.timeoutMs ?? 15000);

let updates = 0;
// plan.stay: keep the session until the server ends it, and report how it ended.
socket.on("disconnect", (reason) => { if (plan.stay) { out({ type: "disconnect", reason }); done(); } });
socket.on("connect_error", (err) => { out({ type: "connect_error", message: err.message, data: err.data ?? null }); done(); });
socket.on("price:update", (update) => {
  out({ type: "update", update });
  if (++updates >= (plan.updates ?? 0)) done();
});
socket.onAny((event, ...args) => { if (event !== "price:update") out({ type: "event", event, args }); });
socket.on("connect", async () => {
  out({ type: "connect", transport: socket.io.engine.transport.name });
  if (plan.subscribe) {
    const ack = await socket.timeout(5000).emitWithAck("price:subscribe", plan.subscribe);
    out({ type: "ack", ack });
  }
  if (plan.emit) {
    for (const [event, ...args] of plan.emit) {
      const ack = await socket.timeout(5000).emitWithAck(event, ...args);
      out({ type: "ack", event, ack });
    }
  }
  out({ type: "ready" });
  if (!(plan.updates > 0) && !plan.stay) done();
});
