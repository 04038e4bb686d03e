"""CLAHE (contrast-limited adaptive histogram equalisation) in 2-D, per slice and in true 3-D.

The semantics are scikit-image's ``equalize_adapthist`` (see ``_spec.py`` for the step-by-step
specification); the work runs in a numba-compiled CPU kernel or, on CUDA / MPS, in torch. Both back
ends follow the same specification and pass the same parity tests against scikit-image.

Differences from ``skimage.exposure.equalize_adapthist``, all deliberate:

- any real dtype is min-max rescaled to [0, 1] first (scikit-image clips negative integers to 0 and
  refuses floats outside [-1, 1]), so int16 Hounsfield units keep their full range;
- ``window=(lo, hi)`` clips intensities to a window (CT) and maps it onto [0, 1] instead;
- RGB: the HSV value channel (max of R, G, B) is equalised and the colours are scaled with it, as
  scikit-image does; an alpha channel is passed through instead of being blended on white;
- the result is always float32.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Optional, Union

import numpy as np

from ..errors import MedaiError
from ..runtime.progress import Progress, ShouldStop, check_stop
from . import _spec

MODES = ("auto", "2d", "slices", "3d")
BACKENDS = ("auto", "numba", "torch")
#: below this many voxels a GPU does not pay for its transfers and launches: ``device="auto"`` stays
#: on the CPU kernel (an explicit ``device="cuda"`` is always honoured).
SMALL_FOR_GPU = 1 << 20
_LUT_LIMIT = 1 << 22

KernelSize = Union[None, int, Sequence[int]]


@dataclass
class ClaheResult:
    """The equalised image plus what was actually run (for provenance)."""

    image: np.ndarray
    mode: str
    kernel_size: tuple
    clip_limit: float
    nbins: int
    window: Optional[tuple]
    rgb: bool
    backend: str
    device: str
    seconds: float
    notes: list = field(default_factory=list)

    def parameters(self) -> dict:
        """The parameters actually used (for provenance and the JSON output)."""
        return {
            "mode": self.mode,
            "kernel_size": list(self.kernel_size),
            "clip_limit": self.clip_limit,
            "nbins": self.nbins,
            "window": list(self.window) if self.window is not None else None,
            "rgb": self.rgb,
            "backend": self.backend,
        }


def clahe(
    image,
    *,
    kernel_size: KernelSize = None,
    clip_limit: float = 0.01,
    nbins: int = 256,
    mode: str = "auto",
    device="auto",
    window: Optional[Sequence[float]] = None,
    rgb: Optional[bool] = None,
    backend: str = "auto",
    progress: Optional[Progress] = None,
    should_stop: Optional[ShouldStop] = None,
) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation; returns float32 in [0, 1].

    Parameters mean what they mean in ``skimage.exposure.equalize_adapthist``:

    image
        2-D ``(Y, X)``, a stack or volume ``(Z, Y, X)``, a batch of volumes ``(T, Z, Y, X)``, or RGB(A)
        ``(Y, X, 3|4)`` / ``(Z, Y, X, 3|4)``. Any real dtype; never modified.
    kernel_size
        Tile shape: an int for every axis, or one int per axis of the operation (2 for ``2d`` and
        ``slices``, 3 for ``3d``). Default 1/8 of each axis.
    clip_limit
        Normalised clip limit in [0, 1]; 0 (or >= 1) means no clipping (plain AHE).
    nbins
        Histogram bins.
    mode
        ``2d``: a 2-D image. ``slices``: every slice of a stack on its own (batched). ``3d``: true
        volumetric CLAHE with 3-D tiles. ``auto``: ``2d`` for 2-D images, ``3d`` for volumes.
    device
        ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``. The CPU runs a numba kernel, GPUs run torch.
    window
        Optional ``(lo, hi)`` intensity window (e.g. ``(-200, 250)`` HU): values are clipped to it and
        it is mapped onto [0, 1] instead of the image's min-max.
    rgb
        Whether the last axis holds colour channels; default: guessed (last axis of 3 or 4, like napari).
    backend
        ``auto`` (numba on the CPU, torch on GPUs), ``numba`` or ``torch``.
    progress, should_stop
        ``progress(i, n)`` callback and cancel check (raises ``CancelledError``).
    """
    return run_clahe(
        image, kernel_size=kernel_size, clip_limit=clip_limit, nbins=nbins, mode=mode,
        device=device, window=window, rgb=rgb, backend=backend, progress=progress,
        should_stop=should_stop,
    ).image


