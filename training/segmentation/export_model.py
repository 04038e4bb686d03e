"""Copy trained weights into the package model folder and write card.json (sha256, metrics).

  python training/segmentation/export_model.py --run runs/final [--metrics results/metrics.json]
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from napari_medai.runtime.registry import sha256_of

HERE = Path(__file__).resolve().parent
DEST = HERE.parents[1] / "src" / "napari_medai" / "models" / "liver-tumor-ct"

ARCH_PARAMS = {"arch": "unet2d", "spatial_dims": 2, "in_channels": 1, "out_channels": 3,
               "channels": [16, 32, 64, 128, 256], "strides": [2, 2, 2, 2], "num_res_units": 2}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default=str(HERE / "runs" / "final"))
    ap.add_argument("--metrics", default=None, help="JSON with the measured metrics to put on the card")
    ap.add_argument("--version", default="1.0")
    args = ap.parse_args()
    DEST.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(args.run) / "weights.safetensors", DEST / "weights.safetensors")
    run = json.loads((Path(args.run) / "result.json").read_text())
    metrics = json.loads(Path(args.metrics).read_text()) if args.metrics else {}
    card = {
        "name": "liver-tumor-ct",
        "version": args.version,
        "task": "segmentation",
        "architecture": "MONAI UNet 2D (slice-wise)",
        "arch_params": ARCH_PARAMS,
        "input_spec": {"window_hu": [-40, 160], "size": [128, 128], "axes": "slice-wise axial",
                       "orientation": "radiological (rows anterior->posterior, columns patient right->left)",
                       "field_of_view": "each slice padded to a square in mm, then resized to 128x128",
                       "labels": {"1": "liver", "2": "tumour"},
                       "decision": "region"},
        "training_data": "LiTS (Bilic et al., MedIA 2023): 660 axial slices of 16 patients (volumes 0, 3-5, 7-12, "
                         "14-16, 18, 22, 23), every 2nd liver slice plus one liver-free slice above and below; manual "
                         "liver/tumour labels; green channel of the distributed JPEGs = [-40, 160] HU window; 128x128. "
                         f"Trained {run['iterations']} iterations ({run['seconds']:.0f} s on 2 CPU threads), "
                         "batch 16, AdamW 2e-3 cosine, DiceCE loss, flips/rot90/affine/intensity/gamma/noise augmentation.",
        "metrics": metrics,
        "licence": "Weights derived from LiTS data (CC BY-NC-SA 4.0): the weights carry non-commercial, "
                   "share-alike terms (CC BY-NC-SA 4.0). Code: the package licence.",
        "intended_use": "Research use only - not a medical device. Liver and liver-tumour segmentation of "
                        "contrast-enhanced abdominal CT for research, teaching and as a starting point for manual "
                        "correction; not for diagnosis, treatment planning or any clinical decision.",
        "weights": "weights.safetensors",
        "sha256": sha256_of(DEST / "weights.safetensors"),
        "notes": "Slice-wise 2-D model at 128x128: coarse boundaries (about 3 mm pixels), small tumours are missed. "
                 "See MODEL_CARD.md and docs/segmentation.md for measured numbers and weaknesses.",
    }
    (DEST / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    print(DEST, card["sha256"], (DEST / "weights.safetensors").stat().st_size)


if __name__ == "__main__":
    main()
