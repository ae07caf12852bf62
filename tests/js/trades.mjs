// A socket.io-client 4.x that subscribes to trades and candles and prints every ack and event it gets.
//   node tests/js/trades.mjs '{"url": "...", "token": "...", "calls": [["trades:subscribe", {...}], ...]}'
// "calls" are emitted in order on the first connect, each ack printed. Printed lines (each with "at", Date.now()):
//   {"type": "connect", "recovered"}, {"type": "ack", "event", "payload", "ack"}, {"type": "subscribed"},
//   {"type": "trade", ...the event}, {"type": "candle", ...the event}, {"type": "disconnect"}.
// stdin: {"cmd": "drop"} cuts the TCP connection (socket.io-client reconnects and recovers),
//        {"cmd": "call", "event", "payload"} emits one more call, {"cmd": "quit"}.
import { createInterface } from "node:readline";
import { io } from "socket.io-client";

const plan = JSON.parse(process.argv[2]);
const out = (obj) => process.stdout.write(JSON.stringify({ ...obj, at: Date.now() }) + "\n");
const socket = io(plan.url, {
  auth: (cb) => cb({ token: plan.token }),
  transports: plan.transports ?? ["websocket"],
  reconnectionDelay: 100, reconnectionDelayMax: 300, randomizationFactor: 0,
});
setTimeout(() => { out({ type: "timeout" }); process.exit(1); }, plan.timeoutMs ?? 120000);

const call = async (event, payload) => {
  let ack;
  try { ack = await socket.timeout(5000).emitWithAck(event, payload); } catch (err) { ack = { error: String(err) }; }
  out({ type: "ack", event, payload, ack });
};
socket.on("trade", (trade) => out({ ...trade, type: "trade" }));
socket.on("candle", (candle) => out({ ...candle, type: "candle" }));

let first = true;
socket.on("connect", async () => {
  out({ type: "connect", recovered: socket.recovered === true });
  if (!first) return;
  first = false;
  for (const [event, payload] of plan.calls ?? []) await call(event, payload);
  out({ type: "subscribed" });
});
socket.on("disconnect", (reason) => out({ type: "disconnect", reason }));
socket.on("connect_error", (err) => out({ type: "connect_error", message: err.message }));

createInterface({ input: process.stdin }).on("line", async (line) => {
  const command = JSON.parse(line);
  if (command.cmd === "drop") {
    const transport = socket.io.engine.transport;
    if (transport.ws && transport.ws._socket) transport.ws._socket.destroy(); else socket.io.engine.close();
  } else if (command.cmd === "call") {
    await call(command.event, command.payload);
  } else if (command.cmd === "quit") {
    socket.close();
    setTimeout(() => process.exit(0), 10);
  }
});
