// The Conclave admin console: signs an administrator in to the admin API with
// the session cookie, and sends the session's CSRF token on every change.
"use strict";

const API = "/api/v1";
let csrf = sessionStorage.getItem("conclave-csrf") || "";

const $ = (id) => document.getElementById(id);

function text(tag, content, className) {
  const node = document.createElement(tag);
  node.textContent = content;
  if (className) node.className = className;
  return node;
}

async function call(method, path, body) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers["X-CSRF-Token"] = csrf;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(API + path, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 401) {
    showSignIn("Signed out: please sign in again.");
    throw new Error("signed out");
  }
  const data = response.status === 204 ? null : await response.json().catch(() => null);
  if (!response.ok) throw new Error((data && data.detail) || response.statusText);
  return data;
}

function say(message) { $("status").textContent = message; }

function showSignIn(message) {
  $("console").hidden = true;
  $("signin").hidden = false;
  $("signin-status").textContent = message || "";
}

async function signIn(event) {
  event.preventDefault();
  $("signin-status").textContent = "Signing in…";
  const response = await fetch(API + "/session", {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify({ user: $("user").value, password: $("password").value }),
  });
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    $("signin-status").textContent = (data && data.detail) || "Sign-in failed";
    return;
  }
  $("password").value = "";
  csrf = data.csrf;
  sessionStorage.setItem("conclave-csrf", csrf);
  sessionStorage.setItem("conclave-user", data.user);
  await open(data.user);
}

async function signOut() {
  await call("DELETE", "/session").catch(() => {});
  sessionStorage.removeItem("conclave-csrf");
  sessionStorage.removeItem("conclave-user");
  csrf = "";
  showSignIn("Signed out.");
}

async function open(user) {
  $("signin").hidden = true;
  $("console").hidden = false;
  $("me").textContent = `Signed in as ${user}`;
  await refresh();
}

async function refresh() {
  await Promise.all([health(), topology(), users(), lockouts(), certificates(), findings()])
    .catch((error) => say(`Could not load everything: ${error.message}`));
}

async function health() {
  const h = await call("GET", "/admin/health");
  const body = $("health").tBodies[0];
  body.replaceChildren(...h.checks.map((c) => {
    const row = document.createElement("tr");
    row.append(text("td", c.name), text("td", c.ok ? "ok" : "failing"));
    return row;
  }));
  $("load").textContent =
    `${h.role} ${h.host}: ${h.ready ? "ready" : "not ready"}; ` +
    `${h.registrations} registrations, ${h.connections} connections`;
  $("hosts").hidden = h.hosts.length === 0;
  $("hosts").tBodies[0].replaceChildren(...h.hosts.map((other) => {
    const row = document.createElement("tr");
    row.dataset.host = other.host;
    const state = other.ready === null ? `unknown: ${other.detail}` : (other.ready ? "ready" : "not ready");
    row.append(text("td", other.host), text("td", other.roles.join(", ")), text("td", state));
    return row;
  }));
}

async function topology() {
  const t = await call("GET", "/admin/topology");
  if (t.kind === "standard") {
    $("topology-text").textContent = "Standard Edition: this one server runs every role.";
    $("topology-picture").hidden = true;
    return;
  }
  $("topology-text").textContent = "";
  const picture = $("topology-picture");
  picture.src = `${API}/admin/topology/diagram.svg`;
  picture.hidden = false;
}

function button(label, name, action) {
  const b = text("button", label);
  b.type = "button";
  b.setAttribute("aria-label", `${label} ${name}`);
  b.addEventListener("click", () => action().catch((error) => say(error.message)));
  return b;
}

