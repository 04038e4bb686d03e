"""Multi-source embedder training (issue #20): label-aware supervised contrastive loss, coarse relevance,
leave-one-out ranking metrics, strong augmentation, checkpoint / resume."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_medai.retrieval.evaluate import group_relevance, relevance_metrics

GROUPS = {"glioma": 1, "meningioma": 1, "pituitary": 1, "tumour-untyped": 1, "notumor": 0}
UNTYPED = {"tumour-untyped": 1}


def test_group_relevance_untyped_tumour_matches_every_tumour_class():
    q = ["tumour-untyped", "meningioma", "notumor"]
    lib = ["glioma", "meningioma", "tumour-untyped", "notumor", "pituitary"]
    rel = group_relevance(q, lib, GROUPS, UNTYPED)
    assert rel.tolist() == [
        [True, True, True, False, True],     # untyped: every tumour class and untyped
        [False, True, True, False, False],   # meningioma: itself and untyped
        [False, False, False, True, False],  # notumor: only notumor
    ]


def test_relevance_metrics_leave_one_out_hand_worked():
    # library on a line: 0.0 (A), 1.0 (B), 2.0 (A), 3.0 (B); query at 0.0 excluding library item 0
    lib = np.array([[0.0], [1.0], [2.0], [3.0]], np.float32)
    q = np.array([[0.0]], np.float32)
    rel = np.array([[True, False, True, False]])
    m = relevance_metrics(q, lib, rel, k=2, exclude=np.array([0]), query_labels=["A"])
    # ranking without item 0: B, A, B -> the one relevant item at rank 2: AP 1/2, P@2 1/2, chance 1/3
    assert m["overall"]["mAP"] == pytest.approx(0.5)
    assert m["overall"]["P@2"] == pytest.approx(0.5)
    assert m["overall"]["chance_mAP"] == pytest.approx(1 / 3)
    m2 = relevance_metrics(q, lib, rel, k=2)  # without leave-one-out the query finds itself first
    assert m2["overall"]["mAP"] == pytest.approx((1 + 2 / 3) / 2)


def test_supcon_with_coarse_groups_hand_worked():
    torch = pytest.importorskip("torch")
    from napari_medai.retrieval.train import supcon_loss

    z = torch.eye(4)  # orthogonal descriptors: every similarity 0
    y = torch.tensor([0, -1, -1, 3])  # typed tumour, two untyped tumours, no tumour
    coarse = torch.tensor([1, 1, 1, 0])
    # untyped anchors: the other untyped is the positive; the typed tumour is left out of the denominator,
    # so each untyped anchor has 2 candidates (-log 1/2); anchors 0 and 3 have no positive
    assert float(supcon_loss(z, y, coarse=coarse)) == pytest.approx(math.log(2), abs=1e-6)
    # without coarse groups, -1 is just another label: 3 candidates
    assert float(supcon_loss(z, y)) == pytest.approx(math.log(3), abs=1e-6)


def test_strong_augmentation_range_and_determinism():
    torch = pytest.importorskip("torch")
    from napari_medai.augment import mri_strong

    x = torch.rand(16, 1, 32, 32)
    a = mri_strong()(x.clone(), torch.Generator().manual_seed(3))
    b = mri_strong()(x.clone(), torch.Generator().manual_seed(3))
    assert a.shape == x.shape and float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    assert torch.equal(a, b)
    assert float((a - x).abs().mean()) > 0.05


def _toy(n_per=8, size=32):
    from napari_medai.retrieval.preprocess import prepare

    yy, xx = np.mgrid[:48, :48]
    imgs, y, yc = [], [], []
    for k, (typ, coarse) in enumerate([(0, 1), (-1, 1), (1, 0)]):  # typed tumour, untyped tumour, no tumour
        for s in range(n_per):
            a = np.zeros((48, 48), np.uint8)
            c = 24 + s - n_per // 2
            if k == 0:
                a[(yy - c) ** 2 + (xx - c) ** 2 < 100] = 200
            elif k == 1:
                a[c - 10 : c + 10, c - 10 : c + 10] = 200
            else:
                a[c - 3 : c + 3, 4:-4] = 200
            imgs.append(prepare(a, size))
            y.append(typ)
            yc.append(coarse)
    return np.stack(imgs), np.asarray(y), np.asarray(yc)


def test_multisource_training_checkpoint_resume_is_exact(tmp_path):
    torch = pytest.importorskip("torch")
    from napari_medai.errors import CancelledError
    from napari_medai.retrieval.train import train_embedder

    x, y, yc = _toy()
    kw = dict(n_classes=2, epochs=2, batch_size=8, arch={"widths": [4, 8, 8, 8, 8], "embed_dim": 8}, device="cpu",
              mixed_precision=False, augmentation="strong", y_coarse=yc, sample_weight=np.where(y < 0, 3.0, 1.0))
    with pytest.raises(ValueError, match="y_coarse"):
        train_embedder(x, y, **{**kw, "y_coarse": None})
    full, _, hist = train_embedder(x, y, **kw)
    assert len(hist) == 2 and all(np.isfinite(h["loss"]) for h in hist)
    ckpt = tmp_path / "run.ckpt"
    calls = iter(range(1000))
    with pytest.raises(CancelledError):  # stopped in the second epoch, after the first checkpoint
        train_embedder(x, y, **kw, checkpoint=ckpt, should_stop=lambda: next(calls) >= 4)
    resumed, _, hist2 = train_embedder(x, y, **kw, checkpoint=ckpt)
    assert [h["loss"] for h in hist2] == pytest.approx([h["loss"] for h in hist], rel=1e-5)
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-5), k
    with pytest.raises(ValueError, match="another training"):
        train_embedder(x, y, **{**kw, "epochs": 3}, checkpoint=ckpt)
