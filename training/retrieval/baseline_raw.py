"""Raw-pixel baseline on the same 5 folds (descriptor: 32x32 prepared image, zero-mean, L2-normalised)."""

import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
from data import CLASSES, load_cache  # noqa: E402

from napari_medai.retrieval.embedder import PixelEmbedder  # noqa: E402
from napari_medai.retrieval.metrics import retrieval_metrics, summarize_folds  # noqa: E402

d = load_cache(128)
emb = PixelEmbedder(32)
from napari_medai.retrieval.preprocess import resize_area  # noqa: E402

z = emb.embed_prepared(np.stack([resize_area(im.astype(np.float32), 32) for im in d["x"]]))
res = []
for f in range(5):
    q = d["folds"] == f
    m = retrieval_metrics(z[q], d["y"][q], z[~q], d["y"][~q], k=10)
    m["per_class"] = {CLASSES[int(k)]: v for k, v in m["per_class"].items()}
    m.pop("per_query")
    res.append(m)
s = summarize_folds(res)
(HERE / "results").mkdir(exist_ok=True)
(HERE / "results" / "baseline_raw_pixels.json").write_text(json.dumps(s, indent=1))
print(json.dumps({"mAP": s["overall"]["mAP"]["mean"], "std": s["overall"]["mAP"]["std"],
                  "P@10": s["overall"]["P@10"]["mean"],
                  **{c: round(v["mAP"]["mean"], 4) for c, v in s["per_class"].items()}}))
