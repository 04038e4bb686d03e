"""Training-time augmentation: the one home, built from MONAI array transforms.

Every trainer draws its augmentation from a recipe here (segmentation slices and patches, the brain-MRI
embedder, the ultrasound texture network). A recipe is a list of steps applied to each sample of a batch
``(B, C, *spatial)``, channel first as MONAI wants:

- :class:`Spatial`: a MONAI ``Rand*`` geometric transform; the label (when given) gets the same draw
  (``randomize=False``) with nearest-neighbour interpolation and zero padding, so it stays aligned.
- :class:`Intensity`: a MONAI ``Rand*`` intensity transform, on the image only (optionally on some
  channels only).
- :class:`Clip`: clamp the image to a range (the recipes that work in ``[0, 1]``).
- :class:`Custom`: a function of ours, only where MONAI has no such operation (each says why).

Randomness: one seed per batch is drawn from the trainer's generator (``torch.Generator``,
``numpy.random.Generator`` or an int), and every step's ``set_random_state`` is seeded from it. A run is
therefore deterministic for a seed, and a resumed run that restores the trainer's generator equals an
uninterrupted one. MONAI's global state and torch's global generator are not used.

The recipes keep the kinds and ranges of the hand-written functions the shipped weights were trained
with (``tests/test_augment.py`` checks them against the old code's values); where MONAI draws a parameter
uniformly and the old code drew it log-uniformly (gamma) or normally (the ultrasound gain), the range (or
the SD) is kept. The random draws differ from the old code's, so a retrain is equivalent, not
bit-identical. Each sample goes through MONAI on its own (per-sample draws, as before), which costs about
10 ms per 128-px slice on one CPU thread. torch and MONAI are imported inside the functions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

MAX_SEED = 2**31 - 1


@dataclass
class Spatial:
    """A MONAI geometric ``Rand*`` transform applied alike to the image and its label."""

    transform: Any
    label_kwargs: dict = field(default_factory=dict)


@dataclass
class Intensity:
    """A MONAI intensity ``Rand*`` transform applied to the image (``channels``: only those)."""

    transform: Any
    channels: Optional[Sequence[int]] = None


@dataclass
class Clip:
    """Clamp the image to ``[low, high]``."""

    low: float = 0.0
    high: float = 1.0


@dataclass
class Custom:
    """``fn(image, label_or_None, random_state) -> (image, label_or_None)`` for one sample."""

    fn: Callable


def seed_from(generator) -> int:
    """One seed for a batch from a ``torch.Generator``, a ``numpy.random.Generator`` or an int."""
    if generator is None:
        raise ValueError("augmentation needs a generator or a seed (runs must be reproducible)")
    if isinstance(generator, (int, np.integer)):
        return int(generator) % MAX_SEED
    if isinstance(generator, np.random.Generator):
        return int(generator.integers(0, MAX_SEED))
    import torch

    return int(torch.randint(0, MAX_SEED, (1,), generator=generator))


def _plain(t):
    """A MONAI MetaTensor (or numpy array) as a plain float32 torch tensor."""
    import torch

    if hasattr(t, "as_tensor"):
        t = t.as_tensor()
    return torch.as_tensor(t, dtype=torch.float32)


class Augmentation:
    """A seeded augmentation recipe for batches: ``aug(x, generator)`` or ``aug(x, y, generator)``.

    ``x`` is ``(B, C, *spatial)`` float; ``y`` (optional) a label batch of the same spatial shape, any
    dtype (returned in that dtype). Returns the augmented ``x`` (and ``y``) as new tensors.
    """

    def __init__(self, build: Callable[[tuple], Sequence], name: str = ""):
        self._build = build
        self._steps: dict[tuple, list] = {}
        self.name = name
        self.steps: list = []
        self._custom_state = np.random.RandomState(0)

    def for_shape(self, spatial: Sequence[int]) -> list:
        """The steps for samples of this spatial shape (built once per shape: MONAI caches its grids)."""
        key = tuple(int(s) for s in spatial)
        if key not in self._steps:
            self._steps[key] = list(self._build(key))
        self.steps = self._steps[key]
        return self.steps

    def seed(self, seed: int) -> None:
        """Seed every step from ``seed`` (MONAI's ``set_random_state``)."""
        rs = np.random.RandomState(int(seed) % MAX_SEED)
        for step in self.steps:
            if isinstance(step, (Spatial, Intensity)) and hasattr(step.transform, "set_random_state"):
                step.transform.set_random_state(seed=int(rs.randint(MAX_SEED)))
        self._custom_state = np.random.RandomState(int(rs.randint(MAX_SEED)))

    def sample(self, x, y=None):
        """Augment one sample ``(C, *spatial)`` (and its label) with the current random state."""
        import torch

        for step in self.steps:
            if isinstance(step, Spatial):
                x = step.transform(x)
                if y is not None:
                    again = {"randomize": False} if hasattr(step.transform, "set_random_state") else {}
                    y = step.transform(y, **again, **step.label_kwargs)
            elif isinstance(step, Intensity):
                if step.channels is None:
                    x = step.transform(x)
                else:
                    x = _plain(x).clone()
                    ch = list(step.channels)
                    x[ch] = _plain(step.transform(x[ch]))
            elif isinstance(step, Clip):
                x = torch.clamp(_plain(x), step.low, step.high)
            elif isinstance(step, Custom):
                x, y = step.fn(_plain(x), None if y is None else _plain(y), self._custom_state)
            else:
                raise TypeError(f"unknown augmentation step {step!r}")
        return _plain(x), (None if y is None else _plain(y))

    def __call__(self, x, *args):
        """``aug(x, generator)`` -> x, or ``aug(x, y, generator)`` -> (x, y)."""
        import torch

        if len(args) == 1:
            y, generator = None, args[0]
        elif len(args) == 2:
            y, generator = args
        else:
            raise TypeError("call as aug(x, generator) or aug(x, y, generator)")
        self.for_shape(x.shape[2:])
        self.seed(seed_from(generator))
        xs, ys = [], []
        for i in range(x.shape[0]):
            xi, yi = self.sample(_plain(x[i]), None if y is None else _plain(y[i]))
            xs.append(xi)
            ys.append(yi)
        xo = torch.stack(xs).to(x.dtype if torch.is_tensor(x) else torch.float32)
        if y is None:
            return xo
        yo = torch.stack(ys)
        if torch.is_tensor(y):
            yo = yo.round().to(y.dtype) if not y.dtype.is_floating_point else yo.to(y.dtype)
        return xo, yo


# ------------------------------------------------------------------------------------------------ pieces


def isotropic_affine(
    *,
    rotate_deg: float,
    zoom: tuple,
    log_zoom: bool,
    translate: float,
    size: Sequence[int],
    padding_mode: str,
):
    """A MONAI ``RandAffine`` with rotation ``±rotate_deg``, translation ``±translate`` of each side and an
    isotropic zoom (magnification) in ``zoom``, log-uniform or uniform.

    MONAI's ``scale_range`` draws every axis's scale on its own (a stretch, not a zoom) and uniformly, so
    its grid's ``randomize`` is extended to draw one factor for all axes from the grid's own seeded state.
    """
    from monai.transforms import RandAffine, RandAffineGrid

    lo, hi = float(zoom[0]), float(zoom[1])
    ndim = len(size)

    class _IsotropicZoomGrid(RandAffineGrid):
        def randomize(self, data=None) -> None:
            super().randomize(data)
            u = self.R.uniform(0.0, 1.0)
            m = math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo))) if log_zoom else lo + u * (hi - lo)
            # MONAI's scale acts on the sampling grid: a scale s shows the image 1/s times as large
            self.scale_params = [1.0 / m] * ndim

    rotate = (math.radians(rotate_deg),)
    shift = tuple(translate * s for s in size)
    transform = RandAffine(
        prob=1.0,
        rotate_range=rotate,
        translate_range=shift,
        spatial_size=tuple(size),
        cache_grid=True,
        mode="bilinear",
        padding_mode=padding_mode,
    )
    transform.rand_affine_grid = _IsotropicZoomGrid(rotate_range=rotate, translate_range=shift)
    return transform


