// Usage: tokens and spend over time, grouped, as an inline SVG chart plus the numbers.
import { api, download, h, money } from "/ui/app.js";

const SVG = "http://www.w3.org/2000/svg";
function s(tag, attrs = {}, text) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  return el;
}

// Stacked bars: one bar per time bucket, one colour per group (the top five, then "other").
function chart(series, metric) {
  const times = [...new Set(series.map((r) => r.time))];
  const totals = new Map();
  for (const r of series) totals.set(r.group, (totals.get(r.group) || 0) + r[metric]);
  const top = [...totals.entries()].sort((a, b) => b[1] - a[1]).slice(0, 5).map(([g]) => g);
  const slot = (g) => (top.includes(g) ? top.indexOf(g) : 5);
  const stacks = times.map((t) => {
    const parts = new Array(6).fill(0);
    for (const r of series) if (r.time === t) parts[slot(r.group)] += r[metric];
    return parts;
  });
  const max = Math.max(0, ...stacks.map((p) => p.reduce((a, b) => a + b, 0)));
  const W = 720, H = 240, left = 84, bottom = 28, top0 = 10;
  const svg = s("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `${metric} over time` });
  const plotH = H - bottom - top0, plotW = W - left - 8;
  // All zero (a local model costs $0): one "0" line, not a scale of made-up fractions.
  for (const f of max ? [0, 0.5, 1] : [0]) {
    const y = top0 + plotH * (1 - f);
    svg.append(s("line", { class: "axis", x1: left, x2: W - 8, y1: y, y2: y }));
    svg.append(s("text", { x: left - 4, y: y + 4, "text-anchor": "end" }, metric === "cost" ? money(max * f) : Math.round(max * f).toLocaleString()));
  }
  const bw = plotW / Math.max(1, times.length);
  stacks.forEach((parts, i) => {
    let y = top0 + plotH;
    parts.forEach((v, k) => {
      if (!v) return;
      const hgt = (v / max) * plotH; // v > 0, so max > 0
      y -= hgt;
      const width = Math.max(1, Math.min(bw * 0.8, 64));
      const rect = s("rect", { class: `s${k}`, x: left + i * bw + (bw - width) / 2, y, width, height: hgt });
      rect.append(s("title", {}, `${times[i]} ${k < 5 ? top[k] : "other"}: ${metric === "cost" ? money(v) : v.toLocaleString()}`));
      svg.append(rect);
    });
    if (times.length <= 12 || i % Math.ceil(times.length / 12) === 0) svg.append(s("text", { x: left + i * bw + bw / 2, y: H - 10, "text-anchor": "middle" }, times[i].slice(5)));
  });
  const legend = h("div", { class: "legend" }, ...top.map((g, k) => h("span", {}, h("span", { class: `swatch s${k}` }), g)),
    totals.size > 5 ? h("span", {}, h("span", { class: "swatch s5" }), "other") : null);
  return h("div", {}, svg, legend);
}

export async function render(root, { me }) {
  const by = h("select", { "aria-label": "group by" }, ...["model", "provider", "key", "source"].map((v) => h("option", { value: v }, v)));
  const bucket = h("select", { "aria-label": "bucket" }, ...["day", "hour", "month"].map((v) => h("option", { value: v }, v)));
  const metric = h("select", { "aria-label": "metric" }, h("option", { value: "cost" }, "spend"), h("option", { value: "output_tokens" }, "output tokens"),
    h("option", { value: "input_tokens" }, "input tokens"), h("option", { value: "calls" }, "calls"));
  const since = h("input", { value: "30d", size: 8, "aria-label": "since" });
  const out = h("div", { id: "usage-out" });
  const error = h("p", { class: "error" });
  const params = () => new URLSearchParams({ by: by.value, bucket: bucket.value, since: since.value.trim() });
  const load = async () => {
    error.textContent = "";
    try {
      const data = await api(`usage?${params()}`);
      const table = h("table", { id: "usage-table" }, h("thead", {}, h("tr", {}, h("th", {}, by.value), ...["calls", "errors", "input tokens", "cached input", "cache saved", "output tokens", "spend"].map((n) => h("th", { class: "num" }, n)))),
        h("tbody", {}, ...data.totals.map((t) => h("tr", {}, h("td", {}, t.group), h("td", { class: "num" }, t.calls), h("td", { class: "num" }, t.errors),
          h("td", { class: "num" }, t.input_tokens.toLocaleString()), h("td", { class: "num" }, t.cached_tokens.toLocaleString()),
          h("td", { class: "num" }, money(t.cache_saved)), h("td", { class: "num" }, t.output_tokens.toLocaleString()),
          h("td", { class: "num" }, money(t.cost) + (t.unpriced_calls ? ` (+${t.unpriced_calls} unpriced)` : ""))))));
      // Spend is the default chart, but with nothing spent (local models, free tiers) the
      // tokens say more: shown instead until the user picks a chart.
      const nothingSpent = !metricChosen && data.series.length && data.series.every((r) => !r.cost);
      if (nothingSpent) metric.value = "output_tokens";
      out.replaceChildren(data.series.length ? chart(data.series, metric.value) : h("p", { class: "muted" }, "No calls in this range."),
        nothingSpent ? h("p", { class: "muted", id: "usage-free" }, "Nothing spent in this range: the chart shows output tokens.") : null,
        h("div", { class: "scroll" }, table));
    } catch (e) {
      error.textContent = e.message;
    }
  };
  let metricChosen = false;
  metric.addEventListener("change", () => { metricChosen = true; });
  for (const el of [by, bucket, metric]) el.addEventListener("change", load);
  since.addEventListener("change", load);
  const csv = h("button", { id: "usage-csv", onclick: () => download(`usage?${params()}&format=csv`, `usage-by-${by.value}.csv`).catch((e) => { error.textContent = e.message; }) }, "Export CSV");
  root.append(h("h2", {}, me.admin ? "Usage" : `Usage of ${me.key}`), h("div", { class: "row" }, h("label", {}, "Group by", by), h("label", {}, "Per", bucket),
    h("label", {}, "Chart", metric), h("label", {}, "Since", since), csv), error, out);
  await load();
}
