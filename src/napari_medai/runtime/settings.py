"""Session-wide settings shared by widgets, scripts and the CLI (device, user model folder)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional


@dataclass
class Settings:
    """Process defaults of the plugin (device, extra model folder), seeded from the environment."""
    device: str = os.environ.get("NAPARI_MEDAI_DEVICE", "auto")
    model_dir: Optional[str] = os.environ.get("NAPARI_MEDAI_MODELS") or None


_settings = Settings()


def get_settings() -> Settings:
    """The current settings object (shared by the widgets and scripts)."""
    return _settings


def set_device(device: str) -> None:
    """Set the default device after checking that it exists."""
    from .device import resolve_device

    resolve_device(device)  # refuse devices that do not exist here
    _settings.device = device


def set_model_dir(path: Optional[str]) -> None:
    """Register an extra folder of model cards and remember it (None forgets the setting)."""
    from .registry import register_model_dir

    if path:
        register_model_dir(path)
    _settings.model_dir = path or None
