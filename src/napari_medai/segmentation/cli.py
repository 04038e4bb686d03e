"""``napari-medai segment``, ``train segment`` and ``evaluate segment`` (light module: no torch at import)."""

from __future__ import annotations

import sys


def register(groups) -> None:
    """Add the segmentation subcommands to the CLI; handlers import the heavy core only when run."""
    p = groups.root.add_parser(
        "segment",
        help="liver and tumour segmentation of CT (labels 1 liver, 2 tumour)",
        description="Segment the liver and liver tumours in a CT volume or slice (HU). Writes uint8 labels "
        "with the input's geometry (NIfTI keeps the input affine exactly). "
        "Research use only, not a medical device.",
    )
    p.add_argument("input", metavar="IN", help="CT as NIfTI, DICOM file or DICOM series folder (HU)")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="labels file: .nii.gz/.nii (or .tif; .png for one slice)")
    p.add_argument("--model", default=None, metavar="NAME|PATH",
                   help="registered model (default liver-tumor-ct), folder with card.json, "
                   "TorchScript file or MONAI bundle")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--no-postprocess", action="store_true", help="skip the liver-component / hole-filling clean-up")
    p.add_argument("--json", action="store_true", help="print one JSON document describing the run")
    p.set_defaults(func=run_segment)

    t = groups.train.add_parser(
        "segment",
        help="train a segmentation model (MSD folder, or the LiTS slice folder of the shipped model)",
        description="Train on an MSD layout (dataset.json, imagesTr/, labelsTr/): holds out a fraction of the cases "
        "for validation Dice. Or on a LiTS 2-D slice folder (index.csv, images/, masks/: ct/lits-slices-2d of the "
        "project data) with --recipe organ|tumour|tumour-stage|cascade: the shipped liver-tumor-ct recipe "
        "(its model card gives "
        "the command). Writes checkpoints (--resume continues) and a model folder (card.json + "
        "weights.safetensors) usable with `segment --model OUTDIR/model`. Research use only.",
    )
    t.add_argument(
        "--data",
        required=True,
        metavar="DIR",
        help="MSD folder (dataset.json, imagesTr/, labelsTr/) or LiTS slice folder (index.csv)",
    )
    t.add_argument(
        "--arch", default="unet2d", choices=["unet2d", "unet3d", "vnet", "basicunetplusplus", "segresnet", "dynunet"]
    )
    t.add_argument("--epochs", type=int, default=50, metavar="N")
    t.add_argument(
        "--resume",
        default=None,
        nargs="?",
        const="auto",
        metavar="CKPT",
        help="MSD: checkpoint_last.pt of an earlier run; slice folder: continue OUTDIR's checkpoints (no value needed)",
    )
    t.add_argument("-o", "--output", required=True, metavar="OUTDIR")
    t.add_argument(
        "--window", default=None, metavar="LO,HI", help="HU window (default -40,160 for CT; z-score otherwise)"
    )
    t.add_argument("--size", type=int, default=128, help="2-D: slice size (default 128)")
    t.add_argument("--roi", type=int, default=64, help="3-D: cubic patch size (default 64, a multiple of 16)")
    t.add_argument("--batch-size", type=int, default=None)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--val-fraction", type=float, default=0.2)
    t.add_argument("--max-iterations", type=int, default=None, help="stop after this many optimiser steps (smoke runs)")
    t.add_argument("--device", default="auto")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--json", action="store_true")
    s = t.add_argument_group("LiTS slice folder (the shipped cascade)")
    s.add_argument(
        "--recipe",
        default="cascade",
        choices=["organ", "tumour", "tumour-stage", "cascade"],
        help="one network of the cascade (tumour-stage: the high-resolution tumour stage), "
        "or all three plus OUTDIR/model (default)",
    )
    s.add_argument(
        "--iterations", type=int, default=None, help="--recipe organ/tumour: optimiser steps (defaults 1334 / 1000)"
    )
    s.add_argument(
        "--organ-iterations", type=int, default=None, help="--recipe cascade: organ network steps (default 1334)"
    )
    s.add_argument(
        "--tumour-iterations", type=int, default=None, help="--recipe cascade: tumour network steps (default 1000)"
    )
    s.add_argument(
        "--stage-iterations", type=int, default=None,
        help="--recipe cascade/tumour-stage: tumour stage steps (default 800; 0: no stage)",
    )
    s.add_argument(
        "--fold", type=int, default=-1, help="hold out this patient-grouped fold (-1: train on all patients)"
    )
    s.add_argument("--folds", type=int, default=4)
    s.add_argument(
        "--zoom",
        default=None,
        metavar="LO,HI",
        help="scale augmentation range (defaults organ 0.8,1.25; tumour 0.67,1.5)",
    )
    s.add_argument(
        "--crop-prob",
        type=float,
        default=0.0,
        help="share of samples cropped into an air canvas (cuts liver and body outline)",
    )
    s.add_argument(
        "--tumour-oversample",
        type=float,
        default=None,
        help="sampling weight of tumour slices (defaults organ 2, tumour 4)",
    )
    s.add_argument("--init", default=None, metavar="MODEL", help="fine-tune from a cascade model (e.g. liver-tumor-ct)")
    s.add_argument("--checkpoint-every", type=int, default=100, metavar="N")
    s.add_argument("--pixel-mm", type=float, default=3.0, help="inference pixel size written on the card (default 3.0)")
    s.add_argument("--version", default="dev", help="version written on the card")
    t.set_defaults(func=run_train)

    e = groups.evaluate.add_parser(
        "segment",
        help="Dice and volumes of predicted labels against ground truth",
        description="Dice per label (and whole-liver Dice when labels are 1 liver / 2 tumour), volumes in ml. "
        "Refuses files whose shape or affine differ.",
    )
    e.add_argument("--pred", required=True, metavar="P")
    e.add_argument("--gt", required=True, metavar="G")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=run_evaluate)


