"""Aggregate the CV folds from their saved weights, with the inference decision rule of the package.

  python training/segmentation/summarize_cv.py --tag v3_tumour_ --organ-tag v1_organ_ [--out results/cv.json]

Fold runs come from run_all.sh (``napari-medai train segment --recipe organ|tumour --fold k``); the slices
are read from ``$NAPARI_MEDAI_DATA/ct/lits-slices-2d`` exactly as the trainer reads them (128x128).

For each fold, the held-out patients' slices (at 128x128) are segmented with argmax and with the
"region" rule of napari_medai.segmentation.core (organ = p(liver)+p(tumour) > p(background), tumour
inside it where p(tumour) > p(liver)). Reports per-fold Dice pooled over the fold's slices as mean ± sd
over folds (never the best fold), and per-patient Dice as mean ± sd over the 16 held-out patients.
Liver = labels 1+2 (whole organ). No post-processing (single slices, no 3-D context).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from napari_medai.data_paths import shared_data_dir
from napari_medai.segmentation.core import _scores_to_labels
from napari_medai.segmentation.metrics import dice  # None when both masks are empty
from napari_medai.segmentation.networks import build_network
from napari_medai.segmentation.train import UNET_ARCH, load_slice_folder

HERE = Path(__file__).resolve().parent


def lits_slices() -> dict:
    """The LiTS slices at 128x128 as the trainer reads them."""
    root = shared_data_dir()
    if root is None:
        raise SystemExit("no data: set NAPARI_MEDAI_DATA or provide ../shared/data")
    return load_slice_folder(root / "ct" / "lits-slices-2d")


def fold_scores(k: int, tag: str, organ_tag: str | None, region: str, x, vol):
    """Class scores of fold ``k``'s networks on its held-out slices: (scores, held-out mask, run meta,
    organ run meta or None). With ``organ_tag`` the cascade organ + tumour (as shipped)."""
    from safetensors.torch import load_file

    run = HERE / "runs" / f"{tag}fold{k}"
    meta = json.loads((run / "result.json").read_text())
    va = np.isin(vol, meta["val_volumes"])
    organ_meta = None
    if organ_tag:
        net = build_network({"arch": "cascade2d", "organ": UNET_ARCH, "tumour": UNET_ARCH, "region": region})
        organ_run = HERE / "runs" / f"{organ_tag}fold{k}"
        organ_meta = json.loads((organ_run / "result.json").read_text())
        assert organ_meta["val_volumes"] == meta["val_volumes"]
        net.organ.load_state_dict(load_file(str(organ_run / "weights.safetensors")))
        net.tumour.load_state_dict(load_file(str(run / "weights.safetensors")))
    else:
        net = build_network(UNET_ARCH)
        net.load_state_dict(load_file(str(run / "weights.safetensors")))
    net.eval()
    with torch.no_grad():
        scores = torch.cat([net(torch.from_numpy(x[va][i:i + 32, None])) for i in range(0, int(va.sum()), 32)])
    return scores, va, meta, organ_meta


def main():
    """Score every fold with the argmax and region rules, print per-fold and summary Dice, optionally write JSON."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--tag", default="v3_", help="tumour-model runs (or the single model without --organ-tag)")
    ap.add_argument("--region", default="organ", choices=["organ", "union"])
    ap.add_argument("--organ-tag", default=None,
                    help="organ-model runs: evaluate the cascade organ + tumour (as shipped)")
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(2)

    d = lits_slices()
    x, y, vol = d["x"], d["y"], d["vol"]
    res = {"folds": [], "per_patient": {}}
    for k in range(args.folds):
        scores, va, meta, organ_meta = fold_scores(k, args.tag, args.organ_tag, args.region, x, vol)
        gt, vv = y[va], vol[va]
        fold = {"fold": k, "val_volumes": meta["val_volumes"], "iterations": meta["iterations"],
                "seconds": meta["seconds"]}
        if args.organ_tag:
            fold["organ_iterations"] = organ_meta["iterations"]
        for rule in ("argmax", "region"):
            p = _scores_to_labels(scores, rule).numpy()
            fold[f"liver_{rule}"] = dice(p >= 1, gt >= 1)
            fold[f"tumour_{rule}"] = dice(p == 2, gt == 2)
            for v in meta["val_volumes"]:
                m = vv == v
                rec = res["per_patient"].setdefault(int(v), {"tumour_px": int((gt[m] == 2).sum())})
                rec[f"liver_{rule}"] = dice(p[m] >= 1, gt[m] >= 1)
                rec[f"tumour_{rule}"] = dice(p[m] == 2, gt[m] == 2)
        res["folds"].append(fold)
        print(json.dumps(fold), flush=True)
    for rule in ("argmax", "region"):
        for cls in ("liver", "tumour"):
            a = np.array([f[f"{cls}_{rule}"] for f in res["folds"]])
            res[f"fold_{cls}_{rule}_mean_sd"] = [round(float(a.mean()), 4), round(float(a.std(ddof=1)), 4)]
        pl = np.array([r[f"liver_{rule}"] for r in res["per_patient"].values()])
        pt = np.array([r[f"tumour_{rule}"] for r in res["per_patient"].values() if r["tumour_px"] >= 500])
        res[f"patient_liver_{rule}_mean_sd_min"] = [
            round(float(pl.mean()), 4), round(float(pl.std(ddof=1)), 4), round(float(pl.min()), 4)
        ]
        res[f"patient_tumour_{rule}_mean_sd_n"] = (
            [round(float(pt.mean()), 4), round(float(pt.std(ddof=1)), 4), int(len(pt))] if len(pt) > 1 else None
        )
    res["note"] = ("Dice at 128x128 on held-out LiTS slices (every 2nd liver slice + 1 liver-free slice above/below), "
                   "liver = labels 1+2; per-patient tumour Dice only for patients with >= 500 tumour pixels "
                   "at 128x128.")
    print(json.dumps({k: v for k, v in res.items() if k not in ("per_patient", "folds")}, indent=1))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
