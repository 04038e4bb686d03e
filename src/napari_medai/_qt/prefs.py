"""Widget choices remembered from one napari start to the next (device, clip limit, model, library).

A small JSON file next to napari's own settings file (so ``NAPARI_CONFIG`` moves it too), or at
``$NAPARI_MEDAI_PREFS``. Tests point either at a temporary folder; nothing here touches Qt.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
FILE_NAME = "napari-medai-widgets.json"


def prefs_path() -> Path:
    explicit = os.environ.get("NAPARI_MEDAI_PREFS")
    if explicit:
        return Path(explicit)
    try:
        from napari.settings import get_settings

        config = get_settings().config_path
        if config:
            return Path(config).parent / FILE_NAME
    except Exception:  # napari missing or its settings unreadable: fall back to the user config dir
        pass
    return Path.home() / ".config" / "napari-medai" / FILE_NAME


def load_prefs() -> dict:
    path = prefs_path()
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def get_pref(key: str, default: Any = None) -> Any:
    return load_prefs().get(key, default)


def set_pref(key: str, value: Any) -> None:
    """Store one choice; a read-only or missing config folder only logs (the session still works)."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    path = prefs_path()
    data = load_prefs()
    if data.get(key) == value:
        return
    data[key] = value
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        tmp.replace(path)
    except OSError as exc:
        log.warning("could not remember %s in %s: %s", key, path, exc)