#: ``evaluate segment`` refuses files with more distinct values than this: an image, not a label map
MAX_LABELS = 1000


def _model_record(model) -> dict:
    return {
        "name": getattr(model, "name", str(model)),
        "version": getattr(model, "version", None),
        "sha256": getattr(model, "sha256", None),
    }


def run_segment(args) -> int:
    """``segment``: read a CT, check it is HU, segment it and save labels on the input's grid."""
    from pathlib import Path

    from ..cli.main import cli_progress, emit_json
    from ..errors import MedaiError
    from ..io.readers import load_image, suffix_of
    from ..io.writers import check_output_path, save_image
    from ..runtime.provenance import RESEARCH_NOTICE
    from .core import segment, validate_ct_hu

    out_path = check_output_path(args.output, inputs=[args.input])  # fail before any work
    out_suffix = suffix_of(out_path)
    loaded = load_image(args.input)
    name = Path(args.input).name
    data, geometry = loaded.data, loaded.geometry
    # a one-slice volume (a 2-D NIfTI) goes to PNG as its slice; it is segmented as a volume, so its affine
    # still orients it
    one_slice_png = out_suffix == ".png" and data.ndim == 3 and data.shape[0] == 1
    if args.model is None:
        # the check segment() itself runs (core.validate_ct_hu: RGB or 8-bit pictures, MR, ultrasound are not
        # CT in HU), done here first only so the message names the file; other models are checked in segment()
        validate_ct_hu(data, name)
    if out_suffix in (".png", ".jpg", ".jpeg") and data.ndim != 2 and not one_slice_png:
        raise MedaiError(f"{name} is a 3-D volume {data.shape}; PNG/JPEG hold one slice, write .nii.gz")
    if out_suffix in (".jpg", ".jpeg"):
        raise MedaiError("JPEG is lossy and would corrupt label values; write .nii.gz, .tif or .png")
    if data.ndim not in (2, 3):
        raise MedaiError(f"{name} has shape {data.shape}; segmentation takes a 2-D slice or a 3-D volume")
    result = segment(
        data, spacing=geometry.spacing, model=args.model,
        affine=geometry.affine_ras() if geometry.ndim == 3 else None,  # 2-D images have no RAS affine
        device=args.device, progress=cli_progress(not args.json), postprocessing=not args.no_postprocess,
    )
    labels, out_geometry = (result.labels[0], geometry.slice(0, 0)) if one_slice_png else (result.labels, geometry)
    written = save_image(out_path, labels, out_geometry, inputs=[args.input])
    document = {
        "input": str(args.input),
        "output": str(written),
        "shape": list(labels.shape),
        "spacing": list(geometry.spacing),
        "labels": {str(k): v for k, v in result.names.items()},
        "volumes_ml": result.volumes_ml,
        "areas_cm2": result.areas_cm2,
        "model": _model_record(result.model),
        "device": result.device,
        "seconds": round(result.seconds, 3),
        "notes": list(result.notes),
        "notice": RESEARCH_NOTICE,
    }
    if args.json:
        emit_json(document)
    else:
        print(f"wrote {written}: {result.summary()}", file=sys.stdout)
        for note in result.notes:
            print(f"note: {note}", file=sys.stderr)
    return 0


