// Playground: one conversation with one model, streamed from /v1/chat/completions.
import { h, loadModels, modelPicker, statsLine, streamChat } from "/ui/app.js";

function parseJson(text, what) {
  if (!text.trim()) return undefined;
  try { return JSON.parse(text); } catch (error) { throw new Error(`${what}: not valid JSON (${error.message})`); }
}

function readImage(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

export async function render(root) {
  const opened = JSON.parse(sessionStorage.getItem("modelport-open") || "null");
  sessionStorage.removeItem("modelport-open");
  const models = await loadModels();
  const model = await modelPicker(opened?.model);
  const system = h("textarea", { placeholder: "System prompt (optional)", "aria-label": "system prompt", rows: 2 });
  const temperature = h("input", { type: "number", min: 0, max: 2, step: 0.1, placeholder: "default", "aria-label": "temperature" });
  const maxTokens = h("input", { type: "number", min: 1, value: 256, "aria-label": "max tokens" });
  const tools = h("textarea", { placeholder: '[{"type":"function","function":{"name":"...","parameters":{...}}}]', rows: 2, "aria-label": "tools" });
  const schema = h("textarea", { placeholder: '{"type":"object","properties":{...}}', rows: 2, "aria-label": "output schema" });
  const images = h("input", { type: "file", accept: "image/*", multiple: true, "aria-label": "images" });
  const prompt = h("textarea", { id: "prompt", placeholder: "Say something…", rows: 3, "aria-label": "prompt" });
  const send = h("button", { class: "primary", id: "send" }, "Send");
  const clear = h("button", {}, "New conversation");
  const log = h("div", { id: "conversation" });
  const error = h("p", { class: "error" });
  let messages = [];
  if (opened?.prompt) prompt.value = opened.prompt;

  clear.addEventListener("click", () => { messages = []; log.replaceChildren(); error.textContent = ""; });
  send.addEventListener("click", async () => {
    error.textContent = "";
    const text = prompt.value.trim();
    if (!text) return;
    let body;
    try {
      const parts = [{ type: "text", text }];
      for (const file of images.files) parts.push({ type: "image_url", image_url: { url: await readImage(file) } });
      const user = { role: "user", content: parts.length === 1 ? text : parts };
      body = { model: model.value, messages: [...(system.value.trim() ? [{ role: "system", content: system.value }] : []), ...messages, user] };
      if (temperature.value !== "") body.temperature = Number(temperature.value);
      if (maxTokens.value !== "") body.max_tokens = Number(maxTokens.value);
      const toolList = parseJson(tools.value, "tools");
      if (toolList) body.tools = toolList;
      const outSchema = parseJson(schema.value, "schema");
      if (outSchema) body.response_format = { type: "json_schema", json_schema: { name: outSchema.title || "output", schema: outSchema } };
      messages.push(user);
    } catch (e) {
      error.textContent = e.message;
      return;
    }
    prompt.value = "";
    images.value = "";
    log.append(h("div", { class: "msg user" }, h("strong", {}, "you: "), text));
    const answer = h("div", { class: "answer" });
    const stats = h("div", { class: "stats" }, "…");
    log.append(h("div", { class: "msg assistant" }, h("strong", {}, `${body.model}: `), answer, stats));
    send.disabled = true;
    try {
      const result = await streamChat(body, (soFar) => { answer.textContent = soFar; });
      if (result.toolCalls.length) answer.append(h("pre", {}, JSON.stringify(result.toolCalls, null, 2)));
      messages.push({ role: "assistant", content: result.text });
      stats.textContent = statsLine(result, models.prices[body.model]);
      stats.classList.add("done");
    } catch (e) {
      messages.pop();
      stats.textContent = "";
      error.textContent = e.message;
    } finally {
      send.disabled = false;
    }
  });
  prompt.addEventListener("keydown", (event) => { if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) send.click(); });

  root.append(
    h("h2", {}, "Playground"),
    h("div", { class: "row" }, h("label", {}, "Model", model), h("label", {}, "Temperature", temperature), h("label", {}, "Max tokens", maxTokens),
      h("label", {}, "Images", images)),
    h("details", {}, h("summary", {}, "System prompt, tools, structured output"),
      h("label", {}, "System prompt", system), h("label", {}, "Tools (JSON)", tools), h("label", {}, "Output schema (JSON Schema)", schema)),
    log, error,
    h("label", {}, "Message (Ctrl+Enter sends)", prompt),
    h("div", { class: "row" }, send, clear),
  );
}
