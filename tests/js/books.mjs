// A socket.io-client 4.x that keeps order books as the README shows, and prints each book after every update.
//   node tests/js/books.mjs '{"url": "...", "token": "...", "books": [{"asset": "BTC_USDC_PERP", "depth": 10}],
//                             "calls": [["book:subscribe", {...}], ...]}'
// "calls" are emitted once, before the books, each ack printed ({"type": "ack"}). Printed lines:
//   {"type": "connect", "recovered"}, {"type": "view", "via": "ack" | "event" | "resync", "asset", "depth", "seq", ...},
//   {"type": "book", "asset", "depth", "seq", "prevSeq", "bids", "asks", "changed": [...]} after each update
//   (bids and asks of the whole kept view, best first; "changed": the update's levels, with what they replaced),
//   {"type": "gap", ...} when an update does not follow (the client then asks book:snapshot),
//   {"type": "status", "asset", "status"}, {"type": "disconnect"}. Every line has "t", its arrival time in ms.
// stdin: {"cmd": "drop"} cuts the TCP connection (socket.io-client reconnects and recovers), {"cmd": "quit"},
//   {"cmd": "emit", "event", "payload"} emits an event and prints its ack ({"type": "ack", "event", "payload", "ack"}).
import { createInterface } from "node:readline";
import { io } from "socket.io-client";

const plan = JSON.parse(process.argv[2]);
const out = (obj) => process.stdout.write(JSON.stringify({ ...obj, t: Date.now() }) + "\n");
const socket = io(plan.url, {
  auth: (cb) => cb({ token: plan.token }),
  transports: plan.transports ?? ["websocket"],
  reconnectionDelay: 100, reconnectionDelayMax: 300, randomizationFactor: 0,
});
setTimeout(() => { out({ type: "timeout" }); process.exit(1); }, plan.timeoutMs ?? 120000);

const books = new Map(); // "ASSET:depth" -> { seq, bids: Map, asks: Map }
const key = (m) => `${m.asset}:${m.depth}`;
const sorted = (side, desc) => [...side].sort((a, b) => (Number(a[0]) - Number(b[0])) * (desc ? -1 : 1));

function keep(view, via) {
  books.set(key(view), { seq: view.seq, bids: new Map(view.bids), asks: new Map(view.asks) });
  out({ type: "view", via, asset: view.asset, depth: view.depth, seq: view.seq, bids: view.bids, asks: view.asks,
        status: view.status });
}

// Acks by callback, not `await emitWithAck`: the first update may come in the same read as the ack, and
// an await would take it before the view is kept.
const ask = (event, book, via) => socket.timeout(5000).emit(event, book, (err, view) => {
  if (err || !view.ok) out({ type: "ack", event, payload: book, ack: err ? { error: String(err) } : view });
  else keep(view, via);
});
socket.on("book:snapshot", (view) => keep(view, "event"));
socket.on("book:status", (status) => out({ type: "status", ...status }));
socket.on("book:update", (update) => {
  const book = books.get(key(update));
  if (!book) return;
  if (update.prevSeq !== book.seq) {
    out({ type: "gap", asset: update.asset, depth: update.depth, seq: update.seq, prevSeq: update.prevSeq, had: book.seq });
    books.delete(key(update));
    return ask("book:snapshot", { asset: update.asset, depth: update.depth }, "resync");
  }
  const changed = [];
  for (const side of ["bids", "asks"]) {
    for (const [price, qty] of update[side]) {
      changed.push([side, price, qty, book[side].get(price) ?? null]);
      if (qty === "0") book[side].delete(price); else book[side].set(price, qty);
    }
  }
  book.seq = update.seq;
  out({ type: "book", asset: update.asset, depth: update.depth, seq: update.seq, prevSeq: update.prevSeq,
        bids: sorted(book.bids, true), asks: sorted(book.asks, false), changed });
});

let first = true;
socket.on("connect", async () => {
  out({ type: "connect", recovered: socket.recovered === true });
  if (socket.recovered) return;
  books.clear();
  if (first) {
    first = false;
    for (const [event, payload] of plan.calls ?? []) {
      out({ type: "ack", event, payload, ack: await socket.timeout(5000).emitWithAck(event, payload) });
    }
  }
  const acks = (plan.books ?? []).map((book) => new Promise((done) => {
    socket.timeout(5000).emit("book:subscribe", book, (err, view) => {
      if (err || !view.ok) out({ type: "ack", event: "book:subscribe", payload: book, ack: err ? { error: String(err) } : view });
      else keep(view, "ack");
      done();
    });
  }));
  await Promise.all(acks);
  out({ type: "subscribed" });
});
socket.on("disconnect", (reason) => out({ type: "disconnect", reason }));
socket.on("connect_error", (err) => out({ type: "connect_error", message: err.message }));

createInterface({ input: process.stdin }).on("line", (line) => {
  const command = JSON.parse(line);
  if (command.cmd === "drop") {
    const transport = socket.io.engine.transport;
    if (transport.ws && transport.ws._socket) transport.ws._socket.destroy(); else socket.io.engine.close();
  } else if (command.cmd === "emit") {
    socket.timeout(5000).emit(command.event, command.payload, (err, ack) =>
      out({ type: "ack", event: command.event, payload: command.payload, ack: err ? { error: String(err) } : ack }));
  } else if (command.cmd === "quit") {
    socket.close();
    setTimeout(() => process.exit(0), 10);
  }
});
