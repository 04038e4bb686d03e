"""A steatosis model = an optional texture model on 28x28 liver crops + an optional linear model on the
hepatorenal index (with or without GLCM features), fused as a product of experts.

Serialised as a ``spec`` dict (JSON, in the model card's ``arch_params``) plus a flat dict of tensors
(safetensors) or, for purely classical models, one JSON file. torch is imported only for deep models.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import MedaiError
from .features import LinearClassifier, classical_features
from .preprocess import model_input, n_channels


class TextureNet:
    """A torch network on crops (imports torch)."""

    def __init__(self, arch: str, arch_params: dict, preprocess: str, state: Optional[dict] = None, device=None):
        import torch

        from .models import build

        self.arch, self.arch_params, self.preprocess = arch, dict(arch_params), preprocess
        self.net = build(arch, in_channels=n_channels(preprocess), **dict(arch_params))
        if state is not None:
            self.net.load_state_dict(state)
        self.device = device if device is not None else torch.device("cpu")
        self.net.to(self.device).eval()

    def predict_proba(self, crops: np.ndarray, batch: int = 256) -> np.ndarray:
        """Grade probabilities (n, 4) for crops (n, 28, 28), run in batches of ``batch`` without gradients."""
        import torch

        x = model_input(crops, self.preprocess)
        out = []
        with torch.inference_mode():
            for i in range(0, len(x), batch):
                t = torch.from_numpy(x[i:i + batch]).to(self.device)
                out.append(torch.softmax(self.net(t).float(), 1).cpu().numpy().astype(np.float64))
        return np.concatenate(out) if out else np.zeros((0, 4))


class TextureLinear:
    """A classical texture model: a linear classifier on the crops' features named by ``use`` (no torch)."""

    def __init__(self, clf: LinearClassifier, use: str = "glcm"):
        self.clf, self.use = clf, use

    def predict_proba(self, crops: np.ndarray) -> np.ndarray:
        """Grade probabilities (n, 4) for crops (n, 28, 28) from their texture features."""
        return self.clf.predict_proba(classical_features(crops, None, self.use))


class Grader:
    """Grades liver crops with a texture model, a hepatorenal-index model, or both fused.

    Args:
        texture: a :class:`TextureNet`, a :class:`TextureLinear` or None.
        index: a ``LinearClassifier`` on the index features named by ``index_use``, or None.
        index_use: which classical features the index model takes (``index``, ``index+glcm``...).
        prior: the grade prior divided out of the product of experts (default uniform).
        name: the model's name, for messages.
        combine: ``poe`` (texture x index product of experts) or ``replace`` (the index model alone
            when an index is given).
    """

    def __init__(self, texture=None, index=None, index_use: str = "index", prior=None, name: str = "?",
                 combine: str = "poe"):
        self.texture, self.index, self.index_use = texture, index, index_use
        self.combine = combine  # "poe": texture x index product of experts; "replace": the index model alone
        self.prior = np.asarray(prior if prior is not None else [0.25] * 4, np.float64)
        self.name = name

    def predict(self, crops: np.ndarray, hri: Optional[float]) -> tuple:
        """Per-crop probabilities (n, 4) and notes: texture alone, or fused with the index model."""
        notes = []
        p_tex = self.texture.predict_proba(crops) if self.texture is not None else None
        p_idx = None
        if hri is not None and np.isfinite(hri) and self.index is not None:
            h = np.full(len(crops), float(hri))
            p_idx = self.index.predict_proba(classical_features(crops, h, self.index_use))
        if p_tex is None and p_idx is None:  # pragma: no cover - every shipped model has a texture part
            raise MedaiError(f"model '{self.name}' needs the hepatorenal index; "
                             "draw a kidney-cortex ROI (--kidney-roi)")
        if p_idx is None:
            if self.index is not None and self.texture is not None:
                notes.append("no kidney ROI: graded on liver texture alone; "
                             "draw a kidney-cortex ROI for the hepatorenal index")
            return p_tex, notes
        if p_tex is None or self.combine == "replace":
            return p_idx, notes
        logp = np.log(np.clip(p_tex, 1e-9, 1)) + np.log(np.clip(p_idx, 1e-9, 1)) - np.log(self.prior)
        logp -= logp.max(axis=1, keepdims=True)
        p = np.exp(logp)
        return p / p.sum(axis=1, keepdims=True), notes


def grader_from_parts(spec: dict, tensors: Optional[dict], device=None, name="?") -> Grader:
    """Rebuild a :class:`Grader` from its serialised ``spec`` and, for a deep texture part, its tensors.

    Args:
        spec: ``texture`` (kind ``cnn``/``se-irv2``/``linear``), ``index``, ``prior`` and ``combine``.
        tensors: flat weights; the texture network's keys carry the prefix ``texture.``.
        device: torch device for a deep texture part (default: the CPU).
        name: the model's name, for error messages.

    Raises:
        MedaiError: the texture kind is unknown.
    """
    texture = None
    tspec = spec.get("texture")
    if tspec:
        if tspec["kind"] in ("cnn", "se-irv2"):
            state = {k[len("texture."):]: v for k, v in (tensors or {}).items() if k.startswith("texture.")}
            texture = TextureNet(tspec["kind"], tspec.get("arch_params", {}),
                                 tspec.get("preprocess", "raw+clahe"), state, device)
        elif tspec["kind"] == "linear":
            texture = TextureLinear(LinearClassifier.from_dict(tspec["classifier"]), tspec.get("use", "glcm"))
        else:
            raise MedaiError(f"unknown texture model kind {tspec['kind']!r} in model '{name}'")
    index, use = None, "index"
    ispec = spec.get("index")
    if ispec:
        index, use = LinearClassifier.from_dict(ispec["classifier"]), ispec.get("use", "index")
    return Grader(texture, index, use, spec.get("prior"), name=name, combine=spec.get("combine", "poe"))


def load_grader(card, device=None) -> Grader:
    """A grader from a model card: safetensors weights (deep texture) or a JSON file (classical)."""
    from ..runtime.registry import load_weights, verify_weights

    path = verify_weights(card)
    if path.suffix == ".json":
        spec = json.loads(Path(path).read_text())
        return grader_from_parts(spec, None, device, name=card.name)
    tensors = load_weights(card)
    return grader_from_parts(card.arch_params, tensors, device, name=card.name)
