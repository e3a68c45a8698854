// psyserve dashboard: renders the JSON feeds into the page and follows /api/events (server-sent events).
// Plain browser JavaScript, no build step and no library. Read-only: it never changes the experiment.
// Cheap for the server and the browser by design: the list's events carry only the change marks that
// moved; a strategy page's event stream carries its feed itself (the trials that changed, no request
// per change); the page redraws at most every REFRESH_MS and only while visible, appends and replaces
// only the changed rows, draws the trial history itself (SVG, in place), and loads a server-drawn
// model plot only when the told data changed, at most every MODEL_PLOT_MS and only while visible.
"use strict";

(function () {
  const body = document.body;
  const page = body.dataset.page;
  const live = document.getElementById("live");
  const REFRESH_MS = 700; // a strategy page is redrawn at most this often (a tell still shows within a
  // second: the server looks for changes every 0.2 s)
  const ASK_MS = 2000; // a change that is only new asks (pending trials) is shown within this
  const LIST_REFRESH_MS = 1000;
  const HISTORY_MS = 2000; // the history SVG is updated at most this often
  const MODEL_PLOT_MS = 10000; // the server redraws a model plot at most this often (app.py)
  const MAX_ROWS = 500; // as the server's MAX_TABLE_ROWS
  const SVG = "http://www.w3.org/2000/svg";
  const PHASE_COLOURS = ["#1e88e5", "#e53935", "#43a047", "#8e24aa", "#fb8c00", "#00897b"];

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
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

  function valueText(v) {
    if (typeof v === "number" && !Number.isInteger(v)) return String(Number(v.toPrecision(4)));
    return String(v);
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

  // Calls onMarks with the strategies whose change mark moved ({id: mark}).
  function follow(onMarks) {
    const source = new EventSource("/api/events");
    source.onopen = () => live.classList.add("on");
    source.onerror = () => live.classList.remove("on");
    source.onmessage = (event) => onMarks(JSON.parse(event.data));
  }

  // Runs `task` now, or once `gap` ms after its last start; never two at a time; calls made meanwhile
  // collapse into one more run.
  function throttled(task, gap) {
    let last = 0;
    let timer = null;
    let running = false;
    let again = false;
    function start() {
      timer = null;
      running = true;
      last = Date.now();
      task()
        .catch((e) => console.warn(e))
        .finally(() => {
          running = false;
          if (again) {
            again = false;
            request();
          }
        });
    }
    function request() {
      if (running) {
        again = true;
        return;
      }
      if (timer) return;
      timer = setTimeout(start, Math.max(0, last + gap - Date.now()));
    }
    return request;
  }

  // ---------------------------------------------------------------- strategy list
  async function renderList() {
    const data = await getJSON("/api/strategies");
    const tbody = document.querySelector("#strategies tbody");
    const rows = data.strategies.map((s) => {
      const tr = el("tr", { "data-strategy": s.id });
      const link = el("a", { href: "/s/" + s.id }, s.id);
      const cells = [
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
      cells.forEach((c) => tr.appendChild(el("td", {}, c)));
      return tr;
    });
    tbody.replaceChildren(...rows);
  }

  // ---------------------------------------------------------------- one strategy
  const sid = body.dataset.strategy;
  const trials = new Map(); // trial id -> trial, the newest MAX_ROWS
  let parameters = null; // [{name, type, lower, upper, log, choices}]
  let outcomeType = "binary";
  let phases = [];
  let mark = null;
  let plotVersion = null;
  let columns = "";
  const plotState = {};
  let historyDrawn = 0;
  let historyTimer = null;
  const historyDirty = new Set(); // trials received since the history was last drawn

  function loadPlot(kind) {
    const state = plotState[kind];
    state.timer = null;
    state.last = Date.now();
    state.loaded = plotVersion;
    state.img.src = "/s/" + sid + "/plot/" + kind + ".png?v=" + encodeURIComponent(plotVersion);
  }

  function refreshPlot(kind) {
    const state = plotState[kind];
    if (document.hidden || state.loaded === plotVersion || state.timer) return;
    state.timer = setTimeout(() => loadPlot(kind), Math.max(0, state.last + MODEL_PLOT_MS - Date.now()));
  }

  function ensurePlots(kinds) {
    const holder = document.getElementById("plots");
    for (const kind of Object.keys(plotState)) {
      if (!kinds.includes(kind)) {
        clearTimeout(plotState[kind].timer);
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
        plotState[kind].loaded = null;
        refreshPlot(kind);
      };
      img.onload = () => (caption.textContent = kind);
      figure.append(img, caption);
      holder.insertBefore(figure, document.querySelector('#plots figure[data-kind="history"]'));
      plotState[kind] = { figure, img, last: 0, timer: null, loaded: null };
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
    const text = JSON.stringify(items);
    if (summary.dataset.text === text) return; // unchanged: leave the DOM (and the next frame) alone
    summary.dataset.text = text;
    summary.replaceChildren(
      ...items.map(([k, v]) => {
        const span = el("span", { class: "item" });
        span.append(el("b", {}, k + ": "), document.createTextNode(String(v)));
        return span;
      })
    );
  }

  function outcomeNames() {
    const names = new Set();
    for (const t of trials.values()) for (const o of Object.keys(t.outcomes)) names.add(o);
    return names.size ? [...names] : ["outcome"];
  }

  function trialRow(t, outcomes) {
    const tr = el("tr", { "data-trial": t.id, class: t.state });
    const values = [t.id, t.state, t.phase];
    for (const p of parameters) values.push(t.params.map((s) => (p.name in s ? valueText(s[p.name]) : "")).join(" | "));
    for (const o of outcomes) values.push(o in t.outcomes ? valueText(t.outcomes[o]) : "");
    values.push(metaText(t.metadata));
    values.forEach((v) => tr.appendChild(el("td", {}, v)));
    return tr;
  }

  // Replaces only the rows of the trials just received, unless the columns changed.
  function renderTrials(received) {
    const table = document.getElementById("trials");
    const tbody = table.tBodies[0];
    const outcomes = outcomeNames();
    const heads = ["trial", "state", "phase", ...parameters.map((p) => p.name), ...outcomes, "metadata"];
    if (heads.join("\u0000") !== columns) {
      columns = heads.join("\u0000");
      const head = el("tr");
      heads.forEach((h) => head.appendChild(el("th", {}, h)));
      table.tHead.replaceChildren(head);
      const ordered = [...trials.values()].sort((a, b) => b.id - a.id);
      tbody.replaceChildren(...ordered.map((t) => trialRow(t, outcomes)));
      return;
    }
    for (const t of [...received].sort((a, b) => a.id - b.id)) {
      const row = trialRow(t, outcomes);
      const old = tbody.querySelector('tr[data-trial="' + t.id + '"]');
      if (old) {
        old.replaceWith(row);
        continue;
      }
      let next = tbody.firstElementChild; // newest first: before the first row with a smaller id
      while (next && Number(next.dataset.trial) > t.id) next = next.nextElementSibling;
      tbody.insertBefore(row, next);
    }
    while (tbody.rows.length > MAX_ROWS) tbody.lastElementChild.remove();
  }

  // ---------------------------------------------------------------- trial history, drawn here (SVG)
  function axisValue(p, v) {
    if (p.choices && p.choices.length) return p.choices.indexOf(String(v));
    if (typeof v === "boolean") return v ? 1 : 0;
    const x = Number(v);
    return p.log && x > 0 ? Math.log10(x) : x;
  }

  function panelsFor(list) {
    const panels = parameters.map((p) => {
      const lo = p.choices.length ? 0 : axisValue(p, p.lower);
      const hi = p.choices.length ? p.choices.length - 1 : axisValue(p, p.upper);
      return { label: p.name + (p.log ? " (log)" : ""), lo, hi, ticks: p.choices, values: (t) => t.params.map((s) => axisValue(p, s[p.name])) };
    });
    const name = outcomeNames()[0];
    let lo = Infinity;
    let hi = -Infinity;
    for (const t of list) {
      const v = t.outcomes[name];
      if (typeof v === "number") {
        lo = Math.min(lo, v);
        hi = Math.max(hi, v);
      }
    }
    if (outcomeType === "binary" || lo === Infinity) {
      lo = Math.min(0, lo);
      hi = Math.max(1, hi);
    }
    panels.push({ label: name, lo, hi, ticks: [], values: (t) => (typeof t.outcomes[name] === "number" ? [t.outcomes[name]] : []) });
    return panels;
  }

  // The history is kept, not redrawn: its x axis spans a fixed number of trials (a power of two) and
  // its y axes the parameters' bounds, so a new or changed trial only adds or replaces its own markers.
  // The whole SVG is rebuilt only when a scale or a phase boundary changes (a few times a run).
  const HIST = { W: 640, H: 64, left: 110, right: 12, top: 8 };
  let hist = null; // {key, panels, groups, xOf, yOfs, markers: Map(trial id -> [circle]), label}

  function historyMarkers(t) {
    const out = [];
    const colour = PHASE_COLOURS[t.phase_index % PHASE_COLOURS.length];
    const pending = t.state === "pending";
    hist.panels.forEach((panel, row) => {
      for (const v of panel.values(t)) {
        if (!Number.isFinite(v)) continue;
        const circle = svg("circle", {
          class: "trial",
          "data-trial": t.id,
          cx: hist.xOf(t.id).toFixed(1),
          cy: hist.yOfs[row](v).toFixed(1),
          r: 3,
          fill: pending ? "none" : colour,
          stroke: colour,
        });
        hist.groups[row].appendChild(circle);
        out.push(circle);
      }
    });
    return out;
  }

  function buildHistory(list, panels, first, capacity, changes, key) {
    const { W, H, left, right, top } = HIST;
    const height = top + panels.length * (H + 10) + 22;
    const root = svg("svg", { width: W, height, viewBox: "0 0 " + W + " " + height, class: "history", role: "img" });
    const xOf = (id) => left + 4 + ((id - first) / Math.max(1, capacity - 1)) * (W - left - right - 8);
    const groups = [];
    const yOfs = [];
    panels.forEach((panel, row) => {
      const y0 = top + row * (H + 10);
      const span = panel.hi - panel.lo || 1;
      yOfs.push((v) => y0 + H - 4 - ((v - panel.lo) / span) * (H - 8));
      const g = svg("g", { "data-panel": panel.label });
      g.appendChild(svg("rect", { x: left, y: y0, width: W - left - right, height: H, fill: "#fff", stroke: "#ccc" }));
      g.appendChild(svg("text", { x: left - 6, y: y0 + H / 2 + 4, "text-anchor": "end", "font-size": 11 }, panel.label));
      const labels = panel.ticks.length ? [panel.ticks[panel.ticks.length - 1], panel.ticks[0]] : [valueText(panel.hi), valueText(panel.lo)];
      g.appendChild(svg("text", { x: left - 6, y: y0 + 9, "text-anchor": "end", "font-size": 9, fill: "#777" }, labels[0]));
      g.appendChild(svg("text", { x: left - 6, y: y0 + H, "text-anchor": "end", "font-size": 9, fill: "#777" }, labels[1]));
      for (const [before, after] of changes) {
        const x = (xOf(before) + xOf(after)) / 2;
        g.appendChild(svg("line", { x1: x, x2: x, y1: y0, y2: y0 + H, stroke: "#555", "stroke-dasharray": "4 3" }));
      }
      root.appendChild(g);
      groups.push(g);
    });
    const legendY = height - 6;
    const label = svg("text", { x: left, y: legendY, "font-size": 11 }, "");
    root.appendChild(label);
    let x = left + 110;
    phases.forEach((ph, i) => {
      root.appendChild(svg("circle", { cx: x, cy: legendY - 4, r: 4, fill: PHASE_COLOURS[i % PHASE_COLOURS.length] }));
      root.appendChild(svg("text", { x: x + 8, y: legendY, "font-size": 11 }, ph.name));
      x += 16 + 7 * ph.name.length;
    });
    hist = { key, panels, groups, xOf, yOfs, markers: new Map(), label };
    for (const t of list) hist.markers.set(t.id, historyMarkers(t));
    document.getElementById("plot-history").replaceChildren(root);
  }

  function drawHistory() {
    historyTimer = null;
    historyDrawn = Date.now();
    const list = [...trials.values()].sort((a, b) => a.id - b.id);
    const panels = panelsFor(list);
    const first = list.length ? list[0].id : 0;
    const last = list.length ? list[list.length - 1].id : 1;
    let capacity = 16;
    while (capacity < last - first + 1) capacity *= 2;
    // phase changes: a dashed line before each trial whose phase differs from the previous trial's
    const changes = [];
    for (let i = 1; i < list.length; i++) if (list[i].phase_index !== list[i - 1].phase_index) changes.push([list[i - 1].id, list[i].id]);
    const key = JSON.stringify([panels.map((p) => [p.label, p.lo, p.hi]), first, capacity, changes, phases.map((p) => p.name)]);
    if (hist === null || hist.key !== key) {
      buildHistory(list, panels, first, capacity, changes, key);
    } else {
      for (const id of historyDirty) {
        for (const old of hist.markers.get(id) || []) old.remove();
        const t = trials.get(id);
        if (t) hist.markers.set(id, historyMarkers(t));
        else hist.markers.delete(id);
      }
    }
    historyDirty.clear();
    hist.label.textContent = "trial " + first + "–" + last;
  }

  // Drawn in the same task as the table when due (one frame for both), else left for a later
  // redraw; a timer draws what is left when none comes.
  function refreshHistory() {
    if (Date.now() - historyDrawn >= HISTORY_MS) {
      clearTimeout(historyTimer);
      drawHistory();
      return;
    }
    if (historyTimer) return;
    historyTimer = setTimeout(() => {
      historyTimer = null;
      if (!document.hidden) drawHistory(); // else drawn when shown again (renderStrategy)
    }, historyDrawn + HISTORY_MS + 1000 - Date.now());
  }

  // The feed arrives on the event stream (/api/events?strategy=N&since=0): everything first, then
  // the trials that changed. Each message is merged at once; the page is redrawn at most every
  // REFRESH_MS (one frame for the table, the summary and, when due, the history) and not at all
  // while the document is hidden (it catches up when shown again).
  let latest = null; // the newest feed message
  const changed = new Set(); // trials received since the table was last drawn

  function receive(data) {
    if (data.parameters) {
      parameters = data.parameters;
      outcomeType = data.outcome_type;
      trials.clear();
      columns = ""; // a full answer (first, or after a reconnect): the table is rebuilt
      hist = null;
    }
    phases = data.phases;
    for (const t of data.trials) {
      trials.set(t.id, t);
      changed.add(t.id);
      historyDirty.add(t.id);
    }
    if (trials.size > MAX_ROWS) {
      const keep = new Set([...trials.keys()].sort((a, b) => b - a).slice(0, MAX_ROWS));
      for (const id of [...trials.keys()]) if (!keep.has(id)) trials.delete(id);
    }
    latest = data;
  }

  async function renderStrategy() {
    if (latest === null || document.hidden) return;
    const data = latest;
    mark = data.strategy.mark;
    plotVersion = data.strategy.version;
    body.dataset.version = plotVersion;
    renderSummary(data);
    const received = [...changed].map((id) => trials.get(id)).filter((t) => t !== undefined);
    changed.clear();
    renderTrials(received);
    ensurePlots(data.plots);
    for (const kind of data.plots) refreshPlot(kind);
    if (historyDirty.size || !document.querySelector("#plot-history svg")) refreshHistory();
  }

  // ---------------------------------------------------------------- wiring
  if (page === "list") {
    const refresh = throttled(renderList, LIST_REFRESH_MS);
    refresh();
    follow(refresh);
    setInterval(refresh, 10000); // "last activity" keeps ageing
  } else if (page === "strategy") {
    const history = el("figure", { "data-kind": "history" });
    history.append(el("div", { id: "plot-history", class: "svgplot" }), el("figcaption", {}, "history (drawn in the page)"));
    document.getElementById("plots").appendChild(history);
    const refresh = throttled(renderStrategy, REFRESH_MS);
    const source = new EventSource("/api/events?strategy=" + encodeURIComponent(sid) + "&since=0");
    source.onopen = () => live.classList.add("on");
    let later = null; // a redraw left for a change that is only new asks
    const redraw = () => {
      clearTimeout(later);
      later = null;
      refresh();
    };
    source.onmessage = (event) => {
      const data = JSON.parse(event.data);
      receive(data);
      // a tell (a trial that settled) or a full answer: redrawn now (at most every REFRESH_MS); new
      // pending trials alone: within ASK_MS, or with the tell that usually follows sooner (one frame)
      if (data.parameters || data.trials.some((t) => t.state !== "pending") || mark === null) redraw();
      else if (later === null) later = setTimeout(redraw, ASK_MS);
    };
    source.onerror = () => {
      live.classList.remove("on");
      // closed for good (an error status, e.g. signed out): the JSON feed says which, and where to go
      if (source.readyState === EventSource.CLOSED) getJSON("/api/strategies/" + sid + "?since=0").catch((e) => console.warn(e));
    };
    document.addEventListener("visibilitychange", () => {
      if (document.hidden) return;
      refresh();
      for (const kind of Object.keys(plotState)) refreshPlot(kind);
    });
  }
})();
