"""Issue #19: a per-lesion filter for the tumour stage, chosen with nested LiTS 4-fold patient CV.

    OMP_NUM_THREADS=1 PYTHONPATH=src python training/segmentation/lesion_filter_cv.py [--recache]

Step 1 (cached in runs/lesion_cache/): for each held-out patient of fold k, the fold's organ network
(runs/cv14_organ_fold{k}) and stage (runs/stage_fold{k}) run through the product's code exactly as the
shipped card does (HU reference shift, union, min_liver_contact) with ``min_lesion_mm`` 0, keeping the stage's
p(tumour). Step 2: every predicted 3-D lesion gets its size (equivalent diameter of its largest
cross-section) and mean p(tumour); a rule (min size m, min mean score s) is chosen for fold k on the other
three folds' patients only (the issue's targets: at most 1 false lesion per patient, then the most >= 10 mm
lesions found, then the best pooled tumour Dice) and reported once on fold k. Lesion counting and Dice as
in evaluate_tumour_stage.py (LiTS pixels taken as 0.75 mm; every 2nd slice). ``--extents 0.4,0.3,0.2`` adds a
fourth dimension: the size measured on the lesion's extent at p(tumour) >= t (``tumour_stage.lesion_diameters``,
the card's ``lesion_extent_p``), as ``segment()`` would measure it.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
from evaluate_tumour_stage import RUNS, SPACING, STAGE_SPEC, held_out_patients, overlap, pooled_dice, reference_maps

ABSOLUTE = False  # --absolute: darker or brighter than the liver
HERE = Path(__file__).resolve().parent
CACHE = RUNS / "lesion_cache"
SIZES_MM = (0.0, 5.0, 7.0, 10.0, 12.0, 15.0)
SCORES = (0.0, 0.5, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9)
CONTRASTS_HU = (-1000.0, 0.0, 10.0, 15.0, 20.0, 25.0, 30.0)  # -1000: no contrast rule
EXTENTS = (None,)  # --extents: size measured on the lesion (None) or its extent at p(tumour) >= t (1.8 test)


def build_cache(cache: Path = CACHE, stage_tag: str = "", organ_tag: str = "cv14"):
    """Run each fold's organ network and stage on its held-out patients and cache the outputs (step 1)."""
    from napari_medai.segmentation.tumour_stage import STAGE_INFERENCE, combine_stage, refine_organ_boundary

    cache.mkdir(parents=True, exist_ok=True)
    for k, v, stage, organ, gt, x512 in held_out_patients(stage_tag=stage_tag, organ_tag=organ_tag):
        _, maps = reference_maps(stage, x512, organ)
        band = STAGE_INFERENCE.get("organ_band_mm", 0.0)  # the shipped boundary redrawing (1.6)
        organ = refine_organ_boundary(organ, maps, SPACING, band) if band > 0 else organ
        out = combine_stage(organ, maps, SPACING, {**STAGE_SPEC, "region": "union", "min_lesion_mm": 0.0})
        score = np.zeros(out.shape, np.float16)
        score[maps[0]] = maps[3]
        green = np.round(x512 * 255).astype(np.uint8)
        np.savez_compressed(cache / f"p{v}.npz", out=out, gt=gt, score=score, fold=k, green=green)
        print("fold", k, "patient", v, flush=True)


def lesion_table(out, gt, score, hu, pixel_mm):
    """Per predicted 3-D lesion: diameter (mm, largest cross-section), mean p(tumour), contrast (HU, the
    liver's median minus the lesion's mean), voxels overlapping the real tumour; and per real lesion >= 10
    mm the predicted lesions that overlap it. Dropping a lesion leaves the others as they are, so every rule
    is scored from these tables (a dropped lesion becomes liver: liver Dice does not change). ``real_lesions``:
    per real lesion >= 10 mm its diameter, the predicted lesions overlapping it, its contrast and the share of
    it outside the organ (for lesion_misses.py)."""
    from napari_medai.segmentation.tumour_stage import lesion_diameters

    tumour, real = out == 2, gt == 2
    cube = np.ones((3, 3, 3))
    lab, slices, diameters = lesion_diameters(tumour, pixel_mm**2, structure=cube)
    extents = {t: lesion_diameters(tumour, pixel_mm**2, score=score.astype(np.float32), region=out >= 1,
                                   extent_p=t, structure=cube)[2] for t in EXTENTS if t is not None}
    liver_median = float(np.median(hu[out == 1])) if (out == 1).any() else 0.0
    table = []
    for index, sl in enumerate(slices, start=1):
        comp = lab[sl] == index
        table.append(
            {
                "diameter": diameters[index - 1],
                "extent_diameter": {t: d[index - 1] for t, d in extents.items()},
                "score": float(score[sl][comp].astype(np.float32).mean()),
                "contrast": liver_median - float(hu[sl][comp].mean()),
                "inter": int((real[sl] & comp).sum()),
                "voxels": int(comp.sum()),
            }
        )
    real_lab, real_slices, real_diameters = lesion_diameters(real, pixel_mm**2, structure=cube)
    big, real_lesions = [], []
    for index, (sl, diameter) in enumerate(zip(real_slices, real_diameters), start=1):
        if diameter < 10.0:
            continue
        comp = real_lab[sl] == index
        big.append(set(np.unique(lab[sl][comp]).tolist()) - {0})
        real_lesions.append({"diameter": diameter, "overlapping": sorted(big[-1]),
                             "contrast": liver_median - float(hu[sl][comp].mean()),
                             "outside_organ_share": float((out[sl][comp] == 0).mean())})
    return {"lesions": table, "big": big, "real_lesions": real_lesions, "real_voxels": int(real.sum())}


