"""The high-resolution tumour stage of ``liver-tumor-ct``: a 2.5-D UNet run inside the liver's bounding box.

The cascade's organ network sees 3 mm pixels, where a 1 cm lesion is three pixels wide. This stage takes the
organ found by the cascade, crops each axial slice to the organ's bounding box (plus a margin), resamples it
to ``pixel_mm`` (about 1 mm) and predicts background / liver / tumour from the slice and its neighbours
``context_mm`` above and below (three input channels). Inside the organ, tumour is where p(tumour) >
p(liver); the organ itself is left as the cascade found it.

Training (``napari-medai train segment --recipe tumour-stage``) uses the LiTS slice folder at full
resolution. Its slices carry no spacing: they are taken as ``LITS_PIXEL_MM`` (the same estimate that put
the organ network at 3.0 mm for 128 of 512 pixels), with scale augmentation over the plausible range.
The folder holds every 2nd liver slice, so the neighbours seen in training are 2 original slices away.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import MedaiError
from ..runtime.progress import Progress, ShouldStop, callbacks, check_stop

LITS_PIXEL_MM = 0.75
STAGE_ARCH = {
    "arch": "unet2d",
    "spatial_dims": 2,
    "in_channels": 3,
    "out_channels": 3,
    "channels": [16, 32, 64, 128],
    "strides": [2, 2, 2],
    "num_res_units": 2,
}
# How the shipped card runs the stage (attach_tumour_stage writes them): chosen on the LiTS CV (the union;
# the lesion rules with nested selection, lesion_filter_cv.py: the final rule chosen on all 16 patients for
# the 1.7 stage of 1600 iterations) and on validation CTs (the HU reference: the non-contrast fatty-liver CT
# went from 1670 ml of false tumour to 29 ml); docs/segmentation.md
STAGE_INFERENCE = {"region": "union", "min_liver_contact": 0.5, "min_lesion_mm": 10.0, "min_lesion_score": 0.75,
                   "min_lesion_contrast_hu": 15.0, "organ_band_mm": 3.0}
STAGE_DEFAULTS = {
    "pixel_mm": 1.0,
    "context_mm": 2.0,  # LiTS neighbours are 2 slices away, about 2 mm at LiTS's typical slice spacing
    "margin_mm": 10.0,
    "patch": 128,
    "zoom": [0.75, 1.33],  # LiTS pixel sizes 0.55-1.0 mm around the 0.75 mm estimate
    "tumour_oversample": 4.0,
    "context_dropout": 0.2,
    "class_weights": [1.0, 1.0, 3.0],
    "iterations": 1600,  # 1.7; 800 until 1.6 (under-trained: training/segmentation/stage_compare_cv.py)
}


# ------------------------------------------------------------------------------------ data
def load_stage_slices(folder, pixel_mm: float) -> dict:
    """LiTS slices at ``pixel_mm`` (assuming ``LITS_PIXEL_MM`` per source pixel): ``x`` (N, n, n) float32
    in [0, 1] (green channel = [-40, 160] HU), ``y`` (N, n, n) uint8 labels, ``vol`` and ``slice`` ids,
    ``prev`` / ``next`` row indices of the neighbouring slices in the folder (the row itself when none)."""
    import torch
    import torch.nn.functional as F

    from .train import read_slice, slice_rows

    folder, rows = slice_rows(folder)
    xs, ys = [], []
    for row in rows:
        img, mask = read_slice(folder, row)
        n = max(16, int(round(img.shape[0] * LITS_PIXEL_MM / pixel_mm)))
        t = torch.from_numpy(img)[None, None]
        x = F.interpolate(t, size=(n, n), mode="bilinear", align_corners=False, antialias=True)[0, 0].numpy()
        y = F.interpolate(torch.from_numpy(mask)[None, None].float(), size=(n, n), mode="nearest")[0, 0].numpy()
        pad = max(0, STAGE_DEFAULTS["patch"] - n)  # small slices: padded to one training patch
        xs.append(np.pad(x, ((0, pad), (0, pad)), mode="edge"))
        ys.append(np.pad(y.astype(np.uint8), ((0, pad), (0, pad))))
    vol = np.array([int(r["volume"]) for r in rows])
    sl = np.array([int(r["slice"]) for r in rows])
    prev, nxt = np.arange(len(rows)), np.arange(len(rows))
    for v in np.unique(vol):
        idx = np.nonzero(vol == v)[0]
        idx = idx[np.argsort(sl[idx])]
        for a, b in zip(idx[:-1], idx[1:]):
            if sl[b] - sl[a] <= 4:  # the folder's spacing (every 2nd slice); farther is no neighbour
                nxt[a], prev[b] = b, a
    return {"x": np.stack(xs), "y": np.stack(ys), "vol": vol, "slice": sl, "prev": prev, "next": nxt}


def _sample_batch(d: dict, rows: np.ndarray, weights: np.ndarray, batch: int, patch: int, g, context_dropout: float):
    """A batch of (3, patch, patch) inputs (previous, current, next slice) and (1, patch, patch) labels,
    centred on a tumour pixel (60 % of tumour slices), a liver pixel or the middle, with jitter."""
    import torch

    n = d["x"].shape[-1]
    pick = rows[torch.multinomial(torch.from_numpy(weights), batch, replacement=True, generator=g).numpy()]
    xb = np.zeros((batch, 3, patch, patch), np.float32)
    yb = np.zeros((batch, 1, patch, patch), np.float32)
    for b, i in enumerate(pick):
        lab = d["y"][i]
        u = torch.rand(3, generator=g).numpy()
        target = np.argwhere(lab == 2) if u[0] < 0.6 else np.empty((0, 2))
        if not len(target):
            target = np.argwhere(lab >= 1)
        if len(target):
            cy, cx = target[int(u[1] * len(target)) % len(target)]
        else:
            cy, cx = n // 2, n // 2
        jy, jx = ((torch.rand(2, generator=g).numpy() - 0.5) * patch * 0.5).astype(int)
        top = int(np.clip(cy + jy - patch // 2, 0, max(0, n - patch)))
        left = int(np.clip(cx + jx - patch // 2, 0, max(0, n - patch)))
        sl = (slice(top, top + patch), slice(left, left + patch))
        drop = u[2] < context_dropout  # no neighbours: as at the top or bottom of a scan
        for c, j in enumerate((i if drop else d["prev"][i], i, i if drop else d["next"][i])):
            xb[b, c] = d["x"][j][sl]
        yb[b, 0] = lab[sl]
    return torch.from_numpy(xb), torch.from_numpy(yb)


def liver_hu_reference(d: dict, rows: np.ndarray) -> float:
    """Median over the training patients of each one's median liver HU (label 1; the slices' [0, 1] values
    are the [-40, 160] HU window): the level :func:`refine_tumour` shifts a volume's organ to."""
    medians = []
    for v in np.unique(d["vol"][rows]):
        sel = rows[d["vol"][rows] == v]
        values = d["x"][sel][d["y"][sel] == 1]
        if values.size:
            medians.append(float(np.median(values)) * 200.0 - 40.0)
    return round(float(np.median(medians)), 1) if medians else 92.0


