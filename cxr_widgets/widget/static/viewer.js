// cxr-widgets image viewer: window/level, zoom, pan, probe, distance, side by side,
// boxes and the linked findings table. Geometry (box corners in original pixels),
// presets, colours and value mappings come from Python; this file draws and links.
// Nothing here talks to the kernel while a drag is in progress.
const SVG = "http://www.w3.org/2000/svg";
const VIEW_LABELS = { frontal: "Frontal", lateral: "Lateral", prior: "Prior" };
const HIT_SLOP = 6; // screen px around a box that still counts as a click on it
const MAX_ZOOM_PX = 32; // screen px per image pixel at the most
const MIN_ZOOM = 8; // zoom relative to fit always reaches at least 8x
const SETTLE_MS = 120; // quiet time before asking the kernel for detail
const HANDLE_PX = 4; // half the side of a box's resize handle, screen px
const HANDLE_HIT = 9; // screen px around a handle that still grabs it
const MIN_BOX_SCREEN = 6; // a drawn box smaller than this (screen px) is a click, not a box
const MIN_BOX_PX = 1; // nor is one under one image pixel
const KEYS = [
  ["r", "reset view and window"],
  ["i", "invert"],
  ["1 – 5", "presets: file, lung, mediastinum, bone, full range"],
  ["n / p", "next / previous finding (zooms to it)"],
  ["f / 0", "fit / 1:1 (one image pixel per screen pixel)"],
  ["+ / −", "zoom in / out"],
  ["w / a / m", "tool: window/level, pan, measure"],
  ["b / c", "all boxes / central square"],
  ["? or h", "this help; Esc closes it"],
];
const EDIT_HINT =
  "Editing boxes: select a finding, then drag inside one of its boxes to move it, drag a " +
  "handle to resize it, or drag elsewhere on the image to draw a new box for it. To pan " +
  "while editing, hold Shift or Space while dragging (or drag with the middle button). " +
  "Delete or Backspace removes the focused box; arrow keys move it (Shift: 10 px).";
// Shown in the help while box editing is on (the owner, e.g. review mode, turns it on).
const EDIT = [
  ["drag inside a box", "moves it (the boxes of the selected finding)"],
  ["drag a handle", "resizes the box"],
  ["drag outside its boxes", "draws a new box for the selected finding (also over other findings' boxes)"],
  ["click outside every box", "deselects the finding: drags change the window again"],
  ["Shift, Space or middle drag", "pans while editing"],
  ["Delete / Backspace", "removes the focused box (the one last clicked, moved or drawn)"],
  ["arrow keys", "move the focused box by one image pixel (Shift: 10)"],
  ["e", "focus the next box of the selected finding"],
  ["Esc", "unfocuses the box"],
];
const MOUSE = [
  ["drag", "the current tool: window/level (right = wider, down = higher level), pan or measure"],
  ["Shift+drag, middle drag", "pan"],
  ["wheel", "zoom around the cursor"],
  ["click a box", "selects the smallest box under the cursor (or the box whose label you click); click again at the same place to cycle through overlapping boxes"],
  ["hover", "probe: position in original pixels and value (≈ from the overview until zoomed in)"],
];

function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

