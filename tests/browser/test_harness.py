"""The harness itself: ipywidgets and anywidget render and sync in this JupyterLab."""

from __future__ import annotations

from pathlib import Path

from jupyter_harness import JupyterLab, open_and_run_notebook, run_cell, write_notebook

COUNTER = '''
import anywidget, traitlets

class Counter(anywidget.AnyWidget):
    _esm = """
    function render({ model, el }) {
      const b = document.createElement("button");
      b.className = "harness-counter";
      const show = () => { b.textContent = `count is ${model.get("value")}`; };
      b.addEventListener("click", () => { model.set("value", model.get("value") + 1); model.save_changes(); });
      model.on("change:value", show);
      show();
      el.appendChild(b);
    }
    export default { render };
    """
    value = traitlets.Int(0).tag(sync=True)

counter = Counter(value=5)
counter
'''


def test_widgets_render_and_sync(page, jupyter_lab: JupyterLab, lab_root: Path) -> None:
    write_notebook(
        lab_root / "harness.ipynb",
        [
            "import ipywidgets as w\nslider = w.IntSlider(value=7, max=20, description='n')\nslider",
            COUNTER,
        ],
    )
    open_and_run_notebook(page, jupyter_lab, "harness.ipynb")

    # ipywidgets (JS from jupyterlab_widgets) renders the slider with its value.
    slider = page.locator(".widget-slider")
    slider.wait_for()
    assert page.locator(".widget-readout").first.inner_text().strip() == "7"

    # anywidget renders its ES module; a click travels to the kernel and back.
    button = page.locator("button.harness-counter")
    button.wait_for()
    assert button.inner_text() == "count is 5"
    button.click()
    button.click()
    page.wait_for_function(
        "() => document.querySelector('button.harness-counter').textContent === 'count is 7'"
    )
    assert run_cell(page, "print('kernel sees', counter.value)").strip() == "kernel sees 7"

    # Kernel -> browser: a change made in Python shows up in the DOM.
    run_cell(page, "slider.value = 13; counter.value = 40")
    page.wait_for_function(
        "() => document.querySelector('button.harness-counter').textContent === 'count is 40'"
    )
    assert page.locator(".widget-readout").first.inner_text().strip() == "13"
