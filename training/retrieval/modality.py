"""Train and evaluate the modality classifier behind retrieval's out-of-domain check.

Multinomial logistic regression (the package's JSON ``LinearClassifier``) on
``napari_medai.retrieval.domain.image_stats`` of the 96-px thumbnail of the prepared image, over five
classes: brain MRI, CT, ultrasound, noise, photo. A library records the modality of its own cases when
it is built; a query predicted to be of another modality is out of domain.

Data (shared data only, split by source so that no test image's source guided training):
- train: figshare brain MRI (every 3rd image id; half of them again with augmentations that mimic
  other sequences and framing), LiTS CT slices (every 2nd), TotalSegmentator
  example CT (slices along all three axes), us-abdominal images 1-40, seeded synthetic noise, and
  photos bundled with scikit-image (half of them, and half of its LFW face crops);
- test: brain MRI from the *other sources* (never seen: SARTAJ, Br35H, Chakrabarty), CT volumes of
  CHAOS, 3D-IRCADb-07, full-abdomen and the TotalSegmentator DICOM series (slices along all three
  axes), us-abdominal 41-60, the 10 Byra steatosis frames (another scanner), noise with other seeds,
  the other half of the photos.

    PYTHONPATH=src python training/retrieval/modality.py [--cache stats.npz]   # writes src/napari_medai/retrieval/modality.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
TRAIN_PHOTOS = ["astronaut", "camera", "coffee", "chelsea", "coins", "horse", "page", "text", "brick", "grass",
                "clock_motion", "logo", "color", "ihc", "motorcycle_left"]
TEST_PHOTOS = ["moon", "rocket", "hubble_deep_field", "retina", "gravel", "cell", "microaneurysms", "motorcycle_right",
               "chessboard_GRAY"]


def _stats(images, size):
    from napari_medai.retrieval.domain import image_stats, thumbnail
    from napari_medai.retrieval.preprocess import prepare, to_gray

    return np.stack([image_stats(thumbnail(prepare(to_gray(np.asarray(im, np.float32)), size))) for im in images])


def _files(folder, pattern="*"):
    return sorted(p for p in Path(folder).glob(pattern) if p.is_file())


def _load(paths):
    from napari_medai.io.readers import load_image

    out = []
    for p in paths:
        img = load_image(p)
        out.append(img.data)
    return out


def _volume_slices(path, per_axis=8):
    from napari_medai.io.readers import load_image

    vol = np.asarray(load_image(path).data, np.float32)
    out = []
    for axis in range(3):
        n = vol.shape[axis]
        for f in np.linspace(0.2, 0.8, per_axis):
            out.append(np.take(vol, int(f * (n - 1)), axis=axis))
    return out


def _augment_mri(images, seed=0):
    """Figshare slices made to look like other brain-MRI sources (other sequences and framing): a
    tight crop around the head, a gamma curve, the head's intensities inverted (T2/FLAIR-like bright
    fluid), a bright blob (an enhancing or T2-bright lesion), a white frame line. Training only."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    out = []
    for im in images:
        a = np.asarray(im, np.float32)
        if a.ndim == 3:
            a = a[..., :3].mean(-1)
        a = (a - a.min()) / max(1e-6, float(a.max() - a.min()))
        head = ndi.binary_fill_holes(ndi.uniform_filter(a, 5) > 0.1)
        if rng.random() < 0.7 and head.any():
            ys, xs = np.nonzero(head)
            m = int(rng.integers(0, 20))
            a = a[max(0, ys.min() - m):ys.max() + m, max(0, xs.min() - m):xs.max() + m]
            head = head[max(0, ys.min() - m):ys.max() + m, max(0, xs.min() - m):xs.max() + m]
        a = a ** float(rng.uniform(0.5, 2.0))
        if rng.random() < 0.4:
            a = np.where(head, 1.0 - a * 0.9, a)
        if rng.random() < 0.4:
            yy, xx = np.mgrid[: a.shape[0], : a.shape[1]]
            cy, cx = rng.integers(a.shape[0] // 4, 3 * a.shape[0] // 4), rng.integers(a.shape[1] // 4, 3 * a.shape[1] // 4)
            r = rng.uniform(0.05, 0.2) * min(a.shape)
            a = np.maximum(a, ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r) * float(rng.uniform(0.7, 1.0)))
        if rng.random() < 0.15:
            a[:2], a[-2:], a[:, :2], a[:, -2:] = 1.0, 1.0, 1.0, 1.0
        out.append(a * 255)
    return out


def _noise(seed0, n):
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed0)
    out = []
    for i in range(n):
        size = int(rng.choice([64, 128, 256, 512]))
        kind = i % 5
        if kind == 0:
            a = rng.uniform(0, 255, (size, size))
        elif kind == 1:
            a = rng.normal(100, 30, (size, size))
        elif kind == 2:
            a = ndi.gaussian_filter(rng.normal(0, 1, (size, size)), float(rng.uniform(0.5, 12)))
        elif kind == 3:
            a = (rng.random((size, size)) < rng.uniform(0.05, 0.5)) * 255.0
        else:
            a = rng.exponential(50, (size, size))
        out.append(a)
    return out


