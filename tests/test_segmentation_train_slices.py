"""`train segment` on a LiTS-style slice folder (the shipped cascade's trainer): checkpoints, resume, card."""

import csv
import json

import numpy as np
import pytest
from PIL import Image

from napari_medai.cli.main import main
from napari_medai.errors import CancelledError


def _slice_folder(root, n_volumes=4, per_volume=3, side=128):
    """A tiny LiTS layout: RGB JPEGs (green = window), PNG masks 0/1/2, index.csv."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:side, :side]
    rows = []
    for v in range(n_volumes):
        for s in range(per_volume):
            r = 20 + 8 * s
            liver = (yy - 60) ** 2 + (xx - 50) ** 2 < r * r
            tumour = liver & ((yy - 60) ** 2 + (xx - 50) ** 2 < 16)
            g = np.clip(40 + 120 * liver - 60 * tumour + rng.normal(0, 5, (side, side)), 0, 255).astype(np.uint8)
            mask = liver.astype(np.uint8) + tumour.astype(np.uint8)
            Image.fromarray(np.stack([g, g, g], -1)).save(root / f"images/v{v}_{s}.jpg")
            Image.fromarray(mask).save(root / f"masks/v{v}_{s}.png")
            rows.append({"volume": v, "slice": s, "image": f"images/v{v}_{s}.jpg", "mask": f"masks/v{v}_{s}.png"})
    with open(root / "index.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["volume", "slice", "image", "mask"])
        writer.writeheader()
        writer.writerows(rows)
    return root


def test_resumed_run_equals_uninterrupted(tmp_path):
    from safetensors.torch import load_file

    from napari_medai.segmentation.train import train_slice_network

    data = _slice_folder(tmp_path / "lits")
    opts = dict(recipe="organ", iterations=4, batch_size=2, zoom=(0.6, 1.6), crop_prob=0.5, checkpoint_every=1)
    train_slice_network(data, tmp_path / "a", **opts)
    calls = [0]

    def stop_after_two():
        calls[0] += 1
        return calls[0] > 2

    with pytest.raises(CancelledError):
        train_slice_network(data, tmp_path / "b", should_stop=stop_after_two, **opts)
    assert (
        json.loads((tmp_path / "b" / "log.json").read_text() if (tmp_path / "b" / "log.json").exists() else "null")
        is None
    )
    assert (tmp_path / "b" / "checkpoint_last.pt").is_file()
    train_slice_network(data, tmp_path / "b", resume=True, **opts)
    a, b = (
        load_file(str(tmp_path / "a" / "weights.safetensors")),
        load_file(str(tmp_path / "b" / "weights.safetensors")),
    )
    assert a.keys() == b.keys() and all(np.allclose(a[k].numpy(), b[k].numpy(), atol=1e-6) for k in a)
    result = json.loads((tmp_path / "b" / "result.json").read_text())
    assert result["iterations"] == 4 and result["config"]["zoom"] == [0.6, 1.6] and result["config"]["crop_prob"] == 0.5


def test_cli_cascade_writes_a_usable_model_and_fold_dice(tmp_path, capsys):
    from napari_medai import segment

    data = _slice_folder(tmp_path / "lits")
    out = tmp_path / "run"
    argv = [
        "train",
        "segment",
        "--data",
        str(data),
        "--recipe",
        "cascade",
        "--organ-iterations",
        "2",
        "--tumour-iterations",
        "2",
        "--stage-iterations",
        "2",
        "--batch-size",
        "2",
        "--fold",
        "1",
        "--zoom",
        "0.6,1.6",
        "--crop-prob",
        "0.3",
        "--pixel-mm",
        "2.9",
        "-o",
        str(out),
        "--json",
    ]
    assert main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert 0.0 <= doc["organ"]["liver_dice"] <= 1.0 and len(doc["organ"]["val_volumes"]) == 1
    card = json.loads((out / "model" / "card.json").read_text())
    assert card["input_spec"]["pixel_mm"] == 2.9 and card["arch_params"]["arch"] == "cascade2d"
    assert card["training"]["organ"]["zoom"] == [0.6, 1.6] and "crops in an air canvas" in card["training_data"]
    stage = card["input_spec"]["tumour_stage"]
    assert stage["pixel_mm"] == 1.0 and stage["arch_params"]["in_channels"] == 3
    assert card["training"]["stage"]["iterations"] == 2 and card["training"]["stage"]["fold"] == 1
    assert doc["stage"]["val_volumes"] == doc["organ"]["val_volumes"]
    ct = np.full((3, 40, 50), -1000.0, np.float32)
    ct[:, 5:35, 5:45] = -100.0  # fat
    ct[:, 10:30, 10:40] = 50.0  # soft tissue: a CT in HU (segment() refuses pictures)
    r = segment(ct, spacing=(3.0, 1.5, 1.5), model=str(out / "model"), device="cpu")
    assert r.labels.shape == ct.shape
    # a finished run resumes to the same result without training again
    assert main(argv + ["--resume"]) == 0
    assert json.loads(capsys.readouterr().out)["organ"]["iterations"] == 2


def test_cli_refuses_bad_slice_options(tmp_path, capsys):
    data = _slice_folder(tmp_path / "lits", n_volumes=2, per_volume=1)
    base = [
        "train",
        "segment",
        "--data",
        str(data),
        "-o",
        str(tmp_path / "o"),
        "--recipe",
        "organ",
        "--iterations",
        "1",
    ]
    assert main(base + ["--zoom", "1.6"]) == 2
    assert "--zoom" in capsys.readouterr().err
    assert main(base + ["--fold", "7"]) == 2
    assert "--fold" in capsys.readouterr().err
    assert main(base + ["--resume", str(tmp_path / "elsewhere" / "checkpoint_last.pt")]) == 2
    assert "OUTDIR" in capsys.readouterr().err
