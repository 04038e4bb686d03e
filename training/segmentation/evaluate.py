"""Evaluate a segmentation model (card folder or name) on the held-out / external volumes.

  python training/segmentation/evaluate.py [--model PATH_OR_NAME] [--out results/external.json]

IRCADb-07 (validation only, never trained on), the TotalSegmentator example (label 5 = liver, model
made), the shipped sample CT (abdomen_ct_3mm + its liver mask) and the synthetic phantom (seed 1).
Liver Dice counts tumour as liver. Also times the full-abdomen CT (no labels).
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from napari_medai.data_paths import shared_data_dir
from napari_medai.io.geometry import canonical_orientation, from_canonical, to_canonical
from napari_medai.io.readers import load_image
from napari_medai.sample_data import CT_LIVER, CT_VOLUME
from napari_medai.sample_data.phantom import make_ct_phantom
from napari_medai.segmentation.core import segment
from napari_medai.segmentation.metrics import dice  # the one Dice (both masks empty: None)

HERE = Path(__file__).resolve().parent
CT = (shared_data_dir() or HERE.parents[1].parent / "shared" / "data") / "ct"  # $NAPARI_MEDAI_DATA


def tumour_components(labels) -> int:
    """3-D connected tumour components (label 2): on these cases (no tumour inside the labelled liver of
    IRCADb-07, CHAOS donors, the non-contrast samples) every one is a false lesion."""
    from scipy import ndimage

    return int(ndimage.label(np.asarray(labels) == 2)[1])


def main():
    """Segment each labelled validation volume and the phantom, report liver Dice, times and false lesions."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-abdomen", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    res = {}
    cases = [
        ("ircadb07", CT / "ircadb-07/ircadb01_07_ct.nii.gz", CT / "ircadb-07/ircadb01_07_label.nii.gz", None),
        ("chaos1", CT / "chaos-ct-1/chaos_ct_01_ct.nii.gz", CT / "chaos-ct-1/chaos_ct_01_label.nii.gz", None),
        ("totalseg_example_sm", CT / "totalseg-example/example_ct_sm.nii.gz",
         CT / "totalseg-example/example_seg.nii.gz", 5),
        ("sample_ct", CT_VOLUME, CT_LIVER, None),
        ("totalseg_example_dicom", CT / "totalseg-example/example_ct_dicom",
         CT / "totalseg-example/example_seg_dicom.nii.gz", 5),
    ]
    for name, img, lab, value in cases:
        a, b = load_image(img), load_image(lab)
        gt = (b.data == value) if value else (b.data > 0)
        if not np.allclose(a.geometry.affine_ras(), b.geometry.affine_ras(), atol=1e-2):
            # same voxels stored in another axis order / direction: compare in the canonical frame
            pa, fa = canonical_orientation(a.geometry.affine_ras(), 3)
            pb, fb = canonical_orientation(b.geometry.affine_ras(), 3)
            gt_c = to_canonical(gt, pb, fb)
            assert gt_c.shape == to_canonical(a.data, pa, fa).shape
            gt = from_canonical(gt_c, pa, fa)
        t = time.perf_counter()
        r = segment(
            a.data, spacing=a.geometry.spacing, affine=a.geometry.affine_ras(), model=args.model, device="cpu"
        )
        sec = time.perf_counter() - t
        raw = segment(a.data, spacing=a.geometry.spacing, affine=a.geometry.affine_ras(), model=args.model,
                      device="cpu", postprocessing=False)
        res[name] = {"liver_dice": dice(r.labels >= 1, gt), "liver_dice_no_postproc": dice(raw.labels >= 1, gt),
                     "shape": list(a.data.shape), "seconds": round(sec, 2), "volumes_ml": r.volumes_ml,
                     "gt_liver_ml": round(float(gt.sum() * np.prod(a.geometry.spacing) / 1000), 1),
                     "tumour_components": tumour_components(r.labels)}
        print(name, res[name], flush=True)
    vol, lab, sp = make_ct_phantom(seed=1)
    r = segment(vol, spacing=sp, model=args.model, device="cpu")
    res["phantom_seed1"] = {"liver_dice": dice(r.labels >= 1, lab >= 1), "tumour_dice": dice(r.labels == 2, lab == 2),
                            "tumour_components": tumour_components(r.labels),
                            "true_tumour_components": tumour_components(lab)}
    print("phantom", res["phantom_seed1"], flush=True)
    if not args.skip_abdomen:
        a = load_image(CT / "full-abdomen/abdomen_ct_512x512x146.nii.gz")
        t = time.perf_counter()
        r = segment(a.data, spacing=a.geometry.spacing, affine=a.geometry.affine_ras(), model=args.model, device="cpu")
        res["full_abdomen_512x512x146"] = {"seconds": round(time.perf_counter() - t, 2), "volumes_ml": r.volumes_ml,
                                           "tumour_components": tumour_components(r.labels)}
        print("abdomen", res["full_abdomen_512x512x146"], flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
