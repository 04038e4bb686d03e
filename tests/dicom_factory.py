"""Write small synthetic DICOM CT series for tests (no patient data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_series(
    folder: Path,
    n_slices: int = 5,
    *,
    rows: int = 16,
    cols: int = 12,
    spacing: float = 2.0,
    pixel_spacing=(0.8, 0.6),
    positions=None,
    series_uid: str = "1.2.826.0.1.3680043.8.498.1",
    slope: float = 1.0,
    intercept: float = -1024.0,
    tilt_mm_per_slice: float = 0.0,
    thickness_tag: float = 5.0,
    seed: int = 0,
) -> list[Path]:
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    files = []
    for index in range(n_slices):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = pydicom.uid.CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"slice_{series_uid[-3:]}_{index:03d}.dcm"
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.Modality = "CT"
        ds.PatientName = "Secret^Patient"
        ds.PatientID = "ID-12345"
        ds.SeriesInstanceUID = series_uid
        ds.Rows, ds.Columns = rows, cols
        ds.PixelSpacing = [pixel_spacing[0], pixel_spacing[1]]
        ds.SliceThickness = thickness_tag
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        z = positions[index] if positions is not None else index * spacing
        ds.ImagePositionPatient = [-100.0, -120.0 + tilt_mm_per_slice * index, float(z)]
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        pixels = (rng.integers(0, 200, size=(rows, cols)) + 1000 + index).astype(np.uint16)
        ds.PixelData = pixels.tobytes()
        ds.save_as(str(path), enforce_file_format=True)
        files.append(path)
    return files
