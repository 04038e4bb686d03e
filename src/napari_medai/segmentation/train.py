"""Training on a Medical Segmentation Decathlon folder (``dataset.json``, ``imagesTr/``, ``labelsTr/``).

2-D (``unet2d``): axial slices, padded to a square field of view in mm and resized to ``size`` exactly as
inference does. 3-D (``unet3d``, ``vnet``, ``basicunetplusplus``, ``segresnet``, ``dynunet``): random
``roi``-cubed patches (half of them centred on foreground) at the native voxel grid, sliding-window
inference for validation. Validation Dice is measured after every epoch on the held-out cases with the
same inference code as ``segment``. Writes ``checkpoint_last.pt`` (resumable), ``log.json`` and
``model/`` (card.json + weights.safetensors of the best epoch). Research use only.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import MedaiError
from ..runtime.progress import Progress, ShouldStop, callbacks, check_stop


def _parse_window(window) -> Optional[tuple]:
    if window is None:
        return None
    if isinstance(window, str):
        try:
            lo, hi = (float(v) for v in window.split(","))
        except ValueError:
            raise MedaiError(f"bad --window '{window}'; write LO,HI such as -40,160") from None
    else:
        lo, hi = (float(v) for v in window)
    if not hi > lo:
        raise MedaiError(f"window {lo},{hi}: the upper bound must exceed the lower")
    return lo, hi


def read_msd(folder) -> tuple[list[tuple[Path, Path]], dict, bool]:
    """(image, label) pairs, label names and whether the modality is CT."""
    folder = Path(folder).expanduser()
    meta_path = folder / "dataset.json"
    if not meta_path.is_file():
        raise MedaiError(f"{folder} has no dataset.json; give a Medical Segmentation Decathlon folder "
                         "(dataset.json, imagesTr, labelsTr)")
    try:
        meta = json.loads(meta_path.read_text())
    except ValueError as exc:
        raise MedaiError(f"{meta_path} is not valid JSON ({exc})") from None
    pairs = []
    for entry in meta.get("training") or []:
        if not isinstance(entry, dict) or "image" not in entry or "label" not in entry:
            continue
        image, label = folder / entry["image"], folder / entry["label"]
        if not image.exists() or not label.exists():
            raise MedaiError(f"dataset.json lists {entry['image']} / {entry['label']} but a file is missing")
        pairs.append((image, label))
    if len(pairs) < 2:
        raise MedaiError(f"{meta_path} lists {len(pairs)} training case(s); at least 2 are needed (one for validation)")
    labels = {int(k): str(v) for k, v in (meta.get("labels") or {"0": "background", "1": "foreground"}).items()}
    modality = " ".join(str(v) for v in (meta.get("modality") or {}).values()).upper()
    return pairs, labels, ("CT" in modality or not modality)


def _load_case(image: Path, label: Path, window, n_classes: int):
    from ..io.geometry import canonical_orientation, to_canonical
    from ..io.readers import load_image
    from .core import window01

    img, lab = load_image(image), load_image(label)
    if img.data.ndim != 3 or img.rgb:
        raise MedaiError(f"{image.name}: training takes 3-D single-channel volumes, got shape {img.data.shape}")
    if lab.data.shape != img.data.shape:
        raise MedaiError(f"{label.name}: label shape {lab.data.shape} differs from image {img.data.shape}")
    perm, flips = canonical_orientation(img.geometry.affine_ras(), 3)
    x = window01(to_canonical(img.data, perm, flips), window).astype(np.float32)
    y = np.ascontiguousarray(to_canonical(np.asarray(lab.data), perm, flips)).astype(np.int64)
    if y.min() < 0 or y.max() >= n_classes:
        raise MedaiError(f"{label.name}: label values {int(y.min())}..{int(y.max())} "
                         f"outside 0..{n_classes - 1} of dataset.json")
    spacing = tuple(img.geometry.spacing[p] for p in perm)
    return np.ascontiguousarray(x), y.astype(np.uint8), spacing, img


def _slices_2d(x: np.ndarray, y: np.ndarray, spacing_yx, size: int):
    """Pad each slice to a square FOV in mm and resize (image bilinear, labels nearest), as inference does."""
    import torch
    import torch.nn.functional as F

    n, h, w = x.shape
    sy, sx = spacing_yx
    side = max(h * sy, w * sx)
    hp, wp = max(h, int(round(side / sy))), max(w, int(round(side / sx)))
    top, left = (hp - h) // 2, (wp - w) // 2
    xt = F.pad(torch.from_numpy(x)[:, None], (left, wp - w - left, top, hp - h - top), value=float(x.min()))
    yt = F.pad(torch.from_numpy(y.astype(np.float32))[:, None], (left, wp - w - left, top, hp - h - top), value=0.0)
    xt = F.interpolate(xt, size=(size, size), mode="bilinear", align_corners=False, antialias=max(hp, wp) > size)
    yt = F.interpolate(yt, size=(size, size), mode="nearest")
    return xt, yt.long()


def _patches_3d(cases, roi: int, batch: int, rng: np.random.Generator):
    import torch

    xs, ys = [], []
    for _ in range(batch):
        x, y = cases[int(rng.integers(len(cases)))][:2]
        pad = [(0, max(0, roi - s)) for s in x.shape]
        if any(p[1] for p in pad):
            x = np.pad(x, pad, constant_values=float(x.min()))
            y = np.pad(y, pad)
        fg = np.argwhere(y > 0) if rng.random() < 0.5 else np.empty((0, 3))
        if len(fg):
            c = fg[int(rng.integers(len(fg)))]
            start = [int(np.clip(ci - roi // 2, 0, s - roi)) for ci, s in zip(c, x.shape)]
        else:
            start = [int(rng.integers(0, s - roi + 1)) for s in x.shape]
        sl = tuple(slice(s0, s0 + roi) for s0 in start)
        xs.append(np.ascontiguousarray(x[sl]))
        ys.append(np.ascontiguousarray(y[sl]))
    return torch.from_numpy(np.stack(xs))[:, None], torch.from_numpy(np.stack(ys).astype(np.int64))[:, None]


def train_msd(
    data,
    output,
    *,
    arch: str = "unet2d",
    epochs: int = 50,
    resume=None,
    window=None,
    size: int = 128,
    roi: int = 64,
    batch_size: Optional[int] = None,
    lr: float = 2e-3,
    val_fraction: float = 0.2,
    max_iterations: Optional[int] = None,
    device="auto",
    seed: int = 0,
    progress: Optional[Progress] = None,
    should_stop: Optional[ShouldStop] = None,
    log: Optional[Callable[[str], None]] = None,
) -> dict:
    """Train ``arch`` on an MSD folder; return a summary (best validation Dice, model folder, log)."""
    import torch
    from monai.losses import DiceCELoss
    from safetensors.torch import save_file

    from ..augment import msd_patches, msd_slices
    from ..io.writers import atomic_output
    from ..runtime.device import resolve_device
    from ..runtime.registry import sha256_of
    from .core import LoadedModel, _predict_slices, _predict_volume
    from .networks import ARCH_DIMS, build_network, default_arch_params

    progress, should_stop = callbacks(progress, should_stop)
    log = log or (lambda message: None)
    if epochs < 1:
        raise MedaiError("--epochs must be at least 1")
    if not 0 < val_fraction < 1:
        raise MedaiError("--val-fraction must lie between 0 and 1")
    if arch in ARCH_DIMS and ARCH_DIMS[arch] == 3 and roi % 16:
        raise MedaiError(f"--roi {roi} must be a multiple of 16 for 3-D networks")
    out = Path(output).expanduser()
    if out.exists() and not out.is_dir():
        raise MedaiError(f"output {out} is a file; give a folder")
    pairs, label_names, is_ct = read_msd(data)
    n_classes = max(label_names) + 1
    win = _parse_window(window) if window is not None else ((-40.0, 160.0) if is_ct else None)
    choice = resolve_device(device)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(pairs))
    n_val = max(1, int(round(len(pairs) * val_fraction)))
    val_idx, train_idx = sorted(order[:n_val].tolist()), sorted(order[n_val:].tolist())
    out.mkdir(parents=True, exist_ok=True)

    cases = []
    for image, label in pairs:
        check_stop(should_stop)
        cases.append(_load_case(image, label, win, n_classes))
    dims = ARCH_DIMS.get(arch, 2)
    params = default_arch_params(arch, 1, n_classes)
    net = build_network(params).to(choice.torch)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    start_epoch, best, history = 0, -1.0, []
    if resume:
        try:
            ckpt = torch.load(str(resume), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001
            raise MedaiError(f"cannot resume from {resume}: {str(exc).splitlines()[0][:120]}") from None
        if ckpt.get("arch_params") != json.dumps(params, sort_keys=True):
            raise MedaiError(f"checkpoint {resume} is for another architecture or label set; "
                             "resume with the same --arch and data")
        net.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        start_epoch, best = int(ckpt["epoch"]), float(ckpt["best"])
        history = json.loads(ckpt.get("history", "[]"))
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    g = torch.Generator().manual_seed(seed)
    aug = msd_slices() if dims == 2 else msd_patches()

    if dims == 2:
        xs, ys = [], []
        for i in train_idx:
            x, y, spacing = cases[i][:3]
            keep = np.flatnonzero(y.reshape(len(y), -1).max(1) > 0)
            if len(keep) == 0:
                keep = np.arange(len(y))
            extra = rng.choice(len(y), size=min(len(y), max(1, len(keep) // 4)), replace=False)
            sel = np.unique(np.concatenate([keep, extra]))
            xt, yt = _slices_2d(x[sel], y[sel], spacing[1:], size)
            xs.append(xt)
            ys.append(yt)
        train_x, train_y = torch.cat(xs), torch.cat(ys)
        bs = batch_size or 16
        steps_per_epoch = max(1, math.ceil(len(train_x) / bs))
    else:
        bs = batch_size or 2
        steps_per_epoch = max(4, len(train_idx) * 4)
    total_steps = epochs * steps_per_epoch
    spec = {"window_hu": list(win) if win else None, "normalize": "window" if win else "zscore",
            "labels": {str(k): v for k, v in label_names.items() if k != 0}, "postprocess": False}
    if dims == 2:
        spec.update(size=[size, size], axes="slice-wise axial")
    else:
        spec.update(roi_size=[roi, roi, roi], spatial_dims=3, axes="3d")

    def validate() -> dict:
        net.eval()
        lm = LoadedModel(net, spec, arch, dims, {k: v for k, v in label_names.items() if k != 0}, False)
        scores = {name: [] for k, name in label_names.items() if k != 0}
        for i in val_idx:
            x, y, spacing = cases[i][:3]
            if dims == 2:
                pred = _predict_slices(lm, x, spacing[1:], choice, [16, 1], lambda a, b: None, should_stop)
            else:
                pred = _predict_volume(lm, x, spacing, choice, [8, 1], lambda a, b: None, should_stop)
            for k, name in label_names.items():
                if k == 0:
                    continue
                a, b = pred == k, y == k
                s = int(a.sum()) + int(b.sum())
                if s:
                    scores[name].append(2.0 * int((a & b).sum()) / s)
        net.train()
        return {name: (float(np.mean(v)) if v else None) for name, v in scores.items()}

    step = start_epoch * steps_per_epoch
    t0 = time.perf_counter()
    stopped_early = False
    for epoch in range(start_epoch, epochs):
        net.train()
        losses = []
        for _ in range(steps_per_epoch):
            check_stop(should_stop)
            if dims == 2:
                idx = torch.randint(0, len(train_x), (bs,), generator=g)
                xb, yb = aug(train_x[idx], train_y[idx], g)
            else:
                xb, yb = aug(*_patches_3d([cases[i] for i in train_idx], roi, bs, rng), rng)
            lr_now = lr * 0.5 * (1 + math.cos(math.pi * step / max(1, total_steps)))
            for group in opt.param_groups:
                group["lr"] = lr_now
            logits = net(xb.to(choice.torch))
            if isinstance(logits, (list, tuple)):
                logits = logits[0]
            loss = loss_fn(logits, yb.to(choice.torch))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.item()))
            step += 1
            progress(step, total_steps)
            if max_iterations is not None and step >= max_iterations:
                stopped_early = True
                break
        val = validate()
        present = [v for v in val.values() if v is not None]
        mean = float(np.mean(present)) if present else 0.0
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)) if losses else None, "val_dice": val,
                        "val_mean_dice": mean, "seconds": round(time.perf_counter() - t0, 1)})
        log(f"epoch {epoch + 1}/{epochs} loss {history[-1]['loss']:.4f} val Dice {json.dumps(val)}")
        if mean > best:
            best = mean
            model_dir = out / "model"
            model_dir.mkdir(exist_ok=True)
            with atomic_output(model_dir / "weights.safetensors", ".safetensors") as tmp:
                save_file({k: v.detach().cpu().clone().contiguous() for k, v in net.state_dict().items()}, str(tmp))
            card = {
                "name": f"{out.name}-{arch}", "version": f"epoch{epoch + 1}", "task": "segmentation",
                "architecture": f"MONAI {arch}", "arch_params": params, "input_spec": spec,
                "training_data": f"{Path(data).name}: {len(train_idx)} training cases, {len(val_idx)} validation cases",
                "metrics": {"validation_dice": val, "validation_mean_dice": mean, "epoch": epoch + 1},
                "licence": "follows the licence of the training data", "weights": "weights.safetensors",
                "sha256": sha256_of(model_dir / "weights.safetensors"),
                "intended_use": "Research use only - not a medical device. Trained with napari-medai train segment.",
            }
            (model_dir / "card.json").write_text(json.dumps(card, indent=2))
            (model_dir / "MODEL_CARD.md").write_text(
                f"# {card['name']}\n\nResearch use only - not a medical device.\n\n{card['training_data']}; "
                f"best validation mean Dice {mean:.4f} at epoch {epoch + 1}.\n")
        # Atomic: --resume must never find a half-written checkpoint after a kill or Ctrl-C.
        with atomic_output(out / "checkpoint_last.pt", ".pt") as tmp:
            torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch + 1, "best": best,
                        "arch_params": json.dumps(params, sort_keys=True), "history": json.dumps(history)}, str(tmp))
        (out / "log.json").write_text(json.dumps(history, indent=1))
        if stopped_early:
            break
    return {"model_dir": str(out / "model"), "checkpoint": str(out / "checkpoint_last.pt"), "arch": arch,
            "epochs_run": len(history), "best_val_dice": round(best, 4), "history": history,
            "train_cases": len(train_idx), "val_cases": len(val_idx), "device": choice.name,
            "seconds": round(time.perf_counter() - t0, 2)}


# ------------------------------------------------------------------------------------ LiTS 2-D slices
# The shipped cascade ``liver-tumor-ct`` is trained here, on the LiTS slice folder of the project data
# (``ct/lits-slices-2d``: ``index.csv`` + JPEG images whose green channel is the [-40, 160] HU window +
# PNG masks 0/1/2). ``train segment --data .../lits-slices-2d --recipe cascade`` reproduces it; the
# research scripts in ``training/segmentation/`` call this code (one trainer).

UNET_ARCH = {
    "arch": "unet2d",
    "spatial_dims": 2,
    "in_channels": 1,
    "out_channels": 3,
    "channels": [16, 32, 64, 128, 256],
    "strides": [2, 2, 2, 2],
    "num_res_units": 2,
}
SLICE_RECIPES = {
    # organ network: the liver+tumour region (per-sample DiceCE)
    "organ": {"loss": "dicece", "zoom": [0.8, 1.25], "tumour_oversample": 2.0, "iterations": 1334},
    # tumour network: liver vs tumour inside the region (batch Dice without background + CE 1/1/6)
    "tumour": {"loss": "batch_dice_weighted_ce", "zoom": [1 / 1.5, 1.5], "tumour_oversample": 4.0, "iterations": 1000},
}
CLASS_WEIGHTS = (1.0, 1.0, 6.0)
SHIPPED_INPUT_SPEC = {
    "window_hu": [-40, 160],
    "size": [128, 128],
    "axes": "slice-wise axial",
    "orientation": "radiological (rows anterior->posterior, columns patient right->left)",
    "labels": {"1": "liver", "2": "tumour"},
    "decision": "region",
    # portal-venous training data; outside this the result carries a warning note
    "liver_hu_range": [70, 200],
}


def is_slice_folder(folder) -> bool:
    """A LiTS-style 2-D slice folder (``index.csv`` with volume, image and mask columns)."""
    index = Path(folder).expanduser() / "index.csv"
    if not index.is_file():
        return False
    head = index.read_text().splitlines()[:1]
    return bool(head) and {"volume", "image", "mask"} <= set(head[0].split(","))


def slice_rows(folder) -> tuple[Path, list]:
    """(folder, rows of its index.csv as dicts) of a LiTS slice folder; refuses anything else."""
    import csv

    folder = Path(folder).expanduser()
    if not is_slice_folder(folder):
        raise MedaiError(
            f"{folder} has no index.csv with volume,image,mask columns; give the LiTS slice folder (ct/lits-slices-2d)"
        )
    with open(folder / "index.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    if len(rows) < 2:
        raise MedaiError(f"{folder}/index.csv lists {len(rows)} slice(s); at least 2 are needed")
    return folder, rows


def read_slice(folder: Path, row: dict) -> tuple:
    """(image float32 in [0, 1]: the JPEG's green channel, i.e. the [-40, 160] HU window; mask uint8) of one row."""
    from PIL import Image

    img = np.asarray(Image.open(folder / row["image"]))
    img = (img[..., 1] if img.ndim == 3 else img).astype(np.float32) / 255.0
    return img, np.asarray(Image.open(folder / row["mask"])).astype(np.uint8)


def load_slice_folder(folder, size: int = 128) -> dict:
    """X (N, size, size) float32 in [0, 1] (green channel / 255, block mean), y (N, size, size) uint8
    (centre sample), vol (N,) patient ids, mask (N,) mask paths; ``size`` must divide the slice size."""
    folder, rows = slice_rows(folder)
    xs, ys, vols, masks = [], [], [], []
    for row in rows:
        img, mask = read_slice(folder, row)
        n = img.shape[0]
        if img.shape != (n, n) or mask.shape != img.shape or n % size:
            raise MedaiError(
                f"{row['image']}: slices must be square with a side divisible by --size {size}, got {img.shape}"
            )
        f = n // size
        xs.append(img.reshape(size, f, size, f).mean(axis=(1, 3)))
        ys.append(mask[f // 2 :: f, f // 2 :: f])
        vols.append(int(row["volume"]))
        masks.append(row["mask"])
    return {"x": np.stack(xs).astype(np.float32), "y": np.stack(ys), "vol": np.array(vols), "mask": np.array(masks)}


def patient_folds(vol: np.ndarray, k: int) -> list:
    """Patient-grouped folds, fixed by seed 0 (the project's LiTS cross-validation)."""
    ids = np.random.default_rng(0).permutation(np.unique(vol))
    return [ids[i::k] for i in range(k)]


def held_out_volumes(vol: np.ndarray, fold: int, folds: int) -> np.ndarray:
    """The patients (volume ids) fold ``fold`` holds out (none for ``fold`` < 0: train on all)."""
    if fold < 0:
        return np.array([], int)
    if not 0 <= fold < folds:
        raise MedaiError(f"--fold {fold} outside 0..{folds - 1}")
    return patient_folds(vol, folds)[fold]


def run_training_loop(net, opt, g, config: dict, out: Path, *, iterations: int, lr: float,
                      next_batch: Callable[[], tuple], loss_fn, name: str, resume: bool, checkpoint_every: int,
                      progress: Progress, should_stop: ShouldStop, log: Callable[[str], None]) -> tuple:
    """The slice trainers' loop (cascade networks and the tumour stage): AdamW steps on ``next_batch()``
    (x, y) with 50 warm-up steps and cosine decay over ``iterations``; ``out/checkpoint_last.pt`` every
    ``checkpoint_every`` steps and at the end, holding the model, optimiser, ``g``'s random state and
    ``config``; ``resume=True`` continues from it (refused when ``config`` differs), so a resumed run equals
    an uninterrupted one. Returns (iterations done, losses, seconds)."""
    import torch

    from ..io.writers import atomic_output

    it, losses, seconds = 0, [], 0.0
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "checkpoint_last.pt"
    if resume and ckpt_path.is_file():
        ckpt = torch.load(str(ckpt_path), map_location="cpu", weights_only=True)
        if json.loads(ckpt["config"]) != config:
            raise MedaiError(
                f"{ckpt_path} was written with other settings ({ckpt['config']}); resume with the same options"
            )
        net.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        g.set_state(ckpt["generator"])
        it, losses, seconds = int(ckpt["iteration"]), json.loads(ckpt["losses"]), float(ckpt["seconds"])
        log(f"{name}: resumed at iteration {it} of {iterations}")

    def save_checkpoint():
        state = {"model": net.state_dict(), "optimizer": opt.state_dict(), "generator": g.get_state(),
                 "iteration": it, "losses": json.dumps(losses), "seconds": seconds, "config": json.dumps(config)}
        with atomic_output(ckpt_path, ".pt") as tmp:
            torch.save(state, str(tmp))

    t0 = time.perf_counter() - seconds
    while it < iterations:
        check_stop(should_stop)
        lr_now = lr * min(1.0, (it + 1) / 50) * 0.5 * (1 + math.cos(math.pi * it / iterations))
        for group in opt.param_groups:
            group["lr"] = lr_now
        xb, yb = next_batch()
        net.train()
        loss = loss_fn(net(xb), yb.round().long())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.item()))
        it += 1
        seconds = time.perf_counter() - t0
        progress(it, iterations)
        if it % 100 == 0:
            log(f"{name}: it {it} t {seconds:.0f}s lr {lr_now:.2e} loss {np.mean(losses[-100:]):.4f}")
        if it % max(1, checkpoint_every) == 0 or it == iterations:
            save_checkpoint()
    return it, losses, seconds


def save_weights(net, path: Path) -> None:
    """The network's state dict as safetensors (CPU, contiguous), written atomically."""
    from safetensors.torch import save_file

    from ..io.writers import atomic_output

    with atomic_output(path, ".safetensors") as tmp:
        save_file({k: v.detach().cpu().clone().contiguous() for k, v in net.state_dict().items()}, str(tmp))


def train_slice_network(
    data,
    output,
    *,
    recipe: str = "organ",
    iterations: Optional[int] = None,
    fold: int = -1,
    folds: int = 4,
    zoom: Optional[tuple] = None,
    crop_prob: float = 0.0,
    tumour_oversample: Optional[float] = None,
    batch_size: int = 16,
    lr: float = 2e-3,
    init: Optional[dict] = None,
    resume: bool = False,
    checkpoint_every: int = 100,
    seed: int = 0,
    slices: Optional[dict] = None,
    progress: Optional[Progress] = None,
    should_stop: Optional[ShouldStop] = None,
    log: Optional[Callable[[str], None]] = None,
) -> dict:
    """Train one 2-D UNet of the cascade (``recipe`` "organ" or "tumour", see :data:`SLICE_RECIPES`) on
    a LiTS slice folder at 128x128, CPU, batch ``batch_size``, AdamW with 50 warm-up steps and cosine
    decay over ``iterations``. ``fold`` >= 0 holds out that patient-grouped fold and reports its Dice.
    Writes ``output/weights.safetensors`` and ``result.json`` (the layout the CV scripts read),
    ``checkpoint_last.pt`` every ``checkpoint_every`` steps (``resume=True`` continues from it, with the
    random state, so a resumed run equals an uninterrupted one) and ``log.json``. ``init``: a state dict
    to start from (fine-tuning)."""
    import torch
    from monai.losses import DiceCELoss

    from ..augment import ct_slices
    from .metrics import dice
    from .networks import build_network

    progress, should_stop = callbacks(progress, should_stop)
    log = log or (lambda message: None)
    if recipe not in SLICE_RECIPES:
        raise MedaiError(f"unknown --recipe '{recipe}'; use organ, tumour or cascade")
    base = SLICE_RECIPES[recipe]
    iterations = int(iterations or base["iterations"])
    zoom = tuple(float(v) for v in (zoom or base["zoom"]))
    if iterations < 1 or not 0 < zoom[0] <= zoom[1] or not 0 <= crop_prob <= 1:
        raise MedaiError("need --iterations >= 1, a zoom range 0 < LO <= HI and 0 <= --crop-prob <= 1")
    oversample = float(tumour_oversample if tumour_oversample is not None else base["tumour_oversample"])
    config = {
        "recipe": recipe,
        "iterations": iterations,
        "fold": fold,
        "folds": folds,
        "zoom": list(zoom),
        "crop_prob": crop_prob,
        "tumour_oversample": oversample,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "init": bool(init),
        "size": 128,
    }
    out = Path(output).expanduser()
    if out.exists() and not out.is_dir():
        raise MedaiError(f"output {out} is a file; give a folder")
    d = slices if slices is not None else load_slice_folder(data)
    x, y, vol = d["x"], d["y"], d["vol"]
    val_ids = held_out_volumes(vol, fold, folds)
    va = np.isin(vol, val_ids)
    xtr, ytr = x[~va], y[~va]
    weights = np.where(ytr.reshape(len(ytr), -1).max(1) == 2, oversample, 1.0)
    xt, yt = torch.from_numpy(xtr[:, None]), torch.from_numpy(ytr[:, None].astype(np.float32))
    w = torch.from_numpy(weights / weights.sum())
    torch.manual_seed(seed)
    net = build_network(UNET_ARCH)
    if init:
        net.load_state_dict(init)
    if base["loss"] == "dicece":
        loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, lambda_ce=1.0, lambda_dice=1.0)
    else:
        loss_fn = DiceCELoss(
            to_onehot_y=True, softmax=True, batch=True, include_background=False, weight=torch.tensor(CLASS_WEIGHTS)
        )
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    g = torch.Generator().manual_seed(fold + 1 + seed)
    aug = ct_slices(zoom=zoom, crop_prob=crop_prob)
    def next_batch():
        idx = torch.multinomial(w, batch_size, replacement=True, generator=g)
        return aug(xt[idx], yt[idx], g)

    it, losses, seconds = run_training_loop(
        net, opt, g, config, out, iterations=iterations, lr=lr, next_batch=next_batch, loss_fn=loss_fn,
        name=recipe, resume=resume, checkpoint_every=checkpoint_every, progress=progress,
        should_stop=should_stop, log=log)
    res = {
        "config": config,
        "fold": fold,
        "val_volumes": [int(v) for v in val_ids],
        "iterations": it,
        "seconds": round(seconds, 1),
        "final_loss": float(np.mean(losses[-100:])) if losses else None,
    }
    if va.any():
        net.eval()
        with torch.no_grad():
            p = torch.cat(
                [net(torch.from_numpy(x[va][i : i + 32, None])).argmax(1) for i in range(0, int(va.sum()), 32)]
            ).numpy()
        gt = y[va]
        res["liver_dice"] = dice(p >= 1, gt >= 1)
        res["tumour_dice"] = dice(p == 2, gt == 2)
        res["per_volume"] = {
            int(v): {
                "liver": dice(p[vol[va] == v] >= 1, gt[vol[va] == v] >= 1),
                "tumour": dice(p[vol[va] == v] == 2, gt[vol[va] == v] == 2),
                "tumour_px": int((gt[vol[va] == v] == 2).sum()),
            }
            for v in val_ids
        }
    save_weights(net, out / "weights.safetensors")
    (out / "result.json").write_text(json.dumps(res, indent=1) + "\n")
    (out / "log.json").write_text(
        json.dumps(
            {"losses_per_100": [round(float(np.mean(losses[i : i + 100])), 4) for i in range(0, len(losses), 100)]}
        )
        + "\n"
    )
    return res


