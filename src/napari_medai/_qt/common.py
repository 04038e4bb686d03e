"""What every tool widget shares: the magicgui base class, the research-use banner, the docs link, the
device box and note, layer boxes that follow the selected layer, and Qt panels embedded in a container.

Each tool is a magicgui :class:`~magicgui.widgets.Container`, so a script can set values and run it::

    w = viewer.window.add_plugin_dock_widget("napari-medai", "CLAHE enhancement")[1]
    w.clip_limit.value = 0.02
    layer = w(block=True)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Optional

from magicgui.widgets import ComboBox, Container, Label, PushButton, Widget

from ..runtime.provenance import METADATA_KEY, RESEARCH_NOTICE
from .prefs import get_pref, set_pref

DOCS_DIR = Path(__file__).resolve().parents[3] / "docs"


# ---------------------------------------------------------------------------------------- pieces
def _wrap(label: Label) -> Label:
    """Word-wrap a label and let it take the dock's full width (else Qt wraps it at a third of it)."""
    from qtpy.QtWidgets import QSizePolicy

    label.native.setWordWrap(True)
    label.native.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Preferred)
    return label


def banner() -> Label:
    label = _wrap(Label(name="notice", value=f"<b>{RESEARCH_NOTICE}</b>",
                        tooltip="Results are for research, not diagnosis"))
    label.native.setStyleSheet("color: #e8a33d;")
    return label


def docs_url(page: str) -> str:
    """Link to a docs page: the file in a source checkout, else its path in the project."""
    path = DOCS_DIR / page
    return path.as_uri() if path.is_file() else f"docs/{page}"


def docs_link(page: str, title: str = "Help") -> Label:
    url = docs_url(page)
    label = Label(name="help", value=f'<a href="{url}">{title}: docs/{page}</a>', tooltip=f"Open {url}")
    label.native.setOpenExternalLinks(True)
    return label


class _Text(Label):
    """A label that takes no room in the dock while it is empty."""

    @Label.value.setter
    def value(self, value) -> None:
        Label.value.fset(self, value)
        if not value:
            self.native.setHidden(True)
        elif self.native.parent() is not None:  # never show() a parentless label: it would open a window
            self.native.setHidden(False)


def text(name: str, value: str = "", tooltip: str = "") -> Label:
    """A read-only, word-wrapped line of results or notes."""
    return _wrap(_Text(name=name, value=value, tooltip=tooltip or None))


def embed(qwidget, name: str) -> Container:
    """Put a plain Qt widget (job panel, gallery) inside a magicgui container."""
    holder = Container(name=name, labels=False)
    holder.margins = (0, 0, 0, 0)
    holder.native.layout().addWidget(qwidget)
    return holder


def device_choices() -> list[str]:
    from ..runtime.device import available_devices

    return ["auto", *available_devices()]


def device_box() -> ComboBox:
    """Device choice listing only devices that exist here, preset to the remembered device."""
    from ..runtime.settings import get_settings

    choices = device_choices()
    value = get_pref("device", get_settings().device)
    box = ComboBox(name="device", label="device", choices=choices, value=value if value in choices else "auto",
                   tooltip="where models run: auto picks CUDA, then Apple MPS, then the CPU; only devices "
                           "that exist on this machine are listed")
    box.changed.connect(lambda v: set_pref("device", v))
    return box


def device_note_text(device: str = "auto") -> str:
    from ..errors import MedaiError
    from ..runtime.device import resolve_device

    try:
        choice = resolve_device(device)
    except MedaiError as exc:
        return f"Device: {exc}"
    note = f"Device: {choice.name} ({choice.reason})"
    return note + (" - models will be slower." if choice.is_fallback else "")


def device_note(box: Optional[ComboBox] = None) -> Label:
    """A persistent note saying which device runs the models, and when the CPU is a fallback."""
    label = text("device_note", device_note_text(box.value if box else "auto"))
    if box is not None:
        box.changed.connect(lambda v: setattr(label, "value", device_note_text(v)))
    return label


def registered_models(task: str, default: Optional[str] = None) -> list[str]:
    """Names of the registered models for ``task``, ``default`` first."""
    from ..errors import MedaiError
    from ..runtime.registry import list_models

    try:
        names = [c.name for c in list_models(task=task)]
    except MedaiError:
        names = []
    first = [default] if default else []
    return first + [n for n in names if n != default]


def image_layers(viewer, rgb_ok: bool = True):
    from napari.layers import Image

    return [layer for layer in viewer.layers if isinstance(layer, Image) and (rgb_ok or not layer.rgb)]


def made_by(layer, tool: str) -> bool:
    record = (getattr(layer, "metadata", None) or {}).get(METADATA_KEY) or {}
    return record.get("tool") == tool


