"""The study form: frontal, lateral and prior images; the four texts.

Each image comes from the chunked upload control or a path on the Jupyter
server. It is prepared once, when it is loaded, with the backend's image
options (:func:`cxr_widgets.prepare_image`): problems are explained next to
the field, the thumbnail shows what the model will see, and Generate sends
exactly these prepared images (:meth:`StudyPanel.encoded`). Images are
prepared again only when the backend's image options change.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import ipywidgets as widgets

from ..contract import EncodedStudy, request_size
from ..errors import CxrWidgetsError, StudyError
from ..study import IMAGE_COLUMNS, TEXT_COLUMNS, Study, describe_source
from .parts import RunStatus, SlotInfo, Thumb
from .upload import ChunkedUpload
from .viewer import display_jpeg

THUMB_SIDE = 76
SLOTS: tuple[str, ...] = tuple(column.removesuffix("_image") for column in IMAGE_COLUMNS)
SLOT_LABELS = {"frontal": "Frontal", "lateral": "Lateral", "prior": "Prior"}
TEXT_LABELS = {
    "indication": "Indication",
    "technique": "Technique",
    "comparison": "Comparison",
    "prior_report": "Prior report",
}
TEXT_PLACEHOLDERS = {
    "indication": "e.g. Cough for two weeks.",
    "technique": "e.g. PA and lateral views.",
    "comparison": 'e.g. Prior from 2024; empty sends "None"',
    "prior_report": "The prior study's findings, if any.",
}


def _short_label(source: Any) -> str:
    """A file's name (not its folder) or the source's short description."""
    if isinstance(source, (str, os.PathLike)):
        return os.path.basename(os.fspath(source)) or os.fspath(source)
    return describe_source(source)


def encode_prepared(study: Study, images: Mapping[str, Any]) -> EncodedStudy:
    """``study`` as it travels, from images already prepared (no image is prepared again).

    The row follows :attr:`Study.columns`, as :func:`cxr_widgets.contract.encode_study` lays it out.
    """
    row = [
        images[column].base64 if column in IMAGE_COLUMNS else getattr(study, column)
        for column in study.columns
    ]
    used = {column: images[column] for column in study.columns if column in IMAGE_COLUMNS}
    return EncodedStudy(study=study, columns=study.columns, row=row, images=used)


@dataclass(frozen=True, eq=False)
class SlotState:
    """One image as loaded: its source, its prepared image, its label and the options used."""

    source: Any
    prepared: Any  # PreparedImage
    label: str
    options: tuple[tuple[str, Any], ...]
    thumb: bytes


@dataclass(frozen=True, eq=False)
class StudyState:
    """Everything in the form: the images (prepared) and the texts. Restorable as it was."""

    slots: dict[str, SlotState | None]
    texts: dict[str, str]
    study_id: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def same_as(self, other: StudyState | None) -> bool:
        """True when ``other`` holds the same sources (the same objects) and texts."""
        if other is None or self.texts != other.texts or self.study_id != other.study_id:
            return False
        for name in SLOTS:
            mine, theirs = self.slots.get(name), other.slots.get(name)
            if (mine is None) != (theirs is None):
                return False
            if mine is not None and mine.source is not theirs.source:  # type: ignore[union-attr]
                return False
        return True

    @property
    def images(self) -> dict[str, Any]:
        """Prepared images by request column."""
        return {f"{n}_image": s.prepared for n, s in self.slots.items() if s is not None}


class ImageSlot:
    """One image of the study: upload or path, thumbnail, preparation summary, error.

    A source that cannot be used changes nothing: the image loaded before
    stays, and the error (naming the file) is shown beside the field.
    """

    def __init__(
        self,
        slot: str,
        *,
        required: bool,
        image_options: Callable[[], dict[str, Any]],
        on_change: Callable[[], None],
        max_bytes: int,
        server_paths: bool = True,
    ) -> None:
        self.slot = slot
        self.server_paths = server_paths
        self.column = f"{slot}_image"
        self._image_options = image_options
        self._on_change = on_change
        self.state: SlotState | None = None
        self._last_error: str | None = None
        self.upload = ChunkedUpload(
            on_file=self._from_upload,
            slot=slot,
            label="Upload…",
            max_bytes=max_bytes,
            layout=widgets.Layout(flex="1 1 auto", min_width="0"),
        )
        self.path = widgets.Text(
            placeholder="or a server path, then Enter",
            continuous_update=False,
            layout=widgets.Layout(
                width="auto",
                flex="1 1 auto",
                min_width="0",
                display="" if server_paths else "none",
            ),
        ).add_class("cxr-path")
        self.path.observe(self._from_path, "value")
        self.clear_button = widgets.Button(
            icon="times",
            tooltip=f"Remove the {slot} image",
            layout=widgets.Layout(width="30px", display="none"),
        ).add_class("cxr-clear")
        self.clear_button.on_click(lambda _: self.clear())
        self.thumb = Thumb(
            layout=widgets.Layout(
                display="none", width=f"{THUMB_SIDE}px", flex=f"0 0 {THUMB_SIDE}px"
            )
        )
        self.thumb.add_class("cxr-thumb")
        required_mark = " <span class='cxr-required'>(required)</span>" if required else ""
        title = widgets.HTML(
            f"<span class='cxr-slot-name'>{SLOT_LABELS[slot]}</span>{required_mark}"
        )
        self.info = SlotInfo(slot=slot)
        # Without server paths (hosted apps) the clear button joins the upload's row.
        head = [title, self.upload] + ([] if server_paths else [self.clear_button])
        right = widgets.VBox(
            [
                widgets.HBox(
                    head, layout=widgets.Layout(align_items="center", flex_flow="row wrap")
                ),
                *([widgets.HBox([self.path, self.clear_button])] if server_paths else []),
                self.info,
            ],
            layout=widgets.Layout(flex="1 1 auto", min_width="0"),
        )
        self.box = widgets.HBox(
            [self.thumb, right], layout=widgets.Layout(align_items="flex-start", grid_gap="8px")
        ).add_class("cxr-slot")

    # --- what is loaded ------------------------------------------------------
    @property
    def source(self) -> Any:
        return None if self.state is None else self.state.source

    @property
    def prepared(self) -> Any:
        return None if self.state is None else self.state.prepared

    @property
    def label(self) -> str:
        return "" if self.state is None else self.state.label

    # --- sources ------------------------------------------------------------
    def _from_upload(self, name: str, data: bytes) -> None:
        if not self.set_source(data, name, name=name):
            raise StudyError(self._last_error or "not usable")
        self._set_path_quietly("")

    def _from_path(self, change: dict[str, Any]) -> None:
        text = change["new"].strip()
        if text and not self.server_paths:  # turned off for hosted apps: the page cannot ask
            self._set_path_quietly("")
            self.info.error = "Reading files on the server is turned off here: upload the image."
            return
        if text and self.set_source(os.path.expanduser(text), _short_label(text)):
            self.upload.reset()

    def _set_path_quietly(self, value: str) -> None:
        self.path.unobserve(self._from_path, "value")
        self.path.value = value
        self.path.observe(self._from_path, "value")

    def _options(self) -> tuple[tuple[str, Any], ...]:
        return tuple(sorted(self._image_options().items()))

    def set_source(self, source: Any, label: str | None = None, *, name: str | None = None) -> bool:
        """Prepare ``source`` and show it; on failure keep what was there and say why.

        ``name`` (a file name) is what error messages call the source.
        """
        from ..images import prepare_image

        label = label or describe_source(source)
        options = self._options()
        try:
            prepared = prepare_image(source, name=name or self.column, **dict(options))
        except (CxrWidgetsError, OSError, ValueError) as exc:
            self._last_error = str(exc)
            self.info.error = self._last_error
            return False
        data, _, _ = display_jpeg(prepared.image, THUMB_SIDE * 2)
        self.restore(SlotState(source, prepared, label, options, data))
        self._on_change()
        return True

    def restore(self, state: SlotState | None) -> None:
        """Show ``state`` as it was prepared (no image is read or prepared again)."""
        self.state = state
        self._last_error = None
        with self.info.hold_sync():
            self.info.error = ""
            self.info.label = "" if state is None else state.label
            self.info.summary = "" if state is None else state.prepared.describe()
        if state is None:
            self.thumb.layout.display = "none"
            self.thumb.image = b""
            self.thumb.alt = ""
            self.clear_button.layout.display = "none"
        else:
            with self.thumb.hold_sync():
                self.thumb.image = state.thumb
                self.thumb.alt = (
                    f"{SLOT_LABELS[self.slot]} image as it will be sent ({state.label})"
                )
            self.thumb.layout.display = ""
            self.clear_button.layout.display = ""

    def reprepare(self) -> bool:
        """Prepare the source again if the image options changed since; True if it was."""
        state = self.state
        if state is None or state.options == self._options():
            return False
        return self.set_source(state.source, state.label)

    def clear(self) -> None:
        """Remove this image."""
        self.restore(None)
        self._set_path_quietly("")
        self.upload.reset()
        self._on_change()


class StudyPanel:
    """The study form. ``study`` builds the Study; ``load_study`` fills the form from one.

    Problems that stop a generation are shown in ``status`` (beside Generate).
    """

    def __init__(
        self,
        *,
        image_options: Callable[[], dict[str, Any]],
        on_change: Callable[[], None],
        max_upload_bytes: int,
        status: RunStatus,
        server_paths: bool = True,
    ) -> None:
        self._on_change = on_change
        self.status = status
        self._loading = False
        self.slots = {
            name: ImageSlot(
                name,
                required=name == "frontal",
                image_options=image_options,
                on_change=self._changed,
                max_bytes=max_upload_bytes,
                server_paths=server_paths,
            )
            for name in SLOTS
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
            area.observe(lambda _: self.update_size(), "value")
        self.sample_button = widgets.Button(
            description="Load sample study",
            icon="file-medical",
            tooltip="The NEMA chest radiograph RG1 from pydicom-data, with made-up texts",
            layout=widgets.Layout(width="auto"),
        ).add_class("cxr-load-sample")
        self.sample_button.on_click(lambda _: self.load_sample())
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
                *(slot.box for slot in self.slots.values()),
                *text_rows,
            ],
            layout=widgets.Layout(flex="1 1 300px", max_width="380px", min_width="0"),
        ).add_class("cxr-study")
        self.update_size()

    # --- building and loading ---------------------------------------------------
    @property
    def study(self) -> Study:
        """The Study in the form; StudyError (also shown beside Generate) when incomplete."""
        frontal = self.slots["frontal"]
        if frontal.source is None:
            problem = frontal._last_error
            message = (
                "the frontal image could not be used: " + problem
                if problem
                else "A frontal image is required: upload one, give its path, or "
                "click Load sample study."
            )
            self.status.show_error("Cannot generate yet.", message)
            raise StudyError(message, field="frontal_image")
        for slot in self.slots.values():
            if slot.state is not None and slot.state.options != slot._options():
                message = (
                    f"the {slot.slot} image could not be prepared with this endpoint's image "
                    f"options: {slot._last_error or 'prepare it again'}"
                )
                self.status.show_error("Cannot generate yet.", message)
                raise StudyError(message, field=slot.column)
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

    def encoded(self) -> EncodedStudy:
        """The study as it will be sent, from the images prepared when they were loaded."""
        return encode_prepared(self.study, self.prepared)

    def snapshot(self) -> StudyState:
        """The form as it is now (to restore later with :meth:`restore`)."""
        return StudyState(
            slots={name: slot.state for name, slot in self.slots.items()},
            texts={name: area.value for name, area in self.texts.items()},
            study_id=self.study_id,
        )

    def restore(self, state: StudyState) -> None:
        """Put ``state`` back in the form, as it was (nothing is prepared again)."""
        self._loading = True
        try:
            for name, slot in self.slots.items():
                slot.restore(state.slots.get(name))
                slot._set_path_quietly("")
                slot.upload.reset()
            for name, area in self.texts.items():
                area.value = state.texts.get(name, "")
            self.study_id = state.study_id
        finally:
            self._loading = False
        for slot in self.slots.values():
            slot.reprepare()  # only if the backend's image options changed meanwhile
        self.update_size()

    def load_study(self, study: Study) -> None:
        """Fill the form from ``study`` (each image prepared and checked).

        When an image cannot be read, the form keeps what it had and StudyError says why.
        """
        if not isinstance(study, Study):
            raise StudyError(f"load_study() needs a Study, got {type(study).__name__}")
        before = self.snapshot()
        self._loading = True
        failed: list[ImageSlot] = []
        try:
            for slot in self.slots.values():
                value = getattr(study, slot.column)
                if value is None:
                    slot.restore(None)
                elif not slot.set_source(value, _short_label(value)):
                    failed.append(slot)
                slot._set_path_quietly("")
                slot.upload.reset()
        finally:
            self._loading = False
        if failed:
            errors = {s.slot: s._last_error for s in failed}
            self.restore(before)  # all or nothing: the form stays as it was
            for slot in failed:
                slot.info.error = errors[slot.slot] or ""
                slot._last_error = errors[slot.slot]
            first = failed[0]
            raise StudyError(
                f"could not read the {', '.join(errors)} image: {errors[first.slot]}",
                field=first.column,
            )
        self._loading = True
        try:
            for name, area in self.texts.items():
                value = getattr(study, name)
                if name == "comparison" and value == getattr(study, "empty_comparison", None):
                    value = ""  # what an empty comparison is sent as, not something typed
                area.value = value
            self.study_id = study.study_id
        finally:
            self._loading = False
        self._changed()

    def load_sample(self) -> None:
        from ..samples import sample_study

        try:
            self.load_study(sample_study())
        except CxrWidgetsError as exc:
            self.status.show_error("The sample study could not be loaded.", str(exc))

    def refresh_options(self) -> None:
        """The backend's image options changed: prepare the loaded images again if needed."""
        self._loading = True
        try:
            changed = [slot.reprepare() for slot in self.slots.values()]
        finally:
            self._loading = False
        if any(changed):
            self._changed()
        else:
            self.update_size()

    # --- size ----------------------------------------------------------------
    def request_bytes(self) -> int:
        """The exact request body for what is loaded (0 without a frontal image)."""
        frontal = self.slots["frontal"]
        if frontal.source is None:
            return 0
        study = Study(
            frontal_image=frontal.source,
            lateral_image=self.slots["lateral"].source,
            prior_image=self.slots["prior"].source,
            **{name: area.value for name, area in self.texts.items()},
        )
        return request_size([encode_prepared(study, self.prepared)])

    def update_size(self) -> None:
        if not self._loading:
            self.status.request_bytes = self.request_bytes()

    def _changed(self) -> None:
        if self._loading:
            return
        self.status.clear()
        self.update_size()
        self._on_change()
