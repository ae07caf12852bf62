// The gateway's wire contract (SPEC §2, §9, §10, §11) as types: every event, payload, ack and error code.
// `RealtimeSocket` is socket.io-client's `Socket` typed with them, so an editor completes event names and
// a wrong payload does not compile.
import type { Socket } from "socket.io-client";

/** Every error code: connect refusals (`connect_error`'s `err.data.code`), acks and the HTTP API. */
export type ErrorCode =
  | "AUTH_REQUIRED"
  | "AUTH_INVALID"
  | "AUTH_EXPIRED"
  | "TOO_MANY_CONNECTIONS"
  | "BAD_REQUEST"
  | "UNKNOWN_ASSET"
  | "FORBIDDEN"
  | "RATE_LIMITED"
  | "TOO_MANY_SUBSCRIPTIONS"
  | "UNAVAILABLE"
  | "INTERNAL"
  | "PAYLOAD_TOO_LARGE";

export const ERROR_CODES: readonly ErrorCode[] = [
  "AUTH_REQUIRED", "AUTH_INVALID", "AUTH_EXPIRED", "TOO_MANY_CONNECTIONS", "BAD_REQUEST", "UNKNOWN_ASSET",
  "FORBIDDEN", "RATE_LIMITED", "TOO_MANY_SUBSCRIPTIONS", "UNAVAILABLE", "INTERNAL", "PAYLOAD_TOO_LARGE",
];

export interface ErrorBody {
  code: ErrorCode;
  message: string;
}

/** A failed ack: every client event may answer this instead of its success shape. */
export interface ErrorAck {
  ok: false;
  error: ErrorBody;
}

/** An ack: the success shape `T` (which has `ok: true`) or an `ErrorAck`; narrow with `if (ack.ok)`. */
export type Ack<T extends { ok: true }> = T | ErrorAck;

/** What a refused connect carries as `connect_error`'s `err.data`. */
export type ConnectRefusal = ErrorBody;

// §2 Prices.

/** `price:update`: prices are integers in the asset's smallest unit, value = bid / 10 ** decimals. */
export interface PriceUpdate {
  asset: string;
  bid: number;
  ask: number;
  decimals: number;
  seq: number;
  ts: number;
}

export type PriceStatusValue = "live" | "stale" | "halted";

export interface PriceStatus {
  asset: string;
  status: PriceStatusValue;
  since: number;
}

export interface Rejection {
  asset: string;
  code: ErrorCode;
}

/** `price:subscribe`: a name, a list, or (§11) `{assets, maxRate}` (at most maxRate updates a second, ≥ 0.1). */
export type PriceSubscribeRequest = string | string[] | { assets: string[]; maxRate?: number | null };

export interface PriceSubscribeOk {
  ok: true;
  subscribed: string[];
  rejected: Rejection[];
  prices: PriceUpdate[];
  statuses: PriceStatus[];
  instance: string;
  /** §11: the granted rate (null = every tick); absent from gateways before rate control. */
  maxRate?: number | null;
}

export interface PriceUnsubscribeOk {
  ok: true;
  unsubscribed: string[];
}

/** §11 `price:rate`: change the rate of these subscriptions (or all) live; null: every tick. */
export interface PriceRateRequest {
  maxRate: number | null;
  assets?: string[];
}

export interface PriceRateOk {
  ok: true;
  maxRate: number | null;
  assets: string[];
}

/** §11 `price:rate` from the server: under overload the pod sends at most `maxRate` per asset (null: it ended). */
export interface RateNotice {
  maxRate: number | null;
  overload: boolean;
}

export interface RefreshRequest {
  token: string;
}

export interface RefreshOk {
  ok: true;
  exp: number;
}

export interface AuthExpiring {
  exp: number;
}

export interface SessionClosed {
  code: ErrorCode;
  message: string;
}

// §9 Order books, trades, candles.

/** A level: `[price, quantity]`, decimal strings; quantity `"0"` in an update: the level left the view. */
export type Level = [price: string, qty: string];

export type BookStatusValue = "live" | "resyncing";

export interface BookRequest {
  asset: string;
  depth: number;
}

/** The `book:subscribe` / `book:snapshot` ack, and the `book:snapshot` event of a recovery. */
export interface BookView {
  ok: true;
  asset: string;
  depth: number;
  seq: number;
  bids: Level[];
  asks: Level[];
  ts: number;
  status: BookStatusValue;
}

/** `book:update`: the levels of the top-`depth` view that changed since `prevSeq`. */
export interface BookUpdate {
  asset: string;
  depth: number;
  seq: number;
  prevSeq: number;
  bids: Level[];
  asks: Level[];
  ts: number;
}

export interface BookStatus {
  asset: string;
  status: BookStatusValue;
}

export interface OkAck {
  ok: true;
}

export interface TradesRequest {
  asset: string;
  history?: number;
}

export interface Trade {
  asset: string;
  id: string | number;
  price: string;
  qty: string;
  side: "buy" | "sell";
  ts: number;
}

export interface TradesOk {
  ok: true;
  asset: string;
  trades: Trade[];
}

