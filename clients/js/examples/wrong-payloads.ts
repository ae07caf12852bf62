// Type check (`npm run check`): each line below is a mistake the types catch. `@ts-expect-error` fails the
// check if the next line compiles, so every one of these is proven to be refused.
import { io } from "socket.io-client";
import { book, candles, prices, state, trades, type BookView, type ErrorCode, type RealtimeSocket, type StateOp } from "../src/index.js";

const socket: RealtimeSocket = io("http://127.0.0.1:7070");
const noop = () => undefined;

// @ts-expect-error an unknown client event
socket.emit("price:subscrib", ["BTC_USDC_PERP"], noop);
// @ts-expect-error price:subscribe takes names, not numbers
socket.emit("price:subscribe", [42], noop);
// @ts-expect-error maxRate is a number
socket.emit("price:subscribe", { assets: ["BTC_USDC_PERP"], maxRate: "2" }, noop);
// @ts-expect-error price:rate takes {maxRate}
socket.emit("price:rate", 2, noop);
// @ts-expect-error the server's price:rate notice has no assets
socket.on("price:rate", ({ assets }) => assets);
// @ts-expect-error a book request needs its depth
socket.emit("book:subscribe", { asset: "BTC_USDC_PERP" }, noop);
// @ts-expect-error depth is a number
socket.emit("book:snapshot", { asset: "BTC_USDC_PERP", depth: "10" }, noop);
// @ts-expect-error auth:refresh takes {token}
socket.emit("auth:refresh", "jwt", noop);
// @ts-expect-error channel:subscribe takes {channel}
socket.emit("channel:subscribe", { name: "bot:42" }, noop);
// @ts-expect-error state:subscribe needs a name
socket.emit("state:subscribe", { channel: "bot:42" }, noop);
// @ts-expect-error no such candle interval
socket.emit("candles:subscribe", { asset: "BTC_USDC_PERP", interval: "2m" }, noop);
// @ts-expect-error an ack must be narrowed with `ok` before its fields are read
socket.emit("price:subscribe", ["BTC_USDC_PERP"], (ack) => console.log(ack.subscribed));
// @ts-expect-error a book ack's levels are [price, qty] strings
socket.emit("book:subscribe", { asset: "BTC_USDC_PERP", depth: 10 }, (ack) => ack.ok && ack.bids[0]?.[0].toFixed(2));
// @ts-expect-error an unknown server event
socket.on("price:updates", noop);
// @ts-expect-error price:update's bid is a number
socket.on("price:update", (update) => update.bid.toUpperCase());
// @ts-expect-error book:status is live or resyncing
socket.on("book:status", ({ status }) => status === "halted");
// @ts-expect-error price:status is live, stale or halted
socket.on("price:status", ({ status }) => status === "resyncing");
// @ts-expect-error state:update's offset is a string
socket.on("state:update", (_update, offset: number) => offset);
// @ts-expect-error no such error code
const code: ErrorCode = "NOT_FOUND";
// @ts-expect-error a merge carries changes, not a value
const op: StateOp = { op: "merge", key: "1", value: {} };
// @ts-expect-error a book view's status is live or resyncing
const view: BookView = { ok: true, asset: "A", depth: 10, seq: 1, bids: [], asks: [], ts: 0, status: "stale" };
// @ts-expect-error prices() takes a list of assets
prices(socket, "BTC_USDC_PERP");
// @ts-expect-error maxRate is a number
prices(socket, ["BTC_USDC_PERP"], { maxRate: "fast" });
// @ts-expect-error book() needs a depth
book(socket, "BTC_USDC_PERP");
// @ts-expect-error no such helper event
book(socket, "BTC_USDC_PERP", 10).on("update", noop);
// @ts-expect-error a state's channel is a string
state(socket, "positions", { channel: 42 });
// @ts-expect-error a change listener gets (key, value, version)
state(socket, "positions").on("change", (key: number) => key);
// @ts-expect-error trades() keeps `last` trades, a number
trades(socket, "BTC_USDC_PERP", { last: "30" });
// @ts-expect-error a trade listener gets a Trade, whose price is a decimal string
trades(socket, "BTC_USDC_PERP").on("trade", (trade) => trade.price.toFixed(2));
// @ts-expect-error candles() needs an interval
candles(socket, "BTC_USDC_PERP");
// @ts-expect-error no such candle interval
candles(socket, "BTC_USDC_PERP", "2m");
// @ts-expect-error a view is a list of candles
candles(socket, "BTC_USDC_PERP", "1m").on("view", (bars: Record<string, number>) => bars);
console.log(code, op, view);
