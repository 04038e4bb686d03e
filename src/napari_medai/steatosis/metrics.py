"""Classification metrics as in the method paper: one-vs-rest ACC / SE / SP per grade, macro averages,
balanced accuracy, steatosis AUC (S >= 1), and patient-bootstrap confidence intervals."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

N_CLASSES = 4


def _sk_metrics():
    from .._lazy import require

    return require("sklearn.metrics", "classification metrics")


def confusion(y_true, y_pred, n_classes: int = N_CLASSES) -> np.ndarray:
    """Rows: true grade, columns: predicted grade (``sklearn.metrics.confusion_matrix``)."""
    labels = list(range(n_classes))
    return _sk_metrics().confusion_matrix(np.asarray(y_true, int), np.asarray(y_pred, int),
                                          labels=labels).astype(np.int64)


def one_vs_rest(cm: np.ndarray) -> dict:
    """Per-class ACC, SE (recall), SP from TP, FP, FN, TN of each class against the rest."""
    cm = np.asarray(cm, dtype=np.float64)
    total = cm.sum()
    out = {}
    for c in range(cm.shape[0]):
        tp = cm[c, c]
        fn = cm[c].sum() - tp
        fp = cm[:, c].sum() - tp
        tn = total - tp - fn - fp
        out[c] = {
            "tp": int(tp), "fp": int(fp), "fn": int(fn), "tn": int(tn),
            "acc": (tp + tn) / total if total else float("nan"),
            "se": tp / (tp + fn) if tp + fn else float("nan"),
            "sp": tn / (tn + fp) if tn + fp else float("nan"),
        }
    return out


def auc(y_binary, score) -> float:
    """Area under the ROC curve (``sklearn.metrics.roc_auc_score``; ties count half); NaN with one
    class only."""
    y = np.asarray(y_binary, bool)
    if y.all() or not y.any():
        return float("nan")
    return float(_sk_metrics().roc_auc_score(y, np.asarray(score, np.float64)))


def balanced_accuracy(y_true, y_pred) -> float:
    """Mean recall over the grades present in ``y_true`` (``sklearn.metrics.balanced_accuracy_score``)."""
    import warnings

    y_true = np.asarray(y_true, int)
    if y_true.size == 0:
        return float("nan")
    with warnings.catch_warnings():  # a predicted grade absent from y_true: sklearn warns, then ignores it
        warnings.simplefilter("ignore", UserWarning)
        return float(_sk_metrics().balanced_accuracy_score(y_true, np.asarray(y_pred, int)))


def summary(y_true, prob, n_classes: int = N_CLASSES) -> dict:
    """All headline metrics for true grades and predicted probabilities ``(n, 4)``."""
    y_true = np.asarray(y_true, int)
    prob = np.asarray(prob, np.float64)
    y_pred = prob.argmax(axis=1)
    cm = confusion(y_true, y_pred, n_classes)
    ovr = one_vs_rest(cm)
    present = [c for c in range(n_classes) if cm[c].sum() > 0]
    se = [ovr[c]["se"] for c in present]
    return {
        "n": int(y_true.size),
        "accuracy": float(np.trace(cm) / cm.sum()) if cm.sum() else float("nan"),
        "balanced_accuracy": balanced_accuracy(y_true, y_pred),
        "macro_acc": float(np.nanmean([ovr[c]["acc"] for c in present])),
        "macro_se": float(np.nanmean(se)),
        "macro_sp": float(np.nanmean([ovr[c]["sp"] for c in present])),
        "steatosis_auc": auc(y_true >= 1, prob[:, 1:].sum(axis=1)),
        "per_class": {f"S{c}": {k: (float(v) if isinstance(v, float) else v) for k,
                                v in ovr[c].items()} for c in range(n_classes)},
        "confusion": cm.tolist(),
    }


HEADLINE = ("balanced_accuracy", "accuracy", "macro_acc", "macro_se", "macro_sp", "steatosis_auc")


def patient_bootstrap(y_true, prob, patients, n_boot: int = 1000, seed: int = 0,
                      keys: Sequence[str] = HEADLINE, alpha: float = 0.05) -> dict:
    """Percentile CIs: resample patients with replacement (all frames of a drawn patient go together)."""
    y_true = np.asarray(y_true, int)
    prob = np.asarray(prob, np.float64)
    patients = np.asarray(patients)
    ids = np.unique(patients)
    index = {p: np.flatnonzero(patients == p) for p in ids}
    rng = np.random.default_rng(seed)
    values = {k: [] for k in keys}
    for _ in range(n_boot):
        draw = rng.choice(ids, size=ids.size, replace=True)
        rows = np.concatenate([index[p] for p in draw])
        s = summary(y_true[rows], prob[rows])
        for k in keys:
            values[k].append(s[k])
    out = {}
    for k in keys:
        v = np.asarray(values[k], np.float64)
        v = v[np.isfinite(v)]
        out[k] = [float(np.quantile(v, alpha / 2)), float(np.quantile(v, 1 - alpha / 2))] if v.size else [None, None]
    return out


def fold_spread(fold_summaries: Sequence[dict], keys: Sequence[str] = HEADLINE) -> dict:
    """Mean, SD, min and max of each metric across folds (never the best fold alone)."""
    out = {}
    for k in keys:
        v = np.asarray([s[k] for s in fold_summaries], np.float64)
        v = v[np.isfinite(v)]
        out[k] = {"mean": float(v.mean()) if v.size else None, "sd": float(v.std(ddof=1)) if v.size > 1 else None,
                  "min": float(v.min()) if v.size else None, "max": float(v.max()) if v.size else None,
                  "per_fold": [float(x) for x in np.asarray([s[k] for s in fold_summaries], np.float64)]}
    return out


def patient_level(y_true, prob, patients):
    """Average the frame probabilities of each patient: one row per patient."""
    patients = np.asarray(patients)
    ids = np.unique(patients)
    y = np.array([np.asarray(y_true)[patients == p][0] for p in ids])
    P = np.stack([np.asarray(prob)[patients == p].mean(axis=0) for p in ids])
    return y, P, ids
