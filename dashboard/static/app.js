// branchnet operations dashboard: plain JS, canvas charts, fed by Server-Sent Events.
"use strict";

const HISTORY = 300;
const TIERS = [
  ["base", "Mass", "assets under CNY 50k"],
  ["branch", "Branch staff", "CNY 50k – 100k"],
  ["director", "Director & lobby manager", "CNY 100k – 200k"],
  ["wealth", "Wealth managers", "CNY 200k – 2M"],
  ["private", "Private banking", "over CNY 2M"],
];
const state = { ticks: [], alerts: [], status: null, peak: 0, critical: 0 };
const $ = (id) => document.getElementById(id);
const fmt = new Intl.NumberFormat("en-US");

function esc(text) {
  return String(text).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
}

function codeClass(code) {
  if (code === "00") return "ok";
  if (code === "91" || code === "96") return "sys";
  if (["55", "75", "77", "62", "94"].includes(code)) return "bad";
  return "warn";
}

function connect() {
  const source = new EventSource("/stream");
  source.onopen = () => setFeed("live", "live");
  source.onerror = () => setFeed("down", "reconnecting…");
  source.onmessage = (message) => {
    const update = JSON.parse(message.data);
    if (update.type === "snapshot") {
      state.ticks = update.ticks.slice(-HISTORY);
      state.alerts = [];
      state.critical = 0;
      addAlerts(update.alerts, false);
    } else {
      state.ticks.push(update);
      if (state.ticks.length > HISTORY) state.ticks.shift();
      addAlerts(update.alerts, true);
      if (update.source_connected === false) setFeed("down", "event source disconnected");
      else setFeed("live", "live");
    }
    state.status = update;
    render();
  };
}

function setFeed(cls, text) {
  $("feed").className = "feed " + cls;
  $("feed-text").textContent = text;
}

function addAlerts(alerts, fresh) {
  for (const alert of alerts) {
    alert.fresh = fresh;
    state.alerts.unshift(alert);
    if (alert.level === "critical") state.critical += 1;
  }
  state.alerts.length = Math.min(state.alerts.length, 100);
}

function render() {
  const last = state.ticks[state.ticks.length - 1];
  const status = state.status;
  if (last) {
    state.peak = Math.max(state.peak, ...state.ticks.map((t) => t.tps));
    $("kpi-tps").textContent = fmt.format(Math.round(last.tps));
    $("kpi-tps-peak").textContent = "peak " + fmt.format(Math.round(state.peak)) + " tx/s";
    const lat = last.latency_ms;
    $("kpi-p50").textContent = lat ? lat.p50.toFixed(1) : "–";
    $("kpi-p99").textContent = lat ? lat.p99.toFixed(1) : "–";
    $("kpi-max").textContent = lat ? "max " + lat.max.toFixed(1) + " ms" : "max –";
    $("kpi-requests").textContent = fmt.format(last.requests);
    const recent = state.ticks.slice(-10);
    const sum = (key) => recent.reduce((n, t) => n + (key(t) || 0), 0);
    const answered = sum((t) => t.interval.transactions);
    const approved = sum((t) => t.interval.by_result["00"]);
    $("kpi-approval").textContent = answered ? (100 * approved / answered).toFixed(1) : "–";
    const declines = sum((t) => t.interval.declines) / Math.max(1, recent.length);
    $("kpi-declines").textContent = declines.toFixed(1) + " declines/s (10 s)";
  }
  if (status) {
    $("kpi-events").textContent = fmt.format(status.feed.received) + " events received";
    renderReplication(status.replication);
    renderResults(status.totals.by_result, status.results);
    renderBranches(status.totals.by_branch, last);
    renderNodes(status.nodes);
    renderTiers(status.tiers);
    $("tiers-note").textContent = status.tiers_reported
      ? "customers per tier" : "no tier data reported yet";
  }
  renderAlerts();
  drawChart($("chart-tps"), [{ values: state.ticks.map((t) => t.tps), color: "#4cc2ff", fill: true }]);
  const lat = (key) => state.ticks.map((t) => (t.latency_ms ? t.latency_ms[key] : 0));
  drawChart($("chart-latency"), [
    { values: lat("p50"), color: "#3ecf8e" },
    { values: lat("p90"), color: "#f5b942" },
    { values: lat("p99"), color: "#ff5c6c" },
  ]);
}

