r"""Copy a trained embedder into the package and put the cross-validated metrics on its card.

Usage (paths relative to training/retrieval):

  python training/retrieval/ship.py --run runs/final_e60_x2 \
      --summary "results/summary_cs_e60+cs_e60_seed1.json" --version 1.2.0
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent

from data import CLASSES  # noqa: E402

DEST = HERE.parents[1] / "src" / "napari_medai" / "models" / "embedder-brain-mri"


def main():
    """Copy the run's weights and card into the package, with the summary's CV metrics on the card."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True)
    ap.add_argument("--summary", required=True)
    ap.add_argument("--version", required=True)
    ap.add_argument("--extra-metrics", default="{}", help="JSON merged into card.metrics")
    a = ap.parse_args()
    run, summary = HERE / a.run, json.loads((HERE / a.summary).read_text())
    card = json.loads((run / "card.json").read_text())
    old = json.loads((DEST / "card.json").read_text())
    per_class = {c: {"mAP": round(v["mAP"][0], 4), "mAP_sd": round(v["mAP"][1], 4), "P@10": round(v["P@10"][0], 4),
                     "P@10_sd": round(v["P@10"][1], 4)} for c, v in summary.items() if c in CLASSES}
    metrics = {
        "protocol": old["metrics"]["protocol"],
        "mAP": {"mean": round(summary["all"]["mAP"][0], 4), "sd": round(summary["all"]["mAP"][1], 4),
                "per_fold": summary["all"]["per_fold_mAP"]},
        "P@10": {"mean": round(summary["all"]["P@10"][0], 4), "sd": round(summary["all"]["P@10"][1], 4)},
        "per_class": per_class,
        "raw_pixel_baseline_mAP": old["metrics"]["raw_pixel_baseline_mAP"],
        **json.loads(a.extra_metrics),
    }
    card.update(version=a.version, metrics=metrics, name=DEST.name)
    shutil.copyfile(run / card["weights"], DEST / card["weights"])
    (DEST / "card.json").write_text(json.dumps(card, indent=1) + "\n")
    print(DEST, card["sha256"], metrics["mAP"])


if __name__ == "__main__":
    main()
