// The home's page: polls the gateway's own API every 2 s and draws it. No framework, no build.
"use strict";

const $ = (id) => document.getElementById(id);
const POLL_MS = 2000;
let home = null;

async function get(path) {
  const r = await fetch(path, { cache: "no-store" });
  if (!r.ok) throw new Error(path + " answered " + r.status);
  return r.json();
}

const watts = (w) => (w == null ? "–" : Math.abs(w) >= 1000 ? (w / 1000).toFixed(2) + " kW" : Math.round(w) + " W");
const wh = (v) => (v == null ? "–" : v >= 1000 ? (v / 1000).toFixed(2) + " kWh" : Math.round(v) + " Wh");
const credits = (micro) => (micro == null ? "–" : (micro / 1e6).toFixed(2));
const short = (hex) => (hex ? hex.slice(0, 10) + "…" : "–");
const value = (reading) => (reading ? reading.value : null);

function rows(table, items, cells) {
  const body = $(table).querySelector("tbody");
  body.replaceChildren();
  if (!items.length) {
    const tr = body.insertRow();
    const td = tr.insertCell();
    td.colSpan = $(table).querySelectorAll("th").length;
    td.className = "empty";
    td.textContent = "none";
    return;
  }
  for (const item of items) {
    const tr = body.insertRow();
    for (const c of cells(item)) tr.insertCell().textContent = c;
  }
}

function drawFlow(devices) {
  const pv = value(devices.pv && devices.pv.power_w);
  const bat = value(devices.battery && devices.battery.power_w);
  const grid = value(devices.meter && devices.meter.power_w);
  $("pv-w").textContent = watts(pv);
  // Battery power is positive while it discharges; shown as + into the home.
  $("battery-w").textContent = watts(bat);
  $("grid-w").textContent = watts(grid);
  const known = [pv, bat, grid].filter((v) => v != null);
  $("load-w").textContent = known.length ? watts((pv || 0) + (bat || 0) + (grid || 0)) : "–";
  $("battery-soc").textContent = devices.battery && devices.battery.soc_pct ? Math.round(devices.battery.soc_pct.value) + " %" : "–";
  $("grid-direction").textContent = grid == null ? "grid meter not read" : grid >= 0 ? "drawing from the grid" : "feeding the grid";
}

function drawEnergy(hours) {
  const svg = $("energy-chart");
  const ns = "http://www.w3.org/2000/svg";
  svg.replaceChildren();
  const keys = [["pv_wh", "var(--pv)"], ["import_wh", "var(--imp)"], ["export_wh", "var(--exp)"], ["traded_wh", "var(--trd)"]];
  const max = Math.max(1, ...hours.flatMap((h) => keys.map(([k]) => h[k])));
  const slot = 300 / 24;
  for (const h of hours) {
    keys.forEach(([k, colour], i) => {
      const height = (h[k] / max) * 100;
      const r = document.createElementNS(ns, "rect");
      r.setAttribute("x", h.hour * slot + i * (slot / 4));
      r.setAttribute("y", 105 - height);
      r.setAttribute("width", slot / 4 - 0.5);
      r.setAttribute("height", height);
      r.setAttribute("fill", colour);
      r.setAttribute("data-hour", h.hour);
      svg.appendChild(r);
    });
  }
  for (const hour of [0, 6, 12, 18]) {
    const t = document.createElementNS(ns, "text");
    t.setAttribute("x", hour * slot);
    t.setAttribute("y", 118);
    t.setAttribute("font-size", "9");
    t.textContent = String(hour).padStart(2, "0") + ":00";
    svg.appendChild(t);
  }
  const scale = document.createElementNS(ns, "text");
  scale.setAttribute("x", 0);
  scale.setAttribute("y", 9);
  scale.setAttribute("font-size", "9");
  scale.textContent = "top: " + wh(max) + " in an hour";
  svg.appendChild(scale);
  const sum = (k) => hours.reduce((a, h) => a + h[k], 0);
  $("energy-totals").textContent =
    "PV " + wh(sum("pv_wh")) + " · import " + wh(sum("import_wh")) + " · export " + wh(sum("export_wh")) + " · traded " + wh(sum("traded_wh"));
}

