// book(): randomized bursts of level changes with deletions, lost updates, the gateway's own resync,
// dropped connections with and without recovery (and replayed old updates): every view the helper emits
// equals the reference book's top-depth view at that seq, and it ends equal to the gateway's.
import { test } from "node:test";
import assert from "node:assert/strict";
import { book } from "@realtime/client";
import { ScriptedSocket, random } from "./harness.mjs";

const ASSET = "BTC_USDC_PERP";
const fmt = (units) => `${Math.floor(units / 100)}.${String(units % 100).padStart(2, "0")}`;

/** The exchange's whole book (reference, plain maps), and one gateway room that sends top-depth diffs. */
class Gateway {
  constructor(rng, depth) {
    this.rng = rng;
    this.depth = depth;
    this.bids = new Map();
    this.asks = new Map();
    for (let k = 1; k <= 30; k++) {
      if (rng.chance(0.7)) this.bids.set(100_000 - k * 50, this.qty());
      if (rng.chance(0.7)) this.asks.set(100_000 + k * 50, this.qty());
    }
    this.seq = 1000;
    this.views = new Map(); // seq -> the reference top-depth view
    this.record();
    this.sent = this.top(); // the room's last-sent view
    this.sentSeq = this.seq;
    this.live = true;
  }

  qty() {
    return (1 + this.rng.int(99_999) / 1000).toFixed(3);
  }

  top() {
    const side = (map, dir) => [...map].sort((a, b) => (a[0] - b[0]) * dir).slice(0, this.depth)
      .map(([p, q]) => [fmt(p), q]);
    return { bids: side(this.bids, -1), asks: side(this.asks, 1) };
  }

  record() {
    this.views.set(this.seq, this.top());
  }

  /** One feed message: a few level changes (new levels, new quantities, deletions), mostly near the top. */
  change() {
    for (let n = 1 + this.rng.int(5); n > 0; n--) {
      const bid = this.rng.chance(0.5);
      const map = bid ? this.bids : this.asks;
      const price = 100_000 + (bid ? -1 : 1) * 50 * (1 + Math.min(39, Math.floor(-Math.log(1 - this.rng.next()) * 6)));
      if (map.has(price) && this.rng.chance(0.4)) map.delete(price);
      else map.set(price, this.qty());
    }
    this.seq += 1;
    this.record();
  }

  /** A change of the best bid's quantity: every top view changes. */
  touchTop() {
    const best = Math.max(...this.bids.keys());
    this.bids.set(best, (100 + this.rng.int(99_999) / 1000).toFixed(3));
    this.seq += 1;
    this.record();
  }

  /** The room's next update: how its view changed since the last one sent (none if it did not). */
  update() {
    const now = this.top();
    const diff = (before, after) => {
      const was = new Map(before);
      const is = new Map(after);
      const out = [];
      for (const [p, q] of is) if (was.get(p) !== q) out.push([p, q]);
      for (const [p] of was) if (!is.has(p)) out.push([p, "0"]);
      return out;
    };
    const bids = diff(this.sent.bids, now.bids);
    const asks = diff(this.sent.asks, now.asks);
    if (!bids.length && !asks.length) return null;
    const update = { asset: ASSET, depth: this.depth, seq: this.seq, prevSeq: this.sentSeq, bids, asks, ts: this.seq };
    this.sent = now;
    this.sentSeq = this.seq;
    return update;
  }

  view() {
    return { ok: true, asset: ASSET, depth: this.depth, seq: this.sentSeq, ...this.sent, ts: this.sentSeq,
      status: this.live ? "live" : "resyncing" };
  }
}

