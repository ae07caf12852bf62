// trades(): one asset's last N trades from the `trades:subscribe` ack and `trade` events (SPEC §9).
import type { ErrorBody, RealtimeSocket, Trade } from "./protocol.js";
import { ACK_TIMEOUT, RETRY_MS, TRANSIENT, ackError } from "./acks.js";
import { Emitter } from "./listeners.js";

export interface TradesOptions {
  /** How many trades to keep (and to ask the ack for): at most the gateway's REALTIME_TRADES_HISTORY (100). */
  last?: number;
}

/** `live`: trades flow; `resyncing`: a (re)subscription's ack is awaited, or the connection is lost. */
export type TradesHelperStatus = "live" | "resyncing";

export interface TradesEvents {
  /** A trade the helper had not seen, in feed order (the ack's first, oldest first; then live ones). */
  trade: (trade: Trade) => void;
  /** The kept trades changed: the last N, oldest first. */
  view: (trades: Trade[]) => void;
  status: (status: TradesHelperStatus) => void;
  error: (error: ErrorBody) => void;
}

const DEFAULT_LAST = 50;
const SEEN = 200; // at least the gateway's REALTIME_TRADES_HISTORY (100): an ack repeats no more than that

const key = (trade: Trade) => String(trade.id);

/** Keeps a tape: the ack's trades, then each `trade` once. The gateway does not replay trades after a
 * reconnect (recovered or not), so the helper subscribes again for the history and merges it by id. */
export class Trades extends Emitter<TradesEvents> {
  private held: Trade[] = [];
  private seen = new Set<string>(); // the ids of the last trades taken (more than kept: stale copies are dropped)
  private seenOrder: string[] = [];
  private asking = 0;
  private requests = 0;
  private buffered: Trade[] = []; // live trades that came while an ack was awaited
  private state: TradesHelperStatus = "resyncing";
  private readonly detach: (() => void)[] = [];
  private closed = false;
  readonly last: number;

  constructor(private readonly socket: RealtimeSocket, public asset: string, options: TradesOptions = {}) {
    super();
    this.last = options.last ?? DEFAULT_LAST;
    const onTrade = (trade: Trade) => this.mine(trade) && this.live(trade);
    // Recovered or not, what was sent while away is lost: ask the history again (a no-op join when recovered).
    const onConnect = () => this.subscribe();
    const onDisconnect = () => {
      this.asking = 0;
      this.buffered = [];
      this.setStatus("resyncing");
    };
    socket.on("trade", onTrade);
    socket.on("connect", onConnect);
    socket.on("disconnect", onDisconnect);
    this.detach.push(() => socket.off("trade", onTrade), () => socket.off("connect", onConnect),
      () => socket.off("disconnect", onDisconnect));
    if (socket.connected) this.subscribe();
  }

  /** The last N trades, oldest first. */
  get trades(): Trade[] {
    return [...this.held];
  }

  get status(): TradesHelperStatus {
    return this.state;
  }

  close(): void {
    this.closed = true;
    for (const off of this.detach.splice(0)) off();
    if (this.socket.connected) this.socket.emit("trades:unsubscribe", { asset: this.asset }, () => undefined);
    this.clearListeners();
  }

  private mine(trade: Trade): boolean {
    return trade.asset.toUpperCase() === this.asset.toUpperCase();
  }

  private subscribe(): void {
    const id = (this.asking = ++this.requests);
    this.buffered = [];
    this.setStatus("resyncing");
    // The ack by callback: a trade may come in the same read and must wait for it (buffered).
    this.socket.timeout(ACK_TIMEOUT).emit("trades:subscribe", { asset: this.asset, history: this.last }, (err, ack) => {
      if (this.closed || id !== this.asking) return;
      const error = ackError("trades:subscribe", err, ack);
      if (error) {
        this.asking = 0;
        this.emit("error", error);
        if (TRANSIENT.includes(error.code)) {
          setTimeout(() => !this.closed && this.socket.connected && !this.asking && this.subscribe(), RETRY_MS);
        }
        return;
      }
      if (ack.ok) this.adopt(ack.asset, ack.trades);
    });
  }

  /** The ack's history (the feed's last trades, oldest first) merged with what is held. */
  private adopt(asset: string, history: Trade[]): void {
    this.asking = 0;
    this.asset = asset; // the catalog's spelling
    const fresh = history.filter((trade) => !this.seen.has(key(trade)));
    const newest = this.held[this.held.length - 1];
    const at = newest === undefined ? -1 : history.findIndex((trade) => key(trade) === key(newest));
    let added: Trade[];
    if (at >= 0) {
      // The history reaches back to the newest held: older held trades, then the history. Only those after
      // the newest held are new in feed order (the others are older ones the tape had not kept).
      this.held = [...this.held.filter((trade) => !history.some((h) => key(h) === key(trade))), ...history];
      added = history.slice(at + 1);
    } else {
      // Nothing held, or more trades were missed than the history holds: the history is the tape now.
      this.held = [...history];
      added = fresh;
    }
    this.trim();
    this.see(history);
    const waiting = this.buffered;
    this.buffered = [];
    this.setStatus("live");
    for (const trade of added) this.emit("trade", trade);
    this.emit("view", this.trades);
    for (const trade of waiting) this.live(trade);
  }

  private live(trade: Trade): void {
    if (this.asking) return void this.buffered.push(trade);
    if (this.seen.has(key(trade))) return; // already in the ack (or sent twice)
    this.held.push(trade);
    this.trim();
    this.see([trade]);
    this.emit("trade", trade);
    this.emit("view", this.trades);
  }

  private trim(): void {
    if (this.held.length > this.last) this.held = this.held.slice(this.held.length - this.last);
  }

  private see(taken: Trade[]): void {
    for (const id of taken.map(key)) {
      if (this.seen.has(id)) continue;
      this.seen.add(id);
      this.seenOrder.push(id);
    }
    const most = Math.max(this.last, SEEN);
    if (this.seenOrder.length > 2 * most) {
      for (const id of this.seenOrder.splice(0, this.seenOrder.length - most)) this.seen.delete(id);
    }
  }

  private setStatus(status: TradesHelperStatus): void {
    if (status === this.state) return;
    this.state = status;
    this.emit("status", status);
  }
}

/** Subscribe `socket` to `asset`'s trades and keep the last `last` (default 50), each once, in feed order. */
export function trades(socket: RealtimeSocket, asset: string, options: TradesOptions = {}): Trades {
  return new Trades(socket, asset, options);
}