function renderReplication(replication) {
  if (!replication) {
    $("kpi-lag").textContent = "–";
    $("kpi-lag-hint").textContent = "no standby reported";
    $("replication").className = "replication muted";
    $("replication").textContent = "no standby reported";
    return;
  }
  $("kpi-lag").textContent = fmt.format(replication.lag_entries);
  $("kpi-lag-hint").textContent = replication.lag_s.toFixed(2) + " s · " + replication.mode;
  $("replication").className = "replication";
  $("replication").innerHTML =
    `<b>${fmt.format(replication.lag_entries)}</b> entries behind · <b>${replication.lag_s.toFixed(2)}</b> s · ` +
    `${esc(replication.mode)} · standby <span class="pill ${replication.standby_up ? "up" : "down"}">` +
    `${replication.standby_up ? "up" : "down"}</span>`;
}

function bars(rows, empty) {
  if (!rows.length) return `<div class="empty">${empty}</div>`;
  const max = Math.max(...rows.map((r) => r.value), 1);
  return rows.map((r) =>
    `<div class="row"><div class="name">${r.name}</div>` +
    `<div class="track"><div class="fill ${r.cls || ""}" style="width:${(100 * r.value / max).toFixed(1)}%"></div></div>` +
    `<div class="num">${r.num}</div></div>`).join("");
}

function renderResults(byResult, meanings) {
  const total = Object.values(byResult).reduce((a, b) => a + b, 0);
  const rows = Object.entries(byResult).sort((a, b) => b[1] - a[1]).map(([code, n]) => ({
    name: `<b>${esc(code)}</b><span>${esc(meanings[code] || "")}</span>`,
    value: n, cls: codeClass(code),
    num: `${fmt.format(n)} <small>${(100 * n / total).toFixed(1)}%</small>`,
  }));
  $("results").innerHTML = bars(rows, "waiting for transactions…");
}

function renderBranches(totals, last) {
  const now = last ? last.interval.by_branch : {};
  const rows = Object.entries(totals).map(([branch, n]) => ({
    name: `<b>${esc(branch)}</b><span>branch</span>`,
    value: now[branch] || 0,
    num: `${fmt.format(now[branch] || 0)} <small>· ${fmt.format(n)}</small>`,
  }));
  $("branches").innerHTML = bars(rows, "no branch activity yet");
}

function renderNodes(nodes) {
  const body = $("nodes").querySelector("tbody");
  if (!nodes.length) { body.innerHTML = `<tr><td class="muted">no node reported yet</td></tr>`; return; }
  body.innerHTML = nodes.map((n) => {
    const queues = Object.entries(n.queues).map(([q, d]) => `${esc(q)} ${fmt.format(d)}`).join(" · ");
    const events = n.events ? ` · events dropped ${fmt.format(n.events.dropped)}` : "";
    return `<tr><td><b>${esc(n.name)}</b><div class="muted">${esc(n.role || "")}</div></td>` +
      `<td><span class="pill ${esc(n.status)}">${esc(n.status)}</span></td>` +
      `<td class="q">${queues || "–"}${events}</td></tr>`;
  }).join("");
}

function renderTiers(tiers) {
  $("tiers").innerHTML = TIERS.map(([key, name, range]) =>
    `<div class="tier"><div class="tname">${name}</div><div class="trange">${range}</div>` +
    `<div class="tcount" id="tier-${key}">${fmt.format(tiers[key] || 0)}</div></div>`).join("");
}

