"""Fatty-liver grading: ``grade_steatosis(image, roi=..., kidney_roi=...) -> SteatosisResult``.

Pipeline: grey levels (RGB -> luminance) -> ultrasound-sector mask (no black surround, burned-in
text or calibration marks) -> 28x28 liver patches tiled over the ROI (whole sector when no ROI) ->
texture model (raw grey + CLAHE of each crop) -> optional fusion with the hepatorenal index when a
kidney-cortex ROI is given -> mean probabilities, grade, occlusion heat map over the ROI.

Research use only - not a medical device.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..errors import MedaiError
from ..runtime.progress import Progress, ShouldStop, check_stop
from .preprocess import PATCH, parse_roi, sector_mask, to_gray

GRADE_LABELS = ("S0 normal", "S1 mild", "S2 moderate", "S3 severe")
DEFAULT_MODEL = "steatosis-default"
MAX_PATCHES = 256
OCCLUDE = 7  # occlusion block (pixels) for the heat map


@dataclass
class SteatosisResult:
    grade: int
    label: str
    probabilities: np.ndarray
    heatmap: np.ndarray
    hepatorenal_index: Optional[float]
    model: str
    roi: Optional[tuple]
    warnings: list = field(default_factory=list)
    kidney_roi: Optional[tuple] = None
    n_patches: int = 0
    device: str = "cpu"
    seconds: float = 0.0
    model_version: str = ""
    model_sha256: Optional[str] = None

    def to_dict(self) -> dict:
        return {
            "grade": int(self.grade), "label": self.label,
            "probabilities": [round(float(p), 6) for p in self.probabilities],
            "hepatorenal_index": None if self.hepatorenal_index is None else round(float(self.hepatorenal_index), 5),
            "model": self.model, "roi": None if self.roi is None else [int(v) for v in self.roi],
            "kidney_roi": None if self.kidney_roi is None else [int(v) for v in self.kidney_roi],
            "n_patches": int(self.n_patches), "warnings": list(self.warnings), "device": self.device,
        }


_GRADERS: dict = {}


def get_grader(model=None, device="auto"):
    """(grader, card, device choice) with a small cache keyed by model and weights hash."""
    from ..runtime.registry import resolve_model

    card = resolve_model(model, task="steatosis", default=DEFAULT_MODEL)
    deep = card.weights and str(card.weights).endswith(".safetensors")
    if deep:
        from ..runtime.device import resolve_device

        choice = resolve_device(device)
        dev_name, dev = choice.name, choice.torch
    else:
        if device not in (None, "auto", "cpu"):
            from ..runtime.device import resolve_device

            resolve_device(device)  # refuse an unknown device string the same way
        dev_name, dev = "cpu", None
    key = (card.name, str(card.folder), card.sha256, dev_name)
    if key not in _GRADERS:
        from .grader import load_grader

        _GRADERS.clear()
        _GRADERS[key] = load_grader(card, device=dev)
    return _GRADERS[key], card, dev_name


def _patch_positions(region: np.ndarray, bbox: tuple, shape: tuple) -> list:
    """Top-left corners of 28x28 patches mostly (>= 90 %) inside ``region``; stride 14, thinned to
    at most MAX_PATCHES. A region smaller than a patch gets one patch centred on it."""
    H, W = shape
    x, y, w, h = bbox
    if w < PATCH or h < PATCH or region.sum() < PATCH * PATCH:
        cy, cx = np.argwhere(region).mean(axis=0)
        py = int(np.clip(round(cy - PATCH / 2), 0, H - PATCH))
        px = int(np.clip(round(cx - PATCH / 2), 0, W - PATCH))
        return [(py, px)]
    stride = PATCH // 2
    from scipy import ndimage as ndi

    frac = ndi.uniform_filter(region.astype(np.float32), PATCH, mode="constant")  # centred window
    pos = []
    for py in range(y, min(y + h - PATCH, H - PATCH) + 1, stride):
        for px in range(x, min(x + w - PATCH, W - PATCH) + 1, stride):
            if frac[py + PATCH // 2, px + PATCH // 2] >= 0.9:
                pos.append((py, px))
    if not pos:
        cy, cx = np.argwhere(region).mean(axis=0)
        pos = [(int(np.clip(round(cy - PATCH / 2), 0, H - PATCH)), int(np.clip(round(cx - PATCH / 2), 0, W - PATCH)))]
    if len(pos) > MAX_PATCHES:
        keep = np.linspace(0, len(pos) - 1, MAX_PATCHES).round().astype(int)
        pos = [pos[i] for i in keep]
    return pos


def grade_steatosis(
    image,
    *,
    roi=None,
    kidney_roi=None,
    model=None,
    device="auto",
    progress: Optional[Progress] = None,
    should_stop: Optional[ShouldStop] = None,
    heatmap: bool = True,
) -> SteatosisResult:
    """Grade hepatic steatosis (S0..S3) in one B-mode frame.

    image
        2-D grey frame or RGB(A) (converted to luminance); never modified. 3-D stacks are refused:
        grade frame by frame.
    roi, kidney_roi
        ``(x, y, w, h)`` in pixels (x = column) or a boolean mask of the image's shape. Without a liver
        ROI the whole ultrasound sector is used (a warning says so). With a kidney-cortex ROI the
        hepatorenal index (mean liver / mean kidney grey level) is computed and fused.
    model
        registered name or folder with ``card.json`` (default ``steatosis-default``).
    """
    t0 = time.perf_counter()
    gray = to_gray(image)
    H, W = gray.shape
    if H < PATCH or W < PATCH:
        raise MedaiError(f"the image is {W}x{H}; grading needs at least {PATCH}x{PATCH} pixels")
    warnings: list = []
    check_stop(should_stop)
    sector = sector_mask(gray)
    if roi is None:
        region, bbox = sector.copy(), None
        ys, xs = np.nonzero(region)
        box = (int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1))
        warnings.append("no ROI: whole image used; draw a liver ROI (parenchyma, away from vessels) for a reliable grade")
    else:
        region, bbox, w = parse_roi(roi, (H, W), "liver ROI")
        warnings += w
        box = bbox
        inside = region & sector
        if inside.sum() < 0.5 * region.sum():
            warnings.append("the liver ROI lies mostly outside the ultrasound sector; check it covers liver parenchyma")
        else:
            region = inside
    hri = None
    kbox = None
    if kidney_roi is not None:
        kmask, kbox, w = parse_roi(kidney_roi, (H, W), "kidney ROI")
        warnings += w
        if roi is None:
            warnings.append("kidney ROI ignored: the hepatorenal index needs a liver ROI too")
        else:
            from .features import hepatorenal_index

            hri = hepatorenal_index(gray[region], gray[kmask])
            if not np.isfinite(hri):
                warnings.append("kidney ROI is black (mean 0): no hepatorenal index")
                hri = None
            if (region & kmask).any():
                warnings.append("liver and kidney ROIs overlap; the index is unreliable")

    grader, card, dev_name = get_grader(model, device)
    positions = _patch_positions(region, box, (H, W))
    if len(positions) == 1 and (box[2] < PATCH or box[3] < PATCH):
        warnings.append(f"the ROI is smaller than the {PATCH}x{PATCH} model input; a {PATCH}x{PATCH} window centred on it was graded")
    crops = np.stack([gray[py:py + PATCH, px:px + PATCH] for py, px in positions]).astype(np.float32)
    n_total = 1 + (len(positions) if heatmap else 0)
    if progress:
        progress(0, n_total)
    probs, notes = grader.predict(crops, hri)
    warnings += notes
    p = probs.mean(axis=0)
    p = p / p.sum()
    grade = int(np.argmax(p))
    if progress:
        progress(1, n_total)

    heat = np.zeros((H, W), np.float32)
    if heatmap:
        heat = _occlusion(grader, crops, positions, probs, grade, hri, (H, W), region, progress, should_stop, n_total)
    return SteatosisResult(
        grade=grade, label=GRADE_LABELS[grade], probabilities=p.astype(np.float64), heatmap=heat,
        hepatorenal_index=None if hri is None else float(hri), model=card.name,
        roi=None if roi is None else tuple(int(v) for v in bbox), warnings=warnings, kidney_roi=kbox,
        n_patches=len(positions), device=dev_name, seconds=time.perf_counter() - t0,
        model_version=str(card.version), model_sha256=card.sha256,
    )


def _occlusion(grader, crops, positions, probs, grade, hri, shape, region, progress, should_stop, n_total):
    """Occlusion sensitivity: drop in the chosen grade's probability when a 7x7 block of a patch is
    replaced by the patch mean, averaged over overlapping patches; zero outside the ROI."""
    nb = PATCH // OCCLUDE
    acc = np.zeros(shape, np.float64)
    cnt = np.zeros(shape, np.float64)
    chunk = 16
    for start in range(0, len(crops), chunk):
        check_stop(should_stop)
        sub = crops[start:start + chunk]
        occl = np.repeat(sub[:, None], nb * nb, axis=1).copy()  # (n, nb*nb, 28, 28)
        for k in range(nb * nb):
            by, bx = divmod(k, nb)
            occl[:, k, by * OCCLUDE:(by + 1) * OCCLUDE, bx * OCCLUDE:(bx + 1) * OCCLUDE] = sub.mean(axis=(1, 2))[:, None, None]
        po, _ = grader.predict(occl.reshape(-1, PATCH, PATCH), hri)
        drop = probs[start:start + len(sub), grade][:, None] - po[:, grade].reshape(len(sub), nb * nb)
        for j, (py, px) in enumerate(positions[start:start + chunk]):
            blocks = np.clip(drop[j], 0, None).reshape(nb, nb)
            acc[py:py + PATCH, px:px + PATCH] += np.kron(blocks, np.ones((OCCLUDE, OCCLUDE)))
            cnt[py:py + PATCH, px:px + PATCH] += 1
        if progress:
            progress(min(n_total, 1 + start + len(sub)), n_total)
    heat = np.where(cnt > 0, acc / np.maximum(cnt, 1), 0.0)
    heat[~region] = 0.0
    return heat.astype(np.float32)
