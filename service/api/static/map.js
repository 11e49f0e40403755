// The live journey map: reads the analytics, journey and model routes and redraws every
// REFRESH_MS. Plain DOM and inline SVG; every number shown is also in a data-* attribute.
"use strict";

const REFRESH_MS = 5000;
const CHANGES_EVERY = 12; // refreshes between change checks: they read days of touchpoints
const SVG_NS = "http://www.w3.org/2000/svg";
const WINDOW_PARAMS = ["from", "to", "bucket", "segment"];

const page = new URLSearchParams(window.location.search);
let customerId = page.get("customer") || "";

function byId(id) {
  return document.getElementById(id);
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
  for (const child of children) node.append(child instanceof Node ? child : String(child));
  return node;
}

function svg(tag, attrs, parent) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
  if (parent) parent.append(node);
  return node;
}

function percent(ratio) {
  return ratio === null || ratio === undefined ? "–" : (100 * ratio).toFixed(1) + "%";
}

function money(value) {
  return Number(value).toFixed(2);
}

function when(iso) {
  return iso ? iso.slice(0, 19).replace("T", " ") + " UTC" : "–";
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 120) return Math.round(seconds) + " s";
  if (seconds < 7200) return Math.round(seconds / 60) + " min";
  return (seconds / 3600).toFixed(1) + " h";
}

// With API keys required, the page reads with an admin key the user types in; it stays in
// this tab's session storage only.
const KEY_ITEM = "parcours.apiKey";

async function getJSON(path, params) {
  const query = params && params.toString() ? "?" + params.toString() : "";
  const headers = { accept: "application/json" };
  const key = window.sessionStorage.getItem(KEY_ITEM);
  if (key) headers["x-api-key"] = key;
  const response = await fetch(path + query, { headers });
  if (response.status === 401 || response.status === 403) byId("key-form").hidden = false;
  if (!response.ok) {
    const error = new Error(path + ": HTTP " + response.status);
    error.status = response.status;
    throw error;
  }
  return response.json();
}

function windowParams() {
  const params = new URLSearchParams();
  for (const name of WINDOW_PARAMS) if (page.get(name)) params.set(name, page.get(name));
  return params;
}

// Stage columns: customers there now (the live gauges) and the range's funnel.
function drawStages(funnel, live) {
  const now = {};
  for (const s of live ? live.stages : []) now[s.stage] = s.customers;
  const most = Math.max(1, ...Object.values(now));
  const columns = funnel.stages.map((s) => {
    const exitRate = s.departures ? s.exits / s.departures : null;
    const count = live ? now[s.stage] ?? 0 : null; // unknown, not zero, if the gauges failed
    const gauge = el("div", { class: "gauge" }, el("div", { style: `width:${(100 * (count || 0)) / most}%` }));
    const figures = el(
      "dl", {},
      el("dt", {}, "entered"), el("dd", { class: "entered" }, s.entered),
      el("dt", {}, "distinct"), el("dd", { class: "customers" }, s.customers),
      el("dt", {}, "moved on"), el("dd", { class: "moved-on" }, s.moved_on),
      el("dt", {}, "conversion"), el("dd", {}, percent(s.conversion)),
      el("dt", {}, "moved back"), el("dd", {}, s.moved_back),
      el("dt", {}, "exits"), el("dd", { class: "drop exits" }, s.exits),
      el("dt", {}, "drop-off"), el("dd", { class: "drop" }, percent(exitRate)),
      el("dt", {}, "median stay"), el("dd", {}, duration(s.time_to_move_on.median_s)),
      el("dt", {}, "stay before exit"), el("dd", { class: "before-exit" }, duration(s.time_before_exit.median_s)),
    );
    return el(
      "div",
      {
        class: "stage", "data-stage": s.stage, "data-now": count ?? "", "data-entered": s.entered,
        "data-customers": s.customers, "data-moved-on": s.moved_on, "data-exits": s.exits,
        "data-departures": s.departures, "data-before-exit": s.time_before_exit.median_s ?? "",
      },
      el("h3", {}, s.stage),
      el("div", { class: "now", title: "customers in this stage now" }, count ?? "–"),
      el("span", { class: "muted" }, "customers now"),
      gauge,
      figures,
    );
  });
  byId("stages").replaceChildren(...columns);
}