def run_evaluate(args) -> int:
    """``evaluate segment``: Dice per label of a prediction against ground truth on the same grid."""
    from pathlib import Path

    import numpy as np

    from ..cli.main import emit_json
    from ..errors import MedaiError
    from ..io.readers import load_image

    pred, gt = load_image(args.pred), load_image(args.gt)
    if pred.rgb or gt.rgb:
        raise MedaiError("label files must be grey-level label images, not RGB")
    if pred.data.shape != gt.data.shape:
        raise MedaiError(
            f"shapes differ: prediction {pred.data.shape} vs ground truth {gt.data.shape}; "
            "resample the prediction onto the ground-truth grid first"
        )
    if not pred.geometry.matches(gt.geometry, atol=1e-3):
        raise MedaiError("the affines of prediction and ground truth differ; they are not on the same voxel grid")
    for label_image, which in ((pred, "prediction"), (gt, "ground truth")):
        data = label_image.data
        if data.dtype.kind == "f" and not np.array_equal(data, np.round(data)):
            raise MedaiError(f"the {which} holds non-integer values; give a label image")
        if data.size and data.min() < 0:
            raise MedaiError(f"the {which} holds negative values (down to {data.min():g}), so it is an image, not "
                             "labels (0 background, 1, 2, ...): give the label file, not the CT")
        if data.size and data.max() > MAX_LABELS and len(np.unique(data)) > MAX_LABELS:  # sort only images
            raise MedaiError(f"the {which} holds more than {MAX_LABELS} distinct values, so it is an image, not "
                             "labels: give the label file, not the CT")
    from .metrics import dice

    p, g = np.asarray(pred.data).astype(np.int64), np.asarray(gt.data).astype(np.int64)
    voxel_ml = float(np.prod(gt.geometry.spacing)) / 1000.0
    values = sorted(int(v) for v in set(np.unique(p)) | set(np.unique(g)) if v != 0)
    names = {1: "liver", 2: "tumour"} if set(values) <= {1, 2} else {}

    per_label = {}
    for v in values:
        key = names.get(v, str(v))
        pm, gm = p == v, g == v
        per_label[key] = {
            "label": v,
            "dice": dice(pm, gm),
            "pred_ml": round(int(pm.sum()) * voxel_ml, 3),
            "gt_ml": round(int(gm.sum()) * voxel_ml, 3),
        }
    document = {
        "pred": str(args.pred),
        "gt": str(args.gt),
        "shape": list(g.shape),
        "spacing": list(gt.geometry.spacing),
        "labels": per_label,
    }
    if names and 1 in values:
        document["whole_liver"] = {
            "dice": dice(p >= 1, g >= 1),
            "pred_ml": round(int((p >= 1).sum()) * voxel_ml, 3),
            "gt_ml": round(int((g >= 1).sum()) * voxel_ml, 3),
        }
    if args.json:
        emit_json(document)
    else:
        for key, rec in per_label.items():
            d = "n/a" if rec["dice"] is None else f"{rec['dice']:.4f}"
            print(f"{key:10s} Dice {d}  pred {rec['pred_ml']:.1f} ml  gt {rec['gt_ml']:.1f} ml")
        if "whole_liver" in document:
            print(f"{'liver+tumour':10s} Dice {document['whole_liver']['dice']:.4f}")
        print(f"({Path(args.pred).name} vs {Path(args.gt).name})")
    return 0