function renderAlerts() {
  const list = $("alerts");
  $("kpi-alerts").textContent = fmt.format(state.alerts.length);
  $("kpi-alerts-hint").textContent = state.critical ? `${state.critical} critical` : "none critical";
  $("alerts-count").textContent = state.alerts.length ? `latest ${state.alerts.length}` : "";
  if (!state.alerts.length) { list.innerHTML = `<li class="empty">No alerts yet</li>`; return; }
  list.innerHTML = state.alerts.map((a) => {
    const time = new Date(a.at).toISOString().slice(11, 19);
    const branch = a.branch === "network" ? "" : `<span class="br">branch ${esc(a.branch)}</span>`;
    return `<li class="alert ${esc(a.level)} ${a.fresh ? "fresh" : ""}" data-type="${esc(a.type)}">` +
      `<span class="t">${time}</span><span class="title">${esc(a.title)}${branch}</span>` +
      `<span class="detail">${esc(a.detail)}</span></li>`;
  }).join("");
  for (const a of state.alerts) a.fresh = false;
}

function drawChart(canvas, series) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth, height = canvas.clientHeight;
  if (canvas.width !== width * ratio) { canvas.width = width * ratio; canvas.height = height * ratio; }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  const left = 40, right = 8, top = 8, bottom = 20;
  const plotW = width - left - right, plotH = height - top - bottom;
  const all = series.flatMap((s) => s.values);
  const max = niceMax(Math.max(1, ...all));
  ctx.font = "11px ui-monospace, monospace";
  ctx.fillStyle = "#8593a3";
  ctx.strokeStyle = "#26313d";
  ctx.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const y = top + plotH - (plotH * i) / 4;
    ctx.beginPath(); ctx.moveTo(left, Math.round(y) + 0.5); ctx.lineTo(width - right, Math.round(y) + 0.5); ctx.stroke();
    ctx.textAlign = "right";
    ctx.fillText(shortNum((max * i) / 4), left - 6, y + 4);
  }
  // the window grows with the history: one minute at first, five at most
  const span = Math.min(HISTORY, Math.max(60, ...series.map((s) => s.values.length)));
  ctx.textAlign = "left";
  ctx.fillText(span >= 120 ? `-${Math.round(span / 60)} min` : `-${span} s`, left, height - 4);
  ctx.textAlign = "right";
  ctx.fillText("now", width - right, height - 4);
  const step = plotW / (span - 1);
  for (const s of series) {
    const values = s.values.slice(-span);
    if (!values.length) continue;
    const x0 = left + plotW - (values.length - 1) * step;
    const point = (v, i) => [x0 + i * step, top + plotH - (plotH * v) / max];
    ctx.beginPath();
    values.forEach((v, i) => { const [x, y] = point(v, i); if (i) ctx.lineTo(x, y); else ctx.moveTo(x, y); });
    ctx.strokeStyle = s.color; ctx.lineWidth = 2; ctx.lineJoin = "round"; ctx.stroke();
    if (s.fill) {
      ctx.lineTo(x0 + (values.length - 1) * step, top + plotH); ctx.lineTo(x0, top + plotH); ctx.closePath();
      const gradient = ctx.createLinearGradient(0, top, 0, top + plotH);
      gradient.addColorStop(0, "rgba(76,194,255,0.28)"); gradient.addColorStop(1, "rgba(76,194,255,0.02)");
      ctx.fillStyle = gradient; ctx.fill();
    }
  }
}

function niceMax(value) {
  const power = Math.pow(10, Math.floor(Math.log10(value)));
  for (const m of [1, 2, 2.5, 5, 10]) if (value <= m * power) return m * power;
  return 10 * power;
}

function shortNum(value) {
  if (value >= 1000) return (value / 1000).toFixed(value >= 10000 ? 0 : 1) + "k";
  return value >= 10 || value === 0 ? value.toFixed(0) : value.toFixed(1);
}

setInterval(() => { $("clock").textContent = new Date().toISOString().slice(11, 19) + " UTC"; }, 1000);
window.addEventListener("resize", render);
connect();
