// cxr-widgets study browser: the study table (kind "table") and the study panel with
// review mode (kind "study"). Filtering, sorting and all geometry happen in Python;
// this file draws, scrolls, links and sends the reader's actions.
const SVG = "http://www.w3.org/2000/svg";
const ROW = 26; // px per table row (CSS .cxr-b-row height)
const OVERSCAN = 8;
const COLUMNS = [
  ["row", "#", "cxr-b-num"],
  ["study_id", "study", "cxr-b-id"],
  ["status", "status", "cxr-b-status"],
  ["n_findings", "findings", "cxr-b-n"],
  ["n_grounded", "grounded", "cxr-b-n"],
  ["n_boxes", "boxes", "cxr-b-n"],
  ["review", "review", "cxr-b-review"],
];
const REVIEW_LABELS = ["", "started", "reviewed"];
const FILTERS = [
  ["has_boxes", "has boxes"],
  ["no_findings", "no findings"],
  ["failed", "failed"],
  ["reviewed", "reviewed"],
];
const VERDICTS = [["agree", "✓ agree"], ["disagree", "✗ disagree"], ["unsure", "? unsure"]];

function html(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

function int32(view) {
  if (!view || !view.byteLength) return new Int32Array(0);
  return new Int32Array(view.buffer.slice(view.byteOffset, view.byteOffset + view.byteLength));
}

function uint8(view) {
  if (!view || !view.byteLength) return new Uint8Array(0);
  return new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
}

// Typing in our inputs must not run JupyterLab's shortcuts; Escape leaves the input as usual.
function keepKeys(e) {
  if (e.key === "Escape") e.target.blur();
  else e.stopPropagation();
}

// --- the study table -----------------------------------------------------------------

function renderTable({ model, el }) {
  const root = html("div", "cxr-b-table");
  el.append(root);

  const summary = html("div", "cxr-b-summary");
  const bars = html("div", "cxr-b-bars");
  const controls = html("div", "cxr-b-controls");
  const search = html("input", "cxr-b-search");
  search.type = "search";
  search.placeholder = "search findings (words or /regex/)";
  search.value = model.get("search");
  const regexWrap = html("label", "cxr-b-regex");
  const regex = html("input");
  regex.type = "checkbox";
  regex.checked = model.get("regex");
  regexWrap.append(regex, document.createTextNode(" regex"));
  const count = html("span", "cxr-b-count");
  controls.append(search, regexWrap, count);

  const filterBar = html("div", "cxr-b-filters");
  const selects = {};
  for (const [name, label] of FILTERS) {
    const wrap = html("label", "cxr-b-filter");
    const select = html("select");
    select.dataset.filter = name;
    for (const [value, text] of [["", "any"], ["yes", "yes"], ["no", "no"]]) {
      const opt = html("option", "", text);
      opt.value = value;
      select.append(opt);
    }
    select.addEventListener("change", () => {
      const filters = { ...model.get("filters") };
      if (select.value) filters[name] = select.value;
      else delete filters[name];
      model.set("filters", filters);
      model.save_changes();
    });
    selects[name] = select;
    wrap.append(document.createTextNode(label + " "), select);
    filterBar.append(wrap);
  }
  const reviewerWrap = html("label", "cxr-b-filter");
  const reviewerSelect = html("select", "cxr-b-reviewer-filter");
  reviewerSelect.addEventListener("change", () => {
    model.set("reviewer_filter", reviewerSelect.value);
    model.save_changes();
  });
  reviewerWrap.append(document.createTextNode("reviewer "), reviewerSelect);
  filterBar.append(reviewerWrap);

  const message = html("div", "cxr-b-message");
  const searchError = html("div", "cxr-b-search-error");

  const header = html("div", "cxr-b-head");
  for (const [key, label, cls] of COLUMNS) {
    const cell = html("span", "cxr-b-cell " + cls, label);
    cell.dataset.sort = key;
    cell.title = "sort by " + label;
    cell.addEventListener("click", () => {
      if (model.get("sort") === key) model.set("descending", !model.get("descending"));
      else { model.set("sort", key); model.set("descending", false); }
      model.save_changes();
    });
    header.append(cell);
  }
  const viewport = html("div", "cxr-b-viewport");
  viewport.tabIndex = 0;
  viewport.title = "↑/↓ or k/j: previous/next study";
  const spacer = html("div", "cxr-b-spacer");
  viewport.append(spacer);
  root.append(summary, bars, controls, filterBar, searchError, message, header, viewport);

  let order = int32(model.get("order"));
  let review = uint8(model.get("review"));
  let columns = model.get("columns");
  const pool = [];
  let frame = null;

  function makeRow() {
    const row = html("div", "cxr-b-row");
    for (const [, , cls] of COLUMNS) row.append(html("span", "cxr-b-cell " + cls));
    row.addEventListener("click", () => {
      model.set("selected", Number(row.dataset.row));
      model.save_changes();
      viewport.focus();
    });
    spacer.append(row);
    return row;
  }

  function drawRows() {
    frame = null;
    const total = order.length;
    spacer.style.height = `${total * ROW}px`;
    const first = Math.max(0, Math.floor(viewport.scrollTop / ROW) - OVERSCAN);
    const last = Math.min(total, Math.ceil((viewport.scrollTop + viewport.clientHeight) / ROW) + OVERSCAN);
    const selected = model.get("selected");
    while (pool.length < last - first) pool.push(makeRow());
    for (let i = 0; i < pool.length; i++) {
      const node = pool[i];
      const position = first + i;
      if (position >= last) { node.style.display = "none"; continue; }
      const r = order[position];
      node.style.display = "";
      node.style.transform = `translateY(${position * ROW}px)`;
      node.dataset.row = r;
      node.dataset.position = position;
      node.dataset.study = columns.study_id[r];
      const ok = columns.ok[r] === 1;
      const cells = node.children;
      cells[0].textContent = position + 1;
      cells[1].textContent = columns.study_id[r];
      cells[2].textContent = ok ? "ok" : "failed";
      cells[2].title = ok ? "" : columns.error[r];
      cells[3].textContent = ok ? columns.n_findings[r] : "";
      cells[4].textContent = ok ? columns.n_grounded[r] : "";
      cells[5].textContent = ok ? columns.n_boxes[r] : "";
      cells[6].textContent = REVIEW_LABELS[review[r] || 0];
      node.classList.toggle("cxr-b-failed", !ok);
      node.classList.toggle("cxr-b-selected", r === selected);
      node.classList.toggle("cxr-b-reviewed", review[r] === 2);
    }
  }
  const schedule = () => { if (frame === null) frame = requestAnimationFrame(drawRows); };
  viewport.addEventListener("scroll", schedule);

  function scrollToSelected() {
    const position = order.indexOf(model.get("selected"));
    if (position < 0) return;
    const top = position * ROW;
    if (top < viewport.scrollTop) viewport.scrollTop = top;
    else if (top + ROW > viewport.scrollTop + viewport.clientHeight) {
      viewport.scrollTop = top + ROW - viewport.clientHeight;
    }
  }

  viewport.addEventListener("keydown", (e) => {
    const step = { ArrowDown: 1, j: 1, ArrowUp: -1, k: -1, PageDown: 10, PageUp: -10 }[e.key];
    if (step === undefined) return;
    e.preventDefault();
    e.stopPropagation(); // JupyterLab must not move between cells
    if (!order.length) return;
    const position = order.indexOf(model.get("selected"));
    const next = Math.min(order.length - 1, Math.max(0, position < 0 ? 0 : position + step));
    model.set("selected", order[next]);
    model.save_changes();
    scrollToSelected();
    drawRows();
  });

  function drawSummary() {
    const s = model.get("summary") || {};
    summary.replaceChildren();
    const parts = [
      [s.studies, "studies"], [s.answered, "answered"], [s.failed, "failed"],
      [s.findings_per_study, "findings / study"], [s.boxes, "boxes"], [s.reviewed, "reviewed"],
    ];
    for (const [value, label] of parts) {
      const item = html("span", "cxr-b-stat");
      item.append(html("b", "", String(value ?? 0)), document.createTextNode(" " + label));
      summary.append(item);
    }
  }

  function drawBars() {
    bars.replaceChildren();
    const list = model.get("bars");
    const top = Math.max(1, ...list.map((b) => b.count));
    const active = model.get("finding");
    bars.append(html("div", "cxr-b-bars-title", "Most frequent findings (click to filter)"));
    for (const bar of list) {
      const item = html("div", "cxr-b-bar");
      item.dataset.finding = bar.text;
      item.title = `${bar.count} studies: ${bar.text}`;
      item.classList.toggle("cxr-b-active", bar.text === active);
      const label = html("span", "cxr-b-bar-label", bar.text);
      const track = html("span", "cxr-b-bar-track");
      const fill = html("span", "cxr-b-bar-fill");
      fill.style.width = `${(100 * bar.count) / top}%`;
      track.append(fill);
      item.append(label, track, html("span", "cxr-b-bar-count", String(bar.count)));
      item.addEventListener("click", () => {
        model.set("finding", model.get("finding") === bar.text ? "" : bar.text);
        model.save_changes();
      });
      bars.append(item);
    }
  }

  function drawControls() {
    count.textContent = `${model.get("count")} of ${(columns.study_id || []).length} studies`;
    if (model.get("finding")) count.textContent += ` · finding: “${model.get("finding")}”`;
    for (const [name, select] of Object.entries(selects)) select.value = model.get("filters")[name] || "";
    reviewerSelect.replaceChildren();
    for (const name of ["", ...model.get("reviewers")]) {
      const opt = html("option", "", name || "any");
      opt.value = name;
      reviewerSelect.append(opt);
    }
    reviewerSelect.value = model.get("reviewer_filter");
    for (const cell of header.children) {
      const key = cell.dataset.sort;
      cell.classList.toggle("cxr-b-sorted", key === model.get("sort"));
      cell.dataset.dir = key === model.get("sort") ? (model.get("descending") ? "▼" : "▲") : "";
    }
    message.textContent = model.get("message");
    message.style.display = model.get("message") ? "" : "none";
    searchError.textContent = model.get("search_error");
    searchError.style.display = model.get("search_error") ? "" : "none";
  }

  let timer = null;
  const sendSearch = () => {
    let text = search.value;
    const slashed = /^\/(.+)\/$/.exec(text);
    if (slashed) { text = slashed[1]; regex.checked = true; }
    model.set("regex", regex.checked);
    model.set("search", text);
    model.save_changes();
  };
  search.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(sendSearch, 120); });
  search.addEventListener("keydown", keepKeys);
  regex.addEventListener("change", sendSearch);

  // A new filter or sort starts at the top; new rows from a running batch keep the scroll.
  const filterKey = () => JSON.stringify(
    ["search", "regex", "filters", "reviewer_filter", "finding", "sort", "descending"].map((k) => model.get(k)),
  );
  let shownKey = filterKey();
  model.on("change:order", () => {
    order = int32(model.get("order"));
    if (filterKey() !== shownKey) { shownKey = filterKey(); viewport.scrollTop = 0; }
    drawRows(); drawControls();
  });
  model.on("change:review", () => { review = uint8(model.get("review")); drawRows(); });
  model.on("change:columns", () => { columns = model.get("columns"); drawRows(); drawControls(); });
  model.on("change:count", drawControls);
  model.on("change:summary", drawSummary);
  model.on("change:bars", drawBars);
  model.on("change:finding", () => { drawBars(); drawControls(); });
  model.on("change:filters", drawControls);
  model.on("change:reviewers", drawControls);
  model.on("change:reviewer_filter", drawControls);
  model.on("change:sort", drawControls);
  model.on("change:descending", drawControls);
  model.on("change:message", drawControls);
  model.on("change:search_error", drawControls);
  model.on("change:selected", () => { scrollToSelected(); drawRows(); });
  drawSummary(); drawBars(); drawControls();
  requestAnimationFrame(drawRows);
}

