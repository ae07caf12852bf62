// candles(): one asset's candles of one interval from the `candles:subscribe` ack and `candle` events (SPEC §9).
import type { Candle, CandleInterval, ErrorBody, RealtimeSocket } from "./protocol.js";
import { ACK_TIMEOUT, RETRY_MS, TRANSIENT, ackError } from "./acks.js";
import { Emitter } from "./listeners.js";

export interface CandlesOptions {
  /** How many candles to keep (and to ask the ack for): at most the gateway's REALTIME_CANDLES_HISTORY (500). */
  history?: number;
}

/** `live`: candles flow; `resyncing`: a (re)subscription's ack is awaited, or the connection is lost. */
export type CandlesHelperStatus = "live" | "resyncing";

export interface CandlesEvents {
  /** One candle was added or changed (an open one moved, or closed); not for one that stayed the same. */
  candle: (candle: Candle) => void;
  /** The kept candles changed: oldest first, each `t` once, the open one (if any) last but maybe not alone. */
  view: (candles: Candle[]) => void;
  status: (status: CandlesHelperStatus) => void;
  error: (error: ErrorBody) => void;
}

const DEFAULT_HISTORY = 300;

const same = (a: Candle, b: Candle) => a.o === b.o && a.h === b.h && a.l === b.l && a.c === b.c && a.v === b.v
  && a.n === b.n && a.closed === b.closed;

/** Keeps a chart's candles merged by `t`: an open candle replaces the one held at its `t`, a closed one is final
 * (nothing replaces it). After a reconnect (recovered or not) it subscribes again, since candles sent while
 * away are not replayed, and merges the ack's by the same rule. */
export class Candles extends Emitter<CandlesEvents> {
  private held = new Map<number, Candle>();
  private order: number[] = []; // the held `t`s, ascending
  private asking = 0;
  private requests = 0;
  private buffered: Candle[] = [];
  private state: CandlesHelperStatus = "resyncing";
  private readonly detach: (() => void)[] = [];
  private closed = false;
  readonly history: number;

  constructor(private readonly socket: RealtimeSocket, public asset: string, readonly interval: CandleInterval,
              options: CandlesOptions = {}) {
    super();
    this.history = options.history ?? DEFAULT_HISTORY;
    const onCandle = (candle: Candle) => this.mine(candle) && this.live(candle);
    const onConnect = () => this.subscribe();
    const onDisconnect = () => {
      this.asking = 0;
      this.buffered = [];
      this.setStatus("resyncing");
    };
    socket.on("candle", onCandle);
    socket.on("connect", onConnect);
    socket.on("disconnect", onDisconnect);
    this.detach.push(() => socket.off("candle", onCandle), () => socket.off("connect", onConnect),
      () => socket.off("disconnect", onDisconnect));
    if (socket.connected) this.subscribe();
  }

  /** The kept candles, oldest first. */
  get candles(): Candle[] {
    return this.order.map((t) => this.held.get(t)!);
  }

  get status(): CandlesHelperStatus {
    return this.state;
  }

  close(): void {
    this.closed = true;
    for (const off of this.detach.splice(0)) off();
    if (this.socket.connected) {
      this.socket.emit("candles:unsubscribe", { asset: this.asset, interval: this.interval }, () => undefined);
    }
    this.clearListeners();
  }

  private mine(candle: Candle): boolean {
    return candle.asset.toUpperCase() === this.asset.toUpperCase() && candle.interval === this.interval;
  }

  private subscribe(): void {
    const id = (this.asking = ++this.requests);
    this.buffered = [];
    this.setStatus("resyncing");
    const request = { asset: this.asset, interval: this.interval, history: this.history };
    this.socket.timeout(ACK_TIMEOUT).emit("candles:subscribe", request, (err, ack) => {
      if (this.closed || id !== this.asking) return;
      const error = ackError("candles:subscribe", err, ack);
      if (error) {
        this.asking = 0;
        this.emit("error", error);
        if (TRANSIENT.includes(error.code)) {
          setTimeout(() => !this.closed && this.socket.connected && !this.asking && this.subscribe(), RETRY_MS);
        }
        return;
      }
      if (!ack.ok) return;
      this.asking = 0;
      this.asset = ack.asset; // the catalog's spelling
      const changed = ack.candles.filter((candle) => this.merge(candle));
      this.trim();
      const waiting = this.buffered;
      this.buffered = [];
      this.setStatus("live");
      for (const candle of changed) if (this.held.get(candle.t) === candle) this.emit("candle", candle);
      this.emit("view", this.candles);
      for (const candle of waiting) this.live(candle);
    });
  }

  private live(candle: Candle): void {
    if (this.asking) return void this.buffered.push(candle);
    if (!this.merge(candle)) return;
    this.trim();
    if (this.held.get(candle.t) !== candle) return; // older than every kept candle: trimmed at once
    this.emit("candle", candle);
    this.emit("view", this.candles);
  }

  /** Take `candle` unless the candle held at its `t` is closed (final) or the same; true if taken. */
  private merge(candle: Candle): boolean {
    const held = this.held.get(candle.t);
    if (held && (held.closed || same(held, candle))) return false;
    if (!held) {
      // Usually the newest: append; else insert in order.
      let at = this.order.length;
      while (at > 0 && this.order[at - 1]! > candle.t) at--;
      this.order.splice(at, 0, candle.t);
    }
    this.held.set(candle.t, candle);
    return true;
  }

  private trim(): void {
    while (this.order.length > this.history) this.held.delete(this.order.shift()!);
  }

  private setStatus(status: CandlesHelperStatus): void {
    if (status === this.state) return;
    this.state = status;
    this.emit("status", status);
  }
}

/** Subscribe `socket` to `asset`'s `interval` candles and keep the last `history` (default 300) merged by `t`. */
export function candles(socket: RealtimeSocket, asset: string, interval: CandleInterval,
                        options: CandlesOptions = {}): Candles {
  return new Candles(socket, asset, interval, options);
}
