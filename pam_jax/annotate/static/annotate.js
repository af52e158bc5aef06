/* pam-jax annotate: the page. Plain JavaScript, plotly.js served by the local server. */
"use strict";

(function () {
  const PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4",
                   "#42d4f4", "#f032e6", "#9a6324", "#808000", "#000075"];
  const ORD = ["1st", "2nd", "3rd"];
  const $ = (id) => document.getElementById(id);

  const app = {
    progress: null,     // GET /api/progress
    sample: null,       // GET /api/samples/i
    state: null,        // {ranked, equal, not_comparable, own_action}
    history: [],        // undo stack of JSON states
    saved: "",          // JSON of the state as loaded/saved (dirty check)
    mode: null,         // null | "equal" | "nc" | "own"
    pendingEqual: null, // first candidate of an equal pair
    ownPick: null,      // first point of an own action being given
    discardArmed: null, // navigation target confirmed once while dirty
    busy: false,
  };

  // ------------------------------------------------------------------ helpers

  function colour(k) { return PALETTE[k % PALETTE.length]; }
  function ordinal(i) { return i < 3 ? ORD[i] : (i + 1) + "th"; }
  function label(k) { return "#" + (k + 1); }
  function clone(x) { return JSON.parse(JSON.stringify(x)); }
  function dirty() { return app.state !== null && JSON.stringify(app.state) !== app.saved; }
  function K() { return app.sample && app.sample.candidates ? app.sample.candidates.length : 0; }

  function message(text, kind) {
    const m = $("message");
    m.textContent = text || "";
    m.className = text ? (kind || "info") : "";
  }

  function setMode(mode, text) {
    app.mode = mode;
    if (mode !== "equal") app.pendingEqual = null;
    if (mode !== "own") app.ownPick = null;
    $("mode").textContent = text || "";
    $("own-btn").classList.toggle("on", mode === "own");
  }

  async function api(path, options) {
    const r = await fetch(path, Object.assign({ cache: "no-store", credentials: "same-origin" }, options || {}));
    let body = null;
    try { body = await r.json(); } catch (e) { body = { error: "the server sent no JSON (HTTP " + r.status + ")" }; }
    return { status: r.status, ok: r.ok, body: body };
  }

  function change(fn) {
    const before = JSON.stringify(app.state);
    fn(app.state);
    if (JSON.stringify(app.state) !== before) {
      app.history.push(before);
      app.discardArmed = null;
    }
    render();
  }

  // ------------------------------------------------------------------ actions

  function rank(k) {
    if (k < 0 || k >= K()) { message("there is no candidate " + label(k), "warn"); return; }
    if (app.state.ranked.includes(k)) { message(label(k) + " is already ranked (U undoes)", "warn"); return; }
    if (app.state.not_comparable.includes(k)) {
      message(label(k) + " is marked not comparable; press X then " + (k + 1) + " to unmark it", "warn"); return;
    }
    message("");
    change((s) => s.ranked.push(k));
  }

  function candidateKey(k) {
    if (app.mode === "equal") {
      if (app.pendingEqual === null) {
        app.pendingEqual = k;
        $("mode").textContent = "equal: " + label(k) + " = which candidate? (number key or click)";
        render();
        return;
      }
      const a = app.pendingEqual;
      setMode(null);
      if (a === k) { message("a candidate cannot be equal to itself", "warn"); render(); return; }
      const pair = [Math.min(a, k), Math.max(a, k)];
      if (app.state.equal.some((p) => p[0] === pair[0] && p[1] === pair[1])) {
        message(label(a) + " and " + label(k) + " are already marked equal", "warn"); render(); return;
      }
      message("");
      change((s) => s.equal.push(pair));
    } else if (app.mode === "nc") {
      setMode(null);
      if (app.state.ranked.includes(k)) { message(label(k) + " is ranked; undo its ranking first", "warn"); render(); return; }
      message("");
      change((s) => {
        const i = s.not_comparable.indexOf(k);
        if (i >= 0) s.not_comparable.splice(i, 1);
        else {
          s.not_comparable.push(k);
          s.not_comparable.sort((x, y) => x - y);
          s.equal = s.equal.filter((p) => p[0] !== k && p[1] !== k);
        }
      });
    } else if (app.mode === "own") {
      message("click a point of the cloud (Esc cancels the own action)", "warn");
    } else {
      rank(k);
    }
  }

  function startOwn() {
    if (!app.sample || !K()) return;
    setMode("own", app.sample.two_picks
      ? "own action: click the first pick point on the cloud"
      : "own action: click the pick point on the cloud");
    render();
  }

  function ownPoint(p, onCloud) {
    if (app.ownPick === null) {
      if (!onCloud) { message("pick a point of the object, not of the table", "warn"); return; }
      app.ownPick = p;
      $("mode").textContent = app.sample.two_picks
        ? "own action: click the second pick point on the cloud"
        : "own action: click the place point (on the cloud or on the grey table grid)";
      message("");
      render();
      return;
    }
    if (app.sample.two_picks && !onCloud) { message("both picks must be points of the object", "warn"); return; }
    const a = app.ownPick;
    if (a[0] === p[0] && a[1] === p[1] && a[2] === p[2]) {
      message("the second point must differ from the first", "warn"); return;
    }
    setMode(null);
    message("");
    change((s) => { s.own_action = [a, p]; });
  }

  function undo() {
    if (app.mode) { setMode(null); render(); return; }
    if (!app.history.length) { message("nothing to undo", "warn"); return; }
    app.state = JSON.parse(app.history.pop());
    message("");
    render();
  }

  function clearAll() {
    setMode(null);
    change((s) => { s.ranked = []; s.equal = []; s.not_comparable = []; s.own_action = null; });
  }

  // ------------------------------------------------------------------ loading, saving

  async function refreshProgress() {
    const r = await api("/api/progress");
    if (!r.ok) { message(r.body.error || "cannot read the progress", "error"); return null; }
    app.progress = r.body;
    const p = r.body;
    $("progress-text").textContent = p.done + "/" + p.total;
    $("progress-bar").style.width = (p.total ? 100 * p.done / p.total : 0) + "%";
    const sel = $("sample-list");
    const cur = app.sample ? app.sample.index : null;
    sel.textContent = "";
    for (const s of p.samples) {
      const o = document.createElement("option");
      o.value = String(s.index);
      o.textContent = (s.done ? "\u2713 " : "\u00a0\u00a0 ") + (s.index + 1) + ". " + s.sample_id;
      sel.appendChild(o);
    }
    if (cur !== null) sel.value = String(cur);
    const ann = $("annotator");
    if (p.annotator) { ann.value = p.annotator; ann.disabled = true; ann.title = "set by --annotator"; }
    return p;
  }

  async function load(index, note) {
    app.busy = true;
    try {
      const r = await api("/api/samples/" + index);
      if (!r.ok) { message(r.body.error || "cannot load sample " + index, "error"); return; }
      const s = r.body;
      app.sample = s;
      app.history = [];
      app.discardArmed = null;
      setMode(null);
      $("sample-id").textContent = s.sample_id;
      $("position").textContent = "sample " + (s.index + 1) + " of " + s.total;
      const st = $("sample-state");
      st.textContent = s.annotated ? "annotated" + (s.annotator ? " by " + s.annotator : "") +
        (s.annotated_at ? " at " + s.annotated_at : "") : "not annotated";
      st.className = s.annotated ? "done" : "";
      $("sample-list").value = String(s.index);
      if (s.error) {
        app.state = null;
        app.saved = "";
        message("this sample cannot be annotated: " + s.error + " (S skips it)", "error");
        render();
        return;
      }
      app.state = clone(s.state);
      app.saved = JSON.stringify(app.state);
      if (note) message(note[0], note[1]);
      else if (s.annotated_elsewhere) {
        message("this sample was annotated by another tool; its ranking is not shown here, and " +
                "submitting replaces it", "warn");
      } else message("");
      render();
    } catch (e) {
      message("cannot reach the server (" + e + ")", "error");
    } finally {
      app.busy = false;
    }
  }

  function navigate(index, why) {
    if (index === null || index === undefined || !app.progress) return;
    if (dirty() && why !== "skip" && app.discardArmed !== index) {
      app.discardArmed = index;
      message("this sample has unsaved changes: do it again to discard them, or Enter to submit", "warn");
      if (app.sample) $("sample-list").value = String(app.sample.index);
      return;
    }
    load(index);
  }

  function step(delta) {
    if (!app.progress || !app.sample) return;
    const n = app.progress.total;
    navigate((app.sample.index + delta + n) % n, "browse");
  }

  function firstUnannotatedAfter(i) {
    const ss = app.progress.samples;
    for (let j = 1; j <= ss.length; j++) {
      const s = ss[(i + j) % ss.length];
      if (!s.done) return s.index;
    }
    return null;
  }

  function skip() {
    if (!app.sample || !app.progress) return;
    const next = firstUnannotatedAfter(app.sample.index);
    if (next === null || next === app.sample.index) { message("no other unannotated sample", "info"); return; }
    navigate(next, "skip");
  }

  async function submit() {
    if (app.busy || !app.sample) return;
    if (app.sample.error) { message("this sample cannot be annotated; S skips it", "error"); return; }
    if (app.mode) { message("finish or cancel (Esc) the current mode first", "warn"); return; }
    const annotator = $("annotator").value.trim();
    if (!annotator) { message("enter your name as annotator (top right) first", "error"); $("annotator").focus(); return; }
    const s = app.sample;
    const payload = Object.assign({ sample_id: s.sample_id, version: s.version }, clone(app.state));
    if (!$("annotator").disabled) payload.annotator = annotator;
    app.busy = true;
    let r;
    try {
      r = await api("/api/samples/" + s.index + "/annotation", {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(payload),
      });
    } catch (e) {
      app.busy = false;
      message("cannot reach the server (" + e + "); nothing was saved", "error");
      return;
    }
    app.busy = false;
    if (!r.ok) {
      const prefix = r.status === 409 ? "not saved, conflict: " : "not saved: ";
      message(prefix + (r.body.error || "HTTP " + r.status) + (r.status === 409 ? " (R reloads)" : ""), "error");
      return;
    }
    const b = r.body;
    let note = "saved " + b.sample_id + " (" + b.pairs + " comparisons written";
    note += b.dropped_pairs ? ", " + b.dropped_pairs + " beyond the format's rows dropped)" : ")";
    app.saved = JSON.stringify(app.state);
    await refreshProgress();
    if (b.next_index === null || b.next_index === undefined) {
      await load(s.index, [note + "; all " + b.total + " samples are annotated", "info"]);
    } else {
      await load(b.next_index, [note, "info"]);
    }
  }

  // ------------------------------------------------------------------ rendering

  function rowsNeeded(st, k) {
    const nc = new Set(st.not_comparable);
    const r = st.ranked.length;
    let u = 0;
    for (let c = 0; c < k; c++) if (!st.ranked.includes(c) && !nc.has(c)) u++;
    // equal groups wholly unranked: all pairs inside them
    const parent = [...Array(k).keys()];
    const find = (i) => (parent[i] === i ? i : (parent[i] = find(parent[i])));
    for (const [a, b] of st.equal) parent[find(a)] = find(b);
    const groups = {};
    for (let c = 0; c < k; c++) (groups[find(c)] = groups[find(c)] || []).push(c);
    let eq = 0;
    for (const g of Object.values(groups)) {
      if (g.length > 1 && !st.ranked.includes(g[0])) eq += g.length * (g.length - 1) / 2;
    }
    return r * u + r * (r - 1) / 2 + eq;
  }

  function render() {
    renderPanel();
    renderPlot();
  }

  function renderPanel() {
    const s = app.sample, st = app.state;
    const list = $("candidates"), ranking = $("ranking");
    list.textContent = "";
    ranking.textContent = "";
    $("rows-info").textContent = "";
    if (!s || !st) { $("own-status").textContent = "–"; return; }
    const k = K();
    for (let c = 0; c < k; c++) {
      const li = document.createElement("li");
      li.dataset.k = String(c);
      const ri = st.ranked.indexOf(c);
      if (ri >= 0) li.classList.add("ranked");
      if (st.not_comparable.includes(c)) li.classList.add("nc");
      if (app.pendingEqual === c) li.classList.add("pending");
      const sw = document.createElement("span");
      sw.className = "swatch";
      sw.style.background = colour(c);
      const b = document.createElement("button");
      b.type = "button";
      b.className = "cand";
      b.dataset.k = String(c);
      b.textContent = label(c);
      b.title = "rank " + label(c) + " next (key " + ((c + 1) % 10) + ")";
      b.addEventListener("click", () => candidateKey(c));
      const badge = document.createElement("span");
      badge.className = "badge";
      const eqs = st.equal.filter((p) => p.includes(c)).map((p) => label(p[0] === c ? p[1] : p[0]));
      badge.textContent = (ri >= 0 ? ordinal(ri) : (st.not_comparable.includes(c) ? "not comparable" : "")) +
        (eqs.length ? " = " + eqs.join(", ") : "");
      const eq = document.createElement("button");
      eq.type = "button";
      eq.className = "small eq-btn";
      eq.textContent = "=";
      eq.title = "mark equal to another candidate (E)";
      eq.addEventListener("click", () => {
        if (app.mode !== "equal") setMode("equal", "equal: " + label(c) + " = which candidate? (number key or click)");
        candidateKey(c);
      });
      const nc = document.createElement("button");
      nc.type = "button";
      nc.className = "small nc-btn";
      nc.textContent = st.not_comparable.includes(c) ? "comparable" : "not comparable";
      nc.title = "toggle: this candidate cannot be compared (X)";
      nc.addEventListener("click", () => { setMode("nc"); candidateKey(c); });
      li.append(sw, b, badge, eq, nc);
      const note = s.notes && s.notes[String(c)];
      if (note) {
        const n = document.createElement("span");
        n.className = "note";
        n.textContent = note;
        li.appendChild(n);
      }
      list.appendChild(li);
    }
    st.ranked.forEach((c, i) => {
      const li = document.createElement("li");
      const sw = document.createElement("span");
      sw.className = "swatch";
      sw.style.display = "inline-block";
      sw.style.verticalAlign = "middle";
      sw.style.marginRight = "6px";
      sw.style.background = colour(c);
      li.append(sw, document.createTextNode(label(c)));
      const prev = st.ranked[i - 1];
      if (i > 0 && st.equal.some((p) => p[0] === Math.min(prev, c) && p[1] === Math.max(prev, c))) {
        const e = document.createElement("span");
        e.className = "eq";
        e.textContent = "  (equal to " + label(prev) + ")";
        li.appendChild(e);
      }
      ranking.appendChild(li);
    });
    if (!st.ranked.length) {
      const li = document.createElement("li");
      li.className = "eq";
      li.textContent = "press a number or click a candidate";
      ranking.appendChild(li);
    }
    const need = rowsNeeded(st, k), have = s.ranking_rows;
    const info = $("rows-info");
    info.textContent = need + " of the " + have + " ranking comparisons the format stores" +
      (need > have ? ": " + (need - have) + " will be dropped (the pairs among the last-ranked)" : "");
    info.className = need > have ? "warn" : "";
    const own = st.own_action;
    const fmt = (p) => "(" + p.map((v) => v.toFixed(3)).join(", ") + ")";
    $("own-status").textContent = own
      ? (s.two_picks ? "picks " : "pick ") + fmt(own[0]) + (s.two_picks ? " and " : " \u2192 place ") + fmt(own[1])
      : (app.ownPick ? "first point " + fmt(app.ownPick) + " \u2026" : "none");
  }

  function sceneRanges(s) {
    const lo = [Infinity, Infinity, Infinity], hi = [-Infinity, -Infinity, -Infinity];
    const add = (p) => { for (let i = 0; i < 3; i++) { lo[i] = Math.min(lo[i], p[i]); hi[i] = Math.max(hi[i], p[i]); } };
    s.points.forEach(add);
    s.candidates.forEach((c) => { add(c[0]); add(c[1]); });
    if (app.state && app.state.own_action) app.state.own_action.forEach(add);
    return { lo, hi };
  }

  function arrowTrace(uid, a, b, c, size) {
    const d = [b[0] - a[0], b[1] - a[1], b[2] - a[2]];
    const n = Math.hypot(d[0], d[1], d[2]) || 1;
    return {
      type: "cone", uid: uid, x: [b[0]], y: [b[1]], z: [b[2]], u: [d[0] / n], v: [d[1] / n], w: [d[2] / n],
      anchor: "tip", sizemode: "raw", sizeref: size, colorscale: [[0, c], [1, c]], showscale: false,
      hoverinfo: "skip", showlegend: false,
    };
  }

  // Every trace has a fixed uid and a text that never changes for that uid: plotly.js (gl3d)
  // draws the text of a trace whose text was changed by Plotly.react at a fraction of its size,
  // so ranks are drawn by one text trace per rank whose points move, not by relabelling.
  function renderPlot() {
    const s = app.sample, div = $("plot");
    if (!s || !s.points) { Plotly.purge(div); return; }
    const st = app.state || { ranked: [], equal: [], not_comparable: [], own_action: null };
    const { lo, hi } = sceneRanges(s);
    const span = Math.max(hi[0] - lo[0], hi[1] - lo[1], 1e-3);
    const head = 0.035 * span;
    const px = s.points.map((p) => p[0]), py = s.points.map((p) => p[1]), pz = s.points.map((p) => p[2]);
    const traces = [], roles = [];
    const add = (trace, role) => { traces.push(trace); roles.push(role); };
    const sid = "s" + s.index + "-";
    add({
      type: "scatter3d", uid: sid + "cloud", mode: "markers", x: px, y: py, z: pz, name: "cloud", showlegend: false,
      marker: { size: 3, color: pz, colorscale: "Viridis", opacity: 0.9,
                colorbar: { title: { text: "height (m)" }, thickness: 12, len: 0.45, x: 1.0 } },
      hovertemplate: "%{x:.3f}, %{y:.3f}, %{z:.3f}<extra>cloud</extra>",
    }, { role: "cloud" });
    if (app.mode === "own" && app.ownPick && !s.two_picks) {
      // a clickable grid on the table plane for a place point off the object
      const m = 0.15 * span, n = 36, z0 = lo[2];
      const gx = [], gy = [], gz = [];
      for (let i = 0; i <= n; i++) for (let j = 0; j <= n; j++) {
        gx.push(lo[0] - m + (hi[0] - lo[0] + 2 * m) * i / n);
        gy.push(lo[1] - m + (hi[1] - lo[1] + 2 * m) * j / n);
        gz.push(z0);
      }
      add({ type: "scatter3d", uid: sid + "table", mode: "markers", x: gx, y: gy, z: gz, showlegend: false,
            marker: { size: 2, color: "#9aa0aa", opacity: 0.35 },
            hovertemplate: "%{x:.3f}, %{y:.3f}, %{z:.3f}<extra>table</extra>" }, { role: "table" });
    }
    const nc = new Set(st.not_comparable);
    s.candidates.forEach((c, k) => {
      const ranked = st.ranked.includes(k);
      const col = nc.has(k) ? "#9a9a9a" : colour(k);
      add({
        type: "scatter3d", uid: sid + "cand-" + k, mode: "lines+markers+text",
        x: [c[0][0], c[1][0]], y: [c[0][1], c[1][1]], z: [c[0][2], c[1][2]], name: label(k), showlegend: false,
        text: [label(k), ""], textposition: "top center", textfont: { size: 15, color: colour(k) },
        line: { color: col, width: ranked ? 10 : 6, dash: nc.has(k) ? "dot" : "solid" },
        marker: { size: 6, color: col, symbol: ["circle", s.two_picks ? "circle" : "diamond"] },
        hovertemplate: label(k) + (s.two_picks ? " (pick, pick)" : " (pick \u2192 place)") + "<extra></extra>",
      }, { role: "cand", k: k });
      if (!s.two_picks) add(arrowTrace(sid + "head-" + k, c[0], c[1], col, head), { role: "head" });
    });
    // the rank at the other end of each ranked candidate, "n/c" at the not comparable ones
    const tag = (uid, text, cands) => add({
      type: "scatter3d", uid: sid + uid, mode: "text", text: text, textposition: "bottom center",
      textfont: { size: 14, color: "#222" }, hoverinfo: "skip", showlegend: false,
      x: cands.map((k) => s.candidates[k][1][0]), y: cands.map((k) => s.candidates[k][1][1]),
      z: cands.map((k) => s.candidates[k][1][2]),
    }, { role: "tag" });
    for (let r = 0; r < s.candidates.length; r++) tag("rank-" + r, ordinal(r), st.ranked.slice(r, r + 1));
    tag("nc", "n/c", st.not_comparable);
    const own = st.own_action || (app.ownPick ? [app.ownPick] : []);
    add({
      type: "scatter3d", uid: sid + "own", mode: "lines+markers",
      x: own.map((p) => p[0]), y: own.map((p) => p[1]), z: own.map((p) => p[2]), showlegend: false,
      line: { color: "#111", width: 10 }, marker: { size: 6, color: "#111" },
      hovertemplate: "own action<extra></extra>",
    }, { role: "own" });
    add({
      type: "scatter3d", uid: sid + "own-label", mode: "text", text: "A (own)", textposition: "top center",
      textfont: { size: 15, color: "#111" }, hoverinfo: "skip", showlegend: false,
      x: own.slice(0, 1).map((p) => p[0]), y: own.slice(0, 1).map((p) => p[1]), z: own.slice(0, 1).map((p) => p[2]),
    }, { role: "tag" });
    if (own.length > 1 && !s.two_picks) add(arrowTrace(sid + "own-head", own[0], own[1], "#111", head), { role: "head" });
    // true proportions in x and y; z stretched to at least a quarter of the xy extent so that
    // a flat object stays readable (the colours give the height)
    const pad = 0.08 * span;
    const ext = [0, 1, 2].map((i) => Math.max(hi[i] - lo[i], 1e-3) + 2 * pad);
    const m = Math.max(ext[0], ext[1]);
    const zr = Math.max(ext[2] / m, 0.25);
    const axis = (t, i) => ({ title: { text: t }, range: [lo[i] - pad, hi[i] + pad], showspikes: false,
                              backgroundcolor: "#fbfbfd", gridcolor: "#e3e5ea", zeroline: false });
    const layout = {
      margin: { l: 0, r: 0, t: 0, b: 0 }, uirevision: "sample-" + s.index, showlegend: false,
      scene: { xaxis: axis("x (m)", 0), yaxis: axis("y (m)", 1),
               zaxis: axis(zr > ext[2] / m + 1e-9 ? "z (m, stretched)" : "z (m)", 2),
               aspectmode: "manual", aspectratio: { x: ext[0] / m, y: ext[1] / m, z: zr },
               camera: { eye: { x: 0.0, y: -0.6, z: 1.15 }, up: { x: 0, y: 0, z: 1 } }, dragmode: "orbit" },
      hovermode: "closest", paper_bgcolor: "#ffffff",
    };
    app.roles = roles;
    Plotly.react(div, traces, layout, { displaylogo: false, responsive: true, scrollZoom: true,
                                        modeBarButtonsToRemove: ["resetCameraLastSave3d"] });
    if (!div.dataset.bound) {
      div.dataset.bound = "1";
      // plotly emits plotly_click on every frame drawn while the button is held: take one per press.
      // A press shorter than a frame (a slow machine drawing WebGL in software) draws none, so on
      // release, a press that did not move takes the point hovered at that spot instead.
      const near = (a, b) => a && b && Math.abs(a.x - b.x) <= 3 && Math.abs(a.y - b.y) <= 3;
      div.addEventListener("mousemove", (e) => { app.pointer = { x: e.clientX, y: e.clientY }; }, true);
      div.addEventListener("mousedown", (e) => {
        app.clickArmed = true;
        app.pressAt = { x: e.clientX, y: e.clientY };
      }, true);
      div.addEventListener("mouseup", (e) => {
        const at = { x: e.clientX, y: e.clientY }, h = app.lastHover;
        if (app.clickArmed && near(at, app.pressAt) && h && near(at, h.at)) {
          app.clickArmed = false;
          onPlotClick(h.ev);
        }
      }, true);
      div.addEventListener("touchstart", () => { app.clickArmed = true; }, true);
      div.on("plotly_click", (ev) => { if (app.clickArmed) { app.clickArmed = false; onPlotClick(ev); } });
      div.on("plotly_hover", (ev) => {
        const p = ev && ev.points && ev.points[0];
        if (!p) return;
        app.lastHover = { ev: ev, at: app.pointer };
        const r = app.roles[p.curveNumber] || {};
        const where = r.role === "cand" ? label(r.k) : r.role || "";
        $("hover").textContent = where + ": " + [p.x, p.y, p.z].map((v) => Number(v).toFixed(3)).join(", ");
        $("hover").dataset.role = r.role || "";
      });
      div.on("plotly_unhover", () => { $("hover").dataset.role = ""; app.lastHover = null; });
    }
  }

  function onPlotClick(ev) {
    const p = ev && ev.points && ev.points[0];
    if (!p || !app.state) return;
    const r = app.roles[p.curveNumber] || {};
    if (app.mode === "own") {
      if (r.role === "cloud" || r.role === "table") ownPoint([+p.x, +p.y, +p.z], r.role === "cloud");
      else message("click a point of the cloud" + (app.ownPick && !app.sample.two_picks ? " or of the table grid" : ""), "warn");
      return;
    }
    if (r.role === "cand") candidateKey(r.k);
  }

  // ------------------------------------------------------------------ keys and buttons

  function onKey(ev) {
    const t = ev.target;
    if (t && (t.tagName === "INPUT" || t.tagName === "SELECT" || t.tagName === "TEXTAREA")) {
      if (ev.key === "Escape") t.blur();
      return;
    }
    if ((ev.ctrlKey || ev.metaKey) && ev.key.toLowerCase() === "z") { ev.preventDefault(); undo(); return; }
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const key = ev.key;
    if (/^[0-9]$/.test(key)) {
      ev.preventDefault();
      if (!app.state) return;
      candidateKey(key === "0" ? 9 : Number(key) - 1);
      return;
    }
    switch (key.toLowerCase()) {
      case "e": case "=":
        if (app.state) { setMode("equal", "equal: first candidate? (number key or click)"); render(); }
        break;
      case "x":
        if (app.state) { setMode("nc", "not comparable: which candidate? (number key or click)"); render(); }
        break;
      case "a": if (app.state) startOwn(); break;
      case "u": case "backspace": ev.preventDefault(); undo(); break;
      case "c": if (app.state) clearAll(); break;
      case "enter": ev.preventDefault(); submit(); break;
      case "s": skip(); break;
      case "arrowright": ev.preventDefault(); step(1); break;
      case "arrowleft": ev.preventDefault(); step(-1); break;
      case "r": if (app.sample) navigate(app.sample.index, "reload"); break;
      case "escape": setMode(null); message(""); render(); break;
      default: return;
    }
  }

  function bind() {
    document.addEventListener("keydown", onKey);
    $("own-btn").addEventListener("click", startOwn);
    $("own-clear").addEventListener("click", () => { setMode(null); change((s) => { s.own_action = null; }); });
    $("undo-btn").addEventListener("click", undo);
    $("clear-btn").addEventListener("click", () => app.state && clearAll());
    $("submit-btn").addEventListener("click", submit);
    $("skip-btn").addEventListener("click", skip);
    $("prev-btn").addEventListener("click", () => step(-1));
    $("next-btn").addEventListener("click", () => step(1));
    $("reload-btn").addEventListener("click", () => app.sample && navigate(app.sample.index, "reload"));
    $("sample-list").addEventListener("change", (ev) => { navigate(Number(ev.target.value), "browse"); ev.target.blur(); });
    const ann = $("annotator");
    try { ann.value = window.localStorage.getItem("pam_jax_annotator") || ""; } catch (e) { /* no storage */ }
    ann.addEventListener("change", () => {
      try { window.localStorage.setItem("pam_jax_annotator", ann.value.trim()); } catch (e) { /* no storage */ }
    });
    // buttons must not keep the focus, or Enter/Space would click them again
    document.addEventListener("click", (ev) => {
      const b = ev.target && ev.target.closest ? ev.target.closest("button") : null;
      if (b) b.blur();
    });
  }

  async function start() {
    bind();
    const p = await refreshProgress();
    if (!p) return;
    const first = p.first_unannotated;
    await load(first === null ? 0 : first, first === null ? ["all " + p.total + " samples are annotated; " +
      "pick one to edit it", "info"] : null);
  }

  window.pamAnnotate = app;   // for debugging in the browser console
  start();
})();
