"""Session-wide settings shared by widgets, scripts and the CLI (device, user model folder)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional


@dataclass
class Settings:
    device: str = os.environ.get("NAPARI_MEDAI_DEVICE", "auto")
    model_dir: Optional[str] = os.environ.get("NAPARI_MEDAI_MODELS") or None


_settings = Settings()


def get_settings() -> Settings:
    return _settings


def set_device(device: str) -> None:
    from .device import resolve_device

    resolve_device(device)  # refuse devices that do not exist here
    _settings.device = device


def set_model_dir(path: Optional[str]) -> None:
    from .registry import register_model_dir

    if path:
        register_model_dir(path)
    _settings.model_dir = path or None
