"""CPU (or GPU) timing of liver/tumour segmentation with the shipped model.

    python benchmarks/segmentation.py [--device cpu] [--threads 2] [--repeats 2] [FILE ...]

Default files: the packaged sample CT (30x101x122, 3 mm) and, when ../shared/data is present, the full
abdominal CT (146x512x512). Reports the best of ``--repeats`` runs (the first run includes model loading)
and the model-load time separately.
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
    ap = argparse.ArgumentParser()
    ap.add_argument("files", nargs="*")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
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
    load_model(None, "cpu" if args.device == "cpu" else args.device)
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
                                "all_s": [round(x, 2) for x in times], "slices_per_s": round(img.data.shape[0] / min(times), 1),
                                "volumes_ml": r.volumes_ml})
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
