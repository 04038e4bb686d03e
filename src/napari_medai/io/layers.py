"""Reading what the user shows in a viewer: the current plane of an image layer and a drawn shape as
an ROI in the image's pixel grid. The one home of these conversions for every widget.

Duck-typed: any object with napari's layer attributes (``data``, ``multiscale``, ``rgb``,
``world_to_data``; for shapes ``data``, ``shape_type``, ``selected_data``, ``data_to_world``) works,
so this module imports neither napari nor Qt.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional, Union

import numpy as np

from ..errors import MedaiError

Roi = Union[tuple[int, int, int, int], np.ndarray]


def layer_data(layer: Any):
    """The full-resolution data of an image layer (level 0 of a multiscale pyramid)."""
    return layer.data[0] if getattr(layer, "multiscale", False) else layer.data


def plane_indices(layer: Any, world_point: Sequence[float]) -> tuple[int, ...]:
    """Indices of the leading (non-YX, non-RGB) axes of ``layer`` at ``world_point`` (the viewer's
    ``dims.point``), clipped to the data; ``()`` for a 2-D image."""
    data = layer_data(layer)
    nd = data.ndim - (1 if getattr(layer, "rgb", False) else 0)
    if nd <= 2:
        return ()
    point = np.asarray(layer.world_to_data(world_point), dtype=float)
    return tuple(int(np.clip(round(float(point[a])), 0, data.shape[a] - 1)) for a in range(nd - 2))


def current_plane(layer: Any, world_point: Sequence[float]) -> tuple[np.ndarray, tuple[int, ...]]:
    """The 2-D plane (RGB kept as the last axis) of ``layer`` at ``world_point`` and its indices."""
    index = plane_indices(layer, world_point)
    return np.asarray(layer_data(layer)[index]), index


def shape_vertices(shapes_layer: Any, image_layer: Any, which: Optional[int] = None) -> tuple[str, np.ndarray]:
    """(shape type, vertices as (row, col) in ``image_layer``'s pixel grid) of one shape: ``which``,
    else the first selected one, else the last one drawn."""
    if shapes_layer is None or len(shapes_layer.data) == 0:
        raise MedaiError("draw a rectangle (or any shape) on a Shapes layer first")
    if which is None:
        selected = sorted(getattr(shapes_layer, "selected_data", ()) or ())
        which = selected[0] if selected else len(shapes_layer.data) - 1
    verts = np.asarray(shapes_layer.data[which], dtype=float)
    world = np.array([shapes_layer.data_to_world(v) for v in verts])
    pix = np.array([image_layer.world_to_data(w) for w in world], dtype=float)
    return str(shapes_layer.shape_type[which]), pix[:, -2:]


def shape_to_roi(shapes_layer: Any, image_layer: Any, frame_shape: Optional[tuple] = None,
                 which: Optional[int] = None) -> Roi:
    """A drawn shape as an ROI of the image: ``(x, y, w, h)`` in pixels (x = column; the bounding box
    of the shape, floor / ceil to whole pixels) for a rectangle, or when ``frame_shape`` is None;
    a boolean mask of ``frame_shape`` for an ellipse or polygon."""
    kind, rc = shape_vertices(shapes_layer, image_layer, which)
    # Snap float noise from the world <-> data round trip (28.000000001 on a scaled layer) to the whole
    # pixel, so floor / ceil below never grow a drawn 28-px side to 29 px.
    rc = np.where(np.abs(rc - np.round(rc)) < 1e-6, np.round(rc), rc)
    if kind == "rectangle" or frame_shape is None:
        r0, c0 = np.floor(rc.min(axis=0)).astype(int)
        r1, c1 = np.ceil(rc.max(axis=0)).astype(int)
        return int(c0), int(r0), max(1, int(c1 - c0)), max(1, int(r1 - r0))
    from skimage.draw import ellipse, polygon2mask

    if kind == "ellipse":
        mask = np.zeros(frame_shape, bool)
        center = rc.mean(axis=0)
        radius = (rc.max(axis=0) - rc.min(axis=0)) / 2
        rr, cc = ellipse(center[0], center[1], max(radius[0], 1), max(radius[1], 1), shape=frame_shape)
        mask[rr, cc] = True
        return mask
    return polygon2mask(frame_shape, rc)
