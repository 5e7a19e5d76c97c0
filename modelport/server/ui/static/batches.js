// Batches: the gateway's Files/Batches jobs with progress; start one from an upload and a template.
import { api, download, h, modelPicker, money } from "/ui/app.js";

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "";
  return seconds < 90 ? `${Math.round(seconds)} s` : `${Math.round(seconds / 60)} min`;
}

export async function render(root) {
  const file = h("input", { type: "file", accept: ".csv,.jsonl", id: "batch-file", "aria-label": "rows file" });
  const model = await modelPicker();
  const promptT = h("textarea", { id: "batch-prompt", rows: 2, placeholder: "Template with {column} fields, e.g. Summarise: {text}", "aria-label": "prompt template" });
  const system = h("input", { placeholder: "optional", "aria-label": "system prompt" });
  const maxTokens = h("input", { type: "number", min: 1, value: 64, "aria-label": "max tokens" });
  const estimateButton = h("button", { id: "batch-estimate" }, "Estimate (dry run)");
  const startButton = h("button", { class: "primary", id: "batch-start", disabled: true, title: "Estimate first: the dry run checks the rows and the template" }, "Start batch");
  const estimate = h("div", { id: "batch-estimate-out", class: "muted" });
  const error = h("p", { class: "error" });
  const body = h("tbody");
  let job = null;
  let started = null; // the batch the Start button made: once it ends, the same job may start again

  const readJob = async () => {
    const picked = file.files[0];
    if (!picked) throw new Error("choose a .csv or .jsonl file");
    return { filename: picked.name, content: await picked.text(), prompt: promptT.value, model: model.value,
      system: system.value || undefined, max_tokens: maxTokens.value ? Number(maxTokens.value) : undefined };
  };
  for (const el of [file, promptT, model, system, maxTokens]) el.addEventListener("change", () => { job = null; startButton.disabled = true; });
  estimateButton.addEventListener("click", async () => {
    error.textContent = "";
    try {
      job = await readJob();
      const e = await api("batches/estimate", { method: "POST", body: job });
      estimate.replaceChildren(h("p", {}, `${e.rows} rows · ~${e.input_tokens.toLocaleString()} input + ~${e.output_tokens.toLocaleString()} output tokens (${e.output_estimate}) · estimated cost ${money(e.cost)}`
        + (e.unrenderable_rows ? ` · ${e.unrenderable_rows} rows cannot be built` : "")), h("p", {}, "First prompt: ", h("code", {}, e.sample_prompt)));
      startButton.disabled = false;
    } catch (e) {
      error.textContent = e.message;
    }
  });
  startButton.addEventListener("click", async () => {
    error.textContent = "";
    startButton.disabled = true;
    try {
      started = (await api("batches", { method: "POST", body: job })).id;
      estimate.replaceChildren(h("p", { class: "ok" }, "Started."));
      refresh();
    } catch (e) {
      error.textContent = e.message;
    }
  });

  const refresh = async () => {
    if (!root.isConnected) return;
    try {
      const { batches } = await api("batches");
      body.replaceChildren(...batches.map((b) => h("tr", { class: `batch-row status-${b.status}` },
        h("td", {}, b.id), h("td", { class: "batch-status" }, b.status),
        h("td", {}, h("progress", { max: b.total || 1, value: b.done }), ` ${b.done}/${b.total}`),
        h("td", { class: "num hide-narrow" }, b.rate ? `${b.rate.toFixed(1)}/s` : ""), h("td", { class: "num hide-narrow" }, duration(b.eta_seconds)),
        h("td", { class: b.failed ? "num error" : "num" }, b.failed + b.errors.length), h("td", { class: "num" }, money(b.cost)),
        h("td", {}, ["validating", "in_progress", "finalizing"].includes(b.status) ? h("button", { onclick: () => api(`batches/${b.id}/cancel`, { method: "POST" }).then(refresh) }, "Cancel") : null,
          b.output_file_id || b.error_file_id ? h("button", { class: "batch-download", onclick: () => download(`batches/${b.id}/output`, `${b.id}.jsonl`) }, "Download") : null))));
      if (!batches.length) body.append(h("tr", {}, h("td", { colspan: 8, class: "muted" }, "No gateway batches yet.")));
      const mine = started && batches.find((b) => b.id === started);
      if (mine && ["completed", "failed", "cancelled", "expired"].includes(mine.status)) {
        started = null;
        startButton.disabled = job === null;
      }
    } catch (e) {
      error.textContent = e.message;
      return;
    }
    setTimeout(refresh, 1000);
  };
  root.append(h("h2", {}, "Batches"),
    h("div", { class: "panel" }, h("h3", {}, "New batch"), h("div", { class: "row" }, h("label", {}, "Rows (.csv or .jsonl)", file), h("label", {}, "Model", model),
      h("label", {}, "System", system), h("label", {}, "Max tokens", maxTokens)), h("label", {}, "Prompt template", promptT),
      h("div", { class: "row" }, estimateButton, startButton), estimate),
    error, h("p", { class: "muted", id: "batch-cli-note" }, "Batches run with ", h("code", {}, "modelport batch run"), " are listed by ",
      h("code", {}, "modelport batch list"), "; this page lists the gateway's own (from here and its Batches API)."),
    h("div", { class: "scroll" }, h("table", { id: "batch-table" }, h("thead", {}, h("tr", {}, ...["id", "status", "progress", "rate", "ETA", "errors", "spend", ""].map((n) => h("th", {}, n)))), body)));
  await refresh();
}
