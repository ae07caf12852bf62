// A msgpack socket.io-client that the server disconnects: does it stop, as it must, or reconnect?
//   node tests/js/disconnect.mjs '{"url": "...", "auth": {...}, "transports": ["websocket"]}'
// Prints {"type": "connect", "id"} once connected, then {"type": "disconnect", "reason", "active"}.
import { io } from "socket.io-client";
import parser from "socket.io-msgpack-parser";

const plan = JSON.parse(process.argv[2]);
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
// Reconnection on: only a real "io server disconnect" keeps the client from coming back.
const socket = io(plan.url, { parser, auth: plan.auth, transports: plan.transports, reconnectionDelay: 100 });
const done = (code) => { socket.close(); setTimeout(() => process.exit(code), 10); };
setTimeout(() => { out({ type: "timeout" }); done(1); }, plan.timeoutMs ?? 20000);

let connects = 0;
socket.on("connect", () => {
  connects += 1;
  out({ type: "connect", id: socket.id, count: connects });
});
socket.on("connect_error", (err) => out({ type: "connect_error", message: err.message }));
socket.on("disconnect", (reason) => {
  out({ type: "disconnect", reason, active: socket.active });
  done(0);
});
