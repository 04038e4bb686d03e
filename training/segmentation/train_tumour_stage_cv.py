"""Train the tumour stage for the 4 LiTS CV folds and on all 16 patients (background-friendly: --resume).

    OMP_NUM_THREADS=1 PYTHONPATH=src python training/segmentation/train_tumour_stage_cv.py [--folds 0,1,2,3,final]

Runs go to training/segmentation/runs/stage_fold{k} and runs/stage_final; the same code path as
``napari-medai train segment --recipe tumour-stage``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from napari_medai.data_paths import shared_data_dir
from napari_medai.segmentation.tumour_stage import STAGE_DEFAULTS, load_stage_slices, train_tumour_stage

RUNS = Path(__file__).resolve().parent / "runs"


def main():
    """Train (or resume) the tumour stage for each requested fold and the final all-patient run."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--folds", default="0,1,2,3,final")
    ap.add_argument("--iterations", type=int, default=None)
    ap.add_argument("--tag", default="", help="run folders runs/stage{tag}_fold{k} (e.g. _i1600 for a longer pilot)")
    args = ap.parse_args()
    data = (shared_data_dir() or Path("../shared/data")) / "ct" / "lits-slices-2d"
    slices = load_stage_slices(data, STAGE_DEFAULTS["pixel_mm"])
    for f in args.folds.split(","):
        fold = -1 if f == "final" else int(f)
        out = RUNS / f"stage{args.tag}_{'final' if fold < 0 else f'fold{fold}'}"
        res = train_tumour_stage(data, out, iterations=args.iterations, fold=fold, slices=slices, resume=True,
                                 log=lambda m, o=out: print(o.name, m, flush=True))
        print(out.name, "done", res["seconds"], "s", flush=True)


if __name__ == "__main__":
    main()