# --------------------------------------------------------------------------------------------------
# validation


def _as_array(image) -> np.ndarray:
    if image is None:
        raise MedaiError("CLAHE got no image; pass a 2-D image, a stack or a volume")
    if hasattr(image, "__array__") and not isinstance(image, np.ndarray):
        image = np.asarray(image)  # dask / zarr / xarray: materialised (read-only use)
    arr = np.asarray(image)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if arr.dtype.kind not in "iuf":
        raise MedaiError(
            f"CLAHE needs a real-valued image, got dtype {arr.dtype}; convert it to integers or floats"
        )
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if arr.dtype == np.float16:
        arr = arr.astype(np.float32)
    return arr


def _guess_rgb(arr: np.ndarray) -> bool:
    return arr.ndim in (3, 4) and arr.shape[-1] in (3, 4) and arr.shape[-2] > 4


def _check_mode(mode) -> str:
    m = str(mode).strip().lower()
    m = {"2-d": "2d", "3-d": "3d", "slice": "slices", "stack": "slices"}.get(m, m)
    if m not in MODES:
        raise MedaiError(f"unknown CLAHE mode '{mode}'; use one of: {', '.join(MODES)}")
    return m


def _check_kernel(kernel_size: KernelSize, shape: tuple, op_mode: str) -> tuple:
    nd = len(shape)
    if kernel_size is None:
        return _spec.default_kernel(shape)
    if isinstance(kernel_size, str):
        try:
            kernel_size = [int(v) for v in kernel_size.replace("x", ",").split(",") if v.strip()]
        except ValueError:
            raise MedaiError(f"bad kernel size '{kernel_size}'; write N or N,N,N with positive integers") from None
        if len(kernel_size) == 1:
            kernel_size = kernel_size[0]
    if isinstance(kernel_size, (Integral, np.integer)) or (
        isinstance(kernel_size, Real) and float(kernel_size).is_integer()
    ):
        ks = (int(kernel_size),) * nd
    else:
        try:
            ks = tuple(int(k) for k in kernel_size)
        except (TypeError, ValueError):
            raise MedaiError(f"bad kernel size {kernel_size!r}; give an int or one int per axis") from None
        if len(ks) != nd:
            raise MedaiError(
                f"kernel size {list(ks)} has {len(ks)} values but mode '{op_mode}' tiles {nd} axes "
                f"{tuple(shape)}; give one value or {nd}"
            )
    if any(k < 1 for k in ks):
        raise MedaiError(f"kernel size {list(ks)} must be positive integers")
    return ks


def _check_window(window):
    if window is None:
        return None
    if isinstance(window, str):
        try:
            window = [float(v) for v in window.split(",")]
        except ValueError:
            raise MedaiError(f"bad window '{window}'; write LO,HI, e.g. -200,250") from None
    try:
        lo, hi = (float(v) for v in window)
    except (TypeError, ValueError):
        raise MedaiError(f"bad window {window!r}; give two numbers (lo, hi), e.g. (-200, 250)") from None
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        raise MedaiError(f"bad window ({lo:g}, {hi:g}); it needs finite lo < hi, e.g. (-200, 250)")
    return (lo, hi)


def _layout(spatial: tuple, mode: str) -> tuple[str, tuple, tuple]:
    """(operation mode, (B, Z, Y, X), the axes the kernel tiles)."""
    nd = len(spatial)
    if mode == "auto":
        mode = "2d" if nd == 2 else "3d"
    if mode == "2d":
        if nd != 2:
            raise MedaiError(
                f"mode '2d' needs a 2-D image, got shape {spatial}; use mode 'slices' for a stack "
                "or '3d' for a volume"
            )
        return mode, (1, 1) + spatial, spatial
    if mode == "slices":
        if nd == 2:
            return "2d", (1, 1) + spatial, spatial
        b = math.prod(spatial[:-2])
        return mode, (b, 1) + spatial[-2:], spatial[-2:]
    # 3d
    if nd == 2:
        raise MedaiError(f"mode '3d' needs a volume (Z, Y, X), got a 2-D image {spatial}; use mode '2d'")
    b = math.prod(spatial[:-3])
    return mode, (b,) + spatial[-3:], spatial[-3:]


