// The DCR playground: plain JavaScript, no build step, no dependency. Everything it shows is set with
// textContent (never innerHTML), and it talks to its own origin only: calls to the gateway go through the
// sandbox's /playground/api/send, which forwards them to the gateway's public URL.
"use strict";

(() => {
  const JSON_HEADERS = { "Content-Type": "application/json", Accept: "application/json" };
  const ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
  const JWS_PATTERN = /^[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

  const state = {
    config: null,
    app: null, // {client_id, client_secret}
    appToken: null,
    session: null, // {session_id, kid, alg, jwks_uri, jwks}
    ssa: null,
    softwareId: null,
    requestJws: null,
    client: null, // the 201 body
    clientToken: null,
    snippetLang: null, // the key of the snippet tab chosen last
  };

  // DOM helpers --------------------------------------------------------------------------------------

  const { el, copyButton, getJson } = window.DcrPages; // static/pages.js, loaded first

  const stepNode = (name) => document.querySelector(`[data-step="${name}"]`);

  // JOSE helpers (display only: the signatures are checked by the gateway) ----------------------------

  function b64urlText(part) {
    let s = part.replace(/-/g, "+").replace(/_/g, "/");
    while (s.length % 4) s += "=";
    const binary = atob(s);
    return new TextDecoder().decode(Uint8Array.from(binary, (c) => c.charCodeAt(0)));
  }

  function decodeJws(token) {
    if (typeof token !== "string" || !JWS_PATTERN.test(token)) return null;
    const parts = token.split(".");
    try {
      const header = JSON.parse(b64urlText(parts[0]));
      const payload = JSON.parse(b64urlText(parts[1]));
      if (!header || typeof header !== "object" || typeof header.alg !== "string") return null;
      return { header, payload, parts };
    } catch (_) {
      return null;
    }
  }

  function uuid4() {
    const b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }

  const now = () => Math.floor(Date.now() / 1000);
  const formEncode = (s) => encodeURIComponent(s).replace(/%20/g, "+"); // RFC 6749 §2.3.1
  const pretty = (value) => JSON.stringify(value, null, 2);

  function tamper(token) {
    // Change one character in the middle of the signature (the last one may only hold padding bits).
    const parts = token.split(".");
    const sig = parts[2];
    const i = Math.floor(sig.length / 2);
    parts[2] = sig.slice(0, i) + (sig[i] === "A" ? "B" : "A") + sig.slice(i + 1);
    return parts.join(".");
  }

  // Talking to the sandbox ---------------------------------------------------------------------------

  const playgroundApi = (path, options) => getJson(path, options, "the playground refused: ");

  // One call through the playground's proxy: returns {request, response, snippets}.
  async function send(target, method, path, headers, body) {
    return playgroundApi("/playground/api/send", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ target, method, path, headers, body: body === undefined ? null : body }),
    });
  }

  function responseJson(exchange) {
    try {
      return JSON.parse(exchange.response.body);
    } catch (_) {
      return null;
    }
  }

  // Rendering an exchange ----------------------------------------------------------------------------

  function headerValue(headers, name) {
    const found = headers.find(([n]) => n.toLowerCase() === name.toLowerCase());
    return found ? found[1] : null;
  }

  function findJws(exchange) {
    const found = [];
    const seen = new Set();
    const add = (where, token) => {
      if (seen.has(token)) return;
      const decoded = decodeJws(token);
      if (!decoded) return;
      seen.add(token);
      found.push({ where, token, ...decoded });
      walk(`${where} → `, decoded.payload, "");
    };
    const walk = (prefix, value, path) => {
      if (typeof value === "string") add(prefix + path, value);
      else if (Array.isArray(value)) value.forEach((v, i) => walk(prefix, v, `${path}[${i}]`));
      else if (value && typeof value === "object") {
        for (const [k, v] of Object.entries(value)) walk(prefix, v, path ? `${path}.${k}` : k);
      }
    };
    const req = exchange.request;
    const auth = headerValue(req.headers, "Authorization");
    if (auth && auth.startsWith("Bearer ")) add("request Authorization (bearer token)", auth.slice(7));
    if (req.body) {
      const type = (headerValue(req.headers, "Content-Type") || "").split(";")[0].trim();
      if (type === "application/x-www-form-urlencoded") {
        for (const [k, v] of new URLSearchParams(req.body)) add(`request form ${k}`, v);
      } else if (type === "application/json") {
        try {
          walk("request body ", JSON.parse(req.body), "");
        } catch (_) { /* not JSON: nothing to decode */ }
      } else {
        add("request body", req.body.trim());
      }
    }
    if (exchange.response) {
      const json = responseJson(exchange);
      if (json) walk("response ", json, "");
    }
    return found;
  }

  function compactJws(token, tampered) {
    const parts = token.split(".");
    return el("pre", { class: "compact" },
      el("span", { class: "jws-h", text: parts[0] }), ".",
      el("span", { class: "jws-p", text: parts[1] }), ".",
      el("span", { class: tampered ? "jws-s tampered" : "jws-s", text: parts[2] }));
  }

  function jwsView(item, note) {
    return el("div", { class: "jws" },
      el("h4", { text: `JWS: ${item.where}` }),
      el("div", { class: "jws-cols" },
        el("div", {}, el("h5", { text: "compact" }), compactJws(item.token, Boolean(note)),
          note ? el("p", { class: "fine", text: note }) : null),
        el("div", {}, el("h5", { text: "header" }), el("pre", { class: "decoded", text: pretty(item.header) }),
          el("h5", { text: "claims" }), el("pre", { class: "decoded", text: pretty(item.payload) }))));
  }

  function statusClass(status) {
    if (status >= 200 && status < 300) return "ok";
    if (status >= 400) return "refused";
    return "other";
  }

  function requestText(req) {
    const url = new URL(req.url);
    const lines = [`${req.method} ${url.pathname}${url.search} HTTP/1.1`];
    if (!headerValue(req.headers, "Host")) lines.push(`Host: ${url.host}`);
    for (const [name, value] of req.headers) lines.push(`${name}: ${value}`);
    return lines.join("\n");
  }

  function bodyText(body, contentType) {
    if (!body) return "(no body)";
    if ((contentType || "").includes("json")) {
      try {
        return pretty(JSON.parse(body));
      } catch (_) { /* show as sent */ }
    }
    return body;
  }

  // How to run a saved sample, as the config's `languages` say (samples.LANGUAGES on the server).
  function runHint(lang) {
    return lang.file ? `Save as ${lang.file}, then run: ${lang.run}` : `To run: ${lang.run}`;
  }

  // The call as code in the languages the config lists (the bank page's eight, in its order); the tab chosen
  // last is the one the next exchanges open with.
  function snippetsView(snippets) {
    const languages = state.config.languages.filter((lang) => typeof snippets[lang.key] === "string");
    if (!languages.some((lang) => lang.key === state.snippetLang)) state.snippetLang = languages[0].key;
    const tabs = el("div", { class: "tabs" });
    const hint = el("p", { class: "run-hint fine" });
    const panes = [];
    for (const lang of languages) {
      const chosen = lang.key === state.snippetLang;
      const pane = el("pre", { class: "snippet", "data-lang": lang.key, hidden: !chosen },
        el("code", { text: snippets[lang.key] }));
      const tab = el("button", { type: "button", class: chosen ? "tab active" : "tab", "data-lang": lang.key,
        text: lang.label });
      tab.addEventListener("click", () => {
        for (const p of panes) p.hidden = p !== pane;
        for (const t of tabs.querySelectorAll(".tab")) t.classList.toggle("active", t === tab);
        hint.textContent = runHint(lang);
        state.snippetLang = lang.key;
      });
      if (chosen) hint.textContent = runHint(lang);
      tabs.append(tab);
      panes.push(pane);
    }
    tabs.append(copyButton(() => panes.find((p) => !p.hidden)));
    const title = `The same call as code: ${languages.map((lang) => lang.label).join(" · ")}`;
    return el("details", { class: "code" }, el("summary", { text: title }), tabs, hint, ...panes);
  }

  function exchangeView(exchange, title) {
    const req = exchange.request;
    const res = exchange.response;
    const json = responseJson(exchange);
    const status = el("span", { class: `status ${statusClass(res.status)}`, text: `${res.status} ${res.reason}` });
    // The refusal sits in the summary line, so it stays visible when the exchange is collapsed.
    const refusal = res.status >= 400 && json && json.error
      ? el("span", { class: "refusal" }, "Refused: ", el("strong", { class: "error-code", text: json.error }),
        json.error_description ? ` — ${json.error_description}` : "")
      : null;
    const summary = el("summary", { class: "line" },
      title ? el("span", { class: "title", text: title }) : null,
      el("span", { class: "method", text: req.method }), el("span", { class: "url", text: req.url }),
      el("span", { class: "arrow", text: "→" }), status, refusal);
    const requestPane = el("div", { class: "pane" }, el("h3", { text: "Request" }),
      el("pre", { class: "headers", text: requestText(req) }),
      el("pre", { class: "body", text: bodyText(req.body, headerValue(req.headers, "Content-Type")) }));
    const responseLines = [`HTTP/1.1 ${res.status} ${res.reason}`, ...res.headers.map(([n, v]) => `${n}: ${v}`)];
    const responsePane = el("div", { class: "pane" }, el("h3", { text: "Response" }),
      el("pre", { class: "headers", text: responseLines.join("\n") }),
      el("pre", { class: "body", text: bodyText(res.body, headerValue(res.headers, "Content-Type")) }));
    const node = el("details", { class: "exchange", open: true, "data-status": String(res.status) },
      summary, el("div", { class: "columns" }, requestPane, responsePane),
      ...findJws(exchange).map((item) => jwsView(item)), snippetsView(exchange.snippets));
    return node;
  }

  // Steps --------------------------------------------------------------------------------------------

  function show(step, exchange, title) {
    // Collapse what came before, so the page reads as a list of calls with the newest one open.
    for (const older of document.querySelectorAll(".exchange[open]")) older.open = false;
    const view = exchangeView(exchange, title);
    step.querySelector(".exchanges").append(view);
    const badge = step.querySelector(".badge");
    badge.textContent = `${exchange.response.status} ${exchange.response.reason}`;
    badge.className = `badge ${statusClass(exchange.response.status)}`;
    return exchange.response.status;
  }

  async function signWithSession(step, claims, title) {
    const exchange = await send("sandbox", "POST", `/playground/api/sessions/${state.session.session_id}/sign`,
      JSON_HEADERS, JSON.stringify({ claims }));
    show(step, exchange, title);
    const json = responseJson(exchange);
    if (exchange.response.status !== 200 || !json) throw new Error("the sandbox did not sign the claims");
    return json.jws;
  }

  function registrationClaims(scope, httpRedirect) {
    const alg = state.session.alg;
    const issued = now();
    const redirect = state.config.redirect_uri;
    return {
      iss: state.softwareId,
      iat: issued,
      exp: issued + 300,
      aud: state.config.audience,
      jti: uuid4(),
      software_id: state.softwareId,
      redirect_uris: [httpRedirect ? redirect.replace(/^https:/, "http:") : redirect],
      token_endpoint_auth_method: "private_key_jwt",
      token_endpoint_auth_signing_alg: alg,
      grant_types: ["client_credentials"],
      scope,
      software_statement: state.ssa,
      application_type: "web",
      id_token_signed_response_alg: alg,
      request_object_signing_alg: alg,
    };
  }

  function fillClaims() {
    if (!state.ssa || !state.session) return;
    const claims = registrationClaims("accounts payments", document.getElementById("http-redirect").checked);
    document.getElementById("claims").value = pretty(claims);
  }

  const clientPath = () => `${state.config.registration_path}/${state.client.client_id}`;
  const clientHeaders = () => ({
    Authorization: `Bearer ${state.clientToken}`,
    client_id: state.client.client_id,
    Accept: "application/json",
  });

  const steps = {
    async app(step) {
      const x = await send("sandbox", "POST", "/sandbox/apps", JSON_HEADERS, JSON.stringify({ name: "playground" }));
      if (show(step, x) === 201) state.app = responseJson(x);
    },

    async token(step) {
      const basic = btoa(`${formEncode(state.app.client_id)}:${formEncode(state.app.client_secret)}`);
      const x = await send("gateway", "POST", state.config.token_path, {
        Authorization: `Basic ${basic}`,
        "Content-Type": "application/x-www-form-urlencoded",
        Accept: "application/json",
      }, "grant_type=client_credentials");
      if (show(step, x) === 200) state.appToken = responseJson(x).access_token;
    },

    async key(step) {
      const alg = document.getElementById("alg").value;
      const x = await send("sandbox", "POST", "/playground/api/sessions", JSON_HEADERS, JSON.stringify({ alg }));
      if (show(step, x) === 201) {
        state.session = responseJson(x);
        fillClaims();
      }
    },

    async ssa(step) {
      const claims = {
        software_jwks_endpoint: state.session.jwks_uri,
        software_redirect_uris: [state.config.redirect_uri],
        software_roles: ["AISP", "PISP"],
        software_client_name: "Playground TPP app",
        org_name: "Playground TPP Ltd",
      };
      const x = await send("sandbox", "POST", "/sandbox/ssa", JSON_HEADERS, JSON.stringify(claims));
      if (show(step, x) === 201) {
        state.ssa = responseJson(x).software_statement;
        state.softwareId = decodeJws(state.ssa).payload.software_id;
        fillClaims();
      }
    },

    async request(step) {
      let claims;
      try {
        claims = JSON.parse(document.getElementById("claims").value);
      } catch (err) {
        throw new Error(`the claims are not valid JSON: ${err.message}`);
      }
      if (!claims || typeof claims !== "object" || Array.isArray(claims)) throw new Error("the claims must be a JSON object");
      const issued = now();
      Object.assign(claims, { iat: issued, exp: issued + 300, jti: uuid4() });
      document.getElementById("claims").value = pretty(claims);
      const signed = await signWithSession(step, claims);
      const tampered = document.getElementById("tamper").checked;
      state.requestJws = tampered ? tamper(signed) : signed;
      const decoded = decodeJws(state.requestJws);
      const box = step.querySelector(".to-send");
      box.replaceChildren(el("h3", { text: "The request to send" }),
        jwsView({ where: "registration request", token: state.requestJws, ...decoded },
          tampered ? "Tampered: one character of the signature was changed after signing." : null));
      box.hidden = false;
    },

    async register(step) {
      const x = await send("gateway", "POST", state.config.registration_path, {
        Authorization: `Bearer ${state.appToken}`,
        client_id: state.app.client_id,
        "Content-Type": "application/jose",
        Accept: "application/json",
      }, state.requestJws);
      if (show(step, x) === 201) {
        state.client = responseJson(x);
        state.clientToken = null;
      }
    },

    async "client-token"(step) {
      const id = state.client.client_id;
      const issued = now();
      const assertion = await signWithSession(step, {
        iss: id, sub: id, aud: state.config.token_endpoint, iat: issued, exp: issued + 300, jti: uuid4(),
      }, "sign the assertion");
      const form = new URLSearchParams({
        grant_type: "client_credentials",
        client_assertion_type: ASSERTION_TYPE,
        client_assertion: assertion,
      }).toString();
      const x = await send("gateway", "POST", state.config.token_path, {
        "Content-Type": "application/x-www-form-urlencoded",
        Accept: "application/json",
      }, form);
      if (show(step, x, "token") === 200) state.clientToken = responseJson(x).access_token;
    },

    async read(step) {
      show(step, await send("gateway", "GET", clientPath(), clientHeaders()));
    },

    async update(step) {
      const scope = document.getElementById("update-scope").value.trim();
      const signed = await signWithSession(step, registrationClaims(scope, false), "sign the update");
      const x = await send("gateway", "PUT", clientPath(), {
        ...clientHeaders(), "Content-Type": "application/jose",
      }, signed);
      show(step, x, "update");
    },

    async delete(step) {
      show(step, await send("gateway", "DELETE", clientPath(), clientHeaders()));
    },

    async reread(step) {
      show(step, await send("gateway", "GET", clientPath(), clientHeaders()));
    },
  };

  const ready = {
    app: () => true,
    token: () => Boolean(state.app),
    key: () => true,
    ssa: () => Boolean(state.session),
    request: () => Boolean(state.session && state.ssa),
    register: () => Boolean(state.requestJws && state.appToken && state.app),
    "client-token": () => Boolean(state.client && state.session),
    read: () => Boolean(state.client && state.clientToken),
    update: () => Boolean(state.client && state.clientToken && state.ssa),
    delete: () => Boolean(state.client && state.clientToken),
    reread: () => Boolean(state.client && state.clientToken),
  };

  function short(value) {
    return value.length > 44 ? `${value.slice(0, 20)}…${value.slice(-12)} (${value.length} chars)` : value;
  }

  function refresh() {
    for (const button of document.querySelectorAll("button[data-action]")) {
      const step = button.closest(".step");
      button.disabled = !state.config || step.classList.contains("busy") || !ready[button.dataset.action]();
    }
    const facts = [
      ["app client_id", state.app && state.app.client_id],
      ["app client_secret", state.app && state.app.client_secret],
      ["app access token", state.appToken],
      ["TPP key kid", state.session && `${state.session.kid} (${state.session.alg})`],
      ["TPP jwks_uri", state.session && state.session.jwks_uri],
      ["software_id", state.softwareId],
      ["registered client_id", state.client && state.client.client_id],
      ["client access token", state.clientToken],
    ];
    const list = document.getElementById("facts");
    list.replaceChildren();
    for (const [name, value] of facts) {
      list.append(el("dt", { text: name }),
        el("dd", { "data-fact": name, title: value || null }, value ? el("code", { text: short(value) }) : "—"));
    }
  }

  async function run(name) {
    const step = stepNode(name);
    const problem = step.querySelector(".problem");
    problem.hidden = true;
    step.classList.add("busy");
    refresh();
    try {
      await steps[name](step);
    } catch (err) {
      problem.textContent = err.message;
      problem.hidden = false;
    } finally {
      step.classList.remove("busy");
      refresh();
    }
  }

  async function start() {
    for (const button of document.querySelectorAll("button[data-action]")) {
      button.addEventListener("click", () => run(button.dataset.action));
    }
    document.getElementById("http-redirect").addEventListener("change", (event) => {
      try {
        const claims = JSON.parse(document.getElementById("claims").value);
        const redirect = state.config.redirect_uri;
        claims.redirect_uris = [event.target.checked ? redirect.replace(/^https:/, "http:") : redirect];
        document.getElementById("claims").value = pretty(claims);
      } catch (_) {
        fillClaims();
      }
    });
    refresh();
    try {
      state.config = await playgroundApi("/playground/api/config", { headers: { Accept: "application/json" } });
    } catch (err) {
      const problem = document.getElementById("page-problem");
      problem.textContent = err.message;
      problem.hidden = false;
      return;
    }
    for (const node of document.querySelectorAll("[data-config]")) node.textContent = state.config[node.dataset.config];
    document.body.dataset.ready = "true";
    refresh();
  }

  document.addEventListener("DOMContentLoaded", start);
})();
