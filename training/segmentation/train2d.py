"""Train the 2-D slice-wise liver/tumour UNet on the cached LiTS slices.

  python training/segmentation/train2d.py --fold 0 --folds 4 --minutes 5     # one CV fold
  python training/segmentation/train2d.py --fold -1 --minutes 11 --out runs/final   # all patients

Time-budgeted: the cosine learning-rate schedule runs over the wall-clock budget.
CV Dice is computed on the held-out patients' slices at 128x128 (liver = labels 1+2, tumour = 2),
pooled over the fold's slices.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
ARCH = dict(spatial_dims=2, in_channels=1, out_channels=3, channels=(16, 32, 64, 128, 256),
            strides=(2, 2, 2, 2), num_res_units=2)


def build():
    from monai.networks.nets import UNet
    return UNet(**ARCH)


def folds_of(vols: np.ndarray, k: int) -> list[np.ndarray]:
    ids = np.unique(vols)
    rng = np.random.default_rng(0)
    ids = rng.permutation(ids)
    return [ids[i::k] for i in range(k)]


def augment(x: torch.Tensor, y: torch.Tensor, g: torch.Generator):
    """x (B,1,H,W) float, y (B,1,H,W) float labels. Geometric + intensity augmentation."""
    b = x.shape[0]
    r = lambda *s: torch.rand(*s, generator=g)
    ang = (r(b) - 0.5) * 2 * math.radians(15) + torch.randint(0, 4, (b,), generator=g) * (math.pi / 2) * (r(b) < 0.3)
    sc = torch.exp((r(b) - 0.5) * 2 * math.log(1.25))
    flip = torch.where(r(b) < 0.2, -1.0, 1.0)
    tx, ty = (r(b) - 0.5) * 0.2, (r(b) - 0.5) * 0.2
    cos, sin = torch.cos(ang) / sc, torch.sin(ang) / sc
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 0, 2] = cos * flip, -sin, tx
    theta[:, 1, 0], theta[:, 1, 1], theta[:, 1, 2] = sin * flip, cos, ty
    grid = F.affine_grid(theta, x.shape, align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    y = F.grid_sample(y, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    # intensity: contrast/brightness (window shift ~ +-25 HU), gamma, noise, slight blur
    a = 1 + (r(b, 1, 1, 1) - 0.5) * 0.4
    s = (r(b, 1, 1, 1) - 0.5) * 0.25
    x = (x * a + s).clamp(0, 1)
    gam = torch.exp((r(b, 1, 1, 1) - 0.5) * 0.6)
    x = x.clamp_min(1e-6) ** gam
    x = x + torch.randn(x.shape, generator=g) * (r(b, 1, 1, 1) * 0.05)
    return x.clamp(0, 1), y


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    s = pred.sum() + gt.sum()
    return float(2 * (pred & gt).sum() / s) if s else 1.0


@torch.no_grad()
def predict(net, x: np.ndarray, bs: int = 32) -> np.ndarray:
    net.eval()
    out = []
    for i in range(0, len(x), bs):
        out.append(net(torch.from_numpy(x[i:i + bs, None])).argmax(1).numpy())
    return np.concatenate(out).astype(np.uint8)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fold", type=int, default=0, help="-1 = train on all patients")
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--minutes", type=float, default=5)
    ap.add_argument("--bs", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from monai.losses import DiceCELoss

    d = np.load(HERE / "cache" / f"lits_{args.size}.npz")
    x, y, vol = d["x"], d["y"], d["vol"]
    if args.fold >= 0:
        val_ids = folds_of(vol, args.folds)[args.fold]
        va = np.isin(vol, val_ids)
    else:
        val_ids, va = np.array([], int), np.zeros(len(vol), bool)
    tr = ~va
    xt, yt = torch.from_numpy(x[tr, None]), torch.from_numpy(y[tr, None].astype(np.float32))
    # oversample tumour slices x2
    w = np.where(y[tr].reshape(tr.sum(), -1).max(1) == 2, 2.0, 1.0)
    w = torch.from_numpy(w / w.sum())
    net = build()
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, lambda_ce=1.0, lambda_dice=1.0)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    g = torch.Generator().manual_seed(args.fold + 1)
    budget = args.minutes * 60
    t0 = time.time()
    it, losses = 0, []
    while True:
        el = time.time() - t0
        if el > budget:
            break
        frac = el / budget
        lr = args.lr * (min(1.0, (it + 1) / 50)) * 0.5 * (1 + math.cos(math.pi * frac))
        for pg in opt.param_groups:
            pg["lr"] = lr
        idx = torch.multinomial(w, args.bs, replacement=True, generator=g)
        xb, yb = augment(xt[idx], yt[idx], g)
        net.train()
        loss = loss_fn(net(xb), yb.round().long())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        it += 1
        if it % 100 == 0:
            print(f"it {it} t {el:.0f}s lr {lr:.2e} loss {np.mean(losses[-100:]):.4f}", flush=True)
    res = {"fold": args.fold, "val_volumes": val_ids.tolist(), "iterations": it,
           "seconds": round(time.time() - t0, 1), "final_loss": float(np.mean(losses[-100:]))}
    if va.any():
        p = predict(net, x[va])
        gt = y[va]
        res["liver_dice"] = dice(p >= 1, gt >= 1)
        res["tumour_dice"] = dice(p == 2, gt == 2)
        per = {}
        for v in val_ids:
            m = vol[va] == v
            per[int(v)] = {"liver": dice(p[m] >= 1, gt[m] >= 1), "tumour": dice(p[m] == 2, gt[m] == 2),
                           "tumour_px": int((gt[m] == 2).sum())}
        res["per_volume"] = per
    print(json.dumps(res), flush=True)
    out = Path(args.out) if args.out else HERE / "runs" / f"fold{args.fold}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps(res, indent=1))
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(out / "weights.safetensors"))


if __name__ == "__main__":
    main()
