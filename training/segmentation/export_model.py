"""Copy trained weights into the package model folder and write card.json (sha256, metrics).

  python training/segmentation/export_model.py --run runs/final [--metrics results/metrics.json]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from napari_medai.runtime.registry import sha256_of

HERE = Path(__file__).resolve().parent
DEST = HERE.parents[1] / "src" / "napari_medai" / "models" / "liver-tumor-ct"

UNET = {"arch": "unet2d", "spatial_dims": 2, "in_channels": 1, "out_channels": 3,
        "channels": [16, 32, 64, 128, 256], "strides": [2, 2, 2, 2], "num_res_units": 2}
ARCH_PARAMS = {"arch": "cascade2d", "out_channels": 3, "organ": UNET, "tumour": UNET}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default=str(HERE / "runs" / "final"), help="organ model run (v1 recipe)")
    ap.add_argument("--tumour-run", default=str(HERE / "runs" / "v3_final"), help="tumour model run (v3 recipe)")
    ap.add_argument("--metrics", default=None, help="JSON with the measured metrics to put on the card")
    ap.add_argument("--cv", default=None, help="results/cv_*.json from summarize_cv.py")
    ap.add_argument("--external", default=None, help="results/external_*.json from evaluate.py")
    ap.add_argument("--version", default="1.0")
    ap.add_argument("--dest", default=str(DEST), help="model folder to write (default: the packaged liver-tumor-ct)")
    ap.add_argument("--region", default="organ", choices=["organ", "union"],  # union: see card metrics
                    help="organ region from the organ network only, or from either network")
    args = ap.parse_args()
    dest = Path(args.dest)
    dest.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import load_file, save_file

    organ = load_file(str(Path(args.run) / "weights.safetensors"))
    tumour = load_file(str(Path(args.tumour_run) / "weights.safetensors"))
    merged = {**{f"organ.{k}": v for k, v in organ.items()}, **{f"tumour.{k}": v for k, v in tumour.items()}}
    save_file(merged, str(dest / "weights.safetensors"))
    run = json.loads((Path(args.run) / "result.json").read_text())
    trun = json.loads((Path(args.tumour_run) / "result.json").read_text())
    metrics = json.loads(Path(args.metrics).read_text()) if args.metrics else {}
    if args.cv:
        cv = json.loads(Path(args.cv).read_text())
        metrics["lits_cv_4fold_patient_grouped"] = {
            "liver_dice_mean_sd_over_folds": cv["fold_liver_region_mean_sd"],
            "tumour_dice_mean_sd_over_folds": cv["fold_tumour_region_mean_sd"],
            "liver_dice_per_patient_mean_sd_min": cv["patient_liver_region_mean_sd_min"],
            "tumour_dice_per_patient_mean_sd_n": cv["patient_tumour_region_mean_sd_n"],
            "iterations_per_fold": cv["folds"][0]["iterations"],
            "note": "held-out LiTS slices at 128x128, slice-wise, no 3-D post-processing; folds trained "
                    f"{cv['folds'][0]['iterations']} iterations, the shipped model {run['iterations']}",
        }
    if args.external:
        ext = json.loads(Path(args.external).read_text())
        metrics["ircadb01_07_liver_dice"] = round(ext["ircadb07"]["liver_dice"], 4)
        metrics["totalsegmentator_example_ct_sm_liver_dice_vs_label5"] = round(ext["totalseg_example_sm"]["liver_dice"], 4)
        if "totalseg_example_dicom" in ext:
            metrics["totalsegmentator_example_dicom_liver_dice_vs_label5"] = round(ext["totalseg_example_dicom"]["liver_dice"], 4)
        metrics["phantom_seed1_liver_dice"] = round(ext["phantom_seed1"]["liver_dice"], 4)
        metrics["external_note"] = ("IRCADb-07: manual liver label, validation only (never trained on); TotalSegmentator "
                                    "labels are model-made; the packaged sample CT is the TotalSegmentator example_ct_sm")
    card = {
        "name": "liver-tumor-ct",
        "version": args.version,
        "task": "segmentation",
        "architecture": "MONAI UNet 2D (slice-wise), organ + tumour cascade",
        "arch_params": {**ARCH_PARAMS, "region": args.region},
        "input_spec": {"window_hu": [-40, 160], "size": [128, 128], "axes": "slice-wise axial",
                       "orientation": "radiological (rows anterior->posterior, columns patient right->left)",
                       "field_of_view": "each slice padded to a square in mm, then resized to 128x128",
                       "labels": {"1": "liver", "2": "tumour"},
                       "decision": "region",
                       # portal-venous training data; outside this the result carries a warning note
                       "liver_hu_range": [70, 200]},
        "training_data": "LiTS (Bilic et al., MedIA 2023): 660 axial slices of 16 patients (volumes 0, 3-5, 7-12, "
                         "14-16, 18, 22, 23), every 2nd liver slice plus one liver-free slice above and below; manual "
                         "liver/tumour labels; green channel of the distributed JPEGs = [-40, 160] HU window; 128x128. "
                         "Two UNets, batch 16, AdamW 2e-3 cosine, flips/rot90/affine/intensity/gamma/noise augmentation: "
                         f"organ network {run['iterations']} iterations (per-sample DiceCE, zoom x0.8-1.25, tumour slices x2); "
                         f"tumour network {trun['iterations']} iterations (batch Dice without background + CE weights 1/1/6, "
                         "zoom x0.67-1.5, tumour slices x4). CPU only.",
        "metrics": metrics,
        "licence": "Weights derived from LiTS data (CC BY-NC-SA 4.0): the weights carry non-commercial, "
                   "share-alike terms (CC BY-NC-SA 4.0). Code: the package licence.",
        "intended_use": "Research use only - not a medical device. Liver and liver-tumour segmentation of "
                        "contrast-enhanced abdominal CT for research, teaching and as a starting point for manual "
                        "correction; not for diagnosis, treatment planning or any clinical decision.",
        "weights": "weights.safetensors",
        "sha256": sha256_of(dest / "weights.safetensors"),
        "notes": "Slice-wise 2-D model at 128x128: coarse boundaries (about 3 mm pixels), small tumours are missed. "
                 "See MODEL_CARD.md and docs/segmentation.md for measured numbers and weaknesses.",
    }
    (dest / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    print(dest, card["sha256"], (dest / "weights.safetensors").stat().st_size)


if __name__ == "__main__":
    main()
