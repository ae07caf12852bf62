// Records what a socket.io-client sees of books, prices, keyed state, trades and candles, in the order it sees it,
// for the package's replay tests (clients/js/test/replay.test.mjs, trades-replay.test.mjs).
//   node tests/js/record.mjs '{"url", "token", "prices": [...], "books": [{"asset", "depth"}], "states": [{"name"}],
//                              "trades": [{"asset", "history"}], "candles": [{"asset", "interval", "history"}]}'
// Trades and candles are asked again on every connect, recovered too (the gateway replays neither), as the helpers do.
// Prints {"type": "record", "kind": "connect" | "disconnect" | "event" | "ack", ...} lines and {"type": "ready"}
// once every subscription is acked. stdin: {"cmd": "drop"} cuts the TCP connection (it reconnects and recovers).
import { createInterface } from "node:readline";
import { io } from "socket.io-client";

const plan = JSON.parse(process.argv[2]);
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const record = (entry) => out({ type: "record", ...entry });
const socket = io(plan.url, {
  auth: (cb) => cb({ token: plan.token }),
  transports: ["websocket"],
  reconnectionDelay: 100, reconnectionDelayMax: 300, randomizationFactor: 0,
});
setTimeout(() => { out({ type: "timeout" }); process.exit(1); }, plan.timeoutMs ?? 120000);

socket.onAny((event, ...args) => record({ kind: "event", event, args }));
const ask = (event, request) => new Promise((done) => socket.timeout(5000).emit(event, request, (err, ack) => {
  record({ kind: "ack", event, request, ack: err ? { ok: false, error: { code: "UNAVAILABLE", message: String(err) } } : ack });
  done();
}));
socket.on("connect", async () => {
  record({ kind: "connect", recovered: socket.recovered === true });
  const market = [...(plan.trades ?? []).map((request) => ask("trades:subscribe", request)),
    ...(plan.candles ?? []).map((request) => ask("candles:subscribe", request))];
  if (socket.recovered) return;
  await Promise.all([
    ...market,
    ...(plan.prices?.length ? [ask("price:subscribe", plan.prices)] : []),
    ...(plan.books ?? []).map((book) => ask("book:subscribe", book)),
    ...(plan.states ?? []).map((state) => ask("state:subscribe", state)),
  ]);
  out({ type: "ready" });
});
socket.on("disconnect", () => record({ kind: "disconnect" }));

createInterface({ input: process.stdin }).on("line", (line) => {
  const command = JSON.parse(line);
  if (command.cmd === "drop") {
    const transport = socket.io.engine.transport;
    if (transport.ws && transport.ws._socket) transport.ws._socket.destroy(); else socket.io.engine.close();
  }
});
