"""Cache the TotalSegmentator example CTs as extra 2-D training slices (liver label 5, model-made).

Usage: python training/segmentation/prepare_totalseg.py [--size 128]
Writes training/segmentation/cache/totalseg_{size}.npz in the same layout as prepare.py (x, y, vol)
with vol = 100 (example_ct) and 101 (the DICOM example). example_seg.nii.gz labels only the top 30
slices of example_ct (82-111, = example_ct_sm, whose header repeats example_ct's origin); slices 0-64
(pelvis, lower abdomen, >= 5 cm below the lowest labelled liver slice, which holds the liver tip) are
added as liver-free slices: the LiTS slices are almost all liver slices (628 of 660), so these are the
model's main view of bowel, bladder and pelvis without liver. Slices go
through the inference path's own steps: radiological orientation from the affine, window
[-40, 160] HU, padded to a square field of view in mm, antialiased resize.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from napari_medai.io.readers import load_image
from napari_medai.segmentation.core import canonical_orientation, square_field_of_view, to_canonical, window01

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1].parent / "shared" / "data" / "ct" / "totalseg-example"
LIVER = 5


def square_resize(vol: np.ndarray, spacing_yx, size: int, mode: str) -> np.ndarray:
    """(z, h, w) -> (z, size, size): zero-pad to a square field of view in mm, then resize."""
    nz, h, w = vol.shape
    hp, wp, top, left = square_field_of_view(h, w, spacing_yx)
    t = F.pad(torch.from_numpy(np.ascontiguousarray(vol, np.float32))[:, None], (left, wp - w - left, top, hp - h - top))
    if mode == "nearest":
        return F.interpolate(t, size=(size, size), mode="nearest")[:, 0].numpy()
    return F.interpolate(t, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[:, 0].numpy()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=128)
    args = ap.parse_args()
    xs, ys, vols = [], [], []
    ct = load_image(DATA / "example_ct.nii.gz")
    seg = np.asarray(load_image(DATA / "example_seg.nii.gz").data)  # (z, y, x), same grid as ct slices 82-111
    assert ct.data.shape[1:] == seg.shape[1:] and seg.shape[0] == 30, (ct.data.shape, seg.shape)
    full = np.zeros(ct.data.shape, np.float32)
    full[82:] = seg == LIVER
    keep_slices = np.r_[0:65, 82:112]  # negatives + labelled slices (load_image's axis 0 = NIfTI k)
    for image, label, keep, vol_id in [(ct, full, keep_slices, 100)]:
        xs_, ys_ = _slices(image, label, keep, args.size)
        xs.append(xs_), ys.append(ys_), vols.append(np.full(len(xs_), vol_id))
    dcm = load_image(DATA / "example_ct_dicom")
    dseg = load_image(DATA / "example_seg_dicom.nii.gz")
    pa, fa = canonical_orientation(dcm.geometry.affine_ras(), 3)
    pb, fb = canonical_orientation(dseg.geometry.affine_ras(), 3)
    img = window01(to_canonical(dcm.data, pa, fa), (-40, 160))
    lab = (to_canonical(dseg.data, pb, fb) == LIVER).astype(np.float32)
    assert img.shape == lab.shape, (img.shape, lab.shape)
    sp = tuple(dcm.geometry.spacing[p] for p in pa)
    xs.append(square_resize(img, sp[1:], args.size, "bilinear")), ys.append(square_resize(lab, sp[1:], args.size, "nearest"))
    vols.append(np.full(len(img), 101))
    x, y, v = np.concatenate(xs).astype(np.float32), np.concatenate(ys).astype(np.uint8), np.concatenate(vols)
    out = HERE / "cache" / f"totalseg_{args.size}.npz"
    out.parent.mkdir(exist_ok=True)
    np.savez(out, x=x, y=y, vol=v)
    print(out, x.shape, "liver slices", int((y.reshape(len(y), -1).max(1) > 0).sum()))


def _slices(image, label: np.ndarray, keep_k: np.ndarray, size: int):
    """Canonical (radiological) axial slices keep_k of an axial volume (array axis 0 = slices)."""
    perm, flips = canonical_orientation(image.geometry.affine_ras(), 3)
    assert perm[0] == 0, perm
    data, label = np.asarray(image.data)[keep_k], label[keep_k]
    spacing = tuple(image.geometry.spacing[p] for p in perm)
    img = window01(to_canonical(data, perm, flips), (-40, 160))
    lab = to_canonical(label, perm, flips)
    return square_resize(img, spacing[1:], size, "bilinear"), square_resize(lab, spacing[1:], size, "nearest")


if __name__ == "__main__":
    main()
