"""Aggregate the CV folds: per-fold Dice (pooled over the fold's held-out slices) as mean ± sd over folds,
and per-patient Dice as mean ± sd over the 16 held-out patients.

  python training/segmentation/summarize_cv.py --tag v2_ [--out results/cv_v2.json]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tag", default="v2_")
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    folds = [json.loads((HERE / "runs" / f"{args.tag}fold{k}" / "result.json").read_text()) for k in range(args.folds)]
    liver = np.array([f["liver_dice"] for f in folds])
    tumour = np.array([f["tumour_dice"] for f in folds])
    per = {int(v): d for f in folds for v, d in f["per_volume"].items()}
    pl = np.array([d["liver"] for d in per.values()])
    pt = np.array([d["tumour"] for d in per.values() if d["tumour_px"] >= 500])
    res = {
        "folds": [{k: f[k] for k in ("fold", "val_volumes", "iterations", "seconds", "liver_dice", "tumour_dice")} for f in folds],
        "fold_liver_dice_mean_sd": [float(liver.mean()), float(liver.std(ddof=1))],
        "fold_tumour_dice_mean_sd": [float(tumour.mean()), float(tumour.std(ddof=1))],
        "patient_liver_dice_mean_sd_min": [float(pl.mean()), float(pl.std(ddof=1)), float(pl.min())],
        "patient_tumour_dice_mean_sd_n (patients with >= 500 tumour px at 128x128)": [float(pt.mean()), float(pt.std(ddof=1)), int(len(pt))] if len(pt) > 1 else None,
        "per_patient": per,
        "note": "Dice at 128x128 on held-out LiTS slices (every 2nd liver slice + 1 liver-free slice above/below); "
                "liver = labels 1+2.",
    }
    text = json.dumps(res, indent=1)
    print(json.dumps({k: v for k, v in res.items() if k != "per_patient"}, indent=1))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
