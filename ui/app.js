// px dashboard: plain JavaScript, no build step, nothing from a CDN. Everything it does goes through
// pxadmind's JSON API (the same one pxctl uses), authenticated by the session cookie, with the
// session's CSRF token on every change. Text from the API is only ever put in the page as text
// (textContent), never as markup.
"use strict";

const state = { me: null, csrf: "" };

// ---- small helpers ----

function h(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === false || v === null || v === undefined) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const kid of kids.flat()) {
    if (kid === null || kid === undefined || kid === false) continue;
    e.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return e;
}

class ApiError extends Error {
  constructor(status, err) {
    super((err && err.message) || "HTTP " + status);
    this.status = status;
    this.field = (err && err.field) || "";
    this.info = err || {};
  }
}

async function api(method, path, body, version) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && state.csrf) headers["X-CSRF-Token"] = state.csrf;
  if (version) headers["If-Match"] = '"' + version + '"';
  const r = await fetch(path, {
    method, headers, credentials: "same-origin", body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch (e) { data = null; }
  }
  if (r.status === 401 && !path.startsWith("/v1/session")) {
    state.me = null;
    state.csrf = "";
    go("#/login", "Your session ended: log in again.");
  }
  if (!r.ok) throw new ApiError(r.status, data && data.error ? data.error : { message: text || r.statusText });
  return data;
}

function toast(msg) {
  const t = document.getElementById("toast");
  t.textContent = msg;
  t.classList.add("show");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => t.classList.remove("show"), 2500);
}

let pendingNotice = "";
function go(hash, notice) {
  pendingNotice = notice || "";
  if (location.hash === hash) render();
  else location.hash = hash;
}

function main() { return document.getElementById("main"); }

function screen(title, ...kids) {
  const m = main();
  m.replaceChildren(h("h1", { text: title }));
  if (pendingNotice) m.append(h("div", { class: "banner info", role: "status", text: pendingNotice }));
  pendingNotice = "";
  m.append(...kids);
  document.title = title + " · px";
  return m;
}

function banner(err) {
  return h("div", { class: "banner", role: "alert" }, err instanceof ApiError && err.field
    ? err.field + ": " + err.message : err.message || String(err));
}

const canWrite = () => state.me && state.me.role === "admin";

// A labelled field: {name, label, type, value, hint, options, rows}.
function field(f) {
  const id = "f-" + f.name;
  let input;
  if (f.type === "select") {
    input = h("select", { id, name: f.name }, f.options.map((o) => h("option", { value: o, selected: o === f.value }, o)));
  } else if (f.type === "textarea") {
    input = h("textarea", { id, name: f.name, rows: f.rows || 3 });
    input.value = f.value || "";
  } else if (f.type === "checkbox") {
    input = h("input", { id, name: f.name, type: "checkbox", checked: !!f.value });
    return h("div", { class: "field", "data-field": f.name },
      h("label", { class: "inline", for: id }, input, f.label), f.hint ? h("p", { class: "hint", text: f.hint }) : null);
  } else {
    input = h("input", { id, name: f.name, type: f.type || "text", autocomplete: f.autocomplete || "off" });
    input.value = f.value === undefined || f.value === null ? "" : String(f.value);
    if (f.readonly) input.readOnly = true;
  }
  if (f.hint) input.setAttribute("aria-describedby", id + "-hint");
  return h("div", { class: "field", "data-field": f.name }, h("label", { for: id, text: f.label }), input,
    f.hint ? h("p", { class: "hint", id: id + "-hint", text: f.hint }) : null);
}

function clearErrors(form) {
  form.querySelectorAll(".field-error, .banner").forEach((e) => e.remove());
  form.querySelectorAll("[aria-invalid]").forEach((e) => e.removeAttribute("aria-invalid"));
}

// Shows an API error next to the field it names ("hosts[1]" → the hosts field), else above the form.
function showError(form, err) {
  clearErrors(form);
  const base = (err.field || "").replace(/[[.].*$/, "");
  const box = base && form.querySelector('[data-field="' + CSS.escape(base) + '"]');
  if (box && err.status === 422) {
    const input = box.querySelector("input, select, textarea");
    const id = "err-" + base;
    input.setAttribute("aria-invalid", "true");
    input.setAttribute("aria-describedby", id);
    box.append(h("p", { class: "field-error", id, role: "alert", text: err.field + ": " + err.message }));
    input.focus();
    return;
  }
  form.prepend(banner(err));
}

const lines = (s) => s.split(/[\n,]+/).map((x) => x.trim()).filter(Boolean);

function table(headers, rows) {
  return h("div", { class: "table-wrap" }, h("table", {},
    h("thead", {}, h("tr", {}, headers.map((x) => h("th", { scope: "col", class: x.opt ? "opt" : null, text: x.t || x })))),
    h("tbody", {}, rows)));
}

// Two JSON values as a line diff (longest common subsequence of their pretty forms).
function diff(before, after) {
  const a = before === null || before === undefined ? [] : JSON.stringify(before, null, 2).split("\n");
  const b = after === null || after === undefined ? [] : JSON.stringify(after, null, 2).split("\n");
  const n = a.length, m = b.length, L = Array.from({ length: n + 1 }, () => new Int32Array(m + 1));
  for (let i = n - 1; i >= 0; i--) for (let j = m - 1; j >= 0; j--)
    L[i][j] = a[i] === b[j] ? L[i + 1][j + 1] + 1 : Math.max(L[i + 1][j], L[i][j + 1]);
  const out = h("pre", { class: "diff" });
  let i = 0, j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && a[i] === b[j]) { out.append("  " + a[i] + "\n"); i++; j++; }
    else if (j < m && (i === n || L[i][j + 1] >= L[i + 1][j])) { out.append(h("span", { class: "diff-add", text: "+ " + b[j] + "\n" })); j++; }
    else { out.append(h("span", { class: "diff-del", text: "- " + a[i] + "\n" })); i++; }
  }
  return out;
}

// An inline "are you sure" in place of a button: the second click does it.
function confirmButton(label, question, action) {
  const b = h("button", { type: "button", class: "danger", text: label });
  b.addEventListener("click", () => {
    const box = h("span", { class: "confirm", role: "group", "aria-label": question }, question + " ",
      h("button", { type: "button", class: "danger", text: "Yes, " + label.toLowerCase(), onclick: action }),
      h("button", { type: "button", class: "ghost", text: "Cancel", onclick: () => box.replaceWith(b) }));
    b.replaceWith(box);
    box.querySelector("button").focus();
  });
  return b;
}

