// cxr-widgets panel parts: each draws plain values from the kernel with textContent.
// The elapsed time of a running job is counted here, from busy_since, with no kernel message.

function node(tag, className, text) {
  const el = document.createElement(tag);
  if (className) el.className = className;
  if (text !== undefined) el.textContent = text;
  return el;
}

function fmtBytes(n) {
  return n >= 100000 ? `${(n / 1e6).toFixed(2)} MB` : `${Math.round(n / 1e3)} KB`;
}

// Keys pressed inside the panel stay in the panel: JupyterLab's notebook shortcuts
// (b, a, dd, arrows in command mode) must not act while a widget control has focus.
// JupyterLab 4 handles shortcuts when keydown bubbles to the document, so stopping it
// at the panel's root is enough. Tab (move focus) and Ctrl/Cmd/Alt combinations (save,
// undo, ...) still reach JupyterLab. Escape, or a click elsewhere in the notebook, hands
// focus back to the notebook (JupyterLab leaves it on the widget's control otherwise),
// so its shortcuts work again at once.
function keepKeys(el, tries = 60) {
  const root = el.closest(".cxr-widget");
  if (!root) {
    if (tries > 0) requestAnimationFrame(() => keepKeys(el, tries - 1));
    return;
  }
  if (root.dataset.cxrKeys) return;
  root.dataset.cxrKeys = "1";
  const notebook = root.closest(".jp-Notebook");
  const toNotebook = () => {
    if (!notebook) return;
    if (root.contains(document.activeElement)) document.activeElement.blur();
    notebook.focus();
  };
  root.addEventListener("keydown", (e) => {
    if (e.key === "Escape") return toNotebook();
    if (e.key === "Tab" || e.ctrlKey || e.metaKey || e.altKey) return;
    e.stopPropagation();
  });
  if (!notebook) return;
  const onPointer = (e) => {
    if (!root.isConnected) return document.removeEventListener("mousedown", onPointer, true);
    if (root.contains(document.activeElement) && !root.contains(e.target) && notebook.contains(e.target))
      toNotebook();
  };
  document.addEventListener("mousedown", onPointer, true);
}

function header(model, el) {
  const root = node("div", "cxr-header");
  const title = node("span", "cxr-title", "CXRReportGen");
  const badge = node("span", "cxr-demo-badge");
  const endpoint = node("span", "cxr-endpoint-label");
  const research = node("span", "cxr-research");
  el.append(root);
  function draw() {
    badge.textContent = model.get("demo_badge");
    badge.title = model.get("demo_choice");
    endpoint.replaceChildren("endpoint: ", node("b", "", model.get("endpoint")));
    research.textContent = model.get("research");
    // The badge exists only for demo findings (never hidden and left in the page).
    root.replaceChildren(title, ...(model.get("demo") ? [badge] : []), endpoint, research);
  }
  for (const name of ["endpoint", "demo", "demo_badge", "demo_choice", "research"]) model.on(`change:${name}`, draw);
  draw();
  keepKeys(el);
}

function runStatus(model, el) {
  const root = node("div", "cxr-runstatus");
  const status = node("div", "cxr-status");
  status.setAttribute("role", "status");
  const spinner = node("span", "cxr-spinner");
  const text = node("span", "cxr-status-text");
  status.append(spinner, text);
  const notice = node("div", "cxr-note cxr-notice");
  const error = node("div", "cxr-run-error");
  error.setAttribute("role", "alert");
  const size = node("div", "cxr-request-size");
  root.append(status, notice, error, size);
  el.append(root);
  let timer = null;

  function tick() {
    const since = model.get("busy_since");
    const seconds = Math.max(0, (Date.now() - since) / 1000);
    text.textContent = `${model.get("busy_label")}... ${seconds.toFixed(1)} s`;
  }
  // A run disables the button that started it, which drops the keyboard focus. When a
  // run started from Generate ends, focus returns to Generate (once it is enabled again)
  // if it has gone nowhere else meanwhile. Armed by the click, so message order between
  // the kernel's models does not matter.
  let armed = false;
  (function arm(tries = 60) {
    const panel = el.closest(".cxr-widget");
    if (!panel) {
      if (tries > 0) requestAnimationFrame(() => arm(tries - 1));
      return;
    }
    panel.addEventListener("click", (e) => {
      if (e.target instanceof Element && e.target.closest("button.cxr-generate")) armed = true;
    }, true);
  })();
  function keepFocus(busy) {
    if (busy || !armed) return;
    armed = false;
    const generate = el.closest(".cxr-run-bar")?.querySelector("button.cxr-generate");
    if (!generate) return;
    const refocus = (tries) => {
      const now = document.activeElement;
      if (now && now !== document.body && now !== generate) return; // the user moved on
      if (generate.disabled && tries > 0) return requestAnimationFrame(() => refocus(tries - 1));
      generate.focus();
    };
    requestAnimationFrame(() => refocus(120));
  }
  function drawBusy() {
    const busy = model.get("busy_since") > 0;
    keepFocus(busy);
    status.hidden = !busy;
    if (timer) clearInterval(timer);
    timer = null;
    if (busy) {
      tick();
      timer = setInterval(tick, 100);
    }
  }
  function drawMessages() {
    notice.textContent = model.get("notice");
    notice.hidden = !model.get("notice");
    const message = model.get("error");
    error.hidden = !message;
    const title = model.get("error_title");
    error.replaceChildren(...(title ? [node("b", "", title), " "] : []), message);
  }
  function drawSize() {
    const n = model.get("request_bytes");
    const budget = model.get("request_budget");
    const over = budget > 0 && n > budget;
    size.classList.toggle("cxr-over", over);
    if (!n) size.textContent = "request: no image yet";
    else if (over)
      size.textContent = `request ≈ ${fmtBytes(n)}, over the endpoint's budget of ${fmtBytes(budget)}: remove an image or lower the image size`;
    else size.textContent = `request ≈ ${fmtBytes(n)}` + (budget > 0 ? ` of ${fmtBytes(budget)} allowed` : "");
  }
  model.on("change:busy_since", drawBusy);
  model.on("change:busy_label", () => model.get("busy_since") > 0 && tick());
  for (const name of ["notice", "error", "error_title"]) model.on(`change:${name}`, drawMessages);
  model.on("change:request_bytes", drawSize);
  model.on("change:request_budget", drawSize);
  drawBusy();
  drawMessages();
  drawSize();
  return () => timer && clearInterval(timer);
}

