"""Library metrics give the numbers the hand-written code gave (issue 16).

The hand-written versions are kept here, verbatim in substance, as the reference.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")

ROOT = Path(__file__).resolve().parents[1]


def _confusion_ref(y_true, y_pred, n=4):
    cm = np.zeros((n, n), dtype=np.int64)
    for t, p in zip(np.asarray(y_true, int), np.asarray(y_pred, int)):
        cm[t, p] += 1
    return cm


def _auc_ref(y, s):
    from scipy.stats import rankdata

    y, s = np.asarray(y, bool), np.asarray(s, np.float64)
    pos, neg = s[y], s[~y]
    if pos.size == 0 or neg.size == 0:
        return float("nan")
    r = rankdata(np.concatenate([pos, neg]))
    return float((r[: pos.size].sum() - pos.size * (pos.size + 1) / 2) / (pos.size * neg.size))


def _balanced_ref(y_true, y_pred):
    cm = _confusion_ref(y_true, y_pred)
    present = [c for c in range(4) if cm[c].sum() > 0]
    return float(np.mean([cm[c, c] / cm[c].sum() for c in present]))


@pytest.mark.parametrize("seed", range(6))
def test_steatosis_metrics_equal_the_hand_written_ones(seed):
    from napari_medai.steatosis import metrics as M

    rng = np.random.default_rng(seed)
    n = int(rng.integers(8, 80))
    classes = rng.choice(4, size=int(rng.integers(2, 5)), replace=False)  # some grades absent
    y = rng.choice(classes, size=n)
    prob = rng.dirichlet(np.ones(4), size=n)
    prob = np.round(prob, 1) + 1e-9 * rng.random((n, 4))  # near-ties in the score
    prob /= prob.sum(1, keepdims=True)
    pred = prob.argmax(1)
    np.testing.assert_array_equal(M.confusion(y, pred), _confusion_ref(y, pred))
    score = np.round(prob[:, 1:].sum(1), 1)  # exact ties: count half in both
    assert M.auc(y >= 1, score) == pytest.approx(_auc_ref(y >= 1, score), nan_ok=True, abs=1e-12)
    assert M.balanced_accuracy(y, pred) == pytest.approx(_balanced_ref(y, pred), abs=1e-12)
    s = M.summary(y, prob)
    assert s["balanced_accuracy"] == pytest.approx(_balanced_ref(y, pred), abs=1e-12)


def test_one_class_gives_nan_auc():
    from napari_medai.steatosis import metrics as M

    assert np.isnan(M.auc(np.ones(5, bool), np.arange(5.0)))


def test_shipped_report_balanced_accuracy_from_its_confusion_matrix():
    """The pooled out-of-fold confusion of the shipped steatosis report gives its balanced accuracy."""
    from napari_medai.steatosis import metrics as M

    report = json.loads((ROOT / "training/steatosis/results/cnn-raw+clahe/report.json").read_text())
    pooled = report["candidates"][report["selected"]]["pooled"]
    cm = np.asarray(pooled["confusion"])
    y = np.repeat(np.repeat(np.arange(4), 4), cm.ravel())
    p = np.repeat(np.tile(np.arange(4), 4), cm.ravel())
    np.testing.assert_array_equal(M.confusion(y, p), cm)
    assert M.balanced_accuracy(y, p) == pytest.approx(pooled["balanced_accuracy"], abs=1e-12)
    assert pooled["balanced_accuracy"] == pytest.approx(0.580, abs=5e-4)
    assert pooled["steatosis_auc"] == pytest.approx(0.946, abs=5e-4)


def test_retrieval_ap_equals_sklearn_average_precision_on_a_full_ranking():
    """Retrieval AP stays numpy (``retrieve evaluate`` is a core command, scikit-learn is a train
    extra); over a full ranking without ties it is scikit-learn's average precision."""
    from sklearn.metrics import average_precision_score

    from napari_medai.retrieval.metrics import average_precision

    rng = np.random.default_rng(0)
    for _ in range(20):
        rel = rng.random(50) < rng.uniform(0.05, 0.6)
        rel[rng.integers(50)] = True
        score = -np.arange(50, dtype=np.float64)  # rank order, best first
        assert average_precision(rel) == pytest.approx(average_precision_score(rel, score), abs=1e-12)


def test_dice_rule_and_monai_agreement():
    from napari_medai.segmentation.metrics import dice

    assert dice(np.zeros((3, 4)), np.zeros((3, 4))) is None  # both empty: undefined
    assert dice(np.ones((3, 4)), np.zeros((3, 4))) == 0.0
    torch = pytest.importorskip("torch")
    compute_dice = pytest.importorskip("monai.metrics").compute_dice
    rng = np.random.default_rng(1)
    for _ in range(5):
        a, b = rng.random((2, 6, 20, 20)) < rng.uniform(0.1, 0.6, size=(2, 1, 1, 1))
        ours = dice(a, b)
        ref = compute_dice(torch.from_numpy(a[None, None]).float(), torch.from_numpy(b[None, None]).float(),
                           include_background=True)
        assert ours == pytest.approx(float(ref), abs=1e-6)


def test_model_card_reports_pooled_figures_beside_fold_means():
    from napari_medai.steatosis.train import model_card_md

    report = json.loads((ROOT / "training/steatosis/results/cnn-raw+clahe/report.json").read_text())
    card = json.loads((ROOT / "src/napari_medai/models/steatosis-default/card.json").read_text())
    md = model_card_md(card, report, "index+echo")
    row = next(line for line in md.splitlines() if line.startswith("| index+echo"))
    assert "0.600 ± 0.130 · 0.580 [0.442, 0.708]" in row and "0.968 ± 0.010 · 0.946" in row
    assert "ddof=1" in md
    assert card["metrics"]["with_kidney_roi"]["balanced_accuracy"]["pooled"] == pytest.approx(0.5802, abs=1e-4)
    shipped = (ROOT / "src/napari_medai/models/steatosis-default/MODEL_CARD.md").read_text()
    assert row.split(" | ", 1)[1] in shipped
