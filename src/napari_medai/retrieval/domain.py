"""Is a query like the cases of a library? Calibrated on the library itself (numpy + scipy only).

Computed from the library when it is first needed (``CaseLibrary.calibration``: on the first query or
the save after a build), stored in the library file, and recomputed when cases are added or removed:

1. **Modality.** ``image_stats`` (37 statistics of the prepared image's 96-px thumbnail, the one the
   library stores for every case: intensity histogram, background, and the shape, texture,
   intensities and edges of the largest foreground object and what lies around it, and the shape of
   the non-black region: a scanner's fan of straight, diverging sides) go through a shipped
   modality classifier (``modality.json``: multinomial logistic regression over brain MRI, CT,
   ultrasound, noise, photo, trained by ``training/retrieval/modality.py`` on data whose terms allow
   shipped weights and on simulated B-mode; it carries LiTS's share-alike terms). The library's
   modality is the one most of its cases are predicted to be; a query whose probability of that modality is below
   ``min(0.5, 1st percentile of the library's own cases)`` is out of domain.
2. **Descriptor distance.** Leave-one-out nearest-neighbour distances of the library's descriptors (up
   to ``MAX_CALIBRATION`` cases). A hit is ``close`` when its distance is within their 99th percentile;
   a query whose nearest hit lies beyond ``FAR_MARGIN`` times that is out of domain (a backstop: with
   the shipped embedder, CT and ultrasound land as near as other brain-MRI sources, docs/retrieval.md).

3. **CT values in HU** (checked on the query's raw values, before preparation, which normalises them
   away): a query whose pixels hold air in HU (at least ``HU_AIR_SHARE`` of them at or below ``HU_AIR``
   = -500; air is -1000 HU, MRI magnitude and pictures are never negative) is out of domain for a
   library whose cases did not (``DomainCalibration.hu_share``, recorded when the cases were added;
   libraries saved before that fall back on the library's modality: HU is accepted by a CT library).

A blank (constant) query is always out of domain. The distance thresholds are relative to the
library's own spread, never absolute, so they follow whatever embedder built the library.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np

CALIBRATION_VERSION = 3  # 2: hu_share and the retrained modality classifier; 3: fan statistics, retrained again
MIN_CASES = 10  # fewer cases: no calibration (every hit close, only the blank check)
MAX_CALIBRATION = 4000  # leave-one-out queries / thumbnails used at most (a seeded sample beyond)
CLOSE_QUANTILE, CLOSE_MARGIN = 0.99, 1.0
FAR_QUANTILE, FAR_MARGIN = 0.99, 3.5  # a backstop: other-source brain MRI reaches 3.0x (docs/retrieval.md)
MODALITY_QUANTILE, MODALITY_FLOOR = 0.01, 0.5
HU_AIR, HU_AIR_SHARE = -500.0, 0.05  # a plane with >= 5 % of its values <= -500 holds CT air in HU
THUMB = 96
MODALITIES = ("mri", "ct", "ultrasound", "noise", "photo")
MODALITY_MODEL = "modality.json"  # beside this module; trained by training/retrieval/modality.py
# Verified like every shipped weights file; update together with modality.json when it is retrained.
MODALITY_SHA256 = "c8d8b59014d9756abfda57b0505d3fcafe65ed1a8bd3f4cb531c472eb6a27ca4"
STATS_NAMES = (
    [f"hist{i}" for i in range(8)]
    + ["border_mean", "dark_share", "fg_area", "fg_fill", "fg_aspect", "fg_top", "fg_bottom", "n_components",
       "texture", "mirror_corr", "fg_cy", "fg_cx", "fg_mean"]
    + ["box_top", "box_bottom", "box_left", "box_right", "box_texture", "box_holes", "box_q0", "box_q1", "box_q2",
       "box_q3", "box_mirror"]
    # since calibration version 2: how straight the object's sides are (an ultrasound sector's edges are
    # lines, a head's or a body's are curves) and what lies outside it (a scanner's text and scales)
    + ["edge_straight", "outside_bright"]
    # since calibration version 3: the shape of the non-black region (what a scan converter fills): a
    # B-mode fan's sides are straight lines that diverge with depth, a head's are an oval's
    + ["fan_spread", "fan_sides", "fan_top"]
)
FAN_LEVEL = 0.02  # the non-black region: smoothed thumbnail above 2 % of full scale


def thumbnail(prepared: np.ndarray, size: int = THUMB) -> np.ndarray:
    """The library's stored thumbnail of a prepared [0, 1] image: area-resized, uint8."""
    from .preprocess import resize_area

    return np.clip(resize_area(prepared, size) * 255 + 0.5, 0, 255).astype(np.uint8)


