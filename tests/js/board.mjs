// Drive the price board in Debian's chromium with playwright-core; print one JSON line per step.
//   node tests/js/board.mjs '{"url": "...", "screenshot": "test-artifacts/board.png", "restart": true}'
// With "rate": N, it picks that maxRate in the selector, counts row changes for "rateMs" and prints
// {"type": "rated", "granted", "changes": {asset: n}}, then goes back to every tick ({"type": "unrated"}).
// With "restart", it prints {"type": "restart"} and waits for {"step": "stopped"} then
// {"step": "started"} on stdin while the test restarts the gateway; with "hold", it
// prints {"type": "holding"} and stays until {"step": "release"}. With "stale": "<ASSET>",
// it waits until that row shows stale, prints {"type": "stale"} (and a screenshot), then
// until it is live again after {"step": "revive"}, and prints {"type": "revived"}. With
// "halt": "<ASSET>", it then waits until that row shows halted and prints {"type": "halted"}. With
// "book": ["<ASSET>", ...], it prints the order book shown for each of them in turn ({"type": "book"}:
// the first is selected at load, the others by clicking their row), after it moved at least once.
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const plan = JSON.parse(process.argv[2]);
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const timeout = plan.timeoutMs ?? 30000;
const stdin = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const step = async (name) => {
  const { value, done } = await stdin.next();
  if (done || JSON.parse(value).step !== name) throw new Error(`expected step ${name}, got ${value}`);
};

const browser = await chromium.launch({
  executablePath: plan.chromium ?? "/usr/bin/chromium",
  headless: true, // playwright adds --headless and its own temporary --user-data-dir
  args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"],
});

// What the page shows, as text: the test checks the rendering against what it published.
const snapshot = () => page.evaluate(() => {
  const status = document.getElementById("status");
  return {
    state: status.dataset.state,
    instance: status.dataset.instance ?? null,
    transport: status.dataset.transport ?? null,
    rows: [...document.querySelectorAll("tr[data-asset]")].map((tr) => ({
      asset: tr.dataset.asset,
      seq: Number(tr.dataset.seq),
      bid: tr.querySelector(".bid").textContent,
      ask: tr.querySelector(".ask").textContent,
      spread: tr.querySelector(".spread").firstChild?.textContent.trim() ?? "",
      age: tr.querySelector(".age").textContent,
      live: tr.querySelector(".toggle").getAttribute("aria-pressed") === "true",
      status: tr.dataset.status,
      badge: tr.querySelector(".badge").hidden ? "" : tr.querySelector(".badge").textContent,
      struck: getComputedStyle(tr.querySelector(".bid")).textDecorationLine,
    })),
  };
});
const seqs = async () => Object.fromEntries((await snapshot()).rows.map((r) => [r.asset, r.seq]));
// Wait until every listed asset's row shows a seq above `after` (ticks arrive and render).
const advanced = (after, assets = Object.keys(after)) => page.waitForFunction(
  ([after, assets]) => assets.every((asset) =>
    Number(document.querySelector(`tr[data-asset="${asset}"]`).dataset.seq) > after[asset]),
  [after, assets], { timeout });
const connectedTo = (notInstance) => page.waitForFunction(
  (notInstance) => {
    const status = document.getElementById("status");
    return status.dataset.state === "connected" && status.dataset.instance && status.dataset.instance !== notInstance;
  }, notInstance, { timeout });

const page = await browser.newPage({ viewport: { width: 1180, height: plan.height ?? 400 } });
page.on("pageerror", (error) => out({ type: "pageerror", message: error.message }));
page.on("console", (message) => {
  if (message.type() === "error") out({ type: "console", text: message.text() });
});

