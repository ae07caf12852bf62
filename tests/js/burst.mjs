// A watchlist page that fires one price:subscribe per row at once, as socket.io-client apps do.
//   node tests/js/burst.mjs '{"url": "...", "token": "<jwt>", "rows": ["BTC_USDC_PERP", ...]}'
// Prints {"type": "burst", "codes": {...}} once every ack is in, then {"type": "after", "ack", "disconnects"}:
// the first subscribe that succeeds after the burst, and whatever disconnects were seen meanwhile.
import { io } from "socket.io-client";

const plan = JSON.parse(process.argv[2]);
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const socket = io(plan.url, { auth: { token: plan.token }, transports: ["websocket"], reconnectionDelay: 100 });
const done = (code) => { socket.close(); setTimeout(() => process.exit(code), 10); };
setTimeout(() => { out({ type: "timeout", disconnects }); done(1); }, plan.timeoutMs ?? 30000);

const disconnects = [];
socket.on("disconnect", (reason) => disconnects.push(reason));
socket.on("session:closed", (body) => disconnects.push(`session:closed ${body.code}`));
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

socket.once("connect", async () => {
  const acks = await Promise.all(plan.rows.map((row) =>
    socket.timeout(10000).emitWithAck("price:subscribe", [row]).catch((err) => ({ ok: false, error: { code: err.message } }))));
  const codes = {};
  for (const ack of acks) {
    const code = ack.ok ? "ok" : ack.error.code;
    codes[code] = (codes[code] ?? 0) + 1;
  }
  out({ type: "burst", codes });
  // Retry the refused rows as one batch, as the README says, until the budget lets it through.
  const rows = [...new Set(plan.rows)];
  for (;;) {
    const ack = await socket.timeout(10000).emitWithAck("price:subscribe", rows).catch((err) => ({ ok: false, error: { code: err.message } }));
    if (ack.ok || ack.error.code !== "RATE_LIMITED") {
      out({ type: "after", ack, connected: socket.connected, disconnects });
      return done(0);
    }
    await sleep(100);
  }
});