def hu_air_share(plane: np.ndarray) -> float:
    """Share of a raw plane's finite values at or below ``HU_AIR`` (-500): air in a CT in Hounsfield
    units is -1000; MRI magnitude images and pictures have none."""
    a = np.asarray(plane)
    if a.size == 0 or a.dtype.kind not in "if":  # unsigned and bool planes cannot hold HU air
        return 0.0
    a = a[np.isfinite(a)] if a.dtype.kind == "f" else a
    return float((a <= HU_AIR).mean()) if a.size else 0.0


def is_hu_like(plane: np.ndarray) -> bool:
    """True when a raw plane looks like CT in HU (``hu_air_share`` at least ``HU_AIR_SHARE``)."""
    return hu_air_share(plane) >= HU_AIR_SHARE


def _corr_mirror(a: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), a[:, ::-1].ravel())[0, 1]) if a.std() > 1e-6 else 0.0


def _edge_stats(big: np.ndarray, t: np.ndarray) -> list:
    """How straight the left and right edges of the largest object ``big`` (a filled mask) in ``t`` are
    (RMS residual of a line fit, relative to its height), and the share of bright pixels outside it."""
    from scipy import ndimage as ndi

    rows = np.nonzero(big.any(1))[0]
    if len(rows) < 4:
        return [1.0, 0.0]
    sub = big[rows]
    left = sub.argmax(1).astype(np.float64)
    right = (sub.shape[1] - 1 - sub[:, ::-1].argmax(1)).astype(np.float64)
    y = (rows - rows[0]) / max(1, rows[-1] - rows[0])
    A = np.stack([y, np.ones_like(y)], 1)
    straight = []
    for edge in (left, right):
        c, *_ = np.linalg.lstsq(A, edge, rcond=None)
        straight.append(float(np.sqrt(np.mean((edge - A @ c) ** 2))) / float(len(rows)))
    outside = ~ndi.binary_dilation(big, iterations=2)
    bright = float((t[outside] > 0.3).mean()) if outside.any() else 0.0
    return [float(np.mean(straight)), bright]


def _fan_stats(t: np.ndarray) -> list:
    """The shape of the largest non-black region (``FAN_LEVEL``) of a thumbnail ``t`` in [0, 1]: how fast
    its width grows (lines fitted to its left and right sides from 15 % to 75 % of its height; the width
    they gain over its whole height, relative to its widest row: real B-mode fans 0.65-1.31, figshare
    heads median 0.03 and 99 % below 0.50, a frame-filling image 0), how far the sides are from those
    lines (RMS, relative to the height) and its width at a tenth of its height (relative to its widest
    row: a probe's narrow top)."""
    from scipy import ndimage as ndi

    fg = ndi.binary_opening(ndi.uniform_filter(t, 3) > FAN_LEVEL, iterations=1)
    lab, k = ndi.label(fg)
    if k == 0:
        return [0.0, 0.0, 1.0]
    sizes = ndi.sum(fg, lab, range(1, k + 1))
    big = ndi.binary_fill_holes(lab == (1 + int(np.argmax(sizes))))
    rows = np.nonzero(big.any(1))[0]
    sub = big[rows[0]:rows[-1] + 1]
    h = len(sub)
    width = sub.sum(1).astype(np.float64)
    widest = float(width.max())
    y = np.arange(h) / max(1, h - 1)
    sel = (y >= 0.15) & (y <= 0.75) & (width > 0)
    if h < 8 or sel.sum() < 4:
        return [0.0, 0.0, 1.0]
    left = sub[sel].argmax(1).astype(np.float64)
    right = (sub.shape[1] - 1 - sub[sel][:, ::-1].argmax(1)).astype(np.float64)
    A = np.stack([y[sel], np.ones(int(sel.sum()))], 1)
    slopes, resid = [], []
    for edge in (left, right):
        c, *_ = np.linalg.lstsq(A, edge, rcond=None)
        slopes.append(float(c[0]))
        resid.append(float(np.sqrt(np.mean((edge - A @ c) ** 2))) / h)
    return [(slopes[1] - slopes[0]) / widest, float(np.mean(resid)), float(width[int(0.1 * (h - 1))] / widest)]


