"""Case embedders: image -> fixed-length descriptor, compared by Euclidean distance.

* :class:`CNNEmbedder` - the shipped multi-scale residual CNN (``embedder-brain-mri``); torch is
  imported when it is first used.
* :class:`PixelEmbedder` - raw pixels (down-sampled, L2-normalised): a baseline, and a
  torch-free embedder for tests.

Each embedder has ``name``, ``sha256`` (identity of the weights; a library remembers it and
refuses another embedder), ``dim`` and ``embed(images, progress=None, should_stop=None)``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .preprocess import prepare

DEFAULT_EMBEDDER = "embedder-brain-mri"


class Embedder:
    """Base class: turns images into descriptors; subclasses implement :meth:`embed_prepared`."""

    name: str = "embedder"
    sha256: str = ""
    dim: int = 0
    size: int = 128
    batch_size: int = 64

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """One image as the embedder's input: a (size, size) float32 array (see ``preprocess.prepare``)."""
        return prepare(image, self.size)

    def embed_prepared(self, batch: np.ndarray) -> np.ndarray:
        """Descriptors (n, dim) float32 of a prepared batch (n, size, size) float32."""
        raise NotImplementedError

    def embed(
        self,
        images: Sequence[np.ndarray],
        progress: Callable[[int, int], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> np.ndarray:
        """Descriptors of a list of 2D images, (n, dim) float32."""
        from napari_medai.runtime.progress import check_stop

        n = len(images)
        out = np.empty((n, self.dim), np.float32)
        for s in range(0, n, self.batch_size):
            check_stop(should_stop)
            batch = np.stack([self.prepare(im) for im in images[s : s + self.batch_size]])
            out[s : s + len(batch)] = self.embed_prepared(batch)
            if progress is not None:
                progress(min(n, s + len(batch)), n)
        return out

    def describe(self) -> dict:
        """Name, weights SHA-256 and descriptor length: what a case library records to refuse another embedder."""
        return {"name": self.name, "sha256": self.sha256, "dim": self.dim}


def descriptor_dim(arch_params: dict) -> int:
    """Length of the CNN descriptor: ``embed_dim`` per member network (see ``_net``)."""
    return int(arch_params.get("embed_dim", 128)) * int(arch_params.get("members", 1))


class PixelEmbedder(Embedder):
    """Raw-pixel baseline: prepared image down-sampled to size x size, zero-mean, L2-normalised."""

    def __init__(self, size: int = 32):
        self.size = int(size)
        self.dim = self.size * self.size
        self.name = f"raw-pixels-{self.size}"
        self.sha256 = hashlib.sha256(f"napari_medai.PixelEmbedder:v1:{self.size}".encode()).hexdigest()
        self.batch_size = 256

    def embed_prepared(self, batch: np.ndarray) -> np.ndarray:
        """Flattened pixels of each prepared image, centred and scaled to unit length."""
        v = batch.reshape(len(batch), -1).astype(np.float32)
        v = v - v.mean(1, keepdims=True)
        v /= np.linalg.norm(v, axis=1, keepdims=True) + 1e-8
        return v


class CNNEmbedder(Embedder):
    """The multi-scale residual CNN described by a registry model card (task ``embedding``)."""

    def __init__(self, card: Any, device: str = "auto"):
        self.card = card
        self.name = card.name
        self.sha256 = card.sha256
        ap = dict(card.arch_params)
        self.dim = descriptor_dim(ap)
        self.size = int(card.input_spec.get("size", 128))
        self.classes = list(card.input_spec.get("classes", []))
        self._device = device
        self._net = None
        self._torch_device = None
        self.batch_size = 32

    def _load(self):
        if self._net is not None:
            return self._net
        import torch

        from napari_medai.runtime.device import resolve_device
        from napari_medai.runtime.registry import load_weights

        from ._net import build_net

        choice = resolve_device(self._device)
        self.device_choice = choice
        net = build_net(self.card.arch_params)
        state = load_weights(self.card)
        state = {k: (v if isinstance(v, torch.Tensor) else torch.as_tensor(v)) for k, v in state.items()}
        net.load_state_dict(state)
        net.eval().to(choice.torch)
        self._torch_device = choice.torch
        self._net = net
        return net

    def embed_prepared(self, batch: np.ndarray) -> np.ndarray:
        """The network's descriptors (n, dim) for a prepared batch; loads the weights on first use."""
        import torch

        net = self._load()
        with torch.inference_mode():
            x = torch.from_numpy(np.array(batch, dtype=np.float32, order="C"))[:, None].to(self._torch_device)
            z, _ = net(x)
        return z.float().cpu().numpy()

    def classify_prepared(self, batch: np.ndarray) -> np.ndarray:
        """Class probabilities from the training head (diagnostic only)."""
        import torch

        net = self._load()
        with torch.inference_mode():
            x = torch.from_numpy(np.array(batch, dtype=np.float32, order="C"))[:, None].to(self._torch_device)
            _, logits = net(x)
        return logits.softmax(1).float().cpu().numpy()


def get_embedder(spec: Any = None, device: str = "auto") -> Embedder:
    """Resolve an embedder: an Embedder instance, None (the shipped default), ``"raw-pixels[-N]"``,
    a registered model name, or a folder with card.json + weights."""
    from napari_medai.errors import MedaiError

    if isinstance(spec, Embedder):
        return spec
    if spec is None:
        spec = DEFAULT_EMBEDDER
    if isinstance(spec, str) and spec.startswith("raw-pixels"):
        tail = spec[len("raw-pixels") :].lstrip("-")
        return PixelEmbedder(int(tail) if tail else 32)
    from napari_medai.runtime import registry

    try:
        if hasattr(registry, "resolve_model"):
            card = registry.resolve_model(str(spec), task="embedding")
        else:  # pragma: no cover - older foundation
            card = registry.get_card(str(spec))
    except MedaiError:
        raise
    except Exception as e:  # noqa: BLE001
        raise MedaiError(f"cannot load embedder {spec!r} ({e}); "
                         "use a registered model name or a model folder") from e
    return CNNEmbedder(card, device=device)
