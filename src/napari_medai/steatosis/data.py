"""Training-data readers -> :class:`SteatosisData` (28x28 liver crops in original grey levels).

- the Byra et al. 2018 MATLAB file as it is (struct array ``data``: ``id``, ``class``, ``fat``,
  ``images`` 10x434x636 uint8): frames have no ROI, so the liver patch is guessed
  (:func:`preprocess.auto_liver_patches`) and no hepatorenal index is available;
- a folder with one sub-folder per grade (``0``..``3``, ``S0``..``S3`` or normal/mild/moderate/severe);
- a CSV with ``path`` (or ``file``), ``patient_id``, ``grade`` and optional ``liver_roi_x/y``
  (+ ``liver_roi_w/h``, default 28), ``kidney_roi_x/y`` and ``hepatorenal_index``.
  ``../shared/data/steatosis/labels.csv`` works as is: its crops were multiplied by the index (see
  the data README), which is undone.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import MedaiError
from .preprocess import CROP_CALIBRATION, PATCH, auto_liver_patches, to_gray

GRADE_NAMES = {"0": 0, "1": 1, "2": 2, "3": 3, "s0": 0, "s1": 1, "s2": 2, "s3": 3, "normal": 0, "mild": 1,
               "moderate": 2, "severe": 3}


@dataclass
class SteatosisData:
    """A training set: one 28x28 liver crop per image, with its grade, patient id and hepatorenal index."""

    crops: np.ndarray  # (n, 28, 28) float32 grey levels 0..255
    grade: np.ndarray  # (n,) int
    patient: np.ndarray  # (n,) str
    hri: np.ndarray  # (n,) float, NaN where unknown
    source: str = ""
    notes: list = field(default_factory=list)

    def __len__(self):
        return int(self.grade.size)

    @property
    def has_index(self) -> bool:
        """True when every image has a hepatorenal index (models that use it can train on this set)."""
        return bool(np.isfinite(self.hri).all())

    def describe(self) -> dict:
        """Counts for the training report: images, patients, patients per grade, index present, notes."""
        pats = {}
        for p, g in zip(self.patient, self.grade):
            pats[p] = int(g)
        per_grade = {f"S{g}": sum(1 for v in pats.values() if v == g) for g in range(4)}
        return {"images": len(self), "patients": len(pats), "patients_per_grade": per_grade,
                "hepatorenal_index": self.has_index, "source": self.source, "notes": self.notes}


def fat_to_grade(fat: float) -> int:
    """S0 < 5 %, S1 5-33 %, S2 34-66 %, S3 > 66 % (biopsy fat fraction)."""
    if fat < 5:
        return 0
    if fat <= 33:
        return 1
    if fat <= 66:
        return 2
    return 3


def _crop(gray, x, y, w=PATCH, h=PATCH) -> np.ndarray:
    from skimage.transform import resize

    H, W = gray.shape
    x, y = int(round(x)), int(round(y))
    if x < 0 or y < 0 or x + w > W or y + h > H:
        raise MedaiError(f"ROI {x},{y},{w},{h} lies outside the {W}x{H} image; fix the ROI columns")
    c = gray[y:y + h, x:x + w]
    if c.shape != (PATCH, PATCH):
        c = resize(c, (PATCH, PATCH), order=1, preserve_range=True, anti_aliasing=True)
    return c.astype(np.float32)


def _read_gray(path: Path) -> np.ndarray:
    from ..io.readers import load_image

    return to_gray(load_image(path).data, what=str(path.name))


def read_mat(path, frames_per_patient: Optional[int] = None) -> SteatosisData:
    """Read the Byra et al. 2018 MATLAB file; the liver patch of each frame is an automatic guess.

    Args:
        path: the ``.mat`` file (struct array ``data`` with ``id``, ``fat`` and ``images``).
        frames_per_patient: keep only the first N frames of each patient; None keeps all.

    Raises:
        MedaiError: the file does not read as MATLAB or lacks the expected struct fields.
    """
    import scipy.io

    try:
        mat = scipy.io.loadmat(str(path), squeeze_me=True, struct_as_record=False)
    except Exception as exc:
        raise MedaiError(f"cannot read {Path(path).name} as a MATLAB file: {exc}".splitlines()[0]) from None
    if "data" not in mat:
        raise MedaiError(f"{Path(path).name} has no struct 'data'; "
                         "expected the Byra et al. 2018 layout (id, class, fat, images)")
    records = np.atleast_1d(mat["data"])
    crops, grades, patients, notes = [], [], [], []
    for rec in records:
        try:
            pid, fat, images = rec.id, float(rec.fat), np.asarray(rec.images)
        except AttributeError:
            raise MedaiError(f"{Path(path).name}: struct 'data' lacks id/fat/images fields") from None
        if images.ndim == 2:
            images = images[None]
        for f in images[:frames_per_patient]:
            gray = to_gray(f)
            x, y, w, h = auto_liver_patches(gray)[0]
            crops.append(_crop(gray, x, y))
            grades.append(fat_to_grade(fat))
            patients.append(str(int(np.asarray(pid).ravel()[0])))
    notes.append("no ROIs in the .mat: the liver patch is an automatic guess at 35 % sector depth; "
                 "no hepatorenal index")
    return SteatosisData(np.stack(crops), np.asarray(grades), np.asarray(patients), np.full(len(grades), np.nan),
                         source=str(path), notes=notes)


def read_folder(path) -> SteatosisData:
    """Read images sorted into one sub-folder per grade; larger images get an automatic liver patch.

    The patient id comes from an ``ID``/``patient``/``pid`` number in the file name, else each image
    is its own patient (and the notes say so).

    Raises:
        MedaiError: no grade sub-folder holds an image.
    """
    root = Path(path)
    crops, grades, patients = [], [], []
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        g = GRADE_NAMES.get(sub.name.lower())
        if g is None:
            continue
        for f in sorted(sub.iterdir()):
            if f.suffix.lower() not in (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"):
                continue
            gray = _read_gray(f)
            if gray.shape != (PATCH, PATCH):
                x, y, _, _ = auto_liver_patches(gray)[0] if min(gray.shape) >= 64 else (0, 0, 0, 0)
                gray = _crop(gray, x, y) if min(gray.shape) >= 64 else _crop(gray, 0, 0, gray.shape[1], gray.shape[0])
            m = re.search(r"(?:ID|patient|pid)[_-]?(\d+)", f.stem, re.I)
            crops.append(gray.astype(np.float32))
            grades.append(g)
            patients.append(m.group(1) if m else f.stem)
    if not crops:
        raise MedaiError(f"{root} holds no grade sub-folders with images; "
                         "use 0..3, S0..S3 or normal/mild/moderate/severe")
    if any(p != Path(p).stem for p in patients):
        notes = []
    else:
        notes = ["no patient id in file names: each image is its own patient"]
    return SteatosisData(np.stack(crops), np.asarray(grades), np.asarray(patients), np.full(len(grades), np.nan),
                         source=str(root), notes=notes)


def read_csv(path, crops_scaled_by_index: Optional[bool] = None) -> SteatosisData:
    """Read a CSV of images with patient ids, grades and optional liver/kidney ROIs and index.

    Args:
        path: the CSV; relative image paths are taken from its folder.
        crops_scaled_by_index: whether 28x28 crops were multiplied by the hepatorenal index (the
            scaling is undone). None = auto: True when the row gives ``hepatorenal_index`` and the
            image is a 28x28 crop named ``ROI_*``, as in the shared Byra crops.

    Raises:
        MedaiError: the CSV is empty or lacks the path, patient_id or grade columns.
    """
    path = Path(path)
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise MedaiError(f"{path.name} has no rows; give a CSV with path, patient_id and grade columns")
    cols = set(rows[0])
    pcol = "path" if "path" in cols else "file" if "file" in cols else None
    if pcol is None or "patient_id" not in cols or not ({"grade", "class"} & cols):
        raise MedaiError(f"{path.name} needs columns path (or file), patient_id and grade; it has {sorted(cols)}")
    gcol = "grade" if "grade" in cols else "class"
    crops, grades, patients, hris = [], [], [], []
    notes = []
    for row in rows:
        img_path = Path(row[pcol])
        if not img_path.is_absolute():
            img_path = path.parent / img_path
        gray = _read_gray(img_path)
        hri = float(row["hepatorenal_index"]) if row.get("hepatorenal_index") not in (None, "") else np.nan
        if gray.shape == (PATCH, PATCH):
            crop = gray.astype(np.float32)
            scaled = crops_scaled_by_index
            if scaled is None:
                scaled = np.isfinite(hri) and img_path.name.startswith("ROI_")
            if scaled and np.isfinite(hri):
                crop = crop / np.float32(hri * CROP_CALIBRATION)
        else:
            lx, ly = row.get("liver_roi_x"), row.get("liver_roi_y")
            w = int(float(row.get("liver_roi_w") or PATCH))
            h = int(float(row.get("liver_roi_h") or PATCH))
            if lx in (None, "") or ly in (None, ""):
                lx, ly, w, h = auto_liver_patches(gray)[0]
            crop = _crop(gray, float(lx), float(ly), w, h)
            kx, ky = row.get("kidney_roi_x"), row.get("kidney_roi_y")
            if not np.isfinite(hri) and kx not in (None, "") and ky not in (None, ""):
                from .features import hepatorenal_index

                hri = hepatorenal_index(gray[int(float(ly)):int(float(ly)) + h, int(float(lx)):int(float(lx)) + w],
                                        gray[int(float(ky)):int(float(ky)) + h, int(float(kx)):int(float(kx)) + w])
        crops.append(crop)
        grades.append(int(float(row[gcol])))
        patients.append(str(row["patient_id"]))
        hris.append(hri)
    return SteatosisData(np.stack(crops), np.asarray(grades), np.asarray(patients), np.asarray(hris, np.float64),
                         source=str(path), notes=notes)


def read_any(path) -> SteatosisData:
    """Pick the reader by what ``path`` is: a folder (its ``labels.csv`` if present), a ``.mat`` or a CSV.

    Raises:
        MedaiError: ``path`` is none of these.
    """
    p = Path(path)
    if p.is_dir():
        if (p / "labels.csv").is_file():
            return read_csv(p / "labels.csv")
        return read_folder(p)
    if p.suffix.lower() == ".mat":
        return read_mat(p)
    if p.suffix.lower() == ".csv":
        return read_csv(p)
    raise MedaiError(f"{p} is not a .mat file, a CSV or a folder; see `napari-medai train steatosis --help`")