# --------------------------------------------------------------------------------------------------
# back-end choice


def _numba_ok() -> bool:
    try:
        import numba  # noqa: F401
    except Exception:
        return False
    return True


def _choose(backend: str, device, numel: int) -> tuple[str, str, str]:
    """-> (backend, device name, note)."""
    from ..runtime.device import gpu_possible, resolve_device

    b = str(backend).strip().lower()
    if b not in BACKENDS:
        raise MedaiError(f"unknown CLAHE back end '{backend}'; use one of: {', '.join(BACKENDS)}")
    spec = "auto" if device is None else device
    text = str(getattr(spec, "name", spec)).strip().lower()
    if b == "numba":
        if text not in ("auto", "", "cpu"):
            raise MedaiError(f"the numba back end runs on the CPU only; use device 'cpu' or backend 'torch' for {text}")
        if not _numba_ok():
            raise MedaiError("numba is not installed; install it or use backend 'torch'")
        return "numba", "cpu", "requested"
    if b == "torch":
        if text in ("auto", "") and not gpu_possible():
            return "torch", "cpu", "auto: no GPU possible here"
        choice = resolve_device(spec)
        return "torch", choice.name, choice.reason
    # auto
    if text in ("auto", ""):
        if not gpu_possible():
            choice_name, reason = "cpu", "auto: no CUDA or MPS device here"
        else:
            choice = resolve_device("auto")
            choice_name, reason = choice.name, choice.reason
            if choice_name != "cpu" and numel < SMALL_FOR_GPU and _numba_ok():
                choice_name, reason = "cpu", f"auto: small image ({numel} voxels) is faster on the CPU"
    else:
        choice = resolve_device(spec)
        choice_name, reason = choice.name, choice.reason
    if choice_name == "cpu":
        if _numba_ok():
            return "numba", "cpu", reason
        return "torch", "cpu", reason + "; numba missing, using torch"
    return "torch", choice_name, reason


# --------------------------------------------------------------------------------------------------
# driver


