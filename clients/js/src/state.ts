// state(): a keyed state (positions, orders, balances) from its snapshot and `state:update` (SPEC §10).
import type { ErrorBody, ErrorCode, Json, RealtimeSocket, StateOp, StateRequest, StateSnapshot, StateUpdate } from "./protocol.js";
import { ACK_TIMEOUT, RETRY_MS, TRANSIENT, ackError } from "./acks.js";
import { Emitter } from "./listeners.js";

export interface StateOptions {
  /** A channel's state (authorised as the channel); omitted: the user's own. */
  channel?: string;
}

export type StateHelperStatus = "live" | "resyncing" | "closed";

export interface StateEvents {
  /** One key changed (`undefined`: deleted), at `version`. */
  change: (key: string, value: Json | undefined, version: number) => void;
  /** The whole state is consistent at `version` (after a snapshot or a whole update). */
  version: (version: number) => void;
  status: (status: StateHelperStatus) => void;
  error: (error: ErrorBody) => void;
}


/** Keeps a keyed state: the snapshot, then each update in version order; a version gap subscribes again,
 * a recovery's `state:snapshot` replaces it. Emits a `change` per key that changed. */
export class State extends Emitter<StateEvents> {
  private items = new Map<string, Json>();
  private current = -1; // the version held (-1: none yet)
  private asking = 0;
  private requests = 0;
  private buffered: StateUpdate[] = [];
  private state: StateHelperStatus = "resyncing";
  private readonly detach: (() => void)[] = [];
  private closed = false;

  constructor(private readonly socket: RealtimeSocket, readonly name: string, private readonly options: StateOptions = {}) {
    super();
    const onUpdate = (update: StateUpdate) => this.mine(update) && this.update(update);
    const onSnapshot = (snapshot: StateSnapshot) => this.mine(snapshot) && this.adopt(snapshot);
    const onClosed = ({ channel, code }: { channel: string; code: ErrorCode }) => {
      if (channel !== this.options.channel) return;
      this.setStatus("closed");
      this.emit("error", { code, message: `channel ${channel} is no longer allowed` });
    };
    const onConnect = () => {
      if (!socket.recovered) this.subscribe();
      // Recovered: the gateway replays what was missed (or sends state:snapshot); the items stay consistent.
      else if (this.current >= 0 && this.state === "resyncing") this.setStatus("live");
    };
    const onDisconnect = () => {
      this.asking = 0;
      this.buffered = [];
      if (this.state !== "closed") this.setStatus("resyncing");
    };
    socket.on("state:update", onUpdate);
    socket.on("state:snapshot", onSnapshot);
    socket.on("channel:closed", onClosed);
    socket.on("connect", onConnect);
    socket.on("disconnect", onDisconnect);
    this.detach.push(() => socket.off("state:update", onUpdate), () => socket.off("state:snapshot", onSnapshot),
      () => socket.off("channel:closed", onClosed), () => socket.off("connect", onConnect),
      () => socket.off("disconnect", onDisconnect));
    if (socket.connected) this.subscribe();
  }

  /** The version held (-1 before the first snapshot). */
  get version(): number {
    return this.current;
  }

  get status(): StateHelperStatus {
    return this.state;
  }

  get(key: string): Json | undefined {
    return this.items.get(key);
  }

  /** Every key and value, at `version`. */
  entries(): { [key: string]: Json } {
    return Object.fromEntries(this.items);
  }

  close(): void {
    this.closed = true;
    for (const off of this.detach.splice(0)) off();
    if (this.socket.connected) this.socket.emit("state:unsubscribe", this.request(), () => undefined);
    this.clearListeners();
  }

  private request(): StateRequest {
    return this.options.channel === undefined ? { name: this.name } : { name: this.name, channel: this.options.channel };
  }

  private mine(message: { name: string; channel?: string }): boolean {
    return message.name === this.name && message.channel === this.options.channel;
  }

  private subscribe(): void {
    const id = (this.asking = ++this.requests);
    this.buffered = [];
    if (this.state !== "resyncing") this.setStatus("resyncing");
    this.socket.timeout(ACK_TIMEOUT).emit("state:subscribe", this.request(), (err, ack) => {
      if (this.closed || id !== this.asking) return;
      const error = ackError("state:subscribe", err, ack);
      if (error) {
        this.asking = 0;
        this.emit("error", error);
        if (TRANSIENT.includes(error.code)) {
          setTimeout(() => !this.closed && this.socket.connected && !this.asking && this.subscribe(), RETRY_MS);
        } else {
          this.setStatus("closed");
        }
        return;
      }
      if (ack.ok) this.adopt(ack);
    });
  }

  /** A whole state (the ack, or `state:snapshot`): replaces it, a `change` for each key that differs. */
  private adopt(snapshot: StateSnapshot): void {
    this.asking = 0;
    const before = this.items;
    const after = new Map(Object.entries(snapshot.items));
    this.items = after;
    this.current = snapshot.version;
    const waiting = this.buffered;
    this.buffered = [];
    this.setStatus("live");
    for (const [key, value] of after) {
      if (!before.has(key) || JSON.stringify(before.get(key)) !== JSON.stringify(value)) this.emit("change", key, value, this.current);
    }
    for (const key of before.keys()) if (!after.has(key)) this.emit("change", key, undefined, this.current);
    this.emit("version", this.current);
    for (const update of waiting) this.update(update);
  }

  private update(update: StateUpdate): void {
    if (this.asking) return void this.buffered.push(update);
    if (this.current < 0 || update.version <= this.current) return; // already in the snapshot
    if (update.version !== this.current + 1) return this.subscribe(); // missed one
    const next = new Map(this.items);
    const touched = new Set<string>();
    for (const op of update.ops) {
      applyOp(next, op);
      touched.add(op.key);
    }
    this.items = next;
    this.current = update.version;
    for (const key of touched) this.emit("change", key, next.get(key), this.current);
    this.emit("version", this.current);
  }

  private setStatus(status: StateHelperStatus): void {
    if (status === this.state) return;
    this.state = status;
    this.emit("status", status);
  }
}

/** Apply one op as the gateway does: `merge` replaces the given top-level fields (into a missing key, the
 * changes become the value). */
export function applyOp(items: Map<string, Json>, op: StateOp): void {
  if (op.op === "set") items.set(op.key, op.value);
  else if (op.op === "delete") items.delete(op.key);
  else {
    const old = items.get(op.key);
    const base = old !== null && typeof old === "object" && !Array.isArray(old) ? old : {};
    items.set(op.key, { ...base, ...op.changes });
  }
}

/** Subscribe `socket` to the keyed state `name` (the user's, or `{channel}`'s) and keep it. */
export function state(socket: RealtimeSocket, name: string, options: StateOptions = {}): State {
  return new State(socket, name, options);
}
