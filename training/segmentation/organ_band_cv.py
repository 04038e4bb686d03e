"""Issue #19: the organ boundary redrawn by the 1 mm tumour stage within a band of the cascade's (organ_band_mm).

    OMP_NUM_THREADS=1 PYTHONPATH=src python training/segmentation/organ_band_cv.py

LiTS 4-fold patient CV with each fold's organ network (runs/cv14_organ_fold{k}) and stage (runs/stage_fold{k})
through the product's code (stage_maps, refine_organ_boundary, combine_stage with the shipped stage settings)
for bands of 0 (off), 3, 4 and 6 mm. Writes results/cv_organ_band.json. The band was chosen on these folds
(and on the validation CTs), so these are validation figures; the lesion rules are the shipped ones.
"""

import json
from pathlib import Path

import numpy as np
from evaluate_tumour_stage import (
    SPACING,
    STAGE_SPEC,
    held_out_patients,
    lesion_stats,
    overlap,
    pooled_dice,
    reference_maps,
)

from napari_medai.segmentation.tumour_stage import (
    LITS_PIXEL_MM,
    STAGE_INFERENCE,
    combine_stage,
    refine_organ_boundary,
)

BANDS = [0.0, 3.0, 4.0, 6.0]
res = {b: [] for b in BANDS}
for k, v, stage, organ, gt, x512 in held_out_patients():
    hu, maps = reference_maps(stage, x512, organ)
    spec = {**STAGE_SPEC, **STAGE_INFERENCE}
    for b in BANDS:
        lab = organ if b == 0 else refine_organ_boundary(organ, maps, SPACING, b)
        out = combine_stage(lab, maps, SPACING, spec, hu=hu)
        res[b].append(
            {
                **overlap(out >= 1, gt >= 1, "liver"),
                **overlap(out == 2, gt == 2, "tumour"),
                **lesion_stats(out == 2, gt == 2, LITS_PIXEL_MM),
                "fold": k,
                "patient": int(v),
            }
        )
    print(k, v, {b: round(2 * res[b][-1]["liver_inter"] / res[b][-1]["liver_sum"], 4) for b in BANDS}, flush=True)
summary = {}
for b in BANDS:
    f = [pooled_dice([i for i in res[b] if i["fold"] == k], "liver", "128") for k in range(4)]
    t = [pooled_dice([i for i in res[b] if i["fold"] == k], "tumour") for k in range(4)]
    det = sum(i["detected_10mm"] for i in res[b])
    big = sum(i["lesions_10mm"] for i in res[b])
    fl = sum(i["false"] for i in res[b])
    summary[str(b)] = {
        "liver_dice_128_folds": [round(x, 4) for x in f],
        "liver_mean_sd": [round(np.mean(f), 4), round(np.std(f, ddof=1), 4)],
        "liver_pooled_128": round(pooled_dice(res[b], "liver", "128"), 4),
        "tumour_dice_512_folds": [round(x, 4) for x in t],
        "tumour_mean_sd": [round(np.mean(t), 4), round(np.std(t, ddof=1), 4)],
        "detected_10mm": f"{det}/{big}",
        "false_per_patient": round(fl / len(res[b]), 2),
    }
    print(b, summary[str(b)], flush=True)
json.dump(
    {
        "note": "organ_band_mm experiment: LiTS 4-fold CV, fold organ nets + stage folds, the stage settings of "
        "STAGE_INFERENCE (lesion rules of the shipped card) with the band replaced; band 0 = no band",
        "summary": summary,
    },
    open(Path(__file__).resolve().parent / "results" / "cv_organ_band.json", "w"),
    indent=1,
)
