"""Readers for NIfTI, DICOM (file or single-series folder), PNG, JPEG and TIFF.

Every reader returns a :class:`LoadedImage` with the array in napari order and its :class:`Geometry`.
Bad input raises :class:`MedaiError` with one line that says what to do.
"""

from __future__ import annotations

import gzip
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import MedaiError
from ..runtime.memory import ensure_fits, estimate_bytes
from .geometry import Geometry

NIFTI_SUFFIXES = (".nii", ".nii.gz")
RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
# LPS -> RAS flips the first two world axes.
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


@dataclass
class LoadedImage:
    """An image or volume in napari axis order, with geometry and where it came from."""

    data: np.ndarray
    geometry: Geometry
    source: str
    modality: Optional[str] = None
    rgb: bool = False
    info: dict = field(default_factory=dict)  # non-identifying extras (never patient names or IDs)

    @property
    def spatial_shape(self) -> tuple:
        """Shape without the RGB channel axis."""
        return self.data.shape[:-1] if self.rgb else self.data.shape

    def layer_kwargs(self, kind: str = "image") -> dict:
        """Keyword arguments for ``viewer.add_image`` or, with ``kind="labels"``, ``viewer.add_labels``.

        Name, geometry (scale, translate, affine) and provenance; ``napari_medai.add_to_viewer`` is the
        one-call route.
        """
        from ..runtime.provenance import attach_provenance

        if kind not in ("image", "labels"):
            raise MedaiError(f"layer_kwargs(kind={kind!r}): use 'image' or 'labels'")
        name = Path(self.source.rstrip("/")).name
        for suffix in (*NIFTI_SUFFIXES, *RASTER_SUFFIXES, *DICOM_SUFFIXES):
            if name.lower().endswith(suffix):
                name = name[: -len(suffix)]
        record = {"source": self.source, "geometry": self.geometry.to_dict(), "modality": self.modality}
        kwargs = {"name": name if kind == "image" else f"{name} labels", "metadata": attach_provenance({}, record)}
        kwargs.update(self.geometry.layer_kwargs())
        if kind == "image":
            kwargs["rgb"] = self.rgb
            if self.modality == "CT":
                kwargs["contrast_limits"] = (-200.0, 250.0)  # a liver window; users change it freely
        return kwargs


def suffix_of(path: str | os.PathLike) -> str:
    """Lower-case image suffix of ``path`` (``.nii.gz`` as one)."""
    name = str(path).lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def can_read(path: str | os.PathLike) -> bool:
    """Whether :func:`load_image` may read ``path``: a folder, a known suffix, or a DICOM file by content."""
    path = Path(path)
    if path.is_dir():
        return True
    return suffix_of(path) in (*NIFTI_SUFFIXES, *RASTER_SUFFIXES, *DICOM_SUFFIXES) or _looks_like_dicom(path)


def load_image(path: str | os.PathLike) -> LoadedImage:
    """Read any supported file or DICOM series folder."""
    path = Path(path).expanduser()
    if not path.exists():
        raise MedaiError(f"{path} does not exist; check the path")
    if path.is_dir():
        return _read_dicom_folder(path)
    if path.stat().st_size == 0:
        raise MedaiError(f"{path} is an empty file (0 bytes); re-export or re-copy it")
    suffix = suffix_of(path)
    if suffix in NIFTI_SUFFIXES:
        return _read_nifti(path)
    if suffix in RASTER_SUFFIXES:
        return _read_raster(path)
    if suffix in DICOM_SUFFIXES or _looks_like_dicom(path):
        return _read_dicom_file(path)
    raise MedaiError(
        f"{path.name}: unsupported file type '{suffix or 'none'}'; use NIfTI, DICOM, PNG, JPEG or TIFF"
    )


def _refuse_non_finite(data: np.ndarray, path: Path) -> None:
    if data.dtype.kind == "f" and not np.all(np.isfinite(data)):
        bad = int(np.count_nonzero(~np.isfinite(data)))
        raise MedaiError(f"{path.name} has {bad} NaN or infinite values; fix or mask them before processing")


