import json

import pytest
import torch

from napari_medai.errors import MedaiError
from napari_medai.runtime import registry


def _make_model(folder, name="tiny-test", task="segmentation", tamper=False):
    from safetensors.torch import save_file

    model_dir = folder / name
    model_dir.mkdir(parents=True)
    weights = {"layer.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3)}
    save_file(weights, str(model_dir / "weights.safetensors"))
    digest = registry.sha256_of(model_dir / "weights.safetensors")
    if tamper:
        raw = bytearray((model_dir / "weights.safetensors").read_bytes())
        raw[-1] ^= 0xFF
        (model_dir / "weights.safetensors").write_bytes(bytes(raw))
    card = {"name": name, "task": task, "architecture": "Linear", "version": "1", "weights": "weights.safetensors",
            "sha256": digest, "licence": "BSD-3-Clause", "intended_use": "Research use only - not a medical device."}
    (model_dir / "card.json").write_text(json.dumps(card))
    return model_dir


def test_user_model_folder_loads_verified_weights(tmp_path, monkeypatch):
    _make_model(tmp_path)
    monkeypatch.setenv("NAPARI_MEDAI_MODELS", str(tmp_path))
    card = registry.get_card("tiny-test")
    assert card.task == "segmentation"
    state = registry.load_weights(card)
    assert state["layer.weight"][1, 2].item() == 5.0
    assert registry.resolve_model(str(tmp_path / "tiny-test"), task="segmentation").name == "tiny-test"


def test_tampered_weights_are_refused(tmp_path):
    folder = _make_model(tmp_path, tamper=True)
    card = registry.ModelCard.from_file(folder / "card.json")
    with pytest.raises(MedaiError, match="SHA-256"):
        registry.load_weights(card)


def test_pickle_with_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    folder = tmp_path / "evil"
    folder.mkdir()
    torch.save({"x": Evil()}, folder / "model.pt")
    card = registry.ModelCard(name="evil", task="segmentation", architecture="?", weights="model.pt",
                              sha256=registry.sha256_of(folder / "model.pt"), folder=folder)
    with pytest.raises(MedaiError, match="refused"):
        registry.load_weights(card)


def test_wrong_task_and_unknown_name(tmp_path, monkeypatch):
    _make_model(tmp_path)
    monkeypatch.setenv("NAPARI_MEDAI_MODELS", str(tmp_path))
    with pytest.raises(MedaiError, match="is for segmentation"):
        registry.resolve_model("tiny-test", task="steatosis")
    with pytest.raises(MedaiError, match="unknown model"):
        registry.get_card("no-such-model")


def test_shipped_models_have_cards_hashes_and_fit_the_size_budget():
    cards = registry.list_models()
    total = 0
    for card in cards:
        path = registry.verify_weights(card)  # SHA-256 matches
        size = path.stat().st_size
        assert size <= 16 * 2**20, f"{card.name} weights exceed 16 MB"
        total += size
        assert "research use only" in card.intended_use.lower()
        assert (card.folder / "MODEL_CARD.md").is_file()
    assert total <= 40 * 2**20