def rule_stats(t, rule):
    """Detection, false lesions and Dice counts of one patient's table under rule (min mm, min score, min HU[,
    extent p: the size measured on the lesion's extent at p(tumour) >= p])."""
    min_mm, min_score, min_contrast = rule[:3]
    extent = rule[3] if len(rule) > 3 else None
    keep = {
        i + 1
        for i, les in enumerate(t["lesions"])
        if (les["diameter"] if extent is None else les["extent_diameter"][extent]) >= min_mm
        and les["score"] >= min_score
        and (abs(les["contrast"]) if ABSOLUTE else les["contrast"]) >= min_contrast
    }
    kept = [t["lesions"][i - 1] for i in keep]
    return {
        "lesions_10mm": len(t["big"]),
        "detected_10mm": sum(bool(b & keep) for b in t["big"]),
        "false": sum(les["inter"] == 0 for les in kept),
        "tumour_inter": sum(les["inter"] for les in kept),
        "tumour_sum": sum(les["voxels"] for les in kept) + t["real_voxels"],
    }


def load_tables(cache: Path, pixel_mm: float = 0.75) -> tuple:
    """Per cached patient: its lesion table (:func:`lesion_table`), its liver overlap counts and its fold."""
    tables, liver, fold_of = {}, {}, {}
    for f in sorted(cache.glob("p*.npz")):
        d = np.load(f)
        v = f.stem[1:]
        fold_of[v] = int(d["fold"])
        hu = d["green"].astype(np.float32) / 255.0 * 200.0 - 40.0
        tables[v] = lesion_table(d["out"], d["gt"], d["score"], hu, pixel_mm)
        liver[v] = overlap(d["out"] >= 1, d["gt"] >= 1, "liver")
        print("patient", v, "lesions", len(tables[v]["lesions"]), flush=True)
    return tables, liver, fold_of


def summarize(items: list) -> dict:
    """Detection, false lesions and pooled Dice over patients' :func:`rule_stats` (+ liver overlap) records."""
    return {
        "detected_10mm": sum(i["detected_10mm"] for i in items),
        "lesions_10mm": sum(i["lesions_10mm"] for i in items),
        "false": sum(i["false"] for i in items),
        "patients": len(items),
        "false_per_patient": sum(i["false"] for i in items) / len(items),
        "tumour_dice_512": pooled_dice(items, "tumour"),
        "liver_dice_128": pooled_dice(items, "liver", "128"),
    }


