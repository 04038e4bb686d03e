"""`napari-medai batch {enhance,grade,segment} INPUTS... -o OUTDIR [--scheduler ADDRESS] [--workers N]`."""

from __future__ import annotations


def _roi(text):
    """``X,Y,W,H`` -> four numbers (integers where they are whole), refused with one line otherwise."""
    from ..io.planes import parse_xywh

    return tuple(int(v) if v.is_integer() else v for v in parse_xywh(text, "--roi"))


def register(groups) -> None:
    """Add the ``batch`` command to the CLI."""
    parser = groups.root.add_parser("batch", help="run a tool over many inputs on Dask")
    parser.add_argument("tool", choices=["enhance", "grade", "segment"])
    parser.add_argument("inputs", nargs="+", help="files, DICOM folders, globs, or a CSV with a 'path' column")
    parser.add_argument("-o", "--out", required=True, help="output folder (holds manifest.json, summary.csv/json)")
    parser.add_argument("--scheduler", help="address of an existing Dask scheduler, e.g. tcp://host:8786")
    parser.add_argument("--workers", type=int, help="LocalCluster workers (default: one per GPU, else 2)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--model")
    parser.add_argument("--clip-limit", type=float, default=0.01)
    parser.add_argument("--mode", default="auto", choices=["auto", "2d", "3d", "slices"])
    parser.add_argument("--roi", type=_roi, help="grade: liver ROI X,Y,W,H for every frame (or --auto-roi)")
    parser.add_argument("--auto-roi", action="store_true",
                        help="grade: place the liver ROI automatically (marked uncertain)")
    parser.add_argument("--kidney-roi", type=_roi)
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(func=run_batch_command)


def run_batch_command(args) -> int:
    """Run ``napari-medai batch``: one tool over many inputs; exit 1 when any case failed."""
    from ..cli.main import cli_progress, emit_json
    from ..errors import MedaiError
    from .runner import run_batch

    if args.tool == "grade" and args.roi is None and not args.auto_roi:
        raise MedaiError("batch grade needs a liver ROI: give --roi X,Y,W,H (pixels, x = column) or --auto-roi "
                         "(automatic placement; grades are then marked uncertain)")
    if args.tool == "grade" and args.roi is not None and args.auto_roi:
        raise MedaiError("give either --roi or --auto-roi, not both")
    params = {"device": args.device}
    if args.tool == "enhance":
        params.update(clip_limit=args.clip_limit, mode=args.mode)
    if args.tool in ("grade", "segment") and args.model:
        params["model"] = args.model
    if args.tool == "grade":
        params.update(roi=args.roi, kidney_roi=args.kidney_roi, auto_roi=bool(args.auto_roi))
    summary = run_batch(args.tool, args.inputs, args.out, params=params, scheduler=args.scheduler,
                        workers=args.workers, progress=cli_progress(not args.json))
    if args.json:
        emit_json(summary.to_dict())
    else:
        done = summary.to_dict()
        print(f"{done['ok']} ok, {done['failed']} failed, {done['skipped_unchanged']} unchanged (skipped) "
              f"in {done['seconds']} s on {done['workers']} worker(s); summary in {args.out}/summary.csv")
        for row in summary.failed:
            print(f"  failed: {row['input']}: {row.get('error')}")
    return 1 if summary.failed else 0
