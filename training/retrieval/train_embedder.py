"""Train / evaluate the multi-scale residual CNN embedder on figshare brain MRI (CPU friendly).

  python training/retrieval/train_embedder.py --fold 0 --epochs 30            # one fold of the protocol
  python training/retrieval/train_embedder.py --fold all --epochs 30 \
         --out src/napari_medai/models/embedder-brain-mri                        # the shipped model

--fold K   : train on the other 4 folds, build the library from them, query with fold K, and report
             mAP / P@10 / R@10 per class (results/fold<K>_<tag>.json)
--fold all : train on all 3,064 slices; --out writes model.safetensors + card.json
The folds come from data.py (blocks of ~60 consecutive image ids, cut at the largest image change).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent

from data import CLASSES, load_cache  # noqa: E402

from napari_medai.retrieval.metrics import retrieval_metrics  # noqa: E402
from napari_medai.retrieval.train import embed_array, export_embedder, train_embedder  # noqa: E402


def main(argv=None):
    """Train the embedder on one fold split (or all data), score the held-out fold and optionally export it."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--fold", default="0")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--size", type=int, default=128, help="input size in px (the card records it)")
    ap.add_argument("--bs", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--loss", default="ce+supcon", choices=["ce", "supcon", "ce+supcon"])
    ap.add_argument("--supcon-weight", type=float, default=1.0)
    ap.add_argument("--instance-weight", type=float, default=0.0,
                    help="label-free instance-contrastive term (two views)")
    ap.add_argument("--embed-dim", type=int, default=128)
    ap.add_argument("--widths", default="16,32,64,128,192")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-bf16", action="store_true")
    ap.add_argument("--max-minutes", type=float, default=0)
    ap.add_argument("--tag", default="")
    ap.add_argument("--out", default="")
    ap.add_argument("--unseen-class", default="", choices=["", "glioma", "meningioma", "pituitary"],
                    help="leave this class out of training (library and queries keep it): how the descriptor "
                         "ranks a class it never saw; the raw-pixel descriptor on the same split is the reference")
    ap.add_argument("--save-emb", action="store_true",
                    help="save library/query descriptors to cache/emb_fold<K>_<tag>.npz")
    a = ap.parse_args(argv)
    if a.unseen_class and (a.out or a.fold == "all"):
        ap.error("--unseen-class is a study on one fold; it cannot export a model")
    torch.set_num_threads(a.threads)

    d = load_cache(a.size)
    x, y, folds = d["x"], d["y"], d["folds"]
    tr = np.ones(len(y), bool) if a.fold == "all" else folds != int(a.fold)
    te = ~tr
    fit = tr.copy()
    train_classes = list(CLASSES)
    if a.unseen_class:
        fit &= y != CLASSES.index(a.unseen_class)
        train_classes.remove(a.unseen_class)
    y_fit = np.searchsorted([CLASSES.index(c) for c in train_classes], y[fit])
    arch = {"widths": [int(v) for v in a.widths.split(",")], "embed_dim": a.embed_dim, "in_ch": 1, "dropout": 0.2}
    print(f"fold={a.fold} train={fit.sum()} library={tr.sum()} test={te.sum()} loss={a.loss} epochs={a.epochs} "
          f"unseen={a.unseen_class or '-'}", flush=True)
    t0 = time.time()
    net, arch, hist = train_embedder(
        x[fit], y_fit, n_classes=len(train_classes), epochs=a.epochs, batch_size=a.bs, lr=a.lr, loss=a.loss,
        supcon_weight=a.supcon_weight, instance_weight=a.instance_weight, arch=arch, seed=a.seed, device="cpu",
        max_minutes=a.max_minutes, mixed_precision=not a.no_bf16, log=lambda r: print(json.dumps(r), flush=True),
    )
    minutes = (time.time() - t0) / 60
    tag = a.tag or (
        f"{a.loss}_e{a.epochs}"
        + (f"_s{a.size}" if a.size != 128 else "")
        + (f"_unseen-{a.unseen_class}" if a.unseen_class else "")
    )
    out = {"fold": a.fold, "args": vars(a), "arch": arch, "train_minutes": minutes, "log": hist,
           "params": sum(p.numel() for p in net.parameters())}
    if te.any():
        names = dict(enumerate(CLASSES))
        raw_reference = None
        if a.unseen_class:  # reference: raw pixels (32 x 32, zero-mean, L2) on the same split, computed once
            from napari_medai.retrieval.embedder import PixelEmbedder
            from napari_medai.retrieval.preprocess import resize_area

            raw = PixelEmbedder(32).embed_prepared(np.stack([resize_area(im.astype(np.float32), 32) for im in x]))
            mr = retrieval_metrics(raw[te], y[te], raw[tr], y[tr], k=10)
            raw_reference = {"overall": mr["overall"],
                             "per_class": {names[int(k)]: v for k, v in mr["per_class"].items()}}
        for tta in (False, True):
            zl, pl = embed_array(net, x[tr], tta=tta)
            zq, pq = embed_array(net, x[te], tta=tta)
            if a.save_emb:  # descriptors for post-hoc ranking studies (query expansion, DBA)
                (HERE / "cache").mkdir(exist_ok=True)
                np.savez(HERE / "cache" / f"emb_fold{a.fold}_{tag}{'_tta' if tta else ''}.npz",
                         zl=zl, yl=y[tr], pl=pl, zq=zq, yq=y[te], pq=pq)
            m = retrieval_metrics(zq, y[te], zl, y[tr], k=10)
            res = {"overall": m["overall"], "per_class": {names[int(k)]: v for k, v in m["per_class"].items()},
                   "classifier_acc": None if a.unseen_class else float((pq.argmax(1) == y[te]).mean())}
            if raw_reference is not None:
                res["raw_pixels"] = raw_reference
            out["metrics_tta" if tta else "metrics"] = res
            print(("TTA " if tta else "") + json.dumps({
                "mAP": res["overall"]["mAP"], "P@10": res["overall"]["P@10"],
                **({"raw_unseen_mAP": round(res["raw_pixels"]["per_class"][a.unseen_class]["mAP"], 4)}
                   if a.unseen_class else {}),
                "acc": res["classifier_acc"], **{c: round(v["mAP"], 4) for c, v in res["per_class"].items()},
            }), flush=True)
        (HERE / "results").mkdir(exist_ok=True)
        (HERE / "results" / f"fold{a.fold}_{tag}.json").write_text(json.dumps(out, indent=1))
    if a.out:
        export_embedder(
            net, arch, Path(a.out), classes=CLASSES, size=a.size,
            training_data="figshare brain tumour MRI (Cheng et al., figshare 10.6084/m9.figshare.1512427, CC BY 4.0): "
            "all 3,064 T1-weighted contrast-enhanced slices of 233 patients "
            "(glioma 1,426, meningioma 708, pituitary 930)",
            notes=f"loss={a.loss} (cross-entropy + supervised contrastive), {a.epochs} epochs, batch {a.bs}, AdamW "
            f"one-cycle lr {a.lr}, bf16 autocast, {minutes:.1f} min on {a.threads} CPU thread(s); see MODEL_CARD.md",
            licence="CC BY 4.0 (weights derived from the CC BY 4.0 figshare data set; attribute Jun Cheng et al.)",
        )
        print(f"exported to {a.out}", flush=True)
    print(f"train minutes {minutes:.1f}", flush=True)


if __name__ == "__main__":
    main()