def main():
    """Score every rule per patient, choose nested, write the report (step 2)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--recache", action="store_true")
    ap.add_argument("--stage-tag", default="", help="stages of runs/stage{tag}_fold{k} (train_tumour_stage_cv --tag)")
    ap.add_argument("--organ-tag", default="cv14", help="organ networks of runs/{tag}_organ_fold{k} (s8: 1334 its)")
    ap.add_argument(
        "--absolute", action="store_true", help="contrast rule on |liver - lesion| (hyperdense lesions too)"
    )
    ap.add_argument("--extents", default="", help="extent thresholds as a 4th grid dimension, e.g. 0.4,0.3,0.2")
    ap.add_argument("--out", default=str(HERE / "results" / "cv_lesion_filter.json"))
    a = ap.parse_args()
    global ABSOLUTE, EXTENTS
    ABSOLUTE = a.absolute
    EXTENTS = (None, *(float(v) for v in a.extents.split(",") if v))
    cache = RUNS / f"lesion_cache{a.stage_tag}{'' if a.organ_tag == 'cv14' else '_' + a.organ_tag}"
    if a.recache or not any(cache.glob("p*.npz")):
        build_cache(cache, a.stage_tag, a.organ_tag)
    tables, liver, fold_of = load_tables(cache)
    per = {
        v: {
            rule if rule[3] is not None else rule[:3]: {**rule_stats(t, rule), **liver[v]}
            for rule in itertools.product(SIZES_MM, SCORES, CONTRASTS_HU, EXTENTS)
        }
        for v, t in tables.items()
    }

    def totals(ids, rule):
        return summarize([per[p][rule] for p in ids])

    def choose(ids):
        rules = list(per[ids[0]])
        stats = {r: totals(ids, r) for r in rules}
        ok = [r for r in rules if stats[r]["false_per_patient"] <= 1.0]
        pool = ok or rules
        key = (
            (lambda r: (stats[r]["detected_10mm"], stats[r]["tumour_dice_512"]))
            if ok
            else (lambda r: (-stats[r]["false_per_patient"], stats[r]["detected_10mm"]))
        )
        return max(pool, key=key)

    report = {
        "sizes_mm": SIZES_MM,
        "scores": SCORES,
        "folds": [],
        "contrasts_hu": CONTRASTS_HU,
        "note": __doc__.split("\n\n")[1].replace("\n", " "),
    }
    nested_items = []  # each patient under its own fold's rule: pooled figures beside the fold means
    for k in sorted(set(fold_of.values())):
        ids = [p for p, f in fold_of.items() if f == k]
        others = [p for p, f in fold_of.items() if f != k]
        rule = choose(others)
        nested_items += [per[p][rule] for p in ids]
        fold = {
            "fold": k,
            "patients": ids,
            "chosen": {"min_lesion_mm": rule[0], "min_score": rule[1], "min_contrast_hu": rule[2],
                       **({"lesion_extent_p": rule[3]} if len(rule) > 3 else {})},
            "nested": totals(ids, rule),
            "shipped_min10": totals(ids, (10.0, 0.0, -1000.0)),
        }
        report["folds"].append(fold)
        print(json.dumps(fold), flush=True)
    allp = list(per)
    folds = report["folds"]
    summary = {}
    for name in ("nested", "shipped_min10"):
        dice = np.array([f[name]["tumour_dice_512"] for f in folds])
        liver = np.array([f[name]["liver_dice_128"] for f in folds])
        det = sum(f[name]["detected_10mm"] for f in folds)
        big = sum(f[name]["lesions_10mm"] for f in folds)
        false = sum(f[name]["false"] for f in folds)
        summary[name] = {
            "tumour_dice_512_mean_sd": [round(dice.mean(), 4), round(dice.std(ddof=1), 4)],
            "liver_dice_128_mean_sd": [round(liver.mean(), 4), round(liver.std(ddof=1), 4)],
            "detected_10mm": f"{det}/{big}",
            "detected_share": round(det / big, 4),
            "false_per_patient": round(false / len(allp), 2),
        }
    summary["nested"]["pooled_all_patients"] = {"tumour_dice_512": round(pooled_dice(nested_items, "tumour"), 4),
                                                "liver_dice_128": round(pooled_dice(nested_items, "liver", "128"), 4)}
    summary["all_rules_all_patients"] = {
        f"min{r[0]:g}_score{r[1]:g}_contrast{r[2]:g}" + (f"_extent{r[3]:g}" if len(r) > 3 else ""): {
            k2: (round(v2, 4) if isinstance(v2, float) else v2) for k2, v2 in totals(allp, r).items()
        }
        for r in per[allp[0]]
    }
    final = choose(allp)  # the rule for the shipped card: the same selection on all 16 patients
    summary["final_rule"] = {
        "min_lesion_mm": final[0],
        "min_lesion_score": final[1],
        "min_lesion_contrast_hu": final[2],
        **({"lesion_extent_p": final[3]} if len(final) > 3 else {}),
        "all_patients_not_nested": {
            k2: (round(v2, 4) if isinstance(v2, float) else v2) for k2, v2 in totals(allp, final).items()
        },
    }
    report["summary"] = summary
    Path(a.out).write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k2: v2 for k2, v2 in summary.items() if k2 != "all_rules_all_patients"}, indent=1))


if __name__ == "__main__":
    main()
