"""Put an organ network trained by ``napari-medai train segment --recipe organ`` into a cascade model folder.

    PYTHONPATH=src python training/segmentation/replace_organ.py --run training/segmentation/runs/s8_organ_final \
        --model-dir training/segmentation/runs/cand18 [--version 1.8]

The folder's ``organ.*`` weights are replaced by the run's, its ``card.json`` gets the run's config under
``training.organ`` and the new SHA-256; the tumour network, the stage and every inference setting stay.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from safetensors.torch import load_file, save_file

from napari_medai.io.writers import atomic_output
from napari_medai.runtime.registry import sha256_of


def replace_organ(run, model_dir, version=None) -> dict:
    """Replace the organ network of ``model_dir`` by the one trained in ``run``; returns the new card."""
    run, model_dir = Path(run), Path(model_dir)
    weights = model_dir / "weights.safetensors"
    state = {k: v for k, v in load_file(str(weights)).items() if not k.startswith("organ.")}
    state.update({f"organ.{k}": v for k, v in load_file(str(run / "weights.safetensors")).items()})
    with atomic_output(weights, ".safetensors") as tmp:
        save_file(state, str(tmp))
    card = json.loads((model_dir / "card.json").read_text())
    result = json.loads((run / "result.json").read_text())
    card["training"]["organ"] = {**result["config"], "trained_by": "napari-medai train segment --recipe organ"}
    card["sha256"] = sha256_of(weights)
    if version:
        card["version"] = version
    (model_dir / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    return card


def main():
    """Command line: --run, --model-dir, --version."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True)
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--version", default=None)
    a = ap.parse_args()
    card = replace_organ(a.run, a.model_dir, a.version)
    print(a.model_dir, card["version"], card["sha256"])


if __name__ == "__main__":
    main()
