// trades(): randomized trade streams with bursts, dropped connections (recovered or not: the gateway replays no
// trade either way) and repeated sends: the helper's tape is always a run of the feed in feed order, each trade
// once, its `trade` events go forward in feed order and never repeat, and it ends equal to the gateway's last N.
import { test } from "node:test";
import assert from "node:assert/strict";
import { trades } from "@realtime/client";
import { ScriptedSocket, random } from "./harness.mjs";

const ASSET = "BTC_USDC_PERP";
const KEPT = 100; // the gateway's REALTIME_TRADES_HISTORY

/** The feed (every trade, in order) and one connection's room: joined by its subscribe, kept by a recovery. */
class Gateway {
  constructor(rng) {
    this.rng = rng;
    this.feed = [];
    this.index = new Map(); // id -> position in the feed
    this.joined = false;
  }

  trade() {
    const n = this.feed.length;
    const trade = { asset: ASSET, id: this.rng.chance(0.5) ? `t${n}` : n, price: `${95_000 + this.rng.int(500)}.${n % 10}`,
      qty: `0.${String(1 + this.rng.int(999)).padStart(3, "0")}`, side: this.rng.chance(0.5) ? "buy" : "sell", ts: 1_000 + n };
    this.feed.push(trade);
    this.index.set(String(trade.id), n);
    return trade;
  }

  answer(event, payload) {
    if (event !== "trades:subscribe") return { ok: true };
    this.joined = true;
    const history = Math.min(payload.history, KEPT);
    return { ok: true, asset: ASSET, trades: history ? this.feed.slice(-history) : [] };
  }
}

/** The gateway answers a trades:subscribe when it reads it, before anything it sends later (SPEC §9: nothing is
 * both in an ack and sent live after it); a trade sent before the request arrives may be in the ack too. */
class TradeSocket extends ScriptedSocket {
  request(event, payload, cb) {
    const ack = this.answer(event, payload);
    this.requests.push([event, payload]);
    this.queue.push({ ack: () => ack, cb });
  }
}

function scenario(seed) {
  const rng = random(seed);
  const last = [1, 5, 30, 100][rng.int(4)];
  const gateway = new Gateway(rng);
  const socket = new TradeSocket((event, payload) => gateway.answer(event, payload));
  const helper = trades(socket, ASSET.toLowerCase(), { last });
  const counts = { views: 0, events: 0, recoveries: 0, fresh: 0, repeats: 0, longGaps: 0 };
  let newest = -1; // the feed position of the newest `trade` event
  const emitted = new Set();
  const taken = [];
  helper.on("trade", (trade) => {
    const at = gateway.index.get(String(trade.id));
    assert.ok(at > newest, `seed ${seed}: trade ${trade.id} (${at}) after ${newest}: not in feed order`);
    assert.ok(!emitted.has(String(trade.id)), `seed ${seed}: trade ${trade.id} twice`);
    assert.deepEqual(trade, gateway.feed[at]);
    emitted.add(String(trade.id));
    taken.push(trade);
    newest = at;
    counts.events += 1;
  });
  helper.on("view", (tape) => {
    counts.views += 1;
    assert.ok(tape.length <= last, `seed ${seed}: ${tape.length} kept of ${last}`);
    const first = tape.length ? gateway.index.get(String(tape[0].id)) : 0;
    assert.deepEqual(tape, gateway.feed.slice(first, first + tape.length), `seed ${seed}: not a run of the feed`);
    assert.equal(helper.asset, ASSET); // the gateway's spelling, from the ack
  });
  for (let k = rng.int(150); k > 0; k--) gateway.trade(); // history before the helper
  socket.connect();
  for (let round = 0; round < 300; round++) {
    const roll = rng.next();
    if (roll < 0.06 && socket.connected) {
      // A dropped transport: in-flight trades are lost, the feed goes on (sometimes past the whole history).
      socket.disconnect();
      const missed = rng.chance(0.2) ? 50 + rng.int(150) : rng.int(10);
      if (missed > last) counts.longGaps += 1;
      for (let k = missed; k > 0; k--) gateway.trade();
      const recovered = rng.chance(0.6);
      if (!recovered) gateway.joined = false; // a new session: no room until the subscribe is answered
      counts[recovered ? "recoveries" : "fresh"] += 1;
      socket.connect(recovered);
    } else if (roll < 0.09 && socket.connected && gateway.joined && taken.length) {
      // One of the last trades the helper took, delivered again (a stale copy): the helper keeps each once.
      socket.send("trade", taken[taken.length - 1 - rng.int(Math.min(5, taken.length))]);
      counts.repeats += 1;
    } else {
      for (let k = 1 + rng.int(4); k > 0; k--) {
        const trade = gateway.trade();
        if (socket.connected && gateway.joined) socket.send("trade", trade);
      }
    }
    for (let k = rng.int(5); k > 0; k--) socket.step();
  }
  socket.drain();
  assert.equal(helper.status, "live", `seed ${seed}`);
  assert.deepEqual(helper.trades, gateway.feed.slice(-last), `seed ${seed}: the tape is not the last ${last}`);
  return counts;
}

