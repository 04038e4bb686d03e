"""Liver Dice of the shipped model on the validation cases, whole volume and liver-centred crops.

  python training/segmentation/crop_validation.py [--pixel-mm 2.6,2.8,3.0,none] [--model NAME]
      [--out results/crops.json]

Cases (VALIDATION: they guide choices, never "external"): 3D-IRCADb-01 patient 7 (``ct/ircadb-07``) and
CHAOS CT patient 1 (``ct/chaos-ct-1``), from ``$NAPARI_MEDAI_DATA`` (default ``../shared/data``). Crops:
:mod:`napari_medai.segmentation.crops` (a 128^3 cube at 1.7 mm, a 160 mm cube at native spacing, the upper
half of the volume), each centred on the labelled liver. ``--pixel-mm`` overrides the card's
``input_spec.pixel_mm`` for a sweep ("none" = the square field of view resized to 128 px of version 1.2).
Liver = labels 1+2 against the manual liver label.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import argparse
import json
import time
from pathlib import Path

import numpy as np

from napari_medai.data_paths import shared_data_dir
from napari_medai.io.readers import load_image
from napari_medai.segmentation.core import load_model, segment
from napari_medai.segmentation.crops import CROP_KINDS, liver_centred_crop
from napari_medai.segmentation.metrics import dice

CASES = {"ircadb07": ("ct/ircadb-07/ircadb01_07_ct.nii.gz", "ct/ircadb-07/ircadb01_07_label.nii.gz"),
         "chaos1": ("ct/chaos-ct-1/chaos_ct_01_ct.nii.gz", "ct/chaos-ct-1/chaos_ct_01_label.nii.gz")}


def measure(case: str, model=None, crops=CROP_KINDS, postprocessing: bool = True) -> dict:
    """Segment one validation case whole and in each liver-centred crop; return Dice, volumes and seconds."""
    root = shared_data_dir()
    if root is None:
        raise SystemExit("no data: set NAPARI_MEDAI_DATA or provide ../shared/data")
    ct_path, label_path = CASES[case]
    img, lab = load_image(root / ct_path), load_image(root / label_path)
    affine, spacing = img.geometry.affine_ras(), img.geometry.spacing
    truth = np.asarray(lab.data) > 0
    t = time.perf_counter()
    r = segment(img.data, spacing=spacing, affine=affine, model=model, device="cpu", postprocessing=postprocessing)
    out = {"whole": {"dice": round(dice(r.labels > 0, truth), 4), "seconds": round(time.perf_counter() - t, 1),
                     "pred_ml": r.volumes_ml.get("liver"),
                     "true_ml": round(truth.sum() * float(np.prod(spacing)) / 1000, 1)}}
    for kind in crops:
        ct, lb, sp, aff = liver_centred_crop(img.data, lab.data, spacing, affine, kind)
        t = time.perf_counter()
        rc = segment(ct, spacing=sp, affine=aff, model=model, device="cpu", postprocessing=postprocessing)
        d = dice(rc.labels > 0, lb > 0)
        out[kind] = {"shape": list(ct.shape), "dice": round(d, 4), "minus_whole": round(d - out["whole"]["dice"], 4),
                     "seconds": round(time.perf_counter() - t, 1)}
    return out


def main() -> None:
    """Run measure() on each case for each --pixel-mm value, print each result and optionally write JSON."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--pixel-mm", default="", help="comma-separated sweep; 'none' = square FOV at 128 px (v1.2)")
    ap.add_argument("--model", default=None)
    ap.add_argument("--cases", default="ircadb07,chaos1")
    ap.add_argument("--no-postprocess", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    lm = load_model(args.model, "cpu")
    card_pixel = lm.spec.get("pixel_mm")
    sweep = [v.strip() for v in args.pixel_mm.split(",") if v.strip()] or [str(card_pixel)]
    results = {}
    for value in sweep:
        # Research sweep only: override the loaded (cached) model's pixel size for the runs below.
        lm.spec["pixel_mm"] = None if value.lower() == "none" else float(value)
        key = f"pixel_mm={value}"
        results[key] = {}
        for case in args.cases.split(","):
            results[key][case] = measure(case, args.model, postprocessing=not args.no_postprocess)
            print(key, case, json.dumps(results[key][case]), flush=True)
        worst = min(v["minus_whole"] for c in results[key].values() for k, v in c.items() if k != "whole")
        results[key]["worst_crop_minus_whole"] = round(worst, 4)
        results[key]["mean_whole_dice"] = round(
            float(np.mean([c["whole"]["dice"] for k, c in results[key].items() if isinstance(c, dict)])), 4
        )
        print(key, "worst crop - whole", worst, "mean whole", results[key]["mean_whole_dice"], flush=True)
    lm.spec["pixel_mm"] = card_pixel
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