// ---- session ----

async function loadMe() {
  try {
    const me = await api("GET", "/v1/session");
    state.me = me;
    state.csrf = me.csrf;
    return true;
  } catch (e) {
    state.me = null;
    go(e.info && e.info.setup_required ? "#/setup" : "#/login");
    return false;
  }
}

function setupScreen() {
  const form = h("form", { class: "card narrow", "aria-label": "Create the first admin" },
    h("p", { class: "muted", text: "First run: pxadmind printed a setup token in its log. It creates the first admin account, once." }),
    field({ name: "token", label: "Setup token", autocomplete: "off" }),
    field({ name: "user", label: "Admin user name", autocomplete: "username" }),
    field({ name: "password", label: "Password (10 characters or more)", type: "password", autocomplete: "new-password" }),
    h("div", { class: "row" }, h("button", { type: "submit", text: "Create admin" })));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const me = await api("POST", "/v1/session/setup", {
        token: form.elements["token"].value.trim(), user: form.elements["user"].value.trim(), password: form.elements["password"].value,
      });
      state.me = me;
      state.csrf = me.csrf;
      go("#/routes", "Welcome, " + me.user + ".");
    } catch (e) { showError(form, e.field === "name" ? Object.assign(e, { field: "user" }) : e); }
  });
  screen("Set up px", form);
}

function loginScreen() {
  const totp = field({ name: "totp", label: "TOTP code (or a recovery code)", autocomplete: "one-time-code" });
  totp.hidden = true;
  const form = h("form", { class: "card narrow", "aria-label": "Log in" },
    field({ name: "user", label: "User", autocomplete: "username" }),
    field({ name: "password", label: "Password", type: "password", autocomplete: "current-password" }),
    totp,
    h("div", { class: "row" }, h("button", { type: "submit", text: "Log in" })));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = { user: form.elements["user"].value.trim(), password: form.elements["password"].value };
    const code = form.elements["totp"].value.trim();
    if (code) body[/^\d{6}$/.test(code) ? "totp" : "recovery"] = code;
    try {
      const me = await api("POST", "/v1/session", body);
      state.me = me;
      state.csrf = me.csrf;
      go("#/routes");
    } catch (e) {
      if (e.field === "totp") totp.hidden = false;
      showError(form, e);
    }
  });
  screen("Log in to px", form);
}

async function logout() {
  try { await api("DELETE", "/v1/session"); } catch (e) { /* ended anyway */ }
  state.me = null;
  state.csrf = "";
  go("#/login", "Logged out.");
}

// ---- routes ----

async function routesScreen() {
  const [routes, status] = await Promise.all([api("GET", "/v1/routes"), api("GET", "/v1/status").catch(() => null)]);
  const search = h("input", { type: "search", id: "route-search", placeholder: "Search name, host, upstream", "aria-label": "Search routes" });
  const enabled = h("select", { id: "route-enabled", "aria-label": "Enabled" }, ["any", "enabled", "disabled"].map((o) => h("option", { value: o }, o)));
  const tls = h("select", { id: "route-tls", "aria-label": "TLS" }, ["any TLS", "https", "no https", "passthrough"].map((o) => h("option", { value: o }, o)));
  const filters = [...new Set(routes.flatMap((r) => (r.filters || []).map((f) => f.name)))].sort();
  const filt = h("select", { id: "route-filter", "aria-label": "Filter used" }, ["any filter", ...filters].map((o) => h("option", { value: o }, o)));
  const body = h("tbody", {});
  const draw = () => {
    const q = search.value.trim().toLowerCase();
    const rows = routes.filter((r) => {
      const text = [r.name, ...(r.hosts || []), ...(r.upstreams || []).map((u) => u.url)].join(" ").toLowerCase();
      if (q && !text.includes(q)) return false;
      if (enabled.value === "enabled" && r.enabled === false) return false;
      if (enabled.value === "disabled" && r.enabled !== false) return false;
      if (tls.value === "https" && (!r.tls || r.tls === "off")) return false;
      if (tls.value === "no https" && r.tls && r.tls !== "off") return false;
      if (tls.value === "passthrough" && !r.passthrough) return false;
      if (filt.value !== "any filter" && !(r.filters || []).some((f) => f.name === filt.value)) return false;
      return true;
    });
    body.replaceChildren(...rows.map(routeRow));
    if (!rows.length) body.append(h("tr", {}, h("td", { colspan: 6, class: "muted", text: routes.length ? "No route matches." : "No routes yet." })));
  };
  [search, enabled, tls, filt].forEach((e) => e.addEventListener("input", draw));
  const t = table(["Name", "Hosts", { t: "Upstreams", opt: true }, "TLS", "Enabled", ""], []);
  t.querySelector("table").replaceChild(body, t.querySelector("tbody"));
  const gen = status && status.generation !== undefined ? h("p", { class: "muted", text: "Store generation " + status.generation }) : null;
  screen("Routes",
    h("div", { class: "row" }, search, enabled, tls, filt, canWrite() ? h("button", { type: "button", id: "add-route", text: "Add route", onclick: () => go("#/route") }) : null),
    t, gen);
  draw();
}

// Edit (View for a viewer), Enable or Disable, and Delete for one route or stream of a list.
function rowActions(kind, o) {
  const path = "/v1/" + kind + "s/" + encodeURIComponent(o.name);
  const what = kind[0].toUpperCase() + kind.slice(1) + " " + o.name;
  const acts = h("td", { class: "actions" }, h("button", { type: "button", class: "ghost", text: canWrite() ? "Edit" : "View", onclick: () => go("#/" + kind + "/" + encodeURIComponent(o.name)) }));
  if (!canWrite()) return acts;
  acts.append(h("button", {
    type: "button", class: "ghost", text: o.enabled === false ? "Enable" : "Disable",
    onclick: async () => {
      try {
        await api("PATCH", path, { enabled: o.enabled === false }, o.version);
        toast(what + (o.enabled === false ? " enabled" : " disabled"));
        render();
      } catch (e) { main().prepend(banner(e)); }
    },
  }));
  acts.append(confirmButton("Delete", "Delete " + o.name + "?", async () => {
    try {
      await api("DELETE", path, undefined, o.version);
      toast(what + " deleted");
      render();
    } catch (e) { main().prepend(banner(e)); }
  }));
  return acts;
}

