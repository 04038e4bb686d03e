"""Issue #20: the embedder trained on figshare + other-sources, evaluated with the fixed splits.

  PYTHONPATH=src python training/retrieval/multisource.py --run 0          # one pre-registered run (96 px, 24 epochs)
  PYTHONPATH=src python training/retrieval/multisource.py --baselines             # shipped 1.3.0 + raw pixels

A run (splits/splits.json "runs") holds out figshare fold F and whole sources of other-sources (run 0:
SARTAJ; run 1: Br35H and navoneel). It trains on figshare folds != F (type labels) + other-sources
images of the remaining sources (type
label where known: meningioma, pituitary, notumor; "tumour-untyped" only with the coarse label), then
reports, with the raw-pixel descriptor (and, after --baselines, the shipped 1.3.0 embedder) on the
same library and queries:

* figshare: queries = fold F, library = the other four folds (the usual protocol);
* cross-source, for each held-out source S: library = figshare fold F + every image of S; queries = the
  images of S, each ranked against the library without itself; relevance: same class, an untyped tumour
  relevant to every tumour class and the reverse, notumor only to notumor (evaluate.group_relevance).

Training checkpoints every epoch to runs/; an interrupted run resumes where it stopped (--resume is
the default; --fresh starts over). Results: results/ms_run<R>_<tag>.json.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from data import CACHE, CLASSES, COARSE, TYPES, load_cache, load_other_sources, load_splits

from napari_medai.retrieval.evaluate import group_relevance, relevance_metrics
from napari_medai.retrieval.metrics import retrieval_metrics

HERE = Path(__file__).resolve().parent
UNTYPED = {"tumour-untyped": 1}


def raw_descriptors(x):
    """Return the raw-pixel baseline descriptors of images x (area-resized to 32 px)."""
    from napari_medai.retrieval.embedder import PixelEmbedder
    from napari_medai.retrieval.preprocess import resize_area

    return PixelEmbedder(32).embed_prepared(np.stack([resize_area(im.astype(np.float32), 32) for im in x]))


def fig_fold_of(d, splits):
    """Return each cached figshare image's fold from splits.json, asserting it equals the cache's folds."""
    f = splits["figshare"]["fold_of_id"]
    folds = np.asarray([f[str(int(i))] for i in d["ids"]])
    assert np.array_equal(folds, d["folds"]), "cache folds differ from splits.json"
    return folds


def evaluate(zf, zo, d, o, run):
    """Figshare test fold and cross-source figures (one per held-out source) for one descriptor set
    (zf: figshare, zo: other-sources)."""
    F = run["figshare_test_fold"]
    te = d["folds"] == F
    names = np.asarray(CLASSES)[d["y"]]
    m = retrieval_metrics(zf[te], names[te], zf[~te], names[~te], k=10)
    out = {"figshare": {"overall": m["overall"], "per_class": m["per_class"]}, "cross_source": {}}
    for S in run["held_out_sources"]:
        s = o["source"] == S
        lib_z = np.concatenate([zf[te], zo[s]])
        lib_lab = np.concatenate([names[te], o["label"][s]])
        q_lab = o["label"][s]
        rel = group_relevance(q_lab, lib_lab, COARSE, UNTYPED)
        excl = te.sum() + np.arange(s.sum())
        cs = relevance_metrics(zo[s], lib_z, rel, k=10, exclude=excl, query_labels=q_lab)
        cs.pop("per_query_ap")
        cs["library"] = {"figshare": int(te.sum()), S: int(s.sum())}
        out["cross_source"][S] = cs
    return out


def brief(r):
    """Flatten an evaluate() result to its headline mAP, P@10 and chance figures, rounded to 4 places."""
    b = {"fig_mAP": round(r["figshare"]["overall"]["mAP"], 4), "fig_P@10": round(r["figshare"]["overall"]["P@10"], 4)}
    for S, c in r["cross_source"].items():
        b.update({f"{S}_mAP": round(c["overall"]["mAP"], 4), f"{S}_P10": round(c["overall"]["P@10"], 4),
                  f"{S}_chance": round(c["overall"]["chance_mAP"], 4),
                  **{f"{S}_{k}": round(v["mAP"], 4) for k, v in c["per_class"].items()}})
    return b


def baselines():
    """Descriptors of the shipped embedder (1.3.0) for all figshare + other-sources images (cache/emb_v130.npz)."""
    from PIL import Image

    from napari_medai.retrieval.embedder import get_embedder

    emb = get_embedder(None, device="cpu")
    d, o = load_cache(128), load_other_sources(128)
    from data import data_root, list_items

    paths, _, ids = list_items()
    assert np.array_equal(ids, d["ids"])
    t0 = time.time()
    zf = emb.embed([np.asarray(Image.open(p).convert("L")) for p in paths])
    zo = emb.embed([np.asarray(Image.open(data_root("other-sources") / f).convert("L")) for f in o["files"]])
    np.savez(CACHE / "emb_v130.npz", zf=zf, zo=zo, name=emb.name, sha256=emb.sha256)
    print(f"embedded with {emb.name} {emb.sha256[:12]} in {time.time() - t0:.0f}s", flush=True)


def main(argv=None):
    """Train one pre-registered run (or embed the baselines) and write its figures to results/."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", type=int, default=0)
    ap.add_argument("--baselines", action="store_true")
    ap.add_argument("--epochs", type=int, default=24)
    ap.add_argument("--size", type=int, default=96, help="input px (images area-resized from the 128-px caches)")
    ap.add_argument("--bs", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--other-weight", type=float, default=3.0,
                    help="sampling weight of an other-sources image (figshare: 1)")
    ap.add_argument("--coarse-weight", type=float, default=0.5)
    ap.add_argument("--augmentation", default="strong", choices=["standard", "strong"])
    ap.add_argument("--unseen-class", default="", choices=["", *CLASSES])
    ap.add_argument("--control", action="store_true",
                    help="the 1.x recipe at the same size / epochs: figshare only, 3 classes, standard augmentation, "
                         "no coarse head")
    ap.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint")
    ap.add_argument("--tag", default="")
    a = ap.parse_args(argv)
    if a.baselines:
        return baselines()
    import torch

    from napari_medai.retrieval.train import embed_array, train_embedder

    torch.set_num_threads(a.threads)
    splits = load_splits()
    run = splits["runs"][a.run]
    d, o = load_cache(128), load_other_sources(128)
    fig_fold_of(d, splits)
    if a.size != 128:
        from napari_medai.retrieval.preprocess import resize_area

        for c in (d, o):
            c["x"] = np.stack([resize_area(im.astype(np.float32), a.size) for im in c["x"]]).astype(np.float16)
    F, held = run["figshare_test_fold"], run["held_out_sources"]
    if a.control:
        a.augmentation = "standard"
    types = [t for t in (CLASSES if a.control else TYPES) if t != a.unseen_class]
    fig_type = np.asarray([types.index(CLASSES[c]) if CLASSES[c] in types else -2 for c in d["y"]])
    o_type = np.asarray([types.index(c) if c in types else (-1 if c == "tumour-untyped" else -2) for c in o["label"]])
    fit_f = (d["folds"] != F) & (fig_type != -2)
    fit_o = ~np.isin(o["source"], held) & (o_type != -2) & (not a.control)
    x = np.concatenate([d["x"][fit_f], o["x"][fit_o]])
    y = np.concatenate([fig_type[fit_f], o_type[fit_o]])
    yc = np.asarray([COARSE[CLASSES[c]] for c in d["y"][fit_f]] + [COARSE[c] for c in o["label"][fit_o]])
    w = np.concatenate([np.ones(fit_f.sum()), np.full(fit_o.sum(), a.other_weight)])
    tag = a.tag or (
        f"e{a.epochs}_s{a.size}_{'control' if a.control else a.augmentation}"
        + (f"_seed{a.seed}" if a.seed else "")
        + (f"_unseen-{a.unseen_class}" if a.unseen_class else "")
    )
    rdir = HERE / "runs"
    rdir.mkdir(exist_ok=True)
    ckpt = rdir / f"run{a.run}_{tag}.ckpt"
    if a.fresh and ckpt.exists():
        ckpt.unlink()
    print(f"run {a.run}: figshare fold {F} out, sources {held} out; train {len(y)} "
          f"(figshare {fit_f.sum()}, other {fit_o.sum()}: "
          f"{dict(zip(*np.unique(o['label'][fit_o], return_counts=True)))}) types={types}", flush=True)
    arch = {"widths": [16, 32, 64, 128, 192], "embed_dim": 128, "in_ch": 1, "dropout": 0.2}
    t0 = time.time()
    net, arch, hist = train_embedder(
        x, y, n_classes=len(types), epochs=a.epochs, batch_size=a.bs, lr=a.lr, loss="ce+supcon", arch=arch, seed=a.seed,
        device="cpu", augmentation=a.augmentation, y_coarse=None if a.control else yc, coarse_weight=a.coarse_weight,
        sample_weight=None if a.control else w, checkpoint=ckpt, log=lambda r: print(json.dumps(r), flush=True))
    minutes = hist[-1]["minutes"] if hist else (time.time() - t0) / 60
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(rdir / f"run{a.run}_{tag}.safetensors"))
    zf, _ = embed_array(net, d["x"])
    zo, _ = embed_array(net, o["x"])
    np.savez(CACHE / f"emb_ms_run{a.run}_{tag}.npz", zf=zf, zo=zo)
    res = {"run": run, "args": vars(a), "arch": arch, "train_minutes": minutes, "types": types, "log": hist,
           "n_train": {"figshare": int(fit_f.sum()), "other": int(fit_o.sum())}}
    res["new"] = evaluate(zf, zo, d, o, run)
    d128, o128 = load_cache(128), load_other_sources(128)  # raw pixels as in every earlier figure: 32 px from 128 px
    res["raw_pixels"] = evaluate(raw_descriptors(d128["x"]), raw_descriptors(o128["x"]), d, o, run)
    v = CACHE / "emb_v130.npz"
    if v.exists():
        e = np.load(v)
        res["shipped_1_3_0"] = evaluate(e["zf"], e["zo"], d, o, run)
        res["shipped_1_3_0"]["note"] = ("shipped weights, trained on all figshare slices (the library's figshare part "
                                        "and, for the figshare figure, the queries were in its training set)")
    for k in ("new", "raw_pixels", "shipped_1_3_0"):
        if k in res:
            print(k, json.dumps(brief(res[k])), flush=True)
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / f"ms_run{a.run}_{tag}.json").write_text(json.dumps(res, indent=1))
    print(f"train minutes {minutes:.1f}", flush=True)


if __name__ == "__main__":
    main()
