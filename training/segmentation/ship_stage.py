"""Attach a trained tumour stage to the shipped cascade and write its metrics into the card
(liver-tumor-ct 1.4-1.6).

    PYTHONPATH=src python training/segmentation/ship_stage.py --stage training/segmentation/runs/stage_final \
        --cv training/segmentation/results/cv_tumour_stage.json --version 1.5 \
        --lesion-cv training/segmentation/results/cv_lesion_filter.json [--external results/external_v16.json]

The organ and tumour networks are the shipped ones (1.2 weights); the stage's weights become ``stage.*`` keys
of the same safetensors file (``tumour_stage.attach_tumour_stage``). Writes into the package's model folder.
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from napari_medai.segmentation.tumour_stage import STAGE_INFERENCE, attach_tumour_stage

MODEL = Path(__file__).resolve().parents[2] / "src" / "napari_medai" / "models" / "liver-tumor-ct"


def repo_path(path: str) -> str:
    """A report's path as the card cites it: relative to the repository."""
    return "training/segmentation/" + str(path).split("training/segmentation/")[-1]


def main():
    """Write the model folder's weights and card."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--stage", required=True)
    ap.add_argument("--cv", required=True)
    ap.add_argument("--version", required=True)
    ap.add_argument("--external", default=None)
    ap.add_argument("--lesion-cv", default=None, help="lesion_filter_cv.py's report (the lesion rules, 1.5)")
    ap.add_argument("--stage-compare", default=None,
                    help="stage_compare_cv.py's report (1.7: stage at 1600 iterations)")
    ap.add_argument("--metric", action="append", default=[], metavar="NAME=JSON",
                    help="another report to carry under metrics[NAME] (repeatable)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        card = attach_tumour_stage(MODEL, args.stage, tmp, version=args.version)
        iterations = int(card["training"]["stage"]["iterations"])
        cv = json.loads(Path(args.cv).read_text())["summary"]
        keep = ("unionref_nested", "pipeline", "oracle_region", "union_nested", "pooled_all_patients")
        card["metrics"]["lits_cv_tumour_stage"] = {
            **{k: v for k, v in cv.items() if k.startswith(keep)},
            "source": "training/segmentation/results/cv_tumour_stage.json",
            "stage": "the 800-iteration stage of 1.4-1.6 (1.7's stage: lits_cv_lesion_rules, lits_cv_stage_compare)",
            "shipped_variant": "unionref_nested (union region, liver_hu_reference, min_lesion_mm chosen on the other "
            "three folds: 10 mm in every fold); from 1.5 the lesion rules of lits_cv_lesion_rules replace the 10 mm",
            "cases": "VALIDATION: LiTS patient-grouped CV folds; the union and HU-reference rules were chosen on them "
            "(with the validation CTs IRCADb-07, CHAOS-1, the sample CT, the TotalSegmentator DICOM and the "
            "full-abdomen CT), min_lesion_mm and the 1.5 lesion rules nested; no untouched test set",
        }
        if args.lesion_cv:
            lesion = json.loads(Path(args.lesion_cv).read_text())
            card["metrics"]["lits_cv_lesion_rules"] = {
                "nested": lesion["summary"]["nested"], "without_rules_min10": lesion["summary"]["shipped_min10"],
                "final_rule": lesion["summary"]["final_rule"],
                "per_fold_choice": [f["chosen"] for f in lesion["folds"]],
                "source": f"{repo_path(args.lesion_cv)} (lesion_filter_cv.py --absolute)"}
        if args.stage_compare:
            card["metrics"]["lits_cv_stage_compare"] = {
                **json.loads(Path(args.stage_compare).read_text()),
                "source": f"{repo_path(args.stage_compare)} (stage_compare_cv.py)",
                "decision": "1.7 ships the 1600-iteration stage: a second decision on CV figures already seen (the "
                "session-7 rule, nested fold-mean tumour Dice >= 0.532, had held it back at 0.502); the rule for it "
                "was written before the stage ran on the validation CTs and crops, and every clause held there"}
        for item in args.metric:
            name, path = item.split("=", 1)
            report = json.loads(Path(path).read_text())
            if "summary" in report:  # a lesion_filter_cv report: its summary and folds, not the whole rule grid
                summary = {k: v for k, v in report["summary"].items() if k != "all_rules_all_patients"}
                report = {"summary": summary, "folds": report["folds"], "note": report.get("note", "")}
            card["metrics"][name] = {**report, "source": repo_path(path)}
        if args.external:
            card["metrics"]["validation_v" + args.version.replace(".", "")] = json.loads(
                Path(args.external).read_text()
            )
        card["training"]["reproduce"] = (
            "napari-medai train segment --data ../shared/data/ct/lits-slices-2d --recipe cascade "
            f"--organ-iterations 1334 --tumour-iterations 1000 --stage-iterations {iterations} --pixel-mm 3.0 "
            f"--version {args.version} -o runs/liver-tumor-ct")
        card["training"]["reproduce_note"] = (
            "organ and tumour networks: the 1.2 weights (same recipe and random draws as the research script "
            "that trained them; their augmentation has since moved to MONAI transforms, so a rerun gives equivalent, "
            "not bit-identical, weights); stage (from 1.7): trained by tumour_stage.train_tumour_stage, the function "
            "behind --recipe tumour-stage and the cascade's stage, with the current augmentation "
            "(training/segmentation/train_tumour_stage_cv.py --tag _i1600 --iterations 1600, its 'final' run)")
        card["training_data"] = card["training_data"].split(" Tumour stage:")[0] + (
            " Tumour stage: the same 660 slices at 1.0 mm (LiTS pixels taken as 0.75 mm), "
            "three neighbouring slices as channels, 128 px patches around the liver, "
            f"{iterations} iterations, batch 16, batch Dice + CE 1/1/3, zoom x0.75-1.33.")
        card["notes"] = (
            "Organ at 3.0 mm pixels (coarse boundaries); tumours from a 1.0 mm 2.5-D stage inside the organ's "
            "box, its 1 mm boundary within 3 mm of the organ's; lesions under {min_lesion_mm:g} mm, below a mean "
            "p(tumour) of {min_lesion_score:g} or within {min_lesion_contrast_hu:g} HU of the liver dropped: tumour "
            "labels are research output with false lesions on scans "
            "unlike LiTS (see MODEL_CARD.md and docs/segmentation.md for measured numbers and weaknesses).").format(
            **STAGE_INFERENCE)
        (Path(tmp) / "card.json").write_text(json.dumps(card, indent=2) + "\n")
        for name in ("weights.safetensors", "card.json"):
            shutil.copyfile(Path(tmp) / name, MODEL / name)
    print(f"{MODEL}: version {card['version']}, sha256 {card['sha256']}")


if __name__ == "__main__":
    main()
