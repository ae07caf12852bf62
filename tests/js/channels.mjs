// A socket.io-client 4.x for channels and keyed state, driven from stdin; one JSON line per thing it sees.
//   node tests/js/channels.mjs '{"url": "...", "token": "..."}'
// It keeps every state it subscribed to as an app would: the ack's (or state:snapshot's) items, then
// each state:update applied in version order (older versions ignored, a gap reported and repaired by
// subscribing again).
// stdin, one JSON object a line:
//   {"cmd": "emit", "event": "channel:subscribe", "payload": {...}}   prints {"type": "ack", event, payload, ack}
//   {"cmd": "drop", "hold": true} / {"cmd": "reconnect"}             as in recovery.mjs
//   {"cmd": "token", "token": "..."}                                 the token of the next CONNECTs
//   {"cmd": "states"}                                                prints {"type": "states", states}
import { createInterface } from "node:readline";
import { io } from "socket.io-client";

const plan = JSON.parse(process.argv[2]);
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
let token = plan.token;
const socket = io(plan.url, {
  auth: (cb) => cb({ token }),
  transports: plan.transports ?? ["websocket"],
  reconnectionDelay: 100, reconnectionDelayMax: 300, randomizationFactor: 0,
  withCredentials: true,
});
setTimeout(() => { out({ type: "timeout" }); process.exit(1); }, plan.timeoutMs ?? 120000);

const states = new Map(); // "<channel>/<name>" -> {version, items}
const keyOf = (s) => `${s.channel ?? ""}/${s.name}`;

function applySnapshot(snapshot) {
  states.set(keyOf(snapshot), { version: snapshot.version, items: snapshot.items });
}

async function subscribeState(payload) {
  const ack = await socket.timeout(5000).emitWithAck("state:subscribe", payload);
  if (ack.ok) applySnapshot(ack);
  return ack;
}

socket.on("state:snapshot", applySnapshot);
socket.on("state:update", (update) => {
  const state = states.get(keyOf(update));
  if (!state || update.version <= state.version) return; // before the snapshot, or already in it
  if (update.version !== state.version + 1) {
    out({ type: "gap", state: keyOf(update), had: state.version, got: update.version });
    subscribeState(update.channel ? { name: update.name, channel: update.channel } : { name: update.name });
    return;
  }
  for (const op of update.ops) {
    if (op.op === "set") state.items[op.key] = op.value;
    else if (op.op === "merge") Object.assign(state.items[op.key], op.changes);
    else if (op.op === "delete") delete state.items[op.key];
  }
  state.version = update.version;
});

socket.on("connect", () => out({ type: "connect", recovered: socket.recovered === true, pid: socket._pid ?? null }));
socket.on("disconnect", (reason) => out({ type: "disconnect", reason, offset: socket._lastOffset ?? null }));
socket.on("connect_error", (err) => out({ type: "connect_error", message: err.message }));
socket.onAny((event, ...args) => out({ type: "event", event, args }));

const commands = createInterface({ input: process.stdin });
commands.on("line", async (line) => {
  const command = JSON.parse(line);
  switch (command.cmd) {
    case "emit": {
      const ack = command.event === "state:subscribe"
        ? await subscribeState(command.payload)
        : await socket.timeout(8000).emitWithAck(command.event, command.payload);
      out({ type: "ack", event: command.event, payload: command.payload, ack });
      break;
    }
    case "drop":
      if (command.hold) socket.io.reconnection(false);
      socket.io.engine.transport.ws?._socket?.destroy() ?? socket.io.engine.close();
      break;
    case "reconnect":
      socket.io.reconnection(true);
      socket.connect();
      break;
    case "token":
      token = command.token;
      break;
    case "states":
      out({ type: "states", states: Object.fromEntries(states) });
      break;
  }
  out({ type: "done", cmd: command.cmd });
});
