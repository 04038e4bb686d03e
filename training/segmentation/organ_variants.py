"""Issue #19: can test-time augmentation or a second organ network recover IRCADb-07's missed left lobe?

    PYTHONPATH=src python training/segmentation/organ_variants.py [--other runs/cand18o] [--out results/x.json]

A diagnostic on the two validation CTs with manual livers, not a ship decision (they have guided choices
before, so nothing chosen here could be called external). Each variant wraps the shipped cascade and runs
through the product's own ``segment()`` (canvas, post-processing, tumour stage and organ band unchanged):

- ``as shipped``: the cascade at 3.0 mm pixels;
- ``flip``: the mean of the class probabilities of each slice and its left-right mirror;
- ``scales``: the mean over the slice seen at 2.5, 3.0 and 3.5 mm pixels (the canvas resampled by 1.2, 1
  and 0.86);
- ``two organ networks``: the mean with the same cascade whose organ network is ``--other``'s (by default
  the 1.8 candidate trained by ``napari-medai train segment``, rejected in session 8).

For the variant as shipped it also reports the missed liver's largest connected piece and the organ
network's p(liver or tumour) inside it, to tell "the network saw it and post-processing dropped it" from
"the network never saw it".
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import argparse
import copy
import json
from pathlib import Path

import numpy as np

from napari_medai.data_paths import shared_data_dir
from napari_medai.io.geometry import canonical_orientation, to_canonical
from napari_medai.io.readers import load_image
from napari_medai.segmentation import core
from napari_medai.segmentation.metrics import dice

HERE = Path(__file__).resolve().parent
CT = (shared_data_dir() or HERE.parents[1].parent / "shared" / "data") / "ct"
CASES = {"chaos1": ("chaos-ct-1/chaos_ct_01_ct.nii.gz", "chaos-ct-1/chaos_ct_01_label.nii.gz"),
         "ircadb07": ("ircadb-07/ircadb01_07_ct.nii.gz", "ircadb-07/ircadb01_07_label.nii.gz")}
SCALES = (3.0 / 2.5, 1.0, 3.0 / 3.5)


def variant_net(nets, scales=(1.0,), flip=False):
    """A module averaging the class probabilities of ``nets`` over canvas ``scales`` and mirrors."""
    import torch
    import torch.nn.functional as F

    class Variant(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.nets = torch.nn.ModuleList(nets)

        def forward(self, x):
            h, w = x.shape[-2:]
            air = float(x[0, 0, 0, 0])
            total = 0.0
            for net in self.nets:
                for s in scales:
                    xs = x if s == 1.0 else F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False)
                    sh, sw = xs.shape[-2:]
                    xs = F.pad(xs, (0, -sw % 16, 0, -sh % 16), value=air)  # the UNet wants multiples of 16
                    for mirror in ((False, True) if flip else (False,)):
                        xi = torch.flip(xs, [-1]) if mirror else xs
                        p = torch.exp(net(xi).float())
                        p = torch.flip(p, [-1]) if mirror else p
                        p = p[..., :sh, :sw]
                        total = total + (p if s == 1.0 else F.interpolate(p, size=(h, w), mode="bilinear",
                                                                           align_corners=False))
            n = len(self.nets) * len(scales) * (2 if flip else 1)
            return torch.log(total / n + 1e-6)

    return Variant().eval()


def missed_piece(pred_liver, gt_liver, organ_fg, spacing):
    """Volume of the largest connected piece of manual liver the prediction misses, and the organ
    network's p(liver or tumour) inside it (quartiles)."""
    from scipy import ndimage

    missed = gt_liver & ~pred_liver
    lab, n = ndimage.label(missed)
    if n == 0:
        return {"ml": 0.0}
    sizes = ndimage.sum(missed, lab, range(1, n + 1))
    piece = lab == int(np.argmax(sizes)) + 1
    return {"ml": round(float(sizes.max()) * float(np.prod(spacing)) / 1000.0, 1),
            "organ_p_quartiles": [round(float(q), 3) for q in np.percentile(organ_fg[piece], [25, 50, 75])],
            "share_organ_p_over_0.5": round(float((organ_fg[piece] > 0.5).mean()), 3)}


