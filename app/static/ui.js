// diffround diagnostics page. Plain browser JavaScript, no dependencies: it calls the
// service's public API and builds everything from the model's own description (its
// diffround.json metadata when it has one, else its signatures): one editor per input,
// one block per output, one panel per rounding layer, and a Jacobian heat map for image
// inputs. Canvas and SVG are drawn here.
"use strict";

(() => {
  const KEY_STORAGE = "diffround.apiKey";
  // The thresholds of diffround.diagnostics and of /grad's summary: |local derivative|
  // below DEAD is a dead gradient, above LARGE an exploding one.
  const DEAD = 1e-6;
  const LARGE = 10;
  // Elements listed (and drawn as dots) per output or rounding layer; the rest are counted.
  const MAX_ELEMENTS = 64;
  // Output elements offered in the heat map's picker, per output.
  const MAX_HEAT_CHOICES = 256;
  const SVG_NS = "http://www.w3.org/2000/svg";

  const $ = (id) => document.getElementById(id);
  const state = {
    model: null, // name
    entry: null, // the model's entry in GET /models
    entries: [], // GET /models
    meta: null, // GET /models/{name}
    inputs: [], // input specs: {name, dtype, shape, image_shape?, range?, description?}
    outputs: [], // output specs
    runId: 0, // the newest run; older answers are dropped
    pending: null, // the action to retry once an API key is entered
    grad: null, // the last /grad answer
    heat: null, // {output, element, input}: the heat map's choice
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

  // ---- tensors ----------------------------------------------------------------------

  const product = (dims) => dims.reduce((a, b) => a * b, 1);

  // Smallest and largest finite value (loops: spreading a large tensor overflows the stack).
  function minOf(values, start = Infinity) {
    let m = start;
    for (const v of values) if (Number.isFinite(v) && v < m) m = v;
    return m;
  }

  function maxOf(values, start = -Infinity) {
    let m = start;
    for (const v of values) if (Number.isFinite(v) && v > m) m = v;
    return m;
  }

  function flatten(v, out = []) {
    if (Array.isArray(v)) for (const x of v) flatten(x, out);
    else out.push(v);
    return out;
  }

  function dimsOf(v) {
    const dims = [];
    while (Array.isArray(v)) {
      dims.push(v.length);
      v = v[0];
    }
    return dims;
  }

  function reshape(flat, dims) {
    if (!dims.length) return flat[0];
    const size = product(dims.slice(1));
    const out = [];
    for (let i = 0; i < dims[0]; i++) out.push(reshape(flat.slice(i * size, (i + 1) * size), dims.slice(1)));
    return out;
  }

  // The shape of one row (no batch dim); null when the rank is unknown.
  function rowShape(spec) {
    return Array.isArray(spec.shape) ? spec.shape.slice(1) : null;
  }

  // Flat index -> "[i, j]" over dims.
  function indexLabel(flatIndex, dims) {
    if (!dims || dims.length <= 1) return `[${flatIndex}]`;
    const idx = [];
    let rest = flatIndex;
    for (let d = dims.length - 1; d >= 0; d--) {
      idx.unshift(rest % dims[d]);
      rest = Math.floor(rest / dims[d]);
    }
    return `[${idx.join(", ")}]`;
  }

  // {h, w, c} when an input or output is an image: the metadata says so (`image_shape`),
  // or its row shape is [h, w, channels] with 1, 3 or 4 channels.
  function imageOf(spec) {
    const dims = rowShape(spec);
    if (Array.isArray(spec.image_shape) && spec.image_shape.length === 2) {
      const [h, w] = spec.image_shape;
      const size = dims && dims.every((d) => d > 0) ? product(dims) : h * w;
      return { h, w, c: Math.max(1, Math.round(size / (h * w))) };
    }
    if (dims && dims.length === 3 && [1, 3, 4].includes(dims[2]) && dims[0] >= 2 && dims[1] >= 2) {
      return { h: dims[0], w: dims[1], c: dims[2] };
    }
    return null;
  }

  // ---- formatting -------------------------------------------------------------------

  function fmt(v) {
    if (typeof v !== "number") return String(v);
    if (!Number.isFinite(v)) return String(v);
    if (Number.isInteger(v) && Math.abs(v) < 1e5) return String(v);
    const a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(2);
    return v.toFixed(a >= 100 ? 1 : 3);
  }

  function fmtGrid(grid) {
    if (!grid) return "none";
    const bound = (v) => (v === null || v === undefined ? "unbounded" : fmt(v));
    return `step ${fmt(grid.step)}, offset ${fmt(grid.offset)}, min ${bound(grid.min)}, max ${bound(grid.max)}`;
  }

  function colour(k, n) {
    return `hsl(${Math.round((360 * k) / Math.max(n, 1) + 200) % 360}, 70%, 42%)`;
  }

  function fact(dl, term, value) {
    const dt = document.createElement("dt");
    dt.textContent = term;
    const dd = document.createElement("dd");
    dd.textContent = value;
    dl.append(dt, dd);
    return dd;
  }

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "testid") node.dataset.testid = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("data-")) node.setAttribute(k, v);
      else node[k] = v;
    }
    node.append(...children);
    return node;
  }

  // Names of a rounding layer's elements: the `bits` names of the output it produces, if any.
  function elementNames(layerName) {
    const out = state.outputs.find((o) => o.rounding_layer === layerName && Array.isArray(o.bits));
    return out ? out.bits : null;
  }

  function outputElementName(outputName, k, dims) {
    const out = state.outputs.find((o) => o.name === outputName);
    if (out && Array.isArray(out.bits) && out.bits[k]) return out.bits[k];
    return `${outputName}${indexLabel(k, dims)}`;
  }

  // ---- models and examples ------------------------------------------------------------

  async function loadModels() {
    const data = await api("GET", "/models");
    state.entries = data.models || [];
    const select = $("model-select");
    select.replaceChildren();
    for (const m of state.entries) {
      const tags = [m.default ? "default" : "", m.ready ? "" : "not ready", m.gradients ? "" : "predict only"]
        .filter(Boolean)
        .join(", ");
      select.append(new Option(`${m.name}${tags ? ` (${tags})` : ""}`, m.name));
    }
    const chosen = state.entries.find((m) => m.default) || state.entries[0];
    if (!chosen) {
      showError("The service serves no model yet.");
      return;
    }
    select.value = chosen.name;
    await selectModel(chosen.name);
  }

  // The signature that /predict runs: the metadata's `signatures.predict`, else serving_default.
  function predictSignature(meta) {
    const sigs = meta.signatures || {};
    for (const name of ["serving_default", "serve"]) if (sigs[name]) return sigs[name];
    const first = Object.keys(sigs).find((k) => k !== "grad");
    return first ? sigs[first] : { inputs: [], outputs: [] };
  }

  async function selectModel(name) {
    state.model = name;
    state.runId++; // a run still under way for the previous model is dropped
    setStatus(state.runId, "loading");
    state.entry = state.entries.find((m) => m.name === name) || null;
    state.meta = null;
    state.heat = null;
    clearResults();
    const meta = await api("GET", `/models/${encodeURIComponent(name)}`);
    if (state.model !== name) return; // another model was picked meanwhile
    state.meta = meta;
    const signature = predictSignature(meta);
    state.inputs = Array.isArray(meta.inputs) ? meta.inputs : signature.inputs || [];
    state.outputs = Array.isArray(meta.outputs) ? meta.outputs : signature.outputs || [];
    renderModelInfo(null);
    renderInputFields();
    renderLayers(null);
    const select = $("example-select");
    select.replaceChildren(new Option("(pick an example)", ""));
    const examples = meta.examples || [];
    examples.forEach((ex, i) => {
      const label = ex.label === undefined || ex.label === null ? "" : ` (label ${ex.label})`;
      select.append(new Option(`example ${i + 1}${label}`, String(i)));
    });
    select.disabled = !examples.length;
    if (!examples.length) select.options[0].textContent = "(the metadata has no examples)";
    if (examples.length) {
      select.value = "0";
      await pickExample(0);
    } else if (startAtZeros()) {
      await run(readFields().rows, null);
      $("input-note").textContent = "No examples in the metadata: the inputs start at zeros.";
    } else {
      setStatus(state.runId, "done");
    }
  }

  // Fills every input with zeros of its row shape; false when a shape is not fully known.
  function startAtZeros() {
    for (const spec of state.inputs) {
      const dims = rowShape(spec);
      if (!dims || dims.some((d) => d < 0)) return false;
    }
    for (const spec of state.inputs) {
      const dims = rowShape(spec);
      const zero = spec.dtype === "bool" ? false : 0;
      if (spec.dtype === "string") return false;
      setField(spec, reshape(new Array(product(dims)).fill(zero), dims));
    }
    return state.inputs.length > 0;
  }

  function isExported() {
    return Boolean(state.meta && state.meta.format);
  }

  function renderModelInfo(version) {
    const meta = state.meta;
    const dl = $("model-info");
    dl.replaceChildren();
    const kind = $("model-kind");
    if (!meta) {
      kind.textContent = "";
      return;
    }
    if (isExported()) {
      kind.className = "status";
      kind.textContent = `Exported by diffround.export (${meta.format}).`;
    } else {
      kind.className = "status warn";
      kind.textContent =
        "A plain SavedModel (no diffround.json): the page shows its predictions only; inputs " +
        "and outputs come from its serving signature.";
    }
    fact(dl, "name", meta.model_name || state.model).dataset.testid = "model-name";
    fact(dl, "version", String(version ?? meta.serving_version ?? meta.version)).dataset.testid =
      "model-version";
    if (meta.description) fact(dl, "description", meta.description);
    if (meta.task) fact(dl, "task", meta.task);
    const layers = meta.rounding_layers || [];
    if (isExported()) {
      fact(
        dl,
        "rounding layers",
        layers.length ? layers.map((l) => `${l.name} (${l.method})`).join(", ") : "none",
      ).dataset.testid = "model-layers";
    }
    fact(dl, "signatures", Object.keys(meta.signatures || {}).join(", ") || "?");
    const metrics = meta.metrics || {};
    if (typeof metrics.exact_match === "number") {
      fact(dl, "held-out accuracy", `${(100 * metrics.exact_match).toFixed(1)} %`);
    }
  }

  async function pickExample(i) {
    const ex = state.meta.examples[i];
    const rows = {};
    for (const spec of state.inputs) {
      const value = ex.inputs ? ex.inputs[spec.name] : undefined;
      if (value === undefined) continue;
      setField(spec, value);
      rows[spec.name] = value;
    }
    $("input-note").textContent = "";
    await run(rows, ex);
  }

  // ---- input editor -----------------------------------------------------------------------

  function fieldOf(name) {
    return $("input-fields").querySelector(`[data-input="${CSS.escape(name)}"]`);
  }

  function renderInputFields() {
    const box = $("input-fields");
    box.replaceChildren();
    if (!state.inputs.length) {
      box.append(el("p", { className: "note", text: "This model declares no inputs." }));
    }
    state.inputs.forEach((spec, i) => {
      const id = `input-${i}`;
      const dims = rowShape(spec);
      const shape = !dims ? "rank unknown" : dims.length ? `[${dims.join(", ")}] per row` : "one value per row";
      const field = el("fieldset", { className: "field", testid: "input-field", "data-input": spec.name });
      const legend = el("legend", {}, el("code", { text: spec.name }), ` ${spec.dtype}, ${shape}`);
      field.append(legend);
      const hints = [];
      if (spec.description) hints.push(spec.description);
      if (Array.isArray(spec.range)) hints.push(`range ${fmt(spec.range[0])}..${fmt(spec.range[1])}`);
      if (hints.length) field.append(el("p", { className: "hint", text: hints.join("; ") }));
      const image = imageOf(spec);
      const rows = image ? image.h + 1 : dims && dims.length === 0 ? 1 : 3;
      const area = el("textarea", {
        id,
        rows,
        spellcheck: false,
        testid: "input-text",
        "data-input": spec.name,
      });
      area.setAttribute("aria-label", `Input ${spec.name}`);
      field.append(area);
      if (image) {
        const scale = Math.max(4, Math.floor(160 / Math.max(image.h, image.w)));
        const canvas = el("canvas", {
          width: image.w * scale,
          height: image.h * scale,
          testid: "input-image",
          "data-input": spec.name,
        });
        canvas.setAttribute("role", "img");
        canvas.setAttribute("aria-label", `Input ${spec.name} as a ${image.h}x${image.w} image`);
        field.append(
          el("figure", {}, canvas, el("figcaption", {
            text: `${spec.name} as a ${image.h}x${image.w} image (darker = higher).`,
          })),
        );
        wirePainting(canvas, spec, image);
        area.addEventListener("input", () => {
          try {
            drawImage(canvas, flatten(parseField(spec, area.value).row), image, spec.range);
          } catch {
            // Half-typed text: the drawing waits for a valid one.
          }
        });
      }
      box.append(field);
    });
  }

  // Shows one row of an input in its field (and its image).
  function setField(spec, value) {
    const field = fieldOf(spec.name);
    if (!field) return;
    const area = field.querySelector("textarea");
    const image = imageOf(spec);
    const flat = flatten(value);
    const plain = flat.every((v) => typeof v === "number" || typeof v === "boolean");
    if (!plain || rowShape(spec) === null) {
      area.value = JSON.stringify(value);
    } else if (image) {
      const perLine = image.w * image.c;
      const lines = [];
      for (let i = 0; i < flat.length; i += perLine) lines.push(flat.slice(i, i + perLine).join(", "));
      area.value = lines.join("\n");
    } else {
      area.value = flat.join(", ");
    }
    const canvas = field.querySelector("canvas");
    if (canvas && image) drawImage(canvas, flat, image, spec.range);
  }

  // Turns one field's text into one row. It only splits, converts and reshapes to the
  // declared row shape when the count fits: the service checks the row and its message is
  // the one shown.
  function parseField(spec, text) {
    const t = text.trim();
    if (!t) throw new InputError(`Input '${spec.name}' is empty: type one row or pick an example.`);
    const dims = rowShape(spec);
    const known = dims && dims.every((d) => d >= 0);
    let note = "";
    let value;
    if ("[{\"".includes(t[0])) {
      try {
        value = JSON.parse(t);
      } catch (err) {
        throw new InputError(`Input '${spec.name}' is not valid JSON: ${err.message}`);
      }
      if (value && typeof value === "object" && !Array.isArray(value)) {
        value = value[spec.name] ?? value.inputs ?? value.instances ?? value;
        if (value && typeof value === "object" && !Array.isArray(value) && spec.name in value) {
          value = value[spec.name];
        }
      }
      if (dims && Array.isArray(value) && dimsOf(value).length === dims.length + 1) {
        if (value.length > 1) note = `Input '${spec.name}': using the first of ${value.length} rows.`;
        value = value[0];
      }
    } else {
      value = t
        .split(/[\s,;]+/)
        .filter(Boolean)
        .map((tok) => {
          if (spec.dtype === "bool" && (tok === "true" || tok === "false")) return tok === "true";
          if (spec.dtype === "string") return tok;
          const n = Number(tok);
          return Number.isFinite(n) ? n : tok; // kept as text: the service names the problem
        });
      if (dims && dims.length === 0 && value.length === 1) value = value[0];
    }
    if (known && Array.isArray(value)) {
      const flat = flatten(value);
      const same = JSON.stringify(dimsOf(value)) === JSON.stringify(dims);
      if (!same && flat.length === product(dims)) value = reshape(flat, dims);
    }
    return { row: value, note };
  }

  function readFields() {
    const rows = {};
    const notes = [];
    for (const spec of state.inputs) {
      const field = fieldOf(spec.name);
      const parsed = parseField(spec, field.querySelector("textarea").value);
      rows[spec.name] = parsed.row;
      if (parsed.note) notes.push(parsed.note);
    }
    return { rows, note: notes.join(" ") };
  }

  // Click or drag on an image input's cell: paint it at the range's top (shift: bottom).
  function wirePainting(canvas, spec, image) {
    const [lo, hi] = Array.isArray(spec.range) ? spec.range : [0, 1];
    const paint = (event) => {
      const area = fieldOf(spec.name).querySelector("textarea");
      let flat;
      try {
        flat = flatten(parseField(spec, area.value).row).map(Number);
      } catch {
        flat = [];
      }
      const size = image.h * image.w * image.c;
      if (flat.length !== size || flat.some((v) => !Number.isFinite(v))) flat = new Array(size).fill(lo);
      const rect = canvas.getBoundingClientRect();
      const x = Math.floor(((event.clientX - rect.left) / rect.width) * image.w);
      const y = Math.floor(((event.clientY - rect.top) / rect.height) * image.h);
      if (x < 0 || y < 0 || x >= image.w || y >= image.h) return;
      for (let ch = 0; ch < image.c; ch++) flat[(y * image.w + x) * image.c + ch] = event.shiftKey ? lo : hi;
      setField(spec, reshape(flat, rowShape(spec).every((d) => d > 0) ? rowShape(spec) : [size]));
      $("example-select").value = "";
    };
    canvas.addEventListener("pointerdown", (event) => {
      canvas.setPointerCapture(event.pointerId);
      paint(event);
    });
    canvas.addEventListener("pointermove", (event) => {
      if (event.buttons & 1) paint(event);
    });
  }

  // ---- one run: /predict, then /grad --------------------------------------------------

  // The page's state for tests and screen readers: loading | done | error.
  function setStatus(id, status) {
    if (id === state.runId) document.querySelector("main").dataset.status = status;
  }

  async function run(rows, example) {
    const id = ++state.runId;
    setStatus(id, "loading");
    clearError();
    const inputs = {};
    for (const [name, row] of Object.entries(rows)) inputs[name] = [row];
    const body = { model: state.model, inputs };
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
    renderGrad(grad, gradError);
    setStatus(id, "done");
  }

  function clearResults() {
    state.grad = null;
    $("decoded").textContent = "—";
    $("outputs").replaceChildren();
    $("summary").replaceChildren();
    $("grad-status").textContent = "";
    $("grad-status").className = "status";
    $("heatmap-figure").hidden = true;
    renderLayers(null);
  }

  function outputOrder(pred) {
    const names = state.outputs.map((o) => o.name).filter((n) => n in pred.outputs);
    for (const n of Object.keys(pred.outputs)) if (!names.includes(n)) names.push(n);
    return names;
  }

  function renderPrediction(pred, example) {
    const p = $("decoded");
    p.replaceChildren();
    const decoding = state.meta && state.meta.decoding;
    const decoded = Array.isArray(pred.decoded) ? pred.decoded[0] : null;
    const strong = el("strong", { testid: "decoded-value" });
    const codeName = decoding && decoding.output;
    const code = codeName && pred.outputs[codeName] ? flatten(pred.outputs[codeName][0]).join(" ") : "";
    if (decoded !== null && decoded !== undefined) {
      strong.textContent = String(decoded);
      p.append("Decoded: ", strong, code ? ` (${codeName} = ${code})` : "");
    } else if (decoding) {
      strong.textContent = code || "?";
      p.append(`${codeName || "Output"} `, strong, ": decodes to no valid class");
    } else {
      p.append(isExported() ? "No decoding in the metadata: raw outputs below." : "Raw outputs below.");
    }
    if (example && example.label !== undefined && example.label !== null) {
      if (decoding) p.append(` — true label ${example.label}, ${decoded === example.label ? "correct" : "wrong"}`);
      else p.append(` (the example's label: ${example.label})`);
    }

    const box = $("outputs");
    box.replaceChildren();
    for (const name of outputOrder(pred)) {
      const spec = state.outputs.find((o) => o.name === name) || { name };
      const value = pred.outputs[name][0];
      const dims = dimsOf(value);
      const flat = flatten(value);
      const block = el("div", { className: "output-block", testid: "output-block", "data-output": name });
      const head = el("h3", {}, el("code", { text: name }), dims.length ? ` [${dims.join(", ")}]` : " (scalar)");
      block.append(head);
      const bits = [];
      if (spec.description) bits.push(spec.description);
      if (spec.rounding_layer) bits.push(`rounded by layer '${spec.rounding_layer}' to ${fmtGrid(spec.grid)}`);
      if (bits.length) block.append(el("p", { className: "hint", text: bits.join("; ") }));
      const image = imageOf({ ...spec, shape: [-1, ...dims] });
      if (image && flat.length === image.h * image.w * image.c) {
        const canvas = el("canvas", { width: 120, height: 120, testid: "output-image", "data-output": name });
        canvas.setAttribute("role", "img");
        canvas.setAttribute("aria-label", `Output ${name} as an image`);
        drawImage(canvas, flat, image, spec.range);
        block.append(canvas);
      }
      // Relaxed values come from /grad, which only diffround.export models have.
      const heads = isExported() ? ["element", "hard", "relaxed"] : ["element", "value"];
      const table = el("table", { className: "values", testid: "output-table" });
      table.append(
        el(
          "thead",
          {},
          el("tr", {}, ...heads.map((t) => el("th", { scope: "col", text: t }))),
        ),
      );
      const tbody = el("tbody");
      flat.slice(0, MAX_ELEMENTS).forEach((v, k) => {
        tbody.append(
          el(
            "tr",
            { testid: "output-row" },
            el("th", { scope: "row", text: outputElementName(name, k, dims) }),
            el("td", { testid: "output-hard", text: fmt(v) }),
            ...(isExported() ? [el("td", { testid: "output-relaxed", text: "—" })] : []),
          ),
        );
      });
      table.append(tbody);
      block.append(el("div", { className: "table-wrap" }, table));
      if (flat.length > MAX_ELEMENTS) {
        block.append(el("p", { className: "note", text: `First ${MAX_ELEMENTS} of ${flat.length} elements.` }));
      }
      box.append(block);
    }
  }

  function renderGrad(grad, gradError) {
    const status = $("grad-status");
    const summary = $("summary");
    summary.replaceChildren();
    $("heatmap-figure").hidden = true;
    if (!grad) {
      status.className = "status warn";
      // The metadata's grad map says whether the model has gradients at all; /models'
      // `gradients` is also false when the service disables them (ENABLE_GRAD=false).
      if (gradError.status === 404 && !(isExported() && state.meta.grad)) {
        status.dataset.reason = "no-gradients";
        status.textContent =
          "This model has no gradients: it was not exported by diffround.export, so the page " +
          `shows its predictions only. The service said: ${gradError.message}`;
      } else if (gradError.status === 404) {
        status.dataset.reason = "disabled";
        status.textContent =
          "Gradients are disabled on this service (/grad answered 404), so only the " +
          `prediction is shown. The service said: ${gradError.message}`;
      } else {
        status.dataset.reason = "failed";
        status.textContent = `/grad failed, so only the prediction is shown: ${gradError.message}`;
      }
      renderLayers(null);
      return;
    }
    status.className = "status";
    status.dataset.reason = "";
    status.textContent = "";

    // Relaxed values next to the hard ones.
    for (const [name, out] of Object.entries(grad.outputs || {})) {
      const block = $("outputs").querySelector(`[data-output="${CSS.escape(name)}"]`);
      if (!block) continue;
      const cells = block.querySelectorAll('[data-testid="output-relaxed"]');
      const flat = flatten(out.relaxed[0]);
      cells.forEach((cell, k) => {
        cell.textContent = fmt(flat[k]);
      });
    }

    const s = grad.summary || {};
    fact(summary, "surrogate gap", fmt(s.surrogate_gap)).dataset.testid = "surrogate-gap";
    fact(summary, "dead gradients", `${(100 * s.dead_gradient_share).toFixed(1)} %`).dataset.testid =
      "dead-share";
    let where = "";
    const arg = s.argmax;
    if (arg && arg.output && arg.output_index) {
      where = ` (d ${arg.output}[${arg.output_index.join(", ")}] / d ${arg.input}[${arg.input_index.join(", ")}], row ${arg.row})`;
    } else if (arg && arg.output) {
      where = ` (d ${arg.output} / d ${arg.input} at [${(arg.index || []).join(", ")}])`;
    }
    const largest = s.max_abs_jacobian === null || s.max_abs_jacobian === undefined ? "none" : fmt(s.max_abs_jacobian);
    fact(summary, "largest |Jacobian|", largest + where).dataset.testid = "max-grad";
    if (s.text) fact(summary, "in words", s.text).dataset.testid = "summary-text";
    const omitted = grad.omitted_jacobians || [];
    if (omitted.length) {
      fact(
        summary,
        "omitted Jacobians",
        omitted.map((o) => `d ${o.output} / d ${o.input} (${o.elements} elements: ${o.reason})`).join("; "),
      ).dataset.testid = "omitted";
    }

    renderLayers(grad);
    setupHeatmap(grad);
  }

  // ---- rounding layers --------------------------------------------------------------

  function layerList(grad) {
    const fromMeta = (state.meta && state.meta.rounding_layers) || [];
    const names = fromMeta.map((l) => l.name);
    if (grad) for (const n of Object.keys(grad.rounding_layers || {})) if (!names.includes(n)) names.push(n);
    return names.map((n) => ({ name: n, meta: fromMeta.find((l) => l.name === n) || null }));
  }

  function renderLayers(grad) {
    const box = $("layers");
    box.replaceChildren();
    if (!state.meta) return;
    const layers = layerList(grad);
    if (!layers.length) {
      box.append(
        el("p", {
          className: "note",
          testid: "layers-none",
          text: isExported()
            ? "This model has no rounding layers."
            : "A plain SavedModel: no rounding layers are described.",
        }),
      );
      return;
    }
    layers.forEach(({ name, meta }) => {
      const live = grad && grad.rounding_layers ? grad.rounding_layers[name] : null;
      const panel = el("div", { className: "layer", testid: "layer-panel", "data-layer": name });
      panel.append(el("h3", {}, el("code", { text: name })));
      const dl = el("dl", { className: "facts" });
      const method = (live && live.method) || (meta && meta.method) || "?";
      const params = (live && live.params) || (meta && meta.params) || {};
      const grid = (live && live.grid) || (meta && meta.grid) || null;
      fact(dl, "method", method).dataset.testid = "layer-method";
      fact(dl, "parameters", Object.entries(params).map(([k, v]) => `${k}=${v}`).join(", ") || "none");
      fact(dl, "grid", fmtGrid(grid));
      if (meta && meta.shape) fact(dl, "shape", `[${meta.shape.join(", ")}]`);
      panel.append(dl);

      const body = el("div", { className: "layer-body" });
      const plot = svg("svg", {
        viewBox: "0 0 560 440",
        role: "img",
        "data-testid": "layer-plot",
        "aria-label": `Surrogate curve and derivative of layer ${name}`,
      });
      body.append(plot);
      let rows = null;
      if (live) {
        const dims = dimsOf(live.pre_round[0]);
        rows = {
          pre: flatten(live.pre_round[0]),
          sur: flatten(live.surrogate[0]),
          der: flatten(live.local_grad[0]),
          hard: flatten(live.hard[0]),
        };
        const names = elementNames(name);
        rows.names = rows.pre.map((_, k) => (names && names[k]) || indexLabel(k, dims));
        body.append(layerTable(rows));
      }
      panel.append(body);
      if (rows && rows.pre.length > MAX_ELEMENTS) {
        panel.append(el("p", { className: "note", text: `First ${MAX_ELEMENTS} of ${rows.pre.length} elements.` }));
      }
      box.append(panel);
      drawCurves(plot, meta && meta.surrogate_curve, grid, rows);
    });
  }

  function layerTable(rows) {
    const table = el("table", { testid: "layer-table" });
    table.append(
      el(
        "thead",
        {},
        el("tr", {}, ...["element", "hard", "pre-round", "surrogate", "derivative"].map((t) => el("th", { scope: "col", text: t }))),
      ),
    );
    const tbody = el("tbody");
    const n = Math.min(rows.pre.length, MAX_ELEMENTS);
    for (let k = 0; k < n; k++) {
      const swatch = el("span", { className: "swatch" });
      swatch.style.background = colour(k, n);
      const g = rows.der[k];
      const der = el("td", { testid: "layer-local-grad", text: fmt(g) });
      der.classList.toggle("dead", Math.abs(g) < DEAD);
      der.classList.toggle("large", Math.abs(g) > LARGE);
      if (Math.abs(g) < DEAD) der.textContent += " (dead)";
      if (Math.abs(g) > LARGE) der.textContent += " (exploding)";
      tbody.append(
        el(
          "tr",
          { testid: "layer-row" },
          el("th", { scope: "row" }, swatch, rows.names[k]),
          el("td", { testid: "layer-hard", text: fmt(rows.hard[k]) }),
          el("td", { testid: "layer-pre", text: fmt(rows.pre[k]) }),
          el("td", { testid: "layer-surrogate", text: fmt(rows.sur[k]) }),
          der,
        ),
      );
    }
    table.append(tbody);
    return el("div", { className: "table-wrap" }, table);
  }

  // ---- drawing ------------------------------------------------------------------------

  function drawImage(canvas, flat, image, range) {
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    const nums = flat.map(Number);
    let [lo, hi] = Array.isArray(range) ? range : [minOf(nums, 0), maxOf(nums)];
    if (!(hi > lo)) hi = lo + 1;
    const cw = canvas.width / image.w;
    const ch = canvas.height / image.h;
    for (let y = 0; y < image.h; y++) {
      for (let x = 0; x < image.w; x++) {
        const base = (y * image.w + x) * image.c;
        const ink = (c) => Math.min(Math.max((nums[base + c] - lo) / (hi - lo), 0), 1);
        if (image.c >= 3) {
          // Colour images are drawn as they are (brighter = higher).
          const [r, g, b] = [0, 1, 2].map((c) => Math.round(255 * ink(c)));
          ctx.fillStyle = `rgb(${r}, ${g}, ${b})`;
        } else {
          const g = Math.round(255 * (1 - ink(0)));
          ctx.fillStyle = `rgb(${g}, ${g}, ${g})`;
        }
        ctx.fillRect(x * cw, y * ch, Math.ceil(cw), Math.ceil(ch));
      }
    }
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

  // Image inputs with a Jacobian in this answer.
  function heatInputs(grad) {
    return state.inputs.filter(
      (spec) => imageOf(spec) && Object.values(grad.outputs || {}).some((o) => o.jacobians && o.jacobians[spec.name]),
    );
  }

  function setupHeatmap(grad) {
    const figure = $("heatmap-figure");
    const inputs = heatInputs(grad);
    const note = $("summary");
    if (!inputs.length) {
      const why = state.inputs.some((spec) => imageOf(spec))
        ? "the image input's Jacobians were not exported (see omitted Jacobians)"
        : "this model has no image input";
      fact(note, "heat map", `none: ${why}.`).dataset.testid = "heatmap-note";
      return;
    }
    const s = grad.summary || {};
    const arg = s.argmax;
    if (!state.heat || !inputs.some((i) => i.name === state.heat.input)) {
      const input = arg && inputs.some((i) => i.name === arg.input) ? arg.input : inputs[0].name;
      let output = Object.keys(grad.outputs).find((o) => grad.outputs[o].jacobians && grad.outputs[o].jacobians[input]);
      let element = 0;
      if (arg && arg.input === input && grad.outputs[arg.output]) {
        output = arg.output;
        const outDims = dimsOf(grad.outputs[output].hard[0]);
        const idx = arg.output_index || (arg.index || []).slice(0, outDims.length);
        element = idx.reduce((acc, i, d) => acc * outDims[d] + i, 0);
      }
      state.heat = { input, output, element };
    }
    const inputSelect = $("heatmap-input");
    inputSelect.replaceChildren(...inputs.map((i) => new Option(i.name, i.name)));
    inputSelect.value = state.heat.input;
    fillHeatOutputs(grad);
    figure.hidden = false;
    drawHeatmap(grad);
  }

  function fillHeatOutputs(grad) {
    const select = $("heatmap-output");
    select.replaceChildren();
    const input = state.heat.input;
    let valid = false;
    for (const [name, out] of Object.entries(grad.outputs)) {
      if (!out.jacobians || !out.jacobians[input]) continue;
      const dims = dimsOf(out.hard[0]);
      const n = Math.min(product(dims), MAX_HEAT_CHOICES);
      for (let k = 0; k < n; k++) {
        select.append(new Option(outputElementName(name, k, dims), `${name}|${k}`));
        if (name === state.heat.output && k === state.heat.element) valid = true;
      }
    }
    if (!valid && select.options.length) {
      const choice = select.options[0].value;
      state.heat.output = choice.slice(0, choice.lastIndexOf("|"));
      state.heat.element = Number(choice.slice(choice.lastIndexOf("|") + 1));
    }
    select.value = `${state.heat.output}|${state.heat.element}`;
  }

  // The chosen output element's Jacobian row w.r.t. the chosen image input, summed over
  // channels: one value per pixel.
  function heatValues(grad) {
    const { input, output, element } = state.heat;
    const spec = state.inputs.find((i) => i.name === input);
    const image = imageOf(spec);
    const flat = flatten(grad.outputs[output].jacobians[input][0]);
    const size = image.h * image.w * image.c;
    const row = flat.slice(element * size, (element + 1) * size);
    const values = [];
    for (let p = 0; p < image.h * image.w; p++) {
      let v = 0;
      for (let c = 0; c < image.c; c++) v += row[p * image.c + c];
      values.push(v);
    }
    return { values, image };
  }

  function drawHeatmap(grad) {
    const canvas = $("heatmap");
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    const scale = $("heatmap-scale").getContext("2d");
    scale.clearRect(0, 0, 240, 14);
    const { values, image } = heatValues(grad);
    const m = maxOf(values.map(Math.abs), 0);
    const cw = canvas.width / image.w;
    const ch = canvas.height / image.h;
    values.forEach((v, i) => {
      ctx.fillStyle = m > 0 ? diverging(v / m) : "#fff";
      ctx.fillRect((i % image.w) * cw, Math.floor(i / image.w) * ch, Math.ceil(cw), Math.ceil(ch));
    });
    ctx.strokeStyle = "rgba(0, 0, 0, 0.15)";
    for (let j = 1; j < image.w; j++) {
      ctx.beginPath();
      ctx.moveTo(j * cw, 0);
      ctx.lineTo(j * cw, canvas.height);
      ctx.stroke();
    }
    for (let j = 1; j < image.h; j++) {
      ctx.beginPath();
      ctx.moveTo(0, j * ch);
      ctx.lineTo(canvas.width, j * ch);
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
    const { output, element, input } = state.heat;
    const dims = dimsOf(grad.outputs[output].hard[0]);
    const name = outputElementName(output, element, dims);
    const channels = image.c > 1 ? ` (summed over ${image.c} channels)` : "";
    canvas.setAttribute(
      "aria-label",
      `Jacobian of ${name} w.r.t. ${input}: largest magnitude ${fmt(m)}` + (m > 0 ? "" : " (all zero)"),
    );
    $("heatmap-caption").textContent =
      m > 0
        ? `d ${name} (relaxed) / d ${input} pixel${channels}: red pixels raise this output, ` +
          `blue ones lower it; colours span ±${fmt(m)}.`
        : `Every entry of d ${name} / d ${input} is zero: this output's gradient is dead.`;
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

  // The layer's sampled surrogate curve (over [offset - step/2, offset + 3 step/2]) shifted
  // by whole grid steps to cover the elements' pre-round values (a surrogate of rounding to
  // a uniform grid satisfies s(x + step) = s(x) + step), but not past the grid's bounds.
  function tiledCurve(curve, grid, pre) {
    const step = grid && grid.step > 0 ? grid.step : 1;
    const offset = grid && Number.isFinite(grid.offset) ? grid.offset : 0;
    const x0 = minOf(curve.x);
    const x1 = maxOf(curve.x);
    const finite = pre.filter(Number.isFinite);
    let kmin = finite.length ? Math.floor((minOf(finite) - x0) / step) : 0;
    let kmax = finite.length ? Math.ceil((maxOf(finite) - x1) / step) : 0;
    kmin = Math.min(kmin, 0);
    kmax = Math.max(kmax, 0);
    if (grid && Number.isFinite(grid.min)) kmin = Math.max(kmin, Math.min(0, Math.ceil((grid.min - offset) / step - 1e-9)));
    if (grid && Number.isFinite(grid.max)) kmax = Math.min(kmax, Math.max(0, Math.floor((grid.max - offset) / step + 1e-9) - 1));
    kmin = Math.max(kmin, -20);
    kmax = Math.min(kmax, 20);
    const xs = [];
    const value = [];
    const derivative = [];
    for (let k = kmin; k <= kmax; k++) {
      curve.x.forEach((x, i) => {
        const shifted = x + k * step;
        if (k > kmin && shifted <= x1 + (k - 1) * step) return; // already drawn by k - 1
        xs.push(shifted);
        value.push(curve.value[i] + k * step);
        derivative.push(curve.derivative[i]);
      });
    }
    return { x: xs, value, derivative, step, offset, tiles: kmax - kmin + 1 };
  }

  // One layer's surrogate s(x) and derivative s'(x), with one dot per element at
  // (pre_round, surrogate) and (pre_round, local derivative).
  function drawCurves(root, curve, grid, rows) {
    root.replaceChildren();
    if (!curve || !Array.isArray(curve.x) || !curve.x.length) {
      svg("text", { x: 20, y: 30, class: "axis-label" }, root).textContent =
        "This layer's metadata has no surrogate curve.";
      return;
    }
    const pre = rows ? rows.pre.slice(0, MAX_ELEMENTS) : [];
    const t = tiledCurve(curve, grid, pre);
    const W = 560;
    const left = 56;
    const right = 16;
    const x0 = minOf(t.x);
    const x1 = maxOf(t.x);
    const sx = (x) => left + ((x - x0) / (x1 - x0)) * (W - left - right);
    const n = pre.length;
    // Exact rounding to the grid (clamped to its bounds), as a staircase.
    const stair = [];
    const snap = (x) => {
      let g = t.offset + Math.round((x - t.offset) / t.step) * t.step;
      if (grid && Number.isFinite(grid.min)) g = Math.max(g, grid.min);
      if (grid && Number.isFinite(grid.max)) g = Math.min(g, grid.max);
      return g;
    };
    let x = x0;
    stair.push([x0, snap(x0)]);
    while (x < x1) {
      const next = Math.min(t.offset + (Math.floor((x - t.offset) / t.step + 0.5) + 0.5) * t.step, x1);
      stair.push([next, snap(x)]);
      if (next < x1) stair.push([next, snap(next + 1e-9)]);
      if (next <= x) break;
      x = next;
    }
    const panels = [
      { title: "surrogate s(x)", top: 24, curve: t.value, point: (k) => rows.sur[k], reference: stair, testid: "curve-value" },
      {
        title: "derivative s'(x)",
        top: 244,
        curve: t.derivative,
        point: (k) => rows.der[k],
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
      let lo = minOf(ys, 0);
      let hi = maxOf(ys);
      const pad = (hi - lo || 1) * 0.08;
      lo -= pad;
      hi += pad;
      const sy = (y) => panel.top + H - ((y - lo) / (hi - lo)) * H;
      const g = svg("g", { "data-testid": panel.testid }, root);
      svg("text", { x: left, y: panel.top - 8, class: "panel-title" }, g).textContent = panel.title;
      svg("rect", { x: left, y: panel.top, width: W - left - right, height: H, class: "frame" }, g);
      for (const tick of niceTicks(lo, hi, 4)) {
        svg("line", { x1: left, x2: W - right, y1: sy(tick), y2: sy(tick), class: "grid" }, g);
        svg("text", { x: left - 6, y: sy(tick) + 4, class: "tick", "text-anchor": "end" }, g).textContent =
          fmt(tick).replace(/(\.\d*?)0+$/, "$1").replace(/\.$/, "") || "0";
      }
      for (const tick of niceTicks(x0, x1, 4)) {
        svg("line", { x1: sx(tick), x2: sx(tick), y1: panel.top, y2: panel.top + H, class: "grid" }, g);
        svg("text", { x: sx(tick), y: panel.top + H + 14, class: "tick", "text-anchor": "middle" }, g).textContent =
          String(Math.round(tick * 100) / 100);
      }
      const ref = panel.reference.map(([rx, ry]) => `${sx(rx)},${sy(ry)}`).join(" ");
      svg("polyline", { points: ref, class: "reference" }, g);
      const pts = [];
      t.x.forEach((cx, i) => {
        if (Number.isFinite(panel.curve[i])) pts.push(`${sx(cx).toFixed(1)},${sy(panel.curve[i]).toFixed(1)}`);
      });
      svg("polyline", { points: pts.join(" "), class: "curve", "data-tiles": t.tiles }, g);
      const labels = []; // one label per cluster of dots closer than 10 px
      for (let k = 0; k < n; k++) {
        const p = pre[k];
        const y = panel.point(k);
        if (!Number.isFinite(p) || !Number.isFinite(y)) continue;
        const clamped = Math.min(Math.max(p, x0), x1);
        const cx = sx(clamped);
        const cy = sy(y);
        const short = String(rows.names[k]).replace(/\s*\(.*\)$/, "");
        const text = clamped === p ? short : `${short} (x=${fmt(p)})`;
        const near = labels.find((l) => Math.hypot(l.cx - cx, l.cy - cy) < 10);
        if (near) near.texts.push(text);
        else labels.push({ cx, cy, texts: [text] });
        const dot = svg(
          "circle",
          {
            cx,
            cy,
            r: 6,
            fill: colour(k, n),
            class: clamped === p ? "point" : "point outside",
            "data-testid": "curve-point",
            "data-element": k,
          },
          g,
        );
        svg("title", {}, dot).textContent =
          `${rows.names[k]}: pre-round ${fmt(p)}, surrogate ${fmt(rows.sur[k])}, derivative ${fmt(rows.der[k])}`;
      }
      if (n <= 16) {
        for (const { cx, cy, texts } of labels) {
          const anchor = cx > W / 2 ? "end" : "start";
          const lx = cx + (anchor === "end" ? -9 : 9);
          const ly = cy - panel.top > 20 ? cy - 8 : cy + 18;
          svg("text", { x: lx, y: ly, class: "point-label", "text-anchor": anchor }, g).textContent =
            texts.length > 3 ? `${texts.slice(0, 3).join(", ")} +${texts.length - 3}` : texts.join(", ");
        }
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
        parsed = readFields();
      } catch (err) {
        if (!(err instanceof InputError)) throw err;
        showError(err.message);
        return;
      }
      $("input-note").textContent = parsed.note;
      guarded(() => run(parsed.rows, null));
    });
    $("heatmap-input").addEventListener("change", (event) => {
      if (!state.grad) return;
      state.heat.input = event.target.value;
      fillHeatOutputs(state.grad);
      drawHeatmap(state.grad);
    });
    $("heatmap-output").addEventListener("change", (event) => {
      if (!state.grad) return;
      const choice = event.target.value;
      state.heat.output = choice.slice(0, choice.lastIndexOf("|"));
      state.heat.element = Number(choice.slice(choice.lastIndexOf("|") + 1));
      drawHeatmap(state.grad);
    });
    guarded(loadModels);
  }

  start();
})();
