"""Tumour threshold study on the CV folds (cascade organ v1 + tumour v3): tumour where the tumour
network's share q = p(tumour) / (p(liver) + p(tumour)) exceeds tau inside the organ region (shipped: 0.5),
with tau chosen per fold on the other three folds.

  python training/segmentation/tumour_threshold_cv.py [--tag v3_tumour_ --organ-tag v1_organ_]
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
from summarize_cv import fold_scores, lits_slices  # the sibling script (this folder is on sys.path when run)

from napari_medai.segmentation.metrics import dice  # None when both masks are empty

TAUS = (0.2, 0.3, 0.4, 0.5, 0.6)


def main():
    """Print each fold's tumour Dice per threshold tau and the tau chosen on the other three folds."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--tag", default="v3_tumour_")
    ap.add_argument("--organ-tag", default="v1_organ_")
    args = ap.parse_args()
    torch.set_num_threads(1)
    d = lits_slices()
    x, y, vol = d["x"], d["y"], d["vol"]
    table = {}
    for k in range(4):
        scores, va, _, _ = fold_scores(k, args.tag, args.organ_tag, "organ", x, vol)
        p = torch.softmax(scores, 1).numpy()
        organ = p[:, 0] < 0.5
        share = p[:, 2] / (p[:, 1] + p[:, 2] + 1e-9)
        for t in TAUS:
            table[(k, t)] = dice(organ & (share > t), y[va] == 2)
        print(k, [round(table[(k, t)], 3) for t in TAUS], flush=True)
    print("mean", [round(float(np.mean([table[(k, t)] for k in range(4)])), 4) for t in TAUS])
    for k in range(4):
        best = max(TAUS, key=lambda t: np.mean([table[(j, t)] for j in range(4) if j != k]))
        print("fold", k, "tau chosen on the others", best, "dice", round(table[(k, best)], 3))


if __name__ == "__main__":
    main()