test("trades: randomized streams, drops, recoveries and repeats: a run of the feed, each once, ending on the last N", () => {
  const total = { views: 0, events: 0, recoveries: 0, fresh: 0, repeats: 0, longGaps: 0 };
  for (let seed = 1; seed <= 100; seed++) {
    for (const [k, v] of Object.entries(scenario(seed))) total[k] += v;
  }
  for (const [k, v] of Object.entries(total)) assert.ok(v > 20, `${k}: ${v}`);
});

test("trades: a trade in the same read as the ack waits for it; one that is in the ack is not added twice", () => {
  const gateway = new Gateway(random(3));
  for (let k = 0; k < 10; k++) gateway.trade();
  const socket = new TradeSocket((event, payload) => gateway.answer(event, payload));
  const helper = trades(socket, ASSET, { last: 5 });
  const events = [];
  helper.on("trade", (trade) => events.push(trade.id));
  socket.send("trade", gateway.feed[9]); // read while the ack is awaited, and also in the ack
  socket.connect();
  socket.step();
  assert.deepEqual(events, []); // it waits for the ack
  socket.step(); // the ack
  const after = gateway.trade();
  socket.send("trade", after);
  socket.send("trade", gateway.feed[9]); // a stale copy after the ack
  socket.drain();
  assert.deepEqual(helper.trades, gateway.feed.slice(-5));
  assert.deepEqual(events, [...gateway.feed.slice(5, 10).map((t) => t.id), after.id]);
});

test("trades: a recovered connection asks the history again and adds only what it missed", () => {
  const gateway = new Gateway(random(5));
  for (let k = 0; k < 20; k++) gateway.trade();
  const socket = new TradeSocket((event, payload) => gateway.answer(event, payload));
  const helper = trades(socket, ASSET, { last: 10 });
  const statuses = [];
  helper.on("status", (status) => statuses.push(status));
  socket.connect();
  socket.drain();
  const events = [];
  helper.on("trade", (trade) => events.push(trade.id));
  socket.disconnect();
  const missed = [gateway.trade(), gateway.trade(), gateway.trade()];
  socket.connect(true);
  socket.drain();
  assert.deepEqual(events, missed.map((t) => t.id));
  assert.deepEqual(helper.trades, gateway.feed.slice(-10));
  assert.deepEqual(statuses, ["live", "resyncing", "live"]);
  assert.deepEqual(socket.requests.map(([event, payload]) => [event, payload.history]),
    [["trades:subscribe", 10], ["trades:subscribe", 10]]);
});

test("trades: a refusal is reported, and a passing one retried", async () => {
  let answers = [{ ok: false, error: { code: "FORBIDDEN", message: "delayed" } }];
  const socket = new TradeSocket(() => answers.shift() ?? { ok: true, asset: ASSET, trades: [] });
  const helper = trades(socket, ASSET);
  const errors = [];
  helper.on("error", (error) => errors.push(error.code));
  socket.connect();
  socket.drain();
  assert.deepEqual(errors, ["FORBIDDEN"]);
  assert.equal(helper.status, "resyncing");
  assert.equal(socket.requests.length, 1); // not retried: it would be refused again
  answers = [{ ok: false, error: { code: "RATE_LIMITED", message: "slow down" } }];
  socket.disconnect();
  socket.connect();
  socket.drain();
  await new Promise((done) => setTimeout(done, 1_100));
  socket.drain();
  assert.deepEqual(errors, ["FORBIDDEN", "RATE_LIMITED"]);
  assert.equal(helper.status, "live");
  assert.equal(socket.requests.length, 3);
  helper.close();
});