function drawDevices(devices) {
  const list = [];
  const add = (name, reading, unit) => list.push({ name, reading, unit });
  if (devices.pv) { add("PV power", devices.pv.power_w, "W"); add("PV energy", devices.pv.energy_wh, "Wh"); }
  if (devices.battery) { add("Battery power", devices.battery.power_w, "W"); add("Battery SoC", devices.battery.soc_pct, "%"); add("Battery available", devices.battery.available_wh, "Wh"); }
  if (devices.meter) { add("Grid power", devices.meter.power_w, "W"); add("Grid import", devices.meter.import_wh, "Wh"); add("Grid export", devices.meter.export_wh, "Wh"); }
  rows("devices", list, (d) => [
    d.name,
    d.reading ? Math.round(d.reading.value * 10) / 10 + " " + d.unit : "–",
    d.reading ? (d.reading.age_ms / 1000).toFixed(1) + " s" : "–",
    d.reading ? d.reading.quality : "missing",
  ]);
  $("devices").querySelectorAll("tbody tr").forEach((tr) => {
    const q = tr.cells[3];
    if (q) q.className = q.textContent;
  });
}

async function refresh() {
  try {
    const [h, devices, energy, offers, trades, bids] = await Promise.all([
      get("/api/home"), get("/api/devices"), get("/api/energy/today"), get("/api/offers"), get("/api/trades"), get("/api/bids"),
    ]);
    home = h;
    $("home-name").textContent = "gridlet · " + h.name;
    $("balance").textContent = credits(h.balance);
    $("traded").textContent = wh(h.traded_wh);
    $("battery-reserve").textContent = h.reserve_soc_pct + " %";
    $("height").textContent = h.height;
    $("final-height").textContent = h.final_height;
    $("head-slot").textContent = h.head_slot;
    $("peers").textContent = h.peers_seen;
    $("members").textContent = h.members;
    $("trading-off").hidden = h.trading_enabled;
    drawFlow(devices);
    drawEnergy(energy.hours);
    drawDevices(devices);
    rows("offers", offers, (o) => [o.seller === h.member ? "this home" : short(o.seller), o.energy_wh, credits(o.price), o.expiry_height]);
    const mine = trades.filter((t) => t.seller === h.member || t.buyers.some((b) => b.buyer === h.member));
    rows("trades", mine.slice(-10).reverse(), (t) => [short(t.trade), t.energy_wh, t.stage.replace("_", " "), t.delivered_wh == null ? "–" : t.delivered_wh + " Wh"]);
    rows("bids", bids, (b) => [b.energy_wh, credits(b.price), b.round, b.progress]);
    $("connection").textContent = "live";
    $("connection").className = "badge ok";
    $("updated").textContent = new Date().toLocaleTimeString();
  } catch (e) {
    $("connection").textContent = "gateway not answering";
    $("connection").className = "badge bad";
  }
}

async function post(path, body) {
  const token = localStorage.getItem("gridlet-token") || "";
  const r = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: "Bearer " + token },
    body: JSON.stringify(body),
  });
  let answer = {};
  try { answer = await r.json(); } catch (_) { /* an empty body */ }
  return { status: r.status, answer };
}

function say(text) { $("trade-result").textContent = text; }

$("token").value = localStorage.getItem("gridlet-token") || "";
$("token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  localStorage.setItem("gridlet-token", $("token").value.trim());
  say("token saved in this browser");
});
$("offer-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  if (!home) return say("not connected yet");
  const body = {
    interval: home.interval,
    energy_wh: Number($("offer-wh").value),
    price: Math.round(Number($("offer-price").value) * 1e6),
    expiry_height: home.height + home.offer_blocks,
  };
  const { status, answer } = await post("/api/offers", body);
  say(status === 201 ? "offer submitted: " + answer.tx : "offer refused (" + status + "): " + (answer.error || "no reason given"));
  refresh();
});
$("bid-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const body = { energy_wh: Number($("bid-wh").value), price: Math.round(Number($("bid-price").value) * 1e6) };
  const { status, answer } = await post("/api/bids", body);
  say(status === 202 ? "sealed bid accepted for the next round" : "bid refused (" + status + "): " + (answer.error || "no reason given"));
  refresh();
});

refresh();
setInterval(refresh, POLL_MS);
