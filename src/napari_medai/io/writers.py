"""Writers: NIfTI (keeps the affine), TIFF (float32), PNG/JPEG (8-bit).

Every write goes to a temporary file beside the target and is renamed into place, so a failed or
cancelled job never leaves a half-written output. Writing over an input is refused.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import MedaiError
from .geometry import Geometry
from .readers import NIFTI_SUFFIXES, suffix_of

WRITABLE = (*NIFTI_SUFFIXES, ".tif", ".tiff", ".png", ".jpg", ".jpeg")


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it into place, on any failure remove it.

    So a crash, an error or a Cancel never leaves a half-written file at ``path``. ``suffix`` keeps a
    meaningful extension on the temporary file for writers that choose their format from it.
    """
    path = Path(path)
    try:
        handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".part{suffix}", dir=path.parent)
    except OSError as exc:
        raise MedaiError(f"cannot write in {path.parent} ({exc.strerror or exc}); "
                         "choose a folder you can write to") from None
    os.close(handle)
    tmp = Path(tmp_name)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; outputs get the usual permissions
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def check_output_path(out_path: str | os.PathLike, inputs: Iterable[str | os.PathLike] = ()) -> Path:
    """Validate an output path before any work starts (so a bad path fails fast)."""
    out = Path(out_path).expanduser()
    if out.is_dir():
        raise MedaiError(f"output {out} is a folder; give a file name such as {out / 'result.nii.gz'}")
    if suffix_of(out) not in WRITABLE:
        raise MedaiError(f"cannot write '{out.name}': use .nii, .nii.gz, .tif, .png or .jpg as the output suffix")
    for source in inputs:
        source = Path(source).expanduser()
        if source.exists() and (out.resolve() == source.resolve() or (out.exists() and out.samefile(source))):
            raise MedaiError(f"output {out} is the input file; "
                             "choose another output path (inputs are never overwritten)")
        parent = out.parent.resolve()
        if source.is_dir() and source.resolve() in (parent, *parent.parents):
            raise MedaiError(f"output {out} is inside the input folder {source}, which would then hold more than "
                             "its DICOM series; write it somewhere else")
    if not out.parent.exists():
        raise MedaiError(f"output folder {out.parent} does not exist; create it first")
    _refuse_unwritable(out.parent)
    return out


def ensure_output_folder(folder: str | os.PathLike) -> Path:
    """Create ``folder`` (and its parents) for outputs, or refuse in one line: a file in the way, no permission."""
    folder = Path(folder).expanduser()
    if folder.exists() and not folder.is_dir():
        raise MedaiError(f"output folder {folder} is a file; give a folder (it is created if missing)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MedaiError(f"cannot create output folder {folder} ({exc.strerror or exc}); "
                         "choose a folder you can write to") from None
    _refuse_unwritable(folder)
    return folder


def _refuse_unwritable(folder: Path) -> None:
    # Checked before any work starts; atomic_output catches what this cannot see (e.g. root on a read-only share).
    if not os.access(folder, os.W_OK | os.X_OK):
        raise MedaiError(f"cannot write in {folder} (permission denied); choose a folder you can write to")


def to_uint8(data: np.ndarray) -> np.ndarray:
    """8-bit for PNG/JPEG: [0,1] floats scale by 255, integer labels stay, other ranges min-max."""
    if data.dtype == np.uint8:
        return data
    array = np.asarray(data, dtype=np.float64)
    lo, hi = (float(array.min()), float(array.max())) if array.size else (0.0, 1.0)
    if data.dtype.kind in "iu" and lo >= 0 and hi <= 255:
        return array.astype(np.uint8)
    if not (lo >= 0 and hi <= 1):
        array = (array - lo) / (hi - lo) if hi > lo else np.zeros_like(array)
    return np.clip(np.round(array * 255), 0, 255).astype(np.uint8)


def save_image(
    out_path: str | os.PathLike,
    data: np.ndarray,
    geometry: Optional[Geometry] = None,
    *,
    inputs: Iterable[str | os.PathLike] = (),
    rgb: bool = False,
) -> Path:
    """Write ``data`` (napari order) atomically; NIfTI gets ``geometry``'s RAS affine."""
    out = check_output_path(out_path, inputs)
    suffix = suffix_of(out)
    data = np.asarray(data)
    with atomic_output(out, suffix) as tmp:
        if suffix in NIFTI_SUFFIXES:
            _write_nifti(tmp, data, geometry)
        elif suffix in (".tif", ".tiff"):
            import tifffile

            # explicit: tifffile would store a 3- or 4-slice stack (3, H, W) as one RGB(A) picture
            tifffile.imwrite(str(tmp), data, photometric="rgb" if rgb else "minisblack")
        else:
            import imageio.v3 as iio

            if data.ndim - (1 if rgb else 0) != 2:
                raise MedaiError(f"{out.name}: PNG/JPEG hold 2-D images only; write volumes as .nii.gz or .tif")
            iio.imwrite(str(tmp), to_uint8(data), extension=suffix)
    return out


def _write_nifti(path: Path, data: np.ndarray, geometry: Optional[Geometry]) -> None:
    import nibabel as nib

    if data.ndim == 2:
        data = data[None]
        geometry = None if geometry is None or geometry.ndim != 2 else _lift_2d(geometry)
    if data.ndim != 3:
        raise MedaiError(f"NIfTI output takes 2-D or 3-D arrays, got shape {data.shape}")
    geometry = geometry or Geometry.identity(3)
    affine = geometry.affine_ras()
    # Back from napari (k, j, i) to NIfTI (i, j, k).
    file_affine = affine.copy()
    file_affine[:, :3] = affine[:, [2, 1, 0]]
    if data.dtype == np.float64:
        data = data.astype(np.float32)
    if data.dtype == bool:
        data = data.astype(np.uint8)
    image = nib.Nifti1Image(np.ascontiguousarray(np.transpose(data, (2, 1, 0))), file_affine)
    image.set_qform(file_affine, code=1)
    image.set_sform(file_affine, code=1)
    nib.save(image, str(path))


def _lift_2d(geometry: Geometry) -> Geometry:
    orientation = np.eye(3)
    orientation[1:, 1:] = geometry.orientation
    return Geometry((1.0, *geometry.spacing), (0.0, *geometry.origin), orientation)