function routeRow(r) {
  const acts = rowActions("route", r);
  const tlsText = r.passthrough ? "passthrough" : r.tls && r.tls !== "off" ? r.tls : "—";
  return h("tr", { "data-route": r.name },
    h("td", {}, h("strong", { text: r.name }), objectErrors(r)),
    h("td", { text: (r.hosts || []).join(", ") + (r.path && r.path !== "/" ? " " + r.path : "") }),
    h("td", { class: "opt", text: (r.upstreams || []).map((u) => u.url).join(", ") }),
    h("td", { text: tlsText }),
    h("td", {}, h("span", { class: "badge " + (r.enabled === false ? "warn" : "good"), text: r.enabled === false ? "disabled" : "enabled" })),
    acts);
}

async function routeForm(name) {
  const editing = !!name;
  const r = editing ? await api("GET", "/v1/routes/" + encodeURIComponent(name)) : {};
  const ups = (r.upstreams || []).map((u) => (u.weight && u.weight !== 1 ? u.url + "#" + u.weight : u.url)).join("\n");
  const filters = (r.filters || []).map((f) => (f.config && Object.keys(f.config).length ? f.name + "=" + JSON.stringify(f.config) : f.name)).join("\n");
  const form = h("form", { class: "card", "aria-label": editing ? "Edit route " + name : "Add a route", novalidate: true },
    field({ name: "name", label: "Name", value: r.name, readonly: editing, hint: "Letters, digits, '.', '_', '-'" }),
    field({ name: "hosts", label: "Hosts", type: "textarea", rows: 2, value: (r.hosts || []).join("\n"), hint: "One per line; *.example.com for a wildcard" }),
    field({ name: "upstreams", label: "Upstreams", type: "textarea", rows: 2, value: ups, hint: "http://host:port or https://host:port, #weight optional; tcp://host:port for passthrough" }),
    field({ name: "path", label: "Path prefix", value: r.path || "/" }),
    field({ name: "strip_path", label: "Strip the prefix before proxying", type: "checkbox", value: r.strip_path }),
    field({ name: "lb", label: "Balancing", type: "select", options: ["round_robin", "least_conn", "ip_hash"], value: r.lb || "round_robin" }),
    field({ name: "tls", label: "HTTPS", value: r.tls || "off", hint: "off, auto (ACME), or a stored certificate's name" }),
    field({ name: "passthrough", label: "SNI passthrough (the upstream terminates TLS)", type: "checkbox", value: r.passthrough }),
    field({ name: "filters", label: "Filters", type: "textarea", rows: 2, value: filters, hint: "One per line: NAME or NAME={json config}" }),
    field({ name: "connect_timeout_ms", label: "Connect timeout (ms, 0 = default)", type: "number", value: r.connect_timeout_ms || 0 }),
    field({ name: "read_timeout_ms", label: "Read timeout (ms, 0 = default)", type: "number", value: r.read_timeout_ms || 0 }),
    field({ name: "max_body_size", label: "Max body size (bytes; -1 = default, 0 = unlimited)", type: "number", value: r.max_body_size === undefined ? -1 : r.max_body_size }),
    field({ name: "health_check", label: "Health check path (empty: none)", value: r.health_check ? r.health_check.path : "" }),
    field({ name: "enabled", label: "Enabled", type: "checkbox", value: r.enabled !== false }),
    field({ name: "access_log", label: "In pxd's access log", type: "checkbox", value: r.access_log !== false }),
    h("fieldset", {}, h("legend", { text: "https:// upstreams" }),
      field({ name: "upstream_verify", label: "Verify the upstream's certificate", type: "checkbox", value: !r.upstream_tls || r.upstream_tls.verify !== false }),
      field({ name: "upstream_ca", label: "CA bundle (absolute path; empty: the system's)", value: (r.upstream_tls || {}).ca_file || "" }),
      field({ name: "upstream_sni", label: "Server name sent and verified (empty: the upstream's host)", value: (r.upstream_tls || {}).sni || "" }),
      field({ name: "upstream_client_cert", label: "Client certificate to present (a stored certificate's name)", value: (r.upstream_tls || {}).client_cert || "" })),
    h("div", { class: "row" },
      canWrite() ? h("button", { type: "submit", text: editing ? "Save" : "Add route" }) : null,
      h("button", { type: "button", class: "ghost", text: "Back", onclick: () => go("#/routes") })));
  if (!canWrite()) form.querySelectorAll("input, select, textarea").forEach((e) => { e.disabled = true; });
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = {};
    try {
      body.hosts = lines(form.elements["hosts"].value);
      body.upstreams = lines(form.elements["upstreams"].value).map((u) => {
        const at = u.lastIndexOf("#");
        return at > 0 ? { url: u.slice(0, at), weight: Number(u.slice(at + 1)) } : u;
      });
      body.path = form.elements["path"].value.trim() || "/";
      body.strip_path = form.elements["strip_path"].checked;
      body.lb = form.elements["lb"].value;
      body.tls = form.elements["tls"].value.trim() || "off";
      body.filters = form.elements["filters"].value.split("\n").map((x) => x.trim()).filter(Boolean).map((f, i) => {
        const eq = f.indexOf("=");
        if (eq < 0) return f;
        let config;
        try { config = JSON.parse(f.slice(eq + 1)); } catch (e) { throw new ApiError(422, { field: "filters[" + i + "]", message: "the config after '=' is not JSON" }); }
        return { name: f.slice(0, eq), config };
      });
      for (const k of ["connect_timeout_ms", "read_timeout_ms", "max_body_size"]) body[k] = Number(form[k].value || 0);
      const hc = form.elements["health_check"].value.trim();
      body.health_check = hc ? Object.assign({}, r.health_check || {}, { path: hc }) : null;
      body.enabled = form.elements["enabled"].checked;
      body.access_log = form.elements["access_log"].checked;
      const ut = { verify: form.elements["upstream_verify"].checked };
      for (const [k, f] of [["ca_file", "upstream_ca"], ["sni", "upstream_sni"], ["client_cert", "upstream_client_cert"]]) {
        const v = form.elements[f].value.trim();
        if (v) ut[k] = v;
        else if (editing && r.upstream_tls && r.upstream_tls[k]) ut[k] = null;  // merge patch: null removes it
      }
      const anyHttps = body.upstreams.some((u) => String(u.url || u).startsWith("https://"));
      if (anyHttps || r.upstream_tls || !ut.verify || Object.keys(ut).length > 1) body.upstream_tls = ut;
      if (form.elements["passthrough"].checked || r.passthrough) body.passthrough = form.elements["passthrough"].checked;
      if (editing) {
        await api("PATCH", "/v1/routes/" + encodeURIComponent(name), body, r.version);
        toast("Route " + name + " saved");
      } else {
        body.name = form.elements["name"].value.trim();
        if (!body.health_check) delete body.health_check;
        await api("POST", "/v1/routes", body);
        toast("Route " + body.name + " added");
      }
      go("#/routes");
    } catch (e) {
      if (e.status === 412) return showStale(form, name);
      showError(form, e);
    }
  });
  screen(editing ? "Route " + name : "Add a route", form);
}

