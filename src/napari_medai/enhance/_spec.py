"""The one specification of CLAHE that every back end implements (NumPy only, no numba/torch).

It is scikit-image's ``equalize_adapthist`` (0.19-0.26), written out so that a compiled kernel and a
torch kernel can follow it step by step:

1. Quantise: min-max rescale each image to ``[0, 1]`` (or clip to an intensity window), scale to the
   ``NR_OF_GRAY = 2**14`` grey levels with round-half-even, then integer-divide by
   ``bin_size = 1 + NR_OF_GRAY // nbins`` to get the histogram bin of every pixel.
2. Tiles: along each axis of length ``s`` with kernel ``k`` there are ``n = ceil(s / k)`` tiles; tile
   ``t`` covers positions ``t*k .. t*k + k - 1``, positions past the end are mirrored (NumPy's
   ``reflect`` padding, repeated for tiles larger than the image).
3. Histogram each tile into ``nbins`` bins, clip at ``clim = max(int(clip_limit * k_elements), 1)``
   and redistribute the excess exactly as ``skimage.exposure._adapthist.clip_histogram`` does
   (:func:`clip_histogram` below is the reference), then ``map = int(min(cumsum * 16383 / k_elements,
   16383))``.
4. Interpolate: position ``p`` lies in block ``j = (p + k//2) // k`` at fraction
   ``c = ((p + k//2) % k) / k``; it blends the maps of tiles ``clamp(j-1)`` (weight ``1-c``) and
   ``clamp(j)`` (weight ``c``), multilinearly over the axes, and the result is truncated to an
   integer grey level, as in scikit-image. scikit-image sums the 2**ndim corner products in float32;
   we evaluate the same multilinear form nested (z-blend of the maps once per plane, then
   ``(1-cy)((1-cx) m00 + cx m01) + cy((1-cx) m10 + cx m11)``) in float32, which is ~2x faster and
   differs from scikit-image's sum by float32 rounding only: after truncation at most one grey level
   in 16383 (6e-5 on [0, 1]). That happens mostly where the exact blend is a whole number (flat
   regions, where all corner maps agree) and the two roundings land on either side of it: 0.4 % of
   voxels on a CT sub-volume, 6-12 % of pixels on a B-mode frame or a CT slice; mean difference
   < 1e-5.
5. Rescale the result of each image min-max to ``[0, 1]`` (a constant result becomes
   ``clip(result, 0, 1)``, as in ``skimage.exposure.rescale_intensity``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

NR_OF_GRAY = 2**14
MAX_GRAY = NR_OF_GRAY - 1


def bin_size(nbins: int) -> int:
    return 1 + NR_OF_GRAY // int(nbins)


def clip_count(clip_limit: float, kernel_elements: int) -> int:
    """The clip limit in pixels per bin (scikit-image: ``clip_limit`` <= 0 means no clipping)."""
    if clip_limit > 0.0:
        return int(max(clip_limit * kernel_elements, 1))
    return int(kernel_elements)


def reflect_index(positions: np.ndarray, size: int) -> np.ndarray:
    """Map positions (any integers) into ``[0, size)`` like ``np.pad(mode='reflect')``."""
    positions = np.asarray(positions, dtype=np.int64)
    if size == 1:
        return np.zeros_like(positions)
    period = 2 * (size - 1)
    m = np.mod(positions, period)
    return np.where(m >= size, period - m, m)


@dataclass(frozen=True)
class Axis:
    """Tile geometry along one axis."""

    size: int
    kernel: int
    n_tiles: int
    hist_index: np.ndarray  # (n_tiles * kernel,) int64: source position of each tile position
    lo: np.ndarray  # (size,) int64: lower tile of each position
    hi: np.ndarray  # (size,) int64: upper tile of each position
    frac: np.ndarray  # (size,) float64: weight of the upper tile


def axis_geometry(size: int, kernel: int) -> Axis:
    k = int(kernel)
    n = -(-int(size) // k)
    hist_index = reflect_index(np.arange(n * k), size)
    padded = np.arange(size, dtype=np.int64) + k // 2
    block = padded // k
    frac = (padded % k) / k  # float64, exactly np.arange(k) / k as in scikit-image
    lo = np.clip(block - 1, 0, n - 1)
    hi = np.clip(block, 0, n - 1)
    return Axis(int(size), k, n, hist_index, lo, hi, frac)


def runs(axis: Axis) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split an axis into runs of positions sharing the same (lo, hi) tiles: (starts+end, lo, hi)."""
    key = axis.lo * (axis.n_tiles + 1) + axis.hi
    starts = np.concatenate([[0], np.nonzero(np.diff(key))[0] + 1]).astype(np.int64)
    bounds = np.concatenate([starts, [axis.size]]).astype(np.int64)
    return bounds, axis.lo[starts].astype(np.int64), axis.hi[starts].astype(np.int64)


