"""Cache the LiTS 2-D slices (green channel = [-40,160] HU window) at SIZE x SIZE.

Usage: python training/segmentation/prepare.py [--size 128]
Writes training/segmentation/cache/lits_{size}.npz with x (N,S,S) float32 in [0,1] (block mean
when S divides 512, else antialiased bilinear), y (N,S,S) uint8 {0,1,2} (centre sample / nearest), vol (N,) int patient id, mask (N,) relative path
of the native 512x512 mask (used for native-resolution CV Dice).
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1].parent / "shared" / "data" / "ct" / "lits-slices-2d"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=128)
    args = ap.parse_args()
    xs, ys, vols, masks = [], [], [], []
    with open(DATA / "index.csv") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        img = np.asarray(Image.open(DATA / r["image"]))[..., 1].astype(np.float32) / 255.0
        m = np.asarray(Image.open(DATA / r["mask"]))
        assert img.shape == (512, 512) and m.shape == (512, 512), (img.shape, m.shape)
        if 512 % args.size == 0:  # v1/v2 cache: block mean and centre sample
            f = 512 // args.size
            xs.append(img.reshape(args.size, f, args.size, f).mean(axis=(1, 3)))
            ys.append(m[f // 2 :: f, f // 2 :: f].astype(np.uint8))
            vols.append(int(r["volume"]))
            masks.append(r["mask"])
            continue
        t = torch.from_numpy(img)[None, None]
        xs.append(F.interpolate(t, size=(args.size,) * 2, mode="bilinear", antialias=True, align_corners=False)[0, 0].numpy())
        ys.append(F.interpolate(torch.from_numpy(m.copy())[None, None].float(), size=(args.size,) * 2, mode="nearest")[0, 0].numpy().astype(np.uint8))
        vols.append(int(r["volume"]))
        masks.append(r["mask"])
    x, y, v = np.stack(xs).astype(np.float32), np.stack(ys), np.array(vols)
    (HERE / "cache").mkdir(exist_ok=True)
    out = HERE / "cache" / f"lits_{args.size}.npz"
    np.savez(out, x=x, y=y, vol=v, mask=np.array(masks))
    print(out, x.shape, x.min(), x.max(), np.bincount(y.ravel()), np.unique(v))


if __name__ == "__main__":
    main()
