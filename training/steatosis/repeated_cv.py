"""Repeated patient-grouped 5-fold CV of the classical candidates (5 different fold seeds).

One seed's folds decide the shipped model in build_models.py; this script shows how much the
ranking depends on the split (47 patients: one patient moves balanced accuracy by several points).

    .venv/bin/python training/steatosis/repeated_cv.py      # ~1-2 min, one thread
Writes training/steatosis/results/repeated-cv/{report.json,report.md}.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from napari_medai.data_paths import shared_data_dir
from napari_medai.steatosis.data import read_any
from napari_medai.steatosis.train import cross_validate

ROOT = Path(__file__).resolve().parents[2]
KEYS = ("balanced_accuracy", "steatosis_auc", "macro_acc", "macro_se", "macro_sp")


def main(seeds=(0, 1, 2, 3, 4)):
    """Run the classical CV once per fold seed and write the spread over seeds as JSON and Markdown."""
    data = read_any(shared_data_dir() / "steatosis")
    per_seed = {}
    for s in seeds:
        res = cross_validate(data, "classical", n_folds=5, seed=s, n_boot=200, log=lambda *a: None)
        for k, c in res["candidates"].items():
            row = per_seed.setdefault(k, {key: [] for key in KEYS} | {"patient_bacc": []})
            for key in KEYS:
                row[key].append(c["folds"][key]["mean"])
            row["patient_bacc"].append(c["patient_level"]["balanced_accuracy"])
        print(f"seed {s}: selected {res['selected']}")
    out = ROOT / "training" / "steatosis" / "results" / "repeated-cv"
    out.mkdir(parents=True, exist_ok=True)
    summary = {k: {key: {"mean_of_fold_means": float(np.mean(v)), "sd_over_seeds": float(np.std(v, ddof=1)),
                         "per_seed": [float(x) for x in v]} for key, v in row.items()}
               for k, row in per_seed.items()}
    (out / "report.json").write_text(json.dumps({"seeds": list(seeds), "folds": 5, "candidates": summary}, indent=2))
    lines = ["# Repeated patient-grouped 5-fold CV (classical candidates)", "",
             "Research use only - not a medical device.", "",
             f"Fold seeds {list(seeds)}. Cells: mean over seeds of the fold-mean ± SD over seeds; "
             "image level unless marked.", "",
             "| candidate | balanced acc | steatosis AUC | macro ACC | macro SE | macro SP | patient-level bAcc |",
             "|---|---|---|---|---|---|---|"]
    for k, row in summary.items():
        cells = [f"{row[key]['mean_of_fold_means']:.3f} ± {row[key]['sd_over_seeds']:.3f}"
                 for key in (*KEYS, "patient_bacc")]
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
