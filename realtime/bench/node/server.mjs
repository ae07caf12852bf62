// The Node socket.io 4.8 equivalent of `realtime serve` that `realtime bench --target node`
// measures against: JWT in the CONNECT packet, `price:subscribe` with an ack, one room per
// asset, the Redis price feed fanned out to local subscribers, @socket.io/redis-adapter for
// the rest. Same REALTIME_* variables as the gateway (the ones it needs).
import { createServer } from "node:http";
import { Server } from "socket.io";
import { createAdapter } from "@socket.io/redis-adapter";
import { createClient } from "redis";
import jwt from "jsonwebtoken";

const env = process.env;
const port = Number(env.REALTIME_PORT ?? 7070);
const host = env.REALTIME_HOST ?? "0.0.0.0";
const redisUrl = env.REALTIME_REDIS_URL;
const priceChannel = env.REALTIME_PRICE_CHANNEL ?? "exness:price-updates";
const secret = env.REALTIME_JWT_SECRET;
if (!redisUrl || !secret) {
  console.error("bench node server: set REALTIME_REDIS_URL and REALTIME_JWT_SECRET");
  process.exit(2);
}
const catalog = new Map();
for (const item of (env.REALTIME_ASSETS ?? "BTC_USDC_PERP:4").split(",")) {
  const [name, decimals] = item.trim().split(":");
  catalog.set(name.toUpperCase(), Number(decimals));
}

const http = createServer((req, res) => {
  // /ready for the bench's start-up wait; socket.io answers its own path.
  if (req.url === "/ready" || req.url === "/health") {
    res.writeHead(200, { "content-type": "application/json" }).end('{"status":"ok"}');
  }
});
const pub = createClient({ url: redisUrl });
const sub = pub.duplicate();
const feed = pub.duplicate();
await Promise.all([pub.connect(), sub.connect(), feed.connect()]);
const io = new Server(http, {
  adapter: createAdapter(pub, sub, { key: env.REALTIME_MANAGER_CHANNEL ?? "socket.io" }),
  pingInterval: 25000,
  pingTimeout: 20000,
});

const latest = new Map();
const error = (code, message) => ({ ok: false, error: { code, message } });

io.use((socket, next) => {
  const token = socket.handshake.auth?.token;
  if (typeof token !== "string") return next(Object.assign(new Error("AUTH_REQUIRED"), { data: { code: "AUTH_REQUIRED", message: "a token is required" } }));
  try {
    socket.data.principal = jwt.verify(token, secret, { algorithms: ["HS256"] });
    next();
  } catch {
    next(Object.assign(new Error("AUTH_INVALID"), { data: { code: "AUTH_INVALID", message: "invalid token" } }));
  }
});

io.on("connection", (socket) => {
  socket.join(`user:${socket.data.principal.sub}`);
  socket.on("price:subscribe", (payload, ack) => {
    if (typeof ack !== "function") return;
    const names = typeof payload === "string" ? [payload] : payload;
    if (!Array.isArray(names)) return ack(error("BAD_REQUEST", "expected a list of asset names"));
    const subscribed = [], rejected = [], prices = [];
    for (const raw of names) {
      const name = String(raw).toUpperCase();
      if (!catalog.has(name)) { rejected.push({ asset: raw, code: "UNKNOWN_ASSET" }); continue; }
      socket.join(`asset:${name}`);
      subscribed.push(name);
      if (latest.has(name)) prices.push(latest.get(name));
    }
    ack({ ok: true, subscribed, rejected, prices });
  });
});

// The feed: validate, number, keep the latest, fan out to this server's subscribers.
await feed.subscribe(priceChannel, (raw) => {
  let tick;
  try { tick = JSON.parse(raw); } catch { return; }
  const decimals = catalog.get(tick?.asset);
  if (decimals === undefined || !Number.isInteger(tick.bid) || !Number.isInteger(tick.ask) || tick.bid > tick.ask) return;
  const last = latest.get(tick.asset)?.seq ?? 0;
  const seq = Number.isInteger(tick.seq) ? tick.seq : last + 1;
  if (seq <= last) return;
  const update = { asset: tick.asset, bid: tick.bid, ask: tick.ask, decimals, seq, ts: tick.ts ?? Date.now() };
  latest.set(tick.asset, update);
  io.local.to(`asset:${tick.asset}`).emit("price:update", update);
});

http.listen(port, host, () => console.log(`bench node server listening on ${host}:${port}`));
const stop = () => { io.close(); Promise.allSettled([pub.quit(), sub.quit(), feed.quit()]).then(() => process.exit(0)); setTimeout(() => process.exit(0), 2000).unref(); };
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