// The flow: one node per column ("new", the stages, "exit"), one band per move, its width
// proportional to the count. Forward bands run between columns; moves back and returns
// from "exit" loop underneath.
function drawFlow(transitions) {
  const nodes = transitions.nodes;
  const moves = transitions.transitions.filter((t) => t.count > 0);
  const width = 1300, top = 34, height = 300, nodeWidth = 14, margin = 50;
  const inflow = {}, outflow = {};
  for (const n of nodes) inflow[n] = outflow[n] = 0;
  for (const t of moves) {
    outflow[t.from] += t.count;
    inflow[t.to] += t.count;
  }
  const size = (n) => Math.max(inflow[n], outflow[n]);
  const scale = (height - 10) / Math.max(1, ...nodes.map(size));
  const step = (width - 2 * margin - nodeWidth) / Math.max(1, nodes.length - 1);
  const x = {}, index = {};
  nodes.forEach((n, i) => {
    x[n] = margin + i * step;
    index[n] = i;
  });
  const backs = moves.filter((t) => index[t.to] <= index[t.from]).length;
  const total = top + height + (backs ? 90 : 20);
  const root = svg("svg", { viewBox: `0 0 ${width} ${total}`, role: "img", "aria-label": "flow between stages" });
  const bandLayer = svg("g", { class: "bands" }, root);
  const nodeLayer = svg("g", { class: "nodes" }, root);
  for (const n of nodes) {
    const g = svg("g", { class: `node ${n === "new" || n === "exit" ? n : "step"}`, "data-node": n, "data-in": inflow[n], "data-out": outflow[n] }, nodeLayer);
    svg("rect", { x: x[n], y: top, width: nodeWidth, height: Math.max(2, size(n) * scale) }, g);
    const label = svg("text", { x: x[n] + nodeWidth / 2, y: top - 18, "text-anchor": "middle" }, g);
    label.textContent = n;
    const counts = svg("text", { x: x[n] + nodeWidth / 2, y: top - 5, "text-anchor": "middle", class: "muted" }, g);
    counts.textContent = n === "new" ? `${outflow[n]} arrived` : n === "exit" ? `${inflow[n]} left` : `in ${inflow[n]} · out ${outflow[n]}`;
  }
  // Stack each node's bands: outgoing on its right edge, incoming on its left, by the other end.
  const outOffset = {}, inOffset = {};
  for (const n of nodes) outOffset[n] = inOffset[n] = top;
  const ordered = [...moves].sort((a, b) => index[a.from] - index[b.from] || index[a.to] - index[b.to]);
  const bySource = [...moves].sort((a, b) => index[a.from] - index[b.from] || index[a.to] - index[b.to]);
  const byTarget = [...moves].sort((a, b) => index[a.to] - index[b.to] || index[a.from] - index[b.from]);
  const start = new Map(), end = new Map();
  for (const t of bySource) {
    const w = t.count * scale;
    start.set(t, outOffset[t.from] + w / 2);
    outOffset[t.from] += w;
  }
  for (const t of byTarget) {
    const w = t.count * scale;
    end.set(t, inOffset[t.to] + w / 2);
    inOffset[t.to] += w;
  }
  for (const t of ordered) {
    const back = index[t.to] <= index[t.from];
    const sx = x[t.from] + nodeWidth, sy = start.get(t), tx = x[t.to], ty = end.get(t);
    let c1x, c1y, c2x, c2y;
    if (back) {
      const low = top + height + 70;
      [c1x, c1y, c2x, c2y] = [sx + 90, low, tx - 90, low];
    } else {
      const mid = (sx + tx) / 2;
      [c1x, c1y, c2x, c2y] = [mid, sy, mid, ty];
    }
    const cls = ["band", t.to === "exit" ? "to-exit" : "", back ? "back" : ""].filter(Boolean).join(" ");
    const g = svg("g", { class: cls, "data-from": t.from, "data-to": t.to, "data-count": t.count }, bandLayer);
    svg("path", { d: `M${sx},${sy} C${c1x},${c1y} ${c2x},${c2y} ${tx},${ty}`, "stroke-width": Math.max(1, t.count * scale) }, g);
    svg("title", {}, g).textContent = `${t.from} → ${t.to}: ${t.count}`;
    const label = svg("text", {
      x: (sx + 3 * c1x + 3 * c2x + tx) / 8, y: (sy + 3 * c1y + 3 * c2y + ty) / 8 + 4, "text-anchor": "middle",
    }, g);
    label.textContent = t.count;
  }
  byId("flow").replaceChildren(root);
}

