// The DCR API documentation page: plain JavaScript, no build step, no dependency. It renders the operations
// from the sandbox's OpenAPI document (/openapi.json) and shows the sandbox's code samples
// (/docs/api/samples, every language of the sample module). Everything it shows is set with textContent
// (never innerHTML), and it talks to its own origin only.
"use strict";

(() => {
  const MAX_DEPTH = 8;
  const state = { config: null, doc: null, samples: {}, language: null, values: {} };

  const { el, copyButton, getJson } = window.DcrPages; // static/pages.js, loaded first

  // Schemas -------------------------------------------------------------------------------------------

  // A local $ref (#/components/...) followed; null when it leads nowhere.
  function deref(node) {
    if (!node || typeof node.$ref !== "string" || !node.$ref.startsWith("#/")) return node;
    let target = state.doc;
    for (const part of node.$ref.slice(2).split("/")) {
      if (!target || typeof target !== "object") return null;
      target = target[decodeURIComponent(part.replace(/~1/g, "/").replace(/~0/g, "~"))];
    }
    return target || null;
  }

  const refName = (node) => (node && typeof node.$ref === "string" ? node.$ref.split("/").pop() : null);

  // allOf merged into one object schema (properties and required), for display.
  function flatten(schema) {
    schema = deref(schema);
    if (!schema || !Array.isArray(schema.allOf)) return schema;
    const merged = { ...schema, properties: { ...(schema.properties || {}) }, required: [...(schema.required || [])] };
    delete merged.allOf;
    for (const part of schema.allOf.map(flatten)) {
      if (!part) continue;
      Object.assign(merged.properties, part.properties || {});
      merged.required.push(...(part.required || []));
      if (!merged.type && part.type) merged.type = part.type;
      if (!merged.description && part.description) merged.description = part.description;
    }
    return merged;
  }

  function typeOf(raw) {
    const schema = flatten(raw);
    if (!schema) return "";
    const name = refName(raw);
    let type = Array.isArray(schema.type) ? schema.type.join(" | ") : schema.type || "";
    if (type === "array") type = `array of ${typeOf(schema.items) || "any"}`;
    else if (!type && (schema.oneOf || schema.anyOf)) type = (schema.oneOf || schema.anyOf).map(typeOf).join(" | ");
    if (name && (type === "object" || !type)) return name;
    return type || name || "any";
  }

  function constraints(schema) {
    const out = [];
    if (Array.isArray(schema.enum)) out.push(`one of: ${schema.enum.join(", ")}`);
    const items = flatten(schema.items);
    if (items && Array.isArray(items.enum)) out.push(`items one of: ${items.enum.join(", ")}`);
    if (schema.pattern) out.push(`pattern: ${schema.pattern}`);
    if (schema.format) out.push(`format: ${schema.format}`);
    if (schema.minLength !== undefined || schema.maxLength !== undefined) {
      out.push(`length: ${schema.minLength ?? 0}…${schema.maxLength ?? "∞"}`);
    }
    if (schema.contentMediaType) out.push(`content: ${schema.contentMediaType}`);
    return out.join(" · ");
  }

  // An object schema as a table of its properties; nested objects open in their own "Show schema".
  function schemaView(raw, depth) {
    const schema = flatten(raw);
    const box = el("div", { class: "schema" });
    if (!schema) return box;
    if (schema.description) box.append(el("p", { class: "fine", text: schema.description }));
    const target = schema.type === "array" ? flatten(schema.items) : schema;
    if (!target || !target.properties) {
      const note = constraints(schema);
      box.append(el("p", {}, el("code", { text: typeOf(raw) }), note ? ` — ${note}` : ""));
      return box;
    }
    const required = new Set(target.required || []);
    const rows = el("tbody");
    for (const [name, prop] of Object.entries(target.properties)) {
      const flat = flatten(prop) || {};
      const nested = flat.type === "object" || (flat.type === "array" && flatten(flat.items)?.properties);
      const cell = el("td", {}, flat.description ? el("div", { text: flat.description }) : null);
      const note = constraints(flat);
      if (note) cell.append(el("div", { class: "fine", text: note }));
      if (nested && flat !== target && depth < MAX_DEPTH) {
        cell.append(el("details", { class: "schema-toggle" }, el("summary", { text: "Show schema" }),
          schemaView(prop, depth + 1)));
      }
      rows.append(el("tr", {},
        el("td", {}, el("code", { text: name }), required.has(name) ? el("span", { class: "req", text: " required" }) : null),
        el("td", {}, el("code", { text: typeOf(prop) })), cell));
    }
    box.append(el("table", { class: "props" },
      el("thead", {}, el("tr", {}, el("th", { text: "name" }), el("th", { text: "type" }), el("th", { text: "description" }))),
      rows));
    return box;
  }

  function showSchema(raw, label) {
    return el("details", { class: "schema-toggle" }, el("summary", { text: label || "Show schema" }),
      schemaView(raw, 0));
  }

  // Samples -------------------------------------------------------------------------------------------

  function selectLanguage(key) {
    state.language = key;
    for (const tab of document.querySelectorAll(".samples .tab")) {
      tab.classList.toggle("active", tab.dataset.lang === key);
      tab.setAttribute("aria-selected", String(tab.dataset.lang === key));
    }
    for (const pane of document.querySelectorAll(".samples .sample")) pane.hidden = pane.dataset.lang !== key;
  }

  // The example request of one call, in every language (a tab each), with a copy button.
  function samplesView(key) {
    const box = el("div", { class: "samples", "data-example": key });
    box.append(el("h4", { text: "Example request" }));
    const tabs = el("div", { class: "tabs", role: "tablist" });
    for (const language of state.config.languages) {
      const tab = el("button", { type: "button", class: "tab", role: "tab", "data-lang": language.key,
        text: language.label });
      tab.addEventListener("click", () => selectLanguage(language.key));
      tabs.append(tab);
    }
    tabs.append(copyButton(() => box.querySelector(".sample:not([hidden])")));
    box.append(tabs);
    for (const language of state.config.languages) {
      box.append(el("pre", { class: "sample", "data-lang": language.key }, el("code", { text: "…" })));
    }
    return box;
  }

  function fillSamples() {
    for (const box of document.querySelectorAll(".samples")) {
      const example = state.samples[box.dataset.example];
      for (const pane of box.querySelectorAll(".sample")) {
        pane.firstChild.textContent = example ? example.samples[pane.dataset.lang] || "" : "(no sample)";
      }
    }
    selectLanguage(state.language);
  }

  async function loadSamples(values) {
    const data = values
      ? await getJson("/docs/api/samples", {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify({ values }),
      })
      : await getJson("/docs/api/samples", { headers: { Accept: "application/json" } });
    state.samples = Object.fromEntries(data.examples.map((example) => [example.key, example]));
    fillSamples();
  }

  function playgroundLink() {
    if (!state.config.playground) return null;
    return el("a", { class: "try", href: state.config.playground, text: "Try it on the Playground" });
  }

  // Operations ----------------------------------------------------------------------------------------

  function paramsTable(title, params) {
    if (!params.length) return null;
    const rows = params.map((p) => el("tr", {},
      el("td", {}, el("code", { text: p.name }), p.required ? el("span", { class: "req", text: " required" }) : null),
      el("td", {}, el("code", { text: typeOf(p.schema) })),
      el("td", {}, p.description ? el("div", { text: p.description }) : null,
        p.schema && constraints(flatten(p.schema)) ? el("div", { class: "fine", text: constraints(flatten(p.schema)) }) : null)));
    return el("div", { class: "params" }, el("h4", { text: title }), el("table", { class: "props" }, el("tbody", {}, ...rows)));
  }

  // A media type's example (`example`) or named examples (`examples`: recorded from real sandbox exchanges).
  function examplesView(content) {
    const shown = (value) => (typeof value === "string" ? value : JSON.stringify(value, null, 2));
    if (content.example !== undefined) return [el("h5", { text: "Example" }), el("pre", { text: shown(content.example) })];
    return Object.entries(content.examples || {}).flatMap(([name, example]) => {
      const item = deref(example) || {};
      return [el("h5", { class: "example", text: `Example: ${item.summary || name}` }), el("pre", { text: shown(item.value) })];
    });
  }

  function bodyView(requestBody) {
    if (!requestBody) return null;
    const body = deref(requestBody);
    const box = el("div", { class: "params" }, el("h4", { text: "Request body" }),
      el("p", {}, body.required ? el("span", { class: "req", text: "required " }) : "optional ",
        body.description || ""));
    for (const [media, content] of Object.entries(body.content || {})) {
      const schema = flatten(content.schema) || {};
      box.append(el("p", {}, el("code", { text: media }), " — ", el("code", { text: typeOf(content.schema) }),
        schema.description ? ` — ${schema.description}` : ""));
      const details = showSchema(schema.contentSchema || content.schema,
        schema.contentSchema ? "Show schema (the claims of the signed request)" : "Show schema");
      details.append(...examplesView(content));
      box.append(details);
    }
    return box;
  }

  function responsesView(responses) {
    const list = el("div", { class: "responses" }, el("h4", { text: "Responses" }));
    for (const [code, raw] of Object.entries(responses || {})) {
      const response = deref(raw);
      const item = el("div", { class: "response", "data-status": code },
        el("span", { class: `code c${code[0]}`, text: code }), el("span", { text: response.description || "" }));
      const headers = Object.keys(response.headers || {});
      if (headers.length) item.append(el("div", { class: "fine", text: `headers: ${headers.join(", ")}` }));
      for (const [media, content] of Object.entries(response.content || {})) {
        const details = showSchema(content.schema, `Show schema (${media}: ${typeOf(content.schema)})`);
        details.append(...examplesView(content));
        item.append(details);
      }
      if (!response.content) item.append(el("div", { class: "fine", text: "This operation returns no content." }));
      list.append(item);
    }
    return list;
  }

  function operationView(method, path, op) {
    const params = (op.parameters || []).map(deref).filter(Boolean);
    const id = op.operationId || `${method}-${path}`;
    const security = (op.security || []).flatMap((req) => Object.keys(req));
    return el("section", { class: "card operation", id, "data-operation": id },
      el("h2", { text: op.summary || id }),
      el("p", { class: "endpoint" }, el("span", { class: `method ${method}`, text: method.toUpperCase() }),
        el("code", { text: path })),
      el("h4", { text: "Description" }), el("p", { text: op.description || "" }),
      security.length ? el("p", { class: "fine", text: `Security: ${security.join(" + ")}` }) : null,
      paramsTable("Header parameters", params.filter((p) => p.in === "header")),
      paramsTable("Path parameters", params.filter((p) => p.in === "path")),
      bodyView(op.requestBody),
      responsesView(op.responses),
      samplesView(id),
      el("p", {}, playgroundLink()));
  }

  function render() {
    const doc = state.doc;
    document.getElementById("title").textContent = doc.info.title;
    document.getElementById("summary").textContent = doc.info.summary || "";
    document.getElementById("description").textContent = doc.info.description || "";
    document.title = `${doc.info.title} · API documentation · dcr-gateway sandbox`;
    const toc = document.getElementById("toc");
    const operations = document.getElementById("operations");
    for (const [path, item] of Object.entries(doc.paths || {})) {
      for (const [method, op] of Object.entries(item)) {
        if (!op || typeof op !== "object" || !op.responses) continue;
        const view = operationView(method, path, op);
        operations.append(view);
        toc.append(el("li", {}, el("a", { href: `#${view.id}` },
          el("span", { class: `method ${method}`, text: method.toUpperCase() }), ` ${path}`),
          el("div", { class: "fine", text: op.summary || "" })));
      }
    }
    const tokens = document.getElementById("token-examples");
    for (const example of Object.values(state.samples)) {
      if (example.operation_id) continue;
      tokens.append(el("div", { class: "token-example" }, el("h3", { text: example.title }),
        el("p", { class: "endpoint" }, el("span", { class: "method post", text: example.method }),
          el("code", { text: example.url })),
        samplesView(example.key)));
    }
  }

  function valuesForm() {
    const form = document.getElementById("values");
    for (const [name, variable] of Object.entries(state.config.variables)) {
      form.append(el("label", {}, el("span", { class: "name" }, el("code", { text: variable.placeholder })),
        el("input", { name, type: variable.secret ? "password" : "text", spellcheck: "false",
          placeholder: variable.description, title: variable.description })));
    }
    const problem = document.getElementById("values-problem");
    document.getElementById("fill").addEventListener("click", async () => {
      problem.hidden = true;
      const values = {};
      for (const input of form.querySelectorAll("input")) {
        if (input.value.trim()) values[input.name] = input.value.trim();
      }
      try {
        await loadSamples(values);
      } catch (err) {
        problem.textContent = err.message;
        problem.hidden = false;
      }
    });
    // The table of contents opens the section it points to.
    document.getElementById("toc-values").addEventListener("click", () => {
      document.getElementById("your-values").open = true;
    });
    document.getElementById("clear").addEventListener("click", async () => {
      form.reset();
      problem.hidden = true;
      await loadSamples(null);
    });
  }

  async function start() {
    const problem = document.getElementById("page-problem");
    try {
      state.config = await getJson("/docs/api/config", { headers: { Accept: "application/json" } });
      if (!state.config.available) throw new Error(state.config.problem);
      state.language = state.config.languages[0].key;
      state.doc = await getJson(state.config.openapi.json, { headers: { Accept: "application/json" } });
      await loadSamples(null);
    } catch (err) {
      problem.textContent = `The documentation cannot be shown: ${err.message}`;
      problem.hidden = false;
      return;
    }
    for (const node of document.querySelectorAll("[data-config]")) node.textContent = state.config[node.dataset.config];
    for (const node of document.querySelectorAll("[data-origin]")) node.textContent = window.location.origin;
    const token = Object.values(state.samples).find((e) => !e.operation_id);
    for (const node of document.querySelectorAll("[data-token-url]")) node.textContent = token ? token.url : "";
    if (state.config.playground) {
      for (const link of document.querySelectorAll("#link-playground, .playground-link")) link.hidden = false;
    }
    render();
    valuesForm();
    fillSamples();
    document.body.dataset.ready = "true";
  }

  document.addEventListener("DOMContentLoaded", start);
})();
