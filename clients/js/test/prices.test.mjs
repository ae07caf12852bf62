// prices(): the ack's baseline, ticks that overtake it, stale ticks, statuses, recovered and fresh reconnects
// (a fresh one may land on a pod that numbers afresh): the helper always holds the newest price it was sent.
import { test } from "node:test";
import assert from "node:assert/strict";
import { prices } from "@realtime/client";
import { ScriptedSocket, random } from "./harness.mjs";

const ASSETS = ["BTC_USDC_PERP", "ETH_USDC_PERP"];

test("prices: randomized ticks, reconnects and pod changes: the newest price of each asset, never an older one", () => {
  for (let seed = 1; seed <= 100; seed++) {
    const rng = random(seed);
    let pod = { seq: 100, latest: {} }; // one pod's numbering and the latest tick it sent per asset
    const tick = (asset) => {
      pod.seq += 1 + rng.int(3);
      const update = { asset, bid: rng.int(1e6), ask: rng.int(1e6) + 1e6, decimals: 2, seq: pod.seq, ts: pod.seq };
      pod.latest[asset] = update;
      return update;
    };
    let granted = null;
    const socket = new ScriptedSocket((event, payload) => {
      if (event !== "price:subscribe") return { ok: true };
      granted = payload.maxRate ?? null;
      return { ok: true, subscribed: payload.assets, rejected: [{ asset: "NOPE", code: "UNKNOWN_ASSET" }],
        prices: Object.values(pod.latest), statuses: payload.assets.map((asset) => ({ asset, status: "live", since: 0 })),
        instance: "pod", maxRate: granted };
    });
    const helper = prices(socket, ASSETS, { maxRate: 2 });
    const errors = [];
    helper.on("error", (e) => errors.push(e.code));
    let held = {}; // the newest seq emitted per asset on this session
    helper.on("price", (update) => {
      assert.notEqual(update.bid, -1, `seed ${seed}: a duplicate tick was taken`);
      assert.ok(!(update.seq <= held[update.asset]), `seed ${seed}: ${update.seq} after ${held[update.asset]}`);
      held[update.asset] = update.seq;
      assert.equal(helper.get(update.asset), update);
    });
    socket.connect();
    for (let round = 0; round < 200; round++) {
      const roll = rng.next();
      if (roll < 0.05 && socket.connected) {
        socket.disconnect();
        if (rng.chance(0.5)) {
          socket.connect(true); // same numbering; the gateway sends each latest price
          for (const asset of ASSETS) socket.send("price:update", tick(asset));
        } else {
          pod = { seq: rng.int(50), latest: {} }; // another pod, or a restarted one: numbers afresh, lower
          held = {};
          socket.connect(false);
        }
      } else if (roll < 0.1 && socket.connected) {
        const asset = ASSETS[rng.int(2)];
        const stale = pod.latest[asset];
        if (stale) socket.send("price:update", { ...stale, bid: -1 }); // a duplicate: dropped
      } else if (roll < 0.13 && socket.connected) {
        socket.send("price:status", { asset: ASSETS[rng.int(2)], status: ["live", "stale", "halted"][rng.int(3)], since: 1 });
      } else if (socket.connected) {
        socket.send("price:update", tick(ASSETS[rng.int(2)]));
      }
      for (let k = rng.int(4); k > 0; k--) socket.step();
    }
    socket.drain();
    for (const asset of ASSETS) assert.deepEqual(helper.get(asset), pod.latest[asset], `seed ${seed} ${asset}`);
    assert.equal(helper.maxRate, 2);
    assert.ok(errors.every((code) => code === "UNKNOWN_ASSET"));
  }
});

test("prices: a tick that overtook its snapshot is kept; statuses follow price:status", () => {
  const socket = new ScriptedSocket(() => ({ ok: true, subscribed: ["BTC_USDC_PERP"], rejected: [],
    prices: [{ asset: "BTC_USDC_PERP", bid: 1, ask: 2, decimals: 0, seq: 5, ts: 0 }],
    statuses: [{ asset: "BTC_USDC_PERP", status: "stale", since: 0 }], instance: "p", maxRate: null }));
  const helper = prices(socket, ["BTC_USDC_PERP"]);
  socket.connect();
  socket.fire("price:update", { asset: "BTC_USDC_PERP", bid: 3, ask: 4, decimals: 0, seq: 6, ts: 0 });
  socket.fire("price:update", { asset: "ETH_USDC_PERP", bid: 3, ask: 4, decimals: 0, seq: 9, ts: 0 });
  socket.drain();
  assert.equal(helper.get("BTC_USDC_PERP").seq, 6);
  assert.equal(helper.get("ETH_USDC_PERP"), undefined);
  assert.equal(helper.status("BTC_USDC_PERP"), "stale");
  socket.fire("price:status", { asset: "BTC_USDC_PERP", status: "halted", since: 1 });
  assert.equal(helper.status("BTC_USDC_PERP"), "halted");
  assert.deepEqual(socket.requests[0], ["price:subscribe", ["BTC_USDC_PERP"]]);
  assert.equal(helper.maxRate, null);
});