def cascade_card(
    organ_result: dict,
    tumour_result: dict,
    *,
    pixel_mm: float,
    version: str,
    sha256: str,
    metrics: Optional[dict] = None,
    name: str = "liver-tumor-ct",
    open_mm: float = 5.0,
) -> dict:
    """card.json of an organ + tumour cascade (the shipped model's layout) from the two runs' result.json."""

    def recipe_text(res: dict) -> str:
        c = res["config"]
        loss = (
            "per-sample DiceCE"
            if SLICE_RECIPES[c["recipe"]]["loss"] == "dicece"
            else "batch Dice without background + CE weights 1/1/6"
        )
        crop = f", random crops in an air canvas p={c['crop_prob']}" if c.get("crop_prob") else ""
        init = ", fine-tuned from the previous weights" if c.get("init") else ""
        return (
            f"{c['recipe']} network {res['iterations']} iterations ({loss}, "
            f"zoom x{c['zoom'][0]:.2f}-{c['zoom'][1]:.2f}, "
            f"tumour slices x{c['tumour_oversample']:g}{crop}{init})"
        )

    spec = {
        **SHIPPED_INPUT_SPEC,
        "pixel_mm": pixel_mm,
        "postprocess_open_mm": open_mm,
        "field_of_view": f"each slice resampled to {pixel_mm} mm pixels and centred in an air-padded canvas "
        "of at least "
        "128x128 (a multiple of 16); class scores resampled back onto the input grid",
    }
    return {
        "name": name,
        "version": version,
        "task": "segmentation",
        "architecture": "MONAI UNet 2D (slice-wise), organ + tumour cascade",
        "arch_params": {
            "arch": "cascade2d",
            "out_channels": 3,
            "organ": UNET_ARCH,
            "tumour": UNET_ARCH,
            "region": "organ",
        },
        "input_spec": spec,
        "training_data": "LiTS (Bilic et al., MedIA 2023): 660 axial slices of 16 patients "
        "(volumes 0, 3-5, 7-12, 14-16, 18, "
        "22, 23), every 2nd liver slice plus one liver-free slice above and below; manual liver/tumour labels; "
        "green channel of the distributed JPEGs = [-40, 160] HU window; 128x128. Two UNets, batch 16, AdamW "
        "2e-3 cosine, flips/rot90/affine/intensity/gamma/noise augmentation: "
        + recipe_text(organ_result)
        + "; "
        + recipe_text(tumour_result)
        + ". CPU only.",
        "training": {"organ": organ_result["config"], "tumour": tumour_result["config"]},
        "metrics": metrics or {},
        "licence": "Weights derived from LiTS data (CC BY-NC-SA 4.0): the weights carry non-commercial, "
        "share-alike terms (CC BY-NC-SA 4.0). Code: the package licence.",
        "intended_use": "Research use only - not a medical device. Liver and liver-tumour segmentation of "
        "contrast-enhanced abdominal CT for research, teaching and as a starting point for manual "
        "correction; not for diagnosis, treatment planning or any clinical decision.",
        "weights": "weights.safetensors",
        "sha256": sha256,
        "notes": "Slice-wise 2-D model at about 3 mm pixels: coarse boundaries, small tumours are missed. "
        "See MODEL_CARD.md and docs/segmentation.md for measured numbers and weaknesses.",
    }