# ---------------------------------------------------------------------------------------- NIfTI
def _read_nifti(path: Path) -> LoadedImage:
    import nibabel as nib

    if path.name.lower().endswith(".gz"):
        with open(path, "rb") as handle:
            if handle.read(2) != b"\x1f\x8b":
                raise MedaiError(f"{path.name} is named .gz but is not gzip-compressed; "
                                 "rename it to .nii or re-export it")
    try:
        _check_nifti_voxel_size(path)  # before nib.load, which would silently set a zero size to 1 mm
        image = nib.load(str(path))
        shape = tuple(int(s) for s in image.shape)
        dtype = image.get_data_dtype()
    except (nib.filebasedimages.ImageFileError, OSError, EOFError, ValueError, gzip.BadGzipFile) as exc:
        raise MedaiError(f"{path.name} is not a readable NIfTI file ({_short(exc)}); re-export it") from None
    ensure_fits(estimate_bytes(shape, np.float32 if dtype.kind == "f" else dtype), f"reading {path.name} {shape}")
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) not in (2, 3):
        raise MedaiError(
            f"{path.name} has shape {tuple(image.shape)}; only 2-D images and 3-D volumes are supported, "
            "so split time points or channels into separate 3-D files"
        )
    try:
        data = np.asanyarray(image.dataobj).reshape(shape)
    except (OSError, EOFError, ValueError, gzip.BadGzipFile, Exception) as exc:  # truncated data
        raise MedaiError(f"{path.name} is truncated or corrupt ({_short(exc)}); re-export or re-copy it") from None
    if len(shape) == 2:
        data = data[:, :, None]
    _refuse_non_finite(data, path)
    # nibabel's voxel order is (i, j, k); napari's is (k, j, i).
    data = np.ascontiguousarray(np.transpose(data, (2, 1, 0)))
    affine = np.asarray(image.affine, dtype=float).copy()
    # NIfTI may store distances in metres or microns; the product works in millimetres.
    affine[:3] *= _MM_PER_UNIT.get(image.header.get_xyzt_units()[0], 1.0)
    affine[:, :3] = affine[:, [2, 1, 0]]
    try:
        geometry = Geometry.from_affine_ras(affine)
    except (ValueError, np.linalg.LinAlgError):
        raise MedaiError(f"{path.name} has a degenerate affine (a zero or non-finite voxel size); "
                         "fix its header") from None
    if data.dtype == np.float64:
        data = data.astype(np.float32)
    modality = "CT" if data.dtype.kind in "iuf" and data.size and float(data.min()) <= -500 else None
    return LoadedImage(data, geometry, str(path), modality=modality)


_MM_PER_UNIT = {"meter": 1000.0, "mm": 1.0, "micron": 0.001}


def _check_nifti_voxel_size(path: Path) -> None:
    """Refuse a header whose voxel size (pixdim) is zero or not finite on an axis the image has.

    nibabel replaces such sizes by 1 (and prints a line on stderr), which would give every volume, area
    and resampling a silently wrong scale.
    """
    import nibabel as nib
    from nibabel.openers import ImageOpener

    try:
        with ImageOpener(str(path)) as handle:
            raw = handle.read(4)
            handle.seek(0)
            nifti2 = 540 in (int.from_bytes(raw, "little"), int.from_bytes(raw, "big"))
            header = (nib.Nifti2Header if nifti2 else nib.Nifti1Header).from_fileobj(handle, check=False)
    except Exception:  # not a NIfTI header at all: nib.load names the problem
        return
    ndim = int(header["dim"][0])
    sizes = np.asarray(header["pixdim"][1:1 + min(max(ndim, 0), 3)], dtype=float)
    if sizes.size and not np.all(np.isfinite(sizes) & (sizes != 0)):
        shown = ", ".join(f"{v:g}" for v in sizes)
        raise MedaiError(f"{path.name} has voxel size ({shown}) in its header (pixdim); a zero or non-finite size "
                         "makes every distance and volume wrong: set the true voxel size in mm and re-save it")


# ---------------------------------------------------------------------------------------- rasters
def _read_raster(path: Path) -> LoadedImage:
    suffix = suffix_of(path)
    grey_file = False
    try:
        if suffix in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(str(path)) as tif:
                series = tif.series[0]
                ensure_fits(estimate_bytes(series.shape, series.dtype), f"reading {path.name} {series.shape}")
                data = series.asarray()
                # the file says whether a trailing axis of 3-4 is colour; a grey stack of 3-4 columns is not
                grey_file = series.keyframe.photometric in (tifffile.PHOTOMETRIC.MINISBLACK,
                                                            tifffile.PHOTOMETRIC.MINISWHITE)
        else:
            import imageio.v3 as iio

            data = np.asarray(iio.imread(str(path)))
    except MedaiError:
        raise
    except Exception as exc:  # imageio/tifffile raise many types for corrupt files
        raise MedaiError(f"{path.name} is not a readable {suffix[1:].upper()} image ({_short(exc)}); "
                         "re-export it") from None
    _refuse_non_finite(data, path)
    rgb = False
    if suffix == ".png" and data.ndim == 3 and data.shape[-1] == 2:
        data = np.ascontiguousarray(data[..., 0])  # grey + alpha: PNG has no other two-channel kind
    # A trailing axis of 3-4 on a larger image is colour (RGB ultrasound screenshots); (3, H, W) is a stack.
    if data.ndim == 3 and data.shape[-1] in (3, 4) and data.shape[0] > 4 and not grey_file:
        data = data[..., :3]
        if np.array_equal(data[..., 0], data[..., 1]) and np.array_equal(data[..., 0], data[..., 2]):
            data = np.ascontiguousarray(data[..., 0])  # grey stored as RGB
        else:
            rgb = True
    spatial = data.ndim - (1 if rgb else 0)
    if spatial not in (2, 3) or min(data.shape[:spatial]) < 1:
        raise MedaiError(f"{path.name} has shape {data.shape}; expected a 2-D image or a 3-D stack")
    modality = "US" if rgb or "us" in path.parent.name.lower() else None
    return LoadedImage(data, Geometry.identity(spatial), str(path), modality=modality, rgb=rgb)


