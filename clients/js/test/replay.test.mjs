// Recorded streams: what a real socket.io-client saw of two pods (tests/js/record.mjs, recorded by
// tests/test_js_client.py: bursts of book changes, state writes, ticks, a dropped transport and a gap in the
// feed), replayed through the helpers in the order it came, once as it was and then with updates lost at
// random: every book view equals the feed's top-depth book at its seq, every state the back end's at its
// version. RECORDED=<file> replays that recording instead of the one kept here.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { book, prices, state } from "@realtime/client";
import { RecordedSocket, random } from "./harness.mjs";

const FILE = process.env.RECORDED ?? new URL("./recorded.json", import.meta.url);
const recording = JSON.parse(readFileSync(FILE, "utf8"));

/** A socket.io-client stand-in fed from the recording; requests the recording has no answer for (the helper's
 * own repairs after a lost update) are answered as the gateway would, from the reference at the newest seq. */
class ReplaySocket extends RecordedSocket {
  constructor() {
    super();
    this.repairs = [];
  }
  take(event, match) {
    const found = this.pending.findIndex(([e, request]) => e === event && match(request));
    return found < 0 ? null : this.pending.splice(found, 1)[0];
  }
}

function replay(seed) {
  const rng = random(seed);
  const loss = seed === 0 ? 0 : 0.05;
  const socket = new ReplaySocket();
  const latest = { books: {}, state: 0 }; // the newest seq / version the gateway had sent, lost or not
  const helpers = { books: {}, views: 0, versions: 0, lost: 0 };
  const quotes = prices(socket, recording.plan.prices);
  for (const { asset, depth } of recording.plan.books) {
    const key = `${asset}:${depth}`;
    const kept = book(socket, asset, depth);
    helpers.books[key] = kept;
    kept.on("view", (view) => {
      helpers.views += 1;
      assert.deepEqual([view.bids, view.asks], recording.books[key][view.seq], `seed ${seed}: ${key} at ${view.seq}`);
    });
  }
  const positions = state(socket, "positions");
  positions.on("version", (version) => {
    helpers.versions += 1;
    assert.deepEqual(positions.entries(), recording.states[version], `seed ${seed}: state at ${version}`);
  });
  // The helpers' own repairs (asked while an event was handled): answered as the gateway would.
  const answerRepairs = (calls) => {
    for (const [event, request, cb] of calls) {
      if (event === "state:subscribe") {
        cb({ ok: true, name: "positions", version: latest.state, items: structuredClone(recording.states[latest.state]) });
        continue;
      }
      assert.equal(event, "book:snapshot");
      const { asset, depth } = request;
      const key = `${asset}:${depth}`;
      const seq = latest.books[key];
      const [bids, asks] = recording.books[key][seq];
      cb({ ok: true, asset, depth, seq, bids, asks, ts: 0, status: "live" });
    }
  };
  for (const entry of recording.stream) {
    if (entry.kind === "connect") {
      socket.connected = true;
      socket.recovered = entry.recovered;
      socket.fire("connect");
    } else if (entry.kind === "disconnect") {
      socket.connected = false;
      socket.pending = [];
      socket.fire("disconnect", "transport close");
    } else if (entry.kind === "ack") {
      const call = socket.take(entry.event, (request) => JSON.stringify(request) === JSON.stringify(entry.request)
        || (entry.event !== "price:subscribe" && request.asset === entry.request.asset && request.name === entry.request.name));
      if (call) call[2](entry.ack);
      if (entry.ack.ok && entry.event.startsWith("book:")) latest.books[`${entry.ack.asset}:${entry.ack.depth}`] = entry.ack.seq;
      if (entry.ack.ok && entry.event === "state:subscribe") latest.state = entry.ack.version;
    } else {
      const [payload] = entry.args;
      if (entry.event === "book:update" || entry.event === "book:snapshot") latest.books[`${payload.asset}:${payload.depth}`] = payload.seq;
      if (entry.event === "state:update" || entry.event === "state:snapshot") latest.state = payload.version;
      const losable = entry.event === "book:update" || entry.event === "state:update";
      if (losable && rng.chance(loss)) {
        helpers.lost += 1;
        continue;
      }
      const before = socket.pending.length;
      socket.fire(entry.event, ...entry.args);
      answerRepairs(socket.pending.splice(before));
    }
  }
  return { quotes, positions, helpers, latest };
}

test("recorded: the stream as it came keeps every helper equal to the gateway", () => {
  const { quotes, positions, helpers, latest } = replay(0);
  for (const [key, kept] of Object.entries(helpers.books)) assert.equal(kept.view.seq, latest.books[key], key);
  assert.equal(positions.version, latest.state);
  assert.ok(helpers.views > 10 && helpers.versions > 10, JSON.stringify(helpers));
  const ticks = recording.stream.filter((e) => e.kind === "event" && e.event === "price:update").map((e) => e.args[0]);
  for (const asset of recording.plan.prices) {
    assert.equal(quotes.get(asset).seq, Math.max(...ticks.filter((t) => t.asset === asset).map((t) => t.seq)));
  }
});

test("recorded: with updates lost at random, every view still equals the gateway's at its seq / version", () => {
  let lost = 0;
  for (let seed = 1; seed <= 40; seed++) {
    const { helpers } = replay(seed);
    lost += helpers.lost;
  }
  assert.ok(lost > 20, `lost ${lost}`);
});
