// candles(): randomized trades making bars, the open bar sent now and then, closed bars sent once (sometimes
// after the next bar opened), stale copies of an open bar after it closed, dropped connections (recovered or
// not: no candle is replayed either way): every candle the helper holds is one the gateway had at that `t`, a
// closed one exactly the final bar, `t` ascending, and it ends equal to the gateway's last `history` bars.
import { test } from "node:test";
import assert from "node:assert/strict";
import { candles } from "@realtime/client";
import { ScriptedSocket, random } from "./harness.mjs";

const ASSET = "BTC_USDC_PERP";
const LENGTH = 1_000; // "1s"
const KEPT = 500; // the gateway's REALTIME_CANDLES_HISTORY

/** Bars built from a trade stream (integers as decimal strings: the helper never does arithmetic). */
class Gateway {
  constructor(rng) {
    this.rng = rng;
    this.now = 1_000_000;
    this.bars = []; // oldest first; only the last may be open
    this.states = new Map(); // t -> every JSON a bar at t has had (what may be held before it closed)
    this.joined = false;
  }

  get open() {
    const bar = this.bars[this.bars.length - 1];
    return bar && !bar.closed ? bar : null;
  }

  /** One trade `ms` after the last: it moves the open bar, or closes it and opens the next. Returns the bar
   * it closed, if any. */
  trade(ms) {
    this.now += ms;
    const t = this.now - (this.now % LENGTH);
    const price = String(90_000 + this.rng.int(1_000));
    let closed = null;
    let bar = this.open;
    if (bar && bar.t !== t) {
      closed = { ...bar, closed: true };
      this.bars[this.bars.length - 1] = closed;
      this.note(closed);
      bar = null;
    }
    if (!bar) {
      bar = { asset: ASSET, interval: "1s", t, o: price, h: price, l: price, c: price, v: "1", n: 1, closed: false };
      this.bars.push(bar);
    } else {
      const p = Number(price);
      bar = { ...bar, h: String(Math.max(Number(bar.h), p)), l: String(Math.min(Number(bar.l), p)), c: price,
        v: String(Number(bar.v) + 1), n: bar.n + 1 };
      this.bars[this.bars.length - 1] = bar;
    }
    this.note(bar);
    return closed;
  }

  note(bar) {
    if (!this.states.has(bar.t)) this.states.set(bar.t, new Set());
    this.states.get(bar.t).add(JSON.stringify(bar));
  }

  answer(event, payload) {
    if (event !== "candles:subscribe") return { ok: true };
    this.joined = true;
    const closed = this.bars.filter((bar) => bar.closed).slice(-Math.min(payload.history, KEPT));
    return { ok: true, asset: ASSET, interval: "1s", candles: this.open ? [...closed, this.open] : closed };
  }
}

/** The gateway answers when it reads the request, before anything it sends later. */
class CandleSocket extends ScriptedSocket {
  request(event, payload, cb) {
    const ack = this.answer(event, payload);
    this.requests.push([event, payload]);
    this.queue.push({ ack: () => ack, cb });
  }
}