export type CandleInterval = "1s" | "1m" | "5m" | "15m" | "1h" | "1d";

export interface CandlesRequest {
  asset: string;
  interval: CandleInterval;
  history?: number;
}

export interface Candle {
  asset: string;
  interval: CandleInterval;
  t: number;
  o: string;
  h: string;
  l: string;
  c: string;
  v: string;
  n: number;
  closed: boolean;
}

export interface CandlesOk {
  ok: true;
  asset: string;
  interval: CandleInterval;
  candles: Candle[];
}

// §10 Channels and keyed state.

export interface ChannelRequest {
  channel: string;
}

export interface ChannelOk {
  ok: true;
  channel: string;
}

/** A recovered channel subscription that is no longer allowed (`FORBIDDEN` or `UNAVAILABLE`). */
export interface ChannelClosed {
  channel: string;
  code: ErrorCode;
}

export type Json = null | boolean | number | string | Json[] | { [field: string]: Json };

export type StateOp =
  | { op: "set"; key: string; value: Json }
  | { op: "merge"; key: string; changes: { [field: string]: Json } }
  | { op: "delete"; key: string };

/** `state:subscribe`: `{name}` for the user's own state, `{name, channel}` for a channel's. */
export interface StateRequest {
  name: string;
  channel?: string;
}

/** The `state:snapshot` event (a recovery that could not replay), and the `state:subscribe` ack's body. */
export interface StateSnapshot {
  name: string;
  channel?: string;
  version: number;
  items: { [key: string]: Json };
}

export interface StateSubscribeOk extends StateSnapshot {
  ok: true;
}

export interface StateUnsubscribeOk {
  ok: true;
  name: string;
  channel?: string;
}

export interface StateUpdate {
  name: string;
  channel?: string;
  version: number;
  ops: StateOp[];
}

/** Every server → client event of the protocol. Private events (to a user, role or channel room) end
 * with their offset string; add your own with `RealtimeSocket<{"order:update": (o: Order, offset: string) => void}>`. */
export interface ProtocolServerEvents {
  "price:update": (update: PriceUpdate) => void;
  "price:status": (status: PriceStatus) => void;
  "price:rate": (notice: RateNotice) => void;
  "auth:expiring": (notice: AuthExpiring) => void;
  "session:closed": (reason: SessionClosed) => void;
  "book:update": (update: BookUpdate) => void;
  "book:status": (status: BookStatus) => void;
  "book:snapshot": (view: BookView) => void;
  trade: (trade: Trade) => void;
  candle: (candle: Candle) => void;
  "channel:closed": (closed: ChannelClosed) => void;
  "state:update": (update: StateUpdate, offset: string) => void;
  "state:snapshot": (snapshot: StateSnapshot) => void;
}

/** Every client → server event: a payload and an ack callback. */
export interface ClientToServerEvents {
  "price:subscribe": (request: PriceSubscribeRequest, ack: (ack: Ack<PriceSubscribeOk>) => void) => void;
  "price:unsubscribe": (request: string | string[], ack: (ack: Ack<PriceUnsubscribeOk>) => void) => void;
  "price:rate": (request: PriceRateRequest, ack: (ack: Ack<PriceRateOk>) => void) => void;
  "auth:refresh": (request: RefreshRequest, ack: (ack: Ack<RefreshOk>) => void) => void;
  "book:subscribe": (request: BookRequest, ack: (ack: Ack<BookView>) => void) => void;
  "book:snapshot": (request: BookRequest, ack: (ack: Ack<BookView>) => void) => void;
  "book:unsubscribe": (request: BookRequest, ack: (ack: Ack<OkAck>) => void) => void;
  "trades:subscribe": (request: TradesRequest, ack: (ack: Ack<TradesOk>) => void) => void;
  "trades:unsubscribe": (request: { asset: string }, ack: (ack: Ack<OkAck>) => void) => void;
  "candles:subscribe": (request: CandlesRequest, ack: (ack: Ack<CandlesOk>) => void) => void;
  "candles:unsubscribe": (request: { asset: string; interval: CandleInterval },
    ack: (ack: Ack<OkAck>) => void) => void;
  "channel:subscribe": (request: ChannelRequest, ack: (ack: Ack<ChannelOk>) => void) => void;
  "channel:unsubscribe": (request: ChannelRequest, ack: (ack: Ack<ChannelOk>) => void) => void;
  "state:subscribe": (request: StateRequest, ack: (ack: Ack<StateSubscribeOk>) => void) => void;
  "state:unsubscribe": (request: StateRequest, ack: (ack: Ack<StateUnsubscribeOk>) => void) => void;
}

/** An event map of the app's own private events (name → listener). */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type EventsMap = { [event: string]: (...args: any[]) => void };

/** socket.io-client's socket, typed with the protocol (and the app's private events `P`). */
// eslint-disable-next-line @typescript-eslint/no-empty-object-type
export type RealtimeSocket<P extends EventsMap = {}> = Socket<ProtocolServerEvents & P, ClientToServerEvents>;

/** Connect options' `auth`: the token (socket.io-client adds `pid` and `offset` itself on reconnect). */
export interface ConnectAuth {
  token: string;
}
