"""CPU (or GPU) timing of liver/tumour segmentation with the shipped model.

    python benchmarks/segmentation.py [--device cpu] [--threads 2] [--repeats 2] [FILE ...]

Default files: the packaged sample CT (30x101x122, 3 mm) and, when ../shared/data is present, the full
abdominal CT (146x512x512). Reports the best of ``--repeats`` runs (the first run includes model loading)
and the model-load time separately. ``--compare-fov`` also times the version 1.2 field of view (each slice
padded to a square and resized to 128 px, ``input_spec.pixel_mm`` unset) in the same process and reports the
ratio (fixed pixel size / square field of view): on a shared machine only such ratios compare.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import argparse
import json
import platform
import time
from pathlib import Path

from napari_medai.data_paths import shared_data_dir
from napari_medai.io.readers import load_image
from napari_medai.sample_data import CT_VOLUME


def main() -> None:
    """Time segment() (and optionally the square-FOV and MONAI anchor) on each file; print JSON and a summary."""
    ap = argparse.ArgumentParser()
    ap.add_argument("files", nargs="*")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--no-anchor", action="store_true", help="skip the MONAI 3-D sliding-window anchor")
    ap.add_argument(
        "--compare-fov", action="store_true", help="also time the v1.2 square field of view (same process)"
    )
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from napari_medai.segmentation.core import load_model, segment

    files = [Path(f) for f in args.files]
    if not files:
        files = [CT_VOLUME]
        shared = shared_data_dir()
        if shared and (shared / "ct/full-abdomen/abdomen_ct_512x512x146.nii.gz").is_file():
            files.append(shared / "ct/full-abdomen/abdomen_ct_512x512x146.nii.gz")
    t = time.perf_counter()
    lm = load_model(None, "cpu" if args.device == "cpu" else args.device)
    report = {"device": args.device, "threads": args.threads, "cpu": platform.processor() or platform.machine(),
              "model_load_s": round(time.perf_counter() - t, 3), "cases": []}
    for path in files:
        img = load_image(path)
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            r = segment(img.data, spacing=img.geometry.spacing, affine=img.geometry.affine_ras(), device=args.device)
            times.append(time.perf_counter() - t)
        report["cases"].append({"file": path.name, "shape": list(img.data.shape), "best_s": round(min(times), 2),
                                "all_s": [round(x, 2) for x in times],
                                "slices_per_s": round(img.data.shape[0] / min(times), 1),
                                "volumes_ml": r.volumes_ml, "pixel_mm": lm.spec.get("pixel_mm")})
        if args.compare_fov and lm.spec.get("pixel_mm"):
            pixel, old = lm.spec["pixel_mm"], []
            lm.spec["pixel_mm"] = None  # benchmark only: the v1.2 square field of view on the cached model
            try:
                for _ in range(args.repeats):
                    t = time.perf_counter()
                    segment(
                        img.data, spacing=img.geometry.spacing, affine=img.geometry.affine_ras(), device=args.device
                    )
                    old.append(time.perf_counter() - t)
            finally:
                lm.spec["pixel_mm"] = pixel
            report["cases"][-1]["square_fov_best_s"] = round(min(old), 2)
            report["cases"][-1]["pixel_over_square_fov"] = round(min(times) / min(old), 3)
        if not args.no_anchor:
            anchor_s = anchor_seconds(img.data, args.device, args.repeats)
            report["cases"][-1]["anchor_monai_3d_s"] = round(anchor_s, 2)
            report["cases"][-1]["anchor_over_ours"] = round(anchor_s / min(times), 2)
    print(json.dumps(report, indent=1))
    for case in report["cases"]:
        ratio = f"anchor / ours = {case['anchor_over_ours']}x" if "anchor_over_ours" in case else ""
        print(f"{case['file']:40s} {str(case['shape']):18s} ours {case['best_s']:7.2f} s  "
              f"anchor {case.get('anchor_monai_3d_s', '-')} s  {ratio}")


def anchor_seconds(volume, device: str, repeats: int) -> float:
    """The brief's anchor: MONAI sliding_window_inference with a 3-D UNet (4.8 M parameters, random
    weights: speed only) over the same volume, 96^3 windows, Gaussian blending, inference mode."""
    import numpy as np
    import torch
    from monai.inferers import sliding_window_inference
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    net = UNet(spatial_dims=3, in_channels=1, out_channels=3, channels=(16, 32, 64, 128, 256),
               strides=(2, 2, 2, 2), num_res_units=2).to(device).eval()
    x = torch.from_numpy(np.clip((volume.astype(np.float32) + 40) / 200, 0, 1))[None, None].to(device)
    times = []
    with torch.inference_mode():
        for _ in range(repeats):
            t = time.perf_counter()
            sliding_window_inference(x, roi_size=(96, 96, 96), sw_batch_size=1, predictor=net, overlap=0.25,
                                     mode="gaussian")
            times.append(time.perf_counter() - t)
    return min(times)


if __name__ == "__main__":
    main()
