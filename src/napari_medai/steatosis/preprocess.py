"""Image preparation shared by training and inference (NumPy / SciPy / scikit-image; no torch).

- :func:`to_gray`: validated 2-D float64 grey levels (RGB -> luminance), refusing NaN / 3-D input.
- :func:`sector_mask`: the ultrasound sector of a full B-mode frame, without the black surround,
  burned-in text and calibration marks.
- :func:`parse_roi`: ``(x, y, w, h)`` (x = column) or a boolean mask -> mask + bounding box.
- :func:`model_input`: crops -> network channels (raw grey / 255 and CLAHE of the crop).
"""

from __future__ import annotations

import numpy as np

from ..errors import MedaiError
from ..io import planes

PATCH = 28
#: the shared ROI crops were multiplied by the hepatorenal index *and* by this constant relative to the
#: grey levels of the JPEG frames (fitted on the 10 frames in ../shared/data/steatosis/frames: 1.1225 +- 0.001)
CROP_CALIBRATION = 1.1225


def to_gray(image, what: str = "image") -> np.ndarray:
    """Validated 2-D float64 grey levels of a B-mode frame (:func:`napari_medai.io.planes.to_gray`:
    RGB -> luminance), refusing NaN, tiny and 3-D input."""
    out = planes.to_gray(image, what=what, hint="steatosis grading takes one 2-D frame - pick a frame of the stack")
    if out.size == 0 or min(out.shape) < 4:
        raise MedaiError(f"the {what} is empty or tiny {tuple(out.shape)}; pass a B-mode frame")
    if not np.isfinite(out).all():
        raise MedaiError(f"the {what} contains NaN or infinite values; fill or mask them before grading")
    return out


def parse_roi(roi, shape, what: str = "ROI") -> tuple[np.ndarray, tuple, list]:
    """-> (boolean mask of ``shape``, bounding box (x, y, w, h) clipped to the image, warnings)."""
    warnings = []
    H, W = shape
    if isinstance(roi, np.ndarray) and roi.dtype == bool or (isinstance(roi, np.ndarray) and roi.ndim == 2):
        mask = np.asarray(roi).astype(bool)
        if mask.shape != tuple(shape):
            raise MedaiError(f"{what} mask has shape {mask.shape} but the image is {tuple(shape)}; "
                             "draw it on the same image")
        if not mask.any():
            raise MedaiError(f"{what} is empty; draw a region of at least a few pixels inside the image")
        ys, xs = np.nonzero(mask)
        bbox = (int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1))
        return mask, bbox, warnings
    x, y, w, h = planes.parse_xywh(roi, what)
    x0, y0 = int(np.floor(x)), int(np.floor(y))
    x1, y1 = int(np.ceil(x + w)), int(np.ceil(y + h))
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, W), min(y1, H)
    if cx1 <= cx0 or cy1 <= cy0:
        raise MedaiError(
            f"{what} {x:g},{y:g},{w:g},{h:g} lies outside the {W}x{H} image (x = column, y = row); draw it on the image"
        )
    if (cx0, cy0, cx1, cy1) != (x0, y0, x1, y1):
        warnings.append(f"{what} extends past the image border; clipped to {cx0},{cy0},{cx1 - cx0},{cy1 - cy0}")
    mask = np.zeros(shape, bool)
    mask[cy0:cy1, cx0:cx1] = True
    return mask, (cx0, cy0, cx1 - cx0, cy1 - cy0), warnings


def sector_mask(gray: np.ndarray) -> np.ndarray:
    """The imaged sector of a B-mode frame: largest bright-enough connected region, holes filled,
    opened to cut off burned-in text, depth ticks and calibration marks, then eroded by 3 pixels.
    Images smaller than 64 pixels on a side (crops) are taken whole."""
    from scipy import ndimage as ndi

    if min(gray.shape) < 64:
        return np.ones(gray.shape, bool)
    lo = np.percentile(gray, 1)
    hi = np.percentile(gray, 99.5)
    if hi - lo <= 0:
        return np.ones(gray.shape, bool)
    smooth = ndi.uniform_filter(gray, 9)
    m = smooth > lo + 0.04 * (hi - lo)
    m = ndi.binary_opening(m, structure=np.ones((11, 11)))
    lab, n = ndi.label(m)
    if n == 0:
        return np.ones(gray.shape, bool)
    sizes = ndi.sum(m, lab, index=np.arange(1, n + 1))
    m = lab == (1 + int(np.argmax(sizes)))
    m = ndi.binary_fill_holes(m)
    # saturated overlay pixels (text, callipers) inside the sector
    marks = ndi.binary_dilation(gray >= max(250.0, hi), iterations=2)
    m &= ~marks
    m = ndi.binary_erosion(m, iterations=3)
    if m.sum() < 0.05 * m.size:  # not a recognisable sector: use everything
        return np.ones(gray.shape, bool)
    return m


def clahe_crops(crops: np.ndarray) -> np.ndarray:
    """CLAHE of each crop on its own (the package's ``clahe``, scikit-image semantics), in [0, 1]."""
    from ..enhance import clahe

    crops = np.asarray(crops, dtype=np.float32)
    if crops.shape[0] == 0:
        return crops
    out = np.empty_like(crops)
    # a fixed intensity window keeps the grey-level scale of every crop comparable
    for i in range(crops.shape[0]):
        out[i] = clahe(crops[i], kernel_size=14, clip_limit=0.01, window=(0.0, 255.0), mode="2d", device="cpu")
    return out


def model_input(crops: np.ndarray, preprocess: str = "raw+clahe") -> np.ndarray:
    """(n, 28, 28) grey levels in 0..255 -> (n, C, 28, 28) float32 network input."""
    crops = np.clip(np.asarray(crops, dtype=np.float32), 0, 255)
    chans = []
    if "raw" in preprocess:
        chans.append(crops / 255.0)
    if "clahe" in preprocess:
        chans.append(clahe_crops(crops))
    return np.stack(chans, axis=1).astype(np.float32)


def n_channels(preprocess: str) -> int:
    """Number of network input channels for a preprocessing name (``raw``, ``clahe``, ``raw+clahe``)."""
    return int("raw" in preprocess) + int("clahe" in preprocess)


def auto_liver_patches(gray: np.ndarray, n: int = 1) -> list:
    """A liver-parenchyma guess for frames without an ROI (the .mat data set has none): the patch
    at 35 % depth of the sector, in its middle column. Weak; prefer a CSV with ROI columns."""
    m = sector_mask(gray)
    ys, xs = np.nonzero(m)
    top, bottom = ys.min(), ys.max()
    r = int(top + 0.35 * (bottom - top))
    row = np.nonzero(m[r])[0]
    c = int(np.median(row)) if row.size else gray.shape[1] // 2
    out = []
    for k in range(n):
        dx = (k - (n - 1) / 2) * PATCH
        x = int(np.clip(c - PATCH // 2 + dx, 0, gray.shape[1] - PATCH))
        y = int(np.clip(r - PATCH // 2, 0, gray.shape[0] - PATCH))
        out.append((x, y, PATCH, PATCH))
    return out
