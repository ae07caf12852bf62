// state(): randomized set / merge / delete writes, lost updates (a version gap), recoveries that replay what
// was missed (with updates already held) or send state:snapshot, and fresh reconnects: after every update
// the helper's items equal the reference state at that version.
import { test } from "node:test";
import assert from "node:assert/strict";
import { state } from "@realtime/client";
import { ScriptedSocket, random } from "./harness.mjs";

const NAME = "positions";
const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

/** The gateway's keyed state: writes applied as realtime/events/state/ops.py does, the wire ops it sends
 * (only what changed; a merge into a missing key goes out as a set), and the state at each version. */
class Gateway {
  constructor(rng, channel) {
    this.rng = rng;
    this.channel = channel;
    this.items = {};
    this.version = 0;
    this.versions = new Map([[0, {}]]);
  }

  write() {
    const wire = [];
    for (let n = 1 + this.rng.int(4); n > 0; n--) {
      const key = String(1000 + this.rng.int(12));
      const roll = this.rng.next();
      const old = this.items[key];
      if (roll < 0.3) {
        const value = { qty: String(this.rng.int(9)), side: this.rng.chance(0.5) ? "long" : "short" };
        if (old === undefined || !same(old, value)) wire.push({ op: "set", key, value });
        this.items[key] = value;
      } else if (roll < 0.75) {
        const changes = this.rng.chance(0.5) ? { profit: String(this.rng.int(5)) } : { qty: String(this.rng.int(9)), mark: this.rng.int(3) };
        if (old === undefined) {
          this.items[key] = { ...changes };
          wire.push({ op: "set", key, value: this.items[key] });
          continue;
        }
        const changed = Object.fromEntries(Object.entries(changes).filter(([f, v]) => !(f in old) || !same(old[f], v)));
        this.items[key] = { ...old, ...changes };
        if (Object.keys(changed).length) wire.push({ op: "merge", key, changes: changed });
      } else if (old !== undefined) {
        delete this.items[key];
        wire.push({ op: "delete", key });
      }
    }
    this.version += 1;
    this.versions.set(this.version, structuredClone(this.items));
    return { name: NAME, ...(this.channel ? { channel: this.channel } : {}), version: this.version, ops: wire };
  }

  snapshot() {
    return { name: NAME, ...(this.channel ? { channel: this.channel } : {}), version: this.version, items: structuredClone(this.items) };
  }
}

function scenario(seed) {
  const rng = random(seed);
  const channel = rng.chance(0.5) ? "bot:42" : undefined;
  const gateway = new Gateway(rng, channel);
  const socket = new ScriptedSocket((event) => (event === "state:subscribe" ? { ok: true, ...gateway.snapshot() } : { ok: true }));
  const helper = state(socket, NAME, channel ? { channel } : {});
  const counts = { versions: 0, gaps: 0, replays: 0, snapshots: 0, fresh: 0, keys: 0 };
  // A mirror built only from the `change` events: per-key changes add up to the whole state.
  const mirror = {};
  helper.on("change", (key, value) => {
    counts.keys += 1;
    if (value === undefined) delete mirror[key]; else mirror[key] = value;
  });
  helper.on("version", (version) => {
    counts.versions += 1;
    assert.deepEqual(helper.entries(), gateway.versions.get(version), `seed ${seed}: items at version ${version}`);
    assert.deepEqual(mirror, gateway.versions.get(version), `seed ${seed}: changes add up at version ${version}`);
  });
  socket.connect();
  const log = []; // every update, for replays
  // Another state on the same socket: never applied to this one.
  const other = { name: "orders", version: 1, ops: [{ op: "set", key: "x", value: 1 }] };
  for (let round = 0; round < 250; round++) {
    const roll = rng.next();
    if (roll < 0.05 && socket.connected) {
      log.push(gateway.write()); // lost: a version gap follows
      counts.gaps += 1;
    } else if (roll < 0.1 && socket.connected) {
      const held = helper.version;
      socket.disconnect();
      for (let k = rng.int(5); k > 0; k--) log.push(gateway.write());
      const mode = rng.next();
      if (mode < 0.4) {
        // Recovered: the gateway replays from the client's offset, which may be older than what it holds.
        socket.connect(true);
        for (const update of log.filter((u) => u.version > held - rng.int(3))) socket.send("state:update", update, `0-${update.version}`);
        counts.replays += 1;
      } else if (mode < 0.7) {
        socket.connect(true); // past the replay window: one state:snapshot instead
        socket.send("state:snapshot", gateway.snapshot());
        counts.snapshots += 1;
      } else {
        socket.connect(false);
        counts.fresh += 1;
      }
    } else {
      const update = gateway.write();
      log.push(update);
      if (socket.connected) socket.send("state:update", update, `0-${update.version}`);
      if (rng.chance(0.1)) socket.send("state:update", other, "0-1");
    }
    for (let k = rng.int(4); k > 0; k--) socket.step();
  }
  socket.drain();
  const last = gateway.write();
  socket.send("state:update", last, "0-x");
  socket.drain();
  assert.equal(helper.version, gateway.version, `seed ${seed}`);
  assert.equal(helper.status, "live");
  assert.deepEqual(helper.entries(), gateway.items);
  return counts;
}

test("state: randomized merges, deletes, gaps, replays and snapshots keep the items equal at every version", () => {
  const total = { versions: 0, gaps: 0, replays: 0, snapshots: 0, fresh: 0, keys: 0 };
  for (let seed = 1; seed <= 100; seed++) {
    for (const [k, v] of Object.entries(scenario(seed))) total[k] += v;
  }
  for (const [k, v] of Object.entries(total)) assert.ok(v > 20, `${k}: ${v}`);
});

test("state: a version gap subscribes again; channel:closed closes it", () => {
  const gateway = new Gateway(random(3), "bot:7");
  const socket = new ScriptedSocket((event, payload) => (event === "state:subscribe" ? { ok: true, ...gateway.snapshot(), ...payload } : { ok: true }));
  const helper = state(socket, NAME, { channel: "bot:7" });
  socket.connect();
  socket.drain();
  gateway.write();
  socket.send("state:update", gateway.write(), "0-2");
  socket.drain();
  assert.deepEqual(socket.requests.map(([e]) => e), ["state:subscribe", "state:subscribe"]);
  assert.equal(helper.version, 2);
  const errors = [];
  helper.on("error", (error) => errors.push(error.code));
  socket.send("channel:closed", { channel: "bot:7", code: "FORBIDDEN" });
  socket.drain();
  assert.equal(helper.status, "closed");
  assert.deepEqual(errors, ["FORBIDDEN"]);
});
