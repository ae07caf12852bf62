// A socket.io-client 4.x that reconnects by itself, driven from stdin; prints one JSON line per thing it sees.
//   node tests/js/recovery.mjs '{"url": "...", "token": "...", "subscribe": ["BTC_USDC_PERP"]}'
// stdin, one JSON object a line:
//   {"cmd": "drop", "how": "abrupt" | "clean", "hold": false}  cut the transport (abrupt: the TCP socket is
//        destroyed, as a network drop; clean: engine.io's close); hold: stay away until "reconnect"
//   {"cmd": "reconnect"}            come back after a held drop
//   {"cmd": "token", "token": "..."}   the token of the next CONNECTs
//   {"cmd": "subscribe" | "unsubscribe", "assets": [...]}
//   {"cmd": "quit"}
import { createInterface } from "node:readline";
import { io } from "socket.io-client";

const plan = JSON.parse(process.argv[2]);
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
let token = plan.token;
const options = {
  // The function form: socket.io-client calls it on every (re)connect and merges {pid, offset} into it.
  auth: (cb) => cb({ token }),
  transports: plan.transports ?? ["websocket"],
  reconnectionDelay: 100, reconnectionDelayMax: 300, randomizationFactor: 0,
};
if (plan.msgpack) options.parser = (await import("socket.io-msgpack-parser")).default;
const socket = io(plan.url, options);
setTimeout(() => { out({ type: "timeout" }); process.exit(1); }, plan.timeoutMs ?? 120000);

let connects = 0;
socket.on("connect", async () => {
  connects += 1;
  out({ type: "connect", count: connects, recovered: socket.recovered === true, pid: socket._pid ?? null });
  if (plan.subscribe && !socket.recovered) {
    const ack = await socket.timeout(5000).emitWithAck("price:subscribe", plan.subscribe);
    out({ type: "ack", event: "price:subscribe", ack });
  }
});
// The offset socket.io-client kept, which it sends with its pid on reconnect.
socket.on("disconnect", (reason) => out({ type: "disconnect", reason, offset: socket._lastOffset ?? null }));
socket.on("connect_error", (err) => out({ type: "connect_error", message: err.message, data: err.data ?? null }));
socket.onAny((event, ...args) => out({ type: "event", event, args }));

function drop(how) {
  if (how === "clean") {
    socket.io.engine.close();
  } else {
    // What a network drop looks like to the client: the TCP connection is gone, no close frame.
    const transport = socket.io.engine.transport;
    if (transport.ws && transport.ws._socket) transport.ws._socket.destroy();
    else socket.io.engine.close();
  }
}

const commands = createInterface({ input: process.stdin });
commands.on("line", async (line) => {
  const command = JSON.parse(line);
  switch (command.cmd) {
    case "drop":
      if (command.hold) socket.io.reconnection(false);
      drop(command.how ?? "abrupt");
      break;
    case "reconnect":
      socket.io.reconnection(true);
      socket.connect();
      break;
    case "token":
      token = command.token;
      break;
    case "subscribe":
    case "unsubscribe": {
      const ack = await socket.timeout(5000).emitWithAck(`price:${command.cmd}`, command.assets);
      out({ type: "ack", event: `price:${command.cmd}`, ack });
      break;
    }
    case "quit":
      socket.close();
      setTimeout(() => process.exit(0), 10);
      break;
  }
  out({ type: "done", cmd: command.cmd });
});
