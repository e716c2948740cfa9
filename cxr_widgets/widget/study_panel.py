"""The study form: frontal, lateral and prior images; the four texts; the request size.

Each image comes from the chunked upload control or a path on the Jupyter
server. It is prepared at once with :func:`cxr_widgets.prepare_image` (the
same options the backend will use), so problems are explained next to the
field and the thumbnail shows what the model will see.
"""

from __future__ import annotations

import html
import os
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets

from ..contract import request_bytes
from ..errors import CxrWidgetsError, StudyError
from ..study import TEXT_COLUMNS, Study, describe_source
from .upload import ChunkedUpload
from .viewer import display_jpeg

THUMB_SIDE = 76
SLOT_LABELS = {"frontal": "Frontal", "lateral": "Lateral", "prior": "Prior"}
TEXT_LABELS = {
    "indication": "Indication",
    "technique": "Technique",
    "comparison": "Comparison",
    "prior_report": "Prior report",
}
TEXT_PLACEHOLDERS = {
    "indication": "e.g. Cough for two weeks.",
    "technique": "e.g. PA and lateral views of the chest.",
    "comparison": "e.g. Prior radiograph from last year.",
    "prior_report": "The prior study's findings, if any.",
}


def _short_label(source: Any) -> str:
    """A file's name (not its folder) or the source's short description."""
    if isinstance(source, (str, os.PathLike)):
        return os.path.basename(os.fspath(source)) or os.fspath(source)
    return describe_source(source)


