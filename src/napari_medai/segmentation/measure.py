"""Measurements of a labels array for the segmentation widget and scripts: tumour count and the largest
tumour diameter in mm. Pure NumPy/SciPy (no Qt, no torch)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import numpy as np

TUMOUR_WORDS = ("tumour", "tumor", "lesion", "cancer", "mass", "metasta")


def tumour_values(names: dict) -> list[int]:
    """Label values whose name says tumour / lesion."""
    return sorted(int(v) for v, n in names.items() if any(w in str(n).lower() for w in TUMOUR_WORDS))


def max_diameter_mm(mask: np.ndarray, spacing: Sequence[float]) -> float:
    """Largest distance between two voxel centres of ``mask`` (its maximum Feret diameter), in mm."""
    from scipy import ndimage
    from scipy.spatial import ConvexHull
    from scipy.spatial.distance import pdist

    mask = np.asarray(mask, bool)
    if not mask.any():
        return 0.0
    surface = mask & ~ndimage.binary_erosion(mask)
    points = np.argwhere(surface) * np.asarray(spacing, float)
    if len(points) == 1:
        return 0.0
    if len(points) > 200:
        try:
            points = points[ConvexHull(points).vertices]
        except Exception:  # flat or degenerate: keep every surface point, subsampled
            points = points[:: max(1, len(points) // 2000)]
    return float(pdist(points).max())


def tumour_summary(labels: np.ndarray, names: dict, spacing: Sequence[float],
                   values: Optional[list[int]] = None) -> dict:
    """Count of separate tumours (26-connected in 3-D, 8 in 2-D) and the largest one's diameter in mm."""
    from scipy import ndimage

    values = tumour_values(names) if values is None else values
    if not values:
        return {"tumour_count": None, "largest_tumour_mm": None}
    mask = np.isin(labels, values)
    components, count = ndimage.label(mask, structure=np.ones((3,) * mask.ndim, bool))
    if count == 0:
        return {"tumour_count": 0, "largest_tumour_mm": 0.0}
    sizes = np.bincount(components.ravel())[1:]
    # Every component when there are few; else the 20 largest (bounded cost with many tiny fragments).
    candidates = np.argsort(sizes)[::-1][:20] + 1
    objects = ndimage.find_objects(components)
    best = 0.0
    for c in candidates:
        box = objects[c - 1]
        best = max(best, max_diameter_mm(components[box] == c, spacing))
    return {"tumour_count": int(count), "largest_tumour_mm": round(best, 1)}
