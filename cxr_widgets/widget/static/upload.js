// Chunked file upload for cxr-widgets: the File is read in slices and each slice is
// sent as a binary buffer of a custom message; the kernel acks each one (one in flight).
const ACK_TIMEOUT_MS = 120000;

function fmtMB(n) {
  return (n / 1e6).toFixed(1) + " MB";
}

function render({ model, el }) {
  const root = document.createElement("div");
  root.className = "cxr-upload";
  root.dataset.slot = model.get("slot");

  const button = document.createElement("label");
  button.className = "cxr-upload-button";
  const input = document.createElement("input");
  input.type = "file";
  input.className = "cxr-upload-input";
  input.accept = model.get("accept");
  input.setAttribute("aria-label", `Upload the ${model.get("slot")} image`);
  const text = document.createElement("span");
  text.textContent = model.get("label");
  button.append(input, text);

  const progress = document.createElement("progress");
  progress.className = "cxr-upload-progress";
  progress.max = 1;
  progress.value = 0;
  progress.hidden = true;

  const status = document.createElement("span");
  status.className = "cxr-upload-status";

  root.append(button, progress, status);
  el.append(root);

  const waiting = new Map(); // transfer id -> {resolve, reject, timer}

  function showStatus() {
    const state = model.get("state");
    root.dataset.state = state;
    status.textContent = model.get("status");
    status.classList.toggle("cxr-upload-error", state === "error");
    if (state !== "receiving") progress.hidden = true;
  }

  function expect(id) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        waiting.delete(id);
        reject(new Error("the kernel did not answer for 2 minutes (busy or disconnected)"));
      }, ACK_TIMEOUT_MS);
      waiting.set(id, { resolve, reject, timer });
    });
  }

  function onMessage(msg) {
    const entry = waiting.get(msg.id);
    if (!entry) return;
    waiting.delete(msg.id);
    clearTimeout(entry.timer);
    if (msg.type === "error") {
      const err = new Error(msg.message);
      err.fromKernel = true; // already names the file
      entry.reject(err);
    } else entry.resolve(msg);
  }

  function localError(message) {
    progress.hidden = true;
    root.dataset.state = "error";
    status.textContent = message;
    status.classList.add("cxr-upload-error");
  }

  async function upload(file) {
    const id = Math.random().toString(36).slice(2) + Date.now().toString(36);
    const chunk = model.get("chunk_size");
    const max = model.get("max_bytes");
    if (file.size > max) {
      // The kernel says the same; saying it here avoids reading the file at all.
      model.send({ type: "start", id, name: file.name, size: file.size });
      return;
    }
    progress.hidden = false;
    progress.value = 0;
    status.classList.remove("cxr-upload-error");
    status.textContent = `sending ${file.name} (${fmtMB(file.size)})`;
    try {
      let ack = expect(id);
      model.send({ type: "start", id, name: file.name, size: file.size, mime: file.type });
      let answer = await ack;
      let offset = answer.offset;
      while (offset < file.size) {
        const buffer = await file.slice(offset, offset + chunk).arrayBuffer();
        ack = expect(id);
        model.send({ type: "chunk", id, offset }, undefined, [buffer]);
        answer = await ack;
        offset = answer.offset;
        progress.value = offset / file.size;
        status.textContent = `sending ${file.name}: ${fmtMB(offset)} of ${fmtMB(file.size)}`;
      }
      ack = expect(id);
      model.send({ type: "end", id });
      status.textContent = `${file.name}: preparing...`;
      await ack;
    } catch (err) {
      localError(err.fromKernel ? err.message : `${file.name}: ${err.message || err}`);
      return;
    } finally {
      progress.hidden = true;
    }
    showStatus();
  }

  input.addEventListener("change", () => {
    const file = input.files && input.files[0];
    if (!file) return;
    upload(file).catch((err) => localError(String(err)));
    input.value = ""; // choosing the same file again fires change again
  });

  model.on("msg:custom", onMessage);
  model.on("change:status", showStatus);
  model.on("change:state", showStatus);
  model.on("change:label", () => (text.textContent = model.get("label")));
  showStatus();
  return () => {
    model.off("msg:custom", onMessage);
    for (const entry of waiting.values()) clearTimeout(entry.timer);
  };
}

export default { render };
