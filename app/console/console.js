// Tonewatch operator console: sessions (filters, paging), one session (transcript, drift trajectory, export) and
// adapters (active, canary evidence, ΔW profile). Plain DOM: every piece of data goes in through textContent or
// an attribute, never as markup (transcripts are untrusted user text). The key stays in sessionStorage.
// (Over 400 lines: one page's three views and their shared sign-in/fetch code; the charts are in charts.js.)
"use strict";

(() => {
  const TOKEN_KEY = "tonewatch.console.token";
  const ROLE_KEY = "tonewatch.console.role";
  const LIST_FILTERS = ["alerting", "adapter", "persona", "label", "since", "until", "order", "limit", "cursor"];
  const EXPORT_FILTERS = ["alerting", "adapter", "persona", "label", "since", "until", "order"];
  const TONE_LABELS = ["formal", "friendly", "casual", "robotic"];
  const DIMENSIONS = ["formality", "politeness", "warmth"];
  const MAX_TURNS = 5000; // a session page stops reading after this many turns
  const charts = window.TonewatchCharts;
  let renderCount = 0;
  let lastListHash = "#/sessions";

  // ---------------------------------------------------------------------------------------------- DOM helpers
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "text") node.textContent = String(value);
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }
  const $ = (id) => document.getElementById(id);
  const fmtTime = (ts) => (typeof ts === "number" ? new Date(ts * 1000).toLocaleString() : "–");
  const fmt = (v, digits = 2) => (typeof v === "number" && Number.isFinite(v) ? v.toFixed(digits) : "–");
  const badge = (text, cls) => el("span", { class: `badge ${cls || ""}`.trim(), text });

  function download(name, blob) {
    const url = URL.createObjectURL(blob);
    const link = el("a", { href: url, download: name });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  // ------------------------------------------------------------------------------------------------------- API
  class ApiError extends Error {
    constructor(status, message, code) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  const token = () => sessionStorage.getItem(TOKEN_KEY);

  async function request(path, params, given) {
    const url = new URL(path, location.origin);
    for (const [key, value] of params || []) url.searchParams.set(key, value);
    const response = await fetch(url, {
      headers: { Authorization: `Bearer ${given || token()}`, Accept: "application/json" },
      cache: "no-store",
      credentials: "omit",
    });
    if (!response.ok) {
      let message = response.statusText || "request failed";
      let code = null;
      try {
        const body = await response.json();
        if (body && body.error) ({ message, code } = body.error);
      } catch (_) { /* not the error envelope */ }
      throw new ApiError(response.status, message, code);
    }
    return response;
  }
  const api = async (path, params, given) => (await request(path, params, given)).json();

  function errorBox(error, what) {
    const status = error instanceof ApiError ? ` (HTTP ${error.status})` : "";
    const box = el("div", { class: "error", role: "alert" }, `${what}: ${error.message}${status}`);
    if (error instanceof ApiError && error.status === 401) {
      box.append(el("br"), "The key was refused: sign out and sign in again with a valid key.");
    }
    return box;
  }

  // ------------------------------------------------------------------------------------------------ routing
  function parseHash() {
    const raw = location.hash.replace(/^#/, "") || "/sessions";
    const at = raw.indexOf("?");
    const path = at < 0 ? raw : raw.slice(0, at);
    return { path, params: new URLSearchParams(at < 0 ? "" : raw.slice(at + 1)) };
  }

  function only(params, keys) {
    const out = new URLSearchParams();
    for (const key of keys) if (params.get(key)) out.set(key, params.get(key));
    return out;
  }

  function go(hash) {
    if (location.hash === hash) render();
    else location.hash = hash;
  }

  async function render() {
    const mine = ++renderCount;
    if (!token()) {
      showSignIn();
      return;
    }
    $("sign-in").hidden = true;
    $("nav").hidden = false;
    $("sign-out").hidden = false;
    $("who").textContent = sessionStorage.getItem(ROLE_KEY) === "admin" ? "signed in: admin token" :
      "signed in: client key";
    const { path, params } = parseHash();
    for (const link of document.querySelectorAll("#nav a")) link.classList.remove("current");
    const view = el("div", { class: "page" }, el("p", { class: "loading", text: "Loading…" }));
    $("view").replaceChildren(view);
    let page;
    try {
      if (path === "/sessions" || path === "/") {
        $("nav-sessions").classList.add("current");
        lastListHash = location.hash || "#/sessions";
        page = await sessionsPage(params);
      } else if (path.startsWith("/session/")) {
        page = await sessionPage(decodeURIComponent(path.slice("/session/".length)));
      } else if (path === "/adapters") {
        $("nav-adapters").classList.add("current");
        page = await adaptersPage();
      } else {
        page = el("p", { class: "error", text: `No console page ${path}.` });
      }
    } catch (error) {
      page = errorBox(error, "Could not load this page");
    }
    if (mine === renderCount) $("view").replaceChildren(page);
  }

  // ---------------------------------------------------------------------------------------------- sign in/out
  function showSignIn() {
    $("view").replaceChildren();
    $("nav").hidden = true;
    $("sign-out").hidden = true;
    $("who").textContent = "";
    $("sign-in").hidden = false;
    $("token").focus();
  }

  async function signIn(event) {
    event.preventDefault();
    const given = $("token").value.trim();
    const problem = $("sign-in-error");
    problem.textContent = "";
    if (!given) return;
    $("sign-in-button").disabled = true;
    try {
      await api("/v1/sessions", [["limit", "1"]], given);
    } catch (error) {
      if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
        problem.textContent = `Not signed in: ${error.message} (HTTP ${error.status})`;
        $("sign-in-button").disabled = false;
        return;
      }
      // anything else (store down, an older server): the key may still be good; the pages say what fails
    }
    let role = "client";
    try {
      await api("/admin/adapters", [], given);
      role = "admin";
    } catch (_) { /* a client key, or the admin API disabled */ }
    sessionStorage.setItem(TOKEN_KEY, given);
    sessionStorage.setItem(ROLE_KEY, role);
    $("token").value = "";
    $("sign-in-button").disabled = false;
    render();
  }

  function signOut() {
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(ROLE_KEY);
    render();
  }

  // ------------------------------------------------------------------------------------------- sessions page
  const toLocalInput = (unix) => {
    if (!unix || Number.isNaN(Number(unix))) return "";
    const d = new Date(Number(unix) * 1000);
    return new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
  };
  const fromLocalInput = (value) => (value ? String(Math.floor(new Date(value).getTime() / 1000)) : "");

  function select(id, value, options) {
    return el("select", { id, name: id },
      options.map(([v, text]) => el("option", { value: v, selected: v === (value || ""), text })));
  }

  function filterForm(params) {
    const field = (label, input) => el("label", { class: "field" }, el("span", { text: label }), input);
    const text = (id, placeholder, list) =>
      el("input", { id, name: id, type: "text", value: params.get(id) || "", placeholder, list, spellcheck: "false" });
    const form = el("form", { id: "filters", class: "filters" },
      field("Alerting", select("alerting", params.get("alerting"),
        [["", "any"], ["true", "alerting"], ["false", "not alerting"]])),
      field("Adapter", text("adapter", "any")),
      field("Persona", text("persona", "any")),
      field("Tone label", text("label", "any", "tone-labels")),
      el("datalist", { id: "tone-labels" }, TONE_LABELS.map((l) => el("option", { value: l }))),
      field("Since", el("input", { id: "since", name: "since", type: "datetime-local",
        value: toLocalInput(params.get("since")) })),
      field("Until", el("input", { id: "until", name: "until", type: "datetime-local",
        value: toLocalInput(params.get("until")) })),
      field("Order", select("order", params.get("order") === "drift" ? "drift" : "",
        [["", "most recent"], ["drift", "highest drift"]])),
      field("Per page", el("input", { id: "limit", name: "limit", type: "number", min: 1, max: 500,
        value: params.get("limit") || "50" })),
      el("button", { type: "submit", id: "apply-filters", text: "Apply" }),
      el("a", { href: "#/sessions", class: "clear", text: "Clear" }));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const next = new URLSearchParams();
      for (const key of ["alerting", "adapter", "persona", "label", "order", "limit"]) {
        const value = form.elements[key].value.trim();
        if (value) next.set(key, value);
      }
      for (const key of ["since", "until"]) {
        const value = fromLocalInput(form.elements[key].value);
        if (value) next.set(key, value);
      }
      go(`#/sessions?${next}`);
    });
    return form;
  }

  function labelMix(labels) {
    const entries = Object.entries(labels || {}).sort((a, b) => b[1] - a[1]);
    return entries.length ? entries.map(([label, count]) => `${label} ${count}`).join(", ") : "–";
  }

  function sessionRow(s) {
    const drift = s.drift || {};
    const link = el("a", { href: `#/session/${encodeURIComponent(s.session_id)}`, class: "session-link",
      text: s.session_id });
    return el("tr", { class: drift.alert ? "session-row alerting" : "session-row", "data-session-id": s.session_id },
      el("td", {}, link),
      el("td", { class: "num", text: s.turns }),
      el("td", { text: fmtTime(s.last_ts) }),
      el("td", { text: s.adapter || "–" }),
      el("td", { text: s.persona || "–" }),
      el("td", {}, s.label ? badge(s.label, `label-${s.label}`) : "–"),
      el("td", { class: "num", text: fmt(drift.score) }),
      el("td", { class: "num", text: `${fmt(drift.cusum)} / ${fmt(drift.threshold)}` }),
      el("td", {}, drift.alert ? badge(`alert${drift.detector ? ` (${drift.detector})` : ""}`, "alert") : "ok"),
      el("td", { text: labelMix(s.labels) }),
      el("td", { text: s.worst ? `#${s.worst.seq} (${fmt(s.worst.persona_distance, 3)})` : "–" }));
  }

  async function exportSessions(params, button) {
    button.disabled = true;
    const status = $("export-status");
    status.textContent = "Exporting…";
    try {
      const response = await request("/v1/sessions/export", only(params, EXPORT_FILTERS));
      download("tonewatch-sessions.ndjson", await response.blob());
      status.textContent = "";
    } catch (error) {
      status.replaceChildren(errorBox(error, "Export failed"));
    } finally {
      button.disabled = false;
    }
  }

  async function sessionsPage(params) {
    const query = only(params, LIST_FILTERS);
    if (!query.get("limit")) query.set("limit", "50");
    const body = await api("/v1/sessions", query).catch((error) => error);
    const page = el("div", { class: "page", id: "sessions-page" },
      el("h1", { text: "Sessions" }), filterForm(params));
    if (body instanceof Error) {
      page.append(errorBox(body, "Could not list sessions"));
      return page;
    }
    const rows = body.data || [];
    const exportButton = el("button", { type: "button", id: "export-sessions", text: "Export turns (NDJSON)" });
    exportButton.addEventListener("click", () => exportSessions(params, exportButton));
    page.append(el("div", { class: "toolbar" },
      el("span", { id: "session-count", text: `${rows.length} session${rows.length === 1 ? "" : "s"} on this page` }),
      exportButton, el("span", { id: "export-status" })));
    if (!rows.length) {
      page.append(el("p", { class: "empty", id: "no-sessions", text: "No session matches these filters." }));
    } else {
      const head = ["session", "turns", "last turn", "adapter", "persona", "tone", "drift (EWMA)",
        "CUSUM / threshold", "state", "tone mix", "worst turn (distance)"];
      page.append(el("table", { id: "sessions-table", class: "data" },
        el("thead", {}, el("tr", {}, head.map((h) => el("th", { text: h })))),
        el("tbody", {}, rows.map(sessionRow))));
    }
    const pager = el("div", { class: "pager" });
    if (params.get("cursor")) {
      const first = new URLSearchParams(params);
      first.delete("cursor");
      pager.append(el("a", { href: `#/sessions?${first}`, class: "first-page", text: "← First page" }));
    }
    if (body.next_cursor) {
      const next = new URLSearchParams(params);
      next.set("cursor", body.next_cursor);
      pager.append(el("a", { href: `#/sessions?${next}`, class: "next-page", id: "next-page", text: "Next page →" }));
    }
    page.append(pager);
    return page;
  }

  // --------------------------------------------------------------------------------------------- session page
  async function allTurns(sessionId) {
    const turns = [];
    let cursor = 0;
    let body;
    do {
      body = await api(`/v1/sessions/${encodeURIComponent(sessionId)}`, [["limit", "1000"], ["cursor", cursor]]);
      turns.push(...body.turns);
      cursor = body.next_cursor;
    } while (cursor !== null && cursor !== undefined && turns.length < MAX_TURNS);
    return { body, turns, truncated: cursor !== null && cursor !== undefined };
  }

  function dimension(name, value) {
    return el("span", { class: "dim" }, el("span", { class: "dim-name", text: name }),
      el("meter", { min: 0, max: 1, value: typeof value === "number" ? value : 0, title: fmt(value) }),
      el("span", { class: "num", text: fmt(value) }));
  }

  function turnItem(turn) {
    const tone = turn.tone || {};
    const drift = turn.drift;
    const head = el("div", { class: "turn-head" },
      el("strong", { text: `#${turn.seq}` }),
      el("span", { text: fmtTime(turn.ts) }),
      el("span", { text: turn.kind }),
      el("span", { class: "turn-adapter", text: `adapter ${turn.adapter}` }),
      el("span", { text: `persona ${turn.persona || "–"}` }),
      tone.label ? badge(tone.label, `label-${tone.label} turn-label`) : badge("not scored", "muted"),
      drift && drift.alert ? badge("alert", "alert") : null);
    const blocks = [head];
    if (turn.prompt) blocks.push(el("div", { class: "said prompt" }, el("span", { class: "who-said", text: "prompt" }),
      el("p", { class: "text", text: turn.prompt })));
    blocks.push(el("div", { class: "said response" }, el("span", { class: "who-said", text: "answer" }),
      el("p", { class: "text", text: turn.response })));
    blocks.push(el("div", { class: "tone" },
      DIMENSIONS.map((d) => dimension(d, tone[d])),
      el("span", { class: "distance" }, "persona distance ",
        el("span", { class: "num", text: fmt(tone.persona_distance, 3) }),
        tone.persona_match === false ? badge("off persona", "alert") : null),
      drift ? el("span", { class: "turn-drift", text:
        `EWMA ${fmt(drift.score)} · CUSUM ${fmt(drift.cusum)} / ${fmt(drift.threshold)}` }) : null));
    return el("li", { class: drift && drift.alert ? "turn alerting" : "turn", "data-seq": turn.seq }, blocks);
  }

  function driftSummary(drift, pending) {
    const items = [
      ["state", drift.alert ? `alert${drift.detector ? ` (${drift.detector})` : ""}` : "in persona"],
      ["drift score (EWMA, z)", fmt(drift.score)],
      ["CUSUM / threshold", `${fmt(drift.cusum)} / ${fmt(drift.threshold)}`],
      ["dispersion", fmt(drift.dispersion)],
      ["scored turns", drift.turns],
    ];
    if (pending) items.push(["turns waiting in the spill", pending]);
    return el("dl", { class: "summary", id: "drift-summary" },
      items.map(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));
  }

  function legend() {
    const entry = (cls, text) => el("span", { class: "legend-entry" }, el("span", { class: `swatch ${cls}` }), text);
    return el("div", { class: "legend" }, entry("series-cusum", "CUSUM"), entry("series-ewma", "EWMA score"),
      entry("series-threshold", "CUSUM threshold"), entry("alarm", "alarm turn"));
  }

  async function sessionPage(sessionId) {
    const { body, turns, truncated } = await allTurns(sessionId);
    const exportButton = el("button", { type: "button", id: "export-session", text: "Export turns (NDJSON)" });
    exportButton.addEventListener("click", () => {
      const lines = turns.map((t) => JSON.stringify(t)).join("\n");
      download(`tonewatch-session-${sessionId}.ndjson`, new Blob([lines + "\n"], { type: "application/x-ndjson" }));
    });
    const page = el("div", { class: "page", id: "session-page", "data-session-id": sessionId },
      el("p", {}, el("a", { href: lastListHash, class: "back", text: "← Sessions" })),
      el("h1", {}, "Session ", el("code", { id: "session-id", text: sessionId })),
      el("div", { class: "toolbar" }, el("span", { text: `${turns.length} turns` }), exportButton),
      driftSummary(body.drift, body.pending_turns));
    if (truncated) page.append(el("p", { class: "note", text: `Showing the first ${turns.length} turns.` }));
    page.append(el("h2", { text: "Drift trajectory" }), el("div", { class: "chart-box" }, charts.driftChart(turns)),
      legend(), el("h2", { text: "Transcript" }),
      el("ol", { id: "transcript", class: "transcript" }, turns.map(turnItem)));
    return page;
  }

  // -------------------------------------------------------------------------------------------- adapters page
  function canaryCell(canary) {
    if (canary instanceof Error) return canary.status === 404 ? "–" : `error: ${canary.message}`;
    const test = canary.test && canary.test.decision;
    const decision = test && test !== canary.status ? `, test ${test}` : "";
    return badge(`${canary.status}${decision}`, canary.status === "rolled_back" ? "alert" : "info");
  }

  const perArm = (value) => (value && typeof value === "object"
    ? Object.entries(value).map(([arm, n]) => `${arm} ${n}`).join(" · ") : String(value ?? "–"));

  function canaryEvidence(name, canary) {
    const test = canary.test || {};
    const rows = [
      ["canary vs current", `${canary.adapter} vs ${canary.current || "base weights"}`],
      ["judged against persona", canary.persona], ["share of new sessions", fmt(canary.share)],
      ["started", fmtTime(canary.started_at)], ["status", canary.status],
      ["decided", canary.decided_at ? fmtTime(canary.decided_at) : "–"], ["reason", canary.reason || "–"],
      ["sequential test", test.decision || "–"],
      ["sessions", perArm(test.sessions)], ["turns", perArm(test.turns)],
      ["boundaries (log-likelihood ratio)", test.boundaries
        ? `roll back at ≥ ${test.boundaries.rollback}, accept at ≤ ${test.boundaries.accept}` : "–"],
    ];
    const signals = Object.keys(test.llr || {});
    const rate = (arm, signal) => fmt(((test.rates || {})[arm] || {})[signal], 3);
    return el("section", { class: "canary", "data-adapter": name },
      el("h3", { text: `Canary: ${name}` }),
      el("dl", { class: "summary" }, rows.map(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })])),
      signals.length ? el("table", { class: "data compact canary-evidence" },
        el("thead", {}, el("tr", {}, ["signal", "LLR", "verdict", "bad-turn rate, canary", "bad-turn rate, current"]
          .map((h) => el("th", { text: h })))),
        el("tbody", {}, signals.map((signal) => el("tr", {}, el("td", { text: signal }),
          el("td", { class: "num", text: fmt(test.llr[signal], 3) }),
          el("td", { text: (test.verdict || {})[signal] || "–" }),
          el("td", { class: "num", text: rate("canary", signal) }),
          el("td", { class: "num", text: rate("current", signal) }))))) : null);
  }

  async function showProfile(name, box) {
    box.replaceChildren(el("p", { class: "loading", text: `Computing the ΔW profile of ${name}…` }));
    try {
      const profile = await api(`/admin/adapters/${encodeURIComponent(name)}/profile`);
      const totals = profile.totals || {};
      const top = [...(profile.modules || [])].sort((a, b) => b.frobenius_norm - a.frobenius_norm).slice(0, 5);
      box.replaceChildren(
        el("p", { id: "profile-totals", text: `adapter ${name}: ‖ΔW‖F ${fmt(totals.frobenius_norm, 4)} over ` +
          `${totals.modules ?? "–"} modules; largest single head's share ${fmt(totals.max_head_share, 3)}` }),
        el("div", { class: "chart-box" }, charts.profileChart(profile)),
        el("table", { class: "data compact" },
          el("thead", {}, el("tr", {}, ["module", "‖ΔW‖F", "effective rank", "top-k energy"].map((h) =>
            el("th", { text: h })))),
          el("tbody", {}, top.map((m) => el("tr", {}, el("td", { text: m.module }),
            el("td", { class: "num", text: fmt(m.frobenius_norm, 4) }),
            el("td", { class: "num", text: fmt(m.effective_rank) }),
            el("td", { class: "num", text: fmt(m.energy_top_k, 3) }))))));
    } catch (error) {
      box.replaceChildren(errorBox(error, `No profile for ${name}`));
    }
  }

  async function adaptersPage() {
    const page = el("div", { class: "page", id: "adapters-page" }, el("h1", { text: "Adapters" }));
    let listing;
    try {
      listing = await api("/admin/adapters");
    } catch (error) {
      if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
        page.append(el("div", { class: "error", id: "adapters-denied", role: "alert" },
          "The adapters page needs the admin token (TONEWATCH_ADMIN_TOKEN); this key cannot read /admin. ",
          `The server said: ${error.message} (HTTP ${error.status})`));
        return page;
      }
      throw error;
    }
    const adapters = listing.data || [];
    const canaries = await Promise.all(adapters.map((a) =>
      api(`/admin/adapters/${encodeURIComponent(a.name)}/canary`).catch((error) => error)));
    page.append(el("dl", { class: "summary" }, el("dt", { text: "base model" }), el("dd", { text: listing.base }),
      el("dt", { text: "active (default for requests naming none)" }),
      el("dd", { id: "active-adapter", text: listing.active })));
    const profileBox = el("div", { id: "profile-box" },
      el("p", { class: "muted", text: "Pick an adapter's “ΔW profile” to see what it changes, per layer." }));
    const head = ["name", "type", "rank / alpha", "targets", "trainable params", "size", "loaded", "requests",
      "canary", ""];
    page.append(el("table", { id: "adapters-table", class: "data" },
      el("thead", {}, el("tr", {}, head.map((h) => el("th", { text: h })))),
      el("tbody", {}, adapters.map((a, i) => el("tr", { class: a.active ? "adapter-row active" : "adapter-row",
        "data-adapter": a.name },
      el("td", {}, a.name, a.active ? badge("active", "info") : null),
      el("td", { text: `${a.type} (${a.peft_type})` }),
      el("td", { class: "num", text: `${a.rank ?? "–"} / ${a.alpha ?? "–"}` }),
      el("td", { text: (a.target_modules || []).join(", ") }),
      el("td", { class: "num", text: (a.trainable_params || 0).toLocaleString() }),
      el("td", { class: "num", text: `${((a.size_bytes || 0) / 1024).toFixed(0)} KiB` }),
      el("td", { text: fmtTime(a.loaded_at) }),
      el("td", { class: "num", text: a.requests_served }),
      el("td", {}, canaryCell(canaries[i])),
      el("td", {}, el("button", { type: "button", class: "profile-button", "data-adapter": a.name,
        text: "ΔW profile", onclick: () => showProfile(a.name, profileBox) })))))));
    if (!adapters.length) page.append(el("p", { class: "empty", text: "No adapter is loaded: the base serves." }));
    adapters.forEach((a, i) => {
      if (!(canaries[i] instanceof Error)) page.append(canaryEvidence(a.name, canaries[i]));
    });
    page.append(el("h2", { text: "ΔW profile" }), profileBox);
    return page;
  }

  // ------------------------------------------------------------------------------------------------- start up
  document.addEventListener("DOMContentLoaded", () => {
    $("sign-in-form").addEventListener("submit", signIn);
    $("sign-out").addEventListener("click", signOut);
    window.addEventListener("hashchange", render);
    render();
  });
})();
