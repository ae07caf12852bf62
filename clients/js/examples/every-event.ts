// Type check (`npm run check`, tsc --noEmit): an app that uses every event of the protocol, typed.
import { io } from "socket.io-client";
import {
  book, candles, prices, state, trades,
  type Ack, type BookView, type Candle, type ErrorCode, type PriceSubscribeOk, type RealtimeSocket, type Trade,
} from "../src/index.js";

interface Order { id: string; status: "open" | "filled" }
// The app's own private events, beside the protocol's.
const socket: RealtimeSocket<{ "order:update": (order: Order, offset: string) => void }> =
  io("http://127.0.0.1:7070", { auth: { token: "jwt" } });

socket.on("connect_error", (err) => {
  const code = (err as Error & { data?: { code: ErrorCode } }).data?.code;
  console.log(code);
});
socket.on("price:update", ({ asset, bid, ask, decimals, seq, ts }) => console.log(asset, bid / 10 ** decimals, ask, seq, ts));
socket.on("price:status", ({ asset, status, since }) => console.log(asset, status === "halted", since));
socket.on("price:rate", ({ maxRate, overload }) => console.log(overload ? maxRate : "full rate"));
socket.on("auth:expiring", ({ exp }) => {
  socket.emit("auth:refresh", { token: "new" }, (ack) => console.log(ack.ok ? ack.exp : ack.error.code));
});
socket.on("session:closed", ({ code, message }) => console.log(code, message));
socket.on("book:update", ({ asset, depth, seq, prevSeq, bids, asks, ts }) => console.log(asset, depth, seq - prevSeq, bids[0]?.[0], asks.length, ts));
socket.on("book:status", ({ status }) => console.log(status === "resyncing"));
socket.on("book:snapshot", (view: BookView) => console.log(view.seq, view.status));
socket.on("trade", (trade: Trade) => console.log(trade.side, trade.price, trade.qty, trade.id));
socket.on("candle", (candle: Candle) => console.log(candle.t, candle.o, candle.h, candle.l, candle.c, candle.v, candle.n, candle.closed));
socket.on("channel:closed", ({ channel, code }) => console.log(channel, code));
socket.on("state:update", ({ name, channel, version, ops }, offset) => {
  for (const op of ops) {
    if (op.op === "set") console.log(op.key, op.value);
    else if (op.op === "merge") console.log(op.key, op.changes);
    else console.log(op.key);
  }
  console.log(name, channel, version, offset.length);
});
socket.on("state:snapshot", ({ name, version, items }) => console.log(name, version, Object.keys(items)));
socket.on("order:update", (order, offset) => console.log(order.status, offset));

socket.emit("price:subscribe", ["BTC_USDC_PERP"], (ack) => {
  if (!ack.ok) return console.log(ack.error.code, ack.error.message);
  const ok: PriceSubscribeOk = ack;
  console.log(ok.subscribed, ok.rejected.map((r) => r.code), ok.prices[0]?.seq, ok.statuses[0]?.status, ok.maxRate);
});
socket.emit("price:subscribe", { assets: ["BTC_USDC_PERP"], maxRate: 2 }, () => undefined);
socket.emit("price:subscribe", "ETH_USDC_PERP", () => undefined);
socket.emit("price:unsubscribe", ["BTC_USDC_PERP"], (ack) => console.log(ack.ok && ack.unsubscribed));
socket.emit("price:rate", { maxRate: 1, assets: ["BTC_USDC_PERP"] }, (ack) => console.log(ack.ok && ack.maxRate, ack.ok && ack.assets));
socket.emit("price:rate", { maxRate: null }, () => undefined);
socket.timeout(5000).emit("book:subscribe", { asset: "BTC_USDC_PERP", depth: 10 }, (err, ack: Ack<BookView>) => {
  if (!err && ack.ok) console.log(ack.bids, ack.asks, ack.status);
});
socket.emit("book:snapshot", { asset: "BTC_USDC_PERP", depth: 10 }, (ack) => console.log(ack.ok && ack.seq));
socket.emit("book:unsubscribe", { asset: "BTC_USDC_PERP", depth: 10 }, (ack) => console.log(ack.ok));
socket.emit("trades:subscribe", { asset: "BTC_USDC_PERP", history: 50 }, (ack) => console.log(ack.ok && ack.trades.length));
socket.emit("trades:unsubscribe", { asset: "BTC_USDC_PERP" }, (ack) => console.log(ack.ok));
socket.emit("candles:subscribe", { asset: "BTC_USDC_PERP", interval: "1m", history: 100 }, (ack) => console.log(ack.ok && ack.candles.length));
socket.emit("candles:unsubscribe", { asset: "BTC_USDC_PERP", interval: "1m" }, (ack) => console.log(ack.ok));
socket.emit("channel:subscribe", { channel: "bot:42" }, (ack) => console.log(ack.ok ? ack.channel : ack.error.code));
socket.emit("channel:unsubscribe", { channel: "bot:42" }, (ack) => console.log(ack.ok));
socket.emit("state:subscribe", { name: "positions", channel: "bot:42" }, (ack) => console.log(ack.ok && ack.version, ack.ok && ack.items));
socket.emit("state:unsubscribe", { name: "positions" }, (ack) => console.log(ack.ok && ack.name));

// The helpers on the same socket.
const quotes = prices(socket, ["BTC_USDC_PERP"], { maxRate: 2 });
quotes.on("price", (update) => console.log(update.bid, quotes.status(update.asset)));
quotes.on("status", (asset, status, since) => console.log(asset, status, since ?? Date.now()));
quotes.on("rate", (granted) => console.log(granted === null ? "every tick" : granted));
quotes.setMaxRate(null);
const btc = book(socket, "BTC_USDC_PERP", 10);
btc.on("view", ({ seq, bids, asks }) => console.log(seq, bids[0], asks[0]));
btc.on("status", (status) => console.log(status === "resyncing"));
const positions = state(socket, "positions");
positions.on("change", (key, value, version) => console.log(key, value, version));
state(socket, "positions", { channel: "bot:42" }).on("status", (status) => console.log(status));
const tape = trades(socket, "BTC_USDC_PERP", { last: 30 });
tape.on("trade", ({ id, price, qty, side }) => console.log(id, price, qty, side));
tape.on("view", (kept) => console.log(kept.length, tape.trades[0]?.ts, tape.status));
const chart = candles(socket, "BTC_USDC_PERP", "1m", { history: 200 });
chart.on("candle", ({ t, c, closed }) => console.log(t, c, closed));
chart.on("view", (bars) => console.log(bars.length, chart.candles[0]?.closed, chart.interval));
