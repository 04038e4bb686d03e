"""``napari-medai grade IN... [--roi X,Y,W,H | --auto-roi] [--kidney-roi X,Y,W,H] [--model NAME] [--device D] [--json]``
and ``napari-medai train steatosis --data ... -o OUTDIR``. Light module: no torch at import."""

from __future__ import annotations

import sys


def register(groups) -> None:
    """Add ``grade`` and ``train steatosis`` to the CLI; handlers import the core only when run."""
    p = groups.root.add_parser(
        "grade", help="fatty-liver grade (S0-S3) from B-mode ultrasound",
        description="Grade hepatic steatosis in B-mode frames from a liver ROI, optionally with a kidney-cortex ROI "
        "(hepatorenal index). Research use only, not a medical device.")
    p.add_argument("inputs", nargs="+", metavar="IN", help="PNG, JPEG, TIFF, DICOM or NIfTI 2-D frames")
    roi = p.add_mutually_exclusive_group()
    roi.add_argument("--roi", default=None, metavar="X,Y,W,H",
                     help="liver ROI in pixels (x = column); required unless --auto-roi")
    roi.add_argument("--auto-roi", action="store_true",
                     help="place the liver ROI automatically (the grade is then marked uncertain; "
                     "check the ROI it names)")
    p.add_argument("--kidney-roi", default=None, metavar="X,Y,W,H", help="kidney-cortex ROI for the hepatorenal index")
    p.add_argument("--model", default=None, help="model name or folder (default steatosis-default)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--json", action="store_true", help="print one JSON document for all inputs")
    p.set_defaults(func=run_grade)

    t = groups.train.add_parser(
        "steatosis", help="cross-validate and train a steatosis grader",
        description="Patient-grouped stratified k-fold CV (report.json, report.md, confusion.png), then a model "
        "fitted on all data in OUTDIR/model. --data: the Byra .mat, a folder per grade, or a CSV "
        "(path, patient_id, grade[, liver_roi_x, liver_roi_y, kidney_roi_x, kidney_roi_y, hepatorenal_index]).")
    t.add_argument("--data", required=True, help=".mat, CSV, folder per grade, or a folder with labels.csv")
    t.add_argument("--model-type", choices=["se-irv2", "cnn", "classical"], default="cnn")
    t.add_argument("--folds", type=int, default=5)
    t.add_argument("--epochs", type=int, default=30)
    t.add_argument("--width", type=float, default=None, help="width multiplier (se-irv2) or base channels (cnn)")
    t.add_argument("--input-size", type=int, default=None, help="se-irv2 input size (crops are resized)")
    t.add_argument("--preprocess", default="raw+clahe", choices=["raw", "clahe", "raw+clahe"])
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--bootstrap", type=int, default=1000, help="patient bootstrap resamples for the CIs")
    t.add_argument("--no-final", action="store_true", help="cross-validate only; do not fit the final model")
    t.add_argument("--name", default="steatosis-custom", help="name of the exported model")
    t.add_argument("-o", "--output", required=True, metavar="OUTDIR")
    t.add_argument("--json", action="store_true")
    t.set_defaults(func=run_train)


def run_grade(args) -> int:
    """``grade``: grade steatosis in B-mode frames from the given ROIs and print or emit the result."""
    from ..cli.main import emit_json
    from ..errors import MedaiError
    from ..io.readers import load_image
    from ..runtime.provenance import RESEARCH_NOTICE
    from .core import grade_steatosis

    if args.roi is None and not args.auto_roi:
        raise MedaiError("no liver ROI: give --roi X,Y,W,H (pixels, x = column, on liver parenchyma away from vessels) "
                         "or --auto-roi for automatic placement (the grade is then marked uncertain)")
    results = []
    for path in args.inputs:
        try:
            loaded = load_image(path)
            r = grade_steatosis(loaded.data, roi=args.roi, kidney_roi=args.kidney_roi, model=args.model,
                                device=args.device, auto_roi=args.auto_roi, heatmap=False)
        except MedaiError as exc:
            if len(args.inputs) == 1:
                raise
            # several frames: one refused frame does not lose the others' grades; it gets its own error line
            results.append({"input": str(path), "error": str(exc)})
            print(f"error: {path}: {exc}", file=sys.stderr)
            continue
        doc = {"input": str(path), **r.to_dict()}
        results.append(doc)
        if not args.json:
            hri = f", hepatorenal index {r.hepatorenal_index:.3f}" if r.hepatorenal_index is not None else ""
            probs = " ".join(f"S{i} {p:.2f}" for i, p in enumerate(r.probabilities))
            flag = " UNCERTAIN" if r.uncertain else ""
            where = f" roi {','.join(map(str, r.roi))} ({r.roi_source})"
            print(f"{path}: {r.label}{flag} ({probs}){hri}{where} [{r.model}]")
            for reason in r.uncertain_reasons:
                print(f"  uncertain: {reason}", file=sys.stderr)
            for w in r.warnings:
                print(f"  warning: {w}", file=sys.stderr)
    graded = [doc for doc in results if "error" not in doc]
    if args.json:
        emit_json({"results": results, "model": graded[0]["model"] if graded else None, "notice": RESEARCH_NOTICE})
    else:
        print(RESEARCH_NOTICE)
    return 2 if len(graded) < len(results) else 0


def run_train(args) -> int:
    """``train steatosis``: cross-validate, write the report and (unless --no-final) export a model."""
    from pathlib import Path

    from ..cli.main import emit_json
    from .data import read_any
    from .models import DEFAULT_PARAMS
    from .train import cross_validate, export_model, fit_final, write_report

    log = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    data = read_any(args.data)
    deep = args.model_type in ("cnn", "se-irv2")
    params = dict(DEFAULT_PARAMS.get(args.model_type, {})) if deep else {}
    if args.width is not None and deep:
        params["width"] = args.width if args.model_type == "se-irv2" else int(args.width)
    if args.input_size is not None and deep:
        params["input_size"] = args.input_size
    out = Path(args.output)
    result = cross_validate(data, args.model_type, n_folds=args.folds, seed=args.seed, arch_params=params,
                            preprocess=args.preprocess, epochs=args.epochs, n_boot=args.bootstrap, log=log)
    result = write_report(result, out, data)
    doc = {"report": str(out / "report.json"), "selected": result["selected"],
           "metrics": {k: v["folds"]["balanced_accuracy"]["mean"] for k, v in result["candidates"].items()}}
    if not args.no_final:
        spec, tensors = fit_final(data, result["selected"], result["selected_without_index"], params, args.preprocess,
                                  args.epochs, args.seed)
        export_model(out / "model", args.name, spec, tensors, result, result["selected"],
                     result["selected_without_index"])
        doc["model"] = str(out / "model")
    if args.json:
        emit_json(doc)
    else:
        where = f"; model in {out / 'model'}" if not args.no_final else ""
        log(f"wrote {out / 'report.md'}; selected {result['selected']}" + where)
    return 0
