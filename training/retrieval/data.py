"""figshare brain-tumour MRI and the other-sources set: listing, cached down-sampled images, splits.

PYTHONPATH=src python training/retrieval/data.py      # builds cache/figshare_<size>.npz once

The fixed splits (figshare folds, other-sources sources) are in splits/splits.json (make_splits.py).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

from napari_medai.retrieval.metrics import assign_folds, consecutive_blocks
from napari_medai.retrieval.preprocess import prepare

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CLASSES = ("glioma", "meningioma", "pituitary")
# multi-source label set: type classes (the type head) and the coarse group of every folder name
TYPES = ("glioma", "meningioma", "pituitary", "notumor")
COARSE = {"glioma": 1, "meningioma": 1, "pituitary": 1, "tumour-untyped": 1, "notumor": 0}
SOURCES = ("sartaj", "br35h", "navoneel")  # navoneel = Chakrabarty's brain-tumour detection set
CACHE = HERE / "cache"
SPLITS = HERE / "splits" / "splits.json"


def data_root(name: str = "figshare") -> Path:
    """Return the brain-MRI data folder `name` under NAPARI_MEDAI_DATA (default ../shared/data)."""
    base = Path(os.environ.get("NAPARI_MEDAI_DATA", REPO.parent / "shared" / "data"))
    return base / "brain-mri" / name


def load_other_sources(size: int = 128):
    """other-sources as dict(x=(N,size,size) float16, label=folder name, source, files), in index.csv order."""
    import csv

    CACHE.mkdir(exist_ok=True)
    f = CACHE / f"other_{size}.npz"
    if f.exists():
        d = np.load(f, allow_pickle=False)
        return {k: d[k] for k in d.files}
    from PIL import Image

    root = data_root("other-sources")
    rows = list(csv.DictReader(open(root / "index.csv")))
    x = np.stack(
        [prepare(np.asarray(Image.open(root / r["file"]).convert("L")), size) for r in rows]
    ).astype(np.float16)
    d = {"x": x, "label": np.asarray([r["class"] for r in rows]), "source": np.asarray([r["source"] for r in rows]),
         "files": np.asarray([r["file"] for r in rows])}
    np.savez(f, **d)
    return d


def load_splits() -> dict:
    """Return the fixed splits from splits/splits.json (written by make_splits.py)."""
    import json

    return json.loads(SPLITS.read_text())


def list_items(root: Path | None = None):
    """Return the figshare image paths, class indices and image ids, sorted by image id."""
    root = root or data_root()
    paths, labels, ids = [], [], []
    for ci, c in enumerate(CLASSES):
        for f in sorted((root / c).glob("*.jpg")):
            paths.append(str(f))
            labels.append(ci)
            ids.append(int(f.stem))
    order = np.argsort(ids)
    return [paths[i] for i in order], np.asarray(labels)[order], np.asarray(ids)[order]


def load_cache(size: int = 128):
    """Returns dict(x=(N,size,size) float16 in [0,1], y, ids, paths, folds)."""
    CACHE.mkdir(exist_ok=True)
    f = CACHE / f"figshare_{size}.npz"
    if f.exists():
        d = np.load(f, allow_pickle=False)
        return {k: d[k] for k in d.files}
    from PIL import Image

    paths, y, ids = list_items()
    t0 = time.time()
    x = np.empty((len(paths), size, size), np.float16)
    for i, p in enumerate(paths):
        x[i] = prepare(np.asarray(Image.open(p).convert("L")), size)
    print(f"cached {len(paths)} images at {size}px in {time.time() - t0:.0f}s", flush=True)
    # The folds are always cut on the 128 px images, so every input size is measured on the same split.
    folds = make_folds(x, y, ids) if size == 128 else load_cache(128)["folds"]
    np.savez(f, x=x, y=y, ids=ids, paths=np.asarray(paths), folds=folds)
    return {"x": x, "y": y, "ids": ids, "paths": np.asarray(paths), "folds": folds}


def make_folds(x, y, ids, n_folds: int = 5, block: int = 60, seed: int = 0):
    """Blocks of ~60 consecutive ids (never across a class change or an id gap); each cut is moved
    to the largest image change within +-20 ids (most likely a patient change)."""
    small = x.reshape(len(x), x.shape[1] // 8, 8, x.shape[2] // 8, 8).astype(np.float32).mean((2, 4))
    small = small.reshape(len(x), -1)
    order = np.argsort(ids)
    change = np.zeros(len(x))
    d = np.abs(small[order][1:] - small[order][:-1]).mean(1)
    change[order[:-1]] = d
    groups = consecutive_blocks(ids, y, block=block, change=change)
    return assign_folds(groups, y, n_folds=n_folds, seed=seed)


if __name__ == "__main__":
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 128
    d = load_cache(size)
    for f in range(5):
        m = d["folds"] == f
        print(f, m.sum(), np.bincount(d["y"][m], minlength=3))