def rescale_tables(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Per image, the float32 value of every grey level 0..16383 after the final min-max rescale
    (``skimage.exposure.rescale_intensity``: a constant result becomes ``clip(level, 0, 1)``)."""
    levels = np.arange(NR_OF_GRAY, dtype=np.float64)
    out = np.empty((len(lo), NR_OF_GRAY), dtype=np.float32)
    for b, (mn, mx) in enumerate(zip(np.asarray(lo, np.float64), np.asarray(hi, np.float64))):
        if mx > mn:
            out[b] = (levels - mn) / (mx - mn)
        else:
            out[b] = np.clip(levels, 0.0, 1.0)
    return out


def default_kernel(shape) -> tuple[int, ...]:
    return tuple(max(int(s) // 8, 1) for s in shape)


def quantise_lut(lo_value: int, hi_value: int, mins: np.ndarray, maxs: np.ndarray, nbins: int) -> np.ndarray:
    """Bin of every integer value ``lo_value..hi_value`` for each image of a batch: ``(B, L)`` uint16.

    Uses exactly the arithmetic of the float path (``_quantise_value``) so the two agree bit for bit.
    """
    values = np.arange(lo_value, hi_value + 1, dtype=np.float64)
    out = np.empty((len(mins), values.size), dtype=np.uint16)
    bs = bin_size(nbins)
    for b, (mn, mx) in enumerate(zip(mins, maxs)):
        out[b] = _quantise_value(values, float(mn), float(mx)) // bs
    return out


def _quantise_value(values: np.ndarray, mn: float, mx: float) -> np.ndarray:
    rng = mx - mn
    if rng > 0:
        v = np.clip((values - mn) / rng, 0.0, 1.0)
        return np.rint(v * float(MAX_GRAY)).astype(np.int64)
    return np.zeros(values.shape, dtype=np.int64)


def quantise_reference(image: np.ndarray, mn: float, mx: float, nbins: int) -> np.ndarray:
    """Reference quantisation of one image (NumPy, used by tests and the torch back end)."""
    return (_quantise_value(image.astype(np.float64), mn, mx) // bin_size(nbins)).astype(np.uint16)


def clip_histogram(hist: np.ndarray, clim: int) -> np.ndarray:
    """Reference clipping + redistribution of one histogram (in place), scikit-image's algorithm."""
    nb = hist.size
    over = hist > clim
    n_excess = int(hist[over].sum() - over.sum() * clim)
    hist[over] = clim
    bin_incr = n_excess // nb
    upper = clim - bin_incr
    low = hist < upper
    n_excess -= int(low.sum()) * bin_incr
    hist[low] += bin_incr
    mid = (hist >= upper) & (hist < clim)
    n_excess += int(hist[mid].sum() - mid.sum() * clim)
    hist[mid] = clim
    while n_excess > 0:
        prev = n_excess
        for index in range(nb):
            under = hist < clim
            step = max(1, int(under.sum()) // n_excess)
            sel = under[index::step]
            hist[index::step][sel] += 1
            n_excess -= int(sel.sum())
            if n_excess <= 0:
                break
        if prev == n_excess:
            break
    return hist


def map_histogram(hist: np.ndarray, kernel_elements: int) -> np.ndarray:
    out = np.cumsum(hist, axis=-1).astype(np.float64)
    out *= MAX_GRAY / kernel_elements
    np.clip(out, None, MAX_GRAY, out=out)
    return out.astype(np.int64)


def n_tiles(shape, kernel) -> int:
    return math.prod(-(-int(s) // int(k)) for s, k in zip(shape, kernel))
