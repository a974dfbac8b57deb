// diffround diagnostics page. Plain browser JavaScript, no dependencies: it calls the
// service's public API and draws the input, the heat map (canvas) and the surrogate
// curve (SVG) itself.
"use strict";

(() => {
  const KEY_STORAGE = "diffround.apiKey";
  // The thresholds of diffround.diagnostics and of /grad's summary: |local derivative|
  // below DEAD is a dead gradient, above LARGE an exploding one.
  const DEAD = 1e-6;
  const LARGE = 10;
  const SVG_NS = "http://www.w3.org/2000/svg";

  const $ = (id) => document.getElementById(id);
  const state = {
    model: null, // name
    meta: null, // GET /models/{name}
    runId: 0, // the newest run; older answers are dropped
    pending: null, // the action to retry once an API key is entered
    grad: null, // the last /grad answer
    heatBit: null, // chosen output for the heat map
  };

  // ---- HTTP -------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  class InputError extends Error {}

  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    const key = sessionStorage.getItem(KEY_STORAGE);
    if (key) headers["X-API-Key"] = key;
    const init = { method, headers };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (err) {
      throw new ApiError(0, `Could not reach the service (${err.message}).`);
    }
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (!response.ok) {
      const message =
        data && typeof data.error === "string"
          ? data.error
          : `${method} ${path} failed with HTTP ${response.status}.`;
      throw new ApiError(response.status, message);
    }
    return data;
  }

  // Runs an action; a 401 asks for the key and retries the action once it is entered.
  async function guarded(action) {
    try {
      await action();
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) {
        askForKey(err.message, action);
      } else {
        showError(err.message);
      }
    }
  }

  function askForKey(message, action) {
    state.pending = action;
    const had = sessionStorage.getItem(KEY_STORAGE);
    $("key-reason").textContent =
      (had ? "The service refused the stored key: " : "The service asks for an API key: ") + message;
    $("key-section").hidden = false;
    $("api-key").focus();
  }

  function showError(message) {
    const box = $("error");
    box.textContent = message;
    box.hidden = false;
  }

  function clearError() {
    const box = $("error");
    box.textContent = "";
    box.hidden = true;
  }

  // ---- formatting -------------------------------------------------------------------

  function fmt(v) {
    if (typeof v !== "number") return String(v);
    if (!Number.isFinite(v)) return String(v);
    const a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(2);
    return v.toFixed(a >= 100 ? 1 : 3);
  }

  function bitColour(k, n) {
    return `hsl(${Math.round((360 * k) / Math.max(n, 1) + 200) % 360}, 70%, 42%)`;
  }

  function bitNames() {
    const out = state.meta && state.meta.outputs && state.meta.outputs[0];
    return (out && out.bits) || null;
  }

  function bitName(k) {
    const names = bitNames();
    return names && names[k] ? names[k] : `output ${k}`;
  }

  // "bit 3 (8)" -> "bit 3": labels on the plot.
  function shortName(k) {
    return bitName(k).replace(/\s*\(.*\)$/, "");
  }

  function fact(dl, term, value) {
    const dt = document.createElement("dt");
    dt.textContent = term;
    const dd = document.createElement("dd");
    dd.textContent = value;
    dl.append(dt, dd);
    return dd;
  }

  // ---- models and examples -------------------------------------------------------------

  async function loadModels() {
    const data = await api("GET", "/models");
    const select = $("model-select");
    select.replaceChildren();
    for (const m of data.models || []) {
      const opt = document.createElement("option");
      opt.value = m.name;
      opt.textContent = `${m.name}${m.default ? " (default)" : ""}${m.ready ? "" : " (not ready)"}`;
      select.append(opt);
    }
    const chosen = (data.models || []).find((m) => m.default) || (data.models || [])[0];
    if (!chosen) {
      showError("The service serves no model yet.");
      return;
    }
    select.value = chosen.name;
    await selectModel(chosen.name);
  }

  async function selectModel(name) {
    state.model = name;
    state.meta = null;
    clearResults();
    const meta = await api("GET", `/models/${encodeURIComponent(name)}`);
    if (state.model !== name) return; // another model was picked meanwhile
    state.meta = meta;
    renderModelInfo(null);
    const select = $("example-select");
    select.replaceChildren(new Option("(pick an example)", ""));
    (meta.examples || []).forEach((ex, i) => {
      const label = ex.label === undefined || ex.label === null ? "" : ` (label ${ex.label})`;
      select.append(new Option(`example ${i + 1}${label}`, String(i)));
    });
    drawCurves(null);
    if ((meta.examples || []).length) {
      select.value = "0";
      await pickExample(0);
    }
  }

  function renderModelInfo(version) {
    const meta = state.meta;
    const dl = $("model-info");
    dl.replaceChildren();
    if (!meta) return;
    fact(dl, "name", meta.model_name || state.model).dataset.testid = "model-name";
    fact(dl, "version", String(version ?? meta.serving_version ?? meta.version)).dataset.testid =
      "model-version";
    fact(dl, "method", meta.method || "?").dataset.testid = "model-method";
    const params = Object.entries(meta.params || {})
      .map(([k, v]) => `${k}=${v}`)
      .join(", ");
    fact(dl, "parameters", params || "none");
    if (meta.task) fact(dl, "task", meta.task);
    if (meta.description) fact(dl, "output", meta.description);
    const metrics = meta.metrics || {};
    if (typeof metrics.exact_match === "number") {
      fact(dl, "held-out accuracy", `${(100 * metrics.exact_match).toFixed(1)} %`);
    }
  }

  async function pickExample(i) {
    const ex = state.meta.examples[i];
    $("input-text").value = ex.inputs.join(", ");
    await run(ex.inputs, ex);
  }

  // ---- input ----------------------------------------------------------------------------

  // Turns the text box into one row. It only splits and converts: the service checks the
  // row (length, numbers, range) and its message is the one shown.
  function parseInput(text) {
    const t = text.trim();
    if (!t) throw new InputError("Paste 64 numbers or pick an example first.");
    if (t[0] === "[" || t[0] === "{") {
      let v;
      try {
        v = JSON.parse(t);
      } catch (err) {
        throw new InputError(`The pasted text is not valid JSON: ${err.message}`);
      }
      if (v && typeof v === "object" && !Array.isArray(v)) v = v.inputs ?? v.instances ?? v;
      let note = "";
      if (Array.isArray(v) && v.length && Array.isArray(v[0])) {
        if (v.length > 1) note = `Using the first of ${v.length} rows.`;
        v = v[0];
      }
      return { row: v, note };
    }
    const row = t
      .split(/[\s,;]+/)
      .filter(Boolean)
      .map((tok) => {
        const n = Number(tok);
        return Number.isFinite(n) ? n : tok; // kept as text: the service names the problem
      });
    return { row, note: "" };
  }

  // ---- one run: /predict, then /grad --------------------------------------------------

  // The page's state for tests and screen readers: loading | done | error.
  function setStatus(id, status) {
    if (id === state.runId) document.querySelector("main").dataset.status = status;
  }

  async function run(row, example) {
    const id = ++state.runId;
    setStatus(id, "loading");
    clearError();
    const body = { inputs: [row], model: state.model };
    let pred;
    try {
      pred = await api("POST", "/predict", body);
    } catch (err) {
      if (id === state.runId) clearResults();
      setStatus(id, "error");
      throw err;
    }
    if (id !== state.runId) return;
    renderModelInfo(pred.version);
    drawInput($("input-image"), row);
    renderPrediction(pred, example);

    let grad = null;
    let gradError = null;
    try {
      grad = await api("POST", "/grad", body);
    } catch (err) {
      if (err.status === 401) {
        setStatus(id, "error");
        throw err;
      }
      gradError = err;
    }
    if (id !== state.runId) return;
    state.grad = grad;
    renderGrad(pred, grad, gradError);
    setStatus(id, "done");
  }

  function clearResults() {
    state.grad = null;
    $("decoded").textContent = "—";
    $("bits-table").tBodies[0].replaceChildren();
    $("summary").replaceChildren();
    $("grad-status").textContent = "";
    for (const id of ["input-image", "heatmap"]) {
      const c = $(id);
      c.getContext("2d").clearRect(0, 0, c.width, c.height);
    }
    drawCurves(null);
  }

  function renderPrediction(pred, example) {
    const bits = pred.outputs[0];
    const decoded = pred.decoded ? pred.decoded[0] : null;
    const code = bits.join("");
    const p = $("decoded");
    p.replaceChildren();
    const strong = document.createElement("strong");
    strong.dataset.testid = "decoded-value";
    if (decoded !== null && decoded !== undefined) {
      strong.textContent = String(decoded);
      p.append("Predicted digit ", strong, ` (code ${code})`);
    } else if (state.meta && state.meta.decoding) {
      strong.textContent = code;
      p.append("Code ", strong, ` = ${parseInt(code, 2)}: not a valid class`);
    } else {
      strong.textContent = code;
      p.append("Code ", strong, " (this task has no decoding)");
    }
    if (example && example.label !== undefined && example.label !== null) {
      const ok = decoded === example.label;
      p.append(` — true label ${example.label}, ${ok ? "correct" : "wrong"}`);
    }

    const tbody = $("bits-table").tBodies[0];
    tbody.replaceChildren();
    bits.forEach((b, k) => {
      const tr = document.createElement("tr");
      tr.dataset.testid = "bit-row";
      const th = document.createElement("th");
      th.scope = "row";
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = bitColour(k, bits.length);
      th.append(swatch, bitName(k));
      tr.append(th);
      const cells = [String(b), "—", "—", "—"];
      const ids = ["bit-hard", "bit-pre", "bit-surrogate", "bit-local-grad"];
      cells.forEach((text, j) => {
        const td = document.createElement("td");
        td.textContent = text;
        td.dataset.testid = ids[j];
        tr.append(td);
      });
      tbody.append(tr);
    });
  }

  function renderGrad(pred, grad, gradError) {
    const status = $("grad-status");
    const summary = $("summary");
    summary.replaceChildren();
    if (!grad) {
      status.className = "status warn";
      if (gradError.status === 404) {
        status.textContent =
          "Gradients are disabled on this service (/grad answered 404), so only the " +
          `prediction is shown. The service said: ${gradError.message}`;
      } else {
        status.textContent = `/grad failed, so only the prediction is shown: ${gradError.message}`;
      }
      $("heatmap-bit").replaceChildren();
      drawCurves(null);
      drawHeatmap(null);
      return;
    }
    status.className = "status";
    status.textContent = "";

    const rows = $("bits-table").tBodies[0].rows;
    grad.pre_round[0].forEach((pre, k) => {
      const cells = rows[k].cells;
      const g = grad.local_grad[0][k];
      cells[2].textContent = fmt(pre);
      cells[3].textContent = fmt(grad.surrogate[0][k]);
      cells[4].textContent = fmt(g);
      cells[4].classList.toggle("dead", Math.abs(g) < DEAD);
      cells[4].classList.toggle("large", Math.abs(g) > LARGE);
      if (Math.abs(g) < DEAD) cells[4].textContent += " (dead)";
      if (Math.abs(g) > LARGE) cells[4].textContent += " (exploding)";
    });

    const s = grad.summary || {};
    fact(summary, "method", `${grad.method} ${JSON.stringify(grad.params || {})}`);
    fact(summary, "surrogate gap", fmt(s.surrogate_gap)).dataset.testid = "surrogate-gap";
    fact(summary, "dead gradients", `${(100 * s.dead_gradient_share).toFixed(1)} %`).dataset.testid =
      "dead-share";
    let where = "";
    if (s.argmax && typeof s.argmax.input === "number") {
      const i = s.argmax.input;
      where = ` (${bitName(s.argmax.output)}, pixel row ${Math.floor(i / 8)} col ${i % 8})`;
    }
    fact(summary, "largest |input gradient|", fmt(s.max_abs_input_grad) + where).dataset.testid =
      "max-grad";
    if (s.text) fact(summary, "in words", s.text);

    const select = $("heatmap-bit");
    const n = grad.input_grad[0].length;
    if (state.heatBit === null || state.heatBit >= n) {
      state.heatBit = s.argmax && s.argmax.output < n ? s.argmax.output : 0;
    }
    select.replaceChildren();
    for (let k = 0; k < n; k++) select.append(new Option(bitName(k), String(k)));
    select.value = String(state.heatBit);

    drawCurves(grad);
    drawHeatmap(grad.input_grad[0][state.heatBit]);
  }

  // ---- drawing ------------------------------------------------------------------------

  function drawInput(canvas, row) {
    const ctx = canvas.getContext("2d");
    const cell = canvas.width / 8;
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    row.forEach((v, i) => {
      const ink = Math.min(Math.max(v / 16, 0), 1);
      const g = Math.round(255 * (1 - ink));
      ctx.fillStyle = `rgb(${g}, ${g}, ${g})`;
      ctx.fillRect((i % 8) * cell, Math.floor(i / 8) * cell, cell, cell);
    });
    ctx.strokeStyle = "#888";
    ctx.strokeRect(0.5, 0.5, canvas.width - 1, canvas.height - 1);
  }

  // Diverging colour for t in [-1, 1]: blue (negative), white (0), red (positive).
  function diverging(t) {
    const c = Math.min(Math.abs(t), 1);
    const [r, g, b] = t < 0 ? [33, 102, 172] : [178, 24, 43];
    const mix = (x) => Math.round(255 + (x - 255) * c);
    return `rgb(${mix(r)}, ${mix(g)}, ${mix(b)})`;
  }

  function drawHeatmap(values) {
    const canvas = $("heatmap");
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    const scale = $("heatmap-scale").getContext("2d");
    scale.clearRect(0, 0, 240, 14);
    if (!values) {
      $("scale-min").textContent = "−";
      $("scale-max").textContent = "+";
      return;
    }
    const m = Math.max(...values.map((v) => (Number.isFinite(v) ? Math.abs(v) : 0)));
    const cell = canvas.width / 8;
    values.forEach((v, i) => {
      ctx.fillStyle = m > 0 ? diverging(v / m) : "#fff";
      ctx.fillRect((i % 8) * cell, Math.floor(i / 8) * cell, cell, cell);
    });
    ctx.strokeStyle = "rgba(0, 0, 0, 0.15)";
    for (let j = 1; j < 8; j++) {
      ctx.beginPath();
      ctx.moveTo(j * cell, 0);
      ctx.lineTo(j * cell, canvas.height);
      ctx.moveTo(0, j * cell);
      ctx.lineTo(canvas.width, j * cell);
      ctx.stroke();
    }
    ctx.strokeStyle = "#888";
    ctx.strokeRect(0.5, 0.5, canvas.width - 1, canvas.height - 1);
    for (let x = 0; x < 240; x++) {
      scale.fillStyle = diverging((x / 239) * 2 - 1);
      scale.fillRect(x, 0, 1, 14);
    }
    $("scale-min").textContent = `−${fmt(m)}`;
    $("scale-max").textContent = `+${fmt(m)}`;
    const name = bitName(state.heatBit);
    $("heatmap").setAttribute(
      "aria-label",
      `Input gradient of ${name}: largest magnitude ${fmt(m)}` + (m > 0 ? "" : " (all zero)"),
    );
    $("heatmap-caption").textContent =
      m > 0
        ? `d surrogate / d input pixel for ${name}: red pixels raise this output, ` +
          `blue ones lower it; colours span ±${fmt(m)}.`
        : `Every input gradient of ${name} is zero: this output's gradient is dead.`;
  }

  function svg(name, attrs, parent) {
    const node = document.createElementNS(SVG_NS, name);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    if (parent) parent.append(node);
    return node;
  }

  function niceTicks(lo, hi, count) {
    const span = hi - lo || 1;
    const raw = span / count;
    const mag = 10 ** Math.floor(Math.log10(raw));
    const step = [1, 2, 2.5, 5, 10].map((f) => f * mag).find((s) => s >= raw) || raw;
    const ticks = [];
    for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) {
      ticks.push(Math.abs(t) < step * 1e-9 ? 0 : t);
    }
    return ticks;
  }

  // The surrogate curve s(x) and s'(x) from the metadata, with one dot per output bit at
  // (pre_round, surrogate) and (pre_round, local derivative).
  function drawCurves(grad) {
    const root = $("curve-plot");
    root.replaceChildren();
    const curve = state.meta && state.meta.surrogate_curve;
    if (!curve || !curve.x || !curve.x.length) {
      svg("text", { x: 20, y: 30, class: "axis-label" }, root).textContent =
        "This model's metadata has no surrogate curve.";
      return;
    }
    const W = 560;
    const left = 56;
    const right = 16;
    const x0 = Math.min(...curve.x);
    const x1 = Math.max(...curve.x);
    const sx = (x) => left + ((x - x0) / (x1 - x0)) * (W - left - right);
    const n = grad ? grad.pre_round[0].length : 0;
    const panels = [
      {
        title: "surrogate s(x)",
        top: 24,
        curve: curve.value,
        point: (k) => grad.surrogate[0][k],
        reference: [
          [x0, Math.round(x0)],
          [0.5, Math.round(x0)],
          [0.5, 1],
          [x1, 1],
        ],
        testid: "curve-value",
      },
      {
        title: "derivative s'(x)",
        top: 244,
        curve: curve.derivative,
        point: (k) => grad.local_grad[0][k],
        reference: [
          [x0, 1],
          [x1, 1],
        ],
        testid: "curve-derivative",
      },
    ];
    const H = 170;
    for (const panel of panels) {
      const ys = panel.curve.filter(Number.isFinite).concat(panel.reference.map((p) => p[1]));
      for (let k = 0; k < n; k++) if (Number.isFinite(panel.point(k))) ys.push(panel.point(k));
      let lo = Math.min(0, ...ys);
      let hi = Math.max(...ys);
      const pad = (hi - lo || 1) * 0.08;
      lo -= pad;
      hi += pad;
      const sy = (y) => panel.top + H - ((y - lo) / (hi - lo)) * H;
      const g = svg("g", { "data-testid": panel.testid }, root);
      svg("text", { x: left, y: panel.top - 8, class: "panel-title" }, g).textContent =
        panel.title;
      svg("rect", { x: left, y: panel.top, width: W - left - right, height: H, class: "frame" }, g);
      for (const t of niceTicks(lo, hi, 4)) {
        svg("line", { x1: left, x2: W - right, y1: sy(t), y2: sy(t), class: "grid" }, g);
        svg("text", { x: left - 6, y: sy(t) + 4, class: "tick", "text-anchor": "end" }, g)
          .textContent = fmt(t).replace(/\.?0+$/, "") || "0";
      }
      for (const t of niceTicks(x0, x1, 4)) {
        svg("line", { x1: sx(t), x2: sx(t), y1: panel.top, y2: panel.top + H, class: "grid" }, g);
        svg("text", { x: sx(t), y: panel.top + H + 14, class: "tick", "text-anchor": "middle" }, g)
          .textContent = String(Math.round(t * 100) / 100);
      }
      const ref = panel.reference.map(([x, y]) => `${sx(x)},${sy(y)}`).join(" ");
      svg("polyline", { points: ref, class: "reference" }, g);
      const pts = [];
      curve.x.forEach((x, i) => {
        if (Number.isFinite(panel.curve[i])) pts.push(`${sx(x).toFixed(1)},${sy(panel.curve[i]).toFixed(1)}`);
      });
      svg("polyline", { points: pts.join(" "), class: "curve" }, g);
      const labels = []; // one label per cluster of dots closer than 10 px
      for (let k = 0; k < n; k++) {
        const pre = grad.pre_round[0][k];
        const y = panel.point(k);
        if (!Number.isFinite(pre) || !Number.isFinite(y)) continue;
        const clamped = Math.min(Math.max(pre, x0), x1);
        const cx = sx(clamped);
        const cy = sy(y);
        const text = clamped === pre ? shortName(k) : `${shortName(k)} (x=${fmt(pre)})`;
        const near = labels.find((l) => Math.hypot(l.cx - cx, l.cy - cy) < 10);
        if (near) near.texts.push(text);
        else labels.push({ cx, cy, texts: [text] });
        const dot = svg(
          "circle",
          {
            cx,
            cy,
            r: 6,
            fill: bitColour(k, n),
            class: clamped === pre ? "point" : "point outside",
            "data-testid": "curve-point",
            "data-bit": k,
          },
          g,
        );
        svg("title", {}, dot).textContent =
          `${bitName(k)}: pre-round ${fmt(pre)}, surrogate ${fmt(grad.surrogate[0][k])}, ` +
          `derivative ${fmt(grad.local_grad[0][k])}`;
      }
      for (const { cx, cy, texts } of labels) {
        const anchor = cx > W / 2 ? "end" : "start";
        const x = cx + (anchor === "end" ? -9 : 9);
        const y = cy - panel.top > 20 ? cy - 8 : cy + 18;
        svg("text", { x, y, class: "point-label", "text-anchor": anchor }, g).textContent =
          texts.join(", ");
      }
    }
  }

  // ---- wiring -------------------------------------------------------------------------

  function start() {
    $("key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const key = $("api-key").value.trim();
      if (!key) return;
      sessionStorage.setItem(KEY_STORAGE, key);
      $("api-key").value = "";
      $("key-section").hidden = true;
      clearError();
      const action = state.pending || loadModels;
      state.pending = null;
      guarded(action);
    });
    $("model-select").addEventListener("change", (event) => {
      const name = event.target.value;
      guarded(() => selectModel(name));
    });
    $("example-select").addEventListener("change", (event) => {
      const value = event.target.value;
      if (value === "" || !state.meta) return;
      guarded(() => pickExample(Number(value)));
    });
    $("input-form").addEventListener("submit", (event) => {
      event.preventDefault();
      $("example-select").value = "";
      let parsed;
      try {
        parsed = parseInput($("input-text").value);
      } catch (err) {
        if (!(err instanceof InputError)) throw err;
        showError(err.message);
        return;
      }
      $("input-note").textContent = parsed.note;
      guarded(() => run(parsed.row, null));
    });
    $("heatmap-bit").addEventListener("change", (event) => {
      state.heatBit = Number(event.target.value);
      if (state.grad) drawHeatmap(state.grad.input_grad[0][state.heatBit]);
    });
    guarded(loadModels);
  }

  start();
})();
