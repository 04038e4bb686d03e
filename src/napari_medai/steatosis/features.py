"""Hand-crafted features (NumPy / scikit-image only): hepatorenal index and GLCM texture.

The classical baseline named in the method paper: GLCM texture features, here with the hepatorenal
index (mean liver echo / mean kidney-cortex echo, Byra et al. 2018), and a linear classifier whose
coefficients ship as JSON (never pickle).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Optional

import numpy as np

GLCM_PROPS = ("contrast", "dissimilarity", "homogeneity", "energy", "correlation")
GLCM_DISTANCES = (1, 2, 3)
GLCM_ANGLES = (0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4)
GLCM_LEVELS = 32


def glcm_feature_names() -> list:
    """Names of the :func:`glcm_features` columns, in order."""
    names = ["mean", "std"]
    for prop in GLCM_PROPS:
        for d in GLCM_DISTANCES:
            names.append(f"{prop}_d{d}")
    return names


def glcm_features(crop: np.ndarray) -> np.ndarray:
    """First-order (mean, std of grey levels / 255) + GLCM properties averaged over 4 angles."""
    from skimage.feature import graycomatrix, graycoprops

    x = np.asarray(crop, dtype=np.float64)
    q = np.clip(np.floor(x / 256.0 * GLCM_LEVELS), 0, GLCM_LEVELS - 1).astype(np.uint8)
    glcm = graycomatrix(q, distances=list(GLCM_DISTANCES), angles=list(GLCM_ANGLES), levels=GLCM_LEVELS,
                        symmetric=True, normed=True)
    feats = [x.mean() / 255.0, x.std() / 255.0]
    for prop in GLCM_PROPS:
        v = graycoprops(glcm, prop)  # (distances, angles)
        v = np.nan_to_num(v, nan=0.0)
        feats.extend(v.mean(axis=1).tolist())
    return np.asarray(feats, dtype=np.float64)


def glcm_features_batch(crops: Sequence[np.ndarray]) -> np.ndarray:
    """Stack of :func:`glcm_features` rows, one per crop (an empty ``(0, n)`` array for no crops)."""
    return np.stack([glcm_features(c) for c in crops]) if len(crops) else np.zeros((0, len(glcm_feature_names())))


def hepatorenal_index(liver: np.ndarray, kidney: np.ndarray) -> float:
    """Mean liver echo intensity divided by mean kidney-cortex intensity (pixels of the two ROIs)."""
    liver = np.asarray(liver, dtype=np.float64)
    kidney = np.asarray(kidney, dtype=np.float64)
    k = float(kidney.mean()) if kidney.size else 0.0
    if k <= 0:
        return float("nan")
    return float(liver.mean()) / k


class LinearClassifier:
    """Standardise -> multinomial linear model -> softmax. Round-trips through plain JSON."""

    def __init__(self, features: list, mean, scale, coef, intercept, classes=(0, 1, 2, 3)):
        self.features = list(features)
        self.mean = np.asarray(mean, dtype=np.float64)
        self.scale = np.asarray(scale, dtype=np.float64)
        self.coef = np.asarray(coef, dtype=np.float64)
        self.intercept = np.asarray(intercept, dtype=np.float64)
        self.classes = list(classes)

    @classmethod
    def fit(cls, X, y, features, C: float = 1.0, n_classes: int = 4) -> LinearClassifier:
        """Fit on ``X`` (rows) and grades ``y`` with scikit-learn (balanced class weights); a grade
        absent from ``y`` gets ~0 probability."""
        from .._lazy import require

        LogisticRegression = require("sklearn.linear_model", "training a classifier").LogisticRegression

        X = np.asarray(X, dtype=np.float64)
        mean = X.mean(axis=0)
        scale = X.std(axis=0)
        scale[scale < 1e-12] = 1.0
        model = LogisticRegression(C=C, class_weight="balanced", max_iter=5000)
        model.fit((X - mean) / scale, y)
        coef = np.zeros((n_classes, X.shape[1]))
        intercept = np.full(n_classes, -30.0)  # a class absent from training gets ~0 probability
        for row, c in enumerate(model.classes_):
            if len(model.classes_) == 2:  # binary: sklearn keeps one row
                coef[c] = model.coef_[0] * (1 if row == 1 else -1) / 2
                intercept[c] = model.intercept_[0] * (1 if row == 1 else -1) / 2
            else:
                coef[c] = model.coef_[row]
                intercept[c] = model.intercept_[row]
        return cls(features, mean, scale, coef, intercept, list(range(n_classes)))

    def logits(self, X) -> np.ndarray:
        """Linear scores ``(n, classes)`` of the standardised features."""
        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        return ((X - self.mean) / self.scale) @ self.coef.T + self.intercept

    def predict_proba(self, X) -> np.ndarray:
        """Softmax of :meth:`logits`: one probability row per sample."""
        z = self.logits(X)
        z = z - z.max(axis=1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=1, keepdims=True)

    def to_dict(self) -> dict:
        """Plain-JSON form (the shipped ``model.json`` stores this)."""
        return {"type": "standardised-multinomial-logistic", "features": self.features,
                "mean": self.mean.tolist(), "scale": self.scale.tolist(), "coef": self.coef.tolist(),
                "intercept": self.intercept.tolist(), "classes": self.classes}

    @classmethod
    def from_dict(cls, d: dict) -> LinearClassifier:
        """Inverse of :meth:`to_dict`."""
        return cls(d["features"], d["mean"], d["scale"], d["coef"], d["intercept"], d.get("classes", (0, 1, 2, 3)))

    def to_json(self) -> str:
        """:meth:`to_dict` as a JSON string."""
        return json.dumps(self.to_dict())


def classical_features(crops, hri: Optional[Sequence[float]], use: str) -> np.ndarray:
    """Feature matrix for ``use`` in {"glcm", "index", "index+glcm", "index+echo"}; the index enters as
    log(HRI), the liver echo level as log(mean grey level) of the crop."""
    parts = []
    if "glcm" in use:
        parts.append(glcm_features_batch(crops))
    if "index" in use:
        h = np.asarray(hri, dtype=np.float64).reshape(-1, 1)
        parts.append(np.log(np.clip(h, 1e-3, None)))
    if "echo" in use:
        parts.append(liver_echo(crops).reshape(-1, 1))
    return np.concatenate(parts, axis=1)


def liver_echo(crops) -> np.ndarray:
    """Log of the mean liver grey level (0-255 frame scale) of each crop: the absolute echo level.

    Together with the hepatorenal index it separates liver and kidney echogenicity. It depends on
    scanner gain, depth and time-gain compensation: valid only for frames acquired like the training
    data (one scanner, fixed presets).
    """
    if len(crops) == 0:
        return np.zeros(0)
    m = np.array([float(np.asarray(c, dtype=np.float64).mean()) for c in crops])
    return np.log(np.clip(m, 1.0, None))


def feature_names(use: str) -> list:
    """Feature names for a feature set such as ``glcm``, ``index+echo`` or ``index+glcm``."""
    names = []
    if "glcm" in use:
        names += glcm_feature_names()
    if "index" in use:
        names.append("log_hepatorenal_index")
    if "echo" in use:
        names.append("log_liver_echo")
    return names
