"""Merge exported embedders (same architecture, different seeds) into one ensemble embedder.

  python training/retrieval/merge_members.py runs/final_e60 runs/final_e60_seed1 --out runs/final_e60_x2

The result is one model.safetensors + card.json whose arch params carry ``members``: the network
runs every member and concatenates their L2-normalised descriptors (napari_medai.retrieval._net).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from napari_medai.retrieval.train import merge_embedders

HERE = Path(__file__).resolve().parent

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    print(merge_embedders([HERE / r for r in a.runs], HERE / a.out))
