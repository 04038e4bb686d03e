r"""Issue #19: why each LiTS lesion >= 10 mm that a lesion rule misses is missed (a diagnostic; nothing is chosen).

    PYTHONPATH=src python training/segmentation/lesion_misses.py \
        [--cache training/segmentation/runs/lesion_cache_i1600_s8] [--rule 10,0.75,15] [--out results/x.json]

Reads a lesion cache of ``lesion_filter_cv.py`` (each held-out patient's output through the product's code with
no lesion rule, and the stage's p(tumour)). For every real lesion >= 10 mm it reports the predicted lesions that
overlap it and, when the rule keeps none of them, the first reason that applies:

- ``outside the organ``: no predicted tumour voxel on it and at least 30 % of it outside the organ region;
- ``taken for liver``: no predicted tumour voxel on it, inside the organ;
- ``predicted smaller than the size rule``: a predicted lesion overlaps it but is narrower than ``min mm``;
- ``score under the rule`` / ``contrast under the rule``: the widest overlapping lesion passes the size but not
  the mean p(tumour) or the |HU| contrast clause.
"""
from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np
from evaluate_tumour_stage import RUNS
from lesion_filter_cv import lesion_table

HERE = Path(__file__).resolve().parent
PIXEL_MM = 0.75  # LiTS pixels, as lesion_filter_cv counts them


def miss_reason(candidates: list, outside_share: float, rule: tuple) -> str | None:
    """None when ``rule`` keeps one of ``candidates`` (lesion_table rows), else why the real lesion is missed."""
    min_mm, min_score, min_contrast = rule
    if not candidates:
        return "outside the organ" if outside_share >= 0.3 else "taken for liver"
    if any(c["diameter"] >= min_mm and c["score"] >= min_score and abs(c["contrast"]) >= min_contrast
           for c in candidates):
        return None
    widest = max(candidates, key=lambda c: c["diameter"])
    if widest["diameter"] < min_mm:
        return "predicted smaller than the size rule"
    return "score under the rule" if widest["score"] < min_score else "contrast under the rule"


def patient_lesions(d, rule: tuple) -> list:
    """Each real lesion >= 10 mm of one cached patient: size, contrast, overlapping predictions, reason."""
    hu = d["green"].astype(np.float32) / 255.0 * 200.0 - 40.0
    table = lesion_table(d["out"], d["gt"], d["score"], hu, PIXEL_MM)
    rows = []
    for real in table["real_lesions"]:
        candidates = [table["lesions"][i - 1] for i in real["overlapping"]]
        rows.append({
            "diameter_mm": round(real["diameter"], 1),
            "contrast_hu": round(real["contrast"], 1),
            "outside_organ_share": round(real["outside_organ_share"], 2),
            "predicted": [{k: round(c[k], 2) for k in ("diameter", "score", "contrast")} for c in candidates],
            "missed_because": miss_reason(candidates, real["outside_organ_share"], rule),
        })
    return rows


def main():
    """Command line: --cache, --rule MM,SCORE,HU, --out."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", default=str(RUNS / "lesion_cache_i1600_s8"))
    ap.add_argument("--rule", default="10,0.75,15", help="min mm, min mean p(tumour), min |contrast| HU (1.7's)")
    ap.add_argument("--out", default=str(HERE / "results" / "lesion_misses_i1600_organ1334.json"))
    a = ap.parse_args()
    rule = tuple(float(v) for v in a.rule.split(","))
    patients = {}
    for f in sorted(Path(a.cache).glob("p*.npz"), key=lambda p: int(p.stem[1:])):
        patients[f.stem[1:]] = patient_lesions(np.load(f), rule)
    rows = [r for p in patients.values() for r in p]
    reasons = Counter(r["missed_because"] for r in rows if r["missed_because"])
    summary = {"cache": Path(a.cache).name, "rule": rule, "lesions_10mm": len(rows),
               "found": sum(r["missed_because"] is None for r in rows), "missed_because": dict(reasons.most_common())}
    Path(a.out).write_text(json.dumps({"summary": summary, "patients": patients}, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