// If-Match failed: someone saved this route since it was opened. Say who; keep the user's edits.
async function showStale(form, name) {
  clearErrors(form);
  let who = "someone", version = "";
  try {
    const last = await api("GET", "/v1/audit?resource=route/" + encodeURIComponent(name) + "&limit=1");
    if (last.length) who = last[0].credential;
    version = (await api("GET", "/v1/routes/" + encodeURIComponent(name))).version;
  } catch (e) { /* still say it */ }
  form.prepend(h("div", { class: "banner", role: "alert", id: "stale" },
    "Changed by " + who + " since you opened it (now version " + version + "). Your edits are still here: ",
    h("a", { href: "#/route/" + encodeURIComponent(name), text: "reload the route", onclick: (ev) => { ev.preventDefault(); render(); } }),
    " to start from their version."));
}

// Where a route or stream does not fully serve, per host and pxd (the API's "errors"): a list under its name.
function objectErrors(o) {
  if (!o.errors || !o.errors.length) return null;
  return h("ul", { class: "object-errors" }, o.errors.map((e) => h("li", { class: "field-error", text: (e.host ? e.host + ": " : "") + e.error })));
}

// ---- streams ----

async function streamsScreen() {
  const streams = await api("GET", "/v1/streams");
  const rows = streams.map((st) => {
    const acts = rowActions("stream", st);
    return h("tr", { "data-stream": st.name },
      h("td", {}, h("strong", { text: st.name }), objectErrors(st)),
      h("td", { text: st.listen + "/" + st.protocol }),
      h("td", { class: "opt", text: (st.upstreams || []).map((u) => u.url + (u.weight && u.weight !== 1 ? "#" + u.weight : "")).join(", ") }),
      h("td", { class: "opt", text: st.lb }),
      h("td", { text: st.tls || "—" }),
      h("td", {}, h("span", { class: "badge " + (st.enabled === false ? "warn" : "good"), text: st.enabled === false ? "disabled" : "enabled" })),
      acts);
  });
  if (!rows.length) rows.push(h("tr", {}, h("td", { colspan: 7, class: "muted", text: "No streams yet." })));
  screen("Streams",
    h("p", { class: "muted", text: "TCP and UDP proxying on ports of their own (pxctl stream)." }),
    canWrite() ? h("div", { class: "row" }, h("button", { type: "button", id: "add-stream", text: "Add stream", onclick: () => go("#/stream") })) : null,
    table(["Name", "Listen", { t: "Upstreams", opt: true }, { t: "Balancing", opt: true }, "TLS", "Enabled", ""], rows));
}

async function streamForm(name) {
  const editing = !!name;
  const st = editing ? await api("GET", "/v1/streams/" + encodeURIComponent(name)) : {};
  const ups = (st.upstreams || []).map((u) => (u.weight && u.weight !== 1 ? u.url + "#" + u.weight : u.url)).join("\n");
  const listen = st.listen ? st.listen + (st.protocol === "udp" ? "/udp" : "") : "";
  const num = (n, label, v) => field({ name: n, label, type: "number", value: v || 0 });
  const form = h("form", { class: "card", "aria-label": editing ? "Edit stream " + name : "Add a stream", novalidate: true },
    editing ? objectErrors(st) : null,
    field({ name: "name", label: "Name", value: st.name, readonly: editing, hint: "Letters, digits, '.', '_', '-'" }),
    field({ name: "listen", label: "Listen on", value: listen, hint: "ADDRESS:PORT, /udp for UDP: 0.0.0.0:5432, [::]:53/udp" }),
    field({ name: "upstreams", label: "Upstreams", type: "textarea", rows: 2, value: ups, hint: "One per line: tcp://host:port or udp://host:port, #weight optional" }),
    field({ name: "lb", label: "Balancing", type: "select", options: ["round_robin", "least_conn", "hash"], value: st.lb || "round_robin", hint: "hash: on the client's address" }),
    field({ name: "acl", label: "Access list (its CIDR rules admit clients; empty: everyone)", value: st.acl || "" }),
    field({ name: "tls", label: "Terminate TLS", value: st.tls || "off", hint: "off, auto (ACME for the names below), or a stored certificate's name" }),
    field({ name: "hosts", label: "Names for tls auto", type: "textarea", rows: 2, value: (st.hosts || []).join("\n") }),
    field({ name: "proxy_protocol", label: "PROXY protocol to the upstream", type: "select", options: ["off", "v1", "v2"], value: st.proxy_protocol || "off" }),
    field({ name: "accept_proxy", label: "Clients open with a PROXY header (only pxd.conf's trusted_proxies may)", type: "checkbox", value: st.accept_proxy }),
    num("connect_timeout_ms", "Connect timeout (ms, 0 = pxd.conf's)", st.connect_timeout_ms),
    num("idle_timeout_ms", "Idle timeout (ms, 0 = 10 min for TCP, 30 s for UDP)", st.idle_timeout_ms),
    num("max_lifetime_ms", "Longest connection (ms, 0 = no limit)", st.max_lifetime_ms),
    num("max_connections", "Connections or UDP sessions at once (0 = pxd.conf's)", st.max_connections),
    num("rate_bytes_per_s", "Bytes per second per connection, each way (0 = unlimited)", st.rate_bytes_per_s),
    num("health_check", "Health checks: a TCP connect every (ms, 0 = none)", st.health_check ? st.health_check.interval_ms : 0),
    field({ name: "enabled", label: "Enabled", type: "checkbox", value: st.enabled !== false }),
    field({ name: "access_log", label: "In pxd's access log", type: "checkbox", value: st.access_log !== false }),
    h("div", { class: "row" },
      canWrite() ? h("button", { type: "submit", text: editing ? "Save" : "Add stream" }) : null,
      h("button", { type: "button", class: "ghost", text: "Back", onclick: () => go("#/streams") })));
  if (!canWrite()) form.querySelectorAll("input, select, textarea").forEach((e) => { e.disabled = true; });
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    // The whole stream, as the form shows it (PUT), so a field emptied here is emptied in the store.
    const body = {
      listen: form.elements["listen"].value.trim(),
      upstreams: lines(form.elements["upstreams"].value).map((u) => {
        const at = u.lastIndexOf("#");
        return at > 0 ? { url: u.slice(0, at), weight: Number(u.slice(at + 1)) } : { url: u };
      }),
      lb: form.elements["lb"].value,
      proxy_protocol: form.elements["proxy_protocol"].value,
      accept_proxy: form.elements["accept_proxy"].checked,
      tls: form.elements["tls"].value.trim() || "off",
      enabled: form.elements["enabled"].checked,
      access_log: form.elements["access_log"].checked,
    };
    const acl = form.elements["acl"].value.trim();
    if (acl) body.acl = acl;
    const hosts = lines(form.elements["hosts"].value);
    if (hosts.length) body.hosts = hosts;
    for (const k of ["connect_timeout_ms", "idle_timeout_ms", "max_lifetime_ms", "max_connections", "rate_bytes_per_s"])
      body[k] = Number(form.elements[k].value || 0);
    const hc = Number(form.elements["health_check"].value || 0);
    if (hc) body.health_check = Object.assign({}, st.health_check || {}, { interval_ms: hc });
    const target = editing ? name : form.elements["name"].value.trim();
    try {
      if (editing) {
        await api("PUT", "/v1/streams/" + encodeURIComponent(name), body, st.version);
        toast("Stream " + name + " saved");
      } else {
        body.name = target;
        await api("POST", "/v1/streams", body);
        toast("Stream " + target + " added");
      }
      go("#/streams");
    } catch (e) {
      if (e.status === 412) return form.prepend(banner(new Error("Changed by someone else since you opened it: reload to see it.")));
      showError(form, e);
    }
  });
  screen(editing ? "Stream " + name : "Add a stream", form);
}

