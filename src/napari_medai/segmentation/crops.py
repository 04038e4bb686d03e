"""Liver-centred crops of a labelled CT, to check that segmentation does not depend on the field of view.

Used by the crop tests (``tests/test_segmentation_crops.py``) and ``training/segmentation/crop_validation.py``.
Each crop is ``(ct, label, spacing, affine)`` in the volume's own array order, with the affine (array
index -> RAS mm) of the crop, so ``segment(ct, spacing=spacing, affine=affine)`` can run on it as on a
file that stored only that region. Research use only.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

CROP_KINDS = ("cube128_1.7mm", "cube160mm_native", "upper_half")


def _box(centre: np.ndarray, half: np.ndarray, shape: tuple) -> tuple:
    lo = np.clip(np.round(centre - half).astype(int), 0, None)
    hi = np.minimum(np.round(centre + half).astype(int), shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def _shift_affine(affine: np.ndarray, start: np.ndarray, step: np.ndarray) -> np.ndarray:
    """Affine of a grid whose voxel i sits at input index ``start + i * step``."""
    out = np.array(affine, dtype=float, copy=True)
    out[:3, 3] = affine[:3, :3] @ start + affine[:3, 3]
    out[:3, :3] = affine[:3, :3] * step[None, :]
    return out


def liver_centred_crop(
    ct: np.ndarray, label: np.ndarray, spacing, affine: np.ndarray, kind: str, centre: Optional[np.ndarray] = None
):
    """One crop of ``kind`` (see :data:`CROP_KINDS`) centred on the liver's centroid (label > 0).

    - ``cube128_1.7mm``: a 128-voxel cube at 1.7 mm isotropic (217.6 mm), trilinear CT / nearest label,
      limited to the scanned extent along each axis (as a data set stores a cropped, resampled scan);
    - ``cube160mm_native``: a 160 mm cube at the native spacing (limited to the volume);
    - ``upper_half``: the superior half of the slices (by the affine).
    """
    ct, label = np.asarray(ct), np.asarray(label)
    spacing = np.asarray(spacing, dtype=float)
    affine = np.asarray(affine, dtype=float)
    shape = np.array(ct.shape)
    if centre is None:
        centre = np.argwhere(label > 0).mean(0)
    if kind == "upper_half":
        up = affine[2, 0] > 0  # axis 0 runs towards superior
        n = ct.shape[0] // 2
        sl = slice(ct.shape[0] - n, ct.shape[0]) if up else slice(0, n)
        start = np.array([sl.start, 0, 0], float)
        return ct[sl].copy(), label[sl].copy(), tuple(spacing), _shift_affine(affine, start, np.ones(3))
    if kind == "cube160mm_native":
        box = _box(centre, 80.0 / spacing, tuple(shape))
        start = np.array([s.start for s in box], float)
        return ct[box].copy(), label[box].copy(), tuple(spacing), _shift_affine(affine, start, np.ones(3))
    if kind == "cube128_1.7mm":
        from scipy import ndimage

        step = 1.7 / spacing  # input voxels per output voxel
        n = np.minimum(128, np.floor((shape - 1) / step).astype(int) + 1)  # no voxel outside the scan
        start = centre - (n - 1) / 2.0 * step
        start = np.clip(start, 0, shape - 1 - (n - 1) * step)
        grid = np.meshgrid(*[start[a] + np.arange(n[a]) * step[a] for a in range(3)], indexing="ij", sparse=True)
        coords = np.broadcast_arrays(*grid)
        out_ct = ndimage.map_coordinates(ct.astype(np.float32), coords, order=1, mode="nearest")
        out_lab = ndimage.map_coordinates(label, coords, order=0, mode="nearest")
        return out_ct, out_lab.astype(label.dtype), (1.7, 1.7, 1.7), _shift_affine(affine, start, step)
    raise ValueError(f"unknown crop kind {kind!r}; use one of {CROP_KINDS}")
