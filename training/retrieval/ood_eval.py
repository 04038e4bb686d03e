"""Out-of-domain flag of a figshare-built library on other brain-MRI sources and on wrong modalities.

    napari-medai retrieve build ../shared/data/brain-mri/figshare -o figshare.medlib
    PYTHONPATH=src python training/retrieval/ood_eval.py figshare.medlib [--json]

Every query goes through ``CaseLibrary.query`` (what ``retrieve query`` and the widget run): the image as
a user would give it (a file path; a CT volume's middle slice along its first array axis).

The library's own cases: 5 blocks of consecutive figshare ids (a proxy for patients); each block is
removed from the library (which then recalibrates on the other four) and its cases are queried with
their stored descriptors and thumbnail statistics (``query_vector``), as new cases of the same source.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def main(argv=None):
    """Query the library with each out-of-domain set and its own held-out blocks; return the flag rates."""
    from napari_medai.data_paths import shared_data_dir
    from napari_medai.retrieval.library import CaseLibrary

    argv = sys.argv[1:] if argv is None else argv
    lib = CaseLibrary.load(argv[0])
    cal = lib.calibration
    data = shared_data_dir()
    other = data / "brain-mri" / "other-sources"
    rng = np.random.default_rng(7)
    sets = {
        "other sources: meningioma": sorted((other / "meningioma").glob("*")),
        "other sources: pituitary": sorted((other / "pituitary").glob("*")),
        "other sources: tumour-untyped": sorted((other / "tumour-untyped").glob("*")),
        "other sources: notumor (class not in the library)": sorted((other / "notumor").glob("*")),
        "CT: volumes (middle slice as loaded)": [data / "ct" / p for p in (
            "chaos-ct-1/chaos_ct_01_ct.nii.gz", "full-abdomen/abdomen_ct_512x512x146.nii.gz",
            "ircadb-07/ircadb01_07_ct.nii.gz", "totalseg-example/example_ct.nii.gz",
            "totalseg-example/example_ct_sm.nii.gz", "totalseg-example/example_ct_dicom")],
        "CT: LiTS slices (every 20th)": sorted((data / "ct" / "lits-slices-2d" / "images").glob("*"))[::20],
        "ultrasound: us-abdominal": sorted((data / "us-abdominal" / "images").glob("*")),
        "ultrasound: steatosis frames": sorted((data / "steatosis" / "frames").glob("*")),
        "noise (uniform, Gaussian, smoothed)": [rng.uniform(0, 255, (256, 256)) for _ in range(4)]
        + [rng.normal(100, 30, (512, 512)) for _ in range(4)]
        + [__import__("scipy.ndimage", fromlist=["x"]).gaussian_filter(rng.normal(0, 1, (256, 256)), s)
           for s in (1, 2, 4, 8)],
        "blank": [np.zeros((256, 256)), np.full((512, 512), 128.0)],
    }
    report = {"library": str(argv[0]), "cases": len(lib), "calibration": json.loads(cal.to_json()), "sets": {}}
    for name, items in sets.items():
        flags, reasons = [], {}
        for item in items:
            r = lib.query(str(item) if isinstance(item, Path) else item, k=10)
            flags.append(r.out_of_domain)
            for reason in r.reasons:
                key = reason.split(" (")[0][:60]
                reasons[key] = reasons.get(key, 0) + 1
        report["sets"][name] = {"n": len(items), "flagged": int(sum(flags)), "rate": round(float(np.mean(flags)), 4),
                                "reasons": reasons}
        print(f"{name:55s} {sum(flags):4d} / {len(items):4d} flagged ({np.mean(flags):.1%})", file=sys.stderr)
    report["own cases (figshare, 5 held-out blocks)"] = _held_out_blocks(argv[0])
    if "--json" in argv:
        print(json.dumps(report, indent=1))
    return report


def _held_out_blocks(path, n_blocks=5):
    """Share of the library's own cases flagged when their block of consecutive ids is left out."""
    from napari_medai.retrieval.domain import image_stats
    from napari_medai.retrieval.library import CaseLibrary, _decode_png

    full = CaseLibrary.load(path)
    cases = sorted(full.cases(), key=lambda c: int(Path(c["path"]).stem))  # by the data set's image id
    ids, vecs = full.vectors()
    row = {int(c): i for i, c in enumerate(ids)}
    blocks, flagged, reasons = [], 0, {}
    for b, part in enumerate(np.array_split(np.arange(len(cases)), n_blocks)):
        held = [int(cases[i]["case_id"]) for i in part]
        lib = CaseLibrary.load(path)
        lib.remove(held)
        n = 0
        for c in held:
            stats = image_stats(_decode_png(full.case(c)["thumbnail"]))
            r = lib.query_vector(vecs[row[c]], 10, stats=stats, hu_share=0.0)
            n += r.out_of_domain
            for reason in r.reasons:
                key = reason.split(" (")[0][:60]
                reasons[key] = reasons.get(key, 0) + 1
        blocks.append({"n": len(held), "flagged": int(n), "modality_floor": round(lib.calibration.modality_floor, 4)})
        flagged += n
        print(f"figshare block {b}: {n:3d} / {len(held)} flagged", file=sys.stderr)
    return {"n": len(cases), "flagged": int(flagged), "rate": round(flagged / len(cases), 4), "blocks": blocks,
            "reasons": reasons}


if __name__ == "__main__":
    main()