// ---- access lists ----

async function aclsScreen() {
  const acls = await api("GET", "/v1/acls");
  const rows = acls.map((a) => h("tr", { "data-acl": a.name },
    h("td", {}, h("strong", { text: a.name })),
    h("td", { text: (a.rules || []).map((r) => r.action + " " + r.cidr).join(", ") }),
    h("td", { text: a.default || "" }),
    h("td", { class: "opt", text: (a.users || []).map((u) => u.username).join(", ") }),
    h("td", { class: "actions" },
      h("button", { type: "button", class: "ghost", text: canWrite() ? "Edit" : "View", onclick: () => go("#/acl/" + encodeURIComponent(a.name)) }),
      canWrite() ? confirmButton("Delete", "Delete " + a.name + "?", async () => {
        try { await api("DELETE", "/v1/acls/" + encodeURIComponent(a.name), undefined, a.version); render(); } catch (e) { main().prepend(banner(e)); }
      }) : null)));
  if (!rows.length) rows.push(h("tr", {}, h("td", { colspan: 5, class: "muted", text: "No access lists yet." })));
  screen("Access lists",
    h("p", { class: "muted", text: "Attach one to a route with the acl filter: acl={\"list\": \"NAME\"}." }),
    canWrite() ? h("div", { class: "row" }, h("button", { type: "button", id: "add-acl", text: "Add access list", onclick: () => go("#/acl") })) : null,
    table(["Name", "Rules", "Default", { t: "Users", opt: true }, ""], rows));
}

async function aclForm(name) {
  const editing = !!name;
  const a = editing ? await api("GET", "/v1/acls/" + encodeURIComponent(name)) : {};
  const rules = (a.rules || []).map((r) => r.action + "=" + r.cidr).join("\n");
  const form = h("form", { class: "card", "aria-label": editing ? "Edit access list " + name : "Add an access list", novalidate: true },
    field({ name: "name", label: "Name", value: a.name, readonly: editing }),
    field({ name: "rules", label: "Rules, in order", type: "textarea", value: rules, hint: "One per line: allow=CIDR or deny=CIDR" }),
    field({ name: "default", label: "When no rule matches", type: "select", options: ["deny", "allow"], value: a.default || "deny" }),
    field({ name: "satisfy", label: "With users too: pass when", type: "select", options: ["any", "all"], value: a.satisfy || "any", hint: "any: the address or a user's password; all: both" }),
    field({ name: "realm", label: "Realm (shown in the browser's password prompt)", value: a.realm || "" }),
    field({ name: "pass_authorization", label: "Pass the Authorization header upstream", type: "checkbox", value: a.pass_authorization }),
    h("div", { class: "row" },
      canWrite() ? h("button", { type: "submit", text: editing ? "Save" : "Add access list" }) : null,
      h("button", { type: "button", class: "ghost", text: "Back", onclick: () => go("#/acls") })));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = {
      rules: lines(form.elements["rules"].value).map((r) => {
        const eq = r.indexOf("=");
        return eq < 0 ? { action: r, cidr: "" } : { action: r.slice(0, eq).trim(), cidr: r.slice(eq + 1).trim() };
      }),
      default: form.elements["default"].value,
      satisfy: form.elements["satisfy"].value,
      pass_authorization: form.elements["pass_authorization"].checked,
    };
    if (form.elements["realm"].value.trim()) body.realm = form.elements["realm"].value.trim();
    try {
      if (editing) await api("PATCH", "/v1/acls/" + encodeURIComponent(name), body, a.version);
      else await api("POST", "/v1/acls", Object.assign({ name: form.elements["name"].value.trim() }, body));
      toast("Access list saved");
      go("#/acls");
    } catch (e) {
      if (e.status === 412) return form.prepend(banner(new Error("Changed by someone else since you opened it: reload to see it.")));
      showError(form, e);
    }
  });
  const kids = [form];
  if (editing) {
    const users = h("form", { class: "card", "aria-label": "Basic-auth users" },
      h("h2", { text: "Basic-auth users" }),
      h("p", { class: "muted", text: "Passwords are hashed by pxadmind as they arrive; they are never shown again." }),
      h("ul", {}, (a.users || []).map((u) => h("li", {}, u.username + " ",
        canWrite() ? confirmButton("Remove", "Remove " + u.username + "?", async () => {
          try { await api("DELETE", "/v1/acls/" + encodeURIComponent(name) + "/users/" + encodeURIComponent(u.username)); render(); } catch (e) { users.prepend(banner(e)); }
        }) : null))),
      canWrite() ? [field({ name: "username", label: "User name" }), field({ name: "password", label: "Password", type: "password", autocomplete: "new-password" }),
        h("div", { class: "row" }, h("button", { type: "submit", text: "Add user" }))] : null);
    users.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      try {
        await api("POST", "/v1/acls/" + encodeURIComponent(name) + "/users", { username: users.elements["username"].value.trim(), password: users.elements["password"].value });
        toast("User added");
        render();
      } catch (e) { showError(users, e); }
    });
    kids.push(users);
  }
  screen(editing ? "Access list " + name : "Add an access list", ...kids);
}

