// crypto-live dashboard: polls the JSON API every second and draws with plain DOM and canvas.
"use strict";

(function () {
  const REFRESH_MS = 1000;
  const WINDOW_MS = 60 * 60 * 1000;
  const state = {
    symbol: decodeURIComponent(location.hash.slice(1)) || null,
    points: [], // [[event_time_ms, "price"], ...] of the selected symbol, last hour
    pointsSymbol: null,
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
    state.points = [];
    state.pointsSymbol = null;
    history.replaceState(null, "", "#" + encodeURIComponent(symbol));
    for (const [name, row] of state.rows) row.classList.toggle("selected", name === symbol);
    drawChart();
    refreshHistory().catch(showError);
  }

  async function refreshHistory() {
    const symbol = state.symbol;
    if (!symbol) return;
    const last = state.pointsSymbol === symbol && state.points.length
      ? state.points[state.points.length - 1][0] : null;
    const url = `/api/history?symbol=${encodeURIComponent(symbol)}&minutes=60`
      + (last == null ? "" : `&after=${last}`);
    const data = await getJson(url);
    if (symbol !== state.symbol) return; // selection changed meanwhile
    state.points = state.pointsSymbol === symbol ? state.points.concat(data.points) : data.points;
    state.pointsSymbol = symbol;
    const oldest = data.now_ms - WINDOW_MS;
    while (state.points.length && state.points[0][0] < oldest) state.points.shift();
    drawChart(data.now_ms);
  }

  function niceTicks(min, max, count) {
    const span = max - min || Math.abs(max) || 1;
    const raw = span / count;
    const power = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * power).find((s) => s >= raw);
    const ticks = [];
    for (let v = Math.ceil(min / step) * step; v <= max + step * 1e-9; v += step) ticks.push(v);
    return { ticks, step };
  }

  function drawChart(nowMs) {
    const canvas = $("chart");
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth;
    const height = canvas.clientHeight;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const styles = getComputedStyle(document.documentElement);
    const muted = styles.getPropertyValue("--muted").trim();
    const line = styles.getPropertyValue("--line").trim();
    const accent = styles.getPropertyValue("--accent").trim();
    const points = state.pointsSymbol === state.symbol ? state.points : [];
    $("chart-title").textContent = state.symbol ? `${state.symbol} price, last hour` : "Price, last hour";
    canvas.dataset.symbol = state.symbol || "";
    canvas.dataset.points = String(points.length);
    ctx.font = "12px system-ui, sans-serif";
    if (points.length < 2) {
      ctx.fillStyle = muted;
      ctx.fillText(state.symbol ? "waiting for prices…" : "waiting for tickers…", 16, 24);
      return;
    }
    const values = points.map((p) => Number(p[1]));
    let min = Math.min(...values);
    let max = Math.max(...values);
    if (min === max) { min -= Math.abs(min) * 0.001 || 1; max += Math.abs(max) * 0.001 || 1; }
    const pad = (max - min) * 0.08;
    min -= pad; max += pad;
    // The last hour, or less while the history is shorter (at least a minute wide).
    const end = Math.max(nowMs || 0, points[points.length - 1][0]);
    const start = Math.max(end - WINDOW_MS, Math.min(points[0][0], end - 60 * 1000));
    const span = end - start;
    const left = 8, right = 96, top = 10, bottom = 24;
    const plotW = width - left - right, plotH = height - top - bottom;
    const x = (t) => left + ((t - start) / span) * plotW;
    const y = (v) => top + (1 - (v - min) / (max - min)) * plotH;

    // Grid and labels: prices on the right, times below.
    ctx.strokeStyle = line;
    ctx.fillStyle = muted;
    ctx.lineWidth = 1;
    const { ticks, step } = niceTicks(min, max, 5);
    const decimals = Math.max(0, Math.min(8, -Math.floor(Math.log10(step)) + 1));
    for (const v of ticks) {
      const yy = Math.round(y(v)) + 0.5;
      ctx.beginPath(); ctx.moveTo(left, yy); ctx.lineTo(left + plotW, yy); ctx.stroke();
      ctx.fillText(v.toFixed(decimals), left + plotW + 8, yy + 4);
    }
    const minute = 60 * 1000;
    const every = [1, 2, 5, 10, 15].map((m) => m * minute).find((m) => span / m <= 8) || 15 * minute;
    for (let t = Math.ceil(start / every) * every; t <= end; t += every) {
      const xx = Math.round(x(t)) + 0.5;
      ctx.beginPath(); ctx.moveTo(xx, top); ctx.lineTo(xx, top + plotH); ctx.stroke();
      const label = new Date(t).toISOString().slice(11, 16);
      ctx.fillText(label, xx - 14, height - 6);
    }

    // The price line, with the area under it lightly filled.
    ctx.beginPath();
    points.forEach((p, i) => {
      const px = x(p[0]), py = y(Number(p[1]));
      if (i === 0) ctx.moveTo(px, py); else ctx.lineTo(px, py);
    });
    ctx.strokeStyle = accent;
    ctx.lineWidth = 1.6;
    ctx.stroke();
    ctx.lineTo(x(points[points.length - 1][0]), top + plotH);
    ctx.lineTo(x(points[0][0]), top + plotH);
    ctx.closePath();
    ctx.fillStyle = "rgba(240, 185, 11, 0.08)";
    ctx.fill();

    // Last price tag.
    const last = points[points.length - 1];
    const ly = y(Number(last[1]));
    ctx.fillStyle = accent;
    ctx.beginPath(); ctx.arc(x(last[0]), ly, 3, 0, 2 * Math.PI); ctx.fill();
    ctx.fillRect(left + plotW + 2, ly - 9, right - 4, 18);
    ctx.fillStyle = "#0f1419";
    ctx.fillText(formatPrice(last[1]).slice(0, 12), left + plotW + 6, ly + 4);
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
      await refreshHistory();
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

  window.addEventListener("resize", () => drawChart());
  tick();
  setInterval(tick, REFRESH_MS);
})();