function touchTable(title, outcome, kind) {
  const rows = outcome.touchpoints.slice(0, 8).map((t) =>
    el(
      "tr", { class: "touch", "data-kind": kind, "data-lift": t.lift, "data-count": t.count },
      el("td", {}, `${t.type} · ${t.channel}`),
      el("td", {}, t.target),
      el("td", { class: "num" }, t.count),
      el("td", { class: "num lift" }, t.lift.toFixed(2)),
    ),
  );
  const head = el("tr", {}, el("th", {}, "touchpoint"), el("th", {}, "target"), el("th", { class: "num" }, "before"), el("th", { class: "num" }, "lift"));
  const body = rows.length ? rows : [el("tr", {}, el("td", { colspan: 4, class: "muted" }, "not enough outcomes to rank yet"))];
  return [el("h4", {}, `${title} (${outcome.total})`), el("table", {}, head, ...body)];
}

function drawFriction(friction) {
  byId("friction").replaceChildren(
    ...touchTable("Before exits", friction.exits, "exit"),
    ...touchTable("Before abandoned carts", friction.abandoned_carts, "cart"),
  );
}

function drawChanges(found) {
  const rows = found.changes.map((c) =>
    el(
      "tr", { class: "change", "data-kind": c.kind, "data-started": c.started, "data-customers": c.customers },
      el("td", {}, c.kind === "exit" ? "exits" : "loops back"),
      el("td", {}, `${c.type} · ${c.channel}`),
      el("td", {}, c.target),
      el("td", {}, when(c.started)),
      el("td", { class: "num" }, `${percent(c.baseline_rate)} → ${percent(c.rate)}`),
      el("td", { class: "num" }, c.customers),
    ),
  );
  const head = el("tr", {}, ...["rising", "touchpoint", "target", "since", "rate", "customers"].map((h) => el("th", {}, h)));
  const none = el(
    "p", { class: "muted" },
    `No jump since ${when(found.loops.recent_from)} (loops) and ${when(found.exits.recent_from)} (exits, judged once decided).`,
  );
  byId("changes").replaceChildren(rows.length ? el("table", { class: "alerts" }, head, ...rows) : none);
}

function drawCarts(live, friction) {
  const figures = el("dl", { class: "figures" });
  const add = (label, cls, value) => figures.append(el("dt", {}, label), el("dd", { class: cls }, value));
  if (live) {
    add("open carts now", "open-carts", live.open_carts);
    add("value in open carts", "cart-value", money(live.cart_value));
    add("value at risk", "value-at-risk", money(live.value_at_risk));
  }
  if (friction) {
    const c = friction.carts;
    add("abandoned at checkout", "abandoned-checkout", `${c.at_checkout} (${money(c.value_at_checkout)})`);
    add("abandoned earlier", "abandoned-earlier", `${c.earlier} (${money(c.value_earlier)})`);
  }
  byId("carts").replaceChildren(figures);
}

function drawModels(models) {
  const blocks = models.models.map((m) => {
    const names = [...new Set([...Object.keys(m.metrics), ...Object.keys(m.rolling_metrics)])].sort();
    const rows = names.map((name) =>
      el(
        "tr", { class: "metric", "data-metric": name },
        el("td", {}, name),
        el("td", { class: "num" }, name in m.metrics ? m.metrics[name].toFixed(3) : "–"),
        el("td", { class: "num" }, name in m.rolling_metrics ? m.rolling_metrics[name].toFixed(3) : "–"),
      ),
    );
    const head = el("tr", {}, el("th", {}, "metric"), el("th", { class: "num" }, `lifetime (${m.samples})`), el("th", { class: "num" }, `recent (${m.rolling_samples})`));
    return el(
      "div", { class: "model", "data-model": m.name },
      el("h4", {}, `${m.name} `, el("span", { class: "muted" }, `version ${m.version} · ${m.learner}`)),
      el("table", {}, head, ...rows),
    );
  });
  byId("models").replaceChildren(...(blocks.length ? blocks : [el("p", { class: "muted" }, "no model yet")]));
}

