"""Does the 3-member ensemble's input path change held-out mAP?

  PYTHONPATH=src python training/retrieval/resize_check.py runs/fold0_e60_keep runs/fold0_e60_seed1_keep

The shipped ensemble (member sizes 128/128/192) takes images prepared at 192 px and area-resizes them to
128 px for the 128-px members; in training and in the CV those members saw images prepared directly at
128 px. With two fold-0 networks of the 128-px members (trained on folds 1-4), this compares fold-0 mAP
(library = folds 1-4, queries = fold 0) for the two input paths, and how far the descriptors move.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent

from data import load_cache  # noqa: E402
from posthoc import l2n  # noqa: E402

from napari_medai.retrieval.embedder import get_embedder  # noqa: E402
from napari_medai.retrieval.evaluate import _embed_all  # noqa: E402
from napari_medai.retrieval.metrics import retrieval_metrics  # noqa: E402
from napari_medai.retrieval.preprocess import resize_area  # noqa: E402


def main():
    """Compare fold-0 mAP of the given members on 128-px inputs prepared directly vs resized from 192 px."""
    torch.set_num_threads(1)
    d128, d192 = load_cache(128), load_cache(192)
    direct = d128["x"].astype(np.float32)
    via_192 = np.stack([resize_area(im.astype(np.float32), 128) for im in d192["x"]])
    y, folds = d128["y"], d128["folds"]
    q, lib = folds == 0, folds != 0
    nets = [get_embedder(str(HERE / r), device="cpu") for r in sys.argv[1:]]
    out = {}
    for name, x in (("direct_128", direct), ("192_area_resized_to_128", via_192)):
        z = l2n(np.hstack([_embed_all(e, x, None, None) for e in nets]))
        out[name] = {"z": z, "mAP": retrieval_metrics(z[q], y[q], z[lib], y[lib])["overall"]["mAP"]}
    cos = (out["direct_128"]["z"] * out["192_area_resized_to_128"]["z"]).sum(1)
    res = {k: round(v["mAP"], 4) for k, v in out.items()}
    res.update(members=sys.argv[1:], cosine_mean=round(float(cos.mean()), 5), cosine_min=round(float(cos.min()), 4))
    print(json.dumps(res))
    (HERE / "results" / "resize_check_fold0.json").write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
