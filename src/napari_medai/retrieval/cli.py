"""``napari-medai retrieve build | query | evaluate`` and ``napari-medai train embedder``.

Light module: numpy / torch / faiss are imported inside the command functions.
"""

from __future__ import annotations

import sys


def register(groups) -> None:
    """Add ``retrieve build|query|evaluate`` to the root parser and ``embedder`` to ``train``.

    Args:
        groups: the CLI's :class:`~napari_medai.cli.main.CommandGroups` (root and ``train`` used here).
    """
    retrieve = groups.root.add_parser("retrieve", help="nearest-case retrieval (case libraries)")
    sub = retrieve.add_subparsers(dest="retrieve_command", metavar="ACTION", parser_class=type(retrieve))

    b = sub.add_parser("build", help="build a case library from a folder (one sub-folder per class) or a CSV")
    b.add_argument("source", metavar="DIR_OR_CSV")
    b.add_argument("-o", "--output", required=True, metavar="LIBRARY",
                   help="library file to write (e.g. cases.medlib)")
    b.add_argument("--embedder", default=None,
                   help="model name or folder (default: embedder-brain-mri); 'raw-pixels' for the baseline")
    b.add_argument("--volumes", choices=["middle", "all"], default="middle",
                   help="3D inputs: middle slice or one case per slice")
    b.add_argument("--index", choices=["auto", "flat", "hnsw", "numpy"], default="auto")
    b.add_argument("--device", default="auto")
    b.add_argument("--scheduler", help="embed on this Dask cluster (tcp://host:8786) instead of in this process")
    b.add_argument("--workers", type=int, help="embed on a local Dask cluster with N workers")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=run_build)

    q = sub.add_parser("query", help="the k cases most similar to an image")
    q.add_argument("library", metavar="LIBRARY")
    q.add_argument("input", metavar="IN")
    q.add_argument("-k", type=int, default=10)
    q.add_argument("--slice", type=int, default=None, help="slice of a 3D input (default: middle)")
    q.add_argument("--roi", default=None, metavar="X,Y,W,H", help="query with this region only (pixels)")
    q.add_argument("--device", default="auto")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=run_query)

    e = sub.add_parser("evaluate", help="K-fold retrieval evaluation (mAP, P@k, R@k per class)")
    e.add_argument("source", metavar="DIR_OR_CSV")
    e.add_argument("--folds", type=int, default=5)
    e.add_argument("-k", type=int, default=10)
    e.add_argument("--embedder", default=None,
                   help="model name or folder, or 'raw-pixels' (default: embedder-brain-mri)")
    e.add_argument("--retrain", action="store_true", help="train a fresh embedder per fold (slow, the honest protocol)")
    e.add_argument("--epochs", type=int, default=30, help="with --retrain")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--device", default="auto")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=run_evaluate)

    t = groups.train.add_parser("embedder",
                                help="train a case embedder (multi-scale residual CNN) on labelled cases")
    t.add_argument("source", metavar="DIR_OR_CSV")
    t.add_argument("-o", "--output", required=True, metavar="MODEL_DIR",
                   help="folder for model.safetensors + card.json")
    t.add_argument("--epochs", type=int, default=30)
    t.add_argument("--size", type=int, default=128)
    t.add_argument("--loss", choices=["ce", "supcon", "ce+supcon"], default="ce+supcon")
    t.add_argument("--batch-size", type=int, default=64)
    t.add_argument("--lr", type=float, default=3e-3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--no-mixed-precision", action="store_true",
                   help="train in float32 (default: bf16 autocast where supported)")
    t.add_argument("--device", default="auto")
    t.add_argument("--json", action="store_true")
    t.set_defaults(func=run_train)


def _progress(args):
    from ..cli.main import cli_progress

    return cli_progress(not getattr(args, "json", False))


def run_build(args) -> int:
    """``retrieve build``: embed the cases, save the library file, print or emit its summary.

    Returns:
        The exit code: 0, or 1 when some cases were skipped as unreadable (listed in the output).
    """
    from ..cli.main import emit_json
    from .library import CaseLibrary, check_library_path

    out = check_library_path(args.output)  # before any work
    from .embedder import get_embedder

    failures = []
    if args.scheduler or args.workers:
        from ..batch.library import build_library

        lib, failures = build_library(args.source, embedder=args.embedder, scheduler=args.scheduler,
                                      workers=args.workers, volumes=args.volumes, index=args.index,
                                      progress=_progress(args))
    else:
        emb = get_embedder(args.embedder, device=args.device)
        lib = CaseLibrary.build(args.source, embedder=emb, progress=_progress(args), volumes=args.volumes,
                                index=args.index)
    lib.save(out)
    doc = lib.summary()
    doc["failed"] = [{"path": path, "error": error} for path, error in failures]
    if args.json:
        emit_json(doc)
    else:
        print(f"library {out}: {doc['cases']} cases {doc['labels']} (embedder {doc['embedder']})")
        for failure in doc["failed"]:
            print(f"  skipped (unreadable): {failure['path']}: {failure['error']}")
        print("Research use only - not a medical device.")
    return 1 if failures else 0


