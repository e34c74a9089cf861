// etl serve: the dashboard's and the stream page's own script. It polls the JSON API every few
// seconds and draws every chart as SVG; nothing is fetched from anywhere but this server.
"use strict";
(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const PALETTE = ["#4f9dff", "#3ecf8e", "#f5b83d", "#a78bfa", "#ff8c50", "#2dd4bf", "#f472b6",
    "#94a3b8", "#facc15", "#60a5fa", "#34d399", "#fb7185"];
  const POLL_MS = 3000;

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function h(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  const fmt = {
    int: (n) => Math.round(n).toLocaleString("en-US"),
    usd: (n) => (n < 0 ? "-$" : "$") +
      Math.abs(n).toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 }),
    usdShort: (n) => {
      const a = Math.abs(n);
      if (a >= 1e9) return "$" + (n / 1e9).toFixed(2) + "B";
      if (a >= 1e6) return "$" + (n / 1e6).toFixed(2) + "M";
      if (a >= 1e4) return "$" + (n / 1e3).toFixed(1) + "k";
      return (n < 0 ? "-$" : "$") + Math.abs(n).toFixed(0);
    },
    pct: (r, digits) => (r * 100).toFixed(digits) + "%",
    time: (iso) => iso.replace("T", " ").slice(0, 19),
    hhmm: (iso) => new Date(iso).toISOString().slice(11, 16),
  };

  // Vertical bars over time: points [{label, value}].
  function columns(container, points, opts) {
    const width = Math.max(300, container.clientWidth || 640), height = 230, left = 44, bottom = 22, top = 10;
    const chart = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img", class: "drawn" });
    // A multiple of 4 at least 4: whole numbers on every grid line.
    const max = Math.max(4, Math.ceil(Math.max(...points.map((p) => p.value)) / 4) * 4);
    const plotH = height - bottom - top;
    const step = (width - left - 4) / Math.max(1, points.length);
    for (let i = 0; i <= 4; i++) {
      const y = top + plotH - (plotH * i) / 4;
      chart.append(svg("line", { x1: left, x2: width, y1: y, y2: y, stroke: "#26304a" }));
      chart.append(svg("text", { x: left - 6, y: y + 4, "text-anchor": "end" }, fmt.int((max * i) / 4)));
    }
    points.forEach((p, i) => {
      const barH = (plotH * p.value) / max;
      const rect = svg("rect", {
        x: left + i * step + 1, y: top + plotH - barH, width: Math.max(1, step - 2), height: barH,
        rx: 2, fill: opts.color || PALETTE[0],
      });
      rect.append(svg("title", {}, `${p.label}: ${fmt.int(p.value)}`));
      chart.append(rect);
      const last = i === points.length - 1;
      if (i % 10 === 0 || last) {
        const x = last ? width - 2 : left + i * step + step / 2;
        chart.append(svg("text", { x, y: height - 6, "text-anchor": last ? "end" : "middle" }, p.label));
      }
    });
    container.replaceChildren(chart);
  }

  // Horizontal bars: items [{label, value, note}], biggest first.
  function bars(container, items, format) {
    const rowH = 22, width = Math.max(260, container.clientWidth || 420), labelW = 140, valueW = 70;
    const shown = items.slice(0, 12);
    const height = Math.max(rowH, shown.length * rowH) + 4;
    const chart = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img", class: "drawn" });
    const max = Math.max(1e-9, ...shown.map((i) => Math.abs(i.value)));
    if (shown.length === 0) {
      chart.append(svg("text", { x: width / 2, y: rowH - 6, "text-anchor": "middle" }, "no data in this range"));
    }
    shown.forEach((item, i) => {
      const y = i * rowH + 2;
      const w = ((width - labelW - valueW) * Math.abs(item.value)) / max;
      chart.append(svg("text", { x: labelW - 8, y: y + 15, "text-anchor": "end" }, item.label));
      const rect = svg("rect", { x: labelW, y: y + 3, width: Math.max(2, w), height: rowH - 8, rx: 3,
        fill: item.color || PALETTE[i % PALETTE.length] });
      rect.append(svg("title", {}, `${item.label}: ${format(item.value)}`));
      chart.append(rect);
      chart.append(svg("text", { x: labelW + w + 6, y: y + 15, class: "value-label" }, format(item.value)));
    });
    container.replaceChildren(chart);
  }

  function setKpi(id, value, text) {
    const node = document.getElementById(id);
    node.dataset.value = value === null || value === undefined ? "" : String(value);
    node.textContent = text;
  }

  function live(ok, message) {
    const node = document.getElementById("live");
    node.className = "status " + (ok ? "live" : "error");
    node.textContent = message;
    const banner = document.getElementById("error");
    banner.className = "error-banner" + (ok ? "" : " shown");
    banner.textContent = ok ? "" : message;
  }

  async function getJson(url) {
    const response = await fetch(url, { cache: "no-store" });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
    return body;
  }

  function fillRows(tbody, rows, cells, key) {
    const seen = new Set(Array.from(tbody.rows).map((r) => r.dataset.key));
    const first = tbody.dataset.filled !== "1";
    tbody.replaceChildren(...rows.map((row) => {
      const tr = h("tr");
      tr.dataset.key = key(row);
      if (!first && !seen.has(tr.dataset.key)) tr.className = "new";
      for (const cell of cells(row)) tr.append(cell);
      return tr;
    }));
    tbody.dataset.filled = "1";
  }
  const td = (text, cls) => h("td", cls ? { class: cls } : {}, text);
  const pill = (text) => { const cell = h("td"); cell.append(h("span", { class: "pill " + text }, text)); return cell; };
  const severity = (z) => (Math.abs(z) > 6 ? "severe" : Math.abs(z) > 4 ? "moderate" : "mild");

  function renderDashboard(d) {
    setKpi("kpi-transactions", d.kpis.transactions, fmt.int(d.kpis.transactions));
    setKpi("kpi-total", d.kpis.total_usd, fmt.usdShort(d.kpis.total_usd));
    setKpi("kpi-average", d.kpis.average_usd, fmt.usd(d.kpis.average_usd));
    setKpi("kpi-approval", d.kpis.approval_rate, fmt.pct(d.kpis.approval_rate, 1));
    setKpi("kpi-anomaly", d.kpis.anomaly_rate, fmt.pct(d.kpis.anomaly_rate, 2));
    setKpi("kpi-ingest", d.ingest_per_second, d.ingest_per_second.toFixed(1) + "/s");
    setKpi("kpi-lag", d.consumer_lag, d.consumer_lag === null ? "n/a" : fmt.int(d.consumer_lag));
    columns(document.getElementById("chart-per-minute"),
      d.per_minute.map((p) => ({ label: fmt.hhmm(p.minute), value: p.count })), {});
    bars(document.getElementById("chart-category"),
      d.by_category.map((c) => ({ label: c.label, value: c.spend_usd })), fmt.usdShort);
    bars(document.getElementById("chart-country"),
      d.by_country.map((c) => ({ label: c.label, value: c.spend_usd })), fmt.usdShort);
    bars(document.getElementById("chart-merchants"),
      d.top_merchants.map((c) => ({ label: c.label, value: c.spend_usd })), fmt.usdShort);
    const colors = { mild: "#f5b83d", moderate: "#ff8c50", severe: "#ff5d6c" };
    bars(document.getElementById("chart-severity"),
      d.anomaly_severity.map((s) => ({ label: s.label, value: s.count, color: colors[s.label] })), fmt.int);
    fillRows(document.querySelector("#latest tbody"), d.latest, (t) => [
      td(fmt.time(t.event_time)), td(t.merchant), td(t.category), td(t.country || "–"),
      td(t.amount.toFixed(2) + " " + t.currency, "num"), td(fmt.usd(t.amount_usd), "num"), pill(t.status),
    ], (t) => t.tx_id);
    fillRows(document.querySelector("#alerts tbody"), d.alerts, (a) => [
      td(fmt.time(a.event_time)), td(a.user_id.slice(0, 8)), td(a.merchant),
      td(fmt.usd(a.amount_usd), "num"), td(a.z_score.toFixed(2), "num"), pill(severity(a.z_score)),
    ], (a) => a.tx_id);
  }

  // Polls `url()` every few seconds, one request at a time, and renders what comes back.
  function poll(url, render) {
    let timer = null;
    async function tick() {
      clearTimeout(timer);
      try {
        render(await getJson(url()));
        live(true, "live · " + new Date().toISOString().slice(11, 19) + " UTC");
      } catch (err) {
        live(false, "cannot update: " + err.message);
      }
      timer = setTimeout(tick, POLL_MS);
    }
    tick();
    return tick;
  }

  function dashboard() {
    const days = document.getElementById("days");
    const status = document.getElementById("status");
    const params = new URLSearchParams(location.search);
    if (params.get("days")) days.value = params.get("days");
    if (params.get("status")) status.value = params.get("status");
    const refresh = poll(() => `/api/dashboard?days=${encodeURIComponent(days.value)}&status=${encodeURIComponent(status.value)}`,
      renderDashboard);
    for (const control of [days, status]) {
      control.addEventListener("change", () => {
        history.replaceState(null, "", `?days=${days.value}&status=${status.value}`);
        refresh();
      });
    }
  }

  function renderStream(s) {
    const topics = document.getElementById("topics");
    topics.replaceChildren(...s.topics.map((t) => {
      const panel = h("div", { class: "panel", "data-topic": t.name });
      const title = t.lag === null || t.lag === undefined ? t.name : `${t.name} · group ${s.group} · lag ${fmt.int(t.lag)}`;
      panel.append(h("h2", {}, title));
      if (t.error) { panel.append(h("p", { class: "muted" }, t.error)); return panel; }
      const table = h("table");
      const head = h("tr");
      for (const name of ["Partition", "Low", "High", "Sink offset", "Lag", "Sink wrote at"]) {
        head.append(h("th", name === "Partition" || name === "Sink wrote at" ? {} : { class: "num" }, name));
      }
      const thead = h("thead");
      thead.append(head);
      table.append(thead);
      const body = h("tbody");
      for (const p of t.partitions) {
        const tr = h("tr");
        tr.append(td(String(p.partition)), td(fmt.int(p.low), "num"), td(fmt.int(p.high), "num"),
          td(p.sink_offset === null ? "–" : fmt.int(p.sink_offset), "num"),
          td(p.lag === null ? "–" : fmt.int(p.lag), "num"),
          td(p.sink_updated_at ? fmt.time(p.sink_updated_at) : "–"));
        body.append(tr);
      }
      table.append(body);
      panel.append(table);
      return panel;
    }));
    const kind = document.getElementById("kind");
    const chosen = kind.value;
    const options = s.dead_letters.kinds.map((k) => h("option", { value: k.kind }, `${k.kind} (${fmt.int(k.count)})`));
    if (chosen !== "all" && !s.dead_letters.kinds.some((k) => k.kind === chosen)) {
      options.push(h("option", { value: chosen }, `${chosen} (0)`));
    }
    kind.replaceChildren(h("option", { value: "all" }, "all"), ...options);
    kind.value = chosen;
    fillRows(document.querySelector("#dead-letters tbody"), s.dead_letters.newest, (d) => [
      td(fmt.time(d.rejected_at)), td(`${d.partition} / ${d.offset}`), td(d.kind), td(d.message),
      (() => { const c = h("td"); c.append(h("code", {}, d.payload || "")); return c; })(),
    ], (d) => String(d.id));
    bars(document.getElementById("chart-kinds"),
      s.dead_letters.kinds.map((k) => ({ label: k.kind, value: k.count })), fmt.int);
  }

  function stream() {
    const kind = document.getElementById("kind");
    const params = new URLSearchParams(location.search);
    const initial = params.get("kind");
    if (initial) kind.append(h("option", { value: initial }, initial)), (kind.value = initial);
    const refresh = poll(() => `/api/stream?kind=${encodeURIComponent(kind.value)}`, renderStream);
    kind.addEventListener("change", () => {
      history.replaceState(null, "", `?kind=${encodeURIComponent(kind.value)}`);
      refresh();
    });
  }

  window.Etl = { dashboard, stream };
})();
