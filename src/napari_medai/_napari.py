"""npe2 contributions: readers, the NIfTI writer and sample data. Imports stay light."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import MedaiError

# ---------------------------------------------------------------------------------------- readers
# napari picks a reader per file pattern from its ``extension2reader`` preference; without one it asks
# (drag-and-drop, File > Open) or, for ``viewer.open(path)``, uses its builtin reader (``plugin="napari"``
# is that method's default in napari 0.5-0.9), which cannot read NIfTI or DICOM. A plugin cannot set
# that default for the user, so Settings offers it as one click (``prefer_medai_reader``).
MEDICAL_PATTERNS = ("*.nii", "*.nii.gz", "*.dcm", "*.dicom", "*.ima")
FOLDER_PATTERN = "*/"  # napari matches folders as "<path>/"
PLUGIN_NAME = "napari-medai"
_hint_shown = False


def get_reader(path: str | list[str]):
    """Return a reader for NIfTI, DICOM (file or series folder), PNG, JPEG and TIFF paths."""
    from .io.readers import can_read

    paths = [path] if isinstance(path, (str, Path)) else list(path)
    if not paths or not all(can_read(p) and (not Path(p).is_dir() or _holds_dicom(Path(p))) for p in paths):
        return None
    return read_layers


def _holds_dicom(folder: Path, look_at: int = 8) -> bool:
    """A folder is ours only when it holds DICOM files (so zarr and image-sequence folders are not)."""
    from .io.readers import DICOM_SUFFIXES, _looks_like_dicom

    try:
        files = [p for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")][:look_at]
    except OSError:
        return False
    return any(p.suffix.lower() in DICOM_SUFFIXES or _looks_like_dicom(p) for p in files)


def read_layers(path: str | list[str]) -> list[tuple]:
    from ._qt.jobs import notify_error
    from .io.readers import load_image

    paths = [path] if isinstance(path, (str, Path)) else list(path)
    layers = []
    for item in paths:
        try:
            loaded = load_image(item)
        except MedaiError as exc:
            notify_error(str(exc))
            continue
        layers.append((loaded.data, loaded.layer_kwargs(), "image"))
    if any(str(p).lower().endswith((".nii", ".nii.gz", ".dcm")) or Path(p).is_dir() for p in paths):
        first_use_hint()
    return layers


def reader_preferences() -> dict:
    """The napari file patterns that currently open with napari-medai."""
    from napari.settings import get_settings

    return {k: v for k, v in get_settings().plugins.extension2reader.items() if v == PLUGIN_NAME}


def medai_reader_preferred() -> bool:
    return set(MEDICAL_PATTERNS) <= set(reader_preferences())


def prefer_medai_reader(folders: bool = True) -> list[str]:
    """Make napari open NIfTI and DICOM (and, with ``folders``, DICOM series folders) with napari-medai
    from now on: drag-and-drop, File > Open, ``napari ct.nii.gz`` and ``viewer.open(path, plugin=None)``.
    Stored in napari's settings (Preferences > Plugins can undo it). Returns the patterns set."""
    from napari.settings import get_settings

    settings = get_settings()
    patterns = list(MEDICAL_PATTERNS) + ([FOLDER_PATTERN] if folders else [])
    mapping = dict(settings.plugins.extension2reader)
    mapping.update({pattern: PLUGIN_NAME for pattern in patterns})
    settings.plugins.extension2reader = mapping
    return patterns


def first_use_hint() -> None:
    """Once per session, say how to make NIfTI/DICOM open with napari-medai by default."""
    global _hint_shown
    if _hint_shown:
        return
    try:
        if medai_reader_preferred():
            return
    except Exception:  # no napari settings (scripts without napari)
        return
    _hint_shown = True
    from ._qt.jobs import notify_info

    notify_info("napari-medai: to open NIfTI and DICOM with their true geometry by default (drag-and-drop, "
                "File > Open), click 'Open NIfTI/DICOM with napari-medai' in Plugins > napari-medai > Settings.")


# ---------------------------------------------------------------------------------------- writer
def write_nifti(path: str, data: Any, meta: dict) -> list[str]:
    """Write an Image or Labels layer to NIfTI with its world geometry (scale, translate, affine)."""
    import numpy as np

    from .io.geometry import Geometry
    from .io.writers import save_image

    ndim = np.ndim(data) - (1 if meta.get("rgb") else 0)
    geometry = Geometry.from_layer_state(
        meta.get("scale", (1.0,) * ndim), meta.get("translate", (0.0,) * ndim), meta.get("affine"), ndim
    )
    if not str(path).lower().endswith((".nii", ".nii.gz")):
        path = f"{path}.nii.gz"
    return [str(save_image(path, np.asarray(data), geometry))]


# ---------------------------------------------------------------------------------------- samples
def _sample(path: Path, **extra) -> tuple:
    from .io.readers import load_image

    loaded = load_image(path)
    kwargs = loaded.layer_kwargs()
    kwargs.update(extra)
    return loaded.data, kwargs, "image"


def sample_bmode() -> list[tuple]:
    from .sample_data import BMODE_FRAME

    return [_sample(BMODE_FRAME, name="B-mode liver (Byra 2018, CC BY 4.0)")]


def sample_ct() -> list[tuple]:
    from .io.readers import load_image
    from .sample_data import CT_LIVER, CT_VOLUME

    data, kwargs, kind = _sample(CT_VOLUME, name="abdominal CT (TotalSegmentator)")
    liver = load_image(CT_LIVER)
    from .viewer import labels_kwargs

    liver_kwargs = liver.layer_kwargs("labels")
    liver_kwargs.update(labels_kwargs({1: "liver"}))
    liver_kwargs["name"] = "liver (TotalSegmentator model label)"
    return [(data, kwargs, kind), (liver.data.astype("uint8"), liver_kwargs, "labels")]


def sample_phantom() -> list[tuple]:
    from .io.geometry import Geometry
    from .runtime.provenance import attach_provenance
    from .sample_data.phantom import make_ct_phantom

    volume, labels, spacing = make_ct_phantom(seed=0)
    geometry = Geometry.identity(3, spacing)
    meta = attach_provenance({}, {"source": "synthetic phantom, seed 0", "geometry": geometry.to_dict()})
    image = (volume, {"name": "CT phantom", "contrast_limits": (-200, 250), "metadata": meta,
                      **geometry.layer_kwargs()}, "image")
    from .viewer import labels_kwargs

    truth = (labels, {"name": "phantom ground truth", "metadata": meta, **labels_kwargs({1: "liver", 2: "tumour"}),
                      **geometry.layer_kwargs()}, "labels")
    return [image, truth]


def sample_brain_mri() -> list[tuple]:
    from .sample_data import BRAIN_MRI, brain_mri_label

    return [_sample(path, name=f"brain MRI {brain_mri_label(path)} (figshare, CC BY 4.0)") for path in BRAIN_MRI]