// ---- certificates ----

async function certsScreen() {
  const certs = await api("GET", "/v1/certs");
  const rows = certs.map((c) => {
    const days = c.days_left;
    const cls = days === undefined ? "" : days < 7 ? "bad" : days < 21 ? "warn" : "good";
    return h("tr", { "data-cert": c.name },
      h("td", {}, h("strong", { text: c.name })),
      h("td", { text: (c.names || []).join(", ") }),
      h("td", { class: "opt", text: c.not_after_text || "" }),
      h("td", {}, days === undefined ? "" : h("span", { class: "badge " + cls, text: days + " days" })),
      h("td", { text: (c.status || c.source || "") }),
      h("td", {}, c.last_error ? h("pre", { text: JSON.stringify(c.last_error, null, 2) }) : ""),
      h("td", { class: "actions" },
        canWrite() && c.managed === "acme" ? h("button", { type: "button", class: "ghost", text: "Renew", onclick: async () => {
          try { await api("POST", "/v1/certs/" + encodeURIComponent(c.name) + "/renew", {}); toast("Renewal of " + c.name + " asked for"); } catch (e) { main().prepend(banner(e)); }
        } }) : null,
        canWrite() ? confirmButton("Remove", "Remove " + c.name + "?", async () => {
          try { await api("DELETE", "/v1/certs/" + encodeURIComponent(c.name)); render(); } catch (e) { main().prepend(banner(e)); }
        }) : null));
  });
  if (!rows.length) rows.push(h("tr", {}, h("td", { colspan: 7, class: "muted", text: "No certificates yet." })));
  const upload = h("form", { class: "card", "aria-label": "Upload a certificate" },
    h("h2", { text: "Upload a certificate" }),
    field({ name: "name", label: "Name" }),
    field({ name: "cert", label: "Certificate chain (PEM, leaf first)", type: "textarea", rows: 4 }),
    field({ name: "key", label: "Private key (PEM)", type: "textarea", rows: 4 }),
    h("div", { class: "row" }, h("button", { type: "submit", text: "Upload" })));
  upload.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      await api("PUT", "/v1/certs/" + encodeURIComponent(upload.elements["name"].value.trim()), { cert: upload.elements["cert"].value, key: upload.elements["key"].value });
      toast("Certificate stored");
      render();
    } catch (e) { showError(upload, e); }
  });
  screen("Certificates", table(["Name", "Names", { t: "Not after", opt: true }, "Left", "Status", "Last error", ""], rows),
    canWrite() ? upload : null);
}

// ---- filters ----

async function filtersScreen() {
  const [status, routes] = await Promise.all([api("GET", "/v1/status"), api("GET", "/v1/routes")]);
  const kids = [];
  for (const p of status.pxd || []) {
    if (!p.running) continue;
    const rows = (p.filters || []).map((f) => {
      const users = routes.filter((r) => (r.filters || []).some((x) => x.name === f.name)).map((r) => r.name);
      return h("tr", {}, h("td", {}, h("strong", { text: f.name })),
        h("td", {}, h("span", { class: "badge " + (f.ok ? "good" : "bad"), text: f.ok ? "loaded" : "error" })),
        h("td", { class: "opt", text: f.path || "" }), h("td", { text: f.error || "" }), h("td", { text: users.join(", ") || "—" }));
    });
    kids.push(h("h2", { text: "pxd (" + p.status_file + ")" }), table(["Filter", "State", { t: "File", opt: true }, "Last load error", "Used by"], rows));
  }
  if (!kids.length) kids.push(h("p", { class: "muted", text: "No pxd is running: nothing is loaded." }));
  screen("Filters", ...kids);
}

// ---- audit, status, configuration, account ----

async function auditScreen() {
  const recs = (await api("GET", "/v1/audit?limit=200")).reverse();
  const rows = recs.map((r) => {
    const more = h("td", {}, h("details", {}, h("summary", { text: "diff" }), diff(r.before, r.after)));
    return h("tr", {}, h("td", { text: r.seq }), h("td", { class: "opt", text: r.time }), h("td", { text: r.credential }),
      h("td", { text: r.action }), h("td", { text: r.resource }), more);
  });
  screen("Audit log", table(["#", { t: "Time", opt: true }, "Who", "Action", "Resource", "Change"], rows));
}

let poller = null;

