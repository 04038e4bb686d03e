"""A seeded synthetic abdominal CT phantom with a liver and tumours, and its exact ground truth.

Portal-venous contrast CT values: fat about -100 HU, muscle 50, bowel and mesentery 20-40, liver 105,
spleen 115, kidney cortex 160, aorta 170, bone 250-700; hypodense tumours 35-60 HU below the liver; noise
with a correlated (CT-like) texture. The anatomy is placed in units of the field of view, so any shape
works; with the defaults the body is about 330 x 240 mm, as in an adult. Arrays are (z, y, x) in display
order: rows run anterior to posterior and columns from the patient's right to left (radiological), so
the liver lies on the image's left. Labels: 1 = liver, 2 = tumour.
"""

from __future__ import annotations

import numpy as np


def _ellipse(u, v, w, centre, radii):
    return (((u - centre[0]) / radii[0]) ** 2 + ((v - centre[1]) / radii[1]) ** 2
            + ((w - centre[2]) / radii[2]) ** 2 <= 1.0)


def make_ct_phantom(
    seed: int = 0,
    shape: tuple = (48, 128, 128),
    spacing: tuple = (3.0, 2.8, 2.8),
    n_tumours: int = 2,
):
    """Return ``(volume_hu int16, labels uint8, spacing)`` in (z, y, x) order."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    # Normalised coordinates in [-1, 1]: u = left-right (columns), v = anterior-posterior (rows), w = z.
    w, v, u = np.meshgrid(*(np.linspace(-1, 1, n, dtype=np.float32) if n > 1 else np.zeros(1, np.float32)
                            for n in shape), indexing="ij")
    jitter = lambda scale=0.03: rng.uniform(-scale, scale)  # noqa: E731 - small anatomical variation

    volume = np.full(shape, -1000.0, dtype=np.float32)
    body = _ellipse(u, v, w, (0, 0.05, 0), (0.92, 0.7, 9.0))
    volume[body] = -100.0  # subcutaneous fat
    wall = _ellipse(u, v, w, (0, 0.05, 0), (0.84, 0.62, 9.0))
    volume[wall] = 50.0  # abdominal wall muscle
    cavity = _ellipse(u, v, w, (0, 0.05, 0), (0.78, 0.56, 9.0))
    # Bowel and mesentery: soft tissue with smooth pockets of fat.
    texture = ndimage.gaussian_filter(rng.normal(size=shape).astype(np.float32), sigma=(1.0, 3.0, 3.0))
    texture /= texture.std() + 1e-6
    volume[cavity] = np.where(texture[cavity] > 0.9, -80.0, 30.0)

    spine = _ellipse(u, v, w, (0, 0.45, 0), (0.1, 0.13, 9.0))
    volume[spine] = 700.0
    volume[_ellipse(u, v, w, (0, 0.45, 0), (0.075, 0.1, 9.0))] = 250.0  # cancellous bone inside the cortex
    volume[_ellipse(u, v, w, (-0.2, 0.42, 0), (0.1, 0.12, 9.0))
           | _ellipse(u, v, w, (0.2, 0.42, 0), (0.1, 0.12, 9.0))] = 50.0  # muscles beside the spine
    volume[_ellipse(u, v, w, (0.06, 0.25, 0), (0.045, 0.06, 9.0))] = 170.0  # aorta
    volume[_ellipse(u, v, w, (-0.1, 0.24, 0), (0.05, 0.06, 9.0))] = 140.0  # inferior vena cava
    kidneys = (_ellipse(u, v, w, (-0.38, 0.3, 0.35), (0.11, 0.14, 0.55))
               | _ellipse(u, v, w, (0.38, 0.3, 0.4), (0.11, 0.14, 0.55)))
    volume[kidneys & cavity] = 160.0
    spleen = _ellipse(u, v, w, (0.55 + jitter(), 0.2, -0.2), (0.17, 0.22, 0.55)) & cavity
    volume[spleen] = 115.0

    # Liver: a large right lobe plus a left lobe reaching across the midline anteriorly.
    right_lobe = _ellipse(u, v, w, (-0.42 + jitter(), 0.0 + jitter(), -0.15), (0.36, 0.45, 0.75))
    left_lobe = _ellipse(u, v, w, (-0.02 + jitter(), -0.22, -0.35), (0.3, 0.17, 0.45))
    liver = (right_lobe | left_lobe) & cavity & ~kidneys & ~spleen & ~spine
    labels = np.zeros(shape, dtype=np.uint8)
    labels[liver] = 1
    volume[liver] = 105.0
    # Hepatic vessels: bright, thin, inside the liver (they belong to the liver label, as in LiTS).
    vessels = liver & (np.abs(ndimage.gaussian_filter(rng.normal(size=shape).astype(np.float32), 2.0)) < 0.015)
    volume[vessels] = 150.0

    liver_points = np.argwhere(liver)
    scale = np.array([2.0 / max(n - 1, 1) for n in shape])  # normalised units per voxel
    for _ in range(n_tumours if len(liver_points) else 0):
        for _attempt in range(50):
            centre = liver_points[rng.integers(len(liver_points))] * scale - 1.0
            radius = rng.uniform(0.05, 0.11)
            radii = (radius * rng.uniform(0.8, 1.2), radius * rng.uniform(0.8, 1.2),
                     radius * spacing[1] / spacing[0] * rng.uniform(0.8, 1.2))
            tumour = _ellipse(u, v, w, (centre[2], centre[1], centre[0]), radii)
            if tumour.any() and np.all(liver[tumour]):  # keep tumours wholly inside the liver
                break
        tumour &= liver
        labels[tumour] = 2
        volume[tumour] = 105.0 - rng.uniform(35.0, 60.0)

    noise = ndimage.gaussian_filter(rng.normal(size=shape).astype(np.float32), sigma=(0, 0.7, 0.7))
    volume += noise / (noise.std() + 1e-6) * 12.0
    return np.round(volume).astype(np.int16), labels, tuple(float(s) for s in spacing)