# ------------------------------------------------------------------------------------ training
def train_tumour_stage(
    data,
    output,
    *,
    iterations: Optional[int] = None,
    fold: int = -1,
    folds: int = 4,
    pixel_mm: Optional[float] = None,
    batch_size: int = 16,
    lr: float = 2e-3,
    seed: int = 0,
    resume: bool = False,
    checkpoint_every: int = 100,
    slices: Optional[dict] = None,
    progress: Optional[Progress] = None,
    should_stop: Optional[ShouldStop] = None,
    log: Optional[Callable[[str], None]] = None,
) -> dict:
    """Train the tumour stage (``STAGE_ARCH``, ``STAGE_DEFAULTS``) on a LiTS slice folder; ``fold`` >= 0
    holds out that patient-grouped fold (the project's LiTS folds). Writes ``weights.safetensors``,
    ``result.json`` (with the config) and ``checkpoint_last.pt`` every ``checkpoint_every`` steps
    (``resume=True`` continues from it with the random state)."""
    import torch
    from monai.losses import DiceCELoss

    from ..augment import ct_slices
    from .networks import build_network
    from .train import held_out_volumes, run_training_loop, save_weights

    progress, should_stop = callbacks(progress, should_stop)
    log = log or (lambda message: None)
    cfg = dict(STAGE_DEFAULTS)
    cfg["pixel_mm"] = float(pixel_mm or cfg["pixel_mm"])
    iterations = int(iterations or cfg["iterations"])
    if iterations < 1:
        raise MedaiError("need --iterations >= 1")
    config = {**cfg, "recipe": "tumour-stage", "iterations": iterations, "fold": fold, "folds": folds,
              "batch_size": batch_size, "lr": lr, "seed": seed}
    out = Path(output).expanduser()
    if out.exists() and not out.is_dir():
        raise MedaiError(f"output {out} is a file; give a folder")
    d = slices if slices is not None else load_stage_slices(data, cfg["pixel_mm"])
    vol = d["vol"]
    val_ids = held_out_volumes(vol, fold, folds)
    train_rows = np.nonzero(~np.isin(vol, val_ids))[0]
    has_tumour = d["y"][train_rows].reshape(len(train_rows), -1).max(1)
    weights = np.where(has_tumour == 2, cfg["tumour_oversample"], np.where(has_tumour == 1, 1.0, 0.3))
    weights = weights / weights.sum()
    aug = ct_slices(zoom=tuple(cfg["zoom"]))  # the cascade's recipe, over the stage's wider zoom range
    torch.manual_seed(seed)
    net = build_network(STAGE_ARCH)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, batch=True, include_background=False,
                         weight=torch.tensor(cfg["class_weights"]))
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    g = torch.Generator().manual_seed(fold + 101 + seed)
    it, losses, seconds = run_training_loop(
        net, opt, g, config, out, iterations=iterations, lr=lr,
        next_batch=lambda: aug(*_sample_batch(d, train_rows, weights, batch_size, cfg["patch"], g,
                                              cfg["context_dropout"]), g),
        loss_fn=loss_fn, name="tumour-stage", resume=resume, checkpoint_every=checkpoint_every,
        progress=progress, should_stop=should_stop, log=log)
    save_weights(net, out / "weights.safetensors")
    res = {"config": config, "fold": fold, "val_volumes": [int(v) for v in val_ids], "iterations": it,
           "seconds": round(seconds, 1), "final_loss": float(np.mean(losses[-100:])) if losses else None,
           "liver_hu_reference": liver_hu_reference(d, train_rows)}
    (out / "result.json").write_text(json.dumps(res, indent=1) + "\n")
    return res


