"""Provenance records stored under ``layer.metadata["napari_medai"]``.

Each result says which tool, model (name, version, weights SHA-256), parameters, device, time and input
geometry produced it. Our key is the only one we touch, so other plugins' metadata survives.
"""

from __future__ import annotations

import datetime as _dt
import importlib
import platform
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import numpy as np

METADATA_KEY = "napari_medai"
RESEARCH_NOTICE = "Research use only - not a medical device."


def _jsonable(value: Any) -> Any:
    """Convert numpy scalars/arrays and tuples to plain JSON types."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def make_provenance(
    tool: str,
    *,
    parameters: Optional[Mapping[str, Any]] = None,
    device: Any = None,
    seconds: Optional[float] = None,
    model: Any = None,
    input_shape: Optional[tuple] = None,
    geometry: Any = None,
    source: Optional[str] = None,
    extra: Optional[Mapping[str, Any]] = None,
) -> dict:
    """Build a JSON-serialisable provenance record for one result."""
    from .._version import __version__

    record: dict[str, Any] = {
        "tool": tool,
        "package": "napari-medai",
        "package_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "parameters": _jsonable(dict(parameters or {})),
        "device": None if device is None else str(device),
        "seconds": None if seconds is None else round(float(seconds), 4),
        "input_shape": None if input_shape is None else [int(s) for s in input_shape],
        "python": platform.python_version(),
        "notice": RESEARCH_NOTICE,
    }
    if model is not None:
        record["model"] = {
            "name": getattr(model, "name", str(model)),
            "version": getattr(model, "version", None),
            "sha256": getattr(model, "sha256", None),
        }
    if geometry is not None:
        record["geometry"] = geometry.to_dict() if hasattr(geometry, "to_dict") else _jsonable(geometry)
    if source is not None:
        record["source"] = str(source)
    if extra:
        record.update(_jsonable(dict(extra)))
    return record


def attach_provenance(metadata: Optional[Mapping[str, Any]], record: Mapping[str, Any]) -> dict:
    """Return a copy of ``metadata`` with ``record`` merged under our key; other keys are untouched."""
    merged = dict(metadata or {})
    ours = dict(merged.get(METADATA_KEY) or {})
    ours.update(record)
    merged[METADATA_KEY] = ours
    return merged


#: the third-party packages whose versions ``napari-medai info`` reports (import names)
INFO_PACKAGES = ("torch", "monai", "napari", "skimage", "nibabel", "pydicom", "numba", "faiss")


def package_versions(modules: Sequence[str] = INFO_PACKAGES) -> tuple[dict, dict]:
    """The one version-collection loop (``info``, ``selftest``): python, napari-medai, numpy and each of
    ``modules`` as ``{name: version string or None}``, and ``{name: exception}`` for those that did not
    import (a broken install is what the callers look for, so any exception counts)."""
    from .._version import __version__

    versions: dict = {"python": platform.python_version(), "napari-medai": __version__, "numpy": np.__version__}
    errors: dict = {}
    for module in modules:
        try:
            versions[module] = str(getattr(importlib.import_module(module), "__version__", "?"))
        except Exception as exc:  # noqa: BLE001
            versions[module] = None
            errors[module] = exc
    return versions, errors
