// The README's "JavaScript client" example, run against a gateway in dev mode.
//   node tests/js/example.mjs '{"url": "http://127.0.0.1:7070"}'
// Everything between the README markers is the README's code block, verbatim
// (tests/test_board.py checks that); above them, what the README leaves to the app.
const plan = JSON.parse(process.argv[2]);
const GATEWAY_URL = plan.url;
// The app's back end mints tokens; here the gateway's dev-mode route stands in for it (or the test's token).
const getToken = async () => plan.token ?? (await (await fetch(`${GATEWAY_URL}/board/token`)).json()).token;
const render = (update) => process.stdout.write(JSON.stringify({ type: "render", update }) + "\n");
const showSlowed = (slowed) => process.stdout.write(JSON.stringify({ type: "slowed", slowed }) + "\n");
const renderPositions = (items) => process.stdout.write(JSON.stringify({ type: "positions", items }) + "\n");
const sorted = (side, best) => [...side].sort((a, b) => (Number(a[0]) - Number(b[0])) * best);
const renderBook = (book) => process.stdout.write(JSON.stringify(
  { type: "book", seq: book.seq, bids: sorted(book.bids, -1), asks: sorted(book.asks, 1) }) + "\n");

// README begin
import { io } from "socket.io-client";

const socket = io(GATEWAY_URL, {
  // Called before every connection attempt, so a reconnect never reuses an old token.
  auth: (send) => getToken().then((token) => send({ token })),
});

const highestSeq = new Map(); // asset -> highest seq seen on this connection

function onPrice(update) {
  if (update.seq <= (highestSeq.get(update.asset) ?? 0)) return; // late or repeated
  highestSeq.set(update.asset, update.seq);
  render(update); // price = update.bid / 10 ** update.decimals (integers on the wire)
}

// The next connection (maybe to another pod) numbers ticks afresh: new baseline.
socket.on("disconnect", () => highestSeq.clear());

socket.on("connect", async () => {
  // Recovered (same session, maybe on another pod): the private events missed, the subscriptions
  // and the latest price of each have been delivered already, before this handler runs.
  if (socket.recovered) return;
  // Subscriptions belong to a session: subscribe again after every new one. A watchlist needs fewer
  // ticks: at most 2 per second per asset, each the newest (the list form, [...], gets every tick).
  const ack = await socket.timeout(5000).emitWithAck("price:subscribe", WATCHLIST);
  if (!ack.ok) return console.error(ack.error.code, ack.error.message);
  ack.prices.forEach(onPrice); // a tick may have overtaken its snapshot: onPrice keeps the newest
  for (const { asset, code } of ack.rejected) console.warn(asset, code); // e.g. FORBIDDEN
  askBook("book:subscribe"); // its updates follow the asset's rate too, still exact
  subscribePositions();
});
socket.on("price:update", onPrice);

// The rate is per subscription; the ack's maxRate is the grant (the token or the server may cap it lower).
const WATCHLIST = { assets: ["BTC_USDC_PERP", "ETH_USDC_PERP"], maxRate: 2 };
// Live, e.g. every tick while the user trades and 2 a second again after: price:rate {maxRate: null | N}.
const setRate = (maxRate) => socket.timeout(5000).emitWithAck("price:rate", { maxRate }).catch(() => {});
// An overloaded gateway slows every connection evenly and says so (maxRate null: full rate again).
socket.on("price:rate", ({ maxRate }) => showSlowed(maxRate !== null));

// An order book: the ack is the top-10 view; each update holds only the levels that changed ("0": gone).
const BOOK = { asset: "BTC_USDC_PERP", depth: 10 };
let book = null; // { seq, bids: Map(price -> qty), asks: Map }: decimal strings, as on the wire
const keepBook = (view) => (book = view.ok ? { seq: view.seq, bids: new Map(view.bids), asks: new Map(view.asks) } : null);
// A callback, not `await emitWithAck`: the first update may come in the same read as the ack.
const askBook = (event) => socket.timeout(5000).emit(event, BOOK, (err, view) => keepBook(err ? {} : view));
socket.on("book:snapshot", keepBook); // a recovered session's books come back first, before any update

socket.on("book:update", (update) => {
  if (!book) return; // waiting for a snapshot
  if (update.prevSeq !== book.seq) { // missed one: start again from a snapshot
    book = null;
    return askBook("book:snapshot");
  }
  for (const side of ["bids", "asks"]) {
    for (const [price, qty] of update[side]) {
      if (qty === "0") book[side].delete(price);
      else book[side].set(price, qty);
    }
  }
  book.seq = update.seq;
  renderBook(book); // sort by Number(price) to draw it: bids high to low, asks low to high
});

// Private events: in publish order, exactly once, also across drops (the last argument is the offset).
socket.on("order:update", (order) => console.log("order", order));

// Keyed state: a snapshot, then only what changed, in version order (recovered across drops too).
const positions = { version: -1, items: {} }; // key -> position
function takePositions({ version, items }) {
  Object.assign(positions, { version, items });
  renderPositions(items);
}
const subscribePositions = () => socket.timeout(5000).emitWithAck("state:subscribe", { name: "positions" })
  .then((ack) => ack.ok && takePositions(ack), () => {});
socket.on("state:snapshot", (s) => s.name === "positions" && takePositions(s)); // a recovery past the window
socket.on("state:update", ({ name, version, ops }) => {
  if (name !== "positions" || version <= positions.version) return; // already in the snapshot
  if (version !== positions.version + 1) return subscribePositions(); // missed one: start again
  for (const op of ops) {
    if (op.op === "set") positions.items[op.key] = op.value;
    else if (op.op === "merge") Object.assign(positions.items[op.key], op.changes); // the changed fields
    else delete positions.items[op.key];
  }
  positions.version = version;
  renderPositions(positions.items);
});

socket.on("auth:expiring", async () => {
  const ack = await socket.timeout(5000).emitWithAck("auth:refresh", { token: await getToken() });
  if (!ack.ok) console.warn("token refresh failed:", ack.error.code); // disconnected at exp
});

socket.on("session:closed", ({ code, message }) => {
  // The server ends the session next (e.g. AUTH_EXPIRED); socket.io-client will not reconnect by itself.
  console.warn("session closed:", code, message);
});

socket.on("connect_error", (err) => {
  // err.message is the code: AUTH_REQUIRED, AUTH_INVALID, AUTH_EXPIRED, TOO_MANY_CONNECTIONS.
  if (!socket.active) console.error("refused:", err.message, err.data?.message);
});
// README end
