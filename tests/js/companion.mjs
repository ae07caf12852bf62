// The typed client package (clients/js, @realtime/client) against a real gateway: its prices, book, state,
// trades and candles helpers on one socket.io-client socket, each printing its view whenever it changes.
//   node tests/js/companion.mjs '{"url", "token", "prices": [...], "maxRate", "books": [{"asset", "depth"}],
//                                 "states": [{"name", "channel"?}], "trades": [{"asset", "last"}],
//                                 "candles": [{"asset", "interval", "history"}]}'
// Printed lines: {"type": "connect", "recovered"}, {"type": "ready"} once every helper holds a view,
//   {"type": "view", "via": "helper", "asset", "depth", "seq", "bids", "asks"} (tests/support/books.py's shape),
//   {"type": "book-status", "asset", "status"}, {"type": "gap", ...} (the helper asked book:snapshot),
//   {"type": "price", ...price:update}, {"type": "price-status", "asset", "status"},
//   {"type": "state", "name", "channel", "version", "items"}, {"type": "tape", "asset", "trades"} (the kept
//   trades), {"type": "new-trade", ...trade} (each trade event of the helper), {"type": "candles", "asset",
//   "interval", "candles"}, {"type": "error", ...}, {"type": "disconnect"}.
// stdin: {"cmd": "drop"} cuts the TCP connection (socket.io-client reconnects and recovers), {"cmd": "quit"}.
import { createInterface } from "node:readline";
import { io } from "socket.io-client";
import { book, candles, prices, state, trades } from "@realtime/client";

const plan = JSON.parse(process.argv[2]);
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const socket = io(plan.url, {
  auth: (cb) => cb({ token: plan.token }),
  transports: ["websocket"],
  reconnectionDelay: 100, reconnectionDelayMax: 300, randomizationFactor: 0,
});
setTimeout(() => { out({ type: "timeout" }); process.exit(1); }, plan.timeoutMs ?? 120000);

const waiting = new Set();
const ready = (what) => {
  if (waiting.delete(what) && waiting.size === 0) out({ type: "ready" });
};

if (plan.prices?.length) {
  waiting.add("prices");
  const quotes = prices(socket, plan.prices, plan.maxRate === undefined ? {} : { maxRate: plan.maxRate });
  quotes.on("subscribed", () => ready("prices"));
  quotes.on("price", (update) => out({ type: "price", ...update }));
  quotes.on("status", (asset, status) => out({ type: "price-status", asset, status }));
  quotes.on("error", (error) => out({ type: "error", helper: "prices", ...error }));
}
for (const { asset, depth } of plan.books ?? []) {
  waiting.add(`book:${asset}:${depth}`);
  const kept = book(socket, asset, depth);
  kept.on("view", (view) => {
    out({ type: "view", via: "helper", ...view });
    ready(`book:${asset}:${depth}`);
  });
  kept.on("status", (status) => out({ type: "book-status", asset, depth, status }));
  kept.on("gap", (had, update) => out({ type: "gap", asset, depth, had, seq: update.seq, prevSeq: update.prevSeq }));
  kept.on("error", (error) => out({ type: "error", helper: "book", ...error }));
}
for (const { name, channel } of plan.states ?? []) {
  waiting.add(`state:${name}:${channel}`);
  const kept = state(socket, name, channel === undefined ? {} : { channel });
  kept.on("version", (version) => {
    out({ type: "state", name, channel: channel ?? null, version, items: kept.entries() });
    ready(`state:${name}:${channel}`);
  });
  kept.on("error", (error) => out({ type: "error", helper: "state", ...error }));
}
for (const { asset, last } of plan.trades ?? []) {
  waiting.add(`trades:${asset}`);
  const tape = trades(socket, asset, { last });
  tape.on("trade", (trade) => out({ ...trade, type: "new-trade" }));
  tape.on("view", (kept) => {
    out({ type: "tape", asset, trades: kept });
    ready(`trades:${asset}`);
  });
  tape.on("error", (error) => out({ type: "error", helper: "trades", ...error }));
}
for (const { asset, interval, history } of plan.candles ?? []) {
  waiting.add(`candles:${asset}:${interval}`);
  const chart = candles(socket, asset, interval, { history });
  chart.on("view", (kept) => {
    out({ type: "candles", asset, interval, candles: kept });
    ready(`candles:${asset}:${interval}`);
  });
  chart.on("error", (error) => out({ type: "error", helper: "candles", ...error }));
}

socket.on("connect", () => out({ type: "connect", recovered: socket.recovered === true }));
socket.on("disconnect", (reason) => out({ type: "disconnect", reason }));
socket.on("connect_error", (err) => out({ type: "connect_error", message: err.message }));

createInterface({ input: process.stdin }).on("line", (line) => {
  const command = JSON.parse(line);
  if (command.cmd === "drop") {
    const transport = socket.io.engine.transport;
    if (transport.ws && transport.ws._socket) transport.ws._socket.destroy(); else socket.io.engine.close();
  } else if (command.cmd === "quit") {
    socket.close();
    setTimeout(() => process.exit(0), 10);
  }
});
