"""Build the shipped steatosis models: patient-grouped 5-fold CV over every candidate (classical and
deep), then fit on all data and export to src/napari_medai/models/.

    .venv/bin/python training/steatosis/build_models.py --model-type cnn --epochs 30

- ``steatosis-default``: what CV selects (with a kidney ROI: best of all candidates; liver ROI only:
  best texture-only candidate);
- ``steatosis-classical``: the paper-style classical baseline (index + GLCM, logistic regression), JSON.
CV reports go to training/steatosis/results/<model-type>/. One thread (shared CPU).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch

from napari_medai.data_paths import shared_data_dir
from napari_medai.steatosis.data import read_any
from napari_medai.steatosis.models import DEFAULT_PARAMS
from napari_medai.steatosis.train import cross_validate, export_model, fit_final, write_report

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "src" / "napari_medai" / "models"


def main():
    """Cross-validate the candidates, write the report and (unless --no-export) export both shipped models."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-type", default="cnn", choices=["cnn", "se-irv2", "classical"])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--preprocess", default="raw+clahe")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--no-export", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = read_any(shared_data_dir() / "steatosis")
    params = dict(DEFAULT_PARAMS.get(args.model_type, {}))
    res = cross_validate(data, args.model_type, n_folds=5, seed=0, arch_params=params, preprocess=args.preprocess,
                         epochs=args.epochs, n_boot=args.bootstrap)
    out = ROOT / "training" / "steatosis" / "results" / f"{args.model_type}-{args.preprocess}"
    res = write_report(res, out, data)
    print(open(out / "report.md").read())
    if args.no_export:
        return
    spec, tensors = fit_final(
        data, res["selected"], res["selected_without_index"], params, args.preprocess, args.epochs
    )
    tmp = out / "steatosis-default"
    shutil.rmtree(tmp, ignore_errors=True)
    export_model(tmp, "steatosis-default", spec, tensors, res, res["selected"], res["selected_without_index"])
    dest = MODELS / "steatosis-default"
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(tmp, dest)
    shutil.rmtree(tmp)
    spec, tensors = fit_final(data, "index+glcm", "glcm", {}, args.preprocess, args.epochs)
    dest = MODELS / "steatosis-classical"
    shutil.rmtree(dest, ignore_errors=True)
    export_model(dest, "steatosis-classical", spec, None, res, "index+glcm", "glcm")
    print("exported", res["selected"], "/", res["selected_without_index"])


if __name__ == "__main__":
    main()
