// book(): one asset's top-`depth` order book from the ack and `book:update` (SPEC §9, docs/books.md).
import type { BookRequest, BookStatusValue, BookUpdate, BookView, ErrorBody, Level, RealtimeSocket } from "./protocol.js";
import { ACK_TIMEOUT, RETRY_MS, TRANSIENT, ackError } from "./acks.js";
import { Emitter, compareDecimal } from "./listeners.js";

/** A consistent view: exactly the server's top-`depth` book at `seq`, best level first on each side. */
export interface BookSnapshot {
  asset: string;
  depth: number;
  seq: number;
  bids: Level[];
  asks: Level[];
  ts: number;
}

/** `live`: updates flow; `resyncing`: the view is being repaired (a gap here, the feed's gap at the gateway,
 * or a lost connection); the last consistent view stays readable. */
export type BookHelperStatus = BookStatusValue;

export interface BookEvents {
  /** A new consistent view (after a snapshot or a whole update, never half of one). */
  view: (view: BookSnapshot) => void;
  status: (status: BookHelperStatus) => void;
  /** A gap was seen: `had` was the view's seq, the update said `prevSeq`; a `book:snapshot` is on its way. */
  gap: (had: number, update: BookUpdate) => void;
  error: (error: ErrorBody) => void;
}


interface Held {
  seq: number;
  ts: number;
  bids: Map<string, string>;
  asks: Map<string, string>;
}

/** Keeps a book: the ack's view, then each update applied in order; a `prevSeq` that does not follow asks
 * `book:snapshot`; the gateway's `book:snapshot` event (after a recovery, or when a rate change moves the
 * book to a room whose view is older) replaces the view. */
export class Book extends Emitter<BookEvents> {
  private held: Held | null = null;
  private asking = 0; // the request whose ack is awaited (0: none)
  private requests = 0;
  private buffered: BookUpdate[] = []; // updates that came while an ack was awaited
  private state: BookHelperStatus = "resyncing";
  private gatewayStatus: BookStatusValue = "live";
  private readonly detach: (() => void)[] = [];
  private closed = false;

  constructor(private readonly socket: RealtimeSocket, public asset: string, readonly depth: number) {
    super();
    const onUpdate = (update: BookUpdate) => this.mine(update) && this.update(update);
    const onSnapshot = (view: BookView) => this.mine(view) && this.adopt(view);
    const onStatus = ({ asset, status }: { asset: string; status: BookStatusValue }) => {
      if (asset.toUpperCase() !== this.asset.toUpperCase()) return;
      this.gatewayStatus = status;
      this.refresh();
    };
    const onConnect = () => {
      // Recovered: the gateway rejoined the book and sends `book:snapshot` before any update.
      if (!socket.recovered) this.ask("book:subscribe");
    };
    const onDisconnect = () => {
      this.asking = 0;
      this.buffered = [];
      this.refresh();
    };
    socket.on("book:update", onUpdate);
    socket.on("book:snapshot", onSnapshot);
    socket.on("book:status", onStatus);
    socket.on("connect", onConnect);
    socket.on("disconnect", onDisconnect);
    this.detach.push(() => socket.off("book:update", onUpdate), () => socket.off("book:snapshot", onSnapshot),
      () => socket.off("book:status", onStatus), () => socket.off("connect", onConnect),
      () => socket.off("disconnect", onDisconnect));
    if (socket.connected) this.ask("book:subscribe");
  }

  /** The last consistent view (null before the first ack). */
  get view(): BookSnapshot | null {
    const held = this.held;
    if (!held) return null;
    return {
      asset: this.asset, depth: this.depth, seq: held.seq, ts: held.ts,
      bids: [...held.bids].sort((a, b) => compareDecimal(b[0], a[0])),
      asks: [...held.asks].sort((a, b) => compareDecimal(a[0], b[0])),
    };
  }

  get status(): BookHelperStatus {
    return this.state;
  }

  close(): void {
    this.closed = true;
    for (const off of this.detach.splice(0)) off();
    if (this.socket.connected) this.socket.emit("book:unsubscribe", { asset: this.asset, depth: this.depth }, () => undefined);
    this.clearListeners();
  }

  private mine(message: { asset: string; depth: number }): boolean {
    return message.asset.toUpperCase() === this.asset.toUpperCase() && message.depth === this.depth;
  }

  private ask(event: "book:subscribe" | "book:snapshot"): void {
    const id = (this.asking = ++this.requests);
    this.buffered = [];
    this.refresh();
    const request: BookRequest = { asset: this.asset, depth: this.depth };
    // The ack by callback, never `await emitWithAck`: the room's first update may come in the same read.
    this.socket.timeout(ACK_TIMEOUT).emit(event, request, (err, ack) => {
      if (this.closed || id !== this.asking) return; // a newer request, or a recovery's snapshot, won
      const error = ackError(event, err, ack);
      if (error) {
        this.asking = 0;
        this.emit("error", error);
        // A timeout or a passing refusal (RATE_LIMITED, UNAVAILABLE): try again while connected.
        if (TRANSIENT.includes(error.code)) {
          setTimeout(() => !this.closed && this.socket.connected && !this.asking && this.ask("book:snapshot"), RETRY_MS);
        }
        return;
      }
      if (ack.ok) this.adopt(ack);
    });
  }

  /** A whole view (an ack, or the `book:snapshot` event): replaces the book, then the updates that waited. */
  private adopt(view: BookView): void {
    this.asking = 0;
    this.asset = view.asset; // the catalog's spelling
    this.gatewayStatus = view.status;
    this.held = { seq: view.seq, ts: view.ts, bids: new Map(view.bids), asks: new Map(view.asks) };
    const waiting = this.buffered;
    this.buffered = [];
    this.refresh();
    this.emit("view", this.view!);
    for (const update of waiting) this.update(update);
  }

  private update(update: BookUpdate): void {
    if (this.asking) return void this.buffered.push(update);
    const held = this.held;
    if (!held || update.seq <= held.seq) return; // before any view, or already in it
    if (update.prevSeq !== held.seq) {
      this.emit("gap", held.seq, update);
      return this.ask("book:snapshot");
    }
    // Build the next view aside and swap it in whole: a listener never sees half an update.
    const next: Held = { seq: update.seq, ts: update.ts, bids: new Map(held.bids), asks: new Map(held.asks) };
    for (const [side, levels] of [[next.bids, update.bids], [next.asks, update.asks]] as const) {
      for (const [price, qty] of levels) {
        if (Number(qty) === 0) side.delete(price);
        else side.set(price, qty);
      }
    }
    this.held = next;
    this.emit("view", this.view!);
  }

  private refresh(): void {
    const now: BookHelperStatus = this.held && !this.asking && this.gatewayStatus === "live" && this.socket.connected
      ? "live" : "resyncing";
    if (now !== this.state) {
      this.state = now;
      this.emit("status", now);
    }
  }
}

/** Subscribe `socket` to `asset`'s top-`depth` book and keep it exact. */
export function book(socket: RealtimeSocket, asset: string, depth: number): Book {
  return new Book(socket, asset, depth);
}
