"""The one geometry helper: array index <-> world coordinates, and napari layer kwargs.

Arrays are kept in napari axis order: ``(z, y, x)`` for volumes, ``(y, x)`` for images. A volume's
world frame for display is LPS reversed, ``(S, P, L)``, so napari shows axial slices the way radiology
viewers do (anterior up, patient's right on the left) whatever the file's voxel order. The geometry is
stored as napari's ``scale`` and ``translate`` plus an orientation matrix passed as ``affine``; the file's
RAS affine is derived from them, so there is one source of truth and a NIfTI round trip is exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

# RAS (x, y, z) -> display (S, P, L): reverse the axes and flip the first two.
_RAS_TO_DISPLAY = np.array(
    [[0.0, 0.0, 1.0], [0.0, -1.0, 0.0], [-1.0, 0.0, 0.0]]
)


@dataclass
class Geometry:
    """Voxel spacing, origin and orientation of an array in napari axis order."""

    spacing: tuple  # per spatial axis, napari order (mm for medical volumes, else pixels)
    origin: tuple  # napari ``translate``: position of voxel 0, in the orientation's frame
    orientation: np.ndarray  # ndim x ndim, columns = unit directions of the array axes in display world

    def __post_init__(self) -> None:
        self.spacing = tuple(float(s) for s in self.spacing)
        self.origin = tuple(float(o) for o in self.origin)
        self.orientation = np.asarray(self.orientation, dtype=float)
        n = len(self.spacing)
        if len(self.origin) != n or self.orientation.shape != (n, n):
            raise ValueError("spacing, origin and orientation must agree in dimension")

    # ---- construction ---------------------------------------------------------------------
    @property
    def ndim(self) -> int:
        """Number of spatial axes."""
        return len(self.spacing)

    @classmethod
    def identity(cls, ndim: int, spacing: Optional[Sequence[float]] = None) -> Geometry:
        """Axis-aligned geometry at the origin with ``spacing`` (default 1)."""
        return cls(tuple(spacing or (1.0,) * ndim), (0.0,) * ndim, np.eye(ndim))

    @classmethod
    def from_affine_ras(cls, affine: np.ndarray) -> Geometry:
        """From a 4x4 affine mapping ``(z, y, x)`` array indices to RAS millimetres."""
        affine = np.asarray(affine, dtype=float)
        linear = _RAS_TO_DISPLAY @ affine[:3, :3]
        offset = _RAS_TO_DISPLAY @ affine[:3, 3]
        spacing = np.linalg.norm(linear, axis=0)
        if np.any(spacing <= 0) or not np.all(np.isfinite(spacing)):
            raise ValueError("affine has a zero or non-finite voxel size")
        orientation = linear / spacing
        origin = np.linalg.solve(orientation, offset)
        return cls(tuple(spacing), tuple(origin), orientation)

    @classmethod
    def from_layer(cls, layer: Any) -> Geometry:
        """The geometry of a napari layer (any layer: ours or another plugin's)."""
        return cls.from_layer_state(layer.scale, layer.translate, layer.affine.affine_matrix, layer.ndim)

    @classmethod
    def from_layer_state(cls, scale: Any, translate: Any, affine: Any, ndim: int) -> Geometry:
        """The geometry from a layer's ``scale``, ``translate`` and extra ``affine`` matrix (``None``: identity),
        as a layer holds them and as napari's writers receive them in the layer's metadata."""
        matrix = np.eye(ndim + 1) if affine is None else np.asarray(affine, dtype=float)
        orientation, offset = matrix[:ndim, :ndim], matrix[:ndim, ndim]
        # Fold any translation of the layer's extra affine into the origin.
        origin = np.asarray(translate, dtype=float) + np.linalg.solve(orientation, offset)
        return cls(tuple(scale), tuple(origin), orientation)

    # ---- derived views -----------------------------------------------------------------------
    def display_affine(self) -> np.ndarray:
        """(ndim+1)^2 matrix: array index -> napari world."""
        n = self.ndim
        matrix = np.eye(n + 1)
        matrix[:n, :n] = self.orientation @ np.diag(self.spacing)
        matrix[:n, n] = self.orientation @ np.asarray(self.origin)
        return matrix

    def affine_ras(self) -> np.ndarray:
        """4x4 affine: ``(z, y, x)`` array index -> RAS mm (volumes only)."""
        if self.ndim != 3:
            raise ValueError("a RAS affine exists only for 3-D geometry")
        display = self.display_affine()
        back = np.linalg.inv(_RAS_TO_DISPLAY)
        affine = np.eye(4)
        affine[:3, :3] = back @ display[:3, :3]
        affine[:3, 3] = back @ display[:3, 3]
        return affine

    def canonical_orientation(self) -> tuple[tuple, tuple]:
        """Axis permutation and flips to the radiological order; see :func:`canonical_orientation`."""
        return canonical_orientation(self.affine_ras() if self.ndim == 3 else None, self.ndim)

    def layer_kwargs(self) -> dict:
        """``scale``, ``translate`` and (if not identity) ``affine`` for ``viewer.add_*``."""
        kwargs: dict[str, Any] = {"scale": self.spacing, "translate": self.origin}
        if not np.allclose(self.orientation, np.eye(self.ndim)):
            affine = np.eye(self.ndim + 1)
            affine[: self.ndim, : self.ndim] = self.orientation
            kwargs["affine"] = affine
        return kwargs

    def slice(self, axis: int = 0, index: int = 0) -> Geometry:
        """The 2-D geometry of one slice along ``axis`` (orientation kept for the remaining axes)."""
        keep = [a for a in range(self.ndim) if a != axis]
        origin = np.asarray(self.origin, dtype=float)
        origin[axis] += index  # in index units along the dropped axis; only the kept axes are used
        return Geometry(
            tuple(self.spacing[a] for a in keep),
            tuple(origin[a] for a in keep),
            self.orientation[np.ix_(keep, keep)],
        )

    def to_dict(self) -> dict:
        """JSON-ready spacing, origin and orientation."""
        record = {
            "spacing": list(self.spacing),
            "origin": list(self.origin),
            "orientation": self.orientation.tolist(),
            "axis_order": "zyx" if self.ndim == 3 else "yx",
        }
        if self.ndim == 3:
            record["affine_ras"] = self.affine_ras().tolist()
        return record

    @classmethod
    def from_dict(cls, record: dict) -> Geometry:
        """Inverse of :meth:`to_dict`."""
        return cls(tuple(record["spacing"]), tuple(record["origin"]), np.asarray(record["orientation"]))

    def matches(self, other: Geometry, atol: float = 1e-4) -> bool:
        """Whether ``other`` puts every voxel at the same world position (within ``atol``)."""
        return (
            self.ndim == other.ndim
            and np.allclose(self.spacing, other.spacing, atol=atol)
            and np.allclose(self.display_affine(), other.display_affine(), atol=atol)
        )


# ------------------------------------------------------------------------------------ orientation
def canonical_orientation(affine: Optional[np.ndarray], ndim: int) -> tuple[tuple, tuple]:
    """Axis permutation and flips that bring a (z, y, x) array to radiological order.

    Canonical: axis 0 towards superior, axis 1 (rows) towards posterior, axis 2 (columns) towards the
    patient's left (napari's display frame, the way the LiTS training slices are stored). ``affine``
    maps array indices (napari order) to RAS mm. Without an affine, or for 2-D input, or for oblique
    volumes whose axes are not near the anatomical ones, the array is taken as already canonical.
    """
    if affine is None or ndim != 3:
        return tuple(range(ndim)), ()
    a = np.asarray(affine, dtype=float)[:3, :3]
    dominant = [int(np.argmax(np.abs(a[:, i]))) for i in range(3)]  # world axis of each array axis
    if sorted(dominant) != [0, 1, 2]:
        return (0, 1, 2), ()
    perm = tuple(dominant.index(w) for w in (2, 1, 0))  # new axis k <- array axis perm[k]
    flips = []
    if a[2, perm[0]] < 0:
        flips.append(0)
    if a[1, perm[1]] > 0:  # rows must run anterior -> posterior (RAS y decreasing)
        flips.append(1)
    if a[0, perm[2]] > 0:  # columns must run right -> left (RAS x decreasing)
        flips.append(2)
    return perm, tuple(flips)


def to_canonical(array: np.ndarray, perm: tuple, flips: tuple) -> np.ndarray:
    """``array`` in the canonical order of :func:`canonical_orientation` (a view where possible)."""
    out = np.transpose(array, perm) if perm != tuple(range(array.ndim)) else array
    for axis in flips:
        out = np.flip(out, axis)
    return out


def reorder_with_affine(array: np.ndarray, affine: np.ndarray, perm: tuple, flips: tuple) -> tuple:
    """``(to_canonical(array, perm, flips), affine)`` with the affine (index -> RAS mm) moved along, so
    every voxel keeps its position in the world: the same image stored in another voxel order."""
    out = np.ascontiguousarray(to_canonical(array, perm, flips))
    moved = np.array(affine, dtype=float)
    moved[:3, :3] = moved[:3, list(perm)]
    for axis in flips:
        moved[:3, 3] += moved[:3, axis] * (out.shape[axis] - 1)
        moved[:3, axis] *= -1
    return out, moved


def from_canonical(array: np.ndarray, perm: tuple, flips: tuple) -> np.ndarray:
    """Undo :func:`to_canonical`: back to the source array's axis order (C-contiguous)."""
    out = array
    for axis in flips:
        out = np.flip(out, axis)
    if perm != tuple(range(array.ndim)):
        out = np.transpose(out, np.argsort(perm))
    return np.ascontiguousarray(out)