// --- the study panel and review mode --------------------------------------------------

function renderStudy({ model, el }) {
  const root = html("div", "cxr-b-study");
  el.append(root);
  const head = html("div", "cxr-b-study-head");
  const failure = html("div", "cxr-b-failure");
  const details = html("details", "cxr-b-details");
  const reviewBar = html("div", "cxr-b-reviewbar");
  const modeWrap = html("label", "cxr-b-mode");
  const mode = html("input");
  mode.type = "checkbox";
  modeWrap.append(mode, document.createTextNode(" Review mode"));
  const reviewer = html("input", "cxr-b-reviewer");
  reviewer.placeholder = "your name (reviewer)";
  const undo = html("button", "cxr-b-undo", "Undo");
  undo.type = "button";
  undo.title = "Undo your last review change";
  const saved = html("span", "cxr-b-saved");
  reviewBar.append(modeWrap, reviewer, undo, saved);
  const error = html("div", "cxr-b-error");

  const editor = html("div", "cxr-b-editor");
  const tools = html("div", "cxr-b-tools");
  const drawButton = html("button", "cxr-b-draw", "+ Box");
  drawButton.type = "button";
  drawButton.title = "Draw a new box for the selected finding: drag on the image";
  const deleteBox = html("button", "cxr-b-delete-box", "Delete box");
  deleteBox.type = "button";
  const hint = html("span", "cxr-b-hint", "Drag a box to move it, a corner to resize it.");
  tools.append(drawButton, deleteBox, hint);
  const canvas = svg("svg", { class: "cxr-b-svg", preserveAspectRatio: "xMidYMid meet" });
  const picture = svg("image", { x: 0, y: 0 });
  const boxLayer = svg("g", { class: "cxr-b-boxes" });
  canvas.append(picture, boxLayer);
  editor.append(tools, canvas);

  const table = html("table", "cxr-b-findings");
  const tbody = html("tbody");
  table.append(tbody);
  const addBar = html("div", "cxr-b-addbar");
  const addText = html("input", "cxr-b-add-text");
  addText.placeholder = "a finding the model missed";
  const addButton = html("button", "cxr-b-add", "Add finding");
  addButton.type = "button";
  addBar.append(addText, addButton);
  const noteBar = html("div", "cxr-b-notebar");
  const note = html("textarea", "cxr-b-note");
  note.placeholder = "note on this study";
  note.rows = 2;
  const doneWrap = html("label", "cxr-b-done");
  const done = html("input");
  done.type = "checkbox";
  doneWrap.append(done, document.createTextNode(" done"));
  const badge = html("span", "cxr-b-badge");
  noteBar.append(note, doneWrap, badge);
  root.append(head, failure, details, reviewBar, error, editor, table, addBar, noteBar);

  let imageUrl = null;
  let drawing = false;
  let chosenBox = null; // [finding, box]

  const send = (content) => model.send(content);
  for (const input of [reviewer, addText, note]) input.addEventListener("keydown", keepKeys);

  function drawHead() {
    const s = model.get("study") || {};
    head.replaceChildren();
    head.append(html("span", "cxr-b-study-id", s.study_id || "no study selected"));
    if (s.demo) head.append(html("span", "cxr-b-demo", "DEMO: canned findings"));
    failure.replaceChildren();
    failure.style.display = s.ok === false ? "" : "none";
    if (s.ok === false) {
      failure.append(html("div", "cxr-b-failure-text", "Failed: " + s.error));
      const resend = html("button", "cxr-b-resend", "Re-send with the current client");
      resend.type = "button";
      resend.addEventListener("click", () => send({ action: "resend" }));
      failure.append(resend);
    }
    details.replaceChildren(html("summary", "", "Texts, provenance, images"));
    const list = html("dl", "cxr-b-dl");
    const add = (k, v) => { list.append(html("dt", "", k), html("dd", "", String(v))); };
    for (const [k, v] of Object.entries(s.texts || {})) add(k, v);
    for (const [k, v] of Object.entries(s.provenance || {})) add(k, v);
    for (const [k, v] of Object.entries(s.sources || {})) add(k, v);
    for (const [k, v] of Object.entries(s.problems || {})) add(k + " problem", v);
    for (const w of s.warnings || []) add("warning", w);
    details.append(list);
  }

  function drawImage() {
    const w = model.get("width");
    const h = model.get("height");
    const data = model.get("image");
    if (imageUrl) URL.revokeObjectURL(imageUrl);
    imageUrl = data && data.byteLength ? URL.createObjectURL(new Blob([data], { type: "image/jpeg" })) : null;
    canvas.setAttribute("viewBox", `0 0 ${w} ${h}`);
    canvas.style.aspectRatio = `${w} / ${h}`;
    picture.setAttribute("width", w);
    picture.setAttribute("height", h);
    if (imageUrl) picture.setAttribute("href", imageUrl);
    else picture.removeAttribute("href");
  }

  function point(e) {
    const p = canvas.createSVGPoint();
    p.x = e.clientX;
    p.y = e.clientY;
    return p.matrixTransform(canvas.getScreenCTM().inverse());
  }

  function boxesOf(finding) {
    return [...boxLayer.querySelectorAll(`rect.cxr-b-box[data-finding="${finding}"]`)].map((r) => {
      const x = Number(r.getAttribute("x"));
      const y = Number(r.getAttribute("y"));
      return [x, y, x + Number(r.getAttribute("width")), y + Number(r.getAttribute("height"))];
    });
  }

  function place(group, x0, y0, x1, y1) {
    const [ax, bx] = [Math.min(x0, x1), Math.max(x0, x1)];
    const [ay, by] = [Math.min(y0, y1), Math.max(y0, y1)];
    const rect = group.querySelector("rect.cxr-b-box");
    rect.setAttribute("x", ax);
    rect.setAttribute("y", ay);
    rect.setAttribute("width", bx - ax);
    rect.setAttribute("height", by - ay);
    const corners = [[ax, ay], [bx, ay], [ax, by], [bx, by]];
    group.querySelectorAll("rect.cxr-b-handle").forEach((handle, i) => {
      const s = Number(handle.getAttribute("width"));
      handle.setAttribute("x", corners[i][0] - s / 2);
      handle.setAttribute("y", corners[i][1] - s / 2);
    });
  }

  function startDrag(e, group, corner) {
    if (!model.get("review_mode")) return;
    e.preventDefault();
    e.stopPropagation();
    const rect = group.querySelector("rect.cxr-b-box");
    const finding = Number(rect.dataset.finding);
    chosenBox = [finding, Number(rect.dataset.box)];
    model.set("active", finding);
    model.save_changes();
    const x = Number(rect.getAttribute("x"));
    const y = Number(rect.getAttribute("y"));
    const start = [x, y, x + Number(rect.getAttribute("width")), y + Number(rect.getAttribute("height"))];
    const origin = point(e);
    const w = model.get("width");
    const h = model.get("height");
    const clampX = (v) => Math.min(w, Math.max(0, v));
    const clampY = (v) => Math.min(h, Math.max(0, v));
    function move(ev) {
      const p = point(ev);
      let dx = p.x - origin.x;
      let dy = p.y - origin.y;
      let [x0, y0, x1, y1] = start;
      if (corner === null) {
        dx = Math.min(Math.max(dx, -x0), w - x1);
        dy = Math.min(Math.max(dy, -y0), h - y1);
        [x0, x1, y0, y1] = [x0 + dx, x1 + dx, y0 + dy, y1 + dy];
      } else {
        if (corner % 2 === 0) x0 = clampX(x0 + dx); else x1 = clampX(x1 + dx);
        if (corner < 2) y0 = clampY(y0 + dy); else y1 = clampY(y1 + dy);
      }
      place(group, x0, y0, x1, y1);
    }
    function up() {
      window.removeEventListener("pointermove", move);
      window.removeEventListener("pointerup", up);
      send({ action: "boxes", index: finding, boxes: boxesOf(finding) });
    }
    window.addEventListener("pointermove", move);
    window.addEventListener("pointerup", up);
  }

  function drawBoxes() {
    boxLayer.replaceChildren();
    const w = model.get("width");
    const h = model.get("height");
    const handleSize = Math.max(6, Math.round(Math.max(w, h) / 70));
    for (const b of model.get("boxes")) {
      const group = svg("g", { class: "cxr-b-boxgroup", "data-finding": b.finding });
      const rect = svg("rect", {
        class: "cxr-b-box", "data-finding": b.finding, "data-box": b.box, stroke: b.color,
      });
      group.append(rect);
      for (let corner = 0; corner < 4; corner++) {
        const handle = svg("rect", {
          class: "cxr-b-handle", width: handleSize, height: handleSize, "data-corner": corner, fill: b.color,
        });
        handle.addEventListener("pointerdown", (e) => startDrag(e, group, corner));
        group.append(handle);
      }
      rect.addEventListener("pointerdown", (e) => startDrag(e, group, null));
      rect.addEventListener("click", () => { chosenBox = [b.finding, b.box]; model.set("active", b.finding); model.save_changes(); });
      boxLayer.append(group);
      place(group, b.x0, b.y0, b.x1, b.y1);
    }
    highlight();
  }

  // Selection changes restyle the boxes in place: a box being dragged must stay in the DOM.
  function highlight() {
    const active = model.get("active");
    for (const group of boxLayer.querySelectorAll("g.cxr-b-boxgroup")) {
      const rect = group.querySelector("rect.cxr-b-box");
      const finding = Number(rect.dataset.finding);
      group.classList.toggle("cxr-b-dim", active >= 0 && active !== finding);
      group.classList.toggle(
        "cxr-b-chosen",
        chosenBox !== null && chosenBox[0] === finding && chosenBox[1] === Number(rect.dataset.box),
      );
    }
  }

  canvas.addEventListener("pointerdown", (e) => {
    if (!drawing || !model.get("review_mode")) return;
    const finding = model.get("active");
    if (finding < 0) return;
    e.preventDefault();
    const origin = point(e);
    const group = svg("g", { class: "cxr-b-boxgroup cxr-b-new" });
    const rect = svg("rect", { class: "cxr-b-box", "data-finding": finding, "data-box": -1, stroke: "#fff" });
    group.append(rect);
    boxLayer.append(group);
    place(group, origin.x, origin.y, origin.x, origin.y);
    const w = model.get("width");
    const h = model.get("height");
    function move(ev) {
      const p = point(ev);
      place(group, origin.x, origin.y, Math.min(w, Math.max(0, p.x)), Math.min(h, Math.max(0, p.y)));
    }
    function up() {
      window.removeEventListener("pointermove", move);
      window.removeEventListener("pointerup", up);
      drawing = false;
      drawButton.classList.remove("cxr-b-on");
      send({ action: "boxes", index: finding, boxes: boxesOf(finding) });
    }
    window.addEventListener("pointermove", move);
    window.addEventListener("pointerup", up);
  });

  drawButton.addEventListener("click", () => {
    drawing = !drawing;
    drawButton.classList.toggle("cxr-b-on", drawing);
  });
  deleteBox.addEventListener("click", () => {
    if (!chosenBox) return;
    const [finding, box] = chosenBox;
    const kept = boxesOf(finding).filter((_, i) => i !== box);
    chosenBox = null;
    send({ action: "boxes", index: finding, boxes: kept });
  });

  function drawFindings() {
    tbody.replaceChildren();
    const review = model.get("review_mode");
    const active = model.get("active");
    for (const f of model.get("findings")) {
      const tr = html("tr", "cxr-b-finding");
      tr.dataset.finding = f.index;
      tr.classList.toggle("cxr-b-active", f.index === active);
      tr.classList.toggle("cxr-b-added", f.source === "added");
      const num = html("td", "cxr-b-fnum", String(f.number));
      const sw = html("span", "cxr-b-swatch");
      sw.style.background = f.color;
      num.prepend(sw);
      const text = html("td", "cxr-b-ftext");
      if (review) {
        const input = html("input", "cxr-b-text");
        input.value = f.text;
        input.addEventListener("keydown", (e) => { keepKeys(e); if (e.key === "Enter") input.blur(); });
        input.addEventListener("change", () => send({ action: "text", index: f.index, text: input.value }));
        text.append(input);
      } else text.textContent = f.text;
      if (f.edited && f.source === "model") text.title = "model said: " + f.model_text;
      const where = html("td", "cxr-b-fwhere", f.source === "added" ? `added · ${f.n_boxes} box` : `${f.n_boxes} box`);
      const verdicts = html("td", "cxr-b-verdicts");
      if (review && f.source === "model") {
        for (const [value, label] of VERDICTS) {
          const b = html("button", `cxr-b-verdict cxr-b-${value}`, label);
          b.type = "button";
          b.dataset.verdict = value;
          b.classList.toggle("cxr-b-on", f.verdict === value);
          b.addEventListener("click", (e) => {
            e.stopPropagation();
            send({ action: "verdict", index: f.index, verdict: f.verdict === value ? null : value });
          });
          verdicts.append(b);
        }
      } else if (review) {
        const del = html("button", "cxr-b-delete-finding", "Delete");
        del.type = "button";
        del.addEventListener("click", (e) => { e.stopPropagation(); send({ action: "delete", index: f.index }); });
        verdicts.append(del);
      } else if (f.verdict) verdicts.textContent = f.verdict;
      tr.append(num, text, where, verdicts);
      tr.addEventListener("click", () => { model.set("active", f.index); model.save_changes(); });
      tbody.append(tr);
    }
  }

  function drawMode() {
    const review = model.get("review_mode");
    mode.checked = review;
    root.classList.toggle("cxr-b-reviewing", review);
    editor.style.display = review ? "" : "none";
    addBar.style.display = review ? "" : "none";
    note.disabled = !review;
    done.disabled = !review;
    if (document.activeElement !== reviewer) reviewer.value = model.get("reviewer");
    if (document.activeElement !== note) note.value = model.get("note");
    done.checked = model.get("done");
    badge.textContent = model.get("reviewed") ? "reviewed" : "";
    saved.textContent = model.get("saved");
    error.textContent = model.get("error");
    error.style.display = model.get("error") ? "" : "none";
  }

  mode.addEventListener("change", () => { model.set("review_mode", mode.checked); model.save_changes(); });
  reviewer.addEventListener("change", () => { model.set("reviewer", reviewer.value); model.save_changes(); });
  undo.addEventListener("click", () => send({ action: "undo" }));
  addButton.addEventListener("click", () => {
    if (!addText.value.trim()) return;
    send({ action: "add", text: addText.value, boxes: [] });
    addText.value = "";
  });
  note.addEventListener("change", () => send({ action: "note", note: note.value }));
  done.addEventListener("change", () => send({ action: "done", done: done.checked }));

  model.on("change:study", drawHead);
  model.on("change:image", () => { drawImage(); drawBoxes(); });
  model.on("change:width", drawImage);
  model.on("change:boxes", drawBoxes);
  model.on("change:findings", drawFindings);
  model.on("change:active", () => { drawFindings(); highlight(); });
  for (const name of ["review_mode", "reviewer", "note", "done", "reviewed", "saved", "error"]) {
    model.on("change:" + name, () => { drawMode(); if (name === "review_mode") drawFindings(); });
  }
  drawHead(); drawImage(); drawBoxes(); drawFindings(); drawMode();
  return () => { if (imageUrl) URL.revokeObjectURL(imageUrl); };
}

function render(context) {
  return context.model.get("kind") === "table" ? renderTable(context) : renderStudy(context);
}

export default { render };
