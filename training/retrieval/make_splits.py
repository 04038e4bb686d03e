"""Write the fixed splits of the multi-source study (issue #20) to splits/splits.json, once, before training.

  PYTHONPATH=src python training/retrieval/make_splits.py

* figshare: the 5 folds by blocks of consecutive image ids of data.make_folds (the same folds as every
  earlier figshare figure), stored as image id -> fold;
* other-sources: each image's source (SARTAJ / Br35H / Chakrabarty = "navoneel") and class from index.csv;
* runs: the pre-registered study runs (figshare test fold + other-sources source held out of training).
"""
import json

import numpy as np
from data import CLASSES, SOURCES, SPLITS, load_cache, load_other_sources

d = load_cache(128)
o = load_other_sources(128)
# Two runs (the CPU budget of this session allows about two networks): run 0 holds out SARTAJ (almost all
# the notumor slices), run 1 holds out Br35H and navoneel together (every untyped tumour). Runs 2-4 (figshare
# folds 2-4, no source held out) are listed for later sessions.
runs = [
    {"run": 0, "figshare_test_fold": 0, "held_out_sources": ["sartaj"]},
    {"run": 1, "figshare_test_fold": 1, "held_out_sources": ["br35h", "navoneel"]},
    {"run": 2, "figshare_test_fold": 2, "held_out_sources": []},
    {"run": 3, "figshare_test_fold": 3, "held_out_sources": []},
    {"run": 4, "figshare_test_fold": 4, "held_out_sources": []},
]
doc = {
    "about": "issue #20 splits, fixed before any multi-source training (make_splits.py)",
    "figshare": {"classes": list(CLASSES),
                 "grouping": "blocks of ~60 consecutive image ids cut at the largest image change",
                 "fold_of_id": {str(int(i)): int(f) for i, f in sorted(zip(d["ids"], d["folds"]))},
                 "counts": {str(k): np.bincount(d["y"][d["folds"] == k], minlength=3).tolist() for k in range(5)}},
    "other_sources": {"sources": list(SOURCES),
                      "items": [{"file": str(f), "class": str(c), "source": str(s)}
                                for f, c, s in zip(o["files"], o["label"], o["source"])],
                      "counts": {s: {c: int(((o["source"] == s) & (o["label"] == c)).sum())
                                     for c in sorted(set(o["label"]))}
                                 for s in SOURCES}},
    "runs": runs,
}
SPLITS.parent.mkdir(exist_ok=True)
SPLITS.write_text(json.dumps(doc, indent=0) + "\n")
print(json.dumps({"figshare": doc["figshare"]["counts"], "other": doc["other_sources"]["counts"]}))
