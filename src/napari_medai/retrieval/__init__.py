"""Nearest-case retrieval: a library of labelled cases searched by image similarity.

Research use only - not a medical device. Heavy modules (torch, faiss) load lazily.
"""

from __future__ import annotations

from .. import _lazy

_LAZY = {
    "CaseLibrary": "napari_medai.retrieval.library",
    "CaseEntry": "napari_medai.retrieval.library",
    "Hit": "napari_medai.retrieval.library",
    "QueryResult": "napari_medai.retrieval.library",
    "vote": "napari_medai.retrieval.library",
    "get_embedder": "napari_medai.retrieval.embedder",
    "PixelEmbedder": "napari_medai.retrieval.embedder",
    "CNNEmbedder": "napari_medai.retrieval.embedder",
    "retrieval_metrics": "napari_medai.retrieval.metrics",
    "average_precision": "napari_medai.retrieval.metrics",
    "evaluate_folds": "napari_medai.retrieval.evaluate",
}

__all__ = list(_LAZY)


_modules: dict[str, list[str]] = {}
for _name, _module in _LAZY.items():
    _modules.setdefault(_module.removeprefix(__name__ + "."), []).append(_name)
__getattr__, __dir__, _ = _lazy.attach(__name__, _modules)
