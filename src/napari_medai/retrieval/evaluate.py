"""The fold protocol: split cases into K folds by patient (or by blocks of consecutive file ids),
build the library from K-1 folds, query with the held-out fold, report mAP / P@k / R@k per class.

By default the embedder is fixed (the shipped one); ``retrain=True`` trains a fresh embedder on
each fold's library part (slow: the honest protocol when the embedder saw the data).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

import numpy as np

from ..errors import MedaiError
from ..runtime.progress import check_stop, sub_progress
from .embedder import get_embedder
from .library import crop_roi, entries_from_source, select_planes
from .metrics import grouped_folds, retrieval_metrics, summarize_folds


def load_prepared(source: Any, size: int, *, progress=None, should_stop=None):
    """Entries of a folder / CSV loaded as prepared (n, size, size) images + labels + paths + patient ids."""
    from ..io.readers import load_image
    from .preprocess import prepare

    entries = entries_from_source(source)
    xs, labels, paths, pids = [], [], [], []
    for i, e in enumerate(entries):
        check_stop(should_stop)
        img = load_image(e.path)
        (sl, plane), *_ = select_planes(img.data, img.rgb, e.slice_index, "middle")
        xs.append(prepare(crop_roi(plane, e.roi), size))
        labels.append(e.label)
        paths.append(e.path)
        pids.append(e.patient_id)
        if progress is not None:
            progress(i + 1, len(entries))
    return np.stack(xs), np.asarray(labels), paths, pids


def evaluate_folds(
    source: Any,
    *,
    folds: int = 5,
    k: int = 10,
    embedder: Any = None,
    retrain: bool = False,
    epochs: int = 30,
    seed: int = 0,
    device: str = "auto",
    progress: Optional[Callable[[int, int], None]] = None,
    should_stop: Optional[Callable[[], bool]] = None,
    log: Optional[Callable[[str], None]] = None,
) -> dict:
    """Grouped K-fold retrieval evaluation: each fold queries a library of the other folds' cases.

    Folds are grouped by patient id when every case has one (else by blocks of consecutive file ids),
    so near-identical slices of one patient never sit on both sides and inflate the figures.

    Args:
        source: a folder with one sub-folder per class, or a CSV (as :meth:`CaseLibrary.build`).
        folds: number of folds (at least 2).
        k: cut-off for P@k and R@k.
        embedder: model name or folder, or 'raw-pixels'; default the shipped embedder.
        retrain: train a fresh embedder on each fold's library part (slow; honest when the embedder
            saw these cases).
        epochs: training epochs per fold, with ``retrain``.
        seed: seed for the fold split and the per-fold training.
        device: "auto" or a device name, for embedding and per-fold training.
        progress: ``progress(i, n)`` callback.
        should_stop: returns True to cancel (raises :class:`~napari_medai.errors.CancelledError`).
        log: receives one line per fold.

    Returns:
        A JSON-ready dict: case and class counts, grouping, embedder, ``summary`` (mean ± sample sd over
        folds, overall and per class), ``per_fold`` and, for a fixed embedder, a ``note`` on optimism.

    Raises:
        MedaiError: fewer than 2 folds or labels, or fewer patient groups than folds.
    """
    if folds < 2:
        raise MedaiError(f"--folds {folds}; use at least 2")
    emb = get_embedder(embedder, device=device) if not retrain or embedder is not None else None
    size = emb.size if emb is not None else 128
    total = 1000
    x, labels, paths, pids = load_prepared(source, size, progress=sub_progress(progress, 0, 200, total),
                                           should_stop=should_stop)
    classes = sorted(set(labels.tolist()))
    if len(classes) < 2:
        raise MedaiError(f"only one label ({classes[0]}) in the cases; retrieval evaluation needs at least two")
    pid_list = pids if all(p for p in pids) else None
    fold_of = grouped_folds(paths, labels, pid_list, n_folds=folds, seed=seed)
    results = []
    if not retrain:
        vecs = _embed_all(emb, x, should_stop, sub_progress(progress, 200, 800, total))
    for f in range(folds):
        check_stop(should_stop)
        q, lib = fold_of == f, fold_of != f
        if not q.any():
            continue
        if retrain:
            from .train import embed_array, train_embedder

            y = np.searchsorted(classes, labels)
            net, _, _ = train_embedder(
                x[lib], y[lib], n_classes=len(classes), epochs=epochs, seed=seed + f, device=device,
                progress=sub_progress(progress, 200 + 800 * f // folds, 800 // folds, total), should_stop=should_stop,
            )
            z, _ = embed_array(net, x)
        else:
            z = vecs
        m = retrieval_metrics(z[q], labels[q], z[lib], labels[lib], k=k)
        res = {"fold": f, "n_library": int(lib.sum()), "overall": m["overall"], "per_class": m["per_class"]}
        results.append(res)
        if log:
            log(f"fold {f}: mAP {m['overall']['mAP']:.4f}  P@{k} {m['overall'][f'P@{k}']:.4f}")
    if progress is not None:
        progress(total, total)
    summary = summarize_folds(results, k=k)
    grouping = "patient_id" if pid_list else "blocks of consecutive file ids"
    doc = {
        "cases": int(len(labels)),
        "classes": {c: int((labels == c).sum()) for c in classes},
        "folds": folds,
        "k": k,
        "grouping": grouping,
        "embedder": (emb.name if emb is not None else "msrnet retrained per fold"),
        "retrained_per_fold": bool(retrain),
        "summary": summary,
        "per_fold": results,
    }
    if not retrain:
        doc["note"] = (
            "the embedder is fixed: folds split library and queries only; if the embedder was trained on "
            "these cases the figures are optimistic: use --retrain for the honest protocol"
        )
    return doc


def _embed_all(emb, x, should_stop, progress, bs: int = 64):
    out = np.empty((len(x), emb.dim), np.float32)
    for s in range(0, len(x), bs):
        check_stop(should_stop)
        out[s : s + bs] = emb.embed_prepared(x[s : s + bs])
        if progress is not None:
            progress(min(len(x), s + bs), len(x))
    return out


def group_relevance(query_labels, library_labels, groups: dict, untyped: dict) -> np.ndarray:
    """(n_queries, n_library) relevance when some labels are coarse: two labels are relevant to each other
    when they are equal, or when one of them is an untyped label (``untyped``: label -> its coarse group)
    of the other's coarse group (``groups``: label -> coarse group). E.g. an untyped tumour is relevant to
    every tumour class and the reverse; no tumour only to no tumour."""
    q = np.asarray(query_labels).astype(str)
    lib = np.asarray(library_labels).astype(str)
    rel = q[:, None] == lib[None, :]
    gq = np.asarray([groups.get(v, v) for v in q])
    gl = np.asarray([groups.get(v, v) for v in lib])
    uq = np.asarray([v in untyped for v in q])
    ul = np.asarray([v in untyped for v in lib])
    return rel | ((gq[:, None] == gl[None, :]) & (uq[:, None] | ul[None, :]))


def relevance_metrics(query_vecs, library_vecs, relevant: np.ndarray, *, k: int = 10, exclude=None,
                      query_labels=None) -> dict:
    """MAP and P@k with an explicit relevance matrix (n_queries, n_library); ``exclude[i]`` is a library
    index to leave out of query i's ranking (the query itself, for leave-one-out), or -1.
    Also the chance level (mean share of relevant items in the ranked library). AP is 0 for a query
    with nothing relevant, as in ``metrics.average_precision``."""
    from .metrics import average_precision, pairwise_sq_dists

    d = pairwise_sq_dists(query_vecs, library_vecs)
    n_lib = d.shape[1]
    aps, pks, chance = [], [], []
    for i in range(len(d)):
        keep = np.ones(n_lib, bool)
        if exclude is not None and exclude[i] >= 0:
            keep[exclude[i]] = False
        idx = np.flatnonzero(keep)
        order = idx[np.argsort(d[i, idx], kind="stable")]
        r = relevant[i, order]
        aps.append(average_precision(r))
        pks.append(float(r[:k].mean()))
        chance.append(float(r.mean()))
    aps, pks, chance = map(np.asarray, (aps, pks, chance))
    out = {"overall": {"n_queries": int(len(aps)), "mAP": float(aps.mean()), f"P@{k}": float(pks.mean()),
                       "chance_mAP": float(chance.mean())}, "per_class": {}}
    if query_labels is not None:
        ql = np.asarray(query_labels).astype(str)
        for c in sorted(set(ql.tolist())):
            m = ql == c
            out["per_class"][c] = {"n_queries": int(m.sum()), "mAP": float(aps[m].mean()),
                                   f"P@{k}": float(pks[m].mean()),
                                   "chance_mAP": float(chance[m].mean())}
    out["per_query_ap"] = aps.tolist()
    return out