# ------------------------------------------------------------------------------------ inference
def stage_scores(net, stack: np.ndarray, device="cpu", batch: int = 8) -> np.ndarray:
    """Softmax scores (N, 3, h, w) of the stage network for (N, 3, h, w) [0, 1] inputs (h, w multiples of 8)."""
    import torch

    out = []
    with torch.inference_mode():
        for i in range(0, len(stack), batch):
            x = torch.from_numpy(np.ascontiguousarray(stack[i:i + batch])).to(device)
            out.append(torch.softmax(net(x).float(), 1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 3, *stack.shape[2:]), np.float32)


def refine_tumour(net, data01: np.ndarray, labels: np.ndarray, spacing: tuple, spec: dict, device="cpu",
                  should_stop: Optional[ShouldStop] = None, hu: Optional[np.ndarray] = None,
                  window: Optional[tuple] = None) -> np.ndarray:
    """Relabel the organ (labels >= 1) of a canonical (z, y, x) volume into liver (1) / tumour (2) with the
    stage network; ``data01`` is the windowed volume, ``spacing`` (z, y, x) mm; ``spec`` the card's
    ``input_spec.tumour_stage``. With ``spec["region"] == "union"`` (the shipped setting), lesions the stage
    finds (its argmax) that touch the organ join it: the organ network leaves large dark lesions out of the
    organ (LiTS CV fold 0: tumour Dice 0.06 inside the organ alone, 0.52 with the union); a joined lesion
    whose surface touches the liver on less than ``min_liver_contact`` of it (a mass next to the liver) is
    left out again. Lesions narrower than ``min_lesion_mm`` (equivalent diameter of their largest
    cross-section; on its extent at p(tumour) >= ``lesion_extent_p`` when that is set), with a mean p(tumour)
    under ``min_lesion_score`` or a mean HU within ``min_lesion_contrast_hu`` of the liver's median are dropped
    (:class:`LesionRules`; the contrast rule needs ``hu``). With ``spec["liver_hu_reference"]`` and the HU
    volume ``hu`` + its ``window``, the stage sees the volume shifted so that the organ's median HU is the
    reference (the median liver of its training patients): another contrast phase or a fatty liver then looks like the
    livers it learnt from, and lesions keep their contrast to the liver. Only slices that hold organ are
    read; the input is not modified."""
    organ = labels >= 1
    if not organ.any():
        return labels
    reference = spec.get("liver_hu_reference")
    shifted = None
    if reference is not None and hu is not None and window is not None:
        shifted = (hu, hu_shift(hu, organ, float(reference)), tuple(float(v) for v in window))
    maps = stage_maps(net, data01, organ, spacing, spec, device, should_stop, shifted)
    band = float(spec.get("organ_band_mm", 0.0))
    if band > 0:
        labels = refine_organ_boundary(labels, maps, spacing, band)
    return combine_stage(labels, maps, spacing, spec, hu=hu)


