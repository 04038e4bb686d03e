"""The model registry: model cards, weights location, SHA-256 verification and safe loading.

Weights ship inside the package (``napari_medai/models/<name>/``) or come from a folder the user
gives (``NAPARI_MEDAI_MODELS`` or :func:`register_model_dir`). Nothing is ever downloaded.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..errors import MedaiError

PACKAGE_MODELS = Path(__file__).resolve().parent.parent / "models"
_extra_dirs: list[Path] = []


@dataclass
class ModelCard:
    """What a model is, what it was trained on, how well it does, and where its weights are."""

    name: str
    task: str
    architecture: str
    version: str = "0"
    weights: Optional[str] = None  # file name relative to the card's folder, or absolute
    sha256: Optional[str] = None
    arch_params: dict = field(default_factory=dict)
    input_spec: dict = field(default_factory=dict)
    training_data: Any = None
    metrics: dict = field(default_factory=dict)
    licence: Optional[str] = None
    intended_use: str = "Research use only - not a medical device."
    notes: Optional[str] = None
    folder: Optional[Path] = None  # where card.json was found

    @property
    def weights_path(self) -> Optional[Path]:
        """Absolute path of the weights file, or None for a card without weights."""
        if not self.weights:
            return None
        path = Path(self.weights)
        return path if path.is_absolute() or self.folder is None else self.folder / path

    def to_dict(self) -> dict:
        """JSON-ready card (``folder`` as a string)."""
        data = asdict(self)
        data["folder"] = str(self.folder) if self.folder else None
        return data

    @classmethod
    def from_file(cls, card_path: Path) -> ModelCard:
        """Read a ``card.json``; refuses an unreadable or incomplete card with one line."""
        try:
            data = json.loads(Path(card_path).read_text())
        except (OSError, ValueError) as exc:
            raise MedaiError(f"cannot read model card {card_path}: {exc}; check the file is valid JSON") from None
        known = set(cls.__dataclass_fields__) - {"folder"}
        missing = {"name", "task", "architecture"} - set(data)
        if missing:
            raise MedaiError(f"model card {card_path} lacks {sorted(missing)}; add them to card.json")
        card = cls(**{k: v for k, v in data.items() if k in known})
        card.folder = Path(card_path).parent
        return card


def register_model_dir(path: str | os.PathLike) -> None:
    """Add a folder whose sub-folders hold ``card.json`` files (a user's model folder)."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise MedaiError(f"model folder {folder} does not exist; give an existing folder")
    if folder not in _extra_dirs:
        _extra_dirs.append(folder)


def model_dirs() -> list[Path]:
    """Folders searched for model cards: the package's, registered ones and ``$NAPARI_MEDAI_MODELS``."""
    dirs = [PACKAGE_MODELS, *_extra_dirs]
    env = os.environ.get("NAPARI_MEDAI_MODELS")
    if env:
        dirs.extend(Path(p).expanduser() for p in env.split(os.pathsep) if p)
    return dirs


def list_models(task: Optional[str] = None) -> list[ModelCard]:
    """All registered model cards, optionally only those for one task."""
    cards: dict[str, ModelCard] = {}
    for folder in model_dirs():
        if not folder.is_dir():
            continue
        for card_path in sorted(folder.glob("*/card.json")):
            card = ModelCard.from_file(card_path)
            cards.setdefault(card.name, card)  # the package's own cards win over user folders
    found = sorted(cards.values(), key=lambda c: c.name)
    return [c for c in found if task is None or c.task == task]


def get_card(name: str) -> ModelCard:
    """The registered card called ``name``; refuses an unknown name, listing the known ones."""
    for card in list_models():
        if card.name == name:
            return card
    names = ", ".join(c.name for c in list_models()) or "none"
    raise MedaiError(f"unknown model '{name}'; registered models: {names} (see `napari-medai models`)")


def resolve_model(name_or_path: str | os.PathLike | ModelCard | None, *, task: str,
                  default: Optional[str] = None) -> ModelCard:
    """A model by registered name, or from a path to a folder holding ``card.json``."""
    if isinstance(name_or_path, ModelCard):
        return name_or_path
    if name_or_path is None or str(name_or_path) == "":
        if default is None:
            raise MedaiError(f"no model given for {task}; pass --model NAME or a path")
        name_or_path = default
    path = Path(str(name_or_path)).expanduser()
    if path.is_dir() and (path / "card.json").is_file():
        card = ModelCard.from_file(path / "card.json")
    elif path.is_file() and path.name == "card.json":
        card = ModelCard.from_file(path)
    elif path.exists() and not path.is_dir():
        raise MedaiError(f"{path} is a file without a model card; give a folder holding card.json and the weights")
    else:
        card = get_card(str(name_or_path))
    if card.task != task:
        raise MedaiError(f"model '{card.name}' is for {card.task}, not {task}; pick a {task} model")
    return card


def sha256_of(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_weights(card: ModelCard) -> Path:
    """Check the weights file exists and matches the card's SHA-256; return its path."""
    path = card.weights_path
    if path is None or not path.is_file():
        raise MedaiError(f"weights for model '{card.name}' not found at {path}; reinstall or give --model PATH")
    if not card.sha256:
        raise MedaiError(f"model card '{card.name}' has no sha256; add the weights' SHA-256 to card.json")
    actual = sha256_of(path)
    if actual != card.sha256:
        raise MedaiError(
            f"weights of model '{card.name}' fail the SHA-256 check (expected {card.sha256[:12]}…, got "
            f"{actual[:12]}…); the file is corrupt or tampered with: replace it"
        )
    return path


def load_weights(card: ModelCard) -> dict:
    """Verified, safe loading: safetensors, or ``torch.load(weights_only=True)`` for .pt files."""
    path = verify_weights(card)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    if path.suffix in (".pt", ".pth", ".ckpt"):
        import pickle

        import torch

        try:
            return torch.load(str(path), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            message = f"{path.name} holds more than plain weights and is refused for safety: {exc}"
            raise MedaiError(message.splitlines()[0]) from None
    raise MedaiError(f"unsupported weights format '{path.suffix}'; use .safetensors or a .pt state dict")
