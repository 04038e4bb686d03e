"""npe2 contributions: readers, the NIfTI writer and sample data. Imports stay light."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List

from .errors import MedaiError


# ---------------------------------------------------------------------------------------- readers
def get_reader(path: "str | list[str]"):
    """Return a reader for NIfTI, DICOM (file or series folder), PNG, JPEG and TIFF paths."""
    from .io.readers import can_read

    paths = [path] if isinstance(path, (str, Path)) else list(path)
    if not paths or not all(can_read(p) for p in paths):
        return None
    return read_layers


def read_layers(path: "str | list[str]") -> List[tuple]:
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
    return layers


# ---------------------------------------------------------------------------------------- writer
def write_nifti(path: str, data: Any, meta: dict) -> List[str]:
    """Write an Image or Labels layer to NIfTI with its world geometry (scale, translate, affine)."""
    import numpy as np

    from .io.geometry import Geometry
    from .io.writers import save_image

    ndim = np.ndim(data) - (1 if meta.get("rgb") else 0)
    affine = np.asarray(meta.get("affine", np.eye(ndim + 1)), dtype=float)
    orientation = affine[:ndim, :ndim]
    origin = np.asarray(meta.get("translate", (0.0,) * ndim), dtype=float) + np.linalg.solve(orientation, affine[:ndim, ndim])
    geometry = Geometry(tuple(meta.get("scale", (1.0,) * ndim)), tuple(origin), orientation)
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


def sample_bmode() -> List[tuple]:
    from .sample_data import BMODE_FRAME

    return [_sample(BMODE_FRAME, name="B-mode liver (Byra 2018, CC BY 4.0)")]


def sample_ct() -> List[tuple]:
    from .io.readers import load_image
    from .sample_data import CT_LIVER, CT_VOLUME

    data, kwargs, kind = _sample(CT_VOLUME, name="abdominal CT (TotalSegmentator)")
    liver = load_image(CT_LIVER)
    liver_kwargs = liver.layer_kwargs()
    liver_kwargs.pop("rgb", None)
    liver_kwargs.pop("contrast_limits", None)
    liver_kwargs["name"] = "liver (TotalSegmentator model label)"
    return [(data, kwargs, kind), (liver.data.astype("uint8"), liver_kwargs, "labels")]


def sample_phantom() -> List[tuple]:
    from .io.geometry import Geometry
    from .runtime.provenance import attach_provenance
    from .sample_data.phantom import make_ct_phantom

    volume, labels, spacing = make_ct_phantom(seed=0)
    geometry = Geometry.identity(3, spacing)
    meta = attach_provenance({}, {"source": "synthetic phantom, seed 0", "geometry": geometry.to_dict()})
    image = (volume, {"name": "CT phantom", "contrast_limits": (-200, 250), "metadata": meta, **geometry.layer_kwargs()}, "image")
    truth = (labels, {"name": "phantom ground truth", "metadata": meta, **geometry.layer_kwargs()}, "labels")
    return [image, truth]


def sample_brain_mri() -> List[tuple]:
    from .sample_data import BRAIN_MRI, brain_mri_label

    return [_sample(path, name=f"brain MRI {brain_mri_label(path)} (figshare, CC BY 4.0)") for path in BRAIN_MRI]
