"""Summarise the per-fold results (results/fold<K>_<tag>.json) as mean ± sample sd (ddof=1) across folds."""

import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
tag = sys.argv[1] if len(sys.argv) > 1 else "cs_e30"
files = sorted((HERE / "results").glob(f"fold[0-9]_{tag}.json"))
runs = [json.loads(f.read_text()) for f in files]
rows = {}
for r in runs:
    m = r["metrics"]
    rows.setdefault("all", []).append(
        (m["overall"]["mAP"], m["overall"]["P@10"], m["overall"]["R@10"], m["classifier_acc"])
    )
    for c, v in m["per_class"].items():
        rows.setdefault(c, []).append((v["mAP"], v["P@10"], v["R@10"], np.nan))
out = {"tag": tag, "folds": [r["fold"] for r in runs], "train_minutes": [round(r["train_minutes"], 2) for r in runs]}
print(f"folds {out['folds']}  train minutes {out['train_minutes']}")
print("| class | mAP (mean ± sd) | P@10 (mean ± sd) | R@10 | per-fold mAP |")
print("|---|---|---|---|---|")
for c, vals in rows.items():
    a = np.array(vals)
    out[c] = {"mAP": [a[:, 0].mean(), a[:, 0].std(ddof=1)], "P@10": [a[:, 1].mean(), a[:, 1].std(ddof=1)],
              "R@10": a[:, 2].mean(), "per_fold_mAP": a[:, 0].round(4).tolist()}
    print(f"| {c} | {a[:,0].mean():.4f} ± {a[:,0].std(ddof=1):.4f} | {a[:,1].mean():.4f} ± {a[:,1].std(ddof=1):.4f} | "
          f"{a[:,2].mean():.4f} | {', '.join(f'{v:.3f}' for v in a[:,0])} |")
if "all" in rows:
    acc = np.array(rows["all"])[:, 3]
    print(f"classifier accuracy (training head) {acc.mean():.4f} ± {acc.std(ddof=1):.4f}")
(HERE / "results" / f"summary_{tag}.json").write_text(json.dumps(out, indent=1, default=float))