def run_query(args) -> int:
    """``retrieve query``: the k nearest cases, the domain verdict and the label vote.

    Returns:
        The exit code (0); refused input raises :class:`~napari_medai.errors.MedaiError`.
    """
    from ..cli.main import emit_json
    from .library import CaseLibrary, vote

    lib = CaseLibrary.load(args.library)
    if args.device != "auto" and hasattr(lib.embedder, "_device"):
        lib.embedder._device = args.device
    hits = lib.query(args.input, k=args.k, roi=args.roi, slice_index=args.slice)
    votes = vote(hits)
    if args.json:
        emit_json(
            {
                "library": str(args.library),
                "query": str(args.input),
                "k": args.k,
                "embedder": lib.embedder.name,
                "out_of_domain": bool(hits.out_of_domain),
                "reasons": list(hits.reasons),
                "calibrated": bool(hits.calibrated),
                "hits": [h.to_dict() for h in hits],
                "vote": [{"label": lab, "count": c, "fraction": round(f, 4)} for lab, c, f in votes],
                "notice": "Research use only - not a medical device.",
            }
        )
    else:
        for h in hits:
            print(f"{h.rank:3d}  {h.distance:8.4f}  {'close' if h.close else 'far  '}  {h.label:16s} {h.path}")
        if hits.out_of_domain:
            print("out of domain: no close cases in this library; do not read a label from these hits")
            for reason in hits.reasons:
                print(f"  {reason}")
        elif votes:
            print("vote: " + ", ".join(f"{lab} {c}/{len(hits)}" for lab, c, _ in votes))
        print("Research use only - not a medical device.")
    return 0


def run_evaluate(args) -> int:
    """``retrieve evaluate``: grouped K-fold mAP / P@k / R@k, overall and per class (mean ± sample sd).

    Returns:
        The exit code (0).
    """
    from ..cli.main import emit_json
    from .evaluate import evaluate_folds

    log = None if args.json else (lambda s: print(s, file=sys.stderr))
    doc = evaluate_folds(
        args.source, folds=args.folds, k=args.k, embedder=args.embedder, retrain=args.retrain,
        epochs=args.epochs, seed=args.seed, device=args.device, progress=_progress(args), log=log,
    )
    if args.json:
        emit_json(doc)
    else:
        s = doc["summary"]
        k = args.k
        print(f"{doc['cases']} cases, {doc['folds']} folds grouped by {doc['grouping']}, "
              f"embedder {doc['embedder']}")
        o = s["overall"]
        print(f"overall  mAP {o['mAP']['mean']:.4f} ± {o['mAP']['std']:.4f}   "
              f"P@{k} {o[f'P@{k}']['mean']:.4f} ± {o[f'P@{k}']['std']:.4f}   "
              f"R@{k} {o[f'R@{k}']['mean']:.4f}")
        for c, v in s["per_class"].items():
            print(f"{c:16s} mAP {v['mAP']['mean']:.4f} ± {v['mAP']['std']:.4f}   "
                  f"P@{k} {v[f'P@{k}']['mean']:.4f} ± {v[f'P@{k}']['std']:.4f}   "
                  f"R@{k} {v[f'R@{k}']['mean']:.4f}")
        if doc.get("note"):
            print("note: " + doc["note"])
    return 0


def run_train(args) -> int:
    """``train embedder``: train on the labelled cases and write model.safetensors + card.json.

    Returns:
        The exit code (0).
    """
    from pathlib import Path

    import numpy as np

    from ..cli.main import emit_json
    from .evaluate import load_prepared
    from .train import export_embedder, train_embedder

    x, labels, paths, _ = load_prepared(args.source, args.size, progress=_progress(args))
    classes = sorted(set(labels.tolist()))
    y = np.searchsorted(classes, labels)
    log = None if args.json else (
        lambda r: print(f"epoch {r['epoch']}: loss {r['loss']:.3f} train acc {r['train_acc']:.3f}", file=sys.stderr)
    )
    net, arch, hist = train_embedder(
        x, y, n_classes=len(classes), epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, loss=args.loss,
        seed=args.seed, device=args.device, log=log,
        mixed_precision=not args.no_mixed_precision,
    )
    out = export_embedder(
        net, arch, Path(args.output), classes=classes, size=args.size,
        training_data=f"{len(y)} cases from {args.source}",
        notes=f"loss={args.loss}, epochs={args.epochs}, trained with `napari-medai train embedder`",
    )
    doc = {"model_dir": str(out), "cases": int(len(y)), "classes": classes, "history": hist}
    if args.json:
        emit_json(doc)
    else:
        print(f"wrote {out}/model.safetensors and card.json")
    return 0
