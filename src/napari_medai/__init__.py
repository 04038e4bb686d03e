"""napari-medai: medical-imaging AI in napari and in scripts. Research use only, not a medical device.

The top-level API imports lazily, so ``import napari_medai`` (and napari start-up) stays fast:

- :func:`clahe` - contrast-limited adaptive histogram equalisation (2-D, per-slice, 3-D)
- :func:`grade_steatosis` - fatty-liver grade from B-mode ultrasound
- :func:`segment` - liver and tumour segmentation of CT
- :class:`CaseLibrary` - nearest-case retrieval
- :func:`add_to_viewer` - put any result in a napari viewer with the source's geometry
"""

from __future__ import annotations

from . import _lazy
from ._version import __version__
from .errors import CancelledError, MedaiError

_LAZY = {
    "clahe": ("napari_medai.enhance.core", "clahe"),
    "grade_steatosis": ("napari_medai.steatosis.core", "grade_steatosis"),
    "segment": ("napari_medai.segmentation.core", "segment"),
    "CaseLibrary": ("napari_medai.retrieval.library", "CaseLibrary"),
    "load_image": ("napari_medai.io.readers", "load_image"),
    "save_image": ("napari_medai.io.writers", "save_image"),
    "resolve_device": ("napari_medai.runtime.device", "resolve_device"),
    "add_to_viewer": ("napari_medai.viewer", "add_to_viewer"),
}

__all__ = ["__version__", "MedaiError", "CancelledError", *_LAZY]  # noqa: PLE0604 - the names of _LAZY


def _submodule_attributes(table: dict) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, (module_name, attribute) in table.items():
        assert name == attribute, name
        out.setdefault(module_name.removeprefix(__name__ + "."), []).append(name)
    return out


__getattr__, __dir__, _ = _lazy.attach(__name__, _submodule_attributes(_LAZY))
