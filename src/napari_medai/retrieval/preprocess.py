"""Image preparation shared by the embedders, the training scripts and the library (numpy + Pillow only)."""

from __future__ import annotations

import numpy as np

from ..errors import MedaiError
from ..io import planes


def to_gray(image: np.ndarray) -> np.ndarray:
    """2-D float32 grey levels for the embedders: :func:`napari_medai.io.planes.to_gray` (RGB(A) ->
    luminance, axes of length 1 dropped). NaN or infinite values are refused, as every reader and tool does:
    turned into 0 they gave a descriptor of another image."""
    gray = planes.to_gray(image, dtype=np.float32, squeeze=True, hint="pick a slice or an ROI of the volume")
    if not np.isfinite(gray).all():
        bad = int(np.count_nonzero(~np.isfinite(gray)))
        raise MedaiError(f"the image has {bad} NaN or infinite values; fix or mask them before querying "
                         "or adding it to a library")
    return gray


def normalize(a: np.ndarray, lo_pct: float = 0.5, hi_pct: float = 99.5) -> np.ndarray:
    """Robust min-max to [0, 1] (percentiles), constant images become 0."""
    a = a.astype(np.float32, copy=False)
    finite = np.isfinite(a)
    if not finite.all():
        a = np.where(finite, a, 0.0).astype(np.float32)
    lo, hi = np.percentile(a, [lo_pct, hi_pct])
    if hi - lo < 1e-6:
        return np.zeros_like(a, dtype=np.float32)
    return np.clip((a - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def pad_square(a: np.ndarray, value: float = 0.0) -> np.ndarray:
    """``a`` centred in a square of ``value`` (returned as is when already square)."""
    h, w = a.shape
    if h == w:
        return a
    n = max(h, w)
    out = np.full((n, n), value, dtype=a.dtype)
    y0, x0 = (n - h) // 2, (n - w) // 2
    out[y0 : y0 + h, x0 : x0 + w] = a
    return out


def resize_area(a: np.ndarray, size: int) -> np.ndarray:
    """Area (box-filter) resize of a 2D float image to size x size."""
    from PIL import Image

    if a.shape == (size, size):
        return a.astype(np.float32, copy=False)
    im = Image.fromarray(a.astype(np.float32), mode="F")
    return np.asarray(im.resize((size, size), Image.BOX), dtype=np.float32)


def prepare(image: np.ndarray, size: int = 128) -> np.ndarray:
    """Grayscale -> robust [0, 1] -> pad to square -> area resize to (size, size), float32."""
    a = normalize(to_gray(image))
    return resize_area(pad_square(a), size)