def refine_organ_boundary(labels: np.ndarray, maps: tuple, spacing: tuple, band_mm: float) -> np.ndarray:
    """Labels whose organ boundary is redrawn by the 1 mm stage (p(background) < 0.5) within ``band_mm`` of the
    cascade's boundary, in each axial slice; parts not connected to the cascade's organ are dropped and holes
    filled per slice. The cascade sees 3 mm pixels, the stage 1 mm: the band lets the finer boundary win
    without letting the stage, trained on crops around the liver, grow the organ elsewhere."""
    from scipy import ndimage

    box, background = maps[0], maps[4]
    organ = labels[box] >= 1
    sampling = tuple(float(s) for s in tuple(spacing)[-2:])
    redrawn = organ.copy()
    for z in np.nonzero(organ.any(axis=(1, 2)))[0]:  # slice by slice: in-plane band, small temporaries
        near = (ndimage.distance_transform_edt(~organ[z], sampling=sampling) <= band_mm) & \
            (ndimage.distance_transform_edt(organ[z], sampling=sampling) <= band_mm)
        redrawn[z] = np.where(near, background[z] < 0.5, organ[z])
    comps, _ = ndimage.label(redrawn)
    keep = np.unique(comps[organ & redrawn])
    redrawn = np.isin(comps, keep[keep > 0])
    redrawn = np.stack([ndimage.binary_fill_holes(s) for s in redrawn])
    out = labels.copy()
    out[box] = np.where(redrawn, np.where(labels[box] >= 1, labels[box], 1), 0).astype(out.dtype)
    return out


def hu_shift(hu: np.ndarray, organ: np.ndarray, reference: float) -> float:
    """HU to add so that the organ's median becomes ``reference`` (``liver_hu_reference``)."""
    return float(reference) - float(np.median(hu[organ]))


