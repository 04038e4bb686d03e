"""``napari-medai enhance IN -o OUT ...``: CLAHE on a file (light module: no numba/torch at import)."""

from __future__ import annotations

import re
import sys

MODES = ("auto", "2d", "3d", "slices")
# "--window -200,250": argparse would take "-200,250" for an option; let it read as a value.
_NEGATIVE_VALUE = re.compile(r"^-\d+$|^-\d*\.\d+$|^-?\d*\.?\d+(e[-+]?\d+)?,-?\d*\.?\d+(e[-+]?\d+)?$", re.I)


def register(groups) -> None:
    """Add the ``enhance`` command to the CLI."""
    p = groups.root.add_parser(
        "enhance",
        help="CLAHE contrast enhancement (2-D, per slice or 3-D)",
        description="Contrast-limited adaptive histogram equalisation with scikit-image semantics. "
        "TIFF and NIfTI outputs are float32 in [0, 1] (NIfTI keeps the input affine); PNG and JPEG are 8-bit. "
        "Research use only, not a medical device.",
    )
    p.add_argument("input", metavar="IN", help="NIfTI, DICOM file or series folder, PNG, JPEG or TIFF")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help=".nii.gz/.nii, .tif, .png or .jpg")
    p.add_argument("--clip-limit", type=float, default=0.01, metavar="F",
                   help="normalised clip limit (default 0.01; 0 = no clipping)")
    p.add_argument("--kernel-size", default=None, metavar="N[,N,N]",
                   help="tile size: one value or one per axis (default 1/8 of each axis)")
    p.add_argument("--nbins", type=int, default=256, metavar="N", help="histogram bins (default 256)")
    p.add_argument("--mode", choices=MODES, default="auto",
                   help="auto: 2d for images, 3d for volumes; slices: each slice on its own")
    p.add_argument("--window", default=None, metavar="LO,HI", help="intensity window, e.g. -200,250 (HU) for the liver")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--json", action="store_true", help="print one JSON document describing the run")
    if hasattr(p, "_negative_number_matcher"):
        p._negative_number_matcher = _NEGATIVE_VALUE
    p.set_defaults(func=run_enhance)


def run_enhance(args) -> int:
    """Run ``napari-medai enhance``: CLAHE of one file, written with the input's geometry."""
    from pathlib import Path

    import numpy as np

    from ..cli.main import cli_progress, emit_json
    from ..errors import MedaiError
    from ..io.readers import NIFTI_SUFFIXES, load_image, suffix_of
    from ..io.writers import check_output_path, save_image
    from ..runtime.provenance import RESEARCH_NOTICE
    from .core import run_clahe

    out_path = check_output_path(args.output, inputs=[args.input])  # fail before any work
    suffix = suffix_of(out_path)
    loaded = load_image(args.input)
    spatial = loaded.spatial_shape
    data, geometry = loaded.data, loaded.geometry
    if suffix in (".png", ".jpg", ".jpeg") and len(spatial) == 3 and spatial[0] == 1:
        data, geometry = data[0], geometry.slice(0, 0)  # a one-slice volume (a 2-D NIfTI) is that slice
        spatial = spatial[1:]
    if suffix in NIFTI_SUFFIXES and loaded.rgb:
        raise MedaiError(f"{Path(args.input).name} is an RGB image; write it as .png, .jpg or .tif, not NIfTI")
    if suffix in (".png", ".jpg", ".jpeg") and len(spatial) != 2:
        raise MedaiError(
            f"{Path(args.input).name} is a {len(spatial)}-D volume {tuple(spatial)}; PNG/JPEG hold 2-D images "
            "only, write .nii.gz or .tif"
        )
    result = run_clahe(
        data,
        kernel_size=args.kernel_size,
        clip_limit=args.clip_limit,
        nbins=args.nbins,
        mode=args.mode,
        device=args.device,
        window=args.window,
        rgb=loaded.rgb,
        progress=cli_progress(not args.json),
    )
    written = save_image(out_path, result.image, geometry, inputs=[args.input], rgb=loaded.rgb)
    image = result.image
    document = {
        "input": str(args.input),
        "output": str(written),
        "shape": list(image.shape),
        "dtype": "uint8" if suffix in (".png", ".jpg", ".jpeg") else "float32",
        "parameters": result.parameters(),
        "device": result.device,
        "seconds": round(result.seconds, 4),
        "range": [float(np.min(image)), float(np.max(image))],
        "spacing": list(geometry.spacing),
        "notice": RESEARCH_NOTICE,
    }
    if args.json:
        emit_json(document)
    else:
        kernel = "x".join(str(k) for k in result.kernel_size)
        print(
            f"wrote {written} ({result.mode}, kernel {kernel}, clip {result.clip_limit:g}, "
            f"{result.backend} on {result.device}, {result.seconds:.2f} s)",
            file=sys.stdout,
        )
    return 0
