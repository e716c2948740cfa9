// cxr-widgets results viewer: the image with SVG boxes and the linked findings table.
// Geometry comes from Python (Box.to_pixels); this file only draws and links.
const SVG = "http://www.w3.org/2000/svg";
const VIEW_LABELS = { frontal: "Frontal", lateral: "Lateral", prior: "Prior" };

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

function render({ model, el }) {
  let hovered = null; // finding index under the pointer (local, not synced)
  let imageUrl = null;

  const root = html("div", "cxr-viewer");
  const main = html("div", "cxr-viewer-main");
  const side = html("div", "cxr-findings");
  root.append(main, side);
  el.append(root);

  // --- toolbar: views, toggles, frame ---
  const toolbar = html("div", "cxr-toolbar");
  const tabs = html("div", "cxr-view-tabs");
  const toggles = html("div", "cxr-toggles");
  function checkbox(trait, label, cls) {
    const wrap = html("label", "cxr-toggle " + cls);
    const box = document.createElement("input");
    box.type = "checkbox";
    box.checked = model.get(trait);
    box.addEventListener("change", () => {
      model.set(trait, box.checked);
      model.save_changes();
    });
    model.on("change:" + trait, () => (box.checked = model.get(trait)));
    wrap.append(box, document.createTextNode(" " + label));
    return wrap;
  }
  const frameSelect = document.createElement("select");
  frameSelect.className = "cxr-frame-select";
  frameSelect.title = "How box coordinates map to the image (FACTS.md: center crop is what the official notebooks do)";
  for (const [value, label] of [["center_crop", "boxes in center crop"], ["full", "boxes on full image"]]) {
    const opt = document.createElement("option");
    opt.value = value;
    opt.textContent = label;
    frameSelect.append(opt);
  }
  frameSelect.value = model.get("frame");
  frameSelect.addEventListener("change", () => {
    model.set("frame", frameSelect.value);
    model.save_changes();
  });
  model.on("change:frame", () => (frameSelect.value = model.get("frame")));
  toggles.append(
    checkbox("show_boxes", "all boxes", "cxr-toggle-boxes"),
    checkbox("show_crop", "central square", "cxr-toggle-crop"),
    frameSelect,
  );
  toolbar.append(tabs, toggles);

  // --- stage: image + svg ---
  const stage = html("div", "cxr-stage");
  const canvas = svg("svg", { class: "cxr-svg", preserveAspectRatio: "xMidYMid meet" });
  const picture = svg("image", { class: "cxr-image", x: 0, y: 0 });
  const cropLayer = svg("g", { class: "cxr-crop" });
  const boxLayer = svg("g", { class: "cxr-boxes" });
  const labelLayer = svg("g", { class: "cxr-labels" });
  canvas.append(picture, cropLayer, boxLayer, labelLayer);
  const empty = html("div", "cxr-empty");
  const demoOverlay = html("div", "cxr-demo-overlay");
  stage.append(canvas, empty, demoOverlay);
  const caption = html("div", "cxr-caption");
  main.append(toolbar, stage, caption);

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

  function activeFinding() {
    if (hovered !== null) return hovered;
    const s = model.get("selected");
    return s >= 0 ? s : null;
  }

  function select(index) {
    model.set("selected", model.get("selected") === index ? -1 : index);
    model.save_changes();
  }

  function applyHighlight() {
    const active = activeFinding();
    const selected = model.get("selected");
    for (const node of root.querySelectorAll("[data-finding]")) {
      const i = Number(node.dataset.finding);
      node.classList.toggle("cxr-highlight", active !== null && i === active);
      node.classList.toggle("cxr-dim", active !== null && i !== active);
      if (node.classList.contains("cxr-row")) node.classList.toggle("cxr-selected", i === selected);
    }
    canvas.classList.toggle("cxr-only-active", !model.get("show_boxes"));
  }

  function drawImage() {
    const w = model.get("width");
    const h = model.get("height");
    const data = model.get("image");
    if (imageUrl) URL.revokeObjectURL(imageUrl);
    imageUrl = null;
    if (!w || !data || !data.byteLength) {
      canvas.style.display = "none";
      empty.style.display = "";
      empty.textContent = model.get("message");
      return;
    }
    canvas.style.display = "";
    empty.style.display = "none";
    imageUrl = URL.createObjectURL(new Blob([data], { type: "image/jpeg" }));
    canvas.setAttribute("viewBox", `0 0 ${w} ${h}`);
    canvas.style.aspectRatio = `${w} / ${h}`;
    picture.setAttribute("width", w);
    picture.setAttribute("height", h);
    picture.setAttribute("href", imageUrl);
    drawCrop();
  }

  function drawCrop() {
    cropLayer.replaceChildren();
    const w = model.get("width");
    const h = model.get("height");
    const crop = model.get("crop") || {};
    if (!model.get("show_crop") || !w || crop.size === undefined || model.get("view") !== "frontal") return;
    const { x, y, size } = crop;
    cropLayer.append(
      svg("path", {
        class: "cxr-crop-mask",
        "fill-rule": "evenodd",
        d: `M0 0H${w}V${h}H0Z M${x} ${y}H${x + size}V${y + size}H${x}Z`,
      }),
      svg("rect", { class: "cxr-crop-square", x, y, width: size, height: size }),
    );
  }

  function drawBoxes() {
    boxLayer.replaceChildren();
    labelLayer.replaceChildren();
    const rows = model.get("findings");
    const w = model.get("width");
    const h = model.get("height");
    const font = Math.max(10, Math.round(Math.max(w, h) / 38));
    for (const b of model.get("boxes")) {
      const row = rows[b.finding];
      if (!row) continue;
      const rect = svg("rect", {
        class: "cxr-box",
        "data-finding": b.finding,
        "data-box": b.box,
        x: b.x0,
        y: b.y0,
        width: Math.max(1, b.x1 - b.x0),
        height: Math.max(1, b.y1 - b.y0),
        stroke: row.color,
      });
      const tip = svg("title");
      tip.textContent = `${row.number}. ${row.text}`;
      rect.append(tip);
      rect.addEventListener("mouseenter", () => { hovered = b.finding; applyHighlight(); });
      rect.addEventListener("mouseleave", () => { hovered = null; applyHighlight(); });
      rect.addEventListener("click", (e) => { e.stopPropagation(); select(b.finding); });
      boxLayer.append(rect);

      const label = svg("g", { class: "cxr-box-label", "data-finding": b.finding });
      const lw = font * (String(row.number).length * 0.62 + 0.6);
      const lh = font * 1.25;
      const lx = Math.min(Math.max(0, b.x0), w - lw);
      const ly = b.y0 - lh >= 0 ? b.y0 - lh : b.y0;
      label.append(
        svg("rect", { x: lx, y: ly, width: lw, height: lh, fill: row.color, rx: font * 0.15 }),
      );
      const t = svg("text", {
        x: lx + lw / 2, y: ly + lh * 0.78, "font-size": font, fill: textColor(row.color),
        "text-anchor": "middle",
      });
      t.textContent = row.number;
      label.append(t);
      label.addEventListener("click", (e) => { e.stopPropagation(); select(b.finding); });
      labelLayer.append(label);
    }
    applyHighlight();
  }

  function drawTable() {
    tbody.replaceChildren();
    const rows = model.get("findings");
    const hasReport = model.get("has_report");
    title.textContent = hasReport ? `Findings (${rows.length})` : "Findings";
    copy.disabled = !hasReport;
    hint.textContent = hasReport
      ? "Hover or click a finding to highlight its boxes; click a box to find its finding."
      : "Generate a report to see findings here.";
    for (const row of rows) {
      const tr = html("tr", "cxr-row" + (row.grounded ? "" : " cxr-ungrounded"));
      tr.dataset.finding = row.index;
      const num = html("td", "cxr-num", String(row.number));
      const sw = html("td", "cxr-swatch-cell");
      const swatch = html("span", "cxr-swatch");
      swatch.style.background = row.color;
      sw.append(swatch);
      const text = html("td", "cxr-text", row.text);
      const where = html(
        "td",
        "cxr-where",
        row.grounded ? `${row.n_boxes} box${row.n_boxes === 1 ? "" : "es"}` : "not grounded",
      );
      tr.append(num, sw, text, where);
      tr.addEventListener("mouseenter", () => { hovered = row.index; applyHighlight(); });
      tr.addEventListener("mouseleave", () => { hovered = null; applyHighlight(); });
      tr.addEventListener("click", () => select(row.index));
      tbody.append(tr);
    }
    applyHighlight();
  }

  function drawWarnings() {
    warnings.replaceChildren();
    for (const text of model.get("warnings")) {
      warnings.append(html("div", "cxr-warning", "warning: " + text));
    }
  }

  function drawTabs() {
    tabs.replaceChildren();
    const views = model.get("views");
    for (const view of views.length ? views : ["frontal"]) {
      const b = html("button", "cxr-view-tab", VIEW_LABELS[view] || view);
      b.type = "button";
      b.dataset.view = view;
      b.classList.toggle("cxr-active", view === model.get("view"));
      b.disabled = views.length <= 1;
      b.addEventListener("click", () => { model.set("view", view); model.save_changes(); });
      tabs.append(b);
    }
  }

  function drawCaption() {
    const parts = [];
    if (model.get("view") === "frontal") parts.push(model.get("frame_caption"));
    else parts.push(`${VIEW_LABELS[model.get("view")]} image (boxes refer to the frontal image)`);
    if (model.get("caption")) parts.push(model.get("caption"));
    caption.textContent = parts.join(" · ");
    const demo = model.get("demo") && model.get("has_report");
    demoOverlay.textContent = demo ? model.get("demo_notice") : "";
    demoOverlay.style.display = demo ? "" : "none";
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
  stage.addEventListener("click", () => { if (model.get("selected") >= 0) select(-1); });

  const redrawAll = () => {
    drawImage(); drawBoxes(); drawTable(); drawTabs(); drawCaption(); drawWarnings();
  };
  model.on("change:warnings", drawWarnings);
  model.on("change:image", () => { drawImage(); drawBoxes(); });
  model.on("change:boxes", drawBoxes);
  model.on("change:findings", () => { drawTable(); drawBoxes(); });
  model.on("change:has_report", () => { drawTable(); drawCaption(); });
  model.on("change:selected", applyHighlight);
  model.on("change:show_boxes", applyHighlight);
  model.on("change:show_crop", drawCrop);
  model.on("change:crop", drawCrop);
  model.on("change:views", drawTabs);
  model.on("change:view", () => { drawTabs(); drawCaption(); drawCrop(); });
  model.on("change:frame_caption", drawCaption);
  model.on("change:caption", drawCaption);
  model.on("change:demo", drawCaption);
  model.on("change:message", drawImage);
  redrawAll();
  return () => { if (imageUrl) URL.revokeObjectURL(imageUrl); };
}

export default { render };
