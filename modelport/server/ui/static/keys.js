// Keys: the gateway keys with their spend; create (the secret is shown once) and revoke.
import { api, h, money } from "/ui/app.js";

export async function render(root) {
  const name = h("input", { id: "key-name", required: true, "aria-label": "key name" });
  const rpm = h("input", { type: "number", min: 1, size: 6, "aria-label": "rpm" });
  const tpm = h("input", { type: "number", min: 1, size: 8, "aria-label": "tpm" });
  const budget = h("input", { type: "number", min: 0.01, step: 0.01, size: 6, "aria-label": "budget" });
  const models = h("input", { placeholder: "openai/*, local/smollm2", "aria-label": "models" });
  const admin = h("input", { type: "checkbox", "aria-label": "admin" });
  const created = h("div", { id: "key-created" });
  const error = h("p", { class: "error" });
  const body = h("tbody");

  const load = async () => {
    const { keys } = await api("keys");
    body.replaceChildren(...keys.map((k) => h("tr", { class: "key-row", "data-name": k.name },
      h("td", {}, k.name, k.admin ? " (admin)" : ""), h("td", { class: "hide-narrow" }, k.models.join(", ") || "all"),
      h("td", { class: "hide-narrow" }, [k.rpm && `${k.rpm} rpm`, k.tpm && `${k.tpm} tpm`, k.budget && `budget ${money(k.budget)}`].filter(Boolean).join(" · ") || "none"),
      h("td", { class: "num" }, k.requests), h("td", { class: "num" }, money(k.cost)),
      h("td", {}, h("button", { class: "revoke", onclick: async () => {
        if (!confirm(`Revoke ${k.name}? Callers using it stop at once.`)) return;
        try { await api(`keys/${encodeURIComponent(k.name)}`, { method: "DELETE" }); await load(); } catch (e) { error.textContent = e.message; }
      } }, "Revoke")))));
    if (!keys.length) {
      body.append(h("tr", { id: "keys-empty" }, h("td", { colspan: 6, class: "muted" },
        "No gateway keys yet. A gateway on this machine without --auth needs none; create one to give a program or a person its own key, limits and spend.")));
    }
  };
  const form = h("form", { class: "row", id: "key-form" }, h("label", {}, "Name", name), h("label", {}, "RPM", rpm), h("label", {}, "TPM", tpm),
    h("label", {}, "Budget $", budget), h("label", {}, "Models", models), h("label", {}, "Admin", admin), h("button", { class: "primary", type: "submit" }, "Create key"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    const number = (el) => (el.value === "" ? undefined : Number(el.value));
    try {
      const made = await api("keys", { method: "POST", body: { name: name.value, rpm: number(rpm), tpm: number(tpm), budget: number(budget),
        models: models.value.split(",").map((m) => m.trim()).filter(Boolean), admin: admin.checked } });
      created.replaceChildren(h("p", {}, `Key ${made.name}: copy it now, it is never shown again.`), h("div", { class: "secret", id: "new-secret" }, made.key),
        h("button", { onclick: () => created.replaceChildren() }, "Done"));
      form.reset();
      await load();
    } catch (e) {
      error.textContent = e.message;
    }
  });
  root.append(h("h2", {}, "Gateway keys"), form, created, error,
    h("div", { class: "scroll" }, h("table", { id: "key-table" }, h("thead", {}, h("tr", {}, ...["name", "models", "limits", "requests", "spend", ""].map((n) => h("th", {}, n)))), body)));
  await load();
}
