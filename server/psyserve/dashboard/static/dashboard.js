// psyserve dashboard: renders the JSON feeds into the page and follows /api/events (server-sent events).
// Plain browser JavaScript, no build step and no library. Read-only: it never changes the experiment.
"use strict";

(function () {
  const body = document.body;
  const page = body.dataset.page;
  const live = document.getElementById("live");
  const TRIAL_PLOT_MS = 2000; // the server redraws a plot at most this often (app.py)
  const MODEL_PLOT_MS = 5000;

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function ago(seconds) {
    if (seconds < 1) return "just now";
    if (seconds < 90) return Math.round(seconds) + " s ago";
    if (seconds < 5400) return Math.round(seconds / 60) + " min ago";
    return Math.round(seconds / 3600) + " h ago";
  }

  function metaText(meta) {
    return Object.entries(meta || {}).map(([k, v]) => k + "=" + v).join(", ");
  }

  async function getJSON(url) {
    const response = await fetch(url, { credentials: "same-origin", cache: "no-store" });
    if (response.status === 401) {
      window.location.href = "/login";
      throw new Error("signed out");
    }
    if (!response.ok) throw new Error(url + ": " + response.status);
    return response.json();
  }

  function follow(onVersions) {
    const source = new EventSource("/api/events");
    source.onopen = () => live.classList.add("on");
    source.onerror = () => live.classList.remove("on");
    source.onmessage = (event) => onVersions(JSON.parse(event.data));
  }

  // ---------------------------------------------------------------- strategy list
  async function renderList() {
    const data = await getJSON("/api/strategies");
    const tbody = document.querySelector("#strategies tbody");
    const rows = data.strategies.map((s) => {
      const tr = el("tr", { "data-strategy": s.id });
      const link = el("a", { href: "/s/" + s.id }, s.id);
      const cells = [
        null,
        s.name || "—",
        metaText(s.metadata) || "—",
        s.finished ? "finished" : s.phase + " (" + (s.phase_index + 1) + "/" + s.phase_count + ")",
        s.trials_completed,
        s.trials_pending,
        ago(data.now - s.last_activity),
        s.hit_rate === null ? "—" : Math.round(100 * s.hit_rate) + "% of " + s.model_asks,
      ];
      const first = el("td");
      first.appendChild(link);
      tr.appendChild(first);
      cells.slice(1).forEach((c) => tr.appendChild(el("td", {}, c)));
      return tr;
    });
    tbody.replaceChildren(...rows);
  }

  // ---------------------------------------------------------------- one strategy
  const sid = body.dataset.strategy;
  let version = null;
  const plotState = {};

  function plotInterval(kind) {
    return kind === "history" || kind === "best" || kind === "sweep" ? TRIAL_PLOT_MS : MODEL_PLOT_MS;
  }

  function loadPlot(kind) {
    const state = plotState[kind];
    state.timer = null;
    state.last = Date.now();
    state.img.src = "/s/" + sid + "/plot/" + kind + ".png?v=" + encodeURIComponent(version);
  }

  function refreshPlot(kind) {
    const state = plotState[kind];
    const wait = state.last + plotInterval(kind) - Date.now();
    if (wait <= 0) loadPlot(kind);
    else if (!state.timer) state.timer = setTimeout(() => loadPlot(kind), wait);
  }

  function ensurePlots(kinds) {
    const holder = document.getElementById("plots");
    for (const kind of Object.keys(plotState)) {
      if (!kinds.includes(kind)) {
        plotState[kind].figure.remove();
        delete plotState[kind];
      }
    }
    for (const kind of kinds) {
      if (plotState[kind]) continue;
      const figure = el("figure", { "data-kind": kind });
      const img = el("img", { alt: kind + " plot", id: "plot-" + kind });
      const caption = el("figcaption", {}, kind);
      img.onerror = () => {
        caption.textContent = kind + ": not available yet (no model, or the compute pool is busy); retrying";
        setTimeout(() => refreshPlot(kind), MODEL_PLOT_MS);
      };
      img.onload = () => (caption.textContent = kind);
      figure.append(img, caption);
      holder.appendChild(figure);
      plotState[kind] = { figure, img, last: 0, timer: null };
    }
  }

  function renderSummary(data) {
    const s = data.strategy;
    const summary = document.getElementById("summary");
    const items = [
      ["phase", s.finished ? "finished" : s.phase + " (" + (s.phase_index + 1) + "/" + s.phase_count + ")"],
      ["trials done", s.trials_completed],
      ["pending", s.trials_pending],
      ["last activity", ago(data.now - s.last_activity)],
      ["speculation hits", s.hit_rate === null ? "—" : Math.round(100 * s.hit_rate) + "% of " + s.model_asks],
      ["metadata", metaText(s.metadata) || "—"],
    ];
    summary.replaceChildren(
      ...items.map(([k, v]) => {
        const span = el("span", { class: "item" });
        span.append(el("b", {}, k + ": "), document.createTextNode(String(v)));
        return span;
      })
    );
  }

  function renderTrials(data) {
    const table = document.getElementById("trials");
    const outcomeNames = [...new Set(data.trials.flatMap((t) => Object.keys(t.outcomes)))];
    const head = el("tr");
    ["trial", "state", "phase", ...data.parameters, ...(outcomeNames.length ? outcomeNames : ["outcome"]), "metadata"].forEach((h) =>
      head.appendChild(el("th", {}, h))
    );
    table.tHead.replaceChildren(head);
    const rows = data.trials.map((t) => {
      const tr = el("tr", { "data-trial": t.id, class: t.state });
      const values = [t.id, t.state, t.phase];
      for (const p of data.parameters) values.push(t.params.map((s) => s[p]).join(" | "));
      for (const o of outcomeNames.length ? outcomeNames : ["outcome"]) values.push(o in t.outcomes ? t.outcomes[o] : "");
      values.push(metaText(t.metadata));
      values.forEach((v) => tr.appendChild(el("td", {}, v)));
      return tr;
    });
    table.tBodies[0].replaceChildren(...rows);
  }

  async function renderStrategy() {
    const data = await getJSON("/api/strategies/" + sid);
    version = data.strategy.version;
    body.dataset.version = version;
    renderSummary(data);
    renderTrials(data);
    ensurePlots(data.plots);
    for (const kind of data.plots) refreshPlot(kind);
  }

  // ---------------------------------------------------------------- wiring
  let pending = null;
  function soon(render) {
    if (pending) return;
    pending = setTimeout(() => {
      pending = null;
      render().catch((e) => console.warn(e));
    }, 50);
  }

  if (page === "list") {
    renderList().catch((e) => console.warn(e));
    follow(() => soon(renderList));
    setInterval(() => soon(renderList), 10000); // "last activity" keeps ageing
  } else if (page === "strategy") {
    renderStrategy().catch((e) => console.warn(e));
    follow((versions) => {
      if (versions[sid] !== undefined && versions[sid] !== version) soon(renderStrategy);
    });
  }
})();
