"""Descriptor ensembles on saved fold descriptors (train_embedder.py --save-emb).

  python training/retrieval/ensemble.py cs_e60 cs_e60_s192          # each tag alone, then concatenated

Each run's L2-normalised descriptors are concatenated (equal weight) and re-normalised; the
ranking is plain Euclidean, as in the shipped library (``members`` in the embedder's arch params
does the same at inference). Reports mAP per fold and mean ± sample sd (ddof=1) over the folds that every tag has,
and writes results/fold<K>_<tag1+tag2>.json in train_embedder's format for summarize.py / ship.py.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from napari_medai.retrieval.metrics import retrieval_metrics

HERE = Path(__file__).resolve().parent

from data import CLASSES  # noqa: E402
from posthoc import l2n  # noqa: E402


def load(tag: str, fold: int):
    """Return the saved fold descriptors cache/emb_fold<fold>_<tag>.npz, or None if absent."""
    f = HERE / "cache" / f"emb_fold{fold}_{tag}.npz"
    return np.load(f) if f.exists() else None


def main(tags):
    """Score each tag and their concatenation per fold, write the ensemble's fold results, print mAP."""
    folds = [k for k in range(5) if all(load(t, k) is not None for t in tags)]
    if not folds:
        sys.exit(f"no fold has descriptors for every tag {tags}")
    combined = "+".join(tags) if len(tags) > 1 else None
    rows = {name: [] for name in [*tags, combined] if name}
    for k in folds:
        runs = [load(t, k) for t in tags]
        for t, e in zip(tags, runs):
            assert np.array_equal(e["yq"], runs[0]["yq"]) and np.array_equal(e["yl"], runs[0]["yl"]), "different splits"
            rows[t].append(retrieval_metrics(e["zq"], e["yq"], e["zl"], e["yl"], k=10)["overall"]["mAP"])
        if combined is None:
            continue
        zq = l2n(np.concatenate([l2n(e["zq"]) for e in runs], 1))
        zl = l2n(np.concatenate([l2n(e["zl"]) for e in runs], 1))
        m = retrieval_metrics(zq, runs[0]["yq"], zl, runs[0]["yl"], k=10)
        rows[combined].append(m["overall"]["mAP"])
        pq = np.mean([e["pq"] for e in runs], 0)
        members = [json.loads((HERE / "results" / f"fold{k}_{t}.json").read_text()) for t in tags]
        (HERE / "results" / f"fold{k}_{combined}.json").write_text(json.dumps({
            "fold": str(k), "tags": list(tags), "train_minutes": sum(r["train_minutes"] for r in members),
            "metrics": {"overall": m["overall"], "per_class": {CLASSES[int(c)]: v for c, v in m["per_class"].items()},
                        "classifier_acc": float((pq.argmax(1) == runs[0]["yq"]).mean())}}, indent=1))
    print(f"folds {folds}")
    for name, v in rows.items():
        a = np.array(v)
        print(f"{name:40s} mAP {a.mean():.4f} ± {a.std(ddof=1):.4f}   per fold {', '.join(f'{x:.3f}' for x in a)}")


if __name__ == "__main__":
    main(sys.argv[1:] or ["cs_e60"])
