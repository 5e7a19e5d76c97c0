// The console shell: the key, the API helpers and the page switcher. No build step:
// each page is an ES module exporting render(root, ctx).
const KEY = "modelport-key";
const PAGES = ["playground", "compare", "logs", "usage", "batches", "keys"];

export function h(tag, attrs = {}, ...children) {
  // Builds elements with text nodes only: nothing the server sends is ever parsed as HTML.
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "value") el.value = value;
    else el.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function headers(extra = {}) {
  // The console's header: the gateway refuses console changes without it (or a key), which a
  // page of another origin cannot add without the browser asking the gateway first.
  const key = sessionStorage.getItem(KEY);
  const base = { ...extra, "x-modelport-console": "1" };
  return key ? { ...base, authorization: `Bearer ${key}` } : base;
}

export class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function check(response) {
  if (response.ok) return response;
  let message = `HTTP ${response.status}`;
  try { message = (await response.json()).error?.message || message; } catch { /* not JSON */ }
  if (response.status === 401) showLogin(message);
  throw new ApiError(response.status, message);
}

export async function api(path, { method = "GET", body } = {}) {
  const init = { method, headers: headers(body === undefined ? {} : { "content-type": "application/json" }) };
  if (body !== undefined) init.body = JSON.stringify(body);
  return (await check(await fetch(`/ui/api/${path}`, init))).json();
}

export async function download(path, filename) {
  const response = await check(await fetch(`/ui/api/${path}`, { headers: headers() }));
  const url = URL.createObjectURL(await response.blob());
  const link = h("a", { href: url, download: filename });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

// One chat completion, streamed from the gateway's own OpenAI API. onText gets each piece.
export async function streamChat(body, onText, signal) {
  const started = performance.now();
  let firstToken = null;
  const response = await check(await fetch("/v1/chat/completions", {
    method: "POST", signal,
    headers: headers({ "content-type": "application/json" }),
    body: JSON.stringify({ ...body, stream: true, stream_options: { include_usage: true } }),
  }));
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "", text = "", usage = null, toolCalls = [], finish = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") continue;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new ApiError(500, chunk.error.message || "the stream failed");
        if (chunk.usage) usage = chunk.usage;
        for (const choice of chunk.choices || []) {
          const delta = choice.delta || {};
          if (choice.finish_reason) finish = choice.finish_reason;
          for (const call of delta.tool_calls || []) {
            const slot = toolCalls[call.index ?? 0] ||= { name: "", arguments: "" };
            slot.name += call.function?.name || "";
            slot.arguments += call.function?.arguments || "";
          }
          if (delta.content) {
            if (firstToken === null) firstToken = performance.now() - started;
            text += delta.content;
            onText(text);
          }
        }
      }
    }
  }
  return { text, usage, toolCalls, finish, ttft: firstToken, latency: performance.now() - started };
}

let models = null;
export async function loadModels() {
  models ||= api("models");
  return models;
}

export function cost(usage, price) {
  if (!usage || !price) return null;
  return (usage.prompt_tokens * price.input + usage.completion_tokens * price.output) / 1e6;
}

export function money(value) {
  if (value === null || value === undefined) return "unknown";
  return value === 0 ? "$0" : value < 0.01 ? `$${value.toPrecision(2)}` : `$${value.toFixed(2)}`;
}

export function statsLine(result, price) {
  const u = result.usage;
  const tokens = u ? `${u.prompt_tokens} in / ${u.completion_tokens} out tokens` : "tokens unknown";
  const ttft = result.ttft === null ? "" : ` · first token ${Math.round(result.ttft)} ms`;
  return `${tokens} · cost ${money(cost(u, price))} · ${Math.round(result.latency)} ms${ttft}`;
}

export async function modelPicker(value) {
  const data = await loadModels();
  const select = h("select", { "aria-label": "model" });
  for (const group of data.providers) {
    const optgroup = h("optgroup", { label: `${group.provider}${group.key_set ? "" : " (no key)"}` });
    for (const id of group.models) optgroup.append(h("option", { value: id }, id));
    if (group.models.length) select.append(optgroup);
  }
  select.value = value && [...select.options].some((o) => o.value === value) ? value : data.default;
  return select;
}

let me = null;

function showLogin(message) {
  const form = document.getElementById("login");
  form.hidden = false;
  document.getElementById("login-error").textContent = message || "";
}

async function whoami() {
  try {
    me = await api("me");
  } catch (error) {
    return null;
  }
  document.getElementById("login").hidden = true;
  document.getElementById("who").textContent = me.auth ? `key: ${me.key}${me.admin ? " (admin)" : ""}` : "open gateway (loopback)";
  for (const link of document.querySelectorAll("#nav a[data-admin]")) link.hidden = !me.admin;
  return me;
}

async function show() {
  const name = PAGES.includes(location.hash.slice(1)) ? location.hash.slice(1) : "playground";
  for (const link of document.querySelectorAll("#nav a")) link.classList.toggle("active", link.dataset.page === name);
  const main = document.getElementById("main");
  main.replaceChildren();
  if (!me && !(await whoami())) return;
  const root = h("section", { id: `page-${name}` });
  main.append(root);
  try {
    const page = await import(`/ui/${name}.js`);
    await page.render(root, { me });
  } catch (error) {
    root.append(h("p", { class: "error" }, error.message));
  }
}

document.getElementById("login").addEventListener("submit", async (event) => {
  event.preventDefault();
  sessionStorage.setItem(KEY, document.getElementById("login-key").value.trim());
  document.getElementById("login-key").value = "";
  models = null;
  if (await whoami()) show();
});
window.addEventListener("hashchange", show);
show();
