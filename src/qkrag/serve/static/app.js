// qkrag serve: the page. Plain JS, no build step; every number shown comes from the server's JSON (the library).
"use strict";

const $ = (sel) => document.querySelector(sel);
const SVG = "http://www.w3.org/2000/svg";
const state = { sources: [], served: null, collection: {}, aspects: null, pairs: null, chosenDoc: null, sort: null };

function el(tag, attrs = {}, ...children) {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

const fmt = (x, digits = 3) => (x === null || x === undefined ? "—" : Number(x).toFixed(digits));

function showError(message) {
  const box = $("#error");
  box.textContent = message || "";
  box.hidden = !message;
}

async function api(path, params = {}) {
  const url = new URL(path, window.location.origin);
  for (const [key, value] of Object.entries(params)) if (value !== "" && value !== null) url.searchParams.set(key, value);
  let response;
  try {
    response = await fetch(url);
  } catch (err) {
    throw new Error(`the qkrag server does not answer (${err.message}): is \`qkrag serve\` still running?`);
  }
  const body = await response.json().catch(() => ({ error: `the server answered ${response.status} without JSON` }));
  if (!response.ok || body.error) throw new Error(body.error || `the server answered ${response.status}`);
  return body;
}

function currentSource() {
  return state.sources.find((s) => s.name === $("#source").value) || state.sources[0];
}

// ------------------------------------------------------------------------------------------------------ start-up

async function start() {
  document.querySelectorAll("#tabs button").forEach((b) => b.addEventListener("click", () => showView(b.dataset.view)));
  $("#query-form").addEventListener("submit", (e) => { e.preventDefault(); runQuery(); });
  $("#judged").addEventListener("change", () => { if ($("#judged").value) runQuery($("#judged").value); });
  $("#source").addEventListener("change", () => { fillJudged(); showSourceState(); refreshView(); });
  $("#colour-by").addEventListener("change", drawMaps);
  try {
    state.served = await api("/api/sources");
  } catch (err) {
    showError(err.message);
    return;
  }
  state.sources = state.served.sources;
  for (const s of state.sources) $("#source").append(el("option", { value: s.name, text: s.name }));
  fillJudged();
  showSourceState();
  const params = new URLSearchParams(window.location.search);
  if (params.get("view")) showView(params.get("view"));
  if (params.get("q") || params.get("query_id")) {
    $("#q").value = params.get("q") || "";
    $("#relevant").value = params.get("relevant") || "";
    runQuery(params.get("query_id"));
  }
}

function fillJudged() {
  const select = $("#judged");
  select.replaceChildren(el("option", { value: "", text: "… or pick a judged query" }));
  for (const q of (currentSource() || {}).judged || []) {
    select.append(el("option", { value: q.id, text: `${q.id}: ${q.text}` }));
  }
}

function showSourceState() {
  const source = currentSource();
  const notice = $("#notice");
  const problems = [];
  if (source && source.error) problems.push(`Collection ${source.name}: ${source.error}`);
  if (source && source.projection_error) problems.push(`Projection ${source.projection}: ${source.projection_error}`);
  notice.textContent = problems.join("\n");
  notice.hidden = problems.length === 0;
  $("#query-info").textContent = source && !source.error
    ? `${source.documents} documents (${source.question_form_documents} question-form), hybrid ` +
      `${source.fusion} (${source.fusion_note})` + (source.projection ? `, projection ${source.projection}` : "") +
      (source.probability ? `; σ ${source.probability}` : "")
    : "";
}

function showView(name) {
  document.querySelectorAll("#tabs button").forEach((b) => b.classList.toggle("active", b.dataset.view === name));
  document.querySelectorAll(".view").forEach((v) => { v.hidden = v.id !== `view-${name}`; });
  showError("");
  refreshView();
}

function activeView() {
  return document.querySelector("#tabs button.active").dataset.view;
}

function refreshView() {
  const view = activeView();
  if (view === "collection") loadCollection();
  if (view === "aspects") loadAspects();
  if (view === "pairs") loadPairs();
}

// ------------------------------------------------------------------------------------------------------ query view

async function runQuery(queryId) {
  showError("");
  const params = { source: $("#source").value, k: $("#k").value };
  if (queryId) params.query_id = queryId;
  else Object.assign(params, { q: $("#q").value, relevant: $("#relevant").value });
  const columns = $("#columns");
  columns.setAttribute("aria-busy", "true");
  try {
    const result = await api("/api/query", params);
    if (queryId) {
      $("#q").value = result.query;
      $("#relevant").value = result.relevant.join(",");
    }
    renderColumns(result);
  } catch (err) {
    columns.replaceChildren();
    showError(err.message);
  } finally {
    columns.removeAttribute("aria-busy");
  }
}

function rankChange(change) {
  if (change === null || change === undefined) return el("span", { class: "same", title: "not in raw cosine's ranking", text: "new" });
  if (change > 0) return el("span", { class: "up", title: `up ${change} from raw cosine`, text: `▲${change}` });
  if (change < 0) return el("span", { class: "down", title: `down ${-change} from raw cosine`, text: `▼${-change}` });
  return el("span", { class: "same", title: "same rank as raw cosine", text: "=" });
}

function hitCard(hit, column) {
  const text = el("div", { class: "text", title: "click to show all", text: hit.text });
  text.addEventListener("click", () => text.classList.toggle("open"));
  return el("div", { class: "hit" + (hit.relevant ? " relevant" : ""), "data-id": hit.id, "data-relevant": String(hit.relevant),
                     "data-question-form": String(hit.question_form) },
    el("div", { class: "head" },
      el("span", { class: "rank", text: `${hit.rank}.` }),
      column === "cosine" ? null : rankChange(hit.rank_change),
      el("span", { class: "id", text: hit.id }),
      hit.relevant ? el("span", { class: "badge rel", title: "judged relevant", text: "✓ relevant" }) : null,
      hit.question_form ? el("span", { class: "badge qf", title: "the document is itself a question (qkrag.text.question_form)", text: "? question" }) : null),
    el("div", { class: "num" },
      el("span", { class: "prob", title: "σ(s·q·k + b): the projection's probability of relevance", text: `p=${fmt(hit.probability)}` }),
      "  ",
      el("span", { title: "raw cosine of query and document", text: `cos=${fmt(hit.cosine)}` }),
      column === "hybrid" || column === "bm25" ? el("span", { title: "this column's own score", text: `  score=${fmt(hit.score)}` }) : null),
    hit.title ? el("b", { text: hit.title }) : null,
    text);
}

const COLUMN_TITLES = { cosine: "raw cosine", projection: "projection σ(q·k)", hybrid: "hybrid", bm25: "BM25" };

function renderColumns(result) {
  const columns = result.columns.map((column) => {
    const ndcg = column["ndcg@10"];
    const title = column.name === "hybrid" ? `hybrid (${result.fusion})` : COLUMN_TITLES[column.name];
    const header = el("h2", {}, el("span", { text: title }),
      ndcg === null || ndcg === undefined ? null : el("span", { class: "ndcg", text: `nDCG@10 ${fmt(ndcg)}` }));
    if (column.error) return el("div", { class: "column", "data-column": column.name }, header, el("p", { class: "col-error", text: column.error }));
    return el("div", { class: "column", "data-column": column.name }, header, column.hits.map((h) => hitCard(h, column.name)));
  });
  $("#columns").replaceChildren(...columns);
  const judged = result.relevant.length ? `judged relevant: ${result.relevant.join(", ")}` : "nothing judged for this query (add answer ids to mark them)";
  $("#query-info").textContent = `“${result.query}”${result.query_id ? ` (${result.query_id})` : ""}: ${judged}`;
}

// ------------------------------------------------------------------------------------------------ collection view

async function loadCollection() {
  const name = $("#source").value;
  try {
    if (!state.collection[name]) state.collection[name] = await api("/api/collection", { source: name });
    renderCollection(state.collection[name]);
  } catch (err) {
    $("#collection-summary").replaceChildren();
    $("#per-query").replaceChildren();
    $("#reliability").replaceChildren();
    $("#histograms").replaceChildren();
    showError(err.message);
  }
}

function renderCollection(report) {
  const items = Object.entries(report.means).map(([name, mean]) =>
    el("li", { text: `${name === "hybrid" ? `hybrid (${report.hybrid})` : COLUMN_TITLES[name]}: nDCG@10 ${fmt(mean)} [${fmt(report.ci[name][0])}, ${fmt(report.ci[name][1])}]` }));
  const c = report.comparison;
  const summary = [el("p", { text: `${report.n_queries} judged queries (split ${report.split}).` }), el("ul", {}, items)];
  if (c) summary.push(el("p", { id: "comparison", text: `Projection − cosine: ${c.difference >= 0 ? "+" : ""}${fmt(c.difference)} ` +
    `[${fmt(c.ci[0])}, ${fmt(c.ci[1])}], p = ${fmt(c.p_value, 4)} (paired sign-flip test); ${c.gains} queries gain, ${c.losses} lose, ${c.ties} tie.` }));
  $("#collection-summary").replaceChildren(...summary);
  renderPerQuery(report);
  $("#reliability").replaceChildren(report.calibration && !report.calibration.error
    ? reliabilityChart(report.calibration) : el("p", { class: "muted", text: "no projection: nothing to calibrate" }));
  $("#histograms").replaceChildren(...Object.entries(report.histograms).map(([name, h]) =>
    histogramChart(h, name === "projection" ? "σ probability" : "cosine", COLUMN_TITLES[name])));
}

function renderPerQuery(report) {
  const names = Object.keys(report.means);
  const hasDelta = names.includes("projection");
  const rows = report.per_query.map((r) => ({ ...r, delta: hasDelta ? r.projection - r.cosine : null }));
  const keys = ["id", "text", ...names, ...(hasDelta ? ["delta"] : [])];
  const sort = state.sort || { key: hasDelta ? "delta" : "id", desc: hasDelta };
  rows.sort((a, b) => {
    const x = a[sort.key], y = b[sort.key];
    const order = typeof x === "number" ? x - y : String(x).localeCompare(String(y));
    return sort.desc ? -order : order;
  });
  const head = el("tr", {}, keys.map((key) => el("th", {
    "data-key": key, text: (key === "delta" ? "Δ projection − cosine" : COLUMN_TITLES[key] || key) + (sort.key === key ? (sort.desc ? " ▼" : " ▲") : ""),
    onclick: () => { state.sort = { key, desc: sort.key === key ? !sort.desc : typeof rows[0][key] === "number" }; renderPerQuery(report); },
  })));
  const body = rows.map((r) => el("tr", { "data-query": r.id, onclick: () => { showView("query"); runQuery(r.id); } },
    keys.map((key) => {
      const value = r[key];
      if (typeof value !== "number") return el("td", { text: value });
      const cls = key === "delta" ? (value > 0 ? "n gain" : value < 0 ? "n loss" : "n") : "n";
      return el("td", { class: cls, text: key === "delta" && value > 0 ? `+${fmt(value)}` : fmt(value) });
    })));
  $("#per-query").replaceChildren(el("thead", {}, head), el("tbody", {}, body));
}

function axes(svg, x0, y0, width, height, xLabel, yLabel, yTicks = []) {
  for (const [value, label] of yTicks) {
    svg.append(el("svg:text", { x: x0 - 4, y: y0 - value * height + 3, "text-anchor": "end", text: label }));
  }
  svg.append(el("svg:line", { x1: x0, y1: y0, x2: x0 + width, y2: y0, stroke: "#333" }),
             el("svg:line", { x1: x0, y1: y0, x2: x0, y2: y0 - height, stroke: "#333" }),
             el("svg:text", { x: x0 + width / 2, y: y0 + 28, "text-anchor": "middle", text: xLabel }),
             el("svg:text", { x: 12, y: y0 - height / 2, transform: `rotate(-90 12 ${y0 - height / 2})`, "text-anchor": "middle", text: yLabel }));
}

function reliabilityChart(cal) {
  const W = 420, H = 320, x0 = 45, y0 = 270, w = 350, h = 230;
  const svg = el("svg:svg", { width: W, height: H, id: "reliability-chart" });
  axes(svg, x0, y0, w, h, "predicted probability (bin)", "fraction judged relevant", [[0, "0"], [0.5, "0.5"], [1, "1"]]);
  svg.append(el("svg:line", { x1: x0, y1: y0, x2: x0 + w, y2: y0 - h, stroke: "#999", "stroke-dasharray": "4 3" }));
  for (const b of cal.bins) {
    const x = x0 + b.low * w, bw = (b.high - b.low) * w;
    if (b.count > 0) {
      const bh = b.fraction_relevant * h;
      svg.append(el("svg:rect", { x: x + 1, y: y0 - bh, width: bw - 2, height: bh, fill: "#4db6ac", stroke: "#00695c" },
        el("svg:title", { text: `p in [${fmt(b.low, 1)}, ${fmt(b.high, 1)}): ${b.count} hits, mean p ${fmt(b.mean_probability)}, ${fmt(b.fraction_relevant)} relevant` })));
      svg.append(el("svg:circle", { cx: x0 + b.mean_probability * w, cy: y0 - bh, r: 3, fill: "#c62828" }));
    }
    svg.append(el("svg:text", { x: x + bw / 2, y: y0 - Math.max(b.count ? b.fraction_relevant * h : 0, 0) - 4, "text-anchor": "middle", class: "count", text: `n=${b.count}` }));
    svg.append(el("svg:text", { x: x, y: y0 + 12, "text-anchor": "middle", text: fmt(b.low, 1) }));
  }
  svg.append(el("svg:text", { x: x0 + w / 2, y: 16, "text-anchor": "middle", text: `ECE ${fmt(cal.ece)} over n = ${cal.n} (dashed: perfect calibration, dots: bin mean p)` }));
  return svg;
}

function histogramChart(hist, xLabel, title) {
  const W = 420, H = 240, x0 = 45, y0 = 195, w = 350, h = 160;
  const svg = el("svg:svg", { width: W, height: H, class: "histogram" });
  axes(svg, x0, y0, w, h, xLabel, "share of hits in its class");
  const shares = (counts, n) => counts.map((c) => (n ? c / n : 0));
  const rel = shares(hist.relevant, hist.n_relevant), other = shares(hist.not_relevant, hist.n_not_relevant);
  const top = Math.max(...rel, ...other, 1e-9);
  const lo = hist.edges[0], span = hist.edges[hist.edges.length - 1] - lo || 1;
  const bins = hist.relevant.length;
  for (let i = 0; i < bins; i++) {
    const x = x0 + ((hist.edges[i] - lo) / span) * w, bw = ((hist.edges[i + 1] - hist.edges[i]) / span) * w;
    for (const [share, count, colour, label] of [[other[i], hist.not_relevant[i], "#90a4ae", "other"], [rel[i], hist.relevant[i], "#43a047", "relevant"]]) {
      const bh = (share / top) * h;
      svg.append(el("svg:rect", { x: x + 1, y: y0 - bh, width: Math.max(bw - 2, 1), height: bh, fill: colour, "fill-opacity": 0.6 },
        el("svg:title", { text: `${label}: ${count} hits in [${fmt(hist.edges[i])}, ${fmt(hist.edges[i + 1])})` })));
    }
  }
  svg.append(el("svg:text", { x: x0, y: y0 + 12, "text-anchor": "middle", text: fmt(lo, 2) }),
             el("svg:text", { x: x0 + w, y: y0 + 12, "text-anchor": "middle", text: fmt(lo + span, 2) }),
             el("svg:text", { x: x0 + w / 2, y: 14, "text-anchor": "middle",
               text: `${title}: relevant (green, n=${hist.n_relevant}) vs other (grey, n=${hist.n_not_relevant})` }));
  return svg;
}

// ------------------------------------------------------------------------------------------------ aspects view

async function loadAspects() {
  try {
    if (!state.aspects) state.aspects = await api("/api/aspects");
  } catch (err) {
    $("#maps").replaceChildren();
    showError(err.message);
    return;
  }
  const a = state.aspects;
  $("#aspects-info").textContent = `${a.documents.length} documents from ${a.source}; maps: PCA of raw embeddings and of each ` +
    `aspect (the sentences of each text about it), coloured by a label; hover a point for its text.`;
  const select = $("#colour-by");
  if (!select.options.length) {
    select.append(el("option", { value: "", text: "each map's own aspect" }));
    for (const label of Object.keys(a.labels)) select.append(el("option", { value: label, text: label }));
  }
  drawMaps();
}

const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];

