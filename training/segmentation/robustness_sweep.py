"""Issue #19: the shipped model on validation CTs presented as other scanners and exports would present them.

    PYTHONPATH=src python training/segmentation/robustness_sweep.py [--model NAME_OR_CARD] [--out results/x.json]

Each variant is the same patient and the same manual liver, changed in one way: stored in another voxel order
(all axes reversed; axes transposed) with the affine that says so; thicker slices (every 2nd / 3rd slice);
Gaussian noise of 30 HU (a low-dose scan); a soft reconstruction kernel (Gaussian blur, 1 voxel); values
clipped to a display window [-200, 300] HU; one axial slice as a 2-D image. Raw scanner values stored
without the rescale intercept (HU + 1024) must be refused with a message saying so. Liver Dice counts
tumour as liver; reported next to the unchanged volume's.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import argparse
import json
from pathlib import Path

import numpy as np

from napari_medai.data_paths import shared_data_dir
from napari_medai.errors import MedaiError
from napari_medai.io.geometry import reorder_with_affine
from napari_medai.io.readers import load_image
from napari_medai.segmentation.core import segment
from napari_medai.segmentation.metrics import dice

HERE = Path(__file__).resolve().parent
CT = (shared_data_dir() or HERE.parents[1].parent / "shared" / "data") / "ct"
CASES = {"chaos1": ("chaos-ct-1/chaos_ct_01_ct.nii.gz", "chaos-ct-1/chaos_ct_01_label.nii.gz"),
         "ircadb07": ("ircadb-07/ircadb01_07_ct.nii.gz", "ircadb-07/ircadb01_07_label.nii.gz")}


def stored_otherwise(ct, gt, affine, perm, flips):
    """The same image and label stored in another voxel order, with the affine that says so."""
    moved_ct, moved = reorder_with_affine(ct, affine, perm, flips)
    return moved_ct, reorder_with_affine(gt, affine, perm, flips)[0], moved


def thicker(ct, gt, affine, step):
    """Every step-th slice along axis 0 (slice spacing x step)."""
    a = affine.copy()
    a[:3, 0] *= step
    return ct[::step].copy(), gt[::step].copy(), a


def variants(ct, gt, affine):
    """(name, ct, gt, affine) for every presentation."""
    from scipy import ndimage

    rng = np.random.default_rng(0)
    yield "whole", ct, gt, affine
    yield ("reversed_axes", *stored_otherwise(ct, gt, affine, (0, 1, 2), (0, 1, 2)))
    yield ("transposed_axes", *stored_otherwise(ct, gt, affine, (2, 1, 0), ()))  # x-major, as some converters write
    yield ("slices_x2", *thicker(ct, gt, affine, 2))
    yield ("slices_x3", *thicker(ct, gt, affine, 3))
    yield "noise_30hu", (ct + rng.normal(0, 30, ct.shape)).astype(np.float32), gt, affine
    yield "soft_kernel", ndimage.gaussian_filter(ct.astype(np.float32), 1.0), gt, affine
    yield "window_-200_300", np.clip(ct, -200, 300), gt, affine


def main():
    """Run every variant of every case and write the report."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--cases", default="chaos1,ircadb07")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(2)
    report = {}
    for case in args.cases.split(","):
        img, lab = (load_image(CT / p) for p in CASES[case])
        ct, gt, affine = np.asarray(img.data), np.asarray(lab.data) > 0, img.geometry.affine_ras()
        spacing = np.asarray(img.geometry.spacing)
        rows = {}
        for name, v, g, a in variants(ct, gt, affine):
            sp = np.linalg.norm(a[:3, :3], axis=0)
            r = segment(v, spacing=tuple(sp), affine=a, model=args.model, device="cpu")
            rows[name] = {"liver_dice": round(dice(r.labels >= 1, g), 4), "shape": list(v.shape),
                          "tumour_ml": round(r.volumes_ml.get("tumour", 0.0), 1), "notes": [n[:60] for n in r.notes]}
            print(case, name, rows[name], flush=True)
        z = int(np.argmax(gt.reshape(gt.shape[0], -1).sum(1)))  # the slice with the most liver, as a 2-D image
        r = segment(ct[z], spacing=tuple(spacing[1:]), model=args.model, device="cpu")
        rows["one_slice_2d"] = {"liver_dice": round(dice(r.labels >= 1, gt[z]), 4), "slice": z}
        print(case, "one_slice_2d", rows["one_slice_2d"], flush=True)
        raw = (ct.astype(np.int32) + 1024).clip(0, 4095).astype(np.uint16)
        try:
            segment(raw, spacing=tuple(spacing), affine=affine, model=args.model, device="cpu")
            rows["hu_plus_1024"] = {"refused": False}
        except MedaiError as exc:
            rows["hu_plus_1024"] = {"refused": True, "message": str(exc)}
        print(case, "hu_plus_1024", rows["hu_plus_1024"], flush=True)
        report[case] = rows
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
