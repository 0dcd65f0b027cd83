// Guide-Align console: plain DOM calls over the admin JSON endpoints (the admin cookie
// authenticates them). Text from the server is always set as textContent, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const c of children) node.append(c instanceof Node ? c : String(c));
  return node;
}

async function call(url, options) {
  const r = await fetch(url, Object.assign({credentials: "same-origin"}, options));
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error((body.error && body.error.message) || `HTTP ${r.status}`);
  return body;
}

function badge(text, cls) { return el("span", {class: `badge ${cls || text}`}, text); }

// -- playground ---------------------------------------------------------------------------

$("chat-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("send").disabled = true;
  $("chat-state").textContent = "sending...";
  $("answer").textContent = "";
  $("injected").replaceChildren();
  $("risk").textContent = "";
  $("backtrack").textContent = "";
  try {
    const out = await call("/admin/playground", {
      method: "POST", headers: {"content-type": "application/json"},
      body: JSON.stringify({prompt: $("prompt").value, model: $("model").value}),
    });
    if (out.status !== 200) {
      $("chat-state").textContent = `upstream answered ${out.status}: ` +
        ((out.error && out.error.message) || out.error);
      return;
    }
    $("answer").textContent = out.answer || "";
    for (const g of out.guidelines) {
      $("injected").append(el("li", {class: "guideline", "data-id": g.id},
        badge(g.kind), badge(g.category, "category"), el("span", {class: "score"}, g.score),
        el("p", {}, g.text)));
    }
    if (!out.guidelines.length) $("injected").append(el("li", {class: "none"}, "none"));
    $("risk").textContent = out.risk
      ? `risk ${out.risk.score} (gate ${out.risk.gate}); top: ` +
        Object.entries(out.risk.categories).map(([c, s]) => `${c} ${s}`).join(", ")
      : "risk gate off";
    const bt = out.backtrack || {};
    $("backtrack").textContent = bt.retractions !== undefined
      ? `backtracking ${bt.mode}: ${bt.retractions} retraction(s)` +
        (bt.categories && bt.categories.length ? ` (${bt.categories.join(", ")})` : "")
      : `backtracking: ${bt.state || "off"}`;
    $("chat-state").textContent = `${out.guidelines.length} guideline(s) injected`;
  } catch (err) {
    $("chat-state").textContent = `failed: ${err.message}`;
  } finally {
    $("send").disabled = false;
  }
});

// -- library ------------------------------------------------------------------------------

function guidelineItem(g) {
  const prov = Object.entries(g.provenance || {})
    .filter(([, v]) => !(Array.isArray(v) && !v.length))
    .map(([k, v]) => `${k}: ${Array.isArray(v) ? v.length + " item(s)" : v}`).join("; ");
  const examples = el("details", {}, el("summary", {}, `${g.examples.length} linked example(s)`),
    el("ul", {}, ...g.examples.map((e) => el("li", {}, `${e.input} (${e.split})`))));
  return el("li", {class: "guideline", "data-id": g.id, "data-category": g.category,
                   "data-kind": g.kind},
    badge(g.kind), badge(g.category, "category"), badge(g.source, "source"),
    g.score !== null ? el("span", {class: "score"}, g.score) : "",
    el("p", {}, g.text),
    el("p", {class: "provenance"}, `${g.id}` + (prov ? ` - ${prov}` : "")), examples);
}

async function searchLibrary(event) {
  if (event) event.preventDefault();
  const params = new URLSearchParams({q: $("q").value, category: $("category").value,
                                      kind: $("kind").value});
  try {
    const out = await call(`/admin/library?${params}`);
    $("guidelines").replaceChildren(...out.data.map(guidelineItem));
    $("library-count").textContent = `${out.data.length} of ${out.total} guidelines`;
  } catch (err) {
    $("library-count").textContent = `failed: ${err.message}`;
  }
}
$("library-form").addEventListener("submit", searchLibrary);
$("category").addEventListener("change", searchLibrary);
$("kind").addEventListener("change", searchLibrary);

// -- versions -----------------------------------------------------------------------------

async function loadVersions() {
  const out = await call("/admin/library/versions");
  $("version-rows").replaceChildren(...out.versions.map((v) => el("tr", {},
    el("td", {}, v.generation), el("td", {}, v.library), el("td", {}, v.library_version),
    el("td", {}, v.guidelines), el("td", {}, (v.content_hash || "").slice(0, 12)))));
  const d = out.diff;
  if (!d) {
    $("diff").replaceChildren(el("p", {}, "Only one version served since start: no diff yet."));
    return;
  }
  const list = (title, rows, fmt) => el("div", {}, el("h3", {}, `${title} (${rows.length})`),
    el("ul", {}, ...rows.map((r) => el("li", {}, fmt(r)))));
  $("diff").replaceChildren(el("p", {}, `${d.from} -> ${d.to}`),
    list("added", d.added, (g) => `${g.category}: ${g.text}`),
    list("removed", d.removed, (g) => `${g.category}: ${g.text}`),
    list("changed", d.changed, (g) => `${g.text} (${g.before} -> ${g.after})`));
}

// -- live counters ------------------------------------------------------------------------

const LABELS = {
  guide_align_requests: "requests (by status)",
  guide_align_guidelines_injected: "guidelines injected (by kind)",
  guide_align_risk_gate_decisions: "risk-gate decisions",
  guide_align_backtrack_retractions: "retractions",
  guide_align_rate_limited: "rate-limited (429)",
  guide_align_upstream_errors: "upstream errors",
};

async function pollStats() {
  try {
    const out = await call("/admin/stats");
    const rows = [];
    const row = (name, value) => rows.push(el("tr", {}, el("th", {}, name), el("td", {}, value)));
    for (const [name, label] of Object.entries(LABELS)) {
      const m = out.metrics && out.metrics[name];
      if (!m) continue;
      const by = Object.entries(m.by).map(([k, v]) => `${k || "-"} ${v}`).join(", ");
      row(label, `${m.total}` + (by ? ` (${by})` : ""));
    }
    if (out.metrics && out.metrics.mean_request_seconds !== null) {
      row("mean request seconds", out.metrics.mean_request_seconds);
    }
    if (!out.metrics) row("metrics", "unavailable (no /metrics)");
    row("in flight", out.own.in_flight);
    row("requests on this generation", out.own.served_this_generation);
    row("reloads", out.own.reloads);
    $("counter-rows").replaceChildren(...rows);
  } catch (err) {
    $("counter-rows").replaceChildren(el("tr", {}, el("td", {}, `failed: ${err.message}`)));
  }
}

searchLibrary();
loadVersions().catch(() => {});
pollStats();
setInterval(pollStats, 3000);