def _fmt_bytes(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 100_000 else f"{n / 1e3:.0f} KB"


class ImageSlot:
    """One image of the study: upload or path, thumbnail, preparation summary, error."""

    def __init__(
        self,
        slot: str,
        *,
        required: bool,
        image_options: Callable[[], dict[str, Any]],
        on_change: Callable[[], None],
        max_bytes: int,
    ) -> None:
        self.slot = slot
        self.column = f"{slot}_image"
        self._image_options = image_options
        self._on_change = on_change
        self.source: Any = None
        self.prepared: Any = None  # PreparedImage
        self.label = ""
        self._last_error: str | None = None
        self.upload = ChunkedUpload(
            on_file=self._from_upload, slot=slot, label="Upload…", max_bytes=max_bytes
        )
        self.path = widgets.Text(
            placeholder="or a path on the Jupyter server, then Enter",
            continuous_update=False,
            layout=widgets.Layout(width="auto", flex="1 1 auto"),
        ).add_class("cxr-path")
        self.path.observe(self._from_path, "value")
        self.clear_button = widgets.Button(
            icon="times",
            tooltip=f"Remove the {slot} image",
            layout=widgets.Layout(width="30px", display="none"),
        ).add_class("cxr-clear")
        self.clear_button.on_click(lambda _: self.clear())
        self.thumb = widgets.Image(
            format="jpeg", layout=widgets.Layout(display="none", max_width=f"{THUMB_SIDE}px")
        ).add_class("cxr-thumb")
        required_mark = " <span class='cxr-required'>(required)</span>" if required else ""
        title = widgets.HTML(
            f"<span class='cxr-slot-name'>{SLOT_LABELS[slot]}</span>{required_mark}"
        )
        self.info = widgets.HTML("")
        self.error = widgets.HTML("")
        self._render_info()
        right = widgets.VBox(
            [
                widgets.HBox([title, self.upload], layout=widgets.Layout(align_items="center")),
                widgets.HBox([self.path, self.clear_button]),
                self.info,
                self.error,
            ],
            layout=widgets.Layout(flex="1 1 auto", min_width="0"),
        )
        self.box = widgets.HBox(
            [self.thumb, right], layout=widgets.Layout(align_items="flex-start", grid_gap="8px")
        ).add_class("cxr-slot")

    # --- sources ------------------------------------------------------------
    def _from_upload(self, name: str, data: bytes) -> None:
        self.path.unobserve(self._from_path, "value")
        self.path.value = ""
        self.path.observe(self._from_path, "value")
        if not self.set_source(data, name):
            raise StudyError("not usable (see below)")

    def _from_path(self, change: dict[str, Any]) -> None:
        text = change["new"].strip()
        if text:
            self.set_source(os.path.expanduser(text), _short_label(text))

    def set_source(self, source: Any, label: str | None = None) -> bool:
        """Prepare ``source``; show the thumbnail and summary, or the error. True if it worked."""
        from ..images import prepare_image

        self._last_error = None
        label = label or describe_source(source)
        try:
            prepared = prepare_image(source, name=self.column, **self._image_options())
        except (CxrWidgetsError, OSError, ValueError) as exc:
            self.source, self.prepared = None, None
            self._last_error = str(exc)
            self.error.value = f"<div class='cxr-error'>{html.escape(str(exc))}</div>"
            self.thumb.layout.display = "none"
            self.clear_button.layout.display = "none"
            self._render_info()
            self._on_change()
            return False
        self.source, self.prepared, self.label = source, prepared, label
        data, _, _ = display_jpeg(prepared.image, THUMB_SIDE * 2)
        self.thumb.value = data
        self.thumb.layout.display = ""
        self.clear_button.layout.display = ""
        self.error.value = ""
        self._render_info()
        self._on_change()
        return True

    def clear(self) -> None:
        """Remove this image."""
        self.source, self.prepared = None, None
        self._last_error = None
        self.thumb.layout.display = "none"
        self.thumb.value = b""
        self.clear_button.layout.display = "none"
        self.error.value = ""
        self.path.unobserve(self._from_path, "value")
        self.path.value = ""
        self.path.observe(self._from_path, "value")
        self.upload.reset()
        self._render_info()
        self._on_change()

    def _render_info(self) -> None:
        if self.prepared is None:
            text = "PNG, JPEG or DICOM"
        else:
            text = html.escape(f"{self.label} — {self.prepared.describe()}")
        self.info.value = f"<div class='cxr-prep' data-slot='{self.slot}'>{text}</div>"


class StudyPanel:
    """The study form. ``study`` builds the Study; ``load_study`` fills the form from one."""

    def __init__(
        self,
        *,
        image_options: Callable[[], dict[str, Any]],
        on_change: Callable[[], None],
        max_upload_bytes: int,
        request_budget: Callable[[], int | None],
    ) -> None:
        self._on_change = on_change
        self._request_budget = request_budget
        self._loading = False
        self.slots = {
            name: ImageSlot(
                name,
                required=name == "frontal",
                image_options=image_options,
                on_change=self._changed,
                max_bytes=max_upload_bytes,
            )
            for name in ("frontal", "lateral", "prior")
        }
        self.texts = {
            name: widgets.Textarea(
                placeholder=TEXT_PLACEHOLDERS[name],
                rows=1 if name != "prior_report" else 2,
                layout=widgets.Layout(width="auto"),
            ).add_class(f"cxr-text-{name}")
            for name in TEXT_COLUMNS
        }
        for area in self.texts.values():
            area.observe(lambda _: self._update_size(), "value")
        self.sample_button = widgets.Button(
            description="Load sample study",
            icon="file-medical",
            tooltip="The NEMA chest radiograph RG1 from pydicom-data, with made-up texts",
            layout=widgets.Layout(width="auto"),
        ).add_class("cxr-load-sample")
        self.sample_button.on_click(lambda _: self.load_sample())
        self.size = widgets.HTML("")
        self.error = widgets.HTML("")
        self.study_id = ""
        text_rows = []
        for name, area in self.texts.items():
            text_rows.append(
                widgets.HTML(f"<div class='cxr-section-title'>{TEXT_LABELS[name]}</div>")
            )
            text_rows.append(area)
        self.box = widgets.VBox(
            [
                widgets.HBox(
                    [
                        widgets.HTML("<div class='cxr-section-title'>Study</div>"),
                        self.sample_button,
                    ],
                    layout=widgets.Layout(justify_content="space-between", align_items="center"),
                ),
                self.error,
                *(slot.box for slot in self.slots.values()),
                *text_rows,
                self.size,
            ],
            layout=widgets.Layout(flex="0 0 340px", width="340px"),
        ).add_class("cxr-study")
        self._update_size()

    # --- building and loading ---------------------------------------------------
    @property
    def study(self) -> Study:
        """The Study in the form; StudyError (also shown in the panel) when incomplete."""
        frontal = self.slots["frontal"]
        if frontal.source is None:
            problem = frontal._last_error
            message = (
                "frontal image: " + problem
                if problem
                else "A frontal image is required: upload one, give its path, or "
                "click Load sample study."
            )
            self.error.value = f"<div class='cxr-error'>{html.escape(message)}</div>"
            raise StudyError(message, field="frontal_image")
        self.error.value = ""
        return Study(
            frontal_image=frontal.source,
            lateral_image=self.slots["lateral"].source,
            prior_image=self.slots["prior"].source,
            study_id=self.study_id,
            **{name: area.value for name, area in self.texts.items()},
        )

    @property
    def prepared(self) -> dict[str, Any]:
        """Prepared images by request column, for what is loaded."""
        return {s.column: s.prepared for s in self.slots.values() if s.prepared is not None}

    def load_study(self, study: Study) -> None:
        """Fill the form from ``study`` (each image prepared and checked)."""
        if not isinstance(study, Study):
            raise StudyError(f"load_study() needs a Study, got {type(study).__name__}")
        self._loading = True
        try:
            for slot in self.slots.values():
                value = getattr(study, slot.column)
                if value is None:
                    slot.clear()
                else:
                    slot.upload.reset()
                    slot.set_source(value, _short_label(value))
            for name, area in self.texts.items():
                area.value = getattr(study, name)
            self.study_id = study.study_id
        finally:
            self._loading = False
        self._changed()
        failed = [s.slot for s in self.slots.values() if s._last_error]
        if failed:
            raise StudyError(
                f"could not read the {', '.join(failed)} image: {self.slots[failed[0]]._last_error}",
                field=f"{failed[0]}_image",
            )

    def load_sample(self) -> None:
        from ..samples import sample_study

        try:
            self.load_study(sample_study())
        except CxrWidgetsError as exc:
            self.error.value = f"<div class='cxr-error'>{html.escape(str(exc))}</div>"

    # --- size ----------------------------------------------------------------
    def estimate_bytes(self) -> int:
        """The request body's size for what is loaded (images as they will be sent)."""
        texts = {column: area.value for column, area in self.texts.items()}
        return request_bytes(self.prepared, texts)

    def _update_size(self) -> None:
        if not self.prepared:
            self.size.value = "<div class='cxr-request-size'>request: no image yet</div>"
            return
        n = self.estimate_bytes()
        budget = self._request_budget()
        over = budget is not None and n > budget
        note = (
            f" — over the endpoint budget of {_fmt_bytes(budget)}: remove an image or lower "
            "the image size"
            if over
            else ""
        )
        cls = "cxr-request-size cxr-over" if over else "cxr-request-size"
        self.size.value = f"<div class='{cls}'>request ≈ {_fmt_bytes(n)}{note}</div>"

    def _changed(self) -> None:
        if self._loading:
            return
        if self.slots["frontal"].source is not None:
            self.error.value = ""
        self._update_size()
        self._on_change()
