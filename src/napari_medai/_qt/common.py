"""Small widgets every tool shares: the research-use banner and the device note."""

from __future__ import annotations

from qtpy.QtWidgets import QComboBox, QLabel

from ..runtime.provenance import RESEARCH_NOTICE


def research_banner() -> QLabel:
    label = QLabel(f"<b>{RESEARCH_NOTICE}</b>")
    label.setWordWrap(True)
    label.setStyleSheet("color: #e8a33d;")
    return label


def device_note(device: str = "auto") -> QLabel:
    """A persistent note saying which device runs the models, and when the CPU is a fallback."""
    label = QLabel()
    label.setWordWrap(True)
    refresh_device_note(label, device)
    return label


def refresh_device_note(label: QLabel, device: str = "auto") -> None:
    from ..errors import MedaiError
    from ..runtime.device import resolve_device

    try:
        choice = resolve_device(device)
    except MedaiError as exc:
        label.setText(f"Device: {exc}")
        return
    text = f"Device: {choice.name} ({choice.reason})"
    if choice.is_fallback:
        text += " - models will be slower."
    label.setText(text)


def image_layers(viewer, rgb_ok: bool = True):
    from napari.layers import Image

    return [l for l in viewer.layers if isinstance(l, Image) and (rgb_ok or not l.rgb)]


def device_combo() -> QComboBox:
    """Device choice listing only devices that exist here, preset to the Settings device."""
    from ..runtime.device import available_devices
    from ..runtime.settings import get_settings

    combo = QComboBox()
    combo.addItems(["auto", *available_devices()])
    combo.setCurrentText(get_settings().device)
    return combo