def zoom_of(transform) -> float:
    """The magnification an :func:`isotropic_affine` drew last (for checks)."""
    return 1.0 / float(transform.rand_affine_grid.scale_params[0])


def affine_label_kwargs() -> dict:
    """How a label follows a ``RandAffine``: nearest neighbour, zeros outside."""
    return {"mode": "nearest", "padding_mode": "zeros"}


def _air_canvas_crop(prob: float, frac: tuple) -> Custom:
    """With probability ``prob``, keep a random box (sides ``frac`` of the slice, around a random label
    pixel when there is one) and set everything else to 0 (air) in image and label, as in a cropped scan.

    Custom because MONAI's crops (``RandSpatialCrop``, ``RandCropByPosNegLabel``) return the smaller
    array; a cropped scan keeps the full canvas with air around the cut body.
    """

    def crop(x, y, rs: np.random.RandomState):
        if rs.uniform() >= prob:
            return x, y
        h, w = x.shape[-2:]
        ch = int(h * (frac[0] + (frac[1] - frac[0]) * rs.uniform()))
        cw = int(w * (frac[0] + (frac[1] - frac[0]) * rs.uniform()))
        fg = np.argwhere(y[0].numpy() > 0) if y is not None else np.empty((0, 2))
        if len(fg):
            cy, cx = (int(v) for v in fg[rs.randint(len(fg))])
        else:
            cy, cx = int(rs.uniform() * h), int(rs.uniform() * w)
        top = int(min(max(0, cy - int(ch * rs.uniform())), h - ch))
        left = int(min(max(0, cx - int(cw * rs.uniform())), w - cw))
        keep = x.new_zeros(x.shape[-2:])
        keep[top : top + ch, left : left + cw] = 1
        return x * keep, (None if y is None else y * keep)

    return Custom(crop)


