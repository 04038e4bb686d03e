"""Train the 2-D slice-wise liver/tumour UNet on the cached LiTS slices.

  python training/segmentation/train2d.py --fold 0 --folds 4 --minutes 6     # one CV fold
  python training/segmentation/train2d.py --fold -1 --minutes 15 --out runs/final   # all patients

Time-budgeted: the cosine learning-rate schedule runs over the wall-clock budget. Defaults = the v2
recipe (128x128 whole slices, batch-pooled Dice + weighted CE, tumour slices oversampled). Opt-in:
--size 192 (cache from prepare.py --size 192), --crop 160 random crops, --synth P synthetic hypodense
lesions pasted into tumour-free livers (after Hu et al., CVPR 2023), --native-eval CV Dice against the
native 512x512 masks (class scores upsampled). result.json records the config.
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
SCALE_RANGE = 1.5  # zoom factor range [1/1.5, 1.5] (v1: 1.25)
TUMOUR_OVERSAMPLE = 4.0  # v1: 2, v2: 3
CLASS_WEIGHTS = (1.0, 1.0, 6.0)  # CE weights. v1: none, per-sample Dice; v2: 3, batch Dice (tumour stayed 0)
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
    sc = torch.exp((r(b) - 0.5) * 2 * math.log(SCALE_RANGE))
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


def _smooth_noise(b: int, h: int, w: int, cells: int, g: torch.Generator) -> torch.Tensor:
    """Low-frequency noise in [-1, 1]: a random coarse grid upsampled bicubically."""
    n = torch.rand(b, 1, cells, cells, generator=g) * 2 - 1
    return F.interpolate(n, size=(h, w), mode="bicubic", align_corners=False).clamp(-1, 1)


def synth_lesions(x: torch.Tensor, y: torch.Tensor, g: torch.Generator, p: float = 0.5):
    """Paste synthetic lesions into livers that have no tumour (Hu et al., CVPR 2023, simplified).

    x (B,1,H,W) in [0,1] (= [-40,160] HU), y (B,1,H,W) float labels. Each chosen slice gets 1-3
    lesions: an ellipse (radius 2-18 px, random axes/rotation) with a noise-perturbed, soft border,
    darker than the liver by 25-90 HU (10 % brighter), with its own texture and a little blur.
    Only liver pixels change; the label becomes 2 where the lesion covers the liver.
    """
    b, _, h, w = x.shape
    r = lambda *s: torch.rand(*s, generator=g)
    liver = y == 1
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    for i in range(b):
        if (y[i] == 2).any() or liver[i].sum() < 200 or r(1).item() > p:
            continue
        idx = torch.nonzero(liver[i, 0])
        for _ in range(int(torch.randint(1, 4, (1,), generator=g))):
            cy, cx = idx[torch.randint(0, len(idx), (1,), generator=g)][0].float()
            rad = 2 + 16 * r(1).item() ** 1.5
            ar = 0.6 + 0.8 * r(1).item()
            ang = math.pi * r(1).item()
            dy, dx = yy - cy, xx - cx
            u = (dx * math.cos(ang) + dy * math.sin(ang)) / (rad * ar)
            v = (-dx * math.sin(ang) + dy * math.cos(ang)) / (rad / ar)
            d = torch.sqrt(u ** 2 + v ** 2) + 0.25 * _smooth_noise(1, h, w, 8, g)[0, 0]
            soft = torch.sigmoid((1 - d) * (4 + 8 * r(1).item()))  # border sharpness
            soft = soft * liver[i, 0]
            contrast = (25 + 65 * r(1).item()) / 200.0
            if r(1).item() < 0.1:
                contrast = -contrast * 0.6
            texture = 0.04 * r(1).item() * _smooth_noise(1, h, w, 24, g)[0, 0]
            x[i, 0] = (x[i, 0] - soft * (contrast + texture)).clamp(0, 1)
            y[i, 0][(soft > 0.5) & liver[i, 0]] = 2
    return x, y


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


@torch.no_grad()
def predict_native(net, x: np.ndarray, bs: int = 16, native: int = 512) -> np.ndarray:
    """Predict at the model resolution, upsample the class scores to the native 512x512 grid."""
    net.eval()
    out = []
    for i in range(0, len(x), bs):
        s = net(torch.from_numpy(x[i:i + bs, None]))
        out.append(F.interpolate(s, size=(native, native), mode="bilinear", align_corners=False).argmax(1).numpy().astype(np.uint8))
    return np.concatenate(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fold", type=int, default=0, help="-1 = train on all patients")
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--minutes", type=float, default=5)
    ap.add_argument("--bs", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--crop", type=int, default=0, help="random square crops of this size (0 = whole slices)")
    ap.add_argument("--synth", type=float, default=0.0, help="probability of synthetic lesions per tumour-free liver slice")
    ap.add_argument("--native-eval", action="store_true", help="CV Dice at the native 512x512 masks (else at --size)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--recipe", choices=["v1", "v3"], default="v3",
                    help="v1: per-sample DiceCE, zoom 1.25, tumour slices x2 (the organ model of the cascade); "
                         "v3: batch Dice without background, CE weights 1/1/6, zoom 1.5, tumour slices x4 (the tumour model)")
    ap.add_argument("--iters", type=int, default=0, help="iteration budget (overrides --minutes; reproducible under CPU contention)")
    ap.add_argument("--extra", default="", help="extra training caches (comma-separated names in cache/, e.g. totalseg_128), never validated on")
    ap.add_argument("--extra-weight", type=float, default=2.0, help="sampling weight of an extra slice relative to a LiTS slice")
    ap.add_argument("--out", default=None)
    ap.add_argument("--tag", default="v3_")
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
    xtr, ytr = x[tr], y[tr]
    # oversample tumour slices x2
    global SCALE_RANGE
    if args.recipe == "v1":
        SCALE_RANGE = 1.25
    w = np.where(ytr.reshape(len(ytr), -1).max(1) == 2, 2.0 if args.recipe == "v1" else TUMOUR_OVERSAMPLE, 1.0)
    for name in filter(None, args.extra.split(",")):
        e = np.load(HERE / "cache" / f"{name}.npz")
        xtr, ytr = np.concatenate([xtr, e["x"]]), np.concatenate([ytr, e["y"]])
        w = np.concatenate([w, np.full(len(e["x"]), args.extra_weight)])
        print(f"extra {name}: {len(e['x'])} slices", flush=True)
    xt, yt = torch.from_numpy(xtr[:, None]), torch.from_numpy(ytr[:, None].astype(np.float32))
    w = torch.from_numpy(w / w.sum())
    net = build()
    if args.recipe == "v1":
        loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, lambda_ce=1.0, lambda_dice=1.0)
    else:
        loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, batch=True, include_background=False, weight=torch.tensor(CLASS_WEIGHTS))
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    g = torch.Generator().manual_seed(args.fold + 1)
    budget = args.minutes * 60
    t0 = time.time()
    it, losses = 0, []
    while True:
        el = time.time() - t0
        if (args.iters and it >= args.iters) or (not args.iters and el > budget):
            break
        frac = it / args.iters if args.iters else el / budget
        lr = args.lr * (min(1.0, (it + 1) / 50)) * 0.5 * (1 + math.cos(math.pi * frac))
        for pg in opt.param_groups:
            pg["lr"] = lr
        idx = torch.multinomial(w, args.bs, replacement=True, generator=g)
        xb, yb = augment(xt[idx], yt[idx], g)
        if args.crop and args.crop < xb.shape[-1]:
            oy, ox = (int(v) for v in torch.randint(0, xb.shape[-1] - args.crop + 1, (2,), generator=g))
            xb, yb = xb[..., oy:oy + args.crop, ox:ox + args.crop], yb[..., oy:oy + args.crop, ox:ox + args.crop]
        if args.synth > 0:
            xb, yb = synth_lesions(xb.clone(), yb.clone(), g, p=args.synth)
        net.train()
        loss = loss_fn(net(xb), yb.round().long())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        it += 1
        if it % 100 == 0:
            print(f"it {it} t {el:.0f}s lr {lr:.2e} loss {np.mean(losses[-100:]):.4f}", flush=True)
    res = {"config": {k: getattr(args, k) for k in ("size", "crop", "synth", "bs", "lr", "native_eval", "recipe", "iters", "extra", "extra_weight")}, "fold": args.fold, "val_volumes": val_ids.tolist(), "iterations": it,
           "seconds": round(time.time() - t0, 1), "final_loss": float(np.mean(losses[-100:]))}
    if va.any():
        if args.native_eval:
            p = predict_native(net, x[va])
            from PIL import Image
            lits = HERE.parents[1].parent / "shared" / "data" / "ct" / "lits-slices-2d"
            gt = np.stack([np.asarray(Image.open(lits / m)) for m in d["mask"][va]])
        else:
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
    out = Path(args.out) if args.out else HERE / "runs" / f"{args.tag}fold{args.fold}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps(res, indent=1))
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(out / "weights.safetensors"))


if __name__ == "__main__":
    main()
