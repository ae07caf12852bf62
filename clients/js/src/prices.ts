// prices(): the latest price of each asset from the subscribe ack and `price:update` (SPEC §2, §11).
import type { ErrorBody, PriceStatus, PriceStatusValue, PriceSubscribeOk, PriceUpdate, Rejection, RealtimeSocket } from "./protocol.js";
import { ACK_TIMEOUT } from "./acks.js";
import { Emitter } from "./listeners.js";

export interface PricesOptions {
  /** §11: at most this many updates a second per asset (≥ 0.1); omitted = every tick (or the token's cap). */
  maxRate?: number;
}

export interface PricesEvents {
  /** A newer price of `asset`. */
  price: (update: PriceUpdate) => void;
  /** `asset` became live, stale or halted, at `since` (ms; the gateway's time, when it said). */
  status: (asset: string, status: PriceStatusValue, since: number | undefined) => void;
  /** The rate the gateway granted after `setMaxRate` (null: every tick). */
  rate: (maxRate: number | null) => void;
  /** Each (re)subscription's outcome: what was subscribed, refused, and the granted rate. */
  subscribed: (ack: PriceSubscribeOk) => void;
  /** A refused subscription: the whole request (`ErrorBody`) or one asset (`Rejection`). */
  error: (error: ErrorBody | Rejection) => void;
}


/** Latest price per asset. Takes the ack's `seq` as the baseline, drops ticks older than the newest seen,
 * and subscribes again (a new baseline) after every unrecovered reconnect. */
export class Prices extends Emitter<PricesEvents> {
  private readonly latest = new Map<string, PriceUpdate>();
  private readonly statuses = new Map<string, PriceStatusValue>();
  private readonly assets: string[];
  private readonly names: Set<string>; // as asked, and as the gateway spells them (its acks)
  private readonly detach: (() => void)[] = [];
  /** The rate the gateway granted (null: every tick; undefined: not said). */
  maxRate: number | null | undefined;

  constructor(private readonly socket: RealtimeSocket, assets: string[], private options: PricesOptions = {}) {
    super();
    this.assets = [...assets];
    this.names = new Set(assets);
    const onPrice = (update: PriceUpdate) => this.take(update);
    const onStatus = (status: PriceStatus) => this.setStatus(status);
    const onConnect = () => {
      // Recovered: the gateway restored the subscriptions and sent each latest price (same seq numbering).
      if (!socket.recovered) this.subscribe();
    };
    socket.on("price:update", onPrice);
    socket.on("price:status", onStatus);
    socket.on("connect", onConnect);
    this.detach.push(() => socket.off("price:update", onPrice), () => socket.off("price:status", onStatus),
      () => socket.off("connect", onConnect));
    if (socket.connected) this.subscribe();
  }

  /** The latest price of `asset`, if any. */
  get(asset: string): PriceUpdate | undefined {
    return this.latest.get(asset);
  }

  /** Every asset's latest price. */
  all(): PriceUpdate[] {
    return [...this.latest.values()];
  }

  status(asset: string): PriceStatusValue | undefined {
    return this.statuses.get(asset);
  }

  /** Change the rate of these subscriptions live (SPEC §11 `price:rate`; null: every tick), and ask it on every
   * later (re)subscription. The grant comes as a `rate` event. */
  setMaxRate(maxRate: number | null): void {
    this.options = maxRate === null ? {} : { maxRate };
    if (!this.socket.connected) return;
    this.socket.timeout(ACK_TIMEOUT).emit("price:rate", { maxRate, assets: this.assets }, (err, ack) => {
      if (err) return this.emit("error", { code: "UNAVAILABLE", message: `price:rate: ${err.message}` });
      if (!ack.ok) return this.emit("error", ack.error);
      this.maxRate = ack.maxRate;
      this.emit("rate", ack.maxRate);
    });
  }

  /** Subscribe again now, as after an unrecovered reconnect: a new baseline, and a `subscribed` event with the
   * ack (its `instance` names the pod, which a recovered session on another pod does not otherwise say). */
  refresh(): void {
    if (this.socket.connected) this.subscribe();
  }

  /** Stop listening and unsubscribe. */
  close(): void {
    for (const off of this.detach.splice(0)) off();
    if (this.socket.connected) this.socket.emit("price:unsubscribe", this.assets, () => undefined);
    this.clearListeners();
  }

  private subscribe(withRate = this.options.maxRate !== undefined): void {
    // A fresh session (maybe another pod, numbering afresh): the old baseline means nothing there.
    this.latest.clear();
    const { maxRate } = this.options;
    const request = withRate && maxRate !== undefined ? { assets: this.assets, maxRate } : this.assets;
    // The ack by callback: a tick may come in the same read and must not find the map half-set.
    this.socket.timeout(ACK_TIMEOUT).emit("price:subscribe", request, (err, ack) => {
      if (err) return this.emit("error", { code: "UNAVAILABLE", message: `price:subscribe: ${err.message}` });
      if (!ack.ok && withRate && ack.error.code === "BAD_REQUEST") {
        // A gateway without rate control (before SPEC §11) takes only the list form: every tick, then.
        this.emit("error", { code: "BAD_REQUEST", message: `maxRate refused (${ack.error.message}); subscribed without it` });
        return this.subscribe(false);
      }
      if (!ack.ok) return this.emit("error", ack.error);
      this.maxRate = ack.maxRate;
      for (const name of ack.subscribed) this.names.add(name);
      for (const status of ack.statuses ?? []) this.setStatus(status);
      for (const price of ack.prices) this.take(price); // a tick may have overtaken its snapshot
      for (const rejection of ack.rejected) this.emit("error", rejection);
      this.emit("subscribed", ack);
    });
  }

  private take(update: PriceUpdate): void {
    if (!this.names.has(update.asset)) return; // another subscriber's asset on the same socket
    const held = this.latest.get(update.asset);
    if (held && update.seq <= held.seq) return; // older than the baseline or the newest seen
    this.latest.set(update.asset, update);
    this.emit("price", update);
  }

  private setStatus({ asset, status, since }: PriceStatus): void {
    if (!this.names.has(asset)) return;
    if (this.statuses.get(asset) === status) return;
    this.statuses.set(asset, status);
    this.emit("status", asset, status, since);
  }
}

/** Subscribe `socket` to `assets` and keep each one's latest price. */
export function prices(socket: RealtimeSocket, assets: string[], options: PricesOptions = {}): Prices {
  return new Prices(socket, assets, options);
}
