// The selected asset's trade tape and candle chart, on the board's connection (board.js):
// `trades:subscribe` for the last trades then each `trade`, `candles:subscribe` for the closed
// candles and the open one, then each `candle` (which replaces the candle of its `t`). The chart is
// lightweight-charts, served by the gateway from npm's package; without it the tape still runs.
"use strict";

(() => {
  const board = window.realtimeBoard;
  if (!board) return;
  const { socket } = board;
  const section = document.getElementById("market");
  const tapeBody = section.querySelector(".tape tbody");
  const intervalEl = section.querySelector(".interval");
  const TAPE_ROWS = 30;
  let asset = board.selected();
  let interval = intervalEl.value;
  let trades = 0;
  let candles = 0;

  const charts = window.LightweightCharts;
  const chart = charts ? charts.createChart(section.querySelector(".chart"), {
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
    section.dataset.trades = String(trades);
    section.dataset.candles = String(candles);
    section.querySelector(".market-asset").textContent = asset ? `${asset.replace(/_/g, " ")} trades` : "Trades";
  }

  function addTrade(trade) {
    const tr = document.createElement("tr");
    tr.className = trade.side;
    tr.dataset.id = trade.id;
    tr.innerHTML = `<td class="time"></td><td class="num price"></td><td class="num qty"></td>`;
    tr.querySelector(".time").textContent = new Date(trade.ts).toLocaleTimeString();
    tr.querySelector(".price").textContent = trade.price;
    tr.querySelector(".qty").textContent = trade.qty;
    tapeBody.prepend(tr); // newest on top
    while (tapeBody.children.length > TAPE_ROWS) tapeBody.lastElementChild.remove();
    trades += 1;
  }

  function addCandle(candle) {
    // A closed candle may come after the next one opened: the chart only takes the newest bar.
    if (series) {
      try { series.update(bar(candle)); } catch { /* older than the chart's last bar */ }
    }
    candles += 1;
  }

  function request() {
    if (!asset || !socket.connected) return;
    const wanted = asset;
    socket.timeout(10000).emit("trades:subscribe", { asset, history: TAPE_ROWS }, (err, ack) => {
      if (err || !ack.ok || wanted !== asset) return;
      tapeBody.replaceChildren();
      trades = 0;
      ack.trades.forEach(addTrade);
      show();
    });
    socket.timeout(10000).emit("candles:subscribe", { asset, interval, history: 300 }, (err, ack) => {
      if (err || !ack.ok || wanted !== asset || ack.interval !== interval) return;
      if (series) series.setData(ack.candles.map(bar));
      candles = ack.candles.length;
      show();
    });
  }

  function leave() {
    if (!asset || !socket.connected) return;
    socket.timeout(10000).emit("trades:unsubscribe", { asset }, () => {});
    socket.timeout(10000).emit("candles:unsubscribe", { asset, interval }, () => {});
  }

  socket.on("trade", (trade) => {
    if (trade.asset !== asset) return;
    addTrade(trade);
    show();
  });
  socket.on("candle", (candle) => {
    if (candle.asset !== asset || candle.interval !== interval) return;
    addCandle(candle);
    show();
  });
  socket.on("connect", () => { if (!socket.recovered) request(); });
  document.addEventListener("board:select", (event) => {
    leave();
    asset = event.detail;
    tapeBody.replaceChildren();
    if (series) series.setData([]);
    trades = candles = 0;
    show();
    request();
  });
  intervalEl.addEventListener("change", () => {
    leave();
    interval = intervalEl.value;
    if (series) series.setData([]);
    candles = 0;
    request();
  });
  show();
  if (socket.connected) request();
})();