function drawExperiment(result) {
  const range = (pair) => (pair ? `${percent(pair[0])} – ${percent(pair[1])}` : "–");
  const head = el(
    "tr", {},
    ...["variant", "exposures", "resolved", "conversions", "rate", "95% CI", "anytime 95%", "P(best)", "lift"]
      .map((name, i) => el("th", i ? { class: "num" } : {}, name)),
  );
  const rows = result.variants.map((v) =>
    el(
      "tr", { class: "variant", "data-variant": v.variant },
      el("td", {}, v.variant),
      el("td", { class: "num exposures" }, String(v.exposures)),
      el("td", { class: "num resolved" }, String(v.resolved)),
      el("td", { class: "num conversions" }, String(v.conversions)),
      el("td", { class: "num rate" }, v.conversion_rate === null ? "–" : percent(v.conversion_rate)),
      el("td", { class: "num ci" }, range(v.ci95)),
      el("td", { class: "num anytime" }, range(v.anytime_ci95)),
      el("td", { class: "num best" }, v.probability_best === null ? "–" : percent(v.probability_best)),
      el("td", { class: "num lift" }, v.lift_vs_control === null ? "–" : percent(v.lift_vs_control)),
    ),
  );
  const verdict = result.winner ? `winner: ${result.winner}` : "no winner yet";
  const kind = result.definition ? `${result.definition.decision} · ${result.definition.policy}` : "personalization holdout";
  return el(
    "div", { class: "experiment", "data-experiment": result.name },
    el("h4", {}, `${result.name} `, el("span", { class: "muted" }, `${kind} · ${verdict} · snapshot ${result.snapshot}`)),
    el("table", {}, head, ...rows),
  );
}

async function drawExperiments() {
  const listed = await getJSON("/v1/experiments");
  const names = listed.experiments.map((e) => e.name);
  if (listed.holdout > 0) names.unshift("holdout");
  const results = await Promise.all(names.map((name) => getJSON(`/v1/experiments/${encodeURIComponent(name)}`)));
  const blocks = results.map(drawExperiment);
  byId("experiments").replaceChildren(...(blocks.length ? blocks : [el("p", { class: "muted" }, "no experiment defined")]));
}

const ORDER = { touchpoint: 0, "stage-change": 1, prediction: 2 }; // at one instant: cause first

async function drawCustomer() {
  const box = byId("customer");
  if (!customerId) {
    box.replaceChildren(el("p", { class: "muted" }, "Enter a customer id to see their journey."));
    return;
  }
  const path = "/v1/customers/" + encodeURIComponent(customerId);
  let journey;
  try {
    journey = await getJSON(path + "/journey");
  } catch (error) {
    const text = error.status === 404 ? `No event seen for ${customerId}.` : String(error.message);
    box.replaceChildren(el("p", { class: "error" }, text));
    return;
  }
  let predictions = null;
  try {
    predictions = await getJSON(path + "/predictions");
  } catch (error) {
    predictions = null; // the stored scores below still say something
  }
  const next = predictions ? predictions.next_stage : journey.scores && journey.scores.next_stage;
  const likely = next ? next.most_likely || Object.entries(next.probabilities).sort((a, b) => b[1] - a[1])[0][0] : null;
  const abandonment = predictions ? predictions.abandonment : journey.scores && journey.scores.abandonment;
  const fact = (label, cls, value) => el("div", { class: cls }, el("span", {}, label), el("strong", {}, value));
  const summary = el(
    "div", { class: "summary", "data-customer": journey.customer_id },
    fact("customer", "who", journey.customer_id),
    fact("stage now", "current-stage", journey.stage),
    fact("predicted next", "next-stage", likely ? `${likely} (${percent(next.probabilities[likely])})` : "–"),
    fact("abandonment risk", "risk", abandonment ? percent(abandonment.risk) : "no open cart"),
    fact("cart", "cart", journey.cart.open ? `${journey.cart.units} units, ${money(journey.cart.value)}` : "empty"),
    fact("events", "events", journey.events_applied),
  );
  const entries = [
    ...journey.stage_history.map((v) => ({
      at: v.entered_at, kind: "stage-change", text: `→ ${v.stage}`, detail: `by ${v.event_type}`,
    })),
    ...journey.score_history.map((p) => ({
      at: p.at, kind: "prediction",
      text: `predicted next: ${p.next_stage} (${percent(p.probability)})`,
      detail: p.risk === null ? "no open cart" : `abandonment risk ${percent(p.risk)}`,
    })),
    ...journey.touchpoints.map((t) => ({
      at: t.at, kind: "touchpoint", text: `${t.type} · ${t.channel}`, detail: t.product_id || t.page || "",
    })),
  ].sort((a, b) => (a.at < b.at ? -1 : a.at > b.at ? 1 : ORDER[a.kind] - ORDER[b.kind]));
  const items = entries.map((e) =>
    el(
      "li", { class: `entry ${e.kind}`, "data-kind": e.kind, "data-at": e.at },
      el("time", { datetime: e.at }, when(e.at)),
      e.text,
      e.detail ? el("span", { class: "muted" }, " " + e.detail) : "",
    ),
  );
  box.replaceChildren(summary, el("ol", { class: "timeline" }, ...items));
}