# ------------------------------------------------------------------------------------------------ recipes


def ct_slices(zoom=(0.8, 1.25), crop_prob: float = 0.0, crop_frac=(0.3, 0.8)) -> Augmentation:
    """The liver/tumour cascade's slices (``train segment --recipe``), image in ``[0, 1]`` with labels.

    Quarter turns (k = 1-3, p 0.225: the old 30 % draw of k = 0-3), horizontal flip p 0.2, rotation ±15°,
    isotropic zoom log-uniform in ``zoom``, shift ±5 % (border padding); an air-canvas crop with
    ``crop_prob``; contrast ×(1 ± 0.2), brightness ± 0.125, gamma e^±0.3, Gaussian noise sd U(0, 0.05).
    """
    from monai.transforms import (
        RandAdjustContrast,
        RandFlip,
        RandGaussianNoise,
        RandRotate90,
        RandScaleIntensity,
        RandShiftIntensity,
    )

    def build(size):
        steps = [
            Spatial(RandRotate90(prob=0.225, max_k=3, spatial_axes=(0, 1))),
            Spatial(RandFlip(prob=0.2, spatial_axis=1)),
            Spatial(
                isotropic_affine(
                    rotate_deg=15, zoom=zoom, log_zoom=True, translate=0.05, size=size, padding_mode="border"
                ),
                affine_label_kwargs(),
            ),
        ]
        if crop_prob > 0:
            steps.append(_air_canvas_crop(crop_prob, tuple(crop_frac)))
        return steps + [
            Intensity(RandScaleIntensity(factors=0.2, prob=1.0)),
            Intensity(RandShiftIntensity(offsets=0.125, prob=1.0)),
            Clip(0.0, 1.0),
            Intensity(RandAdjustContrast(prob=1.0, gamma=(math.exp(-0.3), math.exp(0.3)))),
            Intensity(RandGaussianNoise(prob=1.0, mean=0.0, std=0.05, sample_std=True)),
            Clip(0.0, 1.0),
        ]

    return Augmentation(build, "ct-slices")


def msd_slices() -> Augmentation:
    """``train segment --data MSD --arch unet2d`` slices: rotation ±15°, isotropic zoom log-uniform in
    1/1.2-1.2, shift ±5 % (border padding), contrast ×(1 ± 0.15), brightness ± 0.1, noise sd 0.02."""
    from monai.transforms import RandGaussianNoise, RandScaleIntensity, RandShiftIntensity

    def build(size):
        return [
            Spatial(
                isotropic_affine(
                    rotate_deg=15, zoom=(1 / 1.2, 1.2), log_zoom=True, translate=0.05, size=size, padding_mode="border"
                ),
                affine_label_kwargs(),
            ),
            Intensity(RandScaleIntensity(factors=0.15, prob=1.0)),
            Intensity(RandShiftIntensity(offsets=0.1, prob=1.0)),
            Intensity(RandGaussianNoise(prob=1.0, mean=0.0, std=0.02, sample_std=False)),
        ]

    return Augmentation(build, "msd-slices")


def msd_patches() -> Augmentation:
    """3-D patches of ``train segment --arch unet3d`` etc.: flips of the two in-plane axes, p 0.2 each."""
    from monai.transforms import RandFlip

    def build(size):
        return [Spatial(RandFlip(prob=0.2, spatial_axis=1)), Spatial(RandFlip(prob=0.2, spatial_axis=2))]

    return Augmentation(build, "msd-patches")


