// Several socket.io-client 4.x sessions that live until killed, reconnecting as an app would:
// on every connect they subscribe again. One JSON line per thing seen, tagged with the client's index.
//   node tests/js/cluster_clients.mjs '{"url": "...", "subscribe": [...],
//                                        "clients": [{"token": "<jwt>", "transports": ["polling"]}, ...]}'
import { io } from "socket.io-client";

const plan = JSON.parse(process.argv[2]);
const out = (obj) => process.stdout.write(JSON.stringify({ ...obj, t: Date.now() }) + "\n");

plan.clients.forEach(({ token, transports }, id) => {
  const socket = io(plan.url, {
    forceNew: true,
    auth: { token },
    transports: transports ?? ["websocket"],
    withCredentials: true, // keep nginx's affinity cookie, as a browser does
    timeout: 10000,
  });
  socket.on("connect", async () => {
    out({ type: "connect", id, transport: socket.io.engine.transport.name });
    if (plan.subscribe) {
      try {
        const ack = await socket.timeout(5000).emitWithAck("price:subscribe", plan.subscribe);
        out({ type: "ack", id, instance: ack.instance, subscribed: ack.subscribed, prices: ack.prices });
      } catch (err) {
        out({ type: "ack_timeout", id });
      }
    }
  });
  socket.on("disconnect", (reason) => out({ type: "disconnect", id, reason }));
  socket.on("connect_error", (err) => out({ type: "connect_error", id, message: err.message }));
  socket.on("price:update", (update) => out({ type: "update", id, asset: update.asset, seq: update.seq }));
  socket.onAny((event, ...args) => { if (event !== "price:update") out({ type: "event", id, event, args }); });
});