let refreshes = 0;

async function refresh() {
  const params = windowParams();
  if (refreshes++ % CHANGES_EVERY === 0) {
    const segment = new URLSearchParams();
    if (page.get("segment")) segment.set("segment", page.get("segment"));
    getJSON("/v1/analytics/changes", segment).then(drawChanges).catch((error) => {
      byId("changes").replaceChildren(el("p", { class: "error" }, String(error.message)));
    });
  }
  const [funnel, transitions, friction, live, models] = await Promise.allSettled([
    getJSON("/v1/analytics/funnel", params),
    getJSON("/v1/analytics/transitions", params),
    getJSON("/v1/analytics/friction", params),
    getJSON("/v1/analytics/live"),
    getJSON("/v1/models"),
  ]);
  const value = (r) => (r.status === "fulfilled" ? r.value : null);
  const failed = [funnel, transitions, friction, live, models].filter((r) => r.status === "rejected");
  if (funnel.value) drawStages(funnel.value, value(live));
  if (transitions.value) drawFlow(transitions.value);
  if (friction.value) drawFriction(friction.value);
  if (live.value || friction.value) drawCarts(value(live), value(friction));
  if (models.value) drawModels(models.value);
  const w = funnel.value && funnel.value.window;
  if (w) {
    byId("window").textContent = `${w.journey_map} · segment ${w.segment} · ${w.bucket} buckets from ${when(w.from)} to ${when(w.to)} · newest event ${when(w.as_of)} · outcomes decided until ${when(w.complete_until)}`;
  }
  await drawExperiments().catch((error) => {
    byId("experiments").replaceChildren(el("p", { class: "error" }, String(error.message)));
  });
  await drawCustomer();
  const stamp = new Date().toISOString();
  byId("status").replaceChildren(
    `updated ${when(stamp)}, every ${REFRESH_MS / 1000} s`,
    ...failed.map((r) => el("span", { class: "error" }, " · " + r.reason.message)),
  );
}

function loop() {
  refresh().catch((error) => byId("status").replaceChildren(el("span", { class: "error" }, String(error))))
    .finally(() => window.setTimeout(loop, REFRESH_MS));
}

byId("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  window.sessionStorage.setItem(KEY_ITEM, byId("key-input").value.trim());
  byId("key-input").value = "";
  byId("key-form").hidden = true;
  refresh();
});
byId("customer-id").value = customerId;
byId("customer-form").addEventListener("submit", (event) => {
  event.preventDefault();
  customerId = byId("customer-id").value.trim();
  const url = new URL(window.location.href);
  if (customerId) url.searchParams.set("customer", customerId);
  else url.searchParams.delete("customer");
  window.history.replaceState(null, "", url);
  drawCustomer();
});
loop();