def image_stats(thumb: np.ndarray) -> np.ndarray:
    """Statistics (``STATS_NAMES``) of a uint8 thumbnail of a prepared image: the intensity histogram,
    background, and the shape, texture and intensities of the largest foreground object (a head, a body,
    an ultrasound sector) in its bounding box, how straight its sides are and what lies around it."""
    from scipy import ndimage as ndi

    t = np.asarray(thumb, np.float32) / 255.0
    n = t.shape[0]
    hist = np.histogram(t, bins=8, range=(0.0, 1.0))[0] / t.size
    e = max(1, n // 16)
    border = float(np.concatenate([t[:e].ravel(), t[-e:].ravel(), t[:, :e].ravel(), t[:, -e:].ravel()]).mean())
    dark = float((t < 0.05).mean())
    fg = ndi.binary_opening(ndi.uniform_filter(t, 3) > 0.1, iterations=1)
    lab, k = ndi.label(fg)
    if k == 0:  # nothing but background
        return np.array([*hist, border, dark] + [0.0] * (len(STATS_NAMES) - 15) + [1.0, 0.0] + _fan_stats(t),
                        np.float64)
    sizes = ndi.sum(fg, lab, range(1, k + 1))
    big = ndi.binary_fill_holes(lab == (1 + int(np.argmax(sizes))))
    ys, xs = np.nonzero(big)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    h, w = y1 - y0, x1 - x0
    rows = big[y0:y1].sum(1)
    inside = t[big]
    sd = float(inside.std())
    core = ndi.binary_erosion(big, iterations=2)
    lap_fine = np.abs(ndi.laplace(ndi.gaussian_filter(t, 0.5)))[core]
    texture = float(lap_fine.mean() / (sd + 0.02)) if lap_fine.size else 0.0
    box, mask = t[y0:y1, x0:x1], big[y0:y1, x0:x1]
    brows, bcols = mask.sum(1), mask.sum(0)
    lap = np.abs(ndi.laplace(t))[core]
    box_texture = float(lap.mean() / (sd + 0.02)) if lap.size else 0.0
    qhist = np.histogram(box[mask], bins=4, range=(0.0, 1.0))[0] / max(1, int(mask.sum()))
    ry, rx = max(1, h // 8), max(1, w // 8)
    return np.array([
        *hist, border, dark, big.sum() / t.size, big.sum() / (h * w), h / w,
        rows[: max(1, h // 6)].mean() / rows.max(), rows[-max(1, h // 6):].mean() / rows.max(),
        float((sizes > 0.002 * t.size).sum()), texture, _corr_mirror(t), ys.mean() / n - 0.5, xs.mean() / n - 0.5,
        float(inside.mean()),
        brows[:ry].mean() / brows.max(), brows[-ry:].mean() / brows.max(), bcols[:rx].mean() / bcols.max(),
        bcols[-rx:].mean() / bcols.max(), box_texture, float((box[mask] < 0.05).mean()), *qhist, _corr_mirror(box),
        *_edge_stats(big, t), *_fan_stats(t),
    ], np.float64)


_MODALITY = None


class SmallMLP:
    """Standardise -> one ReLU hidden layer -> softmax, from plain JSON (no pickle, numpy only)."""

    def __init__(self, mean, scale, W1, b1, W2, b2):
        self.mean, self.scale = np.asarray(mean, np.float64), np.asarray(scale, np.float64)
        self.W1, self.b1 = np.asarray(W1, np.float64), np.asarray(b1, np.float64)
        self.W2, self.b2 = np.asarray(W2, np.float64), np.asarray(b2, np.float64)

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities, one row per row of ``X``."""
        z = (np.atleast_2d(np.asarray(X, np.float64)) - self.mean) / self.scale
        z = np.maximum(z @ self.W1 + self.b1, 0.0) @ self.W2 + self.b2
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=1, keepdims=True)

    def to_dict(self) -> dict:
        """Plain-JSON form (``from_dict`` reads it back)."""
        return {"type": "mlp", **{k: getattr(self, k).tolist() for k in ("mean", "scale", "W1", "b1", "W2", "b2")}}

    @classmethod
    def from_dict(cls, d: dict) -> SmallMLP:
        """The network from its ``to_dict`` form."""
        return cls(d["mean"], d["scale"], d["W1"], d["b1"], d["W2"], d["b2"])


def modality_model():
    """The shipped modality classifier on ``image_stats`` (``modality.json``), or None."""
    global _MODALITY
    if _MODALITY is None:
        from pathlib import Path

        from ..errors import MedaiError
        from ..runtime.registry import sha256_of

        path = Path(__file__).with_name(MODALITY_MODEL)
        if not path.is_file():
            raise MedaiError(f"the modality check's weights {path} are missing; reinstall napari-medai")
        if sha256_of(path) != MODALITY_SHA256:
            raise MedaiError(f"the modality check's weights {path} fail the SHA-256 check; reinstall napari-medai")
        spec = json.loads(path.read_text())["classifier"]
        if spec.get("type") == "mlp":
            _MODALITY = SmallMLP.from_dict(spec)
        else:
            from ..steatosis.features import LinearClassifier

            _MODALITY = LinearClassifier.from_dict(spec)
    return _MODALITY


def image_modality(image: np.ndarray) -> Optional[dict]:
    """{modality: probability} for one 2-D grey or RGB image (prepared as the classifier was trained),
    or None without the model. Used by grading to ask "is this ultrasound?"."""
    from pathlib import Path

    from .preprocess import prepare, to_gray

    path = Path(__file__).with_name(MODALITY_MODEL)
    if modality_model() is None:
        return None
    size = int(json.loads(path.read_text()).get("prepared_size", 128))
    p = modality_probabilities(image_stats(thumbnail(prepare(to_gray(np.asarray(image)), size))))
    return {m: float(v) for m, v in zip(MODALITIES, p[0])}


def modality_probabilities(stats: np.ndarray) -> Optional[np.ndarray]:
    """P(modality) for rows of ``image_stats`` (columns ``MODALITIES``), or None without the model."""
    model = modality_model()
    if model is None:
        return None
    return model.predict_proba(np.atleast_2d(stats))


@dataclass
class DomainCalibration:
    """What a library's own cases look like: distance thresholds and modality (stored in its file)."""

    embedder_sha256: str
    n_cases: int
    close_distance: Optional[float] = None  # a hit at or below this distance is close
    far_distance: Optional[float] = None  # a nearest hit beyond this: out of domain
    nn_quantiles: dict = field(default_factory=dict)  # leave-one-out NN distance quantiles (for reports)
    modality: Optional[str] = None  # the modality most of the library's cases are predicted to be
    modality_share: Optional[float] = None  # ... and the share of cases predicted so
    modality_floor: Optional[float] = None  # a query with P(modality) below this is out of domain
    hu_share: Optional[float] = None  # share of the cases whose raw plane held CT air in HU (None: unknown)
    version: int = CALIBRATION_VERSION

    @property
    def calibrated(self) -> bool:
        """False for libraries too small to calibrate (``MIN_CASES``)."""
        return self.close_distance is not None

    def to_json(self) -> str:
        """JSON text for the library file's meta table."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Optional[DomainCalibration]:
        """The calibration stored in a file, or None when unreadable or of another version."""
        try:
            d = json.loads(text)
            if int(d.get("version", 0)) != CALIBRATION_VERSION:
                return None
            return cls(**d)
        except (ValueError, TypeError):
            return None


def calibrate(
    embedder_sha256: str,
    ids: np.ndarray,
    vectors: np.ndarray,
    search: Callable[[np.ndarray, int], tuple],
    thumbnails: list,
    seed: int = 0,
    hu_flags: Optional[list] = None,
) -> DomainCalibration:
    """Calibration from a library's live cases: ``search(vectors, k) -> (distances, ids)``;
    ``thumbnails``: uint8 arrays (or None where a case has none), aligned with ``ids``; ``hu_flags``:
    whether each case's raw plane was HU-like (``is_hu_like``; None where unknown)."""
    n = len(ids)
    cal = DomainCalibration(embedder_sha256, int(n))
    known = [bool(f) for f in (hu_flags or []) if f is not None]
    if known:
        cal.hu_share = float(np.mean(known))
    if n < MIN_CASES:
        return cal
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(n, MAX_CALIBRATION, replace=False)) if n > MAX_CALIBRATION else np.arange(n)
    parts = [search(vectors[pick[s:s + 32]], 2) for s in range(0, len(pick), 32)]  # bounded memory (numpy: 32 x n)
    dist, nearest = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    own = nearest == ids[pick][:, None]
    # the nearest case that is not the query itself (an exact duplicate may come first)
    nn = np.where(own[:, 0], dist[:, 1], dist[:, 0]).astype(np.float64)
    nn = nn[np.isfinite(nn)]
    cal.nn_quantiles = {str(q): float(np.quantile(nn, q)) for q in (0.5, 0.9, 0.95, 0.99)}
    cal.close_distance = float(np.quantile(nn, CLOSE_QUANTILE) * CLOSE_MARGIN)
    cal.far_distance = float(np.quantile(nn, FAR_QUANTILE) * FAR_MARGIN)
    thumbs = [thumbnails[i] for i in pick if thumbnails[i] is not None]
    if len(thumbs) >= MIN_CASES:
        p = modality_probabilities(np.stack([image_stats(t) for t in thumbs]))
        if p is not None:
            k = int(np.bincount(p.argmax(1), minlength=len(MODALITIES)).argmax())
            cal.modality = MODALITIES[k]
            cal.modality_share = float((p.argmax(1) == k).mean())
            # the library's own cases set the floor: a query less typical than 99 % of them is out
            cal.modality_floor = float(min(MODALITY_FLOOR, np.quantile(p[:, k], MODALITY_QUANTILE)))
    return cal


def library_takes_hu(cal: DomainCalibration) -> Optional[bool]:
    """Whether a library's cases were CT in HU: from the recorded share, else from its modality (files
    saved before the share was recorded); None when neither is known."""
    if cal.hu_share is not None:
        return cal.hu_share >= 0.5
    return None if cal.modality is None else cal.modality == "ct"


def verdict(cal: Optional[DomainCalibration], distances: list, stats: Optional[np.ndarray], blank: bool,
            hu_share: Optional[float] = None) -> tuple:
    """(out_of_domain, reasons, close flags per hit) for a query's hit distances (nearest first);
    ``hu_share``: the query's raw ``hu_air_share`` (None: not known, e.g. a descriptor query)."""
    reasons = []
    if blank:
        reasons.append("the query image is blank (constant): nothing to compare")
    if cal is None or not cal.calibrated:
        return bool(reasons), reasons, [not blank] * len(distances)
    close = [(not blank) and float(d) <= cal.close_distance for d in distances]
    if distances and float(distances[0]) > cal.far_distance:
        reasons.append(f"the nearest case is at distance {float(distances[0]):.3g}, far beyond the library's own "
                       f"nearest-neighbour distances (limit {cal.far_distance:.3g})")
    if stats is not None and cal.modality is not None:
        p = modality_probabilities(stats)
        if p is not None:
            k = MODALITIES.index(cal.modality)
            if p[0, k] < cal.modality_floor:
                guess = MODALITIES[int(p[0].argmax())]
                looks = (f"looks like {_NAMES[guess]}" if guess != cal.modality
                         else f"is not clearly {_NAMES[guess]}")
                reasons.append(f"the image {looks}, the library holds {_NAMES[cal.modality]} "
                               f"(P({cal.modality}) {p[0, k]:.2f}, below the library's own {cal.modality_floor:.2f})")
    if hu_share is not None and hu_share >= HU_AIR_SHARE and library_takes_hu(cal) is False:
        held = _NAMES[cal.modality] if cal.modality not in (None, "ct") else "cases that were not CT in HU"
        reasons.append(f"the image holds CT values in HU (air at -1000: {hu_share:.0%} of its pixels at or below "
                       f"{HU_AIR:.0f}), the library holds {held}; query it with a library of CT cases")
    return bool(reasons), reasons, close


_NAMES = {"mri": "MRI", "ct": "CT", "ultrasound": "ultrasound", "noise": "noise", "photo": "a photo"}
