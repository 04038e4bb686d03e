"""Segmentation metrics: the one Dice of the package.

Empty-mask rule (one rule everywhere): Dice is undefined - ``None``, printed ``n/a`` - when both
masks are empty, and 0 when exactly one of them is. A structure absent from both the prediction and
the reference is not counted as a perfect score.

Dice stays in NumPy: ``monai.metrics.compute_dice`` gives the same value on non-empty masks (checked in
tests/test_metrics_libraries.py) but would import torch and MONAI (about 3 s) for a sum, and its
``ignore_empty`` rule looks at the reference only.
"""

from __future__ import annotations

from typing import Optional

import numpy as np


def dice(prediction: np.ndarray, truth: np.ndarray) -> Optional[float]:
    """Dice coefficient of two masks; ``None`` when both are empty (undefined, not perfect)."""
    prediction, truth = np.asarray(prediction, bool), np.asarray(truth, bool)
    total = int(prediction.sum()) + int(truth.sum())
    return None if total == 0 else 2.0 * int(np.logical_and(prediction, truth).sum()) / total