function slot(model, el) {
  const info = node("div", "cxr-prep");
  const error = node("div", "cxr-error");
  error.setAttribute("role", "alert");
  el.append(info, error);
  function draw() {
    info.dataset.slot = model.get("slot");
    const summary = model.get("summary");
    info.textContent = summary ? `${model.get("label")} — ${summary}` : model.get("hint");
    error.textContent = model.get("error");
    error.hidden = !model.get("error");
  }
  for (const name of ["slot", "label", "summary", "hint", "error"]) model.on(`change:${name}`, draw);
  draw();
}

function thumb(model, el) {
  const img = node("img", "cxr-thumb-img");
  el.append(img);
  let url = null;
  function draw() {
    if (url) URL.revokeObjectURL(url);
    url = null;
    const data = model.get("image");
    img.hidden = !(data && data.byteLength);
    img.alt = model.get("alt");
    if (!img.hidden) {
      url = URL.createObjectURL(new Blob([data], { type: "image/jpeg" }));
      img.src = url;
    } else img.removeAttribute("src");
  }
  model.on("change:image", draw);
  model.on("change:alt", draw);
  draw();
  return () => url && URL.revokeObjectURL(url);
}

function message(model, el) {
  const line = node("div");
  line.setAttribute("role", "status");
  el.append(line);
  function draw() {
    line.className = `cxr-${model.get("kind")}`;
    line.textContent = model.get("text");
    line.hidden = !model.get("text");
  }
  model.on("change:text", draw);
  model.on("change:kind", draw);
  draw();
}

function deviceCode(model, el) {
  const box = node("div", "cxr-device-code");
  el.append(box);
  function draw() {
    const uri = model.get("uri");
    box.hidden = !model.get("code");
    box.replaceChildren();
    if (!model.get("code")) return;
    const link = node("a", "", uri);
    // Only a web address is made a link (azure-identity gives https://microsoft.com/devicelogin).
    if (/^https:\/\//.test(uri)) {
      link.href = uri;
      link.target = "_blank";
      link.rel = "noopener";
    }
    const expires = model.get("expires");
    box.append(
      "To sign in, open ", link, " and enter the code ", node("code", "", model.get("code")),
      expires ? ` (expires ${expires}).` : ".",
    );
  }
  for (const name of ["uri", "code", "expires"]) model.on(`change:${name}`, draw);
  draw();
}

// A download is handled once per page, even when the panel is shown in several places.
const downloaded = new Set();

function exportsList(model, el) {
  const box = node("div", "cxr-exports");
  box.setAttribute("role", "status");
  el.append(box);
  function onMessage(msg, buffers) {
    if (msg.type !== "download" || downloaded.has(msg.id) || !buffers || !buffers.length) return;
    downloaded.add(msg.id);
    const url = URL.createObjectURL(new Blob([buffers[0]], { type: msg.mime }));
    const link = node("a");
    link.href = url;
    link.download = msg.name;
    link.hidden = true;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  }
  model.on("msg:custom", onMessage);
  function draw() {
    box.replaceChildren();
    const error = model.get("error");
    if (error) {
      box.append(node("div", "cxr-error", `Export failed: ${error}`));
      return;
    }
    const written = model.get("written");
    if (!written.length) return;
    box.append(node("div", "", model.get("downloaded") ? "Sent to your browser:" : "Written:"));
    for (const { kind, path } of written) {
      const line = node("div", "", `${kind.toUpperCase()}: `);
      line.append(node("code", "", path));
      box.append(line);
    }
  }
  model.on("change:written", draw);
  model.on("change:error", draw);
  draw();
  return () => model.off("msg:custom", onMessage);
}

const PARTS = {
  header,
  run: runStatus,
  slot,
  thumb,
  message,
  device_code: deviceCode,
  exports: exportsList,
};

function render({ model, el }) {
  const draw = PARTS[model.get("part")];
  if (!draw) {
    el.textContent = `unknown panel part ${model.get("part")}`;
    return;
  }
  return draw(model, el);
}

export default { render };
