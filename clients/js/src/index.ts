// @realtime/client: the gateway's protocol as types, and helpers that keep prices, books, keyed state, trades and candles right.
export * from "./protocol.js";
export { Prices, prices } from "./prices.js";
export type { PricesEvents, PricesOptions } from "./prices.js";
export { Book, book } from "./book.js";
export type { BookEvents, BookHelperStatus, BookSnapshot } from "./book.js";
export { State, state, applyOp } from "./state.js";
export type { StateEvents, StateHelperStatus, StateOptions } from "./state.js";
export { compareDecimal } from "./listeners.js";
export { Trades, trades } from "./trades.js";
export type { TradesEvents, TradesHelperStatus, TradesOptions } from "./trades.js";
export { Candles, candles } from "./candles.js";
export type { CandlesEvents, CandlesHelperStatus, CandlesOptions } from "./candles.js";
