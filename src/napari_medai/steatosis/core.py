"""Fatty-liver grading: ``grade_steatosis(image, roi=..., kidney_roi=...) -> SteatosisResult``.

Pipeline: grey levels (RGB -> luminance) -> ultrasound-sector mask (no black surround, burned-in
text or calibration marks) -> 28x28 liver patches tiled over the liver ROI (required: the user's, or
with ``auto_roi=True`` one placed by :func:`auto_liver_roi`, and then marked uncertain) ->
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
AUTO_ROI_SIZE = 56  # automatic liver ROI: 56x56 pixels = 3x3 patches at stride 14
AUTO_ROI_DEPTH = (0.28, 0.60)  # ... its centre between these fractions of the sector depth (below the near field)
AUTO_ROI_COLUMNS = (0.25, 0.60)  # ... and of the sector width at that depth (left of centre, where the liver is)
MIN_TOP_PROBABILITY = 0.5  # a lower top probability marks the grade uncertain
MIN_PATCH_AGREEMENT = 2 / 3  # fewer patches voting for the grade marks it uncertain
# What the liver patches of the training frames look like (Byra crops on the frame scale, 470 crops:
# q0.5-q99.5 of the mean grey level 59-130 and of the fine-texture ratio 0.058-0.128, widened by 10 % / 20 %;
# training/steatosis/auto_roi_agreement.py --domain). Outside them the grade is marked uncertain.
ROI_ECHO_RANGE = (53.5, 143.0)
ROI_SPECKLE_RANGE = (0.049, 0.154)  # std of (patch - Gaussian(1 px)) / mean: B-mode speckle
# the modality classifier (retrieval/domain.py, calibration version 3) gives the 10 shared Byra frames
# P(ultrasound) 0.999-1.0 (seven are its training data) and 8-bit liver-window exports of the packaged CT
# 0.00-0.37 (docs/retrieval.md): below this, not ultrasound
MIN_ULTRASOUND = 0.5
COLOUR_LIMIT = 8.0  # mean |R-G| + |G-B| in the ROI above this: a colour overlay or a photo
NO_ROI_MESSAGE = ("no liver ROI given: draw one (roi=(x, y, w, h) / --roi X,Y,W,H, on liver parenchyma away from "
                  "vessels), or ask for automatic placement (auto_roi=True / --auto-roi; the grade is then marked "
                  "uncertain)")


@dataclass
class SteatosisResult:
    """A graded frame: grade, probabilities, heat map and the caveats, so callers need not recompute."""

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
    uncertain: bool = False
    uncertain_reasons: list = field(default_factory=list)
    roi_source: str = "user"  # "user" | "auto"
    patch_agreement: float = 1.0  # share of the patches whose own grade is the result's grade

    def to_dict(self) -> dict:
        """JSON-ready form (no heat map; rounded numbers) for the CLI output and saved metadata."""
        return {
            "grade": int(self.grade), "label": self.label,
            "probabilities": [round(float(p), 6) for p in self.probabilities],
            "hepatorenal_index": None if self.hepatorenal_index is None else round(float(self.hepatorenal_index), 5),
            "model": self.model, "roi": None if self.roi is None else [int(v) for v in self.roi],
            "roi_source": self.roi_source,
            "kidney_roi": None if self.kidney_roi is None else [int(v) for v in self.kidney_roi],
            "uncertain": bool(self.uncertain), "uncertain_reasons": list(self.uncertain_reasons),
            "patch_agreement": round(float(self.patch_agreement), 4),
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


def auto_liver_roi(image, size: int = AUTO_ROI_SIZE) -> tuple:
    """An automatic liver ROI ``(x, y, w, h)`` for a full B-mode frame (a guess, never a diagnosis aid).

    Rules: inside the ultrasound sector (:func:`sector_mask`), the window's centre between
    ``AUTO_ROI_DEPTH`` of the sector depth (below the near field and its reverberation band, above
    the kidney and diaphragm) and between ``AUTO_ROI_COLUMNS`` of the sector width at that depth; among
    those, the most homogeneous window: lowest spread of the 7-pixel-smoothed grey levels over the
    window relative to its mean (no vessel, boundary or shadow), plus a penalty for a mean far from
    the sector median. Chosen by looking at where the drawn ROIs of the Byra data set sit (x 228-391,
    y 99-227 in the 434x636 frames); measured agreement with the drawn-ROI grade: docs/steatosis.md.
    Frames smaller than the window (crops) are taken whole.
    """
    from scipy import ndimage as ndi

    gray = to_gray(image)
    H, W = gray.shape
    if H < size + 8 or W < size + 8:
        return (0, 0, W, H)
    sector = sector_mask(gray)
    ys, _ = np.nonzero(sector)
    top, depth = int(ys.min()), int(ys.max() - ys.min())
    smooth = ndi.uniform_filter(gray, 7)
    mean = ndi.uniform_filter(smooth, size)
    spread = np.sqrt(np.maximum(ndi.uniform_filter(smooth * smooth, size) - mean * mean, 0))
    candidate = ndi.uniform_filter(sector.astype(np.float32), size) >= 0.999  # window wholly in the sector
    rows = np.arange(H)
    candidate[(rows < top + AUTO_ROI_DEPTH[0] * depth) | (rows > top + AUTO_ROI_DEPTH[1] * depth)] = False
    cols = np.arange(W)
    for r in np.flatnonzero(candidate.any(axis=1)):
        inside = np.flatnonzero(sector[r])
        lo, width = inside.min(), inside.max() - inside.min()
        candidate[r] &= (cols >= lo + AUTO_ROI_COLUMNS[0] * width) & (cols <= lo + AUTO_ROI_COLUMNS[1] * width)
    if not candidate.any():  # no sector of the expected shape: the most homogeneous window anywhere inside
        candidate = ndi.uniform_filter(sector.astype(np.float32), size) >= 0.999
        if not candidate.any():
            return (max(0, (W - size) // 2), max(0, (H - size) // 2), min(size, W), min(size, H))
    median = float(np.median(gray[sector]))
    score = spread / (mean + 1.0) + 0.5 * np.abs(mean - median) / (median + 1.0)
    score[~candidate] = np.inf
    cy, cx = np.unravel_index(int(np.argmin(score)), score.shape)
    x = int(np.clip(cx - size // 2, 0, W - size))
    y = int(np.clip(cy - size // 2, 0, H - size))
    return (x, y, size, size)


def check_grey_levels(image) -> None:
    """Refuse frames whose values are not 8-bit B-mode grey levels: a CT in HU, a 16-bit image, or a
    normalised / CLAHE output in 0..1 (the models were trained on raw 0-255 frames)."""
    arr = np.asarray(image)
    if arr.dtype.kind not in "iuf" or arr.size == 0:
        return  # to_gray refuses these with its own message
    lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
    if lo < 0 or hi > 255:
        raise MedaiError(f"the frame's values span {lo:.0f}..{hi:.0f}, not B-mode grey levels 0-255 (a CT in HU or a "
                         "16-bit image?); grading takes 8-bit B-mode ultrasound frames")
    if arr.dtype.kind == "f" and hi <= 1.0 and hi > lo:
        raise MedaiError("the frame's values lie in 0..1 (a CLAHE or normalised output?); grade the original B-mode "
                         "frame with grey levels 0-255")


def domain_reasons(crops: np.ndarray, image=None, region=None) -> list:
    """Reasons to doubt that the ROI's patches are B-mode liver like the training data: colour, a whole
    frame that the modality classifier (``retrieval.domain``) does not take for ultrasound, a mean grey
    level or a speckle texture outside the training crops' range (``ROI_ECHO_RANGE``,
    ``ROI_SPECKLE_RANGE``)."""
    from scipy import ndimage as ndi

    reasons = []
    arr = np.asarray(image) if image is not None else None
    if arr is not None and arr.ndim == 3 and arr.shape[-1] in (3, 4):
        rgb = arr[..., :3].astype(np.float64)[region if region is not None else slice(None)]
        colour = float(np.mean(np.abs(rgb[..., 0] - rgb[..., 1]) + np.abs(rgb[..., 1] - rgb[..., 2])))
        if colour > COLOUR_LIMIT:
            reasons.append(f"the ROI is in colour (mean channel difference {colour:.0f}): a Doppler overlay, a photo "
                           "or a colour-mapped image, not a B-mode frame")
    if arr is not None and min(arr.shape[:2]) >= 96:  # a whole frame, not a crop: is it ultrasound at all?
        from ..retrieval.domain import image_modality

        p = image_modality(arr)
        if p is not None and p["ultrasound"] < MIN_ULTRASOUND:
            guess = max(p, key=p.get)
            reasons.append(f"the image does not look like a B-mode ultrasound frame (modality check: {guess}, "
                           f"P(ultrasound) {p['ultrasound']:.2f})")
    echo = float(crops.mean())
    fine = [float((c - ndi.gaussian_filter(c, 1.0)).std() / (c.mean() + 1.0)) for c in crops]
    speckle = float(np.median(fine))
    if not ROI_ECHO_RANGE[0] <= echo <= ROI_ECHO_RANGE[1]:
        reasons.append(f"the ROI's mean grey level {echo:.0f} is outside the training frames' "
                       f"{ROI_ECHO_RANGE[0]:.0f}-{ROI_ECHO_RANGE[1]:.0f} "
                       "(other gain or scanner, or not a B-mode liver?)")
    if not ROI_SPECKLE_RANGE[0] <= speckle <= ROI_SPECKLE_RANGE[1]:
        reasons.append(f"the ROI's texture (speckle ratio {speckle:.3f}) is unlike B-mode liver parenchyma "
                       f"({ROI_SPECKLE_RANGE[0]:.3f}-{ROI_SPECKLE_RANGE[1]:.3f}): "
                       "noise, a blank region or another modality?")
    return reasons


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
    auto_roi: bool = False,
    progress: Optional[Progress] = None,
    should_stop: Optional[ShouldStop] = None,
    heatmap: bool = True,
) -> SteatosisResult:
    """Grade hepatic steatosis (S0..S3) in one B-mode frame.

    image
        2-D grey frame or RGB(A) (converted to luminance); never modified. 3-D stacks are refused:
        grade frame by frame.
    roi, kidney_roi
        ``(x, y, w, h)`` in pixels (x = column) or a boolean mask of the image's shape. A liver ROI is
        required: without one a :class:`MedaiError` naming ``roi`` is raised, unless ``auto_roi``.
        With a kidney-cortex ROI the hepatorenal index (mean liver / mean kidney grey level) is
        computed and fused.
    auto_roi
        without ``roi``, place the liver ROI automatically (:func:`auto_liver_roi`); the result's
        ``roi`` is the window used, ``roi_source`` is ``"auto"`` and the grade is marked uncertain.
    model
        registered name or folder with ``card.json`` (default ``steatosis-default``).

    The result is ``uncertain`` (reasons in ``uncertain_reasons``) when the ROI was placed
    automatically, the top probability is under 0.5, fewer than 2/3 of the patches vote for the
    grade, or the ROI does not look like the training data's B-mode liver (:func:`domain_reasons`).
    Values outside 0-255 (a CT in HU) or in 0..1 (a CLAHE output) are refused (:func:`check_grey_levels`).
    """
    t0 = time.perf_counter()
    gray = to_gray(image)
    check_grey_levels(image)
    H, W = gray.shape
    if H < PATCH or W < PATCH:
        raise MedaiError(f"the image is {W}x{H}; grading needs at least {PATCH}x{PATCH} pixels")
    warnings: list = []
    uncertain_reasons: list = []
    roi_source = "user"
    if roi is None:
        if not auto_roi:
            raise MedaiError(NO_ROI_MESSAGE)
        roi, roi_source = auto_liver_roi(gray), "auto"
        uncertain_reasons.append(f"liver ROI placed automatically at {','.join(map(str, roi))} (x,y,w,h): "
                                 "check it lies on liver parenchyma, or draw one")
    elif auto_roi:
        warnings.append("auto_roi ignored: a liver ROI was given")
    check_stop(should_stop)
    sector = sector_mask(gray)
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
        from .features import hepatorenal_index

        hri = hepatorenal_index(gray[region], gray[kmask])
        if not np.isfinite(hri):
            warnings.append("kidney ROI is black (mean 0): no hepatorenal index")
            hri = None
        if (region & kmask).any():  # the index enters the grade, so the grade is uncertain too
            uncertain_reasons.append("liver and kidney ROIs overlap, so the hepatorenal index is unreliable; "
                                     "draw the kidney ROI on the renal cortex")

    grader, card, dev_name = get_grader(model, device)
    positions = _patch_positions(region, box, (H, W))
    if len(positions) == 1 and (box[2] < PATCH or box[3] < PATCH):
        warnings.append(f"the ROI is smaller than the {PATCH}x{PATCH} model input; "
                        f"a {PATCH}x{PATCH} window centred on it was graded")
    crops = np.stack([gray[py:py + PATCH, px:px + PATCH] for py, px in positions]).astype(np.float32)
    uncertain_reasons += domain_reasons(crops, image, region)
    n_total = 1 + (len(positions) if heatmap else 0)
    if progress:
        progress(0, n_total)
    probs, notes = grader.predict(crops, hri)
    warnings += notes
    p = probs.mean(axis=0)
    p = p / p.sum()
    grade = int(np.argmax(p))
    agreement = float(np.mean(np.argmax(probs, axis=1) == grade))
    if p[grade] < MIN_TOP_PROBABILITY:
        uncertain_reasons.append(f"top probability {p[grade]:.2f} is under {MIN_TOP_PROBABILITY:.1f}")
    if len(probs) > 1 and agreement < MIN_PATCH_AGREEMENT:
        votes = np.bincount(np.argmax(probs, axis=1), minlength=4)
        tally = ", ".join(f"S{g} {int(v)}" for g, v in enumerate(votes) if v)
        uncertain_reasons.append(f"the patches disagree: {tally} of {len(probs)} patches")
    if progress:
        progress(1, n_total)

    heat = np.zeros((H, W), np.float32)
    if heatmap:
        heat = _occlusion(grader, crops, positions, probs, grade, hri, (H, W), region, progress, should_stop, n_total)
    return SteatosisResult(
        grade=grade, label=GRADE_LABELS[grade], probabilities=p.astype(np.float64), heatmap=heat,
        hepatorenal_index=None if hri is None else float(hri), model=card.name,
        roi=tuple(int(v) for v in bbox), warnings=warnings, kidney_roi=kbox,
        n_patches=len(positions), device=dev_name, seconds=time.perf_counter() - t0,
        model_version=str(card.version), model_sha256=card.sha256,
        uncertain=bool(uncertain_reasons), uncertain_reasons=uncertain_reasons, roi_source=roi_source,
        patch_agreement=agreement,
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
            ys, xs = slice(by * OCCLUDE, (by + 1) * OCCLUDE), slice(bx * OCCLUDE, (bx + 1) * OCCLUDE)
            occl[:, k, ys, xs] = sub.mean(axis=(1, 2))[:, None, None]
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