def run_clahe(
    image,
    *,
    kernel_size: KernelSize = None,
    clip_limit: float = 0.01,
    nbins: int = 256,
    mode: str = "auto",
    device="auto",
    window: Optional[Sequence[float]] = None,
    rgb: Optional[bool] = None,
    backend: str = "auto",
    progress: Optional[Progress] = None,
    should_stop: Optional[ShouldStop] = None,
) -> ClaheResult:
    """:func:`clahe`, returning a :class:`ClaheResult` with what was run (for provenance)."""
    t_start = time.perf_counter()
    check_stop(should_stop)
    arr = _as_array(image)
    mode = _check_mode(mode)
    if arr.ndim < 2:
        raise MedaiError(f"CLAHE needs a 2-D image, a stack or a volume; got a {arr.ndim}-D array {arr.shape}")
    if arr.ndim > 4:
        raise MedaiError(
            f"CLAHE takes at most 4-D arrays (T, Z, Y, X) or (Z, Y, X, RGB); got {arr.ndim}-D {arr.shape}"
        )
    if arr.size == 0:
        raise MedaiError(f"CLAHE got an empty image of shape {arr.shape}")
    is_rgb = _guess_rgb(arr) if rgb is None else bool(rgb)
    if is_rgb:
        if arr.shape[-1] not in (3, 4) or arr.ndim not in (3, 4):
            raise MedaiError(f"an RGB image needs a last axis of 3 or 4 channels and 2-D or 3-D space; got {arr.shape}")
    spatial = tuple(int(s) for s in (arr.shape[:-1] if is_rgb else arr.shape))
    op_mode, (B, Z, Y, X), tiled = _layout(spatial, mode)
    if (Y < 1) or (X < 1):
        raise MedaiError(f"CLAHE got an empty image of shape {arr.shape}")
    ks = _check_kernel(kernel_size, tiled, op_mode)
    kernel = (1,) + ks if len(ks) == 2 else ks
    try:
        clip_limit = float(clip_limit)
    except (TypeError, ValueError):
        raise MedaiError(f"bad clip limit {clip_limit!r}; give a number in [0, 1], e.g. 0.01") from None
    if not math.isfinite(clip_limit) or clip_limit < 0:
        raise MedaiError(f"bad clip limit {clip_limit}; give a number in [0, 1], e.g. 0.01 (0 = no clipping)")
    try:
        nbins_i = int(nbins)
    except (TypeError, ValueError):
        raise MedaiError(f"bad nbins {nbins!r}; give an integer from 2 to 65536, e.g. 256") from None
    if nbins_i != nbins or not 2 <= nbins_i <= 65536:
        raise MedaiError(f"bad nbins {nbins}; give an integer from 2 to 65536, e.g. 256")
    win = _check_window(window)
    if win is not None and is_rgb:
        raise MedaiError("an intensity window applies to grey-level images (CT/MR), not to RGB; drop --window")

    # grey level to equalise: the image itself, or the HSV value (max of R, G, B)
    grey = arr[..., :3].max(axis=-1) if is_rgb else arr
    grey = np.ascontiguousarray(grey).reshape(B, Z, Y, X)
    g2 = grey.reshape(B, -1)
    dmin = g2.min(axis=1).astype(np.float64)
    dmax = g2.max(axis=1).astype(np.float64)
    if grey.dtype.kind == "f" and not (np.isfinite(dmin).all() and np.isfinite(dmax).all()):
        bad = "NaN" if np.isnan(dmin).any() or np.isnan(dmax).any() else "infinite"
        raise MedaiError(
            f"the image holds {bad} values; CLAHE refuses them: replace them first (e.g. np.nan_to_num)"
        )
    if is_rgb and dmin.min() < 0:
        raise MedaiError("an RGB image must not hold negative values; rescale it to [0, 1] or 0..255 first")
    if win is not None:
        mins, maxs = np.full(B, win[0]), np.full(B, win[1])
    else:
        mins, maxs = dmin, dmax

    kernel_elements = math.prod(kernel)
    clim = _spec.clip_count(clip_limit, kernel_elements)
    which, dev_name, note = _choose(backend, device, grey.size)

    def report(frac: float) -> None:
        check_stop(should_stop)
        if progress is not None:
            progress(int(round(1000 * frac)), 1000)

    report(0.0)
    value_range = (float(dmin.min()), float(dmax.max()))
    if which == "numba":
        from . import _numba

        out = _numba.run(grey, value_range, mins, maxs, kernel, nbins_i, clim, _LUT_LIMIT, report)
    else:
        from . import _torch

        try:
            out = _torch.run(grey, value_range, mins, maxs, kernel, nbins_i, clim, dev_name, report)
        except Exception as exc:  # noqa: BLE001 - only a GPU out-of-memory is recovered
            from ..runtime.device import is_out_of_memory

            if dev_name == "cpu" or not is_out_of_memory(exc) or not _numba_ok():
                raise
            _free_gpu_memory()
            from . import _numba

            note = f"{dev_name} ran out of memory for {grey.shape}; ran on the CPU (numba) instead"
            which, dev_name = "numba", "cpu"
            report(0.0)
            out = _numba.run(grey, value_range, mins, maxs, kernel, nbins_i, clim, _LUT_LIMIT, report)
    out = out.reshape(spatial)
    if is_rgb:
        out = _recolour(arr, grey.reshape(spatial), out)
    return ClaheResult(
        image=out, mode=op_mode, kernel_size=tuple(int(k) for k in ks), clip_limit=clip_limit,
        nbins=nbins_i, window=win, rgb=is_rgb, backend=which, device=dev_name,
        seconds=time.perf_counter() - t_start, notes=[note],
    )


def _free_gpu_memory() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # pragma: no cover
        pass


def _recolour(arr: np.ndarray, value: np.ndarray, new_value: np.ndarray) -> np.ndarray:
    """Scale R, G, B by new_value / value (HSV with hue and saturation kept); pass alpha through."""
    rgb = arr[..., :3].astype(np.float32)
    v = value.astype(np.float32)
    ratio = np.divide(new_value, v, out=np.zeros_like(new_value), where=v > 0)
    out = rgb * ratio[..., None]
    black = v <= 0
    if black.any():
        out[black] = new_value[black][:, None]
    np.clip(out, 0.0, 1.0, out=out)
    if arr.shape[-1] == 4:
        alpha = arr[..., 3:4].astype(np.float32)
        if arr.dtype.kind in "iu":
            alpha /= float(np.iinfo(arr.dtype).max)
        out = np.concatenate([out, np.clip(alpha, 0.0, 1.0)], axis=-1)
    return out