def mri_standard() -> Augmentation:
    """The brain-MRI embedder (``train embedder``, the shipped recipe): horizontal flip p 0.5, rotation ±15°,
    zoom uniform 0.85-1.15, shift ±4 % (zero padding); gamma e^±0.35, contrast ×(1 ± 0.2), brightness ± 0.08;
    image in ``[0, 1]``."""
    from monai.transforms import RandAdjustContrast, RandFlip, RandScaleIntensity, RandShiftIntensity

    def build(size):
        return [
            Spatial(RandFlip(prob=0.5, spatial_axis=1)),
            Spatial(
                isotropic_affine(
                    rotate_deg=15, zoom=(0.85, 1.15), log_zoom=False, translate=0.04, size=size, padding_mode="zeros"
                ),
                affine_label_kwargs(),
            ),
            Clip(0.0, 1.0),
            Intensity(RandAdjustContrast(prob=1.0, gamma=(math.exp(-0.35), math.exp(0.35)))),
            Intensity(RandScaleIntensity(factors=0.2, prob=1.0)),
            Intensity(RandShiftIntensity(offsets=0.08, prob=1.0)),
            Clip(0.0, 1.0),
        ]

    return Augmentation(build, "mri-standard")


#: MONAI bias field of degree 3 with coefficients in ±BIAS_COEFF: its largest excursion over an image is
#: about that of the old hand-written field (up to ±35 %; tests/test_augment.py measures both)
BIAS_COEFF = 0.07


def mri_strong() -> Augmentation:
    """Brain MRI from other scanners and sources (``augmentation="strong"``): horizontal flip p 0.5, vertical
    flip p 0.2, quarter turns p 0.225 (±90° at the old 15 %; 180° is also reachable by the two flips),
    rotation ±25°, zoom uniform 0.7-1.3, shift ±5 % (zero padding); a multiplicative bias field (MONAI's
    Legendre polynomial), gamma e^±0.5, contrast ×(1 ± 0.25), brightness ± 0.1, loss of resolution (1-3x,
    p 0.3), Gaussian blur (sigma 1, p 0.2), Gaussian noise sd U(0, 0.05); image in ``[0, 1]``."""
    from monai.transforms import (
        RandAdjustContrast,
        RandBiasField,
        RandFlip,
        RandGaussianNoise,
        RandGaussianSmooth,
        RandRotate90,
        RandScaleIntensity,
        RandShiftIntensity,
        RandSimulateLowResolution,
    )

    def build(size):
        return [
            Spatial(RandFlip(prob=0.5, spatial_axis=1)),
            Spatial(RandFlip(prob=0.2, spatial_axis=0)),
            Spatial(RandRotate90(prob=0.225, max_k=3, spatial_axes=(0, 1))),
            Spatial(
                isotropic_affine(
                    rotate_deg=25, zoom=(0.7, 1.3), log_zoom=False, translate=0.05, size=size, padding_mode="zeros"
                ),
                affine_label_kwargs(),
            ),
            Clip(0.0, 1.0),
            Intensity(RandBiasField(prob=1.0, degree=3, coeff_range=(-BIAS_COEFF, BIAS_COEFF))),
            Clip(0.0, 1.0),
            Intensity(RandAdjustContrast(prob=1.0, gamma=(math.exp(-0.5), math.exp(0.5)))),
            Intensity(RandScaleIntensity(factors=0.25, prob=1.0)),
            Intensity(RandShiftIntensity(offsets=0.1, prob=1.0)),
            Intensity(
                RandSimulateLowResolution(
                    prob=0.3, downsample_mode="area", upsample_mode="bilinear", zoom_range=(1 / 3, 1.0)
                )
            ),
            Intensity(RandGaussianSmooth(prob=0.2, sigma_x=(1.0, 1.0), sigma_y=(1.0, 1.0))),
            Intensity(RandGaussianNoise(prob=1.0, mean=0.0, std=0.05, sample_std=True)),
            Clip(0.0, 1.0),
        ]

    return Augmentation(build, "mri-strong")


def ultrasound_patches(gain_channels: Optional[Sequence[int]] = (0,)) -> Augmentation:
    """The steatosis texture network's patches: horizontal flip p 0.5, shift ±3 px (reflect padding), gain
    ×(1 ± 0.087: sd 0.05, as the old normal draw) on ``gain_channels`` (the raw channel) only."""
    from monai.transforms import BorderPad, RandFlip, RandScaleIntensity, RandSpatialCrop

    def build(size):
        steps = [
            Spatial(RandFlip(prob=0.5, spatial_axis=1)),
            Spatial(BorderPad(spatial_border=3, mode="reflect")),
            Spatial(RandSpatialCrop(roi_size=tuple(size), random_center=True, random_size=False)),
        ]
        if gain_channels:
            steps.append(
                Intensity(RandScaleIntensity(factors=0.05 * math.sqrt(3.0), prob=1.0), tuple(gain_channels))
            )
        return steps

    return Augmentation(build, "ultrasound-patches")


#: the retrieval trainer's choices (``train_embedder(augmentation=...)``)
RETRIEVAL = {"standard": mri_standard, "strong": mri_strong}