function scenario(seed) {
  const rng = random(seed);
  const depth = [5, 10, 20][rng.int(3)];
  const gateway = new Gateway(rng, depth);
  const socket = new ScriptedSocket((event) => (event.startsWith("book:") && event !== "book:unsubscribe" ? gateway.view() : { ok: true }));
  const helper = book(socket, ASSET, depth);
  const seen = [];
  const counts = { views: 0, gaps: 0, recoveries: 0, fresh: 0, resyncs: 0 };
  helper.on("view", (view) => {
    counts.views += 1;
    const expected = gateway.views.get(view.seq);
    assert.ok(expected, `seed ${seed}: a view at seq ${view.seq}, which the room never had`);
    assert.deepEqual({ bids: view.bids, asks: view.asks }, expected, `seed ${seed}: view at seq ${view.seq}`);
    seen.push(view.seq);
  });
  helper.on("gap", () => (counts.gaps += 1));
  socket.connect();
  const sent = []; // updates sent, for replays
  for (let round = 0; round < 300; round++) {
    const roll = rng.next();
    if (roll < 0.04 && socket.connected) {
      // A lost update: the gateway sent it, the client never reads it.
      for (let k = 0; k < 3; k++) gateway.change();
      const lost = gateway.update();
      if (lost) sent.push(lost);
    } else if (roll < 0.07 && socket.connected) {
      // The feed's gap at the gateway: resyncing, changes it does not send, then live and one catch-up update.
      gateway.live = false;
      socket.send("book:status", { asset: ASSET, status: "resyncing" });
      for (let k = 0; k < 4; k++) gateway.change();
      gateway.live = true;
      socket.send("book:status", { asset: ASSET, status: "live" });
      counts.resyncs += 1;
    } else if (roll < 0.10 && socket.connected) {
      // A dropped transport: what was in flight is lost; the feed moves on meanwhile.
      socket.disconnect();
      for (let k = rng.int(6); k > 0; k--) {
        gateway.change();
        const update = gateway.update();
        if (update) sent.push(update);
      }
      if (rng.chance(0.6)) {
        // Recovered: the gateway's book:snapshot first, then maybe old updates replayed (already in it).
        socket.connect(true);
        socket.send("book:snapshot", gateway.view());
        for (const old of sent.slice(-rng.int(4))) socket.send("book:update", old);
        counts.recoveries += 1;
      } else {
        socket.connect(false);
        counts.fresh += 1;
      }
    } else {
      for (let k = 1 + rng.int(3); k > 0; k--) gateway.change();
      const update = gateway.update();
      if (update && socket.connected) {
        sent.push(update);
        socket.send("book:update", update);
      }
    }
    // Deliver some of what is queued: acks and updates interleave as on a real connection.
    for (let k = rng.int(4); k > 0; k--) socket.step();
  }
  socket.drain();
  // Whatever happened, the helper ends live on the gateway's view (after one update that surely changes the
  // view: a client whose last update was lost cannot know before the next one).
  gateway.touchTop();
  socket.send("book:update", gateway.update());
  socket.drain();
  assert.equal(helper.status, "live", `seed ${seed}`);
  assert.equal(helper.view.seq, gateway.sentSeq, `seed ${seed}`);
  assert.deepEqual({ bids: helper.view.bids, asks: helper.view.asks }, gateway.sent, `seed ${seed}`);
  return counts;
}

test("book: randomized bursts, deletions, lost updates, gateway resyncs and reconnects keep the view exact", () => {
  const total = { views: 0, gaps: 0, recoveries: 0, fresh: 0, resyncs: 0 };
  for (let seed = 1; seed <= 100; seed++) {
    for (const [k, v] of Object.entries(scenario(seed))) total[k] += v;
  }
  // The scenarios did reach every path.
  for (const [k, v] of Object.entries(total)) assert.ok(v > 20, `${k}: ${v}`);
});

test("book: an update in the same read as the ack is applied after it, never before", () => {
  const rng = random(7);
  const gateway = new Gateway(rng, 10);
  const socket = new ScriptedSocket(() => gateway.view());
  const helper = book(socket, ASSET, 10);
  socket.connect();
  gateway.change();
  const update = gateway.update();
  socket.send("book:update", update);
  socket.drain(); // ack (the view before the update), then the update
  assert.equal(helper.view.seq, update.seq);
  assert.deepEqual({ bids: helper.view.bids, asks: helper.view.asks }, gateway.views.get(update.seq));
});

test("book: a gap emits resyncing, never a half-applied view, then the snapshot", () => {
  const rng = random(11);
  const gateway = new Gateway(rng, 10);
  const socket = new ScriptedSocket(() => gateway.view());
  const helper = book(socket, ASSET, 10);
  const statuses = [];
  helper.on("status", (status) => statuses.push(status));
  socket.connect();
  socket.drain();
  assert.equal(helper.status, "live");
  gateway.change(); gateway.change();
  gateway.update(); // lost
  gateway.change();
  socket.send("book:update", gateway.update() ?? (gateway.change(), gateway.update()));
  const before = helper.view;
  socket.step(); // the update with a gap: the view stays what it was
  assert.equal(helper.status, "resyncing");
  assert.deepEqual(helper.view, before);
  socket.drain(); // the book:snapshot ack
  assert.equal(helper.status, "live");
  assert.equal(helper.view.seq, gateway.sentSeq);
  assert.deepEqual(statuses, ["live", "resyncing", "live"]);
  assert.deepEqual(socket.requests.map(([event]) => event), ["book:subscribe", "book:snapshot"]);
});