function labelFor(aspect) {
  const labels = state.aspects.labels;
  return $("#colour-by").value || (labels[aspect] ? aspect : Object.keys(labels)[0]);
}

function drawMaps() {
  const a = state.aspects;
  if (!a) return;
  const figures = a.aspects.map((aspect) => {
    const label = labelFor(aspect), values = a.labels[label];
    const kinds = [...new Set(values)].sort();
    const points = a.maps[aspect];
    const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]);
    const [minX, maxX, minY, maxY] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
    const S = 250, pad = 12;
    const sx = (x) => pad + ((x - minX) / (maxX - minX || 1)) * (S - 2 * pad);
    const sy = (y) => S - pad - ((y - minY) / (maxY - minY || 1)) * (S - 2 * pad);
    const svg = el("svg:svg", { width: S, height: S, "data-aspect": aspect });
    points.forEach((p, i) => {
      const doc = a.documents[i];
      const circle = el("svg:circle", { cx: sx(p[0]), cy: sy(p[1]), r: 6, fill: PALETTE[kinds.indexOf(values[i]) % 10],
        "data-id": doc.id, class: state.chosenDoc === doc.id ? "chosen" : null });
      circle.addEventListener("mousemove", (e) => showTooltip(e, `${doc.title || doc.id} (${label}: ${values[i]})`, doc.text));
      circle.addEventListener("mouseleave", () => { $("#tooltip").hidden = true; });
      circle.addEventListener("click", () => { state.chosenDoc = doc.id; $("#tooltip").hidden = true; drawMaps(); showNeighbours(); });
      svg.append(circle);
    });
    const legend = el("div", { class: "legend" }, kinds.map((k, i) => el("span", {}, el("i", { style: `background:${PALETTE[i % 10]}` }), k)));
    return el("figure", {}, el("figcaption", { text: `${aspect === "raw" ? "raw embedding" : `aspect: ${aspect}`} (colour: ${label})` }), svg, legend);
  });
  $("#maps").replaceChildren(...figures);
}

