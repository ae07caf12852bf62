// socket.io-client 4.x sessions for the rate tests (issue 23): each subscribes with its own payload, then
// prints what it sees, tagged with its index and the arrival time; commands come on stdin, one JSON a line.
//   node tests/js/rates.mjs '{"url": "...", "clients": [{"token": "<jwt>", "subscribe": {...}}, ...],
//                             "count": false}'
// With "count": true, price updates are only counted per client and asset (many clients, many ticks):
// {"report": true} on stdin prints {"type": "report", "counts": [{asset: n}], "p99Age", "maxAge"} (ms from
// a tick's ts to its arrival, every client) since the last report; price updates are not printed one by one.
// stdin: {"id": 0, "emit": ["price:rate", {"maxRate": 10}]} -> {"type": "ack", "id", "event", "ack"}.
import { io } from "socket.io-client";
import { createInterface } from "node:readline";

const plan = JSON.parse(process.argv[2]);
const out = (obj) => process.stdout.write(JSON.stringify({ ...obj, t: Date.now() }) + "\n");
const sockets = [];
const counts = [];
const ages = [];  // per client: ms from a tick's ts to its arrival

plan.clients.forEach(({ token, subscribe }, id) => {
  const socket = io(plan.url, { forceNew: true, auth: { token }, transports: ["websocket"], reconnection: false,
                                timeout: 20000 });
  sockets.push(socket);
  counts.push({});
  ages.push([]);
  socket.on("connect", async () => {
    out({ type: "connect", id });
    try {
      const ack = await socket.timeout(20000).emitWithAck("price:subscribe", subscribe);
      out({ type: "ack", id, event: "price:subscribe", ack });
    } catch (err) {
      out({ type: "ack_timeout", id, event: "price:subscribe" });
    }
  });
  socket.on("price:update", (update) => {
    if (plan.count) {
      counts[id][update.asset] = (counts[id][update.asset] ?? 0) + 1;
      ages[id].push(Date.now() - update.ts);
    } else {
      out({ type: "update", id, update });
    }
  });
  socket.onAny((event, ...args) => { if (event !== "price:update") out({ type: "event", id, event, args }); });
  socket.on("disconnect", (reason) => out({ type: "disconnect", id, reason }));
  socket.on("connect_error", (err) => out({ type: "connect_error", id, message: err.message }));
});

createInterface({ input: process.stdin }).on("line", async (line) => {
  const command = JSON.parse(line);
  if (command.report) {
    const all = ages.flat().sort((a, b) => a - b);
    const p99Age = all.length ? all[Math.min(all.length - 1, Math.floor(all.length * 0.99))] : null;
    out({ type: "report", counts, p99Age, maxAge: all.length ? all[all.length - 1] : null });
    for (const list of ages) list.length = 0;
    for (let i = 0; i < counts.length; i++) counts[i] = {};
    return;
  }
  const [event, ...args] = command.emit;
  try {
    const ack = await sockets[command.id].timeout(10000).emitWithAck(event, ...args);
    out({ type: "ack", id: command.id, event, ack });
  } catch (err) {
    out({ type: "ack_timeout", id: command.id, event });
  }
});
