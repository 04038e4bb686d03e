"""Put any napari-medai result into a napari viewer with the source's geometry (scripts and widgets).

>>> import napari, napari_medai as nm
>>> img = nm.load_image("ct.nii.gz")
>>> viewer = napari.Viewer()
>>> ct = nm.add_to_viewer(viewer, img)                       # the CT, with its true geometry
>>> seg = nm.segment(img.data, spacing=img.geometry.spacing, affine=img.geometry.affine_ras())
>>> labels = nm.add_to_viewer(viewer, seg, like=ct)          # named, coloured, aligned labels

The geometry comes from ``like`` (a napari layer or a :class:`~napari_medai.io.readers.LoadedImage`):
its spacing, origin and orientation, exactly as the plugin's reader sets them. Qt is never imported
here; napari is needed only for the viewer you pass in.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from .errors import MedaiError
from .io.geometry import Geometry
from .runtime.provenance import attach_provenance, make_provenance

# Colours for structures the shipped and MONAI-bundle models name; other labels get a fixed palette.
STRUCTURE_COLOURS = {
    "liver": (0.80, 0.36, 0.26, 1.0),
    "tumour": (1.0, 0.86, 0.10, 1.0),
    "tumor": (1.0, 0.86, 0.10, 1.0),
    "lesion": (1.0, 0.86, 0.10, 1.0),
    "spleen": (0.55, 0.25, 0.65, 1.0),
    "kidney": (0.30, 0.60, 0.95, 1.0),
    "pancreas": (0.95, 0.60, 0.75, 1.0),
}
_PALETTE = [(0.12, 0.47, 0.71, 1.0), (0.17, 0.63, 0.17, 1.0), (0.84, 0.15, 0.16, 1.0), (0.58, 0.40, 0.74, 1.0),
            (0.55, 0.34, 0.29, 1.0), (0.89, 0.47, 0.76, 1.0), (0.74, 0.74, 0.13, 1.0), (0.09, 0.75, 0.81, 1.0)]
HEATMAP_UNITS = "drop in the grade's probability when a 7x7-pixel block is hidden (0-1)"


# ---------------------------------------------------------------------------------------- geometry
def geometry_of(like: Any) -> Optional[Geometry]:
    """The geometry of a napari layer, a LoadedImage or a Geometry (None for None)."""
    if like is None:
        return None
    if isinstance(like, Geometry):
        return like
    if hasattr(like, "geometry") and isinstance(like.geometry, Geometry):
        return like.geometry
    if hasattr(like, "affine") and hasattr(like, "scale"):
        return Geometry.from_layer(like)
    raise MedaiError(f"like= takes a napari layer or a LoadedImage, not {type(like).__name__}")


def _name_of(like: Any) -> Optional[str]:
    if like is None:
        return None
    if hasattr(like, "layer_kwargs"):
        return like.layer_kwargs()["name"]
    return getattr(like, "name", None)


def _check_ndim(geometry: Optional[Geometry], ndim: int, what: str) -> Geometry:
    if geometry is None:
        return Geometry.identity(ndim)
    if geometry.ndim != ndim:
        raise MedaiError(
            f"the {what} is {ndim}-D but like= is {geometry.ndim}-D; pass the layer (or LoadedImage) the "
            "result was computed from"
        )
    return geometry


# ---------------------------------------------------------------------------------------- labels
def structure_colormap(names: dict):
    """A napari label colormap: background transparent, each named structure its own colour."""
    from napari.utils.colormaps import DirectLabelColormap

    colours: dict = {None: (0.0, 0.0, 0.0, 0.0), 0: (0.0, 0.0, 0.0, 0.0)}
    for i, (value, name) in enumerate(sorted(names.items())):
        key = str(name).lower()
        match = next((c for k, c in STRUCTURE_COLOURS.items() if k in key), None)
        colours[int(value)] = match or _PALETTE[i % len(_PALETTE)]
    return DirectLabelColormap(color_dict=colours)


def structure_features(names: dict, volumes_ml: Optional[dict] = None, areas_cm2: Optional[dict] = None):
    """One row per label value (``index``) with its name, and volume or area where known; napari shows
    the row of the label under the cursor in the status bar."""
    import pandas as pd

    values = [0, *sorted(int(v) for v in names)]
    table = {"index": values, "name": ["background", *[str(names[v]) for v in sorted(names)]]}
    for key, measures in (("volume_ml", volumes_ml), ("area_cm2", areas_cm2)):
        if measures:
            table[key] = [np.nan] + [float(measures.get(str(names[v]), np.nan)) for v in sorted(names)]
    return pd.DataFrame(table)


def labels_kwargs(names: dict, volumes_ml: Optional[dict] = None, areas_cm2: Optional[dict] = None) -> dict:
    """``colormap`` and ``features`` for ``viewer.add_labels`` from the model's label names."""
    names = {int(k): v for k, v in (names or {}).items()}
    if not names:
        return {}
    return {"colormap": structure_colormap(names), "features": structure_features(names, volumes_ml, areas_cm2)}


def segmentation_provenance(result, geometry: Optional[Geometry], source: Optional[str]) -> dict:
    """The provenance record of a segmentation result placed on ``source``."""
    return make_provenance(
        "segmentation", parameters=result.parameters(), device=result.device, seconds=result.seconds,
        model=result.model if hasattr(result.model, "sha256") else None, input_shape=result.labels.shape,
        geometry=geometry, source=source,
        extra={"volumes_ml": result.volumes_ml, "areas_cm2": result.areas_cm2,
               "labels": {str(k): v for k, v in result.names.items()}, "notes": list(result.notes)},
    )


