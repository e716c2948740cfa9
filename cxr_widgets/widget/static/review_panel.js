// cxr-widgets review controls, shared by the study browser and the report panel:
// review mode, reviewer, a verdict and the text of each finding, an added finding, a note,
// done, undo and what was last saved. Boxes are edited on the image, in the viewer (its
// hint says how), for the finding selected here or in its table.
// Every change is sent to the kernel, which saves it and answers with "saved".

function html(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// Typing in our inputs must not run JupyterLab's shortcuts; Escape leaves the input as usual.
function keepKeys(e) {
  if (e.key === "Escape") e.target.blur();
  else e.stopPropagation();
}

function render({ model, el }) {
  const root = html("div", "cxr-r-panel");
  el.append(root);
  const send = (content) => model.send(content);

  const bar = html("div", "cxr-r-bar");
  const modeWrap = html("label", "cxr-r-mode");
  const mode = html("input");
  mode.type = "checkbox";
  modeWrap.append(mode, document.createTextNode(" Review mode"));
  const reviewer = html("input", "cxr-r-reviewer");
  reviewer.placeholder = "your name (reviewer)";
  reviewer.setAttribute("aria-label", "reviewer");
  const undo = html("button", "cxr-r-undo", "Undo");
  undo.type = "button";
  undo.title = "Undo your last review change";
  const saved = html("span", "cxr-r-saved");
  saved.setAttribute("role", "status");
  bar.append(modeWrap, reviewer, undo, saved);
  const where = html("div", "cxr-r-where");
  const error = html("div", "cxr-r-error");
  error.setAttribute("role", "alert");
  const summary = html("div", "cxr-r-summary");

  const table = html("table", "cxr-r-findings");
  const tbody = html("tbody");
  table.append(tbody);
  const addBar = html("div", "cxr-r-addbar");
  const addText = html("input", "cxr-r-add-text");
  addText.placeholder = "a finding the model missed";
  const addButton = html("button", "cxr-r-add", "Add finding");
  addButton.type = "button";
  addButton.title = "Add it, then draw its boxes on the image";
  addBar.append(addText, addButton);
  const noteBar = html("div", "cxr-r-notebar");
  const note = html("textarea", "cxr-r-note");
  note.placeholder = "note on this study";
  note.rows = 2;
  const doneWrap = html("label", "cxr-r-done");
  const done = html("input");
  done.type = "checkbox";
  doneWrap.append(done, document.createTextNode(" done"));
  const badge = html("span", "cxr-r-badge");
  noteBar.append(note, doneWrap, badge);
  const body = html("div", "cxr-r-body");
  body.append(table, addBar, noteBar);
  root.append(bar, where, error, summary, body);
  for (const input of [reviewer, addText, note]) input.addEventListener("keydown", keepKeys);
  // Keys on the buttons and checkboxes stay here too (JupyterLab's "a", "b", "dd" ...);
  // Tab and Ctrl/Cmd/Alt combinations still reach JupyterLab.
  root.addEventListener("keydown", (e) => {
    if (e.key !== "Tab" && !e.ctrlKey && !e.metaKey && !e.altKey) e.stopPropagation();
  });

  // Rows are kept by position and rebuilt only when their content changed, so a verdict
  // redraws one row and text being typed in another row keeps its focus.
  const rows = [];
  const shownAs = [];

  function makeRow(f) {
    const verdicts = model.get("verdicts");
    const tr = html("tr", "cxr-r-finding");
    tr.dataset.finding = f.index;
    tr.dataset.position = f.position;
    tr.classList.toggle("cxr-r-added", f.source === "added");
    const num = html("td", "cxr-r-fnum", String(f.number));
    const sw = html("span", "cxr-r-swatch");
    sw.style.background = f.color;
    num.prepend(sw);
    const text = html("td", "cxr-r-ftext");
    const input = html("input", "cxr-r-text");
    input.value = f.text;
    input.setAttribute("aria-label", `finding ${f.number} text`);
    input.addEventListener("keydown", (e) => { keepKeys(e); if (e.key === "Enter") input.blur(); });
    input.addEventListener("change", () => send({ action: "text", index: f.index, text: input.value }));
    text.append(input);
    if (f.edited && f.source === "model") text.title = "model said: " + f.model_text;
    const boxes = `${f.n_boxes} box${f.n_boxes === 1 ? "" : "es"}`;
    const whereCell = html("td", "cxr-r-fwhere", f.source === "added" ? `added · ${boxes}` : boxes);
    const cell = html("td", "cxr-r-verdicts");
    if (f.source === "model") {
      for (const [value, label] of verdicts) {
        const b = html("button", `cxr-r-verdict cxr-r-${value}`, label);
        b.type = "button";
        b.dataset.verdict = value;
        b.classList.toggle("cxr-r-on", f.verdict === value);
        b.setAttribute("aria-pressed", String(f.verdict === value));
        b.addEventListener("click", (e) => {
          e.stopPropagation();
          send({ action: "verdict", index: f.index, verdict: f.verdict === value ? null : value });
        });
        cell.append(b);
      }
    } else {
      const del = html("button", "cxr-r-delete-finding", "Delete");
      del.type = "button";
      del.addEventListener("click", (e) => { e.stopPropagation(); send({ action: "delete", index: f.index }); });
      cell.append(del);
    }
    tr.append(num, text, whereCell, cell);
    tr.addEventListener("click", (e) => {
      if (e.target.tagName === "INPUT") return;
      model.set("active", model.get("active") === f.position ? -1 : f.position);
      model.save_changes();
    });
    return tr;
  }

  function drawFindings() {
    const list = model.get("findings");
    for (let i = 0; i < list.length; i++) {
      const key = JSON.stringify(list[i]);
      if (shownAs[i] === key) continue;
      const tr = makeRow(list[i]);
      if (rows[i]) rows[i].replaceWith(tr);
      else tbody.append(tr);
      rows[i] = tr;
      shownAs[i] = key;
    }
    while (rows.length > list.length) { rows.pop().remove(); shownAs.pop(); }
    drawActive();
    drawSummary();
  }

  function drawActive() {
    const active = model.get("active");
    rows.forEach((tr, i) => tr.classList.toggle("cxr-r-active", i === active));
  }

  function drawSummary() {
    // Out of review mode: one line on what this reviewer said.
    const counts = {};
    for (const f of model.get("findings")) if (f.verdict) counts[f.verdict] = (counts[f.verdict] || 0) + 1;
    const added = model.get("findings").filter((f) => f.source === "added").length;
    const parts = model.get("verdicts").filter(([v]) => counts[v]).map(([v]) => `${counts[v]} ${v}`);
    if (added) parts.push(`${added} added`);
    if (model.get("reviewed")) parts.push("reviewed");
    const who = model.get("reviewer");
    summary.textContent = who && parts.length ? `${who}: ${parts.join(", ")}` : "";
  }

  function drawMode() {
    const review = model.get("review_mode");
    const available = model.get("available");
    mode.checked = review;
    root.classList.toggle("cxr-r-reviewing", review);
    body.style.display = review && available ? "" : "none";
    summary.style.display = review ? "none" : "";
    if (document.activeElement !== reviewer) reviewer.value = model.get("reviewer");
    if (document.activeElement !== note) note.value = model.get("note");
    done.checked = model.get("done");
    badge.textContent = model.get("reviewed") ? "reviewed" : "";
    saved.textContent = model.get("saved");
    where.textContent = review ? model.get("where") : "";
    error.textContent = model.get("error");
    error.style.display = model.get("error") ? "" : "none";
    drawSummary();
  }

  mode.addEventListener("change", () => { model.set("review_mode", mode.checked); model.save_changes(); });
  reviewer.addEventListener("change", () => { model.set("reviewer", reviewer.value); model.save_changes(); });
  undo.addEventListener("click", () => send({ action: "undo" }));
  const add = () => {
    if (!addText.value.trim()) return;
    send({ action: "add", text: addText.value });
    addText.value = "";
  };
  addButton.addEventListener("click", add);
  addText.addEventListener("keydown", (e) => { if (e.key === "Enter") add(); });
  note.addEventListener("change", () => send({ action: "note", note: note.value }));
  done.addEventListener("change", () => send({ action: "done", done: done.checked }));

  // "saved" is drawn on its own: it is the answer the reader waits for after each click.
  model.on("change:saved", () => { saved.textContent = model.get("saved"); });
  model.on("change:findings", drawFindings);
  model.on("change:active", drawActive);
  for (const name of ["review_mode", "available", "reviewer", "note", "done", "reviewed", "error", "where"]) {
    model.on("change:" + name, drawMode);
  }
  drawFindings();
  drawMode();
}

export default { render };
