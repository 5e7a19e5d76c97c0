// Compare: one prompt to 2-4 models at once, streamed side by side; comparisons are kept in localStorage.
import { h, loadModels, modelPicker, statsLine, streamChat } from "/ui/app.js";

const SAVED = "modelport-comparisons";

function saved() { return JSON.parse(localStorage.getItem(SAVED) || "[]"); }

export async function render(root) {
  const models = await loadModels();
  const ids = models.providers.flatMap((p) => p.models);
  // The models that work first: a provider without its key only answers with an error.
  const ready = models.providers.filter((p) => p.key_set).flatMap((p) => p.models);
  const first = ready.length ? ready : ids;
  const pickers = [];
  const pickerRow = h("div", { class: "row" });
  const addPicker = async (value) => {
    if (pickers.length >= 4) return;
    const picker = await modelPicker(value);
    picker.classList.add("compare-model");
    pickers.push(picker);
    pickerRow.append(h("label", {}, `Model ${pickers.length}`, picker));
  };
  await addPicker(first[0]);
  await addPicker(first[1] || first[0]);
  const add = h("button", { onclick: () => addPicker(first[pickers.length] || first[0]) }, "+ model");
  const prompt = h("textarea", { id: "compare-prompt", rows: 3, placeholder: "One prompt for every model", "aria-label": "prompt" });
  const maxTokens = h("input", { type: "number", min: 1, value: 128, "aria-label": "max tokens" });
  const run = h("button", { class: "primary", id: "compare-run" }, "Compare");
  const save = h("button", { id: "compare-save" }, "Save");
  const columns = h("div", { class: "grid", id: "compare-results" });
  const list = h("ul", { id: "saved" });

  const go = async () => {
    const text = prompt.value.trim();
    if (!text) return;
    columns.replaceChildren();
    run.disabled = true;
    await Promise.all(pickers.map(async (picker) => {
      const answer = h("div", { class: "answer" });
      const stats = h("div", { class: "stats" }, "…");
      columns.append(h("div", { class: "panel" }, h("strong", {}, picker.value), answer, stats));
      try {
        const body = { model: picker.value, messages: [{ role: "user", content: text }], max_tokens: Number(maxTokens.value) || undefined };
        const result = await streamChat(body, (soFar) => { answer.textContent = soFar; });
        stats.textContent = statsLine(result, models.prices[picker.value]);
        stats.classList.add("done");
      } catch (error) {
        stats.textContent = "";
        answer.append(h("span", { class: "error" }, error.message));
      }
    }));
    run.disabled = false;
  };
  const showSaved = () => {
    list.replaceChildren(...saved().map((item, i) => h("li", {},
      h("button", { onclick: async () => {
        prompt.value = item.prompt;
        pickers.length = 0;
        pickerRow.replaceChildren();
        for (const m of item.models) await addPicker(m);
        go();
      } }, "Re-run"), " ", h("button", { onclick: () => { const all = saved(); all.splice(i, 1); localStorage.setItem(SAVED, JSON.stringify(all)); showSaved(); } }, "Forget"),
      ` ${item.models.join(" vs ")}: ${item.prompt.slice(0, 80)}`)));
  };
  run.addEventListener("click", go);
  save.addEventListener("click", () => {
    if (!prompt.value.trim()) return;
    localStorage.setItem(SAVED, JSON.stringify([{ prompt: prompt.value, models: pickers.map((p) => p.value) }, ...saved()].slice(0, 50)));
    showSaved();
  });
  showSaved();
  root.append(h("h2", {}, "Compare"), pickerRow, h("div", { class: "row" }, add, h("label", {}, "Max tokens", maxTokens)),
    h("label", {}, "Prompt", prompt), h("div", { class: "row" }, run, save), columns, h("h3", {}, "Saved comparisons"), list);
}
