// cxr-widgets study browser: the study table (kind "table") and the study panel
// (kind "study"). Filtering, sorting and all geometry happen in Python; this file draws,
// scrolls, links and sends the reader's actions.
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

function html(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
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

// --- the study panel: texts, provenance, images, a failure ----------------------------
// (Review controls: review_panel.js, shared with the report panel; boxes: the viewer.)

function renderStudy({ model, el }) {
  const root = html("div", "cxr-b-study");
  el.append(root);
  const head = html("div", "cxr-b-study-head");
  const failure = html("div", "cxr-b-failure");
  const status = html("div", "cxr-b-status-line");
  status.setAttribute("role", "status");
  const error = html("div", "cxr-b-error");
  error.setAttribute("role", "alert");
  const details = html("details", "cxr-b-details");
  root.append(head, failure, status, error, details);
  const send = (content) => model.send(content);

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

  function drawStatus() {
    status.textContent = model.get("status");
    error.textContent = model.get("error");
    error.style.display = model.get("error") ? "" : "none";
  }

  model.on("change:study", drawHead);
  model.on("change:status", drawStatus);
  model.on("change:error", drawStatus);
  drawHead();
  drawStatus();
}

function render(context) {
  return context.model.get("kind") === "table" ? renderTable(context) : renderStudy(context);
}

export default { render };