async function users() {
  const list = await call("GET", "/admin/users");
  const body = $("users").tBodies[0];
  body.replaceChildren(...list.map((u) => {
    const row = document.createElement("tr");
    row.dataset.user = u.name;
    const actions = document.createElement("td");
    actions.append(
      u.disabled
        ? button("Enable", u.name, () => change(`/admin/users/${encodeURIComponent(u.name)}/enable`, `${u.name} enabled`))
        : button("Disable", u.name, () => change(`/admin/users/${encodeURIComponent(u.name)}/disable`, `${u.name} disabled`)),
      button("New password", u.name, async () => {
        const result = await call("POST", `/admin/users/${encodeURIComponent(u.name)}/password`, {});
        say(`New password for ${result.name}: ${result.password}`);
      }),
    );
    row.append(
      text("td", u.name + (u.admin ? " (administrator)" : "")),
      text("td", u.disabled ? "disabled" : "enabled", "user-state"),
      actions,
    );
    return row;
  }));
}

async function change(path, done) {
  await call("POST", path, {});
  say(done);
  await Promise.all([users(), findings()]);
}

async function addUser(event) {
  event.preventDefault();
  try {
    const result = await call("POST", "/admin/users", { name: $("new-user").value });
    say(`Added ${result.name}; password: ${result.password}`);
    $("new-user").value = "";
    await users();
  } catch (error) {
    say(error.message);
  }
}

async function lockouts() {
  const list = await call("GET", "/admin/lockouts");
  const items = list.map((l) => {
    const locked = Object.keys(l.locked_until);
    const item = text("li", `${l.user}: ${locked.length ? `locked for ${locked.join(", ")} sources` : "not locked"}` +
      `; failures ${JSON.stringify(l.failures)} `);
    if (locked.length) {
      item.append(button("Unlock", l.user, async () => {
        await call("DELETE", `/admin/lockouts/${encodeURIComponent(l.user)}`);
        say(`${l.user} unlocked`);
        await lockouts();
      }));
    }
    return item;
  });
  $("lockouts").replaceChildren(...(items.length ? items : [text("li", "No failures or lockouts.")]));
}

async function certificates() {
  const list = await call("GET", "/admin/certificates");
  $("certificates").tBodies[0].replaceChildren(...list.map((c) => {
    const row = document.createElement("tr");
    const expires = c.not_after ? `${c.not_after.slice(0, 10)} (${Math.floor(c.days_left)} days)` : "";
    row.append(text("td", c.role), text("td", c.subject), text("td", expires), text("td", c.status));
    return row;
  }));
}

async function findings() {
  const list = await call("GET", "/admin/audit");
  const items = list.map((f) => {
    const item = document.createElement("li");
    item.append(text("span", `[${f.level.toUpperCase()}] `, `level-${f.level}`),
      text("strong", `${f.rule}: ${f.title}`), text("p", `${f.found} (${f.where}). Fix: ${f.fix}`));
    return item;
  });
  $("findings").replaceChildren(...(items.length ? items : [text("li", "No findings.")]));
}

async function searchLogs(event) {
  event.preventDefault();
  const query = new URLSearchParams({ limit: "100" });
  if ($("log-user").value) query.set("user", $("log-user").value);
  if ($("log-text").value) query.set("text", $("log-text").value);
  try {
    const events = await call("GET", `/admin/logs?${query}`);
    $("log-results").replaceChildren(...events.map((e) =>
      text("li", `${e.time || ""} ${e.host || ""} ${e.role || ""} ${e.event || ""} ${e.user || ""}`)));
    if (!events.length) say("No matching events.");
  } catch (error) {
    say(error.message);
  }
}

async function start() {
  $("signin").addEventListener("submit", (event) => signIn(event).catch((e) => say(e.message)));
  $("signout").addEventListener("click", signOut);
  $("add-user").addEventListener("submit", addUser);
  $("log-search").addEventListener("submit", searchLogs);
  try {
    const me = await fetch(`${API}/admin/health`, { credentials: "same-origin" });
    if (me.ok && csrf) {
      const profile = sessionStorage.getItem("conclave-user") || "";
      await open(profile);
      return;
    }
  } catch (_) { /* not signed in */ }
  showSignIn("");
}

document.addEventListener("DOMContentLoaded", () => {
  start().finally(() => { document.body.dataset.ready = "true"; });
});
