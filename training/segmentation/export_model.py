"""Copy trained weights into the package model folder and write card.json (sha256, metrics).

  python training/segmentation/export_model.py --run runs/final/organ --tumour-run runs/final/tumour
      [--cv ...] [--external ...]

The runs are `napari-medai train segment --recipe cascade` stage folders (weights.safetensors + result.json);
the card is written by the package (`segmentation.train.write_cascade_model`), with the measured metrics added.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from napari_medai.segmentation.train import write_cascade_model

HERE = Path(__file__).resolve().parent
DEST = HERE.parents[1] / "src" / "napari_medai" / "models" / "liver-tumor-ct"


def main():
    """Write the cascade model folder and card from the two runs, with the given CV and external metrics."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default=str(HERE / "runs" / "final" / "organ"), help="organ network run")
    ap.add_argument("--tumour-run", default=str(HERE / "runs" / "final" / "tumour"), help="tumour network run")
    ap.add_argument("--pixel-mm", type=float, default=3.0)
    ap.add_argument("--open-mm", type=float, default=5.0,
                    help="post-processing opening radius (input_spec.postprocess_open_mm)")
    ap.add_argument("--metrics", default=None, help="JSON with the measured metrics to put on the card")
    ap.add_argument("--cv", default=None, help="results/cv_*.json from summarize_cv.py")
    ap.add_argument("--external", default=None, help="results/external_*.json from evaluate.py")
    ap.add_argument("--version", default="1.0")
    ap.add_argument("--dest", default=str(DEST), help="model folder to write (default: the packaged liver-tumor-ct)")
    args = ap.parse_args()
    dest = Path(args.dest)
    dest.mkdir(parents=True, exist_ok=True)
    run = json.loads((Path(args.run) / "result.json").read_text())
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
        metrics["totalsegmentator_example_ct_sm_liver_dice_vs_label5"] = round(
            ext["totalseg_example_sm"]["liver_dice"], 4
        )
        if "totalseg_example_dicom" in ext:
            metrics["totalsegmentator_example_dicom_liver_dice_vs_label5"] = round(
                ext["totalseg_example_dicom"]["liver_dice"], 4
            )
        metrics["phantom_seed1_liver_dice"] = round(ext["phantom_seed1"]["liver_dice"], 4)
        metrics["external_note"] = ("IRCADb-07: manual liver label, a VALIDATION case (never trained on; guided "
                                    "choices); TotalSegmentator labels are model-made; the packaged sample CT is "
                                    "the TotalSegmentator example_ct_sm")
    card = write_cascade_model(args.run, args.tumour_run, dest, pixel_mm=args.pixel_mm, version=args.version,
                               metrics=metrics, open_mm=args.open_mm)
    print(dest, card["sha256"], (dest / "weights.safetensors").stat().st_size)


if __name__ == "__main__":
    main()
