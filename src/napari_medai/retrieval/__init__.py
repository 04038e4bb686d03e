"""Nearest-case retrieval: a library of labelled cases searched by image similarity.

Research use only - not a medical device. Heavy modules (torch, faiss) load lazily.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "CaseLibrary": "napari_medai.retrieval.library",
    "CaseEntry": "napari_medai.retrieval.library",
    "Hit": "napari_medai.retrieval.library",
    "vote": "napari_medai.retrieval.library",
    "get_embedder": "napari_medai.retrieval.embedder",
    "PixelEmbedder": "napari_medai.retrieval.embedder",
    "CNNEmbedder": "napari_medai.retrieval.embedder",
    "retrieval_metrics": "napari_medai.retrieval.metrics",
    "average_precision": "napari_medai.retrieval.metrics",
    "evaluate_folds": "napari_medai.retrieval.evaluate",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'napari_medai.retrieval' has no attribute {name!r}")
