// The live price board: socket.io-client 4.x (served by the gateway from npm's
// socket.io-client package) and this repository's @realtime/client (clients/js,
// the ES modules the wheel ships under /board/client/). Reads like a frontend
// should: a token function for every (re)connect, refresh the token on
// auth:expiring, and let the helpers do the hard part: prices() keeps each row's
// newest price (one helper per row, so a row can pause) and its status (an asset
// the gateway calls stale or halted shows unmistakably), book() the selected
// asset's exact top 10, state() the user's positions. The rate selector asks for
// at most that many updates per second per asset (maxRate, live with
// price:rate); the grant is shown on it. market.js adds the tape and the chart.
import { book, prices, state } from "/board/client/index.js";

{
  const config = JSON.parse(document.getElementById("board-config").textContent);
  const statusEl = document.getElementById("status");
  const noticeEl = document.getElementById("notice");
  const metaEl = document.getElementById("meta");
  const tbody = document.querySelector("#board tbody");
  const rateEl = document.getElementById("rate");
  const maxRate = () => (rateEl.value ? Number(rateEl.value) : null);
  // The gateway's answer: the grant (the least of the request, the token's claim and the server's cap).
  function showGrant(granted) {
    rateEl.dataset.granted = granted === null ? "" : String(granted);
    rateEl.title = granted === null ? "every tick" : `at most ${granted} per second per asset`;
  }

  // One entry per catalog asset: its row, whether the user wants it, the highest seq seen.
  const rows = new Map();
  for (const { name, decimals } of config.assets) {
    const tr = document.createElement("tr");
    tr.dataset.asset = name;
    tr.dataset.seq = "0";
    tr.dataset.status = "live";
    tr.innerHTML = `
      <th scope="row" class="asset"><span class="sym"></span><span class="quote"></span><span class="badge" hidden></span></th>
      <td class="num bid">—</td><td class="num ask">—</td>
      <td class="num spread">—</td><td class="num age">—</td>
      <td class="stream"><button type="button" class="toggle" aria-pressed="true"></button></td>`;
    const [base, ...rest] = name.split("_");
    tr.querySelector(".sym").textContent = base;
    tr.querySelector(".quote").textContent = rest.join(" ");
    const row = { name, decimals, tr, wanted: true, quotes: null, received: 0, bid: null, ask: null };
    const toggle = tr.querySelector(".toggle");
    toggle.textContent = "Live";
    toggle.addEventListener("click", () => setWanted(row, !row.wanted));
    tr.querySelector(".asset").addEventListener("click", () => selectBook(name));
    tbody.appendChild(tr);
    rows.set(name, row);
  }

  // Integers in the smallest unit, rendered exactly: no floating point.
  function formatUnits(value, decimals) {
    const negative = value < 0;
    const digits = String(Math.abs(value)).padStart(decimals + 1, "0");
    const whole = decimals ? digits.slice(0, -decimals) : digits;
    const grouped = whole.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
    return (negative ? "-" : "") + grouped + (decimals ? "." + digits.slice(-decimals) : "");
  }

  function flash(cell, direction) {
    cell.classList.remove("up", "down");
    void cell.offsetWidth; // restart the animation
    if (direction) cell.classList.add(direction);
  }

  function render(row, update) {
    const { tr, decimals } = row;
    const bidCell = tr.querySelector(".bid");
    const askCell = tr.querySelector(".ask");
    if (row.bid !== null && update.bid !== row.bid) flash(bidCell, update.bid > row.bid ? "up" : "down");
    if (row.ask !== null && update.ask !== row.ask) flash(askCell, update.ask > row.ask ? "up" : "down");
    row.bid = update.bid;
    row.ask = update.ask;
    bidCell.textContent = formatUnits(update.bid, decimals);
    askCell.textContent = formatUnits(update.ask, decimals);
    const spread = update.ask - update.bid;
    const mid = (update.ask + update.bid) / 2;
    const bps = mid > 0 ? (spread / mid) * 10000 : 0;
    tr.querySelector(".spread").innerHTML =
      `${formatUnits(spread, decimals)} <span class="bps">${bps.toFixed(1)} bp</span>`;
    tr.dataset.seq = String(update.seq);
    row.received = performance.now();
    showAge(row, row.received);
  }

  // live, stale (the feed sent nothing for a while) or halted (by the exchange):
  // a stale or halted row's prices are not to be traded on, and look it.
  const BADGES = { stale: "Stale", halted: "Halted" };
  function showAssetStatus(row, status, since) {
    row.tr.dataset.status = status;
    const badge = row.tr.querySelector(".badge");
    badge.hidden = !BADGES[status];
    badge.textContent = BADGES[status] || "";
    badge.title = BADGES[status] ? `${BADGES[status]} since ${new Date(since ?? Date.now()).toLocaleTimeString()}` : "";
  }

  function showAge(row, now) {
    if (!row.received) return;
    const cell = row.tr.querySelector(".age");
    const seconds = (now - row.received) / 1000;
    cell.textContent = seconds < 60 ? `${seconds.toFixed(1)} s` : `${Math.floor(seconds / 60)} min`;
    cell.classList.toggle("stale", seconds >= 5);
  }
  setInterval(() => {
    const now = performance.now();
    for (const row of rows.values()) showAge(row, now);
  }, 200);

  function setStatus(state, label, detail) {
    statusEl.dataset.state = state;
    statusEl.querySelector(".label").textContent = label;
    noticeEl.hidden = !detail;
    noticeEl.textContent = detail || "";
  }

  function showMeta() {
    const engine = socket.io.engine;
    const transport = socket.connected && engine ? engine.transport.name : "—";
    statusEl.dataset.transport = transport;
    metaEl.textContent =
      `socket.io-client · ${config.serializer} · ${transport}` +
      (statusEl.dataset.instance ? ` · instance ${statusEl.dataset.instance}` : "");
  }

  // The token for every connection attempt, so a reconnect never reuses an
  // expired one: `#token=<jwt>` in the address, else the dev-mode token route.
  async function freshToken() {
    const fromHash = new URLSearchParams(location.hash.slice(1)).get("token");
    if (fromHash) return fromHash;
    if (!config.tokenUrl) return null;
    const response = await fetch(config.tokenUrl, { cache: "no-store" });
    if (!response.ok) throw new Error(`token route answered ${response.status}`);
    return (await response.json()).token;
  }

  const socket = io({
    auth: (send) => {
      freshToken().then((token) => send(token ? { token } : {}), () => send({}));
    },
  });

  // One prices() helper per wanted row: it subscribes on every new session (with the chosen maxRate), keeps
  // the newest price from the ack's baseline and each tick, and leaves the ones that came late or twice.
  function follow(row) {
    const quotes = prices(socket, [row.name], maxRate() === null ? {} : { maxRate: maxRate() });
    quotes.on("price", (update) => render(row, update));
    quotes.on("status", (_asset, status, since) => showAssetStatus(row, status, since));
    quotes.on("subscribed", (ack) => {
      if (ack.instance) statusEl.dataset.instance = ack.instance;
      showGrant(ack.maxRate ?? null);
      showMeta();
    });
    quotes.on("rate", showGrant);
    quotes.on("error", (error) => {
      if ("asset" in error) row.tr.querySelector(".age").textContent = error.code; // this asset was refused
      else setStatus("connected", "Live", `${error.message} (${error.code})`);
    });
    row.quotes = quotes;
  }

  function setWanted(row, wanted) {
    row.wanted = wanted;
    row.tr.classList.toggle("paused", !wanted);
    const toggle = row.tr.querySelector(".toggle");
    toggle.setAttribute("aria-pressed", String(wanted));
    toggle.textContent = wanted ? "Live" : "Paused";
    if (wanted) follow(row);
    else row.quotes.close(); // unsubscribes: the row stays at its last price
  }

  // The selected asset's order book, kept by book(): the ack's view, each update applied whole, a snapshot
  // asked on a gap and taken after a recovery; the view it emits is always the server's top 10 at its seq.
  const BOOK_DEPTH = 10;
  const bookEl = document.getElementById("book");
  let selected = config.assets.length ? config.assets[0].name : null;
  let bookHelper = null;
  let shownBook = null; // the helper's last view

  function followBook() {
    shownBook = null;
    bookHelper = book(socket, selected, BOOK_DEPTH);
    bookHelper.on("view", (view) => {
      shownBook = view;
      renderBook();
    });
    bookHelper.on("status", (status) => {
      bookEl.dataset.status = status;
      renderBook();
    });
    bookEl.dataset.status = bookHelper.status;
    renderBook();
  }

  function renderBook() {
    const view = shownBook;
    bookEl.dataset.asset = view ? view.asset : "";
    bookEl.dataset.seq = String(view ? view.seq : 0);
    bookEl.querySelector(".book-asset").textContent = view ? `${view.asset.replace(/_/g, " ")} book` : "Order book";
    bookEl.querySelector(".book-state").textContent = bookEl.dataset.status === "live" ? "" : "· resyncing";
    const bids = view ? view.bids : []; // best first, ordered exactly (decimal strings, no floats)
    const asks = view ? view.asks : [];
    const largest = Math.max(0, ...[...bids, ...asks].map(([, qty]) => Number(qty)));
    const fill = (side, rows) => {
      const body = bookEl.querySelector(`.${side} tbody`);
      body.replaceChildren(...rows.map(([price, qty]) => {
        const tr = document.createElement("tr");
        tr.className = "level";
        const width = largest > 0 ? (100 * Number(qty)) / largest : 0;
        const cells = [`<td class="num price">${price}</td>`, `<td class="num qty">${qty}</td>`];
        tr.innerHTML = (side === "bids" ? cells.reverse() : cells).join("");
        const bar = document.createElement("span");
        bar.className = "bar";
        bar.style.width = `${width.toFixed(1)}%`;
        tr.querySelector(".qty").appendChild(bar);
        return tr;
      }));
    };
    fill("bids", bids);
    fill("asks", asks);
  }

  function selectBook(name) {
    if (name === selected) return;
    selected = name;
    for (const row of rows.values()) row.tr.classList.toggle("selected", row.name === name);
    document.dispatchEvent(new CustomEvent("board:select", { detail: name })); // the tape and chart follow
    bookHelper.close(); // unsubscribes the previous book
    followBook();
  }
  if (selected) rows.get(selected).tr.classList.add("selected");
  // market.js (the tape and the chart) shares this connection and the selection.
  window.realtimeBoard = { socket, selected: () => selected, assets: config.assets };

  // The user's positions (keyed state), kept by state(): the snapshot, then each state:update in version
  // order; a version gap subscribes again, a recovery's state:snapshot replaces it.
  const positionsEl = document.getElementById("positions");
  const positions = state(socket, "positions");
  function showPositions() {
    const items = positions.entries();
    positionsEl.hidden = Object.keys(items).length === 0;
    positionsEl.dataset.version = String(positions.version);
    const body = positionsEl.querySelector("tbody");
    body.replaceChildren(...Object.keys(items).sort().map((key) => {
      const p = items[key];
      const tr = document.createElement("tr");
      tr.dataset.key = key;
      for (const [field, cls] of [["asset", "asset"], ["side", ""], ["qty", "num"], ["entry", "num"],
                                  ["price", "num"], ["profit", "num"]]) {
        const td = document.createElement("td");
        td.className = cls;
        td.dataset.field = field;
        td.textContent = p[field] ?? "";
        if (field === "profit") td.classList.toggle("loss", String(p.profit).startsWith("-"));
        tr.appendChild(td);
      }
      return tr;
    }));
  }
  positions.on("version", showPositions);

  for (const row of rows.values()) follow(row);
  if (selected) followBook();

  // The helpers subscribe again by themselves on a new session (maybe another pod, numbering afresh). A
  // recovered one (maybe on another pod, or a restarted one) asks the prices again so the ack names its instance.
  socket.on("connect", () => {
    setStatus("connected", "Live");
    showMeta();
    if (socket.recovered) for (const row of rows.values()) if (row.wanted) row.quotes.refresh();
  });
  rateEl.addEventListener("change", () => {
    for (const row of rows.values()) if (row.wanted) row.quotes.setMaxRate(maxRate());
  });
  // The gateway under overload caps every asset's rate for a while, and says so.
  socket.on("price:rate", ({ maxRate: cap, overload }) => {
    statusEl.dataset.overload = String(overload);
    setStatus("connected", "Live", cap !== null ? `the gateway is busy: at most ${cap} updates per second` : "");
  });
  socket.on("auth:expiring", async () => {
    try {
      const token = await freshToken();
      if (!token) return;
      const ack = await socket.timeout(10000).emitWithAck("auth:refresh", { token });
      if (!ack.ok) setStatus("connected", "Live", `token refresh refused: ${ack.error.code}`);
    } catch (error) {
      setStatus("connected", "Live", `token refresh failed: ${error.message}`);
    }
  });
  // The server says why before it ends a session (token expired, flood, replaced).
  let closedBecause = null;
  socket.on("session:closed", (reason) => {
    closedBecause = reason;
  });
  socket.on("disconnect", (reason) => {
    if (socket.active) {
      setStatus("reconnecting", "Reconnecting…", `connection lost (${reason})`);
    } else {
      // A server-side disconnect is final for socket.io-client: offer to come back.
      const why = closedBecause ? `${closedBecause.code}: ${closedBecause.message}` : reason;
      setStatus("disconnected", "Disconnected", `the server ended this session (${why}). `);
      const again = document.createElement("button");
      again.type = "button";
      again.className = "reconnect";
      again.textContent = "Reconnect";
      again.addEventListener("click", () => socket.connect());
      noticeEl.appendChild(again);
    }
    closedBecause = null;
    showMeta();
  });
  socket.on("connect_error", (error) => {
    if (socket.active) {
      setStatus("reconnecting", "Reconnecting…", `cannot reach the gateway (${error.message})`);
    } else {
      const message = error.data && error.data.message ? `: ${error.data.message}` : "";
      setStatus("refused", "Refused", `connection refused, ${error.message}${message}`);
    }
  });
  socket.io.on("reconnect_attempt", (attempt) => {
    statusEl.querySelector(".label").textContent = `Reconnecting… (attempt ${attempt})`;
  });
  socket.io.on("open", () => socket.io.engine.on("upgrade", showMeta));
}