# ---------------------------------------------------------------------------------------- base class
class ToolWidget(Container):
    """A tool's magicgui container: scrolls when the dock is short; ``w()`` runs the tool.

    Subclasses implement :meth:`run` and register their layer boxes with :meth:`layer_box`.
    """

    tool = ""  # provenance tool name: layers this widget made are not followed as inputs

    def __init__(self, napari_viewer, widgets: Iterable[Widget], **kwargs):
        super().__init__(widgets=list(widgets), labels=False, scrollable=True, **kwargs)
        self.native.widget().layout().addStretch(1)  # controls stay at the top of a tall dock
        self.viewer = napari_viewer
        self._boxes = [w for w in _walk(self) if getattr(w, "_medai_fits", None) is not None]
        events = napari_viewer.layers.events
        events.inserted.connect(self._refresh)
        events.removed.connect(self._refresh)
        napari_viewer.layers.selection.events.active.connect(self._follow_active)
        if self.tool != "settings":
            from .._napari import first_use_hint

            first_use_hint()  # once per session: how to make NIfTI/DICOM open with this plugin

    @property
    def native(self):
        # napari docks ``widget.native``; for a scrollable container that is the inner widget, which
        # would drop the scroll area. Hand napari the scroll area so a short dock scrolls.
        return self.root_native_widget

    # ---- scripting -----------------------------------------------------------------------------
    def __getattr__(self, name: str):
        # ``w.clip_limit`` finds a control inside nested containers too.
        if name.startswith("_"):
            return object.__getattribute__(self, name)
        found = _find(self, name)
        if found is not None:
            return found
        return object.__getattribute__(self, name)

    def __call__(self, *, block: Optional[bool] = None):
        """Run the tool as its main button does. ``block=True`` runs in the foreground and returns the
        new layer (scripts); otherwise it runs in the background like a click and returns the worker."""
        jobs = getattr(self, "jobs", None)
        if jobs is None:
            return self.run()
        previous, jobs.force_sync = jobs.force_sync, block
        try:
            return self.run()
        finally:
            jobs.force_sync = previous

    def run(self):  # pragma: no cover - every tool overrides
        raise NotImplementedError

    def _refresh(self, *_):
        self.reset_choices()

    def _follow_active(self, event=None):
        active = self.viewer.layers.selection.active
        if active is None or (self.tool and made_by(active, self.tool)):
            return
        for box in self._boxes:
            if box._medai_fits(active):
                box.reset_choices()
                if active in [c for c in box.choices]:
                    box.value = active


def layer_box(viewer, name: str, label: str, fits: Callable[[Any], bool], *, tooltip: str,
              optional: bool = False, follow: bool = True) -> ComboBox:
    """A layer box listing the viewer's layers that ``fits``; with ``follow`` it tracks the selected layer."""

    def choices(_widget=None):
        return [(layer.name, layer) for layer in viewer.layers if fits(layer)]

    box = ComboBox(name=name, label=label, choices=choices, nullable=optional, tooltip=tooltip)
    box._medai_fits = fits if follow else None
    active = viewer.layers.selection.active
    if follow and active is not None and fits(active):
        box.value = active
    return box


def _walk(container: Container):
    for child in container._list:
        yield child
        if isinstance(child, Container):
            yield from _walk(child)


def _find(container: Container, name: str):
    found = container._list.get_by_name(name)
    if found is not None:
        return found
    for child in container._list:
        if isinstance(child, Container):
            found = _find(child, name)
            if found is not None:
                return found
    return None


def form(name: str, widgets: Iterable[Widget]) -> Container:
    """Labelled controls, one per row."""
    box = Container(name=name, widgets=list(widgets), labels=True)
    box.margins = (0, 0, 0, 0)
    return box


def row(name: str, widgets: Iterable[Widget]) -> Container:
    box = Container(name=name, widgets=list(widgets), labels=False, layout="horizontal")
    box.margins = (0, 0, 0, 0)
    return box


def file_edit(name: str, label: str, mode: str, tooltip: str, value: str = "", filter: Optional[str] = None):
    """Magicgui's FileEdit with the tooltip on its line edit and button too."""
    from magicgui.widgets import FileEdit

    edit = FileEdit(name=name, label=label, mode=mode, value=value, filter=filter, tooltip=tooltip)
    edit.line_edit.tooltip = tooltip
    edit.choose_btn.tooltip = "browse for it"
    return edit


def button(name: str, text_: str, tooltip: str, callback: Callable) -> PushButton:
    b = PushButton(name=name, text=text_, tooltip=tooltip)
    b.changed.connect(lambda *_: callback())
    return b


def remember(widget, key: str) -> None:
    """Restore ``widget.value`` from the remembered choices and remember every change."""
    stored = get_pref(key)
    if stored is not None:
        try:
            widget.value = stored
        except Exception:  # a stored value that no longer fits (a removed model): keep the default
            pass
    widget.changed.connect(lambda v: set_pref(key, v))
