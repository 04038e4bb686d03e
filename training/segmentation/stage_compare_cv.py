"""Issue #19: two tumour stages compared on the LiTS CV under the SAME lesion rules (liver-tumor-ct 1.7).

    OMP_NUM_THREADS=1 PYTHONPATH=src python training/segmentation/stage_compare_cv.py \
        [--tags ,_i1600] [--out training/segmentation/results/cv_stage_compare.json]

Reads lesion_filter_cv.py's caches (runs/lesion_cache{tag}: each fold's organ network and stage run through the
product's code on its held-out patients) and scores both stages under fixed rules (1.6's shipped rule, the
1600-iteration stage's final rule, and the 10 mm minimum alone), so a difference comes from the network, not
from the nested choice of rules. Per patient: liver Dice at the slices' resolution. A diagnostic made after
the nested comparison (lesion_filter_cv.py --stage-tag _i1600) was seen: validation figures.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import lesion_filter_cv as lesion_cv
import numpy as np
from evaluate_tumour_stage import RUNS

HERE = Path(__file__).resolve().parent
RULES = {"rule_1.6 (10 mm, 0.7, 30 HU)": (10.0, 0.7, 30.0), "rule_1.7 (10 mm, 0.75, 15 HU)": (10.0, 0.75, 15.0),
         "min10_only": (10.0, 0.0, -1000.0)}


def scores(tag: str) -> dict:
    """Per patient: fold, liver Dice (full resolution) and the counts of every fixed rule."""
    tables, liver, fold_of = lesion_cv.load_tables(RUNS / f"lesion_cache{tag}")
    return {v: {"fold": fold_of[v], "liver_dice": 2 * liver[v]["liver_inter"] / liver[v]["liver_sum"],
                **{name: {**lesion_cv.rule_stats(t, r), **liver[v]} for name, r in RULES.items()}}
            for v, t in tables.items()}


def main():
    """Score both stages under every fixed rule and write the report."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--tags", default=",_i1600", help="two cache tags: runs/lesion_cache{tag}")
    ap.add_argument("--out", default=str(HERE / "results" / "cv_stage_compare.json"))
    a = ap.parse_args()
    lesion_cv.ABSOLUTE = True  # the shipped contrast rule: |liver - lesion|
    tags = a.tags.split(",")
    per = {tag: scores(tag) for tag in tags}
    report = {"note": __doc__.split("\n\n")[1].replace("\n", " "), "stages": {}}
    for tag in tags:
        rows = {}
        for name in RULES:
            folds = [lesion_cv.summarize([p[name] for p in per[tag].values() if p["fold"] == k])["tumour_dice_512"]
                     for k in range(4)]
            total = lesion_cv.summarize([p[name] for p in per[tag].values()])
            rows[name] = {"tumour_dice_folds": [round(x, 4) for x in folds],
                          "tumour_dice_mean_sd": [round(float(np.mean(folds)), 4),
                                                  round(float(np.std(folds, ddof=1)), 4)],
                          "tumour_dice_pooled": round(total["tumour_dice_512"], 4),
                          "detected_10mm": f"{total['detected_10mm']}/{total['lesions_10mm']}",
                          "false_per_patient": round(total["false_per_patient"], 2)}
        patients = sorted(per[tag].items(), key=lambda x: int(x[0]))
        rows["liver_dice_per_patient"] = {v: round(p["liver_dice"], 4) for v, p in patients}
        report["stages"][tag or "_i800"] = rows
        print(tag or "_i800", json.dumps(rows, indent=1), flush=True)
    first, second = (per[t] for t in tags)
    diff = np.array([second[v]["liver_dice"] - first[v]["liver_dice"] for v in first])
    report["liver_dice_second_minus_first"] = {"better": int((diff > 0).sum()), "patients": len(diff),
                                              "mean": round(float(diff.mean()), 4), "min": round(float(diff.min()), 4)}
    print(report["liver_dice_second_minus_first"])
    Path(a.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