# ---------------------------------------------------------------------------------------- steatosis
def roi_rectangle(roi) -> np.ndarray:
    """(x, y, w, h) in pixels -> the four (row, col) corners napari's Shapes layer takes."""
    x, y, w, h = (float(v) for v in roi)
    return np.array([[y, x], [y, x + w], [y + h, x + w], [y + h, x]])


def heatmap_kwargs(heat: np.ndarray) -> dict:
    """Display settings of a steatosis heat map: inferno, half opaque, 0 to its maximum."""
    vmax = float(np.max(heat)) if np.size(heat) and float(np.max(heat)) > 0 else 1.0
    return {"colormap": "inferno", "opacity": 0.5, "blending": "additive", "contrast_limits": (0.0, vmax)}


def show_colorbar(layer) -> None:
    """Turn on napari's colour bar for an image layer (napari >= 0.5); silently absent on older ones."""
    try:
        layer.colorbar.visible = True
    except AttributeError:
        pass


# ---------------------------------------------------------------------------------------- public
def add_to_viewer(viewer, result: Any, *, like: Any = None, kind: Optional[str] = None, **kwargs):
    """Add ``result`` to ``viewer`` with the geometry of ``like`` and return the new layer.

    ``result`` may be a :class:`LoadedImage` (added as an image with its own geometry unless ``like``
    is given), a segmentation result (a Labels layer named and coloured per structure, with volumes as
    features), a steatosis result (its heat map, with a colour bar; with an automatic ROI also the ROI
    as an editable Shapes layer, and then a list ``[heat map, ROI]`` is returned), or an array (bool and
    integer arrays become Labels, others Images; ``kind="image"`` or ``"labels"`` overrides).
    ``like`` is the napari layer or LoadedImage the result was computed from. Other keyword arguments
    go to ``viewer.add_image`` / ``add_labels`` (``name``, ``opacity``...). Provenance is stored under
    ``layer.metadata["napari_medai"]``.
    """
    geometry = geometry_of(like)
    base = _name_of(like)
    if hasattr(result, "layer_kwargs") and hasattr(result, "data"):  # LoadedImage
        params = result.layer_kwargs("labels" if kind == "labels" else "image")
        if geometry is not None:
            params.update(_check_ndim(geometry, result.geometry.ndim, "image").layer_kwargs())
        params.update(kwargs)
        add = viewer.add_labels if kind == "labels" else viewer.add_image
        return add(result.data, **params)
    if hasattr(result, "labels") and hasattr(result, "names"):  # SegmentationResult
        geometry = _check_ndim(geometry, np.ndim(result.labels), "segmentation")
        params = {"name": f"{base} segmentation" if base else "segmentation",
                  "metadata": attach_provenance({}, segmentation_provenance(result, geometry, base)),
                  **labels_kwargs(result.names, result.volumes_ml, result.areas_cm2), **geometry.layer_kwargs()}
        params.update(kwargs)
        return viewer.add_labels(result.labels, **params)
    if hasattr(result, "heatmap") and hasattr(result, "probabilities"):  # SteatosisResult
        return _add_steatosis(viewer, result, geometry, base, kwargs)
    if isinstance(result, np.ndarray) or hasattr(result, "__array__"):
        data = np.asarray(result)
        is_labels = kind == "labels" or (kind is None and (data.dtype == bool or data.dtype.kind in "iu"))
        rgb = bool(kind != "labels" and getattr(like, "rgb", False) and data.shape[-1:] == (like.data.shape[-1],))
        geometry = _check_ndim(geometry, data.ndim - (1 if rgb else 0), "array")
        params = {"name": f"{base} result" if base else None, **geometry.layer_kwargs()}
        if rgb:
            params["rgb"] = True
        params.update(kwargs)
        if is_labels:
            return viewer.add_labels(data.astype(np.uint8) if data.dtype == bool else data, **params)
        return viewer.add_image(data, **params)
    raise MedaiError(
        f"add_to_viewer cannot place a {type(result).__name__}; give an array, a LoadedImage, a segmentation "
        "or a steatosis result (retrieval hits are cases: open one with napari_medai.load_image(hit.path))"
    )


def _add_steatosis(viewer, result, geometry, base, kwargs):
    heat = np.asarray(result.heatmap)
    geometry = _check_ndim(geometry, heat.ndim, "heat map")
    record = make_provenance(
        "steatosis", parameters=result.to_dict(), device=getattr(result, "device", None),
        seconds=getattr(result, "seconds", None), input_shape=heat.shape, geometry=geometry, source=base,
        extra={"heatmap_units": HEATMAP_UNITS},
    )
    params = {"name": f"{base} steatosis heat map" if base else "steatosis heat map",
              "metadata": attach_provenance({}, record), **heatmap_kwargs(heat), **geometry.layer_kwargs()}
    params.update(kwargs)
    heat_layer = viewer.add_image(heat, **params)
    show_colorbar(heat_layer)
    if getattr(result, "roi_source", "user") != "auto" or result.roi is None or heat.ndim != 2:
        return heat_layer
    roi_layer = viewer.add_shapes(
        [roi_rectangle(result.roi)], shape_type="rectangle", edge_color="yellow", face_color="transparent",
        edge_width=2, name="liver ROI (automatic)", metadata=attach_provenance({}, record),
        **geometry.layer_kwargs(),
    )
    return [heat_layer, roi_layer]