def write_cascade_model(
    organ_dir, tumour_dir, dest, *, pixel_mm: float, version: str, metrics: Optional[dict] = None, open_mm: float = 5.0
) -> dict:
    """Merge two slice runs (``weights.safetensors`` + ``result.json``) into a cascade model folder."""
    from safetensors.torch import load_file, save_file

    from ..io.writers import atomic_output
    from ..runtime.registry import sha256_of

    organ_dir, tumour_dir, dest = Path(organ_dir), Path(tumour_dir), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    merged = {
        **{f"organ.{k}": v for k, v in load_file(str(organ_dir / "weights.safetensors")).items()},
        **{f"tumour.{k}": v for k, v in load_file(str(tumour_dir / "weights.safetensors")).items()},
    }
    with atomic_output(dest / "weights.safetensors", ".safetensors") as tmp:
        save_file(merged, str(tmp))
    card = cascade_card(
        json.loads((organ_dir / "result.json").read_text()),
        json.loads((tumour_dir / "result.json").read_text()),
        pixel_mm=pixel_mm,
        version=version,
        sha256=sha256_of(dest / "weights.safetensors"),
        metrics=metrics,
        open_mm=open_mm,
    )
    (dest / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    return card


def cascade_init(model) -> dict:
    """``{"organ": state dict, "tumour": state dict}`` of a cascade model card (fine-tuning start)."""
    from ..runtime.registry import load_weights, resolve_model

    card = resolve_model(model, task="segmentation")
    if (card.arch_params or {}).get("arch") != "cascade2d":
        raise MedaiError(f"--init {model}: not an organ + tumour cascade model")
    state = load_weights(card)
    return {
        part: {k[len(part) + 1 :]: v for k, v in state.items() if k.startswith(part + ".")}
        for part in ("organ", "tumour")
    }


def train_cascade(
    data,
    output,
    *,
    recipe: str = "cascade",
    organ_iterations: Optional[int] = None,
    tumour_iterations: Optional[int] = None,
    stage_iterations: Optional[int] = None,
    pixel_mm: float = 3.0,
    version: str = "dev",
    init=None,
    resume: bool = False,
    log: Optional[Callable[[str], None]] = None,
    progress: Optional[Progress] = None,
    should_stop: Optional[ShouldStop] = None,
    **options,
) -> dict:
    """``train segment`` on a LiTS slice folder: ``recipe`` "organ", "tumour" or "tumour-stage" trains one
    network into ``output``; "cascade" trains the organ and tumour networks (``output/organ``,
    ``output/tumour``), then, unless ``stage_iterations`` is 0, the high-resolution tumour stage
    (``output/stage``, :mod:`.tumour_stage`), and writes ``output/model`` (card.json +
    weights.safetensors, usable with ``segment --model``). ``options`` go to :func:`train_slice_network`
    (fold, zoom, crop_prob, ...); the stage takes only fold, folds, seed, batch size and lr."""
    from .tumour_stage import attach_tumour_stage, train_tumour_stage

    progress, should_stop = callbacks(progress, should_stop)
    out = Path(output).expanduser()
    stage_options = {k: options[k] for k in ("fold", "folds", "seed", "batch_size", "lr", "checkpoint_every")
                     if k in options}
    if recipe == "tumour-stage":
        return train_tumour_stage(data, out, iterations=stage_iterations, resume=resume, log=log,
                                  progress=progress, should_stop=should_stop, **stage_options)
    slices = load_slice_folder(data)
    start = init and cascade_init(init)
    if recipe in ("organ", "tumour"):
        its = organ_iterations if recipe == "organ" else tumour_iterations
        return train_slice_network(
            data,
            out,
            recipe=recipe,
            iterations=its,
            slices=slices,
            resume=resume,
            init=start and start[recipe],
            log=log,
            progress=progress,
            should_stop=should_stop,
            **options,
        )
    if recipe != "cascade":
        raise MedaiError(f"unknown --recipe '{recipe}'; use organ, tumour, tumour-stage or cascade")
    from .tumour_stage import STAGE_DEFAULTS

    results = {}
    its = {
        "organ": organ_iterations or SLICE_RECIPES["organ"]["iterations"],
        "tumour": tumour_iterations or SLICE_RECIPES["tumour"]["iterations"],
    }
    n_stage = STAGE_DEFAULTS["iterations"] if stage_iterations is None else int(stage_iterations)
    total = sum(its.values()) + n_stage
    for part, offset in (("organ", 0), ("tumour", its["organ"])):
        results[part] = train_slice_network(
            data,
            out / part,
            recipe=part,
            iterations=its[part],
            slices=slices,
            resume=resume,
            init=start and start[part],
            log=log,
            progress=lambda i, n, o=offset: progress(o + i, total),
            should_stop=should_stop,
            **options,
        )
    card = write_cascade_model(out / "organ", out / "tumour", out / "model", pixel_mm=pixel_mm, version=version)
    if n_stage > 0:
        offset = its["organ"] + its["tumour"]
        results["stage"] = train_tumour_stage(
            data, out / "stage", iterations=n_stage, resume=resume, log=log,
            progress=lambda i, n: progress(offset + i, total), should_stop=should_stop, **stage_options)
        card = attach_tumour_stage(out / "model", out / "stage", out / "model", version=version)
    return {"model_dir": str(out / "model"), **results, "card": card}