function scenario(seed) {
  const rng = random(seed);
  const history = [3, 10, 300][rng.int(3)];
  const gateway = new Gateway(rng);
  const socket = new CandleSocket((event, payload) => gateway.answer(event, payload));
  const helper = candles(socket, ASSET, "1s", { history });
  const counts = { views: 0, candles: 0, recoveries: 0, fresh: 0, stale: 0, late: 0 };
  const check = (held) => {
    for (const [k, candle] of held.entries()) {
      assert.ok(k === 0 || held[k - 1].t < candle.t, `seed ${seed}: t not ascending`);
      assert.ok(gateway.states.get(candle.t)?.has(JSON.stringify(candle)), `seed ${seed}: a candle the gateway never had`);
      const final = gateway.bars.find((bar) => bar.t === candle.t);
      if (candle.closed) assert.deepEqual(candle, final, `seed ${seed}: a closed candle that is not final`);
    }
    assert.ok(held.length <= history);
  };
  helper.on("view", (held) => {
    counts.views += 1;
    check(held);
  });
  helper.on("candle", (candle) => {
    counts.candles += 1;
    assert.equal(helper.candles.find((held) => held.t === candle.t), candle);
  });
  for (let k = rng.int(40); k > 0; k--) gateway.trade(rng.int(400));
  socket.connect();
  let late = null; // a closed bar the gateway sends after the next bar's first update
  for (let round = 0; round < 300; round++) {
    const roll = rng.next();
    if (roll < 0.05 && socket.connected) {
      socket.disconnect();
      for (let k = rng.int(rng.chance(0.3) ? 40 : 5); k > 0; k--) gateway.trade(rng.int(600));
      late = null;
      const recovered = rng.chance(0.6);
      if (!recovered) gateway.joined = false;
      counts[recovered ? "recoveries" : "fresh"] += 1;
      socket.connect(recovered);
    } else if (roll < 0.08 && socket.connected && gateway.joined) {
      // A stale copy of an open bar that has closed since: the closed one stays.
      const before = gateway.bars[gateway.bars.length - 2];
      const copies = before && [...gateway.states.get(before.t)].map((s) => JSON.parse(s)).filter((c) => !c.closed);
      if (copies?.length) {
        socket.send("candle", copies[rng.int(copies.length)]);
        counts.stale += 1;
      }
    } else {
      for (let k = 1 + rng.int(3); k > 0; k--) {
        const closed = gateway.trade(rng.int(500));
        if (closed && socket.connected && gateway.joined) {
          if (rng.chance(0.3)) {
            if (late) socket.send("candle", late); // each closed bar is sent once
            late = closed;
            counts.late += 1;
          } else {
            socket.send("candle", closed);
          }
        }
      }
      if (socket.connected && gateway.joined && rng.chance(0.7)) socket.send("candle", gateway.open);
      if (late && socket.connected && gateway.joined && rng.chance(0.5)) {
        socket.send("candle", late);
        late = null;
      }
    }
    for (let k = rng.int(4); k > 0; k--) socket.step();
  }
  if (late) socket.send("candle", late);
  socket.send("candle", gateway.open);
  socket.drain();
  assert.equal(helper.status, "live", `seed ${seed}`);
  assert.deepEqual(helper.candles, gateway.bars.slice(-history), `seed ${seed}: not the gateway's last ${history}`);
  return counts;
}

test("candles: randomized bars, late closes, stale copies and reconnects: merged by t, closed ones final", () => {
  const total = { views: 0, candles: 0, recoveries: 0, fresh: 0, stale: 0, late: 0 };
  for (let seed = 1; seed <= 100; seed++) {
    for (const [k, v] of Object.entries(scenario(seed))) total[k] += v;
  }
  for (const [k, v] of Object.entries(total)) assert.ok(v > 20, `${k}: ${v}`);
});

test("candles: the open candle is replaced, a closed one is final, an unchanged one emits nothing", () => {
  const bar = (t, c, closed = false) => ({ asset: ASSET, interval: "1m", t, o: "1", h: "9", l: "1", c, v: "2", n: 2, closed });
  const socket = new ScriptedSocket(() => ({ ok: true, asset: ASSET, interval: "1m", candles: [bar(0, "5", true), bar(60_000, "6")] }));
  const helper = candles(socket, ASSET.toLowerCase(), "1m", { history: 2 });
  const changed = [];
  helper.on("candle", (candle) => changed.push([candle.t, candle.c, candle.closed]));
  socket.connect();
  socket.send("candle", bar(60_000, "7"));
  socket.send("candle", bar(60_000, "7")); // the same again
  socket.send("candle", { ...bar(60_000, "8"), interval: "5m" }); // another interval's
  socket.send("candle", bar(0, "4")); // an open copy of a closed bar
  socket.send("candle", bar(120_000, "3")); // the next bar opens (the first one leaves: history 2)
  socket.send("candle", bar(60_000, "8", true)); // and the previous one closes after it
  socket.send("candle", bar(60_000, "9")); // a stale open copy after the close
  socket.drain();
  assert.deepEqual(changed, [[0, "5", true], [60_000, "6", false], [60_000, "7", false], [120_000, "3", false],
    [60_000, "8", true]]);
  assert.deepEqual(helper.candles, [bar(60_000, "8", true), bar(120_000, "3")]);
  assert.equal(helper.asset, ASSET);
  assert.deepEqual(socket.requests, [["candles:subscribe", { asset: ASSET.toLowerCase(), interval: "1m", history: 2 }]]);
});
