"""Post-hoc ranking study on saved fold descriptors (train_embedder.py --save-emb).

  python training/retrieval/posthoc.py cache/emb_fold0_cs_e60.npz

Compares plain Euclidean ranking with database-side augmentation (DBA: every library vector
replaced by the weighted mean of its k nearest library neighbours) and alpha query expansion
(alpha-QE: the query replaced by the weighted mean of itself and its top-k hits), Radenovic et al.
2018. Neither uses any label: they only reshape the descriptor space with the library itself.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from napari_medai.retrieval.metrics import pairwise_sq_dists, retrieval_metrics


def l2n(v):
    """Return the rows of v scaled to unit L2 norm (norms floored at 1e-12)."""
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def expand(q, lib, k, alpha, exclude_self=False):
    """alpha-weighted mean of q and its k nearest library vectors (weights = cos^alpha)."""
    if k <= 0:
        return q
    d = pairwise_sq_dists(q, lib)
    if exclude_self:
        np.fill_diagonal(d, np.inf)
    nn = np.argsort(d, 1)[:, :k]
    sims = np.clip((lib[nn] * q[:, None]).sum(-1), 0, 1) ** alpha
    out = q + (sims[..., None] * lib[nn]).sum(1)
    return l2n(out)


def main():
    """Print held-out mAP for plain ranking and each DBA / alpha-QE setting on one saved fold."""
    f = Path(sys.argv[1])
    e = np.load(f)
    zl, yl, zq, yq = e["zl"], e["yl"], e["zq"], e["yq"]
    print("plain", round(retrieval_metrics(zq, yq, zl, yl)["overall"]["mAP"], 4))
    for kdb in (0, 3, 5, 10):
        for kq in (0, 3, 5, 10):
            for alpha in (1, 3):
                lib = expand(zl, zl, kdb, alpha, exclude_self=True) if kdb else zl
                q = expand(zq, lib, kq, alpha)
                m = retrieval_metrics(q, yq, lib, yl)
                print(f"DBA k={kdb} QE k={kq} alpha={alpha}: mAP {m['overall']['mAP']:.4f} "
                      f"P@10 {m['overall']['P@10']:.4f}",
                      {c: round(v["mAP"], 3) for c, v in m["per_class"].items()}, flush=True)


if __name__ == "__main__":
    main()