def stage_maps(net, data01: np.ndarray, organ: np.ndarray, spacing: tuple, spec: dict, device="cpu",
               should_stop: Optional[ShouldStop] = None, shifted: Optional[tuple] = None) -> tuple:
    """Run the stage on the organ's slices: (box, split, lesion, score, background) with ``box`` the (z, y, x) slices of
    the organ's bounding box plus the margin, ``split`` p(tumour) > p(liver) and ``lesion`` the stage's
    argmax is tumour, both boolean arrays of the box's shape, ``score`` p(tumour) and ``background``
    p(background) (float16, same shape).
    ``shifted`` = (HU volume, shift, window):
    the stage's input is windowed from the shifted HU (only the slices it reads) instead of ``data01``."""
    import torch
    import torch.nn.functional as F

    pixel = float(spec.get("pixel_mm", STAGE_DEFAULTS["pixel_mm"]))
    margin = float(spec.get("margin_mm", STAGE_DEFAULTS["margin_mm"]))
    context = float(spec.get("context_mm", STAGE_DEFAULTS["context_mm"]))
    dz, sy, sx = (float(s) for s in spacing)
    nz, h, w = data01.shape
    k = max(1, int(round(context / dz))) if dz > 0 else 1
    zs = np.nonzero(organ.any(axis=(1, 2)))[0]
    ys, xs = np.nonzero(organ.any(axis=0))
    y0 = max(0, int(ys.min() - margin / sy))
    y1 = min(h, int(ys.max() + 1 + margin / sy))
    x0 = max(0, int(xs.min() - margin / sx))
    x1 = min(w, int(xs.max() + 1 + margin / sx))
    z0, z1 = int(zs.min()), int(zs.max()) + 1
    ch, cw = y1 - y0, x1 - x0
    rh, rw = max(8, int(round(ch * sy / pixel))), max(8, int(round(cw * sx / pixel)))
    ph, pw = -(-rh // 8) * 8, -(-rw // 8) * 8
    split = np.zeros((z1 - z0, ch, cw), bool)
    lesion = np.zeros((z1 - z0, ch, cw), bool)
    score = np.zeros((z1 - z0, ch, cw), np.float16)
    background = np.ones((z1 - z0, ch, cw), np.float16)
    for start in range(0, len(zs), 8):
        check_stop(should_stop)
        batch_z = zs[start:start + 8]
        planes = [[max(0, z - k), z, min(nz - 1, z + k)] for z in batch_z]
        if shifted is None:
            stack = np.stack([data01[p, y0:y1, x0:x1] for p in planes])
        else:
            hu, shift, (lo, hi) = shifted
            stack = np.stack([(hu[p, y0:y1, x0:x1].astype(np.float32) + (shift - lo)) / (hi - lo) for p in planes])
            stack = np.clip(stack, 0.0, 1.0)
        x = torch.from_numpy(np.ascontiguousarray(stack, np.float32))
        x = F.interpolate(x, size=(rh, rw), mode="bilinear", align_corners=False, antialias=rh < ch or rw < cw)
        x = F.pad(x, (0, pw - rw, 0, ph - rh), mode="replicate")
        p = torch.from_numpy(stage_scores(net, x.numpy(), device))[..., :rh, :rw]
        p = F.interpolate(p, size=(ch, cw), mode="bilinear", align_corners=False).numpy()
        split[batch_z - z0] = p[:, 2] > p[:, 1]
        lesion[batch_z - z0] = (p[:, 2] > p[:, 1]) & (p[:, 2] > p[:, 0])
        score[batch_z - z0] = p[:, 2]
        background[batch_z - z0] = p[:, 0]
    return (slice(z0, z1), slice(y0, y1), slice(x0, x1)), split, lesion, score, background


def combine_stage(labels: np.ndarray, maps: tuple, spacing: tuple, spec: dict,
                  hu: Optional[np.ndarray] = None) -> np.ndarray:
    """Labels with the organ relabelled from :func:`stage_maps` output (see :func:`refine_tumour` for the
    ``region``, ``min_liver_contact``, ``min_lesion_mm``, ``min_lesion_score`` and ``min_lesion_contrast_hu``
    settings; the contrast rule needs the HU volume ``hu``, of ``labels``' shape)."""
    from scipy import ndimage

    box, split, lesion = maps[:3]
    union = spec.get("region", "organ") == "union"
    min_contact = float(spec.get("min_liver_contact", 0.5))
    organ_box = labels[box] >= 1
    region = organ_box.copy()
    if union and lesion.any():
        comps, n = ndimage.label(lesion)
        touching = np.unique(comps[ndimage.binary_dilation(organ_box) & lesion])
        for index in touching[touching > 0]:
            comp = comps == index
            added = comp & ~organ_box
            if not added.any():
                continue
            shell = ndimage.binary_dilation(comp) & ~comp
            if np.count_nonzero(shell & organ_box & ~split) < min_contact * np.count_nonzero(shell):
                continue  # mostly outside the liver: a neighbouring mass, not a liver lesion
            region |= added
    tumour = region & split
    rules = LesionRules.from_spec(spec)
    if rules.active and tumour.any():
        score = maps[3] if len(maps) > 3 else None
        tumour = _drop_lesions(tumour, region & ~organ_box, region, tuple(spacing)[-2:], rules, score,
                               None if hu is None else hu[box])
    out = labels.copy()
    out[box] = np.where(region, np.where(tumour, 2, 1), out[box]).astype(out.dtype)
    return out


class LesionRules:
    """Which 3-D lesions of the stage are kept: equivalent diameter of the largest cross-section >=
    ``min_mm``, mean p(tumour) >= ``min_score`` and |liver median - lesion mean| >= ``min_contrast_hu``
    (chosen with nested LiTS CV: training/segmentation/lesion_filter_cv.py). With ``extent_p`` the size is
    measured on the lesion's extent, the connected region of p(tumour) >= ``extent_p`` inside the organ region
    that holds it (:func:`lesion_diameters`), because the stage draws many real lesions smaller than they are."""

    def __init__(self, min_mm: float = 0.0, min_score: float = 0.0, min_contrast_hu: float = 0.0,
                 extent_p: Optional[float] = None):
        self.min_mm, self.min_score, self.min_contrast_hu = float(min_mm), float(min_score), float(min_contrast_hu)
        self.extent_p = None if extent_p is None else float(extent_p)

    @classmethod
    def from_spec(cls, spec: dict) -> LesionRules:
        """The rules of a card's ``input_spec.tumour_stage`` (missing settings: no rule)."""
        return cls(spec.get("min_lesion_mm", 0.0), spec.get("min_lesion_score", 0.0),
                   spec.get("min_lesion_contrast_hu", 0.0), spec.get("lesion_extent_p"))

    @property
    def active(self) -> bool:
        """Whether any rule is set."""
        return self.min_mm > 0 or self.min_score > 0 or self.min_contrast_hu > 0

    def keeps(self, diameter_mm: float, score: Optional[float], contrast_hu: Optional[float]) -> bool:
        """Whether a lesion passes (a rule whose measure is None is not applied)."""
        if diameter_mm < self.min_mm:
            return False
        if self.min_score > 0 and score is not None and score < self.min_score:
            return False
        return not (self.min_contrast_hu > 0 and contrast_hu is not None and abs(contrast_hu) < self.min_contrast_hu)


def lesion_diameters(tumour: np.ndarray, pixel_area_mm2: float, *, score: Optional[np.ndarray] = None,
                     region: Optional[np.ndarray] = None, extent_p: Optional[float] = None,
                     structure: Optional[np.ndarray] = None) -> tuple:
    """3-D lesions of a (z, y, x) ``tumour`` mask and the equivalent diameter (mm) of each one's largest axial
    cross-section. With ``extent_p`` (and ``score``, p(tumour) of the same shape) a lesion is measured on the
    connected region of ``tumour | (score >= extent_p) & region`` that holds it: its extent, which may join
    neighbouring lesions. Returns (labels, slices, diameters), index i + 1 of labels for diameters[i]."""
    from scipy import ndimage

    comps, _ = ndimage.label(tumour, structure=structure)
    slices = ndimage.find_objects(comps)

    def widest(mask):
        return 2.0 * math.sqrt(mask.reshape(mask.shape[0], -1).sum(1).max() * pixel_area_mm2 / math.pi)

    if extent_p is None or score is None:
        return comps, slices, [widest(comps[sl] == i) for i, sl in enumerate(slices, start=1)]
    extent = tumour | ((score >= extent_p) & (region if region is not None else True))
    extent_comps, _ = ndimage.label(extent, structure=structure)
    extent_slices = ndimage.find_objects(extent_comps)
    diameters = []
    for i, sl in enumerate(slices, start=1):
        outer = int(extent_comps[sl][comps[sl] == i].flat[0])  # a lesion lies inside one extent component
        diameters.append(widest(extent_comps[extent_slices[outer - 1]] == outer))
    return comps, slices, diameters


def _drop_lesions(tumour: np.ndarray, added: np.ndarray, region: np.ndarray, spacing_yx: tuple,
                  rules: LesionRules, score: Optional[np.ndarray] = None,
                  hu: Optional[np.ndarray] = None) -> np.ndarray:
    """Tumour without the 3-D components ``rules`` rejects; their voxels become liver, or leave the region
    (``region`` is edited) where the union had added them. ``score`` (p(tumour)) and ``hu`` are arrays of
    ``tumour``'s shape; a rule whose array is missing is not applied."""
    liver = region & ~tumour
    liver_median = float(np.median(hu[liver])) if hu is not None and liver.any() else None
    comps, slices, diameters = lesion_diameters(tumour, float(spacing_yx[0] * spacing_yx[1]), score=score,
                                                region=region, extent_p=rules.extent_p)
    keep = tumour.copy()
    for index, (sl, diameter) in enumerate(zip(slices, diameters), start=1):
        comp = comps[sl] == index
        mean_score = None if score is None else float(score[sl][comp].astype(np.float32).mean())
        contrast = None if liver_median is None else liver_median - float(hu[sl][comp].astype(np.float32).mean())
        if not rules.keeps(diameter, mean_score, contrast):
            keep[sl][comp] = False
            region[sl][comp & added[sl]] = False
    return keep


# ------------------------------------------------------------------------------------ model folder
def attach_tumour_stage(model, stage_dir, dest, *, version: Optional[str] = None) -> dict:
    """Write ``dest`` (card.json + weights.safetensors): the cascade ``model`` (a name or card folder) with
    the stage trained in ``stage_dir`` (its ``weights.safetensors`` + ``result.json``) as ``stage.*``
    weights and ``input_spec.tumour_stage``. Returns the new card."""
    from safetensors.torch import load_file, save_file

    from ..io.writers import atomic_output
    from ..runtime.registry import load_weights, resolve_model, sha256_of

    card = resolve_model(model, task="segmentation")
    if (card.arch_params or {}).get("arch") != "cascade2d":
        raise MedaiError(f"{model}: a tumour stage attaches to an organ + tumour cascade model")
    stage_dir, dest = Path(stage_dir).expanduser(), Path(dest).expanduser()
    result = json.loads((stage_dir / "result.json").read_text())
    cfg = result["config"]
    state = {k: v for k, v in load_weights(card).items() if not k.startswith("stage.")}
    state.update({f"stage.{k}": v for k, v in load_file(str(stage_dir / "weights.safetensors")).items()})
    dest.mkdir(parents=True, exist_ok=True)
    with atomic_output(dest / "weights.safetensors", ".safetensors") as tmp:
        save_file(state, str(tmp))
    doc = json.loads((Path(card.folder) / "card.json").read_text())
    doc["version"] = version or doc.get("version", "dev")
    doc["input_spec"] = {**doc.get("input_spec", {}), "tumour_stage": {
        "arch_params": STAGE_ARCH, "pixel_mm": cfg["pixel_mm"], "context_mm": cfg["context_mm"],
        "margin_mm": cfg["margin_mm"], **STAGE_INFERENCE,
        "liver_hu_reference": result.get("liver_hu_reference", 92.0),
        "what": "inside the organ's bounding box (+ margin), each axial slice and its neighbours context_mm above "
                "and below at pixel_mm, shifted so the organ's median is liver_hu_reference: liver vs tumour again "
                "(tumour where p(tumour) > p(liver)); lesions it finds that touch the organ join it (region union) "
                "unless their surface is less than min_liver_contact liver; a lesion is kept only when its largest "
                "cross-section is at least min_lesion_mm wide (equivalent diameter), its mean p(tumour) at least "
                "min_lesion_score and its mean HU at least min_lesion_contrast_hu away from the liver's median; within "
                "organ_band_mm of the organ's boundary the stage's own p(background) < 0.5 redraws it at pixel_mm"}}
    doc["architecture"] = (doc.get("architecture", "").split(" + high-resolution")[0]
                           + " + high-resolution 2.5-D tumour stage")
    doc.setdefault("training", {})["stage"] = cfg
    doc["sha256"] = sha256_of(dest / "weights.safetensors")
    (dest / "card.json").write_text(json.dumps(doc, indent=2) + "\n")
    return doc
