// Logs: the call log, searchable and filterable, one call in full, "open in playground".
import { api, h, money } from "/ui/app.js";

export async function render(root) {
  const fields = {};
  const filter = (name, attrs = {}) => (fields[name] = h("input", { name, "aria-label": name, ...attrs }));
  const form = h("form", { class: "row", id: "log-filters" },
    h("label", {}, "Search", filter("q", { type: "search", placeholder: "words in prompt or answer" })),
    h("label", {}, "Model", filter("model", { size: 14 })), h("label", {}, "Provider", filter("provider", { size: 8 })),
    h("label", {}, "Source", (fields.source = h("select", { name: "source", "aria-label": "source" }, ...["", "gateway", "sdk", "cli", "batch"].map((s) => h("option", { value: s }, s || "any"))))),
    h("label", {}, "Key", filter("key", { size: 8 })),
    h("label", {}, "Status", (fields.status = h("select", { name: "status", "aria-label": "status" }, h("option", { value: "" }, "any"), h("option", { value: "ok" }, "ok"), h("option", { value: "error" }, "error")))),
    h("label", {}, "Since", filter("since", { placeholder: "1d, 2025-06-01", size: 10 })), h("label", {}, "Until", filter("until", { placeholder: "date", size: 10 })),
    h("button", { class: "primary", type: "submit" }, "Search"));
  const body = h("tbody");
  const more = h("button", { hidden: true }, "More");
  const detail = h("div", { id: "call-detail" });
  const error = h("p", { class: "error" });
  let next = null;

  const load = async (append) => {
    error.textContent = "";
    const params = new URLSearchParams();
    for (const [name, el] of Object.entries(fields)) if (el.value.trim()) params.set(name, el.value.trim());
    if (append && next) params.set("before", next);
    try {
      const page = await api(`logs?${params}`);
      if (!append) body.replaceChildren();
      for (const call of page.calls) {
        body.append(h("tr", { class: "click call-row", onclick: () => open(call.id) },
          h("td", {}, call.created_at.replace("T", " ").slice(0, 19)), h("td", {}, `${call.provider}/${call.model}`),
          h("td", { class: "hide-narrow" }, call.source), h("td", { class: "hide-narrow", title: call.key_id ? `key id ${call.key_id}` : null }, call.key_name || ""),
          h("td", {}, call.prompt), h("td", { class: "num" }, `${call.input_tokens}/${call.output_tokens}`),
          h("td", { class: "num" }, money(call.cost)), h("td", { class: call.error_kind ? "error" : "ok" }, call.error_kind || "ok")));
      }
      next = page.next;
      more.hidden = next === null;
      if (!body.children.length) body.append(h("tr", {}, h("td", { colspan: 8, class: "muted" }, "No calls match.")));
    } catch (e) {
      error.textContent = e.message;
    }
  };
  const open = async (id) => {
    try {
      const call = await api(`logs/${id}`);
      const toPlayground = h("button", { id: "open-playground", onclick: () => {
        sessionStorage.setItem("modelport-open", JSON.stringify({ model: `${call.provider}/${call.model}`, prompt: call.prompt }));
        location.hash = "playground";
      } }, "Open in playground");
      detail.replaceChildren(h("h3", {}, `Call ${call.id}`), h("p", { class: "muted" },
        `${call.created_at} · ${call.provider}/${call.model} · ${call.source} · latency ${call.latency === null ? "?" : Math.round(call.latency * 1000) + " ms"} · cost ${money(call.cost)}`),
        toPlayground, h("h4", {}, "Request"), h("pre", {}, JSON.stringify(call.request, null, 2)),
        h("h4", {}, call.error ? "Error" : "Answer"), h("pre", { class: "call-answer" }, call.error || call.response_text || ""));
      detail.scrollIntoView({ behavior: "smooth" });
    } catch (e) {
      error.textContent = e.message;
    }
  };
  form.addEventListener("submit", (event) => { event.preventDefault(); load(false); });
  more.addEventListener("click", () => load(true));
  root.append(h("h2", {}, "Logs"), form, error, h("div", { class: "scroll" }, h("table", { id: "log-table" },
    h("thead", {}, h("tr", {}, ...["time", "model", "source", "key", "prompt", "tokens", "cost", "status"].map((n, i) => h("th", { class: i === 2 || i === 3 ? "hide-narrow" : (i > 4 && i < 7 ? "num" : "") }, n)))), body)), more, detail);
  await load(false);
}