function showTooltip(event, title, text) {
  const tip = $("#tooltip");
  tip.replaceChildren(el("b", { text: title }), el("div", { text }));
  tip.style.left = `${event.clientX + 12}px`;
  tip.style.top = `${event.clientY + 12}px`;
  tip.hidden = false;
}

function showNeighbours() {
  const a = state.aspects, id = state.chosenDoc;
  const byId = Object.fromEntries(a.documents.map((d, i) => [d.id, i]));
  $("#neighbours-title").textContent = `Nearest neighbours of ${a.documents[byId[id]].title || id}, per aspect`;
  const tables = a.aspects.map((aspect) => {
    const label = labelFor(aspect);
    const rows = a.neighbours[aspect][id].map((n, r) => el("tr", {}, el("td", { text: r + 1 }), el("td", { text: a.documents[byId[n]].title || n }),
      el("td", { text: a.labels[label][byId[n]] })));
    return el("table", { "data-aspect": aspect }, el("caption", { text: `${aspect} (${label}: ${a.labels[label][byId[id]]})` }), el("tbody", {}, rows));
  });
  $("#neighbours").replaceChildren(...tables);
}

// ------------------------------------------------------------------------------------------------------ pairs view

async function loadPairs() {
  try {
    if (!state.pairs) state.pairs = await api("/api/pairs", { n: 25 });
  } catch (err) {
    $("#pairs-table").replaceChildren();
    showError(err.message);
    return;
  }
  const p = state.pairs;
  const ranks = p.pair_ranks || {};
  const dropped = Object.entries(p.counts).filter(([k, v]) => k.startsWith("dropped_") && v).map(([k, v]) => `${k.slice(8).replace(/_/g, " ")} ${v}`);
  $("#pairs-summary").replaceChildren(
    el("p", { text: `${p.shown} of ${p.n_pairs} pairs from ${p.folder} (generator ${p.generator}, seed ${p.seed}). ` +
      `Base rank of the positive under raw cosine: rank 1 for ${fmt(ranks.rank1, 2)}, top 10 for ${fmt(ranks.top10, 2)}.` }),
    el("p", { class: "muted", text: `Every pair shown passed every filter; dropped on the way: ${dropped.join(", ") || "none"}.` }));
  const head = el("tr", {}, ["query", "positive", "base rank", "form", "filters passed: value (limit)"].map((t) => el("th", { text: t })));
  const rows = p.pairs.map((r) => el("tr", { "data-query": r.query_id },
    el("td", { text: r.query }),
    el("td", {}, el("span", { class: "id", text: r.positive_id }), el("div", { class: "muted", title: r.positive_text, text: r.positive_text.slice(0, 140) + (r.positive_text.length > 140 ? "…" : "") })),
    el("td", { class: "n", text: r.base_rank }),
    el("td", { text: `${r.question_form ? "question" : "statement"}${r.off_form ? ", off-form" : ""}; ${r.variant}` }),
    el("td", { class: "filters" }, r.filters.map((f) => el("div", { text: `✓ ${f.filter} ${typeof f.value === "number" && !Number.isInteger(f.value) ? fmt(f.value, 2) : f.value} (${f.limit})` })))));
  $("#pairs-table").replaceChildren(el("thead", {}, head), el("tbody", {}, rows));
}

start();
