"""A seeded synthetic abdominal CT phantom with a liver and tumours, and its exact ground truth.

Hounsfield units follow contrast-enhanced CT: fat about -100, soft tissue about 40, liver about 60,
hypodense tumours 20-40 HU below the liver, with Gaussian noise. Labels: 1 = liver, 2 = tumour.
"""

from __future__ import annotations

import numpy as np


def _ellipsoid(grid, centre, radii):
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1.0


def make_ct_phantom(
    seed: int = 0,
    shape: tuple = (48, 128, 128),
    spacing: tuple = (3.0, 1.5, 1.5),
    n_tumours: int = 2,
):
    """Return ``(volume_hu int16, labels uint8, spacing)`` in (z, y, x) order."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*(np.arange(s, dtype=np.float32) for s in shape), indexing="ij")
    grid = (z * spacing[0], y * spacing[1], x * spacing[2])
    extent = [s * d for s, d in zip(shape, spacing)]
    volume = np.full(shape, -1000.0, dtype=np.float32)  # air
    body = _ellipsoid(grid, [e / 2 for e in extent], [extent[0] * 0.7, extent[1] * 0.42, extent[2] * 0.47])
    volume[body] = -100.0  # subcutaneous fat
    muscle = _ellipsoid(grid, [e / 2 for e in extent], [extent[0] * 0.7, extent[1] * 0.38, extent[2] * 0.43])
    volume[muscle] = 40.0
    # The liver sits in the patient's right (image left in radiological view), anterior half.
    liver_centre = [extent[0] * 0.5, extent[1] * 0.45, extent[2] * 0.33]
    liver_radii = [extent[0] * 0.38, extent[1] * 0.22, extent[2] * 0.2]
    liver = _ellipsoid(grid, liver_centre, liver_radii)
    liver |= _ellipsoid(grid, [liver_centre[0], liver_centre[1] + 8, liver_centre[2] + extent[2] * 0.12],
                        [liver_radii[0] * 0.7, liver_radii[1] * 0.7, liver_radii[2] * 0.8])
    liver &= muscle
    labels = np.zeros(shape, dtype=np.uint8)
    labels[liver] = 1
    volume[liver] = 60.0
    spine = _ellipsoid(grid, [extent[0] / 2, extent[1] * 0.72, extent[2] * 0.5], [extent[0], 12, 12])
    volume[spine] = 400.0
    liver_points = np.argwhere(liver)
    for _ in range(n_tumours):
        for _attempt in range(50):
            centre_index = liver_points[rng.integers(len(liver_points))]
            radius = rng.uniform(5.0, 11.0)
            centre = [c * d for c, d in zip(centre_index, spacing)]
            tumour = _ellipsoid(grid, centre, [radius * rng.uniform(0.8, 1.2) for _ in range(3)])
            if np.all(liver[tumour]):  # keep tumours wholly inside the liver
                break
        tumour &= liver
        labels[tumour] = 2
        volume[tumour] = 60.0 - rng.uniform(20.0, 40.0)
    volume += rng.normal(0.0, 12.0, size=shape).astype(np.float32)
    return np.round(volume).astype(np.int16), labels, tuple(float(s) for s in spacing)