async function statusScreen() {
  const s = await api("GET", "/v1/status");
  const body = h("tbody", {});
  const note = h("p", { class: "muted", id: "traffic-note", text: "Reading pxd's counters…" });
  let prev = null;
  const tick = async () => {
    let t;
    try { t = await api("GET", "/v1/traffic"); } catch (e) { return; }
    if (!t.pxd_read) {
      note.textContent = "No running pxd has metrics_listen set: live traffic needs it (pxd.conf(5)).";
      return;
    }
    const dt = prev ? (t.time_ms - prev.time_ms) / 1000 : 0;
    const names = Object.keys(t.routes).sort();
    body.replaceChildren(...names.map((n) => {
      const r = t.routes[n], p = prev && prev.routes[n];
      const rate = p && dt > 0 ? ((r.requests - p.requests) / dt).toFixed(1) : "…";
      const err = p && dt > 0 ? ((r.errors - p.errors) / dt).toFixed(1) : "…";
      return h("tr", { "data-traffic": n }, h("td", {}, h("strong", { text: n })), h("td", { text: rate }), h("td", { text: err }),
        h("td", { text: r.requests }), h("td", { text: r.errors }));
    }));
    note.textContent = "Every 2 seconds, from " + t.pxd_read + " pxd" + (t.pxd_read > 1 ? "s" : "") + ".";
    prev = t;
  };
  poller = setInterval(tick, 2000);
  tick();
  const pxds = (s.pxd || s.pxds || []).map((p) => h("tr", {},
    h("td", { text: p.status_file || "" }),
    h("td", {}, h("span", { class: "badge " + (p.running ? "good" : "bad"), text: p.running ? "running" : "not running" })),
    h("td", { text: p.generation === undefined ? "" : p.generation }),
    h("td", {}, p.generation === s.generation ? h("span", { class: "badge good", text: "current" }) : h("span", { class: "badge warn", text: "behind" }))));
  const traffic = table(["Route", "Requests/s", "5xx/s", "Requests", "5xx"], []);
  traffic.querySelector("table").replaceChild(body, traffic.querySelector("tbody"));
  screen("Status", h("p", { text: "Store generation " + s.generation }), s.fleet ? fleetLine(s.fleet) : null,
    table(["pxd", "State", "Generation", ""], pxds),
    h("h2", { text: "Live traffic" }), note, traffic,
    h("details", {}, h("summary", { text: "Everything pxadmind reports" }), h("pre", { text: JSON.stringify(s, null, 2) })));
}

// This host in its fleet: "etcd reachable since T" or "etcd unreachable since T (why)", and its applied revision.
function fleetLine(f) {
  const e = f.etcd || {};
  return h("div", { class: "banner" + (e.reachable ? " info" : ""), role: e.reachable ? "status" : "alert", id: "fleet-line" },
    "Fleet " + f.name + ", host " + f.host + ": etcd " + (e.reachable ? "reachable" : "unreachable") + " since " + e.since +
    (e.reachable || !e.last_error ? "" : " (" + e.last_error + ")") + ", applied revision " + f.applied_revision + ".");
}

async function fleetScreen() {
  let f;
  try { f = await api("GET", "/v1/fleet"); } catch (e) {
    if (e.status !== 404) throw e;
    return screen("Fleet", h("p", { class: "muted", text: "This pxadmind runs on its own, not in a fleet: see pxadmind(8), FLEET, and --etcd." }));
  }
  const body = h("tbody", {});
  const self = h("div", {});
  const other = h("p", { class: "muted", id: "fleet-note" });
  const draw = (f) => {
    const kids = [fleetLine(f.self)];
    const refused = Object.entries(f.self.rejected || {});
    if (refused.length) kids.push(h("h2", { text: "Keys refused from etcd" }), h("ul", { id: "fleet-refused" }, refused.map(([k, why]) => h("li", { class: "field-error", text: k + ": " + why }))));
    self.replaceChildren(...kids);
    other.textContent = f.error ? "Other hosts: unknown (" + f.error + ")." : "The fleet's revision is " + f.revision + ". Every 2 seconds; a host that stops leaves the list when its lease expires.";
    body.replaceChildren(...(f.hosts || []).map((x) => {
      const pxds = x.pxd || [];
      const inSync = pxds.length && pxds.every((p) => p.in_sync), running = pxds.some((p) => p.running);
      const errs = [];
      for (const p of pxds) {
        for (const [n, why] of Object.entries(p.route_errors || {})) errs.push("route " + n + ": " + why);
        for (const [n, why] of Object.entries(p.stream_errors || {})) errs.push("stream " + n + ": " + why);
      }
      const n = Object.keys(x.rejected || {}).length;
      if (n) errs.push(n + " key" + (n > 1 ? "s" : "") + " refused from etcd");
      if (x.etcd && x.etcd.last_error) errs.push(x.etcd.last_error);
      const seen = x.published ? new Date(x.published * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC" : "";
      return h("tr", { "data-host": x.host },
        h("td", {}, h("strong", { text: x.host })),
        h("td", { class: "opt", text: x.version || "" }),
        h("td", { text: x.applied_revision }),
        h("td", {}, h("span", { class: "badge " + (x.lag ? "warn" : "good"), text: String(x.lag || 0) })),
        h("td", {}, h("span", { class: "badge " + (!running ? "bad" : inSync ? "good" : "warn"), text: !running ? "not running" : inSync ? "in sync" : "behind" })),
        h("td", {}, h("span", { class: "badge " + (x.etcd && x.etcd.reachable ? "good" : "bad"), text: x.etcd && x.etcd.reachable ? "reachable" : "unreachable" })),
        h("td", {}, errs.length ? h("ul", { class: "object-errors" }, errs.map((t) => h("li", { class: "field-error", text: t }))) : "—"),
        h("td", { class: "opt", text: seen }));
    }));
    if (!body.children.length) body.append(h("tr", {}, h("td", { colspan: 8, class: "muted", text: f.error ? "Unknown while etcd is away." : "No host has published yet." })));
  };
  const t = table(["Host", { t: "Version", opt: true }, "Applied revision", "Lag", "pxd", "etcd", "Errors", { t: "Last seen", opt: true }], []);
  t.querySelector("table").replaceChild(body, t.querySelector("tbody"));
  screen("Fleet " + f.self.name, self, t, other);
  draw(f);
  poller = setInterval(async () => {
    try { draw(await api("GET", "/v1/fleet")); } catch (e) { /* the next tick tries again */ }
  }, 2000);
}

async function configScreen() {
  const exp = h("button", { type: "button", id: "export", text: "Download export", onclick: async () => {
    const doc = await api("GET", "/v1/config");
    const a = h("a", { href: URL.createObjectURL(new Blob([JSON.stringify(doc, null, 2)], { type: "application/json" })), download: "px-config.json" });
    document.body.append(a);
    a.click();
    a.remove();
  } });
  const form = h("form", { class: "card", "aria-label": "Import" },
    h("h2", { text: "Import" }),
    field({ name: "doc", label: "An export (JSON)", type: "textarea", rows: 8 }),
    field({ name: "mode", label: "Mode", type: "select", options: ["merge", "replace"], value: "merge" }),
    h("div", { class: "row" }, h("button", { type: "submit", text: "Show what would change" })));
  const result = h("div", {});
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    result.replaceChildren();
    let doc;
    try { doc = JSON.parse(form.elements["doc"].value); } catch (e) { return showError(form, new ApiError(422, { field: "doc", message: "not valid JSON" })); }
    try {
      const q = "/v1/config?mode=" + form.elements["mode"].value;
      const dry = await api("POST", q + "&dry_run=1", doc);
      clearErrors(form);
      result.append(h("h2", { text: "Would change" }), h("pre", { id: "import-diff", text: JSON.stringify(dry.diff, null, 2) }),
        canWrite() ? h("button", { type: "button", id: "apply-import", text: "Apply", onclick: async () => {
          try { await api("POST", q, doc); toast("Imported"); go("#/routes"); } catch (e) { result.prepend(banner(e)); }
        } }) : null);
    } catch (e) { showError(form, e); }
  });
  screen("Configuration", h("div", { class: "card" }, h("p", { text: "Everything in the store but keys and accounts, as JSON (pxctl export)." }), exp), form, result);
}