def run_train(args) -> int:
    """``train segment``: train a network on an MSD task or a slice folder and save it to the output."""
    from ..cli.main import cli_progress, emit_json
    from .train import is_slice_folder, train_msd

    if is_slice_folder(args.data):
        return _run_train_slices(args)
    summary = train_msd(
        args.data,
        args.output,
        arch=args.arch,
        epochs=args.epochs,
        resume=args.resume,
        window=args.window,
        size=args.size,
        roi=args.roi,
        batch_size=args.batch_size,
        lr=args.lr,
        val_fraction=args.val_fraction,
        max_iterations=args.max_iterations,
        device=args.device,
        seed=args.seed,
        progress=cli_progress(not args.json),
        log=None if args.json else print,
    )
    if args.json:
        emit_json(summary)
    else:
        print(f"model written to {summary['model_dir']} (best validation Dice {summary['best_val_dice']})")
    return 0


def _run_train_slices(args) -> int:
    from pathlib import Path

    from ..cli.main import cli_progress, emit_json
    from ..errors import MedaiError
    from .train import train_cascade

    out = Path(args.output).expanduser().resolve()
    if args.resume not in (None, "auto"):
        ckpt = Path(args.resume).expanduser().resolve()
        if out not in (ckpt, *ckpt.parents):
            raise MedaiError(
                f"--resume {args.resume}: a slice-folder run resumes from its own OUTDIR; "
                f"give -o {ckpt.parent} or plain --resume"
            )
    zoom = None
    if args.zoom:
        try:
            zoom = tuple(float(v) for v in args.zoom.split(","))
        except ValueError:
            raise MedaiError(f"bad --zoom '{args.zoom}'; write LO,HI such as 0.6,1.6") from None
        if len(zoom) != 2:
            raise MedaiError(f"bad --zoom '{args.zoom}'; write LO,HI such as 0.6,1.6")
    organ_its, tumour_its = args.organ_iterations, args.tumour_iterations
    if args.recipe == "organ" and args.iterations:
        organ_its = args.iterations
    if args.recipe == "tumour" and args.iterations:
        tumour_its = args.iterations
    summary = train_cascade(
        args.data,
        out,
        recipe=args.recipe,
        organ_iterations=organ_its,
        tumour_iterations=tumour_its,
        stage_iterations=(args.iterations if args.recipe == "tumour-stage" and args.iterations
                          else args.stage_iterations),
        pixel_mm=args.pixel_mm,
        version=args.version,
        init=args.init,
        resume=args.resume is not None,
        fold=args.fold,
        folds=args.folds,
        zoom=zoom,
        crop_prob=args.crop_prob,
        tumour_oversample=args.tumour_oversample,
        batch_size=args.batch_size or 16,
        lr=args.lr,
        checkpoint_every=args.checkpoint_every,
        seed=args.seed,
        progress=cli_progress(not args.json),
        log=None if args.json else print,
    )
    if args.json:
        emit_json(summary)
    elif "model_dir" in summary:
        print(f"model written to {summary['model_dir']}")
    else:
        dice = {k: round(summary[k], 4) for k in ("liver_dice", "tumour_dice") if k in summary}
        print(f"network written to {out / 'weights.safetensors'} {dice or ''}")
    return 0