def _photos(names):
    import skimage
    from PIL import Image

    folder = Path(skimage.__file__).parent / "data"
    out = []
    for n in names:
        path = next(folder.glob(n + ".*"))
        out.append(np.asarray(Image.open(path).convert("RGB"), np.float32))
    return out


def _faces(part):
    import skimage

    faces = np.load(Path(skimage.__file__).parent / "data" / "lfw_subset.npy")
    return list(faces[:100] if part == 0 else faces[100:])


def build(data: Path, size: int):
    fig = _files(data / "brain-mri" / "figshare", "*/*.jpg")
    fig = sorted(fig, key=lambda p: int(p.stem))[::3]
    lits = _files(data / "ct" / "lits-slices-2d" / "images")[::2]
    us = _files(data / "us-abdominal" / "images")
    sets = {
        "train": {
            "mri": _load(fig) + _augment_mri(_load(fig[1::2])),
            "ct": _load(lits) + _volume_slices(data / "ct" / "totalseg-example" / "example_ct.nii.gz", 12),
            "ultrasound": _load(us[:40]),
            "noise": _noise(0, 80),
            "photo": _photos(TRAIN_PHOTOS) + _faces(0),
        },
        "test": {
            "mri (other sources: tumour)": _load([p for c in ("meningioma", "pituitary", "tumour-untyped")
                                                 for p in _files(data / "brain-mri" / "other-sources" / c)]),
            "mri (other sources: notumor)": _load(_files(data / "brain-mri" / "other-sources" / "notumor")),
            "ct volumes (CHAOS, IRCADb, full-abdomen, TotalSeg DICOM)": sum(
                (_volume_slices(p, 6) for p in [data / "ct/chaos-ct-1/chaos_ct_01_ct.nii.gz", data / "ct/ircadb-07/ircadb01_07_ct.nii.gz",
                                                data / "ct/full-abdomen/abdomen_ct_512x512x146.nii.gz", data / "ct/totalseg-example/example_ct_dicom"]), []),
            "ultrasound (us-abdominal 41-60)": _load(us[40:]),
            "ultrasound (steatosis frames)": _load(_files(data / "steatosis" / "frames")),
            "noise (other seeds)": _noise(1000, 40),
            "photo (held-out)": _photos(TEST_PHOTOS) + _faces(1),
        },
    }
    return sets


def main(argv=None):
    from napari_medai.data_paths import shared_data_dir
    from napari_medai.retrieval.domain import MODALITIES, STATS_NAMES
    from napari_medai.retrieval.embedder import get_embedder
    from napari_medai.steatosis.features import LinearClassifier

    data = shared_data_dir()
    if data is None:
        sys.exit("needs ../shared/data (or NAPARI_MEDAI_DATA)")
    size = get_embedder(None).size  # the size queries are prepared at by the default embedder
    argv = sys.argv[1:] if argv is None else argv
    cache = Path(argv[argv.index("--cache") + 1]) if "--cache" in argv else None
    if cache is not None and cache.is_file() and "--fresh" not in argv:
        z = np.load(cache, allow_pickle=False)
        stats = {k: z[k] for k in z.files}
    else:
        sets = build(data, size)
        stats = {f"{part}|{c}": _stats(images, size) for part in sets for c, images in sets[part].items()}
        if cache is not None:
            np.savez(cache, **stats)
    X, y = [], []
    for key, S in stats.items():
        part, c = key.split("|", 1)
        if part == "train":
            X.append(S)
            y += [MODALITIES.index(c)] * len(S)
    X = np.concatenate(X)
    clf = LinearClassifier.fit(X, np.asarray(y), list(STATS_NAMES), C=1.0, n_classes=len(MODALITIES))
    train_acc = float((clf.predict_proba(X).argmax(1) == np.asarray(y)).mean())
    report = {"train_counts": {k.split("|", 1)[1]: len(v) for k, v in stats.items() if k.startswith("train|")},
              "train_accuracy": round(train_acc, 4), "test": {}}
    for key, S in stats.items():
        part, name = key.split("|", 1)
        if part != "test":
            continue
        p = clf.predict_proba(S)
        pred = p.argmax(1)
        report["test"][name] = {
            "n": len(S),
            "predicted": {MODALITIES[k]: int((pred == k).sum()) for k in range(len(MODALITIES)) if (pred == k).any()},
            "flagged_vs_mri_library": round(float((p[:, 0] < 0.5).mean()), 4),
            "flagged_at_floor": {str(f): round(float((p[:, 0] < f).mean()), 4) for f in (0.5, 0.3, 0.2, 0.1)},
        }
    doc = {"classes": list(MODALITIES), "features": list(STATS_NAMES), "prepared_size": size,
           "classifier": clf.to_dict(), "evaluation": report,
           "trained_by": "training/retrieval/modality.py"}
    out = ROOT / "src" / "napari_medai" / "retrieval" / "modality.json"
    out.write_text(json.dumps(doc, indent=1))
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