try {
  // The page connects and every row fills in.
  await page.goto(plan.url);
  await connectedTo(null);
  const empty = Object.fromEntries((await snapshot()).rows.map((r) => [r.asset, 0]));
  await advanced(empty);
  out({ type: "filled", ...(await snapshot()) });

  // Prices change as ticks are published.
  await advanced(await seqs());
  await page.waitForTimeout(plan.settleMs ?? 300); // let the flash and the age show in the picture
  out({ type: "changed", ...(await snapshot()) });
  if (plan.screenshot) await page.screenshot({ path: plan.screenshot });

  if (plan.toggle) {
    // Pause one asset: its row stays put while the others move; resume: it moves again.
    const [paused, ...others] = Object.keys(await seqs()).reverse();
    await page.click(`tr[data-asset="${paused}"] .toggle`);
    const before = await seqs();
    await advanced(before, others);
    await advanced(await seqs(), others);
    out({ type: "paused", asset: paused, before: before[paused], ...(await snapshot()) });
    await page.click(`tr[data-asset="${paused}"] .toggle`);
    await advanced(await seqs(), [paused]);
    out({ type: "resumed", asset: paused, ...(await snapshot()) });
  }

  if (plan.rate) {
    // Pick a rate: the gateway grants it (shown on the selector) and the rows move at most that often.
    await page.selectOption("#rate", String(plan.rate));
    await page.waitForFunction((rate) => document.getElementById("rate").dataset.granted === rate,
                               String(plan.rate), { timeout });
    const start = await seqs();
    const changes = Object.fromEntries(Object.keys(start).map((asset) => [asset, 0]));
    const last = { ...start };
    const until = Date.now() + (plan.rateMs ?? 3000);
    while (Date.now() < until) {
      const now = await seqs();
      for (const asset of Object.keys(now)) if (now[asset] !== last[asset]) { changes[asset] += 1; last[asset] = now[asset]; }
      await page.waitForTimeout(20);
    }
    out({ type: "rated", granted: Number(await page.$eval("#rate", (el) => el.dataset.granted)), changes,
          start, end: last });
    await page.selectOption("#rate", "");
    await page.waitForFunction(() => document.getElementById("rate").dataset.granted === "", null, { timeout });
    out({ type: "unrated" });
  }

  if (plan.book) {
    // The selected asset's order book: levels best first, a size bar each.
    const shownBook = () => page.evaluate(() => {
      const book = document.getElementById("book");
      const levels = (side) => [...book.querySelectorAll(`.${side} tr.level`)].map((tr) => [
        tr.querySelector(".price").textContent, tr.querySelector(".qty").textContent,
        Number.parseFloat(tr.querySelector(".bar").style.width)]);
      return { asset: book.dataset.asset, seq: Number(book.dataset.seq), status: book.dataset.status,
               bids: levels("bids"), asks: levels("asks") };
    });
    for (const [index, asset] of plan.book.entries()) {
      if (index) await page.click(`tr[data-asset="${asset}"] .asset`);
      await page.waitForSelector(`#book[data-asset="${asset}"][data-status="live"] tr.level`, { timeout });
      const first = await shownBook();
      await page.waitForFunction((seq) => Number(document.getElementById("book").dataset.seq) > seq, first.seq,
                                 { timeout });
      out({ type: "book", ...(await shownBook()) });
      if (plan.screenshot && !index) await page.screenshot({ path: plan.screenshot.replace(/\.png$/, "-book.png") });
    }
  }

  if (plan.stale) {
    // The feed stops for one asset: its row turns stale while the others keep moving.
    const row = `tr[data-asset="${plan.stale}"]`;
    await page.waitForSelector(`${row}[data-status="stale"]`, { timeout });
    const others = Object.keys(await seqs()).filter((asset) => asset !== plan.stale);
    await advanced(await seqs(), others);
    out({ type: "stale", asset: plan.stale, ...(await snapshot()) });
    if (plan.screenshot) await page.screenshot({ path: plan.screenshot.replace(/\.png$/, "-stale.png") });
    await step("revive");
    await page.waitForSelector(`${row}[data-status="live"]`, { timeout });
    out({ type: "revived", asset: plan.stale, ...(await snapshot()) });
  }

  if (plan.halt) {
    // The feed halts one asset: its row says so at once.
    await page.waitForSelector(`tr[data-asset="${plan.halt}"][data-status="halted"]`, { timeout });
    out({ type: "halted", asset: plan.halt, ...(await snapshot()) });
    if (plan.screenshot) await page.screenshot({ path: plan.screenshot.replace(/\.png$/, "-halted.png") });
  }

  if (plan.hold) {
    // Stay on the page until the test has seen what it waits for, then report.
    out({ type: "holding" });
    await step("release");
    out({ type: "held", ...(await snapshot()) });
  }

  if (plan.restart) {
    // The gateway goes away and comes back on the same port: the page reconnects
    // and resubscribes by itself.
    const { instance } = await snapshot();
    out({ type: "restart", instance });
    await step("stopped");
    await page.waitForSelector('#status[data-state="reconnecting"]', { timeout });
    out({ type: "reconnecting", ...(await snapshot()) });
    await step("started");
    await connectedTo(instance);
    await advanced(await seqs());
    out({ type: "reconnected", ...(await snapshot()) });
    if (plan.screenshot) await page.screenshot({ path: plan.screenshot.replace(/\.png$/, "-reconnected.png") });
  }
  out({ type: "done" });
} catch (error) {
  out({ type: "failed", message: String(error.message ?? error).split("\n")[0], ...(await snapshot()) });
} finally {
  await browser.close();
  process.exit(0);
}
