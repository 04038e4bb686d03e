"""Sample data shipped inside the package (see README.md here for sources and licences)."""

from __future__ import annotations

from pathlib import Path

SAMPLE_DIR = Path(__file__).resolve().parent

BMODE_FRAME = SAMPLE_DIR / "bmode_liver_id1_fat3.jpeg"
CT_VOLUME = SAMPLE_DIR / "abdomen_ct_3mm.nii.gz"
CT_LIVER = SAMPLE_DIR / "abdomen_ct_3mm_liver.nii.gz"
BRAIN_MRI = sorted(SAMPLE_DIR.glob("brain_mri_*.jpg"))


def brain_mri_label(path: Path) -> str:
    """The class in a sample brain MRI file name, e.g. ``brain_mri_glioma_717.jpg`` -> glioma."""
    return Path(path).stem.split("_")[2]

# ROIs of the sample B-mode frame (frame 0 of patient 1 in the Byra data set), as (x, y, w, h) pixels.
BMODE_LIVER_ROI = (288, 200, 28, 28)
BMODE_KIDNEY_ROI = (223, 201, 28, 28)
