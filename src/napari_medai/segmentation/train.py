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
from pathlib import Path
from typing import Callable, Optional

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
        raise MedaiError(f"{folder} has no dataset.json; give a Medical Segmentation Decathlon folder (dataset.json, imagesTr, labelsTr)")
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
    from ..io.readers import load_image
    from .core import canonical_orientation, to_canonical, window01

    img, lab = load_image(image), load_image(label)
    if img.data.ndim != 3 or img.rgb:
        raise MedaiError(f"{image.name}: training takes 3-D single-channel volumes, got shape {img.data.shape}")
    if lab.data.shape != img.data.shape:
        raise MedaiError(f"{label.name}: label shape {lab.data.shape} differs from image {img.data.shape}")
    perm, flips = canonical_orientation(img.geometry.affine_ras(), 3)
    x = window01(to_canonical(img.data, perm, flips), window).astype(np.float32)
    y = np.ascontiguousarray(to_canonical(np.asarray(lab.data), perm, flips)).astype(np.int64)
    if y.min() < 0 or y.max() >= n_classes:
        raise MedaiError(f"{label.name}: label values {int(y.min())}..{int(y.max())} outside 0..{n_classes - 1} of dataset.json")
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


def _augment_2d(x, y, g):
    import torch
    import torch.nn.functional as F

    b = x.shape[0]
    r = lambda *s: torch.rand(*s, generator=g)  # noqa: E731
    ang = (r(b) - 0.5) * 2 * math.radians(15)
    sc = torch.exp((r(b) - 0.5) * 2 * math.log(1.2))
    cos, sin = torch.cos(ang) / sc, torch.sin(ang) / sc
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
    theta[:, :, 2] = (r(b, 2) - 0.5) * 0.2
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    y = F.grid_sample(y.float(), grid, mode="nearest", padding_mode="zeros", align_corners=False).long()
    x = x * (1 + (r(b, 1, 1, 1) - 0.5) * 0.3) + (r(b, 1, 1, 1) - 0.5) * 0.2
    return x + torch.randn(x.shape, generator=g) * 0.02, y


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
        xp, yp = x[sl], y[sl]
        for axis in (1, 2):
            if rng.random() < 0.2:
                xp, yp = np.flip(xp, axis), np.flip(yp, axis)
        xs.append(np.ascontiguousarray(xp))
        ys.append(np.ascontiguousarray(yp))
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
    for k, (image, label) in enumerate(pairs):
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
            raise MedaiError(f"checkpoint {resume} is for another architecture or label set; resume with the same --arch and data")
        net.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        start_epoch, best = int(ckpt["epoch"]), float(ckpt["best"])
        history = json.loads(ckpt.get("history", "[]"))
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    g = torch.Generator().manual_seed(seed)

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
                xb, yb = _augment_2d(train_x[idx], train_y[idx], g)
            else:
                xb, yb = _patches_3d([cases[i] for i in train_idx], roi, bs, rng)
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
