// Recorded streams of trades and candles: what a real socket.io-client saw through nginx in front of two pods
// (tests/js/record.mjs, recorded by tests/test_js_client.py: trades published as they happened, a dropped
// transport that recovered, the history asked again on each connect as the helpers ask it), replayed through
// trades() and candles() in the order it came: every tape is a run of the feed with each trade once, every
// candle the bar of its second's first n trades (a closed one the whole bar), and both end on the last acks'
// view merged with what came after. RECORDED_TRADES=<file> replays that recording instead of the one kept here.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { candles, compareDecimal, trades } from "@realtime/client";
import { RecordedSocket } from "./harness.mjs";

const FILE = process.env.RECORDED_TRADES ?? new URL("./recorded-trades.json", import.meta.url);
const recording = JSON.parse(readFileSync(FILE, "utf8"));

/** The feed's first `n` trades in the `1s` interval that starts at `t`. */
function tradesOf(feed, t, n) {
  return feed.filter((trade) => trade.ts - (trade.ts % 1000) === t).slice(0, n);
}

test("trades and candles: a recorded stream replayed through the helpers keeps the feed's tape and bars", () => {
  const { plan, feed, bars, stream } = recording;
  const where = new Map(feed.map((trade, n) => [String(trade.id), n]));
  const closedBars = new Map(bars.map((b) => [b.t, b]));
  // A helper's request is answered by the recorded ack of the same event when the stream reaches it (the
  // recorder asked what the helpers ask, when they ask it).
  const socket = new RecordedSocket();
  const [{ asset, history: last }] = plan.trades;
  const [{ interval, history }] = plan.candles;
  const tape = trades(socket, asset, { last });
  const chart = candles(socket, asset, interval, { history });
  const counts = { tapes: 0, trades: 0, candles: 0, connects: 0, acks: 0 };
  let newest = -1;
  tape.on("trade", (trade) => {
    const at = where.get(String(trade.id));
    assert.ok(at > newest, `trade ${trade.id} after ${newest}`);
    assert.deepEqual(trade, feed[at]);
    newest = at;
    counts.trades += 1;
  });
  tape.on("view", (kept) => {
    counts.tapes += 1;
    assert.ok(kept.length <= last);
    const first = kept.length ? where.get(String(kept[0].id)) : 0;
    assert.deepEqual(kept, feed.slice(first, first + kept.length), "a tape that is not a run of the feed");
  });
  chart.on("view", (held) => {
    counts.candles += 1;
    for (const [k, candle] of held.entries()) {
      assert.ok(k === 0 || held[k - 1].t < candle.t);
      const inside = tradesOf(feed, candle.t, candle.n);
      assert.equal(inside.length, candle.n, `candle ${candle.t}: more trades than the feed had`);
      const prices = inside.map((trade) => trade.price).sort(compareDecimal);
      const expected = [inside[0].price, prices[prices.length - 1], prices[0], inside[inside.length - 1].price];
      // The gateway writes the same decimals normalised ("95000.0" is "95000"): compared as numbers, exactly.
      for (const [k, value] of [candle.o, candle.h, candle.l, candle.c].entries()) {
        assert.equal(compareDecimal(value, expected[k]), 0, `candle ${candle.t}: ${value} is not ${expected[k]}`);
      }
      if (candle.closed && closedBars.has(candle.t)) assert.deepEqual(candle, closedBars.get(candle.t));
    }
  });
  for (const entry of stream) {
    if (entry.kind === "connect") {
      socket.connected = true;
      socket.recovered = entry.recovered;
      counts.connects += 1;
      socket.fire("connect");
    } else if (entry.kind === "disconnect") {
      socket.connected = false;
      socket.fire("disconnect", "transport close");
    } else if (entry.kind === "event") {
      socket.fire(entry.event, ...entry.args);
    } else if (entry.kind === "ack") {
      const found = socket.pending.findIndex(([event]) => event === entry.event);
      if (found < 0) continue; // a request of the recorder's own (prices, books, state)
      const [, , cb] = socket.pending.splice(found, 1)[0];
      counts.acks += 1;
      cb(entry.ack);
    }
  }
  assert.equal(tape.status, "live");
  assert.equal(chart.status, "live");
  // Everything the recorder was sent: the tape ends on the feed's last `last` it saw.
  const seen = stream.filter((e) => e.kind === "event" && e.event === "trade").map((e) => e.args[0]);
  const lastSeen = where.get(String(seen[seen.length - 1].id));
  assert.deepEqual(tape.trades, feed.slice(Math.max(0, lastSeen + 1 - last), lastSeen + 1));
  assert.ok(chart.candles.filter((c) => c.closed).length >= 3);
  for (const [k, v] of Object.entries(counts)) assert.ok(v >= 2, `${k}: ${v}`);
});
