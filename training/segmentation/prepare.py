"""Cache the LiTS 2-D slices (green channel = [-40,160] HU window) at 128x128 as .npy.

Usage: python training/segmentation/prepare.py [--size 128]
Writes training/segmentation/cache/lits_{size}.npz with x (N,S,S) float32 in [0,1],
y (N,S,S) uint8 {0,1,2}, vol (N,) int patient id.
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1].parent / "shared" / "data" / "ct" / "lits-slices-2d"


def area_resize(a: np.ndarray, size: int) -> np.ndarray:
    f = a.shape[0] // size
    return a.reshape(size, f, size, f).mean(axis=(1, 3))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=128)
    args = ap.parse_args()
    xs, ys, vols = [], [], []
    with open(DATA / "index.csv") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        img = np.asarray(Image.open(DATA / r["image"]))[..., 1].astype(np.float32) / 255.0
        m = np.asarray(Image.open(DATA / r["mask"]))
        assert img.shape == (512, 512) and m.shape == (512, 512), (img.shape, m.shape)
        f = 512 // args.size
        xs.append(area_resize(img, args.size))
        ys.append(m[f // 2 :: f, f // 2 :: f].astype(np.uint8))
        vols.append(int(r["volume"]))
    x, y, v = np.stack(xs).astype(np.float32), np.stack(ys), np.array(vols)
    (HERE / "cache").mkdir(exist_ok=True)
    out = HERE / "cache" / f"lits_{args.size}.npz"
    np.savez(out, x=x, y=y, vol=v)
    print(out, x.shape, x.min(), x.max(), np.bincount(y.ravel()), np.unique(v))


if __name__ == "__main__":
    main()