async function accountScreen() {
  const me = await api("GET", "/v1/session");
  const kids = [h("div", { class: "card" }, h("p", {}, "Logged in as ", h("strong", { text: me.user }), " (" + me.role + ")."),
    h("button", { type: "button", id: "logout", class: "ghost", text: "Log out", onclick: logout }))];
  const totp = h("div", { class: "card" }, h("h2", { text: "Two-factor (TOTP)" }));
  if (me.totp) totp.append(h("p", { text: "On. Log in with the code from your authenticator, or a recovery code." }));
  else {
    totp.append(h("button", { type: "button", id: "totp-start", text: "Turn on TOTP", onclick: async () => {
      const t = await api("POST", "/v1/session/totp");
      const confirm = h("form", { "aria-label": "Confirm TOTP" },
        h("p", {}, "Add this secret to your authenticator: ", h("code", { id: "totp-secret", text: t.secret })),
        h("p", { class: "muted", text: t.uri }),
        field({ name: "code", label: "The code it shows now", autocomplete: "one-time-code" }),
        h("div", { class: "row" }, h("button", { type: "submit", text: "Confirm" })));
      confirm.addEventListener("submit", async (ev) => {
        ev.preventDefault();
        try {
          const r = await api("POST", "/v1/session/totp/confirm", { code: confirm.elements["code"].value.trim() });
          totp.replaceChildren(h("h2", { text: "Two-factor (TOTP)" }), h("p", { text: "On. Keep these recovery codes; each works once, and they are not shown again:" }),
            h("pre", { id: "recovery-codes", text: r.recovery_codes.join("\n") }));
        } catch (e) { showError(confirm, e); }
      });
      totp.replaceChildren(h("h2", { text: "Two-factor (TOTP)" }), confirm);
    } }));
  }
  kids.push(totp);
  if (me.role === "admin") {
    const users = await api("GET", "/v1/users");
    const add = h("form", { class: "card", "aria-label": "Add an account" }, h("h2", { text: "Accounts" }),
      table(["Name", "Role", "TOTP", ""], users.map((u) => h("tr", {}, h("td", { text: u.name }), h("td", { text: u.role }), h("td", { text: u.totp ? "on" : "off" }),
        h("td", {}, u.name === me.user ? "" : confirmButton("Remove", "Remove " + u.name + "?", async () => {
          try { await api("DELETE", "/v1/users/" + encodeURIComponent(u.name)); render(); } catch (e) { add.prepend(banner(e)); }
        }))))),
      field({ name: "name", label: "New account name" }),
      field({ name: "password", label: "Its password (10 characters or more)", type: "password", autocomplete: "new-password" }),
      field({ name: "role", label: "Role", type: "select", options: ["viewer", "admin"], value: "viewer" }),
      h("div", { class: "row" }, h("button", { type: "submit", text: "Add account" })));
    add.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      try {
        await api("POST", "/v1/users", { name: add.elements["name"].value.trim(), password: add.elements["password"].value, role: add.elements["role"].value });
        toast("Account added");
        render();
      } catch (e) { showError(add, e); }
    });
    kids.push(add);
  }
  screen("Account", ...kids);
}

// ---- routing between screens ----

const screens = {
  setup: setupScreen, login: loginScreen, routes: routesScreen, route: routeForm, streams: streamsScreen, stream: streamForm,
  acls: aclsScreen, acl: aclForm, fleet: fleetScreen,
  certs: certsScreen, filters: filtersScreen, audit: auditScreen, status: statusScreen, config: configScreen, account: accountScreen,
};

async function render() {
  if (poller) clearInterval(poller);
  poller = null;
  const parts = (location.hash || "#/routes").slice(2).split("/");
  const name = screens[parts[0]] ? parts[0] : "routes";
  const arg = parts[1] ? decodeURIComponent(parts[1]) : "";
  if (name !== "login" && name !== "setup" && !state.me && !(await loadMe())) return;
  const nav = document.getElementById("nav");
  nav.hidden = !state.me;
  document.getElementById("who").textContent = state.me ? state.me.user + " · " + state.me.role : "";
  const current = { route: "routes", acl: "acls", stream: "streams" }[name] || name;
  nav.querySelectorAll("a").forEach((a) => {
    if (a.dataset.screen === current) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  });
  try {
    await screens[name](arg);
  } catch (e) {
    if (e.status !== 401) screen("Something went wrong", banner(e));
  }
  main().focus();
}

function initTheme() {
  const saved = localStorage.getItem("px-theme");
  if (saved) document.documentElement.dataset.theme = saved;
  document.getElementById("theme").addEventListener("click", () => {
    const dark = document.documentElement.dataset.theme === "dark" ||
      (!document.documentElement.dataset.theme && matchMedia("(prefers-color-scheme: dark)").matches);
    document.documentElement.dataset.theme = dark ? "light" : "dark";
    localStorage.setItem("px-theme", document.documentElement.dataset.theme);
  });
}

window.addEventListener("hashchange", render);
initTheme();
render();