test("prices: a gateway that refuses maxRate (before SPEC §11) is subscribed with the list form, and says so", () => {
  const socket = new ScriptedSocket((event, payload) => (Array.isArray(payload)
    ? { ok: true, subscribed: payload, rejected: [], prices: [], statuses: [], instance: "p" }
    : { ok: false, error: { code: "BAD_REQUEST", message: "expected an asset name or a list of asset names" } }));
  const helper = prices(socket, ["BTC_USDC_PERP"], { maxRate: 4 });
  const errors = [];
  helper.on("error", (e) => errors.push(e.code));
  socket.connect();
  socket.drain();
  assert.deepEqual(socket.requests.map(([, payload]) => payload),
    [{ assets: ["BTC_USDC_PERP"], maxRate: 4 }, ["BTC_USDC_PERP"]]);
  assert.deepEqual(errors, ["BAD_REQUEST"]);
  assert.equal(helper.maxRate, undefined);
  socket.fire("price:update", { asset: "BTC_USDC_PERP", bid: 1, ask: 2, decimals: 0, seq: 1, ts: 0 });
  assert.equal(helper.get("BTC_USDC_PERP").seq, 1);
});

test("prices: setMaxRate changes the rate live, reports the grant, and is asked again on a new session", () => {
  const socket = new ScriptedSocket((event, payload) => (event === "price:rate"
    ? { ok: true, maxRate: payload.maxRate === null ? null : Math.min(payload.maxRate, 5), assets: payload.assets }
    : { ok: true, subscribed: ["BTC_USDC_PERP"], rejected: [], prices: [], statuses: [
      { asset: "BTC_USDC_PERP", status: "stale", since: 7 }], instance: "p", maxRate: payload.maxRate ?? null }));
  const helper = prices(socket, ["BTC_USDC_PERP"]);
  const rates = [];
  const statuses = [];
  helper.on("rate", (granted) => rates.push(granted));
  helper.on("status", (asset, status, since) => statuses.push([asset, status, since]));
  socket.connect();
  socket.drain();
  helper.setMaxRate(10);
  socket.drain();
  assert.deepEqual(rates, [5]);
  assert.equal(helper.maxRate, 5);
  socket.disconnect();
  socket.connect(false);
  socket.drain();
  helper.setMaxRate(null);
  socket.drain();
  assert.deepEqual(rates, [5, null]);
  assert.deepEqual(socket.requests.map(([event, payload]) => [event, payload]), [
    ["price:subscribe", ["BTC_USDC_PERP"]],
    ["price:rate", { maxRate: 10, assets: ["BTC_USDC_PERP"] }],
    ["price:subscribe", { assets: ["BTC_USDC_PERP"], maxRate: 10 }],
    ["price:rate", { maxRate: null, assets: ["BTC_USDC_PERP"] }],
  ]);
  assert.deepEqual(statuses, [["BTC_USDC_PERP", "stale", 7]]);
});

test("prices: refresh subscribes again on a recovered session and keeps only newer prices", () => {
  let seq = 10;
  const socket = new ScriptedSocket(() => ({ ok: true, subscribed: ["BTC_USDC_PERP"], rejected: [], statuses: [],
    prices: [{ asset: "BTC_USDC_PERP", bid: seq, ask: seq + 1, decimals: 0, seq, ts: 0 }], instance: `pod-${seq}` }));
  const helper = prices(socket, ["BTC_USDC_PERP"]);
  const instances = [];
  helper.on("subscribed", (ack) => instances.push(ack.instance));
  socket.connect();
  socket.drain();
  socket.disconnect();
  seq = 12;
  socket.connect(true); // recovered: nothing asked
  socket.drain();
  assert.equal(socket.requests.length, 1);
  helper.refresh();
  socket.send("price:update", { asset: "BTC_USDC_PERP", bid: 1, ask: 2, decimals: 0, seq: 13, ts: 0 });
  socket.drain();
  assert.deepEqual(instances, ["pod-10", "pod-12"]);
  assert.equal(helper.get("BTC_USDC_PERP").seq, 13);
});