def organ_probability(net, canon_hu, spacing, lm):
    """The shipped cascade's p(liver or tumour) on a canonical volume, slice by slice on the product's canvas."""
    import torch

    captured = []

    class Capture(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            out = self.net(x)
            captured.append(1.0 - torch.exp(out[:, :1].float()))
            return out

    probe = copy.copy(lm)
    probe.net = Capture().eval()
    probe.spec = {**lm.spec, "decision": "region"}
    data01 = core.window01(canon_hu, core._spec_window(lm.spec))
    from napari_medai.runtime.device import resolve_device
    # the product's slice loop; p is read off the canvas and mapped back like the class scores are
    labels = core._predict_slices(probe, data01, spacing[1:], resolve_device("cpu"), (8,), lambda *a: None,
                                  lambda: False)
    fg = torch.cat(captured)[:, 0].numpy()
    h, w = data01.shape[1:]
    rh, rw, _, _, top, left = core.physical_canvas(h, w, spacing[1:], float(lm.spec["pixel_mm"]),
                                                   lm.spec["size"], int(lm.spec.get("multiple", 16)))
    fg = torch.nn.functional.interpolate(torch.from_numpy(fg[:, None, top:top + rh, left:left + rw]),
                                         size=(h, w), mode="bilinear", align_corners=False)[:, 0].numpy()
    return fg, labels


def main():
    """Command line: --other (a model folder whose organ network is the second one), --out."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--other", default=str(HERE / "runs" / "cand18o"))
    ap.add_argument("--out", default=str(HERE / "results" / "organ_variants_v17.json"))
    a = ap.parse_args()
    shipped = core.load_model(None, "cpu")
    other = copy.deepcopy(shipped.net)
    other.organ = core.load_model(a.other, "cpu").net.organ
    variants = {"as shipped": variant_net([shipped.net]),
                "flip": variant_net([shipped.net], flip=True),
                "scales 2.5/3.0/3.5 mm": variant_net([shipped.net], scales=SCALES),
                "two organ networks": variant_net([shipped.net, other])}
    original_load = core.load_model
    report = {"other_organ": str(a.other), "cases": {}}
    for case, (image, label) in CASES.items():
        ct, gt = load_image(CT / image), load_image(CT / label).data > 0
        affine, spacing = ct.geometry.affine_ras(), ct.geometry.spacing
        rows = {}
        for name, net in variants.items():
            wrapped = copy.copy(shipped)
            wrapped.net = net
            core.load_model = lambda model=None, device="cpu", _w=wrapped: _w  # the product path, this network
            try:
                r = core.segment(ct.data, spacing=spacing, affine=affine, device="cpu")
            finally:
                core.load_model = original_load
            rows[name] = {"liver_dice": round(float(dice(r.labels > 0, gt)), 4),
                          "tumour_ml": round(float(r.volumes_ml.get("tumour", 0.0)), 1), "seconds": round(r.seconds, 1)}
            if name == "as shipped":
                perm, flips = canonical_orientation(affine, 3)
                canon = to_canonical(ct.data.astype(np.float32), perm, flips)
                sp = tuple(spacing[p] for p in perm)
                fg, _ = organ_probability(shipped.net, canon, sp, shipped)
                rows[name]["largest_missed_piece"] = missed_piece(to_canonical(r.labels > 0, perm, flips),
                                                                  to_canonical(gt, perm, flips), fg, sp)
            print(case, name, rows[name], flush=True)
        report["cases"][case] = rows
    Path(a.out).write_text(json.dumps(report, indent=1) + "\n")
    print("wrote", a.out)


if __name__ == "__main__":
    main()