function html(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function textColor(hex) {
  const v = hex.replace("#", "");
  const [r, g, b] = [0, 2, 4].map((i) => parseInt(v.slice(i, i + 2), 16));
  return 0.299 * r + 0.587 * g + 0.114 * b > 140 ? "#000" : "#fff";
}

function fmt(value) {
  const a = Math.abs(value);
  if (a >= 1000 || Number.isInteger(value)) return String(Math.round(value));
  if (a >= 10) return value.toFixed(1);
  return value.toPrecision(3);
}

// --- pixels --------------------------------------------------------------------------

async function inflate(view) {
  const bytes = new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

// Codes arrive as images.encode_uint16 packs them ("zlib-delta", or "zlib-zigzag" as
// the meta's codec says): per-row differences (zigzag: signed, stored as
// (d << 1) ^ (d >> 15)), all low bytes then all high bytes, zlib. Undo the planes, the
// zigzag, then a running sum per row.
async function decodeCodes(view, w, h, codec) {
  const planes = await inflate(view);
  const n = w * h;
  const codes = new Uint16Array(n);
  const zigzag = codec === "zlib-zigzag";
  let max = 0;
  for (let y = 0; y < h; y++) {
    let acc = 0;
    const row = y * w;
    for (let x = 0; x < w; x++) {
      const i = row + x;
      const z = planes[i] | (planes[n + i] << 8);
      acc = (acc + (zigzag ? (z >>> 1) ^ -(z & 1) : z)) & 0xffff;
      codes[i] = acc;
      if (acc > max) max = acc;
    }
  }
  return { codes, max };
}

// The same formula as viewer_pixels.window_to_uint8 (rounded half up, then inverted).
function greyOf(value, level, width, invert) {
  const w = Math.max(width, 1e-9);
  let t = (value - (level - w / 2)) / w;
  t = t < 0 ? 0 : t > 1 ? 1 : t;
  const g = Math.floor(t * 255 + 0.5);
  return invert ? 255 - g : g;
}

// A layer: 16-bit codes with their value mapping, painted into an offscreen canvas.
class Layer {
  constructor(codes, max, w, h, offset, step) {
    Object.assign(this, { codes, max, w, h, offset, step });
    this.canvas = document.createElement("canvas");
    this.canvas.width = w;
    this.canvas.height = h;
    this.ctx = this.canvas.getContext("2d");
    this.image = this.ctx.createImageData(w, h);
    this.out = new Uint32Array(this.image.data.buffer);
    this.lut = new Uint32Array(max + 1);
    this.key = "";
  }
  value(i) { return this.offset + this.step * this.codes[i]; }
  paint(level, width, invert) {
    const key = `${level}|${width}|${invert}`;
    if (key === this.key) return;
    this.key = key;
    const { lut, codes, out, offset, step } = this;
    for (let c = 0; c < lut.length; c++) {
      const g = greyOf(offset + step * c, level, width, invert);
      lut[c] = 0xff000000 | (g << 16) | (g << 8) | g;
    }
    for (let i = 0; i < codes.length; i++) out[i] = lut[codes[i]];
    this.ctx.putImageData(this.image, 0, 0);
  }
}

// --- the widget ------------------------------------------------------------------------

function render({ model, el }) {
  let hovered = null; // finding under the pointer (local, not synced)
  let tool = "wl";
  let helpOpen = false;
  let requestId = 0;
  const layers = {}; // view -> Layer (overview)
  const loading = {}; // view -> Promise
  let panes = [];
  let frameRequested = false;
  let lastClick = null; // {pane, x, y, pick}: repeated clicks cycle
  let overlayGen = 0; // bumped when boxes, crop or a measurement change
  // Box edits drawn before the kernel has the saved report: {seq, finding, box, rect}
  // (box -1: new; rect null: deleted; seq null: arrow-key moves not sent yet).
  let pending = [];
  let focused = null; // {finding, box}: the box Delete and the arrow keys act on
  let nudgeTimer = null;
  let spaceHeld = false;
  let lastSeq = 0;

  const root = html("div", "cxr-viewer");
  root.tabIndex = 0;
  root.setAttribute("role", "application");
  root.setAttribute("aria-label", "Image viewer: press ? for keys");
  const main = html("div", "cxr-viewer-main");
  const side = html("div", "cxr-findings");
  root.append(main, side);
  el.append(root);

  // --- toolbar row 1: views, layout, links, boxes, frame ---
  const toolbar = html("div", "cxr-toolbar");
  const tabs = html("div", "cxr-view-tabs");
  const toggles = html("div", "cxr-toggles");
  function checkbox(trait, label, cls, title) {
    const wrap = html("label", "cxr-toggle " + cls);
    if (title) wrap.title = title;
    const box = document.createElement("input");
    box.type = "checkbox";
    box.checked = model.get(trait);
    box.addEventListener("change", () => { model.set(trait, box.checked); model.save_changes(); });
    model.on("change:" + trait, () => (box.checked = model.get(trait)));
    wrap.append(box, document.createTextNode(" " + label));
    return wrap;
  }
  function select(cls, label, options, get, set) {
    const s = document.createElement("select");
    s.className = cls;
    s.setAttribute("aria-label", label);
    s.title = label;
    const fill = () => {
      s.replaceChildren();
      for (const [value, text, disabled] of options()) {
        const o = document.createElement("option");
        o.value = value;
        o.textContent = text;
        o.disabled = !!disabled;
        s.append(o);
      }
      s.value = get();
    };
    s.addEventListener("change", () => set(s.value));
    fill();
    s.refill = fill;
    return s;
  }
  const layoutSelect = select(
    "cxr-layout-select", "Layout",
    () => [
      ["single", "one view"],
      ["views", "views side by side", model.get("views").length < 2],
      ["runs", "compare runs", model.get("compare") < 0],
    ],
    () => model.get("arrangement"),
    (v) => { model.set("arrangement", v); model.save_changes(); },
  );
  const compareSelect = select(
    "cxr-compare-select", "Compare with an earlier run",
    () => [["-1", "compare with…"], ...model.get("runs").map((r, i) => [String(i), r])],
    () => String(model.get("compare")),
    (v) => {
      model.set("compare", Number(v));
      if (Number(v) >= 0) model.set("arrangement", "runs");
      model.save_changes();
    },
  );
  const frameSelect = select(
    "cxr-frame-select", "How box coordinates map to the image (see docs/geometry.md)",
    () => model.get("frame_choices").map((f) => [f.value, f.caption]),
    () => model.get("frame"),
    (v) => { model.set("frame", v); model.save_changes(); },
  );
  toggles.append(
    layoutSelect,
    compareSelect,
    checkbox("link_view", "link zoom", "cxr-toggle-link-view", "Side by side: zoom and pan together"),
    checkbox("link_window", "link window", "cxr-toggle-link-window", "Side by side: one window/level for all"),
    checkbox("show_boxes", "all boxes", "cxr-toggle-boxes"),
    checkbox("show_crop", "central square", "cxr-toggle-crop"),
    frameSelect,
  );
  toolbar.append(tabs, toggles);

  // --- toolbar row 2: tools, presets, invert, fit, readout ---
  const tools = html("div", "cxr-tools");
  function button(cls, text, title, onClick) {
    const b = html("button", "cxr-tool " + cls, text);
    b.type = "button";
    b.title = title;
    b.setAttribute("aria-label", title);
    b.addEventListener("click", onClick);
    return b;
  }
  const toolButtons = {
    wl: button("cxr-tool-wl", "W/L", "Drag to change window/level (w)", () => setTool("wl")),
    pan: button("cxr-tool-pan", "Pan", "Drag to pan (a)", () => setTool("pan")),
    measure: button("cxr-tool-measure", "Measure", "Drag to measure a distance (m)", () => setTool("measure")),
  };
  const presetBox = html("span", "cxr-presets");
  const invertButton = button("cxr-invert", "Invert", "Invert grey levels (i)", () => toggleInvert());
  const fitButton = button("cxr-fit", "Fit", "Whole image (f)", () => setZoom(1));
  const oneButton = button("cxr-one", "1:1", "One image pixel per screen pixel (0)", () => oneToOne());
  const resetButton = button("cxr-reset", "Reset", "Reset view and window (r)", () => resetAll());
  const helpButton = button("cxr-help-button", "?", "Keys and mouse (?)", () => toggleHelp());
  const windowReadout = html("span", "cxr-window-readout");
  tools.append(...Object.values(toolButtons), presetBox, invertButton, fitButton, oneButton,
    resetButton, helpButton, windowReadout);

  // --- demo banner (above the image, never over it), stage, readouts, caption ---
  const demoBanner = html("div", "cxr-demo-overlay");
  const stage = html("div", "cxr-stage");
  const empty = html("div", "cxr-empty");
  const grid = html("div", "cxr-panes");
  stage.append(grid, empty);
  const help = html("div", "cxr-help");
  help.setAttribute("role", "dialog");
  help.setAttribute("aria-label", "Viewer keys");
  const helpTable = html("table");
  help.append(html("div", "cxr-help-title", "Viewer keys (when the viewer has focus)"), helpTable);
  for (const [k, d] of [...KEYS, ...MOUSE]) {
    const tr = html("tr");
    tr.append(html("td", "cxr-help-key", k), html("td", "", d));
    helpTable.append(tr);
  }
  const editHelp = html("div", "cxr-help-edit");
  const editTable = html("table");
  editHelp.append(html("div", "cxr-help-title", "Editing boxes (select a finding first)"), editTable);
  for (const [k, d] of EDIT) {
    const tr = html("tr");
    tr.append(html("td", "cxr-help-key", k), html("td", "", d));
    editTable.append(tr);
  }
  help.insertBefore(editHelp, helpTable); // on top: while editing these matter most
  stage.append(help);
  const readouts = html("div", "cxr-readouts");
  const probe = html("span", "cxr-probe", "");
  const measureOut = html("span", "cxr-measure", "");
  const editOut = html("span", "cxr-edit-readout", "");
  editOut.setAttribute("aria-live", "polite");
  readouts.append(probe, measureOut, editOut);
  const notesBox = html("div", "cxr-notes");
  const caption = html("div", "cxr-caption");
  main.append(toolbar, tools, demoBanner, stage, readouts, notesBox, caption);

  // --- findings table ---
  const head = html("div", "cxr-findings-head");
  const title = html("span", "cxr-findings-title", "Findings");
  const copy = html("button", "cxr-copy", "Copy report text");
  copy.type = "button";
  head.append(title, copy);
  const table = html("table", "cxr-table");
  const tbody = document.createElement("tbody");
  table.append(tbody);
  const hint = html("div", "cxr-findings-hint");
  const warnings = html("div", "cxr-warnings");
  side.append(head, table, warnings, hint);

  // --- state helpers ---------------------------------------------------------------------
  const meta = (view) => (model.get("images") || {})[view];

  function setTool(name) {
    tool = name;
    for (const [k, b] of Object.entries(toolButtons)) b.classList.toggle("cxr-active", k === name);
    for (const p of panes) p.el.dataset.tool = name;
  }

  // The Python traits (window, invert, preset, camera) describe the frontal pane of the
  // shown run; the toolbar acts on it, or on the first pane when no frontal is shown.
  function frontalPane() { return panes.find((p) => p.view === "frontal" && p.run === "current"); }
  function primary() { return frontalPane() || panes[0]; }

  // Panes sharing window or camera with `pane` (itself included).
  function linked(pane, what) {
    if (what === "window") {
      return model.get("link_window") ? panes : panes.filter((p) => p.view === pane.view);
    }
    return model.get("link_view") ? panes : [pane];
  }

  function windowOf(pane) { return pane.win; }

  function setWindow(pane, level, width, invert) {
    for (const p of linked(pane, "window")) {
      p.win = { level, width: Math.max(width, 1e-6), invert: invert ?? p.win.invert };
      schedule(p);
    }
    drawWindowReadout();
  }

  function saveDisplay() {
    const p = frontalPane();
    if (!p || !p.meta) return;
    model.set("window", [p.win.level, p.win.width]);
    model.set("invert", p.win.invert);
    model.set("camera", { zoom: p.cam.zoom, x: p.cam.x, y: p.cam.y });
    model.save_changes();
  }

  function applyPreset(name) {
    const p = primary();
    if (!p || !p.meta) return;
    for (const q of linked(p, "window")) {
      const w = q.meta && q.meta.presets[name];
      if (w) { q.win = { ...q.win, level: w[0], width: w[1] }; schedule(q); }
    }
    if (p === frontalPane()) {
      model.set("preset", name);
      model.set("window", [p.win.level, p.win.width]);
      model.save_changes();
    }
    drawWindowReadout();
  }

  function toggleInvert() {
    const p = primary();
    if (!p) return;
    setWindow(p, p.win.level, p.win.width, !p.win.invert);
    saveDisplay();
  }

  // --- panes ---------------------------------------------------------------------------------
  function paneSpecs() {
    const views = model.get("views");
    const layout = model.get("arrangement");
    if (!views.length) return [];
    if (layout === "views" && views.length > 1) return views.map((v) => ({ view: v, run: "current" }));
    if (layout === "runs" && model.get("compare") >= 0) {
      return [{ view: "frontal", run: "current" }, { view: "frontal", run: "compare" }];
    }
    const view = views.includes(model.get("view")) ? model.get("view") : views[0];
    return [{ view, run: "current" }];
  }

  function makePane(spec) {
    const el = html("div", "cxr-pane");
    el.dataset.view = spec.view;
    el.dataset.run = spec.run;
    el.dataset.tool = tool;
    const canvas = html("canvas", "cxr-canvas");
    canvas.setAttribute("role", "img");
    canvas.setAttribute("aria-label", `${VIEW_LABELS[spec.view] || spec.view} image`);
    const overlay = svg("svg", { class: "cxr-svg" });
    const label = html("div", "cxr-pane-label");
    el.append(canvas, overlay, label);
    const pane = {
      ...spec, el, canvas, overlay, label, ctx: canvas.getContext("2d"),
      cam: { zoom: 1, x: null, y: null }, win: { level: 0, width: 1, invert: false },
      meta: null, detail: null, dirty: true, cw: 0, ch: 0, pending: null, settleTimer: null,
    };
    attachPointer(pane);
    return pane;
  }

  function rebuildPanes() {
    const specs = paneSpecs();
    const same = specs.length === panes.length &&
      specs.every((s, i) => s.view === panes[i].view && s.run === panes[i].run);
    if (!same) {
      const old = panes;
      panes = specs.map(makePane);
      grid.replaceChildren(...panes.map((p) => p.el));
      grid.dataset.count = panes.length;
      for (const p of panes) {
        const twin = old.find((o) => o.view === p.view && o.meta);
        if (twin) { p.cam = { ...twin.cam }; p.win = { ...twin.win }; p.detail = twin.detail; }
      }
      setTool(tool);
    }
    const missing = [];
    let newImage = false;
    for (const p of panes) {
      const m = meta(p.view);
      if (m && p.meta !== m && p.meta && p.meta.serial === m.serial) {
        p.meta = m; // the same image at a better resolution (preview -> overview)
      } else if (m && p.meta !== m) {
        p.meta = m;
        p.detail = null;
        newImage = true;
        if (p === frontalPane()) {
          const [level, width] = model.get("window");
          p.win = { level, width, invert: model.get("invert") };
          p.cam = camFromModel(p);
        } else if (!panes.some((q) => q !== p && q.view === p.view && q.meta === m)) {
          p.win = { level: m.window[0], width: m.window[1], invert: m.invert };
        }
        const lead = primary();
        if (model.get("link_window") && p !== lead && lead.meta) p.win = { ...lead.win };
      }
      if (!p.meta) continue;
      const data = model.get(`${p.view}_pixels`);
      if ((!data || !data.byteLength) && !layers[p.view]) missing.push(p.view);
      else ensureLayer(p.view);
      p.label.textContent = paneLabel(p);
    }
    if (missing.length) model.send({ kind: "want", views: missing });
    const hasImage = panes.length > 0;
    grid.style.display = hasImage ? "" : "none";
    empty.style.display = hasImage ? "none" : "";
    empty.textContent = model.get("message");
    drawPresets();
    drawNotes();
    resize();
    if (newImage) redrawOverlays(); // its boxes at once, before its pixels are decoded
  }

  function paneLabel(p) {
    const name = VIEW_LABELS[p.view] || p.view;
    if (model.get("arrangement") === "runs") {
      const runs = model.get("runs");
      return p.run === "compare" ? `${name} · ${runs[model.get("compare")] || "earlier run"}` : `${name} · shown run`;
    }
    return panes.length > 1 ? name : "";
  }

  async function ensureLayer(view) {
    const m = meta(view);
    const data = model.get(`${view}_pixels`);
    if (!m || !data || !data.byteLength) return;
    if (layers[view] && layers[view].meta === m && layers[view].data === data) return;
    if (loading[view] && loading[view].data === data) return loading[view].promise;
    const promise = (async () => {
      const t0 = performance.now();
      const { codes, max } = await decodeCodes(data, m.ow, m.oh, m.codec);
      root.dataset.decodeMs = String(Math.round(performance.now() - t0));
      root.dataset.arrivedAt = String(performance.timeOrigin + t0);
      const layer = new Layer(codes, max, m.ow, m.oh, m.offset, m.step);
      layer.meta = m;
      layer.data = data;
      layers[view] = layer;
      for (const p of panes) if (p.view === view) schedule(p);
      root.dataset.ready = String(Number(root.dataset.ready || 0) + 1);
    })();
    loading[view] = { data, promise };
    return promise;
  }

  function camFromModel(p) {
    const c = model.get("camera") || {};
    if (c.rect) return rectCam(p, c.rect);
    return { zoom: c.zoom || 1, x: c.x ?? null, y: c.y ?? null };
  }

  // --- geometry: image coordinates (original pixels) <-> pane (CSS px) ---
  function fitScale(p) {
    const m = p.meta;
    if (!m || !p.cw) return 1;
    return Math.min(p.cw / m.width, p.ch / m.height);
  }
  function maxZoom(p) {
    return Math.max(MIN_ZOOM, MAX_ZOOM_PX / fitScale(p));
  }
  function xform(p) {
    const m = p.meta;
    const s = fitScale(p) * p.cam.zoom;
    const cx = p.cam.x ?? m.width / 2;
    const cy = p.cam.y ?? m.height / 2;
    return { s, tx: p.cw / 2 - cx * s, ty: p.ch / 2 - cy * s };
  }
  function toImage(p, px, py) {
    const { s, tx, ty } = xform(p);
    return [(px - tx) / s, (py - ty) / s];
  }
  function rectCam(p, [x0, y0, x1, y1]) {
    const m = p.meta;
    if (!m || !p.cw) return { zoom: 1, x: null, y: null, rect: [x0, y0, x1, y1] };
    const s = Math.min(p.cw / Math.max(x1 - x0, 1), p.ch / Math.max(y1 - y0, 1));
    const zoom = Math.min(Math.max(s / fitScale(p), 1), maxZoom(p));
    return { zoom, x: (x0 + x1) / 2, y: (y0 + y1) / 2 };
  }

  function setCam(pane, cam) {
    const m = pane.meta;
    const zoom = Math.min(Math.max(cam.zoom, 0.25), maxZoom(pane));
    const next = { zoom, x: cam.x, y: cam.y };
    for (const p of linked(pane, "view")) {
      if (p === pane || !p.meta) { if (p === pane) p.cam = next; }
      else {
        // Linked panes share zoom and the centre as a fraction of the image.
        const fx = next.x === null ? 0.5 : next.x / m.width;
        const fy = next.y === null ? 0.5 : next.y / m.height;
        p.cam = { zoom, x: fx * p.meta.width, y: fy * p.meta.height };
      }
      schedule(p);
      settle(p);
    }
  }

  // --- drawing -----------------------------------------------------------------------------
  function schedule(p) {
    p.dirty = true;
    if (!frameRequested) {
      frameRequested = true;
      requestAnimationFrame(() => {
        frameRequested = false;
        for (const q of panes) if (q.dirty) draw(q);
      });
    }
  }

  function resize() {
    const dpr = window.devicePixelRatio || 1;
    for (const p of panes) {
      const r = p.el.getBoundingClientRect();
      if (r.width < 2 || r.height < 2) continue; // not laid out yet (hidden output, tab)
      const cw = Math.round(r.width);
      const ch = Math.round(r.height);
      if (cw !== p.cw || ch !== p.ch) {
        settle(p);
        p.cw = cw;
        p.ch = ch;
        p.canvas.width = Math.round(cw * dpr);
        p.canvas.height = Math.round(ch * dpr);
        p.overlay.setAttribute("viewBox", `0 0 ${cw} ${ch}`);
        if (p.cam.rect) p.cam = rectCam(p, p.cam.rect);
      }
      if (p === frontalPane() && model.get("camera").rect && p.meta) {
        p.cam = rectCam(p, model.get("camera").rect);
        settle(p);
        saveDisplay();
      }
      schedule(p);
    }
  }

  function draw(p) {
    p.dirty = false;
    const { ctx, canvas } = p;
    const dpr = window.devicePixelRatio || 1;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    const layer = layers[p.view];
    // A preview's layer stays on screen until the overview of the same image is decoded.
    if (!p.meta || !layer || layer.meta.serial !== p.meta.serial) { drawOverlay(p); return; }
    const { s, tx, ty } = xform(p);
    const { level, width, invert } = windowOf(p);
    layer.paint(level, width, invert);
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.imageSmoothingEnabled = s * dpr < 2;
    ctx.drawImage(layer.canvas, tx, ty, p.meta.width * s, p.meta.height * s);
    if (!layer.shownAt) {
      // When this picture was first on screen (wall clock, for bench/bench_viewer.py).
      layer.shownAt = performance.timeOrigin + performance.now();
      const key = `${p.view}:${layer.meta.serial}`;
      if (root.dataset.pictureOf !== key) {
        root.dataset.pictureOf = key;
        root.dataset.pictureAt = String(layer.shownAt);
      }
      if (!layer.meta.preview) root.dataset.sharpAt = String(layer.shownAt);
    }
    const d = p.detail;
    if (d && d.meta.serial === p.meta.serial) {
      d.layer.paint(level, width, invert);
      ctx.drawImage(d.layer.canvas, tx + d.x * s, ty + d.y * s, d.w * s, d.h * s);
    }
    const key = overlayKeyOf(p);
    if (key !== p.overlayKey) { p.overlayKey = key; drawOverlay(p); }
    p.el.dataset.zoom = p.cam.zoom.toFixed(3);
    p.el.dataset.scale = String(s);
    p.el.dataset.tx = String(tx);
    p.el.dataset.ty = String(ty);
    p.el.dataset.frames = String(Number(p.el.dataset.frames || 0) + 1);
  }

  // What the overlay was drawn for: the pane's transform and overlayGen.
  function overlayKeyOf(p) {
    const { s, tx, ty } = xform(p);
    return `${s}|${tx}|${ty}|${p.cw}|${p.ch}|${overlayGen}`;
  }

  // New boxes, findings or crop change the overlay only: draw it at once (one microtask
  // for all the changes of a message) rather than with the next frame's canvas repaint.
  let overlayQueued = false;
  function redrawOverlays() {
    overlayGen++;
    if (overlayQueued) return;
    overlayQueued = true;
    queueMicrotask(() => {
      overlayQueued = false;
      for (const p of panes) {
        if (!p.meta || !p.cw) { schedule(p); continue; }
        p.overlayKey = overlayKeyOf(p);
        drawOverlay(p);
      }
    });
  }

  // Boxes, labels, central square and measurement, in pane coordinates.
  function drawOverlay(p) {
    const o = p.overlay;
    o.replaceChildren();
    if (!p.meta) return;
    const { s, tx, ty } = xform(p);
    const X = (x) => tx + x * s;
    const Y = (y) => ty + y * s;
    if (p.view === "frontal" && model.get("show_crop")) {
      const c = model.get("crop") || {};
      if (c.size !== undefined) {
        const [x0, y0, x1, y1] = [X(c.x), Y(c.y), X(c.x + c.size), Y(c.y + c.size)];
        o.append(
          svg("path", {
            class: "cxr-crop-mask", "fill-rule": "evenodd",
            d: `M0 0H${p.cw}V${p.ch}H0Z M${x0} ${y0}H${x1}V${y1}H${x0}Z`,
          }),
          svg("rect", { class: "cxr-crop-halo", x: x0, y: y0, width: x1 - x0, height: y1 - y0 }),
          svg("rect", { class: "cxr-crop-square", x: x0, y: y0, width: x1 - x0, height: y1 - y0 }),
        );
      }
    }
    if (p.view === "frontal") {
      const compare = p.run === "compare";
      const rows = model.get(compare ? "compare_findings" : "findings");
      const shapes = withLiveEdit(p, compare ? model.get("compare_boxes") : shownBoxes())
        .sort((a, b) => area(b) - area(a)); // smaller boxes on top
      const canEdit = !compare && editable(p);
      const halos = svg("g", { class: "cxr-halos" });
      const boxes = svg("g", { class: "cxr-boxes" });
      const labels = svg("g", { class: "cxr-labels" });
      o.append(halos, boxes, labels);
      const font = 12;
      for (const b of shapes) {
        const row = rows[b.finding];
        if (!row) continue;
        const attrs = {
          x: X(b.x0), y: Y(b.y0),
          width: Math.max(1, (b.x1 - b.x0) * s), height: Math.max(1, (b.y1 - b.y0) * s),
        };
        let cls = compare ? "cxr-box-compare" : "cxr-box";
        if (canEdit && focused && focused.finding === b.finding && focused.box === b.box) cls += " cxr-box-focused";
        halos.append(svg("rect", { ...attrs, class: "cxr-box-halo", "data-finding": b.finding }));
        const rect = svg("rect", { ...attrs, class: cls, "data-finding": b.finding, "data-box": b.box, stroke: row.color });
        const tip = svg("title");
        tip.textContent = `${row.number}. ${row.text}`;
        rect.append(tip);
        rect.addEventListener("mouseenter", () => { hovered = b.finding; applyHighlight(); });
        rect.addEventListener("mouseleave", () => { hovered = null; applyHighlight(); });
        boxes.append(rect);
        const label = svg("g", { class: "cxr-box-label", "data-finding": b.finding, "data-box": b.box });
        const lw = font * (String(row.number).length * 0.62 + 0.8);
        const lh = font * 1.3;
        const lx = Math.min(Math.max(0, X(b.x0)), p.cw - lw);
        const ly = Y(b.y0) - lh >= 0 ? Y(b.y0) - lh : Y(b.y0);
        label.append(svg("rect", { x: lx, y: ly, width: lw, height: lh, fill: row.color, rx: 2, class: "cxr-label-bg" }));
        const t = svg("text", {
          x: lx + lw / 2, y: ly + lh * 0.78, "font-size": font, fill: textColor(row.color), "text-anchor": "middle",
        });
        t.textContent = row.number;
        label.append(t);
        label.box = b;
        labels.append(label);
      }
      const sel = model.get("selected");
      if (canEdit && sel >= 0) {
        const handles = svg("g", { class: "cxr-handles" });
        for (const b of shapes) {
          if (b.finding !== sel) continue;
          for (const [name, [hx, hy]] of Object.entries(handlePoints(p, b))) {
            handles.append(svg("rect", {
              class: "cxr-handle", x: hx - HANDLE_PX, y: hy - HANDLE_PX, width: 2 * HANDLE_PX, height: 2 * HANDLE_PX,
              "data-handle": name, "data-finding": b.finding, "data-box": b.box,
            }));
          }
        }
        o.append(handles);
      }
      p.el.dataset.editable = String(canEdit);
      if (!compare) showEditReadout(canEdit ? p : null);
      applyHighlight();
    }
    const m = p.measure;
    if (m) {
      const line = { x1: X(m.x0), y1: Y(m.y0), x2: X(m.x1), y2: Y(m.y1) };
      o.append(svg("line", { ...line, class: "cxr-measure-halo" }), svg("line", { ...line, class: "cxr-measure-line" }));
      const t = svg("text", { x: line.x2 + 6, y: line.y2 - 6, class: "cxr-measure-text" });
      t.textContent = measureText(p, m);
      o.append(t);
    }
  }

  function area(b) { return (b.x1 - b.x0) * (b.y1 - b.y0); }

  // --- box editing -----------------------------------------------------------------------
  // The boxes as drawn: the kernel's, with the edits it has not answered yet applied in
  // order, as the owner applies them (a new box is appended to its finding's boxes; a
  // deleted one moves the later boxes of its finding down by one).
  function applyEdits(list, edits) {
    let out = list.map((b) => ({ ...b }));
    for (const e of edits) {
      if (e.box === -1) {
        if (!e.rect) continue;
        const n = out.filter((b) => b.finding === e.finding).length;
        const [x0, y0, x1, y1] = e.rect;
        out.push({ finding: e.finding, box: n, x0, y0, x1, y1 });
      } else if (!e.rect) {
        out = out.filter((b) => !(b.finding === e.finding && b.box === e.box));
        for (const b of out) if (b.finding === e.finding && b.box > e.box) b.box -= 1;
      } else {
        const b = out.find((q) => q.finding === e.finding && q.box === e.box);
        if (b) [b.x0, b.y0, b.x1, b.y1] = e.rect;
      }
    }
    return out;
  }
  function shownBoxes() {
    return pending.length ? applyEdits(model.get("boxes"), pending) : model.get("boxes");
  }
  // The box being dragged right now, in place of (or after) the others.
  function withLiveEdit(p, list) {
    const live = p.edit;
    if (!live || p.run !== "current") return [...list];
    const [x0, y0, x1, y1] = live.rect;
    if (live.kind === "draw") return [...list, { finding: live.finding, box: -1, x0, y0, x1, y1 }];
    return list.map((b) => (b.finding === live.shape.finding && b.box === live.shape.box
      ? { ...b, x0, y0, x1, y1 } : b));
  }
  function editable(p) {
    return !!p && model.get("editable") && model.get("has_report") && p.view === "frontal" && p.run === "current";
  }
  function focusedShape() {
    if (!focused) return null;
    return shownBoxes().find((b) => b.finding === focused.finding && b.box === focused.box) || null;
  }
  // Where a box may lie, in image pixels: in the center-crop frame the model's 0..1
  // covers only the central square; in the full frame, the whole image.
  function editArea() {
    const m = meta("frontal");
    const c = model.get("crop") || {};
    if (model.get("frame") === "center_crop" && c.size !== undefined) return [c.x, c.y, c.x + c.size, c.y + c.size];
    return [0, 0, m ? m.width : 0, m ? m.height : 0];
  }
  const clamp = (v, lo, hi) => Math.min(Math.max(v, lo), hi);
  function clampRect([x0, y0, x1, y1]) {
    const [ax0, ay0, ax1, ay1] = editArea();
    return [
      clamp(Math.min(x0, x1), ax0, ax1), clamp(Math.min(y0, y1), ay0, ay1),
      clamp(Math.max(x0, x1), ax0, ax1), clamp(Math.max(y0, y1), ay0, ay1),
    ];
  }
  // A move keeps the size: the shift stops where the box meets the area's edge.
  function shiftRect([x0, y0, x1, y1], dx, dy) {
    const [ax0, ay0, ax1, ay1] = editArea();
    dx = clamp(dx, ax0 - x0, Math.max(ax0 - x0, ax1 - x1));
    dy = clamp(dy, ay0 - y0, Math.max(ay0 - y0, ay1 - y1));
    return [x0 + dx, y0 + dy, x1 + dx, y1 + dy];
  }
  function handlePoints(p, b) {
    const { s, tx, ty } = xform(p);
    const [X0, Y0, X1, Y1] = [tx + b.x0 * s, ty + b.y0 * s, tx + b.x1 * s, ty + b.y1 * s];
    const mx = (X0 + X1) / 2;
    const my = (Y0 + Y1) / 2;
    return { nw: [X0, Y0], n: [mx, Y0], ne: [X1, Y0], e: [X1, my], se: [X1, Y1], s: [mx, Y1], sw: [X0, Y1], w: [X0, my] };
  }
  const HANDLE_CURSORS = { nw: "nwse-resize", se: "nwse-resize", ne: "nesw-resize", sw: "nesw-resize", n: "ns-resize", s: "ns-resize", e: "ew-resize", w: "ew-resize" };
  // What a press at pane point (px, py) edits: a handle of one of the selected finding's
  // boxes, the inside of one of them (move), or nothing of it (draw a new box).
  function editHit(p, px, py) {
    const sel = model.get("selected");
    if (!editable(p) || sel < 0) return null;
    const { s } = xform(p);
    const mine = shownBoxes().filter((b) => b.finding === sel).sort((a, b) => area(a) - area(b));
    let best = null;
    for (const b of mine) {
      // On a small box the handles leave room in the middle to grab it for a move.
      const reach = Math.min(HANDLE_HIT, Math.max(3, Math.min(b.x1 - b.x0, b.y1 - b.y0) * s / 4));
      for (const [name, [hx, hy]] of Object.entries(handlePoints(p, b))) {
        const d = Math.hypot(hx - px, hy - py);
        if (d <= reach && (!best || d < best.d)) best = { kind: "resize", handle: name, shape: b, d };
      }
    }
    if (best) return best;
    const [ix, iy] = toImage(p, px, py);
    const inside = mine.find((b) => ix >= b.x0 && ix <= b.x1 && iy >= b.y0 && iy <= b.y1);
    return inside ? { kind: "move", shape: inside } : { kind: "draw", finding: sel };
  }
  // The rectangle of an edit with the pointer at image point (ix, iy); it started at
  // (e.ix, e.iy). A move follows the pointer's motion; a handle goes where the pointer is.
  function editRect(e, ix, iy) {
    if (e.kind === "draw") return clampRect([e.ix, e.iy, ix, iy]);
    if (e.kind === "move") return shiftRect(e.orig, ix - e.ix, iy - e.iy);
    const [x0, y0, x1, y1] = e.orig;
    const h = e.handle;
    return clampRect([
      h.includes("w") ? ix : x0, h.startsWith("n") ? iy : y0,
      h.includes("e") ? ix : x1, h.startsWith("s") ? iy : y1,
    ]);
  }
  function finishEdit(p, e, rect) {
    const { s } = xform(p);
    const w = rect[2] - rect[0];
    const h = rect[3] - rect[1];
    const tooSmall = w * s < MIN_BOX_SCREEN || h * s < MIN_BOX_SCREEN || w < MIN_BOX_PX || h < MIN_BOX_PX;
    const unchanged = e.orig && rect.every((v, i) => v === e.orig[i]);
    if (unchanged || (e.kind !== "move" && tooSmall)) { redrawEdits(p); return; }
    if (e.kind === "draw") commitEdit(p, e.finding, -1, rect);
    else commitEdit(p, e.shape.finding, e.shape.box, rect);
  }
  function nextSeq() {
    lastSeq = Math.max(lastSeq, model.get("edit_ack")) + 1;
    return lastSeq;
  }
  // One message per finished edit; the box is drawn at once, before the kernel answers.
  function commitEdit(p, finding, box, rect) {
    flushNudge();
    const seq = nextSeq();
    pending.push({ seq, finding, box, rect });
    model.send({ kind: "box_edit", finding, box, rect, seq });
    if (!rect) focused = null;
    else if (box === -1) focused = { finding, box: shownBoxes().filter((b) => b.finding === finding).length - 1 };
    else focused = { finding, box };
    redrawEdits(p);
  }
  // Drawn now, in the same frame as the pointer-up or key press, not on the next one.
  function redrawEdits(p) {
    overlayGen++;
    if (p && p.meta) drawOverlay(p);
    for (const q of panes) schedule(q);
  }
  // Arrow keys move the focused box; the move is sent once the key is let go.
  function nudge(dx, dy) {
    const b = focusedShape();
    if (!b) return;
    const rect = shiftRect([b.x0, b.y0, b.x1, b.y1], dx, dy);
    const last = pending[pending.length - 1];
    if (last && last.seq === null && last.finding === b.finding && last.box === b.box) last.rect = rect;
    else { flushNudge(); pending.push({ seq: null, finding: b.finding, box: b.box, rect }); }
    clearTimeout(nudgeTimer);
    nudgeTimer = setTimeout(flushNudge, 800);
    redrawEdits(frontalPane());
  }
  function flushNudge() {
    clearTimeout(nudgeTimer);
    for (const e of pending) {
      if (e.seq !== null) continue;
      e.seq = nextSeq();
      model.send({ kind: "box_edit", finding: e.finding, box: e.box, rect: e.rect, seq: e.seq });
    }
  }
  // The box being edited or focused, in image pixels: what the arrow keys act on.
  function showEditReadout(p) {
    const live = p && p.edit;
    const b = live ? null : p && focusedShape();
    if (!live && !b) { editOut.textContent = ""; return; }
    const [x0, y0, x1, y1] = live ? live.rect : [b.x0, b.y0, b.x1, b.y1];
    const finding = live ? (live.shape ? live.shape.finding : live.finding) : b.finding;
    const which = live && live.kind === "draw" ? "new box" : `box ${(live ? live.shape.box : b.box) + 1}`;
    editOut.textContent = `Finding ${finding + 1}, ${which}: x ${Math.round(x0)}–${Math.round(x1)}, ` +
      `y ${Math.round(y0)}–${Math.round(y1)} (${Math.round(x1 - x0)} × ${Math.round(y1 - y0)} px)`;
  }
  // Keyboard: focus the next box of the selected finding.
  function focusNextBox() {
    const sel = model.get("selected");
    const mine = shownBoxes().filter((b) => b.finding === sel).sort((a, b) => a.box - b.box);
    if (!mine.length) return;
    const at = focused && focused.finding === sel ? mine.findIndex((b) => b.box === focused.box) : -1;
    focused = { finding: sel, box: mine[(at + 1) % mine.length].box };
    redrawEdits(frontalPane());
  }
  function deleteFocused() {
    const b = focusedShape();
    if (b) commitEdit(frontalPane(), b.finding, b.box, null);
  }

  // --- detail on demand ------------------------------------------------------------
  function settle(p) {
    clearTimeout(p.settleTimer);
    p.settleTimer = setTimeout(() => requestDetail(p), SETTLE_MS);
  }

  function requestDetail(p) {
    if (p.dragging || !p.meta) return;
    const dpr = window.devicePixelRatio || 1;
    const { s } = xform(p);
    const need = Math.min(1, s * dpr); // image pixels worth sending per original pixel
    if (need <= p.meta.scale * 1.05) return; // the overview is sharp enough
    const [ix0, iy0] = toImage(p, 0, 0);
    const [ix1, iy1] = toImage(p, p.cw, p.ch);
    const x0 = Math.max(0, Math.floor(ix0));
    const y0 = Math.max(0, Math.floor(iy0));
    const x1 = Math.min(p.meta.width, Math.ceil(ix1));
    const y1 = Math.min(p.meta.height, Math.ceil(iy1));
    if (x1 <= x0 || y1 <= y0) return;
    const d = p.detail;
    if (d && d.meta.serial === p.meta.serial && d.x <= x0 && d.y <= y0 && d.x + d.w >= x1 && d.y + d.h >= y1 && d.scale >= need * 0.95) return;
    const side = Math.ceil(Math.max(x1 - x0, y1 - y0) * need);
    const id = ++requestId;
    p.pending = { id, t0: performance.now() };
    model.send({ kind: "detail", id, view: p.view, x: x0, y: y0, w: x1 - x0, h: y1 - y0, side });
  }

  model.on("msg:custom", async (msg, buffers) => {
    if (!msg || msg.kind !== "detail" || !buffers || !buffers.length) return;
    const targets = panes.filter((p) => p.view === msg.view);
    if (!targets.length) return;
    const m = meta(msg.view);
    const { codes, max } = await decodeCodes(buffers[0], msg.ow, msg.oh, msg.codec);
    const layer = new Layer(codes, max, msg.ow, msg.oh, msg.offset, msg.step);
    const detail = { ...msg, layer, meta: m };
    for (const p of targets) {
      if (p.pending && p.pending.id > msg.id) continue; // a newer request is on its way
      p.detail = detail;
      if (p.pending && p.pending.id === msg.id) {
        root.dataset.detailMs = String(Math.round(performance.now() - p.pending.t0));
        p.pending = null;
      }
      schedule(p);
    }
    root.dataset.details = String(Number(root.dataset.details || 0) + 1);
  });

  // --- probe and measure -----------------------------------------------------------------
  // The value at original pixel (col,row): exact from a full-resolution detail, else ≈ from the overview.
  function valueAt(p, col, row) {
    const d = p.detail;
    if (d && d.meta.serial === p.meta.serial && d.scale >= 1 && col >= d.x && row >= d.y && col < d.x + d.w && row < d.y + d.h) {
      return { value: d.layer.value((row - d.y) * d.ow + (col - d.x)), exact: true };
    }
    const layer = layers[p.view];
    if (!layer) return null;
    const sc = layer.meta.scale;
    const ox = Math.min(layer.w - 1, Math.floor(col * sc));
    const oy = Math.min(layer.h - 1, Math.floor(row * sc));
    return { value: layer.value(oy * layer.w + ox), exact: sc >= 1 && layer.step === p.meta.step };
  }

  function showProbe(p, px, py) {
    const [ix, iy] = toImage(p, px, py);
    const col = Math.floor(ix);
    const row = Math.floor(iy);
    if (!p.meta || col < 0 || row < 0 || col >= p.meta.width || row >= p.meta.height) {
      probe.textContent = "";
      delete probe.dataset.x;
      return;
    }
    const v = valueAt(p, col, row);
    if (!v) return;
    probe.dataset.x = col;
    probe.dataset.y = row;
    probe.dataset.value = v.value;
    probe.dataset.exact = v.exact;
    probe.dataset.view = p.view;
    probe.textContent = `${VIEW_LABELS[p.view]} x ${col}, y ${row}: ` +
      (v.exact ? fmt(v.value) : `≈ ${fmt(v.value)} (overview; zoom in for exact values)`);
  }

  function measureResult(p, m) {
    const px = Math.hypot(m.x1 - m.x0, m.y1 - m.y0);
    const sp = p.meta && p.meta.spacing;
    const mm = sp ? Math.hypot((m.x1 - m.x0) * sp[1], (m.y1 - m.y0) * sp[0]) : null;
    return { px, mm };
  }
  function measureText(p, m) {
    const { px, mm } = measureResult(p, m);
    return mm !== null ? `${mm.toFixed(1)} mm` : `${px.toFixed(1)} px (pixel spacing unknown)`;
  }
  function finishMeasure(p) {
    const m = p.measure;
    if (!m) return;
    const { px, mm } = measureResult(p, m);
    measureOut.textContent = `Distance: ${measureText(p, m)}`;
    measureOut.dataset.px = px;
    measureOut.dataset.mm = mm === null ? "" : mm;
    model.set("measurement", {
      view: p.view, x0: m.x0, y0: m.y0, x1: m.x1, y1: m.y1, pixels: px, mm,
      unit: mm === null ? "px" : "mm",
    });
    model.save_changes();
  }

  // --- pointer -------------------------------------------------------------------------------
  function attachPointer(p) {
    let drag = null;
    const local = (e) => {
      const r = p.el.getBoundingClientRect();
      return [e.clientX - r.left, e.clientY - r.top];
    };
    p.el.addEventListener("pointerdown", (e) => {
      if (!p.meta) return;
      root.focus({ preventScroll: true });
      const [x, y] = local(e);
      const mode = e.button === 1 || e.shiftKey || e.ctrlKey || spaceHeld ? "pan" : e.button === 0 ? tool : null;
      if (!mode) return;
      // Editing takes the plain drag of the window/level tool; Pan and Measure stay as chosen.
      const hit = mode === "wl" ? editHit(p, x, y) : null;
      e.preventDefault();
      try {
        p.el.setPointerCapture(e.pointerId);
      } catch (err) {
        // A synthetic pointer (scripts, tests) cannot be captured; the drag works without.
      }
      drag = { mode: hit ? "edit" : mode, x, y, x0: x, y0: y, moved: false, target: e.target, win: { ...p.win }, cam: { ...p.cam, ...camCenter(p) } };
      p.dragging = true;
      if (hit) {
        const [ix, iy] = toImage(p, x, y);
        const b = hit.shape;
        drag.edit = { ...hit, ix, iy, orig: b ? [b.x0, b.y0, b.x1, b.y1] : null };
        if (b) { focused = { finding: b.finding, box: b.box }; redrawEdits(p); }
      }
      if (mode === "measure") {
        const [ix, iy] = toImage(p, x, y);
        p.measure = { x0: ix, y0: iy, x1: ix, y1: iy };
      }
    });
    p.el.addEventListener("pointermove", (e) => {
      const [x, y] = local(e);
      if (!drag) {
        showProbe(p, x, y);
        if (editable(p)) {
          const h = spaceHeld ? null : editHit(p, x, y);
          p.el.style.cursor = spaceHeld ? "grab" : !h ? "" : h.kind === "resize" ? HANDLE_CURSORS[h.handle] : h.kind === "move" ? "move" : "crosshair";
        } else if (p.el.style.cursor) p.el.style.cursor = "";
        return;
      }
      const dx = x - drag.x0;
      const dy = y - drag.y0;
      if (Math.hypot(dx, dy) > 3) drag.moved = true;
      if (!drag.moved) return;
      if (drag.mode === "wl") {
        const [lo, hi] = p.meta.range;
        const k = Math.max(hi - lo, 1) / Math.max(p.cw, 200);
        setWindow(p, drag.win.level + dy * k, Math.max(1, drag.win.width + dx * k), drag.win.invert);
      } else if (drag.mode === "pan") {
        const s = fitScale(p) * p.cam.zoom;
        setCam(p, { zoom: p.cam.zoom, x: drag.cam.x - dx / s, y: drag.cam.y - dy / s });
      } else if (drag.mode === "edit") {
        const [ix, iy] = toImage(p, x, y);
        p.edit = { ...drag.edit, rect: editRect(drag.edit, ix, iy) };
        overlayGen++;
        schedule(p);
      } else if (drag.mode === "measure") {
        const [ix, iy] = toImage(p, x, y);
        p.measure = { ...p.measure, x1: ix, y1: iy };
        overlayGen++;
        schedule(p);
      }
      showProbe(p, x, y);
    });
    const end = (e) => {
      if (!drag) return;
      const d = drag;
      drag = null;
      p.dragging = false;
      if (d.mode === "edit") {
        const live = p.edit;
        p.edit = null;
        if (e.type === "pointercancel") redrawEdits(p); // the browser took the pointer: no edit
        else if (d.moved && live) finishEdit(p, d.edit, live.rect);
        else { clickAt(p, d.x0, d.y0, d.target); redrawEdits(p); }
        return;
      }
      if (!d.moved) {
        if (d.mode === "measure") { p.measure = null; overlayGen++; }
        clickAt(p, d.x0, d.y0, d.target);
        schedule(p);
        return;
      }
      if (d.mode === "measure") finishMeasure(p);
      if (d.mode === "wl" && linked(p, "window").includes(frontalPane())) model.set("preset", "custom");
      if (d.mode === "pan") settle(p);
      saveDisplay();
    };
    p.el.addEventListener("pointerup", end);
    p.el.addEventListener("pointercancel", end);
    p.el.addEventListener("pointerleave", () => { if (!drag) probe.textContent = ""; });
    let wheelTimer = null;
    p.el.addEventListener("wheel", (e) => {
      if (!p.meta) return;
      e.preventDefault();
      const [x, y] = local(e);
      const factor = Math.exp(-e.deltaY * 0.0015);
      zoomAround(p, x, y, p.cam.zoom * factor);
      clearTimeout(wheelTimer);
      wheelTimer = setTimeout(saveDisplay, 250);
    }, { passive: false });
  }

  function camCenter(p) {
    const c = p.cam;
    return { x: c.x ?? p.meta.width / 2, y: c.y ?? p.meta.height / 2 };
  }

  function zoomAround(p, px, py, zoom) {
    zoom = Math.min(Math.max(zoom, 0.25), maxZoom(p));
    const [ix, iy] = toImage(p, px, py);
    const s = fitScale(p) * zoom;
    // Keep the image point under the cursor where it is.
    setCam(p, { zoom, x: ix - (px - p.cw / 2) / s, y: iy - (py - p.ch / 2) / s });
  }

  function setZoom(zoom) {
    const p = primary();
    if (!p) return;
    if (zoom === 1) setCam(p, { zoom: 1, x: null, y: null });
    else zoomAround(p, p.cw / 2, p.ch / 2, zoom);
    saveDisplay();
  }
  function oneToOne() {
    const p = primary();
    if (!p || !p.meta) return;
    const c = camCenter(p);
    setCam(p, { zoom: 1 / fitScale(p), x: c.x, y: c.y });
    saveDisplay();
  }
  function resetAll() {
    const p = primary();
    if (!p || !p.meta) return;
    overlayGen++;
    for (const q of panes) {
      q.measure = null;
      if (q.meta) q.win = { level: q.meta.presets.file[0], width: q.meta.presets.file[1], invert: q.meta.invert };
      q.cam = { zoom: 1, x: null, y: null };
      schedule(q);
    }
    measureOut.textContent = "";
    model.set("preset", "file");
    model.set("measurement", {});
    saveDisplay();
    drawWindowReadout();
  }

  // Click on the image: label under the pointer, else the smallest box containing the point
  // (within HIT_SLOP); clicking the same place again cycles through the overlapping boxes.
  function clickAt(p, px, py, target) {
    if (p.view !== "frontal") return;
    const labelNode = target && target.closest && target.closest(".cxr-box-label");
    if (labelNode && labelNode.box) {
      lastClick = null;
      if (p.run !== "compare") setSelected(labelNode.box.finding);
      return;
    }
    const { s } = xform(p);
    const [ix, iy] = toImage(p, px, py);
    const all = p.run === "compare" ? model.get("compare_boxes") : shownBoxes();
    const within = (slop) => all
      .filter((b) => ix >= b.x0 - slop && ix <= b.x1 + slop && iy >= b.y0 - slop && iy <= b.y1 + slop)
      .sort((a, b) => area(a) - area(b));
    // Boxes containing the point (the smallest first, as drawn on top); else one just outside.
    let shapes = within(0);
    if (!shapes.length) shapes = within(HIT_SLOP / s);
    if (!shapes.length) {
      lastClick = null;
      focused = null;
      if (model.get("selected") >= 0) choose(-1);
      return;
    }
    let pick = 0;
    if (lastClick && lastClick.pane === p && Math.hypot(lastClick.x - px, lastClick.y - py) < 4) {
      pick = (lastClick.pick + 1) % shapes.length;
    }
    lastClick = { pane: p, x: px, y: py, pick };
    if (p.run === "compare") return; // the compared run's findings are not in the table
    setSelected(shapes[pick].finding);
    if (editable(p)) focused = { finding: shapes[pick].finding, box: shapes[pick].box };
  }

  function choose(index) {
    setSelected(model.get("selected") === index ? -1 : index);
  }
  function setSelected(index) {
    model.set("selected", index);
    model.save_changes();
  }

  function step(delta) {
    const rows = model.get("findings");
    if (!rows.length) return;
    const cur = model.get("selected");
    const next = cur < 0 ? (delta > 0 ? 0 : rows.length - 1) : (cur + delta + rows.length) % rows.length;
    setSelected(next);
    if (model.get("editable")) {
      const b = shownBoxes().find((q) => q.finding === next);
      focused = b ? { finding: next, box: b.box } : null;
    }
    zoomTo(next);
  }
  function zoomTo(index) {
    const p = panes.find((q) => q.view === "frontal");
    const shapes = shownBoxes().filter((b) => b.finding === index);
    if (!p || !shapes.length) return;
    const x0 = Math.min(...shapes.map((b) => b.x0));
    const y0 = Math.min(...shapes.map((b) => b.y0));
    const x1 = Math.max(...shapes.map((b) => b.x1));
    const y1 = Math.max(...shapes.map((b) => b.y1));
    const px = (x1 - x0) * 0.35;
    const py = (y1 - y0) * 0.35;
    setCam(p, rectCam(p, [x0 - px, y0 - py, x1 + px, y1 + py]));
    saveDisplay();
  }

  // --- keyboard: only while the viewer has focus; its keys never reach JupyterLab ---
  root.addEventListener("keydown", (e) => {
    const inField = ["INPUT", "SELECT", "TEXTAREA"].includes(e.target.tagName);
    e.stopPropagation();
    if (inField || e.altKey || e.metaKey || e.ctrlKey) return;
    const presets = model.get("presets_order");
    const k = e.key;
    // Space held pans (not on a toolbar button, which Space presses).
    if (k === " " && e.target.tagName !== "BUTTON") { spaceHeld = true; e.preventDefault(); return; }
    if (k === "e" && model.get("editable")) { focusNextBox(); e.preventDefault(); return; }
    if (model.get("editable") && focusedShape()) {
      const by = e.shiftKey ? 10 : 1;
      const moves = { ArrowLeft: [-by, 0], ArrowRight: [by, 0], ArrowUp: [0, -by], ArrowDown: [0, by] };
      let edited = true;
      if (moves[k]) nudge(...moves[k]);
      else if (k === "Delete" || k === "Backspace") deleteFocused();
      else if (k === "Escape" && !helpOpen) { focused = null; redrawEdits(frontalPane()); }
      else edited = false;
      if (edited) { e.preventDefault(); return; }
    }
    let done = true;
    if (k === "r") resetAll();
    else if (k === "i") toggleInvert();
    else if (k >= "1" && k <= String(presets.length)) applyPreset(presets[Number(k) - 1]);
    else if (k === "n" || k === "ArrowDown") step(1);
    else if (k === "p" || k === "ArrowUp") step(-1);
    else if (k === "f") setZoom(1);
    else if (k === "0") oneToOne();
    else if (k === "+" || k === "=") { const p = primary(); if (p) { zoomAround(p, p.cw / 2, p.ch / 2, p.cam.zoom * 1.5); saveDisplay(); } }
    else if (k === "-" || k === "_") { const p = primary(); if (p) { zoomAround(p, p.cw / 2, p.ch / 2, p.cam.zoom / 1.5); saveDisplay(); } }
    else if (k === "w") setTool("wl");
    else if (k === "a") setTool("pan");
    else if (k === "m") setTool("measure");
    else if (k === "b") { model.set("show_boxes", !model.get("show_boxes")); model.save_changes(); }
    else if (k === "c") { model.set("show_crop", !model.get("show_crop")); model.save_changes(); }
    else if (k === "?" || k === "h") toggleHelp();
    else if (k === "Escape" && helpOpen) toggleHelp();
    else done = false;
    if (done) e.preventDefault();
  });

  root.addEventListener("keyup", (e) => {
    e.stopPropagation();
    if (e.key === " ") spaceHeld = false;
    if (e.key.startsWith("Arrow")) flushNudge();
  });
  root.addEventListener("blur", () => { spaceHeld = false; flushNudge(); });

  function toggleHelp() {
    helpOpen = !helpOpen;
    help.classList.toggle("cxr-open", helpOpen);
    helpButton.classList.toggle("cxr-active", helpOpen);
  }

  // --- the rest of the UI ---------------------------------------------------------------
  function drawPresets() {
    presetBox.replaceChildren();
    const p = primary();
    const labels = model.get("preset_labels");
    model.get("presets_order").forEach((name, i) => {
      const b = button("cxr-preset", labels[name] || name, `Window preset: ${labels[name] || name} (${i + 1})`, () => applyPreset(name));
      b.dataset.preset = name;
      b.disabled = !p || !p.meta;
      b.classList.toggle("cxr-active", model.get("preset") === name);
      presetBox.append(b);
    });
    drawWindowReadout();
  }

  function drawWindowReadout() {
    const p = primary();
    if (!p || !p.meta) { windowReadout.textContent = ""; return; }
    windowReadout.textContent = `L ${fmt(p.win.level)}  W ${fmt(p.win.width)}${p.win.invert ? "  inverted" : ""}`;
    windowReadout.dataset.level = p.win.level;
    windowReadout.dataset.width = p.win.width;
    invertButton.classList.toggle("cxr-active", p.win.invert);
    for (const b of presetBox.children) b.classList.toggle("cxr-active", model.get("preset") === b.dataset.preset);
  }

  // One line per image and note: when two runs are compared both panes show the same
  // frontal image, and its notes were listed twice.
  function drawNotes() {
    notesBox.replaceChildren();
    const shown = panes.filter((p) => p.meta);
    const named = new Set(shown.map((p) => p.view)).size > 1;
    const lines = new Set();
    for (const p of shown) {
      for (const note of p.meta.notes) lines.add((named ? `${VIEW_LABELS[p.view]}: ` : "") + note);
    }
    for (const line of lines) notesBox.append(html("div", "cxr-note-line", line));
  }

  function activeFinding() {
    if (hovered !== null) return hovered;
    const s = model.get("selected");
    return s >= 0 ? s : null;
  }

  function applyHighlight() {
    const active = activeFinding();
    const selected = model.get("selected");
    for (const node of root.querySelectorAll("[data-finding]")) {
      const i = Number(node.dataset.finding);
      node.classList.toggle("cxr-highlight", active !== null && i === active);
      node.classList.toggle("cxr-dim", active !== null && i !== active);
      if (node.classList.contains("cxr-row")) {
        node.classList.toggle("cxr-selected", i === selected);
        node.setAttribute("aria-selected", String(i === selected));
      }
    }
    grid.classList.toggle("cxr-only-active", !model.get("show_boxes"));
  }

  function drawTable() {
    tbody.replaceChildren();
    const rows = model.get("findings");
    const hasReport = model.get("has_report");
    title.textContent = hasReport ? `Findings (${rows.length})` : "Findings";
    copy.disabled = !hasReport;
    hint.textContent = hasReport
      ? "Hover or click a finding to highlight its boxes; click a box to find its finding " +
        "(the smallest box under the cursor; click again to cycle through overlapping boxes). " +
        "Keys n/p step through findings; ? lists all keys." +
        (model.get("editable") ? " " + EDIT_HINT : "")
      : "Generate a report to see findings here.";
    hint.classList.toggle("cxr-editing", !!model.get("editable"));
    editHelp.style.display = model.get("editable") ? "" : "none";
    for (const row of rows) {
      const tr = html("tr", "cxr-row" + (row.grounded ? "" : " cxr-ungrounded"));
      tr.dataset.finding = row.index;
      tr.tabIndex = 0;
      const num = html("td", "cxr-num", String(row.number));
      const sw = html("td", "cxr-swatch-cell");
      const swatch = html("span", "cxr-swatch");
      swatch.style.background = row.color;
      sw.append(swatch);
      const text = html("td", "cxr-text", row.text);
      const where = html("td", "cxr-where",
        row.grounded ? `${row.n_boxes} box${row.n_boxes === 1 ? "" : "es"}` : "not grounded");
      tr.append(num, sw, text, where);
      tr.addEventListener("mouseenter", () => { hovered = row.index; applyHighlight(); });
      tr.addEventListener("mouseleave", () => { hovered = null; applyHighlight(); });
      tr.addEventListener("click", () => choose(row.index));
      tr.addEventListener("keydown", (e) => {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); e.stopPropagation(); choose(row.index); }
      });
      tbody.append(tr);
    }
    applyHighlight();
  }

  function drawWarnings() {
    warnings.replaceChildren();
    for (const text of model.get("warnings")) warnings.append(html("div", "cxr-warning", "warning: " + text));
  }

  function drawTabs() {
    tabs.replaceChildren();
    const views = model.get("views");
    const single = model.get("arrangement") === "single";
    for (const view of views.length ? views : ["frontal"]) {
      const b = html("button", "cxr-view-tab", VIEW_LABELS[view] || view);
      b.type = "button";
      b.dataset.view = view;
      b.classList.toggle("cxr-active", single && view === model.get("view"));
      b.disabled = views.length <= 1;
      b.addEventListener("click", () => {
        model.set("view", view);
        model.set("arrangement", "single");
        model.save_changes();
      });
      tabs.append(b);
    }
    layoutSelect.refill();
    compareSelect.refill();
    compareSelect.style.display = model.get("runs").length > 1 ? "" : "none";
  }

  function drawCaption() {
    const parts = [];
    const views = panes.map((p) => p.view);
    if (views.includes("frontal")) parts.push(model.get("frame_caption"));
    if (views.some((v) => v !== "frontal")) parts.push("boxes refer to the frontal image");
    if (model.get("caption")) parts.push(model.get("caption"));
    caption.textContent = parts.join(" · ");
    const demo = model.get("demo") && model.get("has_report");
    demoBanner.textContent = demo ? model.get("demo_notice") : "";
    demoBanner.style.display = demo ? "" : "none";
  }

  copy.addEventListener("click", async () => {
    const text = model.get("report_text");
    try {
      await navigator.clipboard.writeText(text);
    } catch (err) {
      // Clipboard API refused (e.g. not a secure context): fall back to a selection copy.
      const area = document.createElement("textarea");
      area.value = text;
      document.body.append(area);
      area.select();
      document.execCommand("copy");
      area.remove();
    }
    copy.textContent = "Copied";
    setTimeout(() => (copy.textContent = "Copy report text"), 1500);
  });

  // --- model -> view -------------------------------------------------------------------
  const redrawPanes = () => { overlayGen++; for (const p of panes) schedule(p); };
  const relayout = () => { rebuildPanes(); drawTabs(); drawCaption(); };
  model.on("change:images", () => { pending = []; focused = null; relayout(); });
  model.on("change:views", relayout);
  model.on("change:view", relayout);
  model.on("change:arrangement", relayout);
  model.on("change:compare", relayout);
  model.on("change:runs", drawTabs);
  for (const v of Object.keys(VIEW_LABELS)) {
    model.on(`change:${v}_pixels`, () => { ensureLayer(v); redrawPanes(); });
  }
  model.on("change:window", () => {
    const p = frontalPane();
    if (!p) return;
    const [level, width] = model.get("window");
    if (level !== p.win.level || width !== p.win.width) setWindow(p, level, width, p.win.invert);
  });
  model.on("change:invert", () => {
    const p = frontalPane();
    if (p && p.win.invert !== model.get("invert")) setWindow(p, p.win.level, p.win.width, model.get("invert"));
  });
  model.on("change:preset", drawWindowReadout);
  model.on("change:camera", () => {
    const p = frontalPane();
    if (!p || !p.meta) return;
    const c = camFromModel(p);
    if (c.zoom !== p.cam.zoom || c.x !== p.cam.x || c.y !== p.cam.y) {
      setCam(p, c);
      if (model.get("camera").rect && p.cw) saveDisplay();
    }
  });
  model.on("change:link_view", redrawPanes);
  model.on("change:link_window", () => {
    const p = primary();
    if (p && model.get("link_window")) setWindow(p, p.win.level, p.win.width, p.win.invert);
  });
  model.on("change:boxes", redrawOverlays);
  model.on("change:compare_boxes", redrawOverlays);
  model.on("change:findings", () => { drawTable(); redrawOverlays(); });
  model.on("change:compare_findings", redrawOverlays);
  model.on("change:has_report", () => { drawTable(); drawCaption(); });
  model.on("change:selected", () => {
    if (focused && focused.finding !== model.get("selected")) focused = null;
    if (model.get("editable")) redrawPanes();
    else applyHighlight();
  });
  model.on("change:editable", () => { focused = null; drawTable(); redrawPanes(); });
  // The kernel handled the edits up to edit_ack (and sent the saved boxes in the same
  // update): drop them here, so the saved boxes are drawn, or the old ones if nothing was saved.
  model.on("change:edit_ack", () => {
    const ack = model.get("edit_ack");
    pending = pending.filter((e) => e.seq === null || e.seq > ack);
    if (focused && !focusedShape()) focused = null;
    redrawPanes();
  });
  model.on("change:show_boxes", applyHighlight);
  model.on("change:show_crop", redrawOverlays);
  model.on("change:crop", redrawOverlays);
  model.on("change:frame_caption", drawCaption);
  model.on("change:caption", drawCaption);
  model.on("change:demo", drawCaption);
  model.on("change:message", () => { empty.textContent = model.get("message"); });
  model.on("change:warnings", drawWarnings);

  const observer = new ResizeObserver(() => resize());
  observer.observe(grid);
  setTool("wl");
  relayout();
  drawTable();
  drawWarnings();
  return () => observer.disconnect();
}

export default { render };
