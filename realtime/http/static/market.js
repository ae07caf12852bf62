// The selected asset's trade tape and candle chart, on the board's connection (board.js), kept by
// @realtime/client: trades() holds the last trades (the ack's, then each trade once, in feed order, and what
// a reconnect missed, asked again), candles() the chart's bars merged by `t` (the open one replaced, closed
// ones final). The chart is lightweight-charts, served by the gateway from npm's package; without it the
// tape still runs.
import { candles, trades } from "/board/client/index.js";

{
  const board = window.realtimeBoard;
  const section = document.getElementById("market");
  const tapeBody = section.querySelector(".tape tbody");
  const intervalEl = section.querySelector(".interval");
  const TAPE_ROWS = 30;
  const CHART_BARS = 300;
  let asset = board ? board.selected() : null;
  let tape = null;
  let chartBars = null;

  const charts = window.LightweightCharts;
  const chart = board && charts ? charts.createChart(section.querySelector(".chart"), {
    autoSize: true,
    layout: { background: { color: "transparent" }, textColor: "#8b93a7" },
    grid: { vertLines: { color: "rgba(139,147,167,0.12)" }, horzLines: { color: "rgba(139,147,167,0.12)" } },
    timeScale: { timeVisible: true, secondsVisible: true },
  }) : null;
  const series = chart ? chart.addSeries(charts.CandlestickSeries, {}) : null;
  section.dataset.chart = chart ? "ready" : "missing";

  const bar = (c) => ({ time: c.t / 1000, open: Number(c.o), high: Number(c.h), low: Number(c.l), close: Number(c.c) });

  function show() {
    section.dataset.asset = asset || "";
    section.dataset.trades = String(tape ? tape.trades.length : 0);
    section.dataset.candles = String(chartBars ? chartBars.candles.length : 0);
    section.querySelector(".market-asset").textContent = asset ? `${asset.replace(/_/g, " ")} trades` : "Trades";
  }

  function row(trade) {
    const tr = document.createElement("tr");
    tr.className = trade.side;
    tr.dataset.id = trade.id;
    tr.innerHTML = `<td class="time"></td><td class="num price"></td><td class="num qty"></td>`;
    tr.querySelector(".time").textContent = new Date(trade.ts).toLocaleTimeString();
    tr.querySelector(".price").textContent = trade.price;
    tr.querySelector(".qty").textContent = trade.qty;
    return tr;
  }

  function followTape() {
    tapeBody.replaceChildren();
    tape = null;
    if (!asset) return show();
    tape = trades(board.socket, asset, { last: TAPE_ROWS });
    tape.on("view", (kept) => {
      tapeBody.replaceChildren(...kept.map(row).reverse()); // newest on top
      show();
    });
    show();
  }

  function followChart() {
    if (series) series.setData([]);
    chartBars = null;
    if (!asset) return show();
    const kept = (chartBars = candles(board.socket, asset, intervalEl.value, { history: CHART_BARS }));
    // lightweight-charts updates only its newest bar (or adds a newer one): anything else draws them all again.
    let last = -1;
    let redraw = false;
    kept.on("status", (status) => (redraw ||= status === "live")); // an ack merged: its view follows
    kept.on("candle", (candle) => {
      if (candle.t >= last && series) {
        series.update(bar(candle));
        last = candle.t;
      } else {
        redraw = true; // an older bar closed after the next one opened
      }
    });
    kept.on("view", (bars) => {
      if (redraw && series) series.setData(bars.map(bar));
      if (bars.length) last = Math.max(last, bars[bars.length - 1].t);
      redraw = false;
      show();
    });
    show();
  }

  if (board) {
    document.addEventListener("board:select", (event) => {
      if (tape) tape.close(); // unsubscribes
      if (chartBars) chartBars.close();
      asset = event.detail;
      followTape();
      followChart();
    });
    intervalEl.addEventListener("change", () => {
      if (chartBars) chartBars.close();
      followChart();
    });
    followTape();
    followChart();
  }
}
