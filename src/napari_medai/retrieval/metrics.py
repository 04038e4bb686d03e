"""Retrieval metrics (precision@k, recall@k, average precision / mAP) and grouped folds. numpy only."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def average_precision(relevant_sorted: np.ndarray) -> float:
    """AP of one ranked list. ``relevant_sorted[i]`` is True when the item at rank i+1 is relevant.

    AP = (1/R) * sum over relevant items of (precision at that item's rank); 0 when R == 0.
    """
    rel = np.asarray(relevant_sorted, dtype=bool)
    n_rel = int(rel.sum())
    if n_rel == 0:
        return 0.0
    ranks = np.flatnonzero(rel) + 1  # 1-based ranks of relevant items
    hits = np.arange(1, n_rel + 1)
    return float(np.mean(hits / ranks))


def pairwise_sq_dists(q: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances (n_q, n_x) between rows of ``q`` and ``x``, in float32.

    Uses |q|² - 2 q·x + |x|² (one matrix product, no (n_q, n_x, dim) temporary); rounding can make
    that slightly negative, so it is clipped at 0.
    """
    q = np.asarray(q, dtype=np.float32)
    x = np.asarray(x, dtype=np.float32)
    d = (q * q).sum(1)[:, None] - 2.0 * q @ x.T + (x * x).sum(1)[None, :]
    return np.maximum(d, 0.0)


def rank_metrics(
    query_labels: Sequence,
    ranked_labels: np.ndarray,
    library_labels: Sequence,
    k: int = 10,
) -> dict:
    """Metrics from ranked library labels.

    ranked_labels: (n_queries, n_library) array of the library labels in rank order (full ranking,
    so AP is over the whole library as in Cheng et al. 2016).
    Returns {"per_query": {"ap", "p_at_k", "r_at_k"}, "per_class": {...}, "overall": {...}}.
    """
    qlab = np.asarray(query_labels)
    lib = np.asarray(library_labels)
    ranked = np.asarray(ranked_labels)
    n_rel_by_label = {lab: int((lib == lab).sum()) for lab in np.unique(qlab)}
    aps, pks, rks = [], [], []
    for i, lab in enumerate(qlab):
        rel = ranked[i] == lab
        aps.append(average_precision(rel))
        top = int(rel[:k].sum())
        pks.append(top / k)
        n_rel = n_rel_by_label[lab]
        rks.append(top / n_rel if n_rel else 0.0)
    aps, pks, rks = map(np.asarray, (aps, pks, rks))
    per_class = {}
    for lab in sorted(np.unique(qlab).tolist(), key=str):
        m = qlab == lab
        per_class[str(lab)] = {
            "n_queries": int(m.sum()),
            "mAP": float(aps[m].mean()),
            f"P@{k}": float(pks[m].mean()),
            f"R@{k}": float(rks[m].mean()),
        }
    overall = {
        "n_queries": int(len(qlab)),
        "mAP": float(aps.mean()) if len(aps) else 0.0,
        f"P@{k}": float(pks.mean()) if len(pks) else 0.0,
        f"R@{k}": float(rks.mean()) if len(rks) else 0.0,
        # macro: mean over classes (each class weighted equally)
        "mAP_macro": float(np.mean([v["mAP"] for v in per_class.values()])) if per_class else 0.0,
    }
    return {"per_query": {"ap": aps, "p_at_k": pks, "r_at_k": rks}, "per_class": per_class, "overall": overall}


def retrieval_metrics(
    query_vecs: np.ndarray,
    query_labels: Sequence,
    library_vecs: np.ndarray,
    library_labels: Sequence,
    k: int = 10,
    chunk: int = 512,
) -> dict:
    """Rank the whole library by Euclidean distance for every query and compute mAP / P@k / R@k."""
    lib = np.asarray(library_labels)
    ranked = []
    q = np.asarray(query_vecs, dtype=np.float32)
    for s in range(0, len(q), chunk):
        d = pairwise_sq_dists(q[s : s + chunk], library_vecs)
        order = np.argsort(d, axis=1, kind="stable")
        ranked.append(lib[order])
    ranked = np.concatenate(ranked, 0) if ranked else np.empty((0, len(lib)), dtype=lib.dtype)
    return rank_metrics(query_labels, ranked, lib, k=k)


def _sd(vals) -> float:
    """Sample standard deviation (ddof=1), the project's one spread convention; 0.0 for a single value."""
    return float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0


def summarize_folds(fold_results: list[dict], k: int = 10) -> dict:
    """Mean and sample standard deviation (ddof=1) across folds of the overall and per-class metrics."""
    keys = ["mAP", f"P@{k}", f"R@{k}"]
    out: dict = {"folds": len(fold_results), "overall": {}, "per_class": {}}
    for key in keys + ["mAP_macro"]:
        vals = [r["overall"][key] for r in fold_results]
        out["overall"][key] = {"mean": float(np.mean(vals)), "std": _sd(vals), "per_fold": vals}
    classes = sorted({c for r in fold_results for c in r["per_class"]})
    for c in classes:
        out["per_class"][c] = {}
        for key in keys:
            vals = [r["per_class"][c][key] for r in fold_results if c in r["per_class"]]
            out["per_class"][c][key] = {"mean": float(np.mean(vals)), "std": _sd(vals), "per_fold": vals}
    return out


# ---------------------------------------------------------------------------------------------
# grouped folds
_NUM = re.compile(r"(\d+)")


def numeric_id(path: str | Path) -> int | None:
    """Last run of digits in the file stem (e.g. ``glioma/1841.jpg`` -> 1841), else None."""
    m = _NUM.findall(Path(str(path)).stem)
    return int(m[-1]) if m else None


def consecutive_blocks(
    ids: Sequence[int],
    labels: Sequence,
    block: int = 60,
    change: np.ndarray | None = None,
    window: int = 20,
) -> np.ndarray:
    """Group items into blocks of consecutive ids (a proxy for patients).

    A block never spans a class change or a gap in the ids. Inside a run, blocks are about
    ``block`` long; when ``change`` (dissimilarity between item i and the next id, aligned with the
    sorted order) is given, each cut moves within +-``window`` to the largest change, i.e. most
    likely to a patient boundary.
    Returns an int group index per item (in the input order).
    """
    ids = np.asarray(ids)
    labels = np.asarray(labels)
    order = np.argsort(ids, kind="stable")
    sid, slab = ids[order], labels[order]
    chg = None if change is None else np.asarray(change, dtype=float)[order]
    groups_sorted = np.zeros(len(ids), dtype=int)
    g = 0
    start = 0
    n = len(ids)
    while start < n:
        # end of the run: same label, consecutive ids
        end = start + 1
        while end < n and slab[end] == slab[start] and sid[end] == sid[end - 1] + 1:
            end += 1
        # cut the run [start, end) into blocks
        pos = start
        while pos < end:
            if end - pos <= block + block // 2:
                cut = end
            else:
                cut = pos + block
                if chg is not None:
                    lo, hi = max(pos + block // 2, cut - window), min(end - block // 2, cut + window)
                    if hi > lo:
                        # chg[i] is the change between item i and item i+1: cut after argmax
                        cut = lo + int(np.argmax(chg[lo - 1 : hi - 1]))
            groups_sorted[pos:cut] = g
            g += 1
            pos = cut
        start = end
    groups = np.empty(n, dtype=int)
    groups[order] = groups_sorted
    return groups


def assign_folds(groups: Sequence[int], labels: Sequence, n_folds: int = 5, seed: int = 0) -> np.ndarray:
    """Assign whole groups to folds, balancing each class's item count across folds.

    Groups are processed largest first within each majority class, each going to the fold that
    holds the fewest items of that class so far (ties broken by a seeded shuffle).
    Returns the fold index (0..n_folds-1) per item.
    """
    groups = np.asarray(groups)
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    uniq = np.unique(groups)
    if len(uniq) < n_folds:
        from napari_medai.errors import MedaiError

        raise MedaiError(
            f"only {len(uniq)} patient groups for {n_folds} folds; use fewer folds or add cases"
        )
    info = []
    for gid in uniq:
        m = groups == gid
        labs, counts = np.unique(labels[m], return_counts=True)
        info.append((gid, labs[np.argmax(counts)], int(m.sum())))
    perm = rng.permutation(len(info))
    info = [info[i] for i in perm]
    info.sort(key=lambda t: -t[2])
    load: dict = defaultdict(lambda: np.zeros(n_folds))
    total = np.zeros(n_folds)
    fold_of_group = {}
    for gid, lab, size in info:
        class_load = load[lab]
        cand = np.flatnonzero(class_load == class_load.min())
        if len(cand) > 1:
            cand = cand[np.flatnonzero(total[cand] == total[cand].min())]
        f = int(cand[rng.integers(len(cand))])
        fold_of_group[gid] = f
        class_load[f] += size
        total[f] += size
    return np.array([fold_of_group[g] for g in groups], dtype=int)


def grouped_folds(
    paths: Sequence,
    labels: Sequence,
    patient_ids: Sequence | None = None,
    n_folds: int = 5,
    block: int = 60,
    seed: int = 0,
    change: np.ndarray | None = None,
) -> np.ndarray:
    """Fold per item: by patient id when given, else by blocks of consecutive numeric file ids,
    else by blocks of consecutive items in the given order."""
    labels = np.asarray(labels)
    if patient_ids is not None and all(p not in (None, "") for p in patient_ids):
        _, groups = np.unique(np.asarray([str(p) for p in patient_ids]), return_inverse=True)
    else:
        ids = [numeric_id(p) for p in paths]
        if any(i is None for i in ids) or len(set(ids)) != len(ids):
            ids = list(range(len(paths)))
        groups = consecutive_blocks(ids, labels, block=block, change=change)
    return assign_folds(groups, labels, n_folds=n_folds, seed=seed)