# ---------------------------------------------------------------------------------------- DICOM
def _looks_like_dicom(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def _dicom_pixels(ds, path: Path) -> np.ndarray:
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # pydicom raises many types for missing/compressed/corrupt pixel data
        raise MedaiError(f"{path.name}: cannot decode DICOM pixel data ({_short(exc)}); "
                         "re-export it uncompressed") from None
    slope = float(getattr(ds, "RescaleSlope", 1) or 1)
    intercept = float(getattr(ds, "RescaleIntercept", 0) or 0)
    if slope != 1 or intercept != 0:
        pixels = pixels.astype(np.float32) * slope + intercept
        if np.allclose(pixels, np.round(pixels)) and pixels.min() >= -32768 and pixels.max() <= 32767:
            pixels = pixels.astype(np.int16)
    return pixels


def _pixel_spacing(ds, name: str) -> list:
    """PixelSpacing (row, column) in mm; 1 mm when absent, refused when zero, negative or not finite."""
    try:
        spacing = [float(v) for v in getattr(ds, "PixelSpacing", None) or [1.0, 1.0]]
    except (TypeError, ValueError):
        spacing = [float("nan")]
    if len(spacing) != 2 or not all(np.isfinite(v) and v > 0 for v in spacing):
        raise MedaiError(f"{name} has PixelSpacing {getattr(ds, 'PixelSpacing', None)!s} in its header; a zero or "
                         "non-finite pixel size makes every distance and volume wrong: re-export it from the scanner")
    return spacing


def _dicom_info(ds) -> dict:
    # Only acquisition facts; never patient names, IDs, dates of birth or institution.
    keys = ("Modality", "Manufacturer", "SeriesDescription", "KVP", "ConvolutionKernel")
    return {k: str(getattr(ds, k)) for k in keys if hasattr(ds, k)}


def _read_dicom_file(path: Path) -> LoadedImage:
    import pydicom

    try:
        ds = pydicom.dcmread(str(path))
    except Exception as exc:
        raise MedaiError(f"{path.name} is not a readable DICOM file ({_short(exc)}); check the file") from None
    pixels = _dicom_pixels(ds, path)
    rgb = getattr(ds, "PhotometricInterpretation", "") in ("RGB", "YBR_FULL", "YBR_FULL_422") and pixels.shape[-1] == 3
    spacing = _pixel_spacing(ds, path.name)
    spatial = pixels.ndim - (1 if rgb else 0)
    if spatial == 3:  # multi-frame (cine); frame spacing is not a distance
        geometry = Geometry.identity(3, (1.0, spacing[0], spacing[1]))
    elif spatial == 2:
        geometry = Geometry.identity(2, spacing)
    else:
        raise MedaiError(f"{path.name} has pixel data of shape {pixels.shape}; expected 2-D or multi-frame")
    return LoadedImage(pixels, geometry, str(path), modality=getattr(ds, "Modality", None), rgb=rgb,
                       info=_dicom_info(ds))


def _read_dicom_folder(folder: Path) -> LoadedImage:
    import pydicom

    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise MedaiError(f"folder {folder} is empty; give a folder holding one DICOM series")
    headers, skipped = [], []
    for file in files:
        try:
            ds = pydicom.dcmread(str(file), stop_before_pixels=True)
            if "ImagePositionPatient" in ds and "ImageOrientationPatient" in ds:
                headers.append((file, ds))
            else:
                skipped.append(file.name)
        except Exception:
            skipped.append(file.name)
    if not headers:
        images = [f for f in files if suffix_of(f) in (*NIFTI_SUFFIXES, *RASTER_SUFFIXES)]
        if images:
            raise MedaiError(f"folder {folder} holds {len(images)} image file(s) (e.g. {images[0].name}) and no DICOM "
                             "series, and a folder is read as one DICOM series: give the image files themselves "
                             f"(e.g. {folder / '*'})")
        raise MedaiError(f"folder {folder} holds no DICOM images with positions; give a folder with one CT/MR series")
    series = {}
    for file, ds in headers:
        series.setdefault(str(getattr(ds, "SeriesInstanceUID", "")), []).append((file, ds))
    if len(series) > 1:
        sizes = ", ".join(f"{uid[-12:]} ({len(v)} files)" for uid, v in series.items())
        raise MedaiError(f"folder {folder} holds {len(series)} DICOM series [{sizes}]; "
                         "put each series in its own folder")
    slices = next(iter(series.values()))
    orientation = np.array([float(v) for v in slices[0][1].ImageOrientationPatient])
    if orientation.size != 6:
        orientation = np.full(6, np.nan)
    row_dir, col_dir = orientation[:3], orientation[3:]
    normal = np.cross(row_dir, col_dir)
    if not np.all(np.isfinite(orientation)) or not 0.9 < np.linalg.norm(normal) < 1.1:
        raise MedaiError(f"folder {folder}: ImageOrientationPatient {orientation.tolist()} is not two perpendicular "
                         "unit directions; the series cannot be placed in space: re-export it from the scanner")
    positions = np.array([[float(v) for v in ds.ImagePositionPatient] for _, ds in slices])
    order = np.argsort(positions @ normal)
    slices = [slices[i] for i in order]
    positions = positions[order]
    distances = positions @ normal
    pixel_spacing = _pixel_spacing(slices[0][1], f"folder {folder}")
    rows, cols = int(slices[0][1].Rows), int(slices[0][1].Columns)
    ensure_fits(estimate_bytes((len(slices), rows, cols), np.float32), f"reading DICOM series {folder.name}")
    if len(slices) > 1:
        gaps = np.diff(distances)
        slice_spacing = float(np.median(gaps))
        if slice_spacing <= 0:
            raise MedaiError(f"folder {folder} has several slices at the same position; remove duplicates")
        if np.max(np.abs(gaps - slice_spacing)) > 0.1 * slice_spacing:
            raise MedaiError(
                f"folder {folder}: slice gaps vary from {gaps.min():.2f} to {gaps.max():.2f} mm (missing slices?); "
                "complete the series or resample it"
            )
        step = positions[1] - positions[0]
        tilt = np.degrees(np.arccos(min(1.0, abs(step @ normal) / np.linalg.norm(step))))
        if tilt > 0.5:
            warnings.warn(f"{folder.name}: gantry tilt of {tilt:.1f} degrees; slices are sheared", stacklevel=2)
            slice_axis = step  # keep the true (sheared) slice direction
        else:
            slice_axis = normal * slice_spacing
    else:
        thickness = float(getattr(slices[0][1], "SliceThickness", 1.0) or 1.0)
        slice_axis = normal * thickness
    volume = np.empty((len(slices), rows, cols), dtype=np.float32)
    integer = True
    for index, (file, _) in enumerate(slices):
        try:
            ds = pydicom.dcmread(str(file))
        except Exception as exc:
            raise MedaiError(f"{file.name} in {folder} is corrupt ({_short(exc)}); "
                             "remove or replace that slice") from None
        pixels = _dicom_pixels(ds, file)
        if pixels.shape != (rows, cols):
            raise MedaiError(f"{file.name} has shape {pixels.shape}, the series {rows}x{cols}; remove the odd file")
        integer &= pixels.dtype.kind in "iu"
        volume[index] = pixels
    if integer and volume.min() >= -32768 and volume.max() <= 32767:
        volume = volume.astype(np.int16)
    # Array index (k, row, col) -> LPS: col steps along row_dir, row steps along col_dir.
    affine_lps = np.eye(4)
    affine_lps[:3, 0] = slice_axis
    affine_lps[:3, 1] = col_dir * pixel_spacing[0]
    affine_lps[:3, 2] = row_dir * pixel_spacing[1]
    affine_lps[:3, 3] = positions[0]
    affine_ras = affine_lps.copy()
    affine_ras[:3] = _LPS_TO_RAS @ affine_lps[:3]
    info = _dicom_info(slices[0][1])
    if skipped:
        info["skipped_files"] = len(skipped)
    return LoadedImage(volume, Geometry.from_affine_ras(affine_ras), str(folder), modality=info.get("Modality"),
                       info=info)


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:160]
