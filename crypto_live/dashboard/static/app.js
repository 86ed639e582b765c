// crypto-live dashboard: polls the JSON API every second; tables in plain DOM, the candlestick
// chart with plotly.js (served by the dashboard from the pinned plotly wheel).
"use strict";

(function () {
  const REFRESH_MS = 1000;
  const CANDLE_HOURS = 3;
  const state = {
    symbol: decodeURIComponent(location.hash.slice(1)) || null,
    // [{open_time, open, high, low, close, base_volume, quote_volume, trades, close_time,
    //   source: "kline" | "miniticker-approximation"}, ...], decimals as strings
    candles: [],
    candlesSymbol: null,
    busy: false,
    rows: new Map(), // symbol -> <tr>
  };

  const $ = (id) => document.getElementById(id);

  async function getJson(url) {
    const response = await fetch(url, { cache: "no-store" });
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      throw new Error(body.error || `${url}: HTTP ${response.status}`);
    }
    return response.json();
  }

  // Exact decimal strings: group the integer digits, keep every decimal as sent.
  function formatPrice(text) {
    if (text == null) return "–";
    const negative = text.startsWith("-");
    const [whole, fraction] = (negative ? text.slice(1) : text).split(".");
    const grouped = whole.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
    return (negative ? "-" : "") + grouped + (fraction ? "." + fraction : "");
  }

  function formatAmount(text) {
    if (text == null) return "–";
    const value = Number(text);
    const units = [[1e12, "T"], [1e9, "B"], [1e6, "M"], [1e3, "K"]];
    for (const [size, suffix] of units) {
      if (Math.abs(value) >= size) return (value / size).toFixed(2) + suffix;
    }
    return value.toFixed(2);
  }

  function formatAgo(ms) {
    if (ms == null) return "–";
    if (ms < 0) ms = 0;
    if (ms < 60000) return (ms / 1000).toFixed(1) + " s ago";
    if (ms < 3600000) return Math.floor(ms / 60000) + " min ago";
    return Math.floor(ms / 3600000) + " h ago";
  }

  function cell(row, index) {
    return row.children[index];
  }

  function renderTickers(data) {
    const body = $("tickers").tBodies[0];
    const seen = new Set();
    for (const ticker of data.tickers) {
      seen.add(ticker.symbol);
      let row = state.rows.get(ticker.symbol);
      if (!row) {
        row = document.createElement("tr");
        row.dataset.symbol = ticker.symbol;
        for (let i = 0; i < 6; i++) {
          const td = document.createElement("td");
          if (i > 0) td.className = "num";
          row.appendChild(td);
        }
        cell(row, 0).textContent = ticker.symbol;
        row.addEventListener("click", () => select(ticker.symbol));
        state.rows.set(ticker.symbol, row);
      }
      const priceCell = cell(row, 1);
      const previous = row.dataset.price;
      if (previous !== undefined && previous !== ticker.price) {
        const up = Number(ticker.price) >= Number(previous);
        priceCell.classList.remove("flash-up", "flash-down");
        void priceCell.offsetWidth; // restart the animation
        priceCell.classList.add(up ? "flash-up" : "flash-down");
      }
      row.dataset.price = ticker.price;
      priceCell.textContent = formatPrice(ticker.price);
      const change = cell(row, 2);
      change.textContent = ticker.change_pct == null ? "–"
        : (ticker.change_pct.startsWith("-") ? "" : "+") + ticker.change_pct + " %";
      change.className = "num " + (ticker.change_pct == null ? ""
        : ticker.change_pct.startsWith("-") ? "down" : "up");
      cell(row, 3).textContent = formatAmount(ticker.base_volume);
      cell(row, 4).textContent = formatAmount(ticker.quote_volume);
      cell(row, 5).textContent = formatAgo(data.now_ms - ticker.event_time);
      row.classList.toggle("selected", ticker.symbol === state.symbol);
    }
    for (const [symbol, row] of state.rows) {
      if (!seen.has(symbol)) {
        row.remove();
        state.rows.delete(symbol);
      }
    }
    // Keep DOM order = API order (sorted by symbol) without rebuilding rows.
    data.tickers.forEach((ticker, index) => {
      const row = state.rows.get(ticker.symbol);
      if (body.children[index] !== row) body.insertBefore(row, body.children[index] || null);
    });
    $("ticker-count").textContent = `(${data.tickers.length} symbols)`;
    if (!state.symbol && data.tickers.length) select(data.tickers[0].symbol);
  }

  function lagClass(ms) {
    if (ms == null) return "";
    if (ms < 5000) return "lag-ok";
    if (ms < 60000) return "lag-warn";
    return "lag-bad";
  }

  function figure(value, label, extraClass) {
    const div = document.createElement("div");
    div.className = "figure";
    const b = document.createElement("b");
    b.textContent = value;
    if (extraClass) b.className = extraClass;
    const span = document.createElement("span");
    span.textContent = label;
    div.append(b, span);
    return div;
  }

  function rate(value) {
    return value == null ? "–" : value.toFixed(1);
  }

  function renderPipeline(data) {
    const container = $("pipeline-body");
    const parts = [];
    const producer = document.createElement("div");
    producer.className = "group";
    producer.dataset.group = "producer";
    const title = document.createElement("h3");
    title.textContent = "producer → Kinesis";
    const figures = document.createElement("div");
    figures.className = "figures";
    figures.append(figure(rate(data.producer_records_per_second), "records/s"));
    producer.append(title, figures);
    if (data.metrics.errors.length) {
      const note = document.createElement("p");
      note.className = "muted";
      note.textContent = "records/s needs /metrics: " + data.metrics.errors[0];
      producer.append(note);
    }
    parts.push(producer);
    for (const group of data.groups) {
      const div = document.createElement("div");
      div.className = "group";
      div.dataset.group = group.kind;
      const h3 = document.createElement("h3");
      h3.textContent = `→ ${group.kind}  (${group.group})`;
      const figs = document.createElement("div");
      figs.className = "figures";
      figs.append(
        figure(rate(group.records_per_second), "records/s"),
        figure(group.max_millis_behind == null ? "–" : group.max_millis_behind.toLocaleString() + " ms",
          "max shard lag", lagClass(group.max_millis_behind)),
        figure(String(group.shards.length), "shards"),
      );
      div.append(h3, figs);
      if (group.shards.length) {
        const table = document.createElement("table");
        table.className = "shards";
        const head = table.createTHead().insertRow();
        for (const name of ["shard", "lag", "owner", "heartbeat"]) {
          const th = document.createElement("th");
          th.textContent = name;
          head.appendChild(th);
        }
        const tbody = table.createTBody();
        for (const shard of group.shards) {
          const tr = tbody.insertRow();
          tr.dataset.shard = shard.shard_id;
          const lag = shard.finished ? "closed" : shard.millis_behind == null ? "–"
            : shard.millis_behind.toLocaleString() + " ms";
          const values = [shard.shard_id.replace("shardId-", "#").replace(/^#0+(?=\d)/, "#"), lag,
            shard.owner ? shard.owner.slice(0, 18) : "–", formatAgo(shard.heartbeat_age_ms)];
          values.forEach((text, index) => {
            const td = tr.insertCell();
            td.textContent = text;
            if (index === 1) td.className = lagClass(shard.millis_behind);
          });
        }
        div.append(table);
      } else {
        const p = document.createElement("p");
        p.className = "muted";
        p.textContent = "no leases yet (group not running?)";
        div.append(p);
      }
      parts.push(div);
    }
    container.replaceChildren(...parts);
  }

  function select(symbol) {
    if (symbol === state.symbol) return;
    state.symbol = symbol;
    state.candles = [];
    state.candlesSymbol = null;
    history.replaceState(null, "", "#" + encodeURIComponent(symbol));
    for (const [name, row] of state.rows) row.classList.toggle("selected", name === symbol);
    drawChart();
    refreshCandles().catch(showError);
  }

  async function refreshCandles() {
    const symbol = state.symbol;
    if (!symbol) return;
    const url = `/api/candles?symbol=${encodeURIComponent(symbol)}&hours=${CANDLE_HOURS}`;
    const data = await getJson(url);
    if (symbol !== state.symbol) return; // selection changed meanwhile
    state.candles = data.candles;
    state.candlesSymbol = symbol;
    drawChart();
  }

  // "2026-11-23 03:24": plotly reads a date string without a zone as is, so the axis is UTC.
  function utcMinute(ms) {
    return new Date(ms).toISOString().slice(0, 16).replace("T", " ");
  }

  function chartColors() {
    const styles = getComputedStyle(document.documentElement);
    const get = (name) => styles.getPropertyValue(name).trim();
    return { muted: get("--muted"), line: get("--line"), text: get("--text"), up: get("--up"), down: get("--down") };
  }

  // The hover line under a candle's prices: Binance's trade count, or where it came from.
  function candleNote(c) {
    return c.source === "kline" ? `${c.trades.toLocaleString("en-US")} trades`
      : "approximated from miniTicker";
  }

  // One candlestick trace: every minute is its own box and wick, so nothing ever joins the
  // first candle to the last (the hand-drawn line chart's stray line cannot happen here).
  function drawChart() {
    const chart = $("chart");
    const candles = state.candlesSymbol === state.symbol ? state.candles : [];
    $("chart-title").textContent = state.symbol
      ? `${state.symbol} 1-minute candles, last ${CANDLE_HOURS} h (UTC)` : "1-minute candles";
    chart.dataset.symbol = state.symbol || "";
    chart.dataset.candles = String(candles.length);
    chart.dataset.last = candles.length ? JSON.stringify(candles[candles.length - 1]) : "";
    let empty = chart.parentElement.querySelector(".chart-empty");
    if (!candles.length) {
      if (!empty) {
        empty = document.createElement("p");
        empty.className = "chart-empty";
        chart.parentElement.append(empty);
      }
      empty.textContent = state.symbol ? "waiting for prices…" : "waiting for tickers…";
    } else if (empty) {
      empty.remove();
    }
    if (typeof Plotly === "undefined") return;
    const colors = chartColors();
    const trace = {
      type: "candlestick",
      name: state.symbol || "",
      x: candles.map((c) => utcMinute(c.open_time)),
      open: candles.map((c) => Number(c.open)),
      high: candles.map((c) => Number(c.high)),
      low: candles.map((c) => Number(c.low)),
      close: candles.map((c) => Number(c.close)),
      text: candles.map(candleNote),
      increasing: { line: { color: colors.up, width: 1 }, fillcolor: colors.up },
      decreasing: { line: { color: colors.down, width: 1 }, fillcolor: colors.down },
      whiskerwidth: 0,
    };
    const axis = { gridcolor: colors.line, linecolor: colors.line, zeroline: false, color: colors.muted };
    const layout = {
      uirevision: state.symbol, // keep the user's zoom while candles update
      paper_bgcolor: "rgba(0,0,0,0)",
      plot_bgcolor: "rgba(0,0,0,0)",
      font: { color: colors.text, size: 12 },
      margin: { l: 10, r: 70, t: 8, b: 44 },
      showlegend: false,
      xaxis: { ...axis, type: "date", rangeslider: { visible: false } },
      yaxis: { ...axis, side: "right", tickformat: "~r" },
    };
    Plotly.react(chart, [trace], layout, { displayModeBar: false, responsive: true });
  }

  function showError(err) {
    const status = $("status");
    status.textContent = "connection problem: " + err.message + " (retrying)";
    status.classList.add("error");
  }

  async function tick() {
    if (state.busy) return;
    state.busy = true;
    try {
      const [latest, pipeline] = await Promise.all([getJson("/api/latest"), getJson("/api/pipeline")]);
      renderTickers(latest);
      renderPipeline(pipeline);
      await refreshCandles();
      const status = $("status");
      status.classList.remove("error");
      status.textContent = "live · updated " + new Date(latest.now_ms).toISOString().slice(11, 19) + " UTC";
      document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
    } catch (err) {
      showError(err);
    } finally {
      state.busy = false;
    }
  }

  tick();
  setInterval(tick, REFRESH_MS);
})();
