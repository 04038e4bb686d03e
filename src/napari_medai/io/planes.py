"""Plain 2-D images and ROIs: the one home for converting pictures to grey levels and for reading
``X,Y,W,H`` rectangles (x = column, y = row, in pixels), shared by grading, retrieval and the CLI."""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from ..errors import MedaiError

#: ITU-R BT.601 luma weights; they sum to 1, so a grey picture stored as RGB keeps its grey levels
LUMA = np.array([0.299, 0.587, 0.114])


def to_gray(image: Any, *, what: str = "image", dtype=np.float64, squeeze: bool = False,
            hint: str = "pick a 2-D plane of the stack") -> np.ndarray:
    """2-D grey levels of a grey or RGB(A) picture ``(y, x[, c])`` as ``dtype`` (a new array).

    RGB(A) becomes luminance (:data:`LUMA`, alpha ignored). One plane stored with a length-1 first or last
    axis (a 2-D NIfTI reads as ``(1, y, x)``, some loaders give ``(y, x, 1)``) is that plane. ``squeeze``
    drops every axis of length 1 first. Anything else that is not 2-D is refused with a :class:`MedaiError`
    ending in ``hint``.
    """
    if image is None:
        raise MedaiError(f"no {what} given; pass a 2-D image (or an RGB picture)")
    arr = np.asarray(image)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if arr.dtype.kind not in "iuf":
        raise MedaiError(f"the {what} has dtype {arr.dtype}; pass a numeric 2-D image")
    if squeeze:
        arr = np.squeeze(arr)
    elif arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    elif arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[-1] in (3, 4) and arr.shape[0] > 4:
        arr = arr[..., :3].astype(np.float64) @ LUMA
    elif arr.ndim != 2:
        raise MedaiError(f"the {what} is {arr.ndim}-D {tuple(np.asarray(image).shape)}; {hint}")
    return np.array(arr, dtype=dtype)


def parse_xywh(roi: Any, what: str = "ROI") -> tuple[float, float, float, float]:
    """``"X,Y,W,H"`` (commas, semicolons or spaces) or four numbers -> four finite floats with W, H > 0."""
    if isinstance(roi, str):
        parts = [p for p in re.split(r"[,;\s]+", roi.strip()) if p]
    else:
        parts = list(np.asarray(roi, dtype=object).ravel())
    if len(parts) != 4:
        raise MedaiError(f"{what} must be X,Y,W,H (4 numbers in pixels, x = column); got {roi!r}")
    try:
        vals = [float(p) for p in parts]
    except (TypeError, ValueError):
        raise MedaiError(f"{what} must be 4 numbers X,Y,W,H in pixels; got {roi!r}") from None
    if not all(np.isfinite(vals)):
        raise MedaiError(f"{what} contains NaN or infinity; give finite X,Y,W,H in pixels")
    x, y, w, h = vals
    if w <= 0 or h <= 0:
        raise MedaiError(f"{what} {x:g},{y:g},{w:g},{h:g} is empty (width and height must be > 0)")
    return x, y, w, h
