"""Agreement of the automatic liver ROI's grade with the drawn-ROI grade on the shared full frames.

The 10 full B-mode frames in ``../shared/data/steatosis/frames`` are frame 0 of patients 1-10 (matched
against the ROI crops: mean abs. difference 2.9-3.9 grey levels for frame 0, >= 6 for the others), so
the drawn ROIs are the frame-0 rows of ``labels.csv``. Each frame is graded with the drawn liver ROI
and with ``auto_roi=True``, without and with the drawn kidney ROI. Run from the repository root:

    PYTHONPATH=src python training/steatosis/auto_roi_agreement.py [--json]
"""

from __future__ import annotations

import json
import re
import sys

import numpy as np


def main(argv=None) -> dict:
    """Grade each frame with the drawn and the automatic liver ROI (with and without kidney); print and return."""
    from napari_medai.data_paths import shared_data_dir
    from napari_medai.io.readers import load_image
    from napari_medai.steatosis.core import grade_steatosis
    from napari_medai.steatosis.preprocess import PATCH

    root = shared_data_dir() / "steatosis"
    import csv

    rows = {}
    with open(root / "labels.csv") as f:
        for r in csv.DictReader(f):
            if r["frame"] == "0":
                rows[int(r["patient_id"])] = r
    frames = sorted(root.glob("frames/*.jpeg"), key=lambda p: int(re.search(r"ID_(\d+)", p.name).group(1)))
    per = []
    for path in frames:
        pid = int(re.search(r"ID_(\d+)", path.name).group(1))
        r = rows[pid]
        liver = (int(r["liver_roi_x"]), int(r["liver_roi_y"]), PATCH, PATCH)
        kidney = (int(r["kidney_roi_x"]), int(r["kidney_roi_y"]), PATCH, PATCH)
        img = load_image(path).data
        rec = {"patient": pid, "true_grade": int(r["grade"]), "drawn_roi": liver}
        for tag, kid in (("texture", None), ("with_kidney", kidney)):
            drawn = grade_steatosis(img, roi=liver, kidney_roi=kid, device="cpu", heatmap=False)
            auto = grade_steatosis(img, auto_roi=True, kidney_roi=kid, device="cpu", heatmap=False)
            rec[tag] = {"drawn_grade": drawn.grade, "auto_grade": auto.grade, "agree": drawn.grade == auto.grade,
                        "drawn_p": [round(float(p), 3) for p in drawn.probabilities],
                        "auto_p": [round(float(p), 3) for p in auto.probabilities],
                        "auto_patch_agreement": round(auto.patch_agreement, 3), "auto_reasons": auto.uncertain_reasons}
            rec["auto_roi"] = auto.roi
        ax, ay, aw, ah = rec["auto_roi"]
        rec["centre_distance_px"] = round(float(np.hypot(ax + aw / 2 - liver[0] - 14, ay + ah / 2 - liver[1] - 14)), 1)
        per.append(rec)
    summary = {tag: {"agree": sum(p[tag]["agree"] for p in per), "n": len(per),
                     "drawn_correct": sum(p[tag]["drawn_grade"] == p["true_grade"] for p in per),
                     "auto_correct": sum(p[tag]["auto_grade"] == p["true_grade"] for p in per)}
               for tag in ("texture", "with_kidney")}
    summary["centre_distance_px_median"] = float(np.median([p["centre_distance_px"] for p in per]))
    doc = {"frames": per, "summary": summary}
    if "--json" in (argv or sys.argv[1:]):
        print(json.dumps(doc, indent=1, default=str))
    else:
        for p in per:
            t, k = p["texture"], p["with_kidney"]
            print(f"patient {p['patient']:2d} (S{p['true_grade']}): auto ROI {p['auto_roi']} "
                  f"({p['centre_distance_px']} px from drawn); "
                  f"texture drawn S{t['drawn_grade']} auto S{t['auto_grade']} | "
                  f"with kidney drawn S{k['drawn_grade']} auto S{k['auto_grade']}")
        print(json.dumps(summary))
    return doc


if __name__ == "__main__":
    main()
