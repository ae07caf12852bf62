// The price board's positions table (keyed state) in Debian's chromium with playwright-core.
//   node tests/js/positions.mjs '{"url": "...", "screenshot": "test-artifacts/board-positions.png"}'
// Prints {"type": "shown"} once the table has rows and has taken two updates, then answers each
// {"step": "read"} on stdin with {"type": "table", "version", "rows": {key: {field: text}}}.
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const plan = JSON.parse(process.argv[2]);
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const browser = await chromium.launch({
  executablePath: plan.chromium ?? "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
});
const page = await browser.newPage({ viewport: { width: 1180, height: 520 } });
page.on("pageerror", (error) => out({ type: "pageerror", message: error.message }));

const table = () => page.evaluate(() => {
  const section = document.getElementById("positions");
  const rows = {};
  for (const tr of section.querySelectorAll("tbody tr")) {
    rows[tr.dataset.key] = Object.fromEntries([...tr.children].map((td) => [td.dataset.field, td.textContent]));
  }
  return { version: Number(section.dataset.version), hidden: section.hidden, rows };
});

try {
  await page.goto(plan.url);
  await page.waitForFunction(() => {
    const section = document.getElementById("positions");
    return !section.hidden && Number(section.dataset.version) >= 3;
  }, null, { timeout: plan.timeoutMs ?? 30000 });
  if (plan.screenshot) await page.screenshot({ path: plan.screenshot, fullPage: true });
  out({ type: "shown", ...(await table()) });
  for await (const line of createInterface({ input: process.stdin })) {
    if (JSON.parse(line).step !== "read") break;
    out({ type: "table", ...(await table()) });
  }
} catch (error) {
  out({ type: "failed", message: String(error) });
} finally {
  await browser.close();
}
