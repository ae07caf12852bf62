// A socket.io-client whose CONNECT is held back until the test says "go" (its auth callback waits on stdin),
// so the CONNECT reaches a pod that has begun draining. Later attempts answer at once.
//   node tests/js/drain.mjs '{"url": "...", "token": "<jwt>"}'
// Prints {"type": "auth_asked", "attempt"} per attempt, {"type": "open", "sid"} per Engine.IO session,
// {"type": "connect_error", "message", "active"}, {"type": "disconnect", "reason"}, and
// {"type": "ack", "instance"} once connected and subscribed.
import { createInterface } from "node:readline";
import { io } from "socket.io-client";

const plan = JSON.parse(process.argv[2]);
const out = (obj) => process.stdout.write(JSON.stringify({ ...obj, t: Date.now() }) + "\n");
let go;
const released = new Promise((resolve) => { go = resolve; });
createInterface({ input: process.stdin }).on("line", (line) => { if (JSON.parse(line).go) go(); });

let attempt = 0;
const socket = io(plan.url, {
  transports: ["websocket"],
  reconnectionDelay: 200,
  reconnectionDelayMax: 1000,
  auth: (send) => {
    attempt += 1;
    out({ type: "auth_asked", attempt });
    (attempt === 1 ? released : Promise.resolve()).then(() => send({ token: plan.token }));
  },
});
socket.io.on("open", () => out({ type: "open", sid: socket.io.engine.id }));
socket.on("connect_error", (err) => out({ type: "connect_error", message: err.message, active: socket.active }));
socket.on("disconnect", (reason) => out({ type: "disconnect", reason }));
socket.on("connect", async () => {
  const ack = await socket.timeout(10000).emitWithAck("price:subscribe", ["BTC_USDC_PERP"]);
  out({ type: "ack", instance: ack.instance });
});
