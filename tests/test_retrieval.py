"""Nearest-case retrieval: library round trip, incremental add/remove, embedder refusal, metrics, CLI,
real figshare queries, widget."""

from __future__ import annotations

import json
import math
import sqlite3

import numpy as np
import pytest
from PIL import Image

from napari_medai.errors import MedaiError
from napari_medai.retrieval.embedder import PixelEmbedder
from napari_medai.retrieval.library import CaseEntry, CaseLibrary, parse_roi, vote
from napari_medai.retrieval.metrics import (
    assign_folds,
    average_precision,
    consecutive_blocks,
    rank_metrics,
    retrieval_metrics,
    summarize_folds,
)

SIZE = 48


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """The CNN tests use tiny batches: one thread is faster, and far faster on a busy CPU."""
    try:
        import torch
    except ImportError:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def shape_image(kind: str, shift: int = 0, size: int = SIZE, value: int = 200) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    c = size // 2 + shift
    a = np.zeros((size, size), np.uint8)
    if kind == "disc":
        a[(yy - c) ** 2 + (xx - c) ** 2 < 12**2] = value
    elif kind == "square":
        a[c - 17 : c + 17, c - 17 : c + 17] = value
    elif kind == "bar":
        a[c - 3 : c + 3, 4:-4] = value
    else:
        raise ValueError(kind)
    return a


@pytest.fixture
def case_folder(tmp_path):
    root = tmp_path / "cases"
    for kind in ("disc", "square"):
        (root / kind).mkdir(parents=True)
        for i, shift in enumerate((-3, -1, 1, 3)):
            Image.fromarray(shape_image(kind, shift)).save(root / kind / f"{i}.png")
    return root


# ---------------------------------------------------------------- metrics
def test_average_precision_hand_worked():
    # relevant at ranks 1, 3, 6 -> AP = (1/1 + 2/3 + 3/6) / 3
    assert average_precision([1, 0, 1, 0, 0, 1]) == pytest.approx((1 + 2 / 3 + 0.5) / 3)
    assert average_precision([0, 0, 0]) == 0.0
    assert average_precision([1, 1, 0, 0]) == 1.0


def test_rank_metrics_hand_worked():
    lib = np.array(["a", "a", "b", "b", "b"])
    ranked = np.array([
        ["a", "b", "a", "b", "b"],  # query a: AP = (1 + 2/3)/2 = 0.8333, P@2 = 0.5, R@2 = 1/2
        ["b", "b", "a", "b", "a"],  # query b: AP = (1 + 1 + 3/4)/3 = 0.9167, P@2 = 1, R@2 = 2/3
    ])
    m = rank_metrics(["a", "b"], ranked, lib, k=2)
    assert m["per_class"]["a"]["mAP"] == pytest.approx(5 / 6)
    assert m["per_class"]["b"]["mAP"] == pytest.approx(11 / 12)
    assert m["per_class"]["a"]["P@2"] == pytest.approx(0.5)
    assert m["per_class"]["b"]["R@2"] == pytest.approx(2 / 3)
    assert m["overall"]["mAP"] == pytest.approx((5 / 6 + 11 / 12) / 2)
    # the same through distances: 1-D points
    q = np.array([[0.0], [10.0]])
    x = np.array([[0.1], [5.2], [4.9], [9.9], [10.3]])  # ranks for q=0: a b a ...
    m2 = retrieval_metrics(q, ["a", "b"], x, ["a", "a", "b", "b", "b"], k=2)
    assert m2["per_class"]["a"]["mAP"] == pytest.approx((1 + 2 / 3) / 2)  # a(0.1) b(4.9) a(5.2)
    s = summarize_folds([m, m2], k=2)
    assert len(s["overall"]["mAP"]["per_fold"]) == 2
    # one spread convention: sample SD (ddof=1): folds 0.9 and 0.8 give 0.0707 (population SD: 0.05)
    folds = [{"overall": {"mAP": v, "P@2": v, "R@2": v, "mAP_macro": v}, "per_class": {"a": {"mAP": v, "P@2": v,
              "R@2": v}}} for v in (0.9, 0.8)]
    s = summarize_folds(folds, k=2)
    assert s["overall"]["mAP"]["std"] == pytest.approx(0.1 / np.sqrt(2))
    assert s["per_class"]["a"]["P@2"]["std"] == pytest.approx(0.1 / np.sqrt(2))
    assert summarize_folds(folds[:1], k=2)["overall"]["mAP"]["std"] == 0.0


def test_consecutive_blocks_and_folds():
    ids = np.arange(1, 201)
    labels = np.where(ids <= 90, "x", "y")
    groups = consecutive_blocks(ids, labels, block=30)
    for g in np.unique(groups):  # a block never spans a class change and is consecutive
        m = groups == g
        assert len(set(labels[m])) == 1
        assert np.all(np.diff(ids[m]) == 1)
    folds = assign_folds(groups, labels, n_folds=3, seed=0)
    for g in np.unique(groups):
        assert len(set(folds[groups == g])) == 1
    assert set(folds) == {0, 1, 2}
    # the cut moves to the largest change within the window
    change = np.zeros(200)
    change[34] = 5.0  # between id 35 and id 36
    g2 = consecutive_blocks(ids[:90], labels[:90], block=30, change=change[:90], window=10)
    assert g2[34] != g2[35] and g2[33] == g2[34]


# ---------------------------------------------------------------- library
def test_build_save_load_query_round_trip(case_folder, tmp_path):
    calls = []
    lib = CaseLibrary.build(case_folder, embedder="raw-pixels", progress=lambda i, n: calls.append((i, n)))
    assert len(lib) == 8 and lib.labels == ["disc", "square"]
    assert calls[-1] == (8, 8)
    hits = lib.query(shape_image("disc", 1), k=3)
    assert [h.label for h in hits] == ["disc"] * 3
    assert hits[0].distance == pytest.approx(0.0, abs=1e-5)  # the identical case
    assert hits[0].path.endswith("disc/2.png")
    assert all(a.distance <= b.distance for a, b in zip(hits, hits[1:]))
    assert hits[0].thumbnail.shape == (96, 96) and hits[0].thumbnail.dtype == np.uint8
    assert vote(hits)[0] == ("disc", 3, 1.0)

    path = lib.save(tmp_path / "lib.medlib")
    con = sqlite3.connect(path)
    meta = dict(con.execute("SELECT key, value FROM meta"))
    cols = [r[1] for r in con.execute("PRAGMA table_info(cases)")]
    n = con.execute("SELECT COUNT(*) FROM cases").fetchone()[0]
    con.close()
    assert meta["embedder_name"] == "raw-pixels-32" and len(meta["embedder_sha256"]) == 64 and meta["created"]
    assert {"case_id", "label", "path", "patient_id", "thumbnail", "vector"} <= set(cols) and n == 8

    lib2 = CaseLibrary.load(path)
    hits2 = lib2.query(shape_image("disc", 1), k=3)
    assert [(h.case_id, round(h.distance, 5)) for h in hits2] == [(h.case_id, round(h.distance, 5)) for h in hits]
    sq = lib2.query(shape_image("square", -2), k=3)
    assert [h.label for h in sq] == ["square"] * 3
    # k larger than the library
    assert len(lib2.query(shape_image("square"), k=50)) == 8


def test_incremental_add_and_remove(case_folder, tmp_path):
    lib = CaseLibrary.build(case_folder, embedder="raw-pixels")
    extra = tmp_path / "extra" / "bar"
    extra.mkdir(parents=True)
    for i, s in enumerate((-2, 2)):
        Image.fromarray(shape_image("bar", s)).save(extra / f"b{i}.png")
    new = lib.add(tmp_path / "extra")
    assert new == [9, 10] and len(lib) == 10
    assert lib.query(shape_image("bar", 0), k=1)[0].label == "bar"
    assert lib.remove(new) == 2 and len(lib) == 8
    assert all(h.label != "bar" for h in lib.query(shape_image("bar", 0), k=8))
    with pytest.raises(MedaiError, match="unknown case ids"):
        lib.remove([999])
    # ids are never reused, also after save / load
    odd = tmp_path / "case #1?%20" / "l.medlib"  # URI characters in a folder name (sqlite opens it by URI)
    odd.parent.mkdir()
    lib.save(odd)
    assert len(CaseLibrary.load(odd)) == 8
    lib.save(tmp_path / "l.medlib")
    lib2 = CaseLibrary.load(tmp_path / "l.medlib")
    ids = lib2.add_images([shape_image("bar", 1)], ["bar"], paths=["layer bar"])
    assert ids == [11]
    assert lib2.query(shape_image("bar", 1), k=1)[0].path == "layer bar"


@pytest.mark.parametrize("roi, expected", [
    (None, None), ("", None),
    ("1.6,2.4,3.5,4.5", (2, 2, 4, 4)),  # strings (CSV, library file, --roi): rounded
    ("10; 20; 30; 40", (10, 20, 30, 40)),
    ([1.7, 2.2, 3.9, 4.5], (1, 2, 3, 4)),  # numbers: truncated
    (np.array([1.5, 2.5, 3.5, 4.5]), (1, 2, 3, 4)),
])
def test_parse_roi_gives_whole_pixels(roi, expected):
    got = parse_roi(roi)
    assert got == expected and (got is None or all(type(v) is int for v in got))


@pytest.mark.parametrize("roi", ["a,b,c,d", "1,2,3", "1,2,3,4,5", "1,2,-3,4", "1,2,0.4,4", "nan,2,3,4", "1,2,inf,4",
                                 (1, 2, 0.5, 4), (1, 2, 3, None), (1, 2, 3, float("inf")), 5])
def test_parse_roi_refuses_non_rectangles(roi):
    with pytest.raises(MedaiError):
        parse_roi(roi)


def test_csv_with_patient_ids_volumes_and_roi(tmp_path):
    from napari_medai.io.writers import save_image

    vol = np.stack([shape_image("disc"), shape_image("square"), shape_image("bar")]).astype(np.float32)
    save_image(tmp_path / "vol.nii.gz", vol)
    big = np.zeros((96, 96), np.uint8)
    big[10:58, 30:78] = shape_image("square")
    Image.fromarray(big).save(tmp_path / "big.png")
    (tmp_path / "cases.csv").write_text(
        "path,label,patient_id,slice,roi\n"
        "vol.nii.gz,disc-vol,P1,0,\n"
        "vol.nii.gz,bar-vol,P1,2,\n"
        "big.png,square-roi,P2,,\"30,10,48,48\"\n"
    )
    lib = CaseLibrary.build(tmp_path / "cases.csv", embedder="raw-pixels")
    assert [c["patient_id"] for c in lib.cases()] == ["P1", "P1", "P2"]
    assert [c["slice"] for c in lib.cases()] == [0, 2, None]
    assert lib.query(shape_image("square"), k=1)[0].label == "square-roi"
    assert lib.query(vol, k=1, slice_index=2)[0].label == "bar-vol"
    # per-slice entries of a volume
    lib_all = CaseLibrary.build([CaseEntry(str(tmp_path / "vol.nii.gz"), "v")], embedder="raw-pixels", volumes="all")
    assert len(lib_all) == 3 and [c["slice"] for c in lib_all.cases()] == [0, 1, 2]
    # nothing about patients unless the user gave it
    lib_folder = CaseLibrary.build([CaseEntry(str(tmp_path / "big.png"), "x")], embedder="raw-pixels")
    assert lib_folder.cases()[0]["patient_id"] is None
    with pytest.raises(MedaiError, match="path and label"):
        (tmp_path / "bad.csv").write_text("file,class\nbig.png,x\n")
        CaseLibrary.build(tmp_path / "bad.csv", embedder="raw-pixels")


def test_mismatched_embedder_is_refused(case_folder, tmp_path):
    lib = CaseLibrary.build(case_folder, embedder="raw-pixels")
    path = lib.save(tmp_path / "lib.medlib")
    with pytest.raises(MedaiError, match="built with embedder 'raw-pixels-32'"):
        CaseLibrary.load(path, embedder=PixelEmbedder(16))

    class Impostor(PixelEmbedder):  # same name and size, other weights
        sha256 = "0" * 64

    imp = Impostor(32)
    imp.sha256 = "0" * 64
    with pytest.raises(MedaiError, match="not comparable"):
        CaseLibrary.load(path, embedder=imp)
    with pytest.raises(MedaiError, match="not a case library"):
        (tmp_path / "junk.medlib").write_bytes(b"junk" * 100)
        CaseLibrary.load(tmp_path / "junk.medlib")


def test_hnsw_index_matches_exact_and_keeps_tombstones():
    pytest.importorskip("faiss")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3000, 32)).astype(np.float32)
    emb = PixelEmbedder(4)  # dim 16 -> use a fake embedder of dim 32
    emb.dim = 32
    flat = CaseLibrary(emb, index="flat")
    flat.add_vectors(x, ["c"] * len(x))
    hnsw = CaseLibrary(emb, hnsw_threshold=1000)  # auto -> hnsw above 1000 cases
    hnsw.add_vectors(x, ["c"] * len(x))
    q = rng.standard_normal((50, 32)).astype(np.float32)
    d0, i0 = flat.search_vectors(q, 10)
    d1, i1 = hnsw.search_vectors(q, 10)
    assert hnsw.summary()["index"] == "hnsw" and flat.summary()["index"] == "flat"
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(i0, i1)])
    assert recall >= 0.95
    npy = CaseLibrary(emb, index="numpy")
    npy.add_vectors(x, ["c"] * len(x))
    d2, i2 = npy.search_vectors(q, 10)
    np.testing.assert_array_equal(i0, i2)
    np.testing.assert_allclose(d0, d2, rtol=1e-4, atol=1e-4)
    # removal on HNSW: tombstones, removed ids never returned
    gone = i1[:, 0].tolist()
    hnsw.remove(sorted(set(gone)))
    _, i3 = hnsw.search_vectors(q, 10)
    assert not set(i3.ravel().tolist()) & set(gone)
    assert (i3 >= 0).all()


# ---------------------------------------------------------------- CLI
def test_cli_build_query_evaluate_json(case_folder, tmp_path, capsys):
    from napari_medai.cli.main import main

    out = tmp_path / "lib.medlib"
    assert main(["retrieve", "build", str(case_folder), "-o", str(out), "--embedder", "raw-pixels", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["cases"] == 8 and doc["labels"] == {"disc": 4, "square": 4}
    q = tmp_path / "q.png"
    Image.fromarray(shape_image("square", 2)).save(q)
    assert main(["retrieve", "query", str(out), str(q), "-k", "3", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [h["label"] for h in doc["hits"]] == ["square"] * 3
    assert doc["vote"][0] == {"label": "square", "count": 3, "fraction": 1.0}
    assert doc["hits"][0]["distance"] <= doc["hits"][1]["distance"]
    assert main(["retrieve", "evaluate", str(case_folder), "--folds", "2", "-k", "2", "--embedder", "raw-pixels",
                 "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["folds"] == 2 and set(doc["summary"]["per_class"]) == {"disc", "square"}
    assert 0.0 <= doc["summary"]["overall"]["mAP"]["mean"] <= 1.0
    assert "P@2" in doc["summary"]["per_class"]["disc"] and "R@2" in doc["summary"]["per_class"]["disc"]
    # train embedder (1 epoch smoke run), then build with it
    emb_dir = tmp_path / "my-embedder"
    assert main(["train", "embedder", str(case_folder), "-o", str(emb_dir), "--epochs", "1", "--size", "32",
                 "--batch-size", "8", "--no-mixed-precision", "--device", "cpu", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["cases"] == 8 and doc["classes"] == ["disc", "square"] and (emb_dir / "model.safetensors").exists()
    assert main(["retrieve", "build", str(case_folder), "-o", str(tmp_path / "c.medlib"), "--embedder", str(emb_dir),
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["embedder"] == "my-embedder"
    # refused input: one error line, exit 2
    assert main(["retrieve", "query", str(tmp_path / "missing.medlib"), str(q)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")


# ---------------------------------------------------------------- shipped embedder on real data
FIGSHARE_LIBRARY = {  # image ids, in blocks of consecutive ids (slices of the same patients)
    "glioma": range(2300, 2320),
    "meningioma": range(400, 420),
    "pituitary": range(1200, 1220),
}
FIGSHARE_QUERIES = {"glioma": (2700, 2900), "meningioma": (100, 600), "pituitary": (1500, 1700)}


def test_shipped_embedder_on_real_figshare(shared_data):
    from napari_medai.retrieval.embedder import get_embedder

    root = shared_data / "brain-mri" / "figshare"
    if not root.is_dir():
        pytest.skip("figshare brain MRI not in the shared data")
    emb = get_embedder("embedder-brain-mri", device="cpu")
    entries = [CaseEntry(str(root / c / f"{i}.jpg"), c) for c, ids in FIGSHARE_LIBRARY.items() for i in ids
               if (root / c / f"{i}.jpg").exists()]
    lib = CaseLibrary.build(entries, embedder=emb)
    assert len(lib) == 60
    for c, ids in FIGSHARE_QUERIES.items():
        img = np.asarray(Image.open(root / c / f"{ids[0]}.jpg"))
        hits = lib.query(img, k=5)
        assert vote(hits)[0][0] == c, (c, [h.label for h in hits])
        assert hits[0].distance < 1.0


# ---------------------------------------------------------------- widget
def test_widget_build_query_open(make_napari_viewer, case_folder, tmp_path):
    from napari_medai.retrieval.widget import MODES, RetrievalWidget

    viewer = make_napari_viewer()
    w = RetrievalWidget(viewer)
    assert "Research use only" in w.notice.value
    w.build_library(str(case_folder), save_to=str(tmp_path / "w.medlib"), embedder="raw-pixels")
    assert w.library is not None and len(w.library) == 8 and (tmp_path / "w.medlib").exists()
    # a 3D stack: the current slice is the query
    stack = np.stack([shape_image("disc", 1), shape_image("square", -1)]).astype(np.float32)
    viewer.add_image(stack, name="stack")
    viewer.dims.set_point(0, 1)
    assert w.image.value is viewer.layers["stack"]  # follows the new, selected layer
    w.k.value = 4
    w()
    assert w.jobs.last_error is None
    assert w.gallery.count() == 4
    assert [h.label for h in w.hits] == ["square"] * 4
    assert "square 4/4" in w.vote_text.value
    assert w.last_provenance["parameters"]["slice"] == 1
    # Shapes ROI on a larger image holding a disc in one corner
    big = np.zeros((120, 120), np.float32)
    big[60:108, 60:108] = shape_image("disc")
    viewer.add_image(big, name="big")
    viewer.add_shapes([np.array([[60, 60], [60, 108], [108, 108], [108, 60]])], shape_type="rectangle", name="roi")
    w.image.value = viewer.layers["big"]
    w.shapes.value = viewer.layers["roi"]
    w.mode.value = MODES[1]
    w.run_query()
    assert w.last_provenance["parameters"]["roi"] == [60, 60, 48, 48]
    assert w.hits[0].label == "disc"
    # clicking a case opens it with provenance
    n = len(viewer.layers)
    w._item_clicked(w.gallery.item(0))
    assert len(viewer.layers) == n + 1
    layer = viewer.layers[-1]
    assert layer.name.startswith(f"case {w.hits[0].case_id}: disc")
    assert layer.metadata["napari_medai"]["retrieved_case"]["label"] == "disc"
    assert layer.metadata["napari_medai"]["tool"] == "retrieval"
    # the saved library is remembered for the next start, and opens from the widget
    from napari_medai._qt.prefs import get_pref

    assert get_pref("retrieval.last_library") == str(tmp_path / "w.medlib")
    again = RetrievalWidget(viewer)
    assert str(again.library_path.value) == str(tmp_path / "w.medlib")
    again.open_button.clicked.emit()
    assert again.library is not None and len(again.library) == 8


def test_widget_says_no_close_cases_when_out_of_domain(make_napari_viewer, case_folder):
    """When the library flags the query out of its domain (#15) the widget shows no label vote."""
    from napari_medai.retrieval.widget import RetrievalWidget

    class Flagged(list):  # the shape of CaseLibrary.query's result: a list of hits with two attributes
        out_of_domain = True
        reasons = ["farther from every case than cases are from each other"]

    viewer = make_napari_viewer()
    w = RetrievalWidget(viewer)
    w.build_library(str(case_folder), embedder="raw-pixels")
    real_query = w.library.query
    w.library.query = lambda *args, **kwargs: Flagged(real_query(*args, **kwargs))
    viewer.add_image(np.random.default_rng(0).random((64, 64)).astype(np.float32), name="noise")
    w()
    assert w.jobs.last_error is None and w.gallery.count() == len(w.hits) > 0
    assert "No close cases in this library" in w.vote_text.value and "Label vote" not in w.vote_text.value
    assert "farther from every case" in w.vote_text.value
    assert w.last_provenance["parameters"]["out_of_domain"] is True

def test_train_export_and_use_a_tiny_cnn_embedder(tmp_path, case_folder):
    """Smoke run of the training loop (1 epoch, tiny net), export, registry card, library use,
    and refusal of a library by a retrained (different-weights) embedder."""
    pytest.importorskip("torch")
    from napari_medai.retrieval.embedder import CNNEmbedder, get_embedder
    from napari_medai.retrieval.preprocess import prepare
    from napari_medai.retrieval.train import export_embedder, train_embedder

    x = np.stack([prepare(shape_image(k, s), 32) for k in ("disc", "square") for s in range(-4, 4)])
    y = np.repeat([0, 1], 8)
    arch = {"widths": [4, 8, 8, 8, 8], "embed_dim": 8}
    paths = []
    for seed in (0, 1):
        net, arch_out, hist = train_embedder(x, y, n_classes=2, epochs=1, batch_size=8, arch=arch, seed=seed,
                                             device="cpu", mixed_precision=False)
        assert len(hist) == 1 and np.isfinite(hist[0]["loss"])
        out = export_embedder(net, arch_out, tmp_path / f"tiny-{seed}", classes=["disc", "square"], size=32,
                              training_data="synthetic", notes="test")
        card = json.loads((out / "card.json").read_text())
        assert card["task"] == "embedding" and len(card["sha256"]) == 64
        assert "not a medical device" in card["intended_use"]
        paths.append(out)
    emb = get_embedder(str(paths[0]), device="cpu")
    assert isinstance(emb, CNNEmbedder) and emb.dim == 8 and emb.size == 32
    v = emb.embed([shape_image("disc"), shape_image("square")])
    assert v.shape == (2, 8)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-5)  # L2-normalised descriptors
    lib = CaseLibrary.build(case_folder, embedder=emb)
    lib.save(tmp_path / "cnn.medlib")
    assert len(CaseLibrary.load(tmp_path / "cnn.medlib", embedder=str(paths[0]))) == 8
    with pytest.raises(MedaiError, match="built with embedder 'tiny-0'"):
        CaseLibrary.load(tmp_path / "cnn.medlib", embedder=str(paths[1]))
    # an ensemble of the two: descriptor = both members' descriptors concatenated, re-normalised
    from napari_medai.retrieval.train import merge_embedders

    both = get_embedder(str(merge_embedders(paths, tmp_path / "tiny-x2")), device="cpu")
    assert both.dim == 16
    assert json.loads((tmp_path / "tiny-x2" / "card.json").read_text())["arch_params"]["members"] == 2
    images = [shape_image("disc"), shape_image("square", 2)]
    second = get_embedder(str(paths[1]), device="cpu")
    np.testing.assert_allclose(both.embed(images), np.hstack([emb.embed(images), second.embed(images)]) / np.sqrt(2),
                               atol=1e-5)
    with pytest.raises(ValueError, match="same architecture"):
        merge_embedders([paths[0]], tmp_path / "alone")
    # members with different input sizes: the merged model takes images prepared at the largest (48 px)
    # and gives the 32-px member that image area-resized to 32 px, as preprocess.resize_area would
    from napari_medai.retrieval.preprocess import prepare, resize_area

    second_48 = export_embedder(second._load(), arch_out, tmp_path / "tiny-48", classes=["disc", "square"], size=48,
                                training_data="synthetic", notes="test")
    mixed = get_embedder(str(merge_embedders([paths[0], second_48], tmp_path / "tiny-mixed")), device="cpu")
    card = json.loads((tmp_path / "tiny-mixed" / "card.json").read_text())
    assert mixed.size == 48 and card["arch_params"]["member_sizes"] == [32, 48]
    at_32 = np.stack([resize_area(prepare(im, 48), 32) for im in images])
    want = np.hstack([emb.embed_prepared(at_32), get_embedder(str(second_48), device="cpu").embed(images)]) / np.sqrt(2)
    np.testing.assert_allclose(mixed.embed(images), want, atol=1e-5)


def test_instance_contrastive_term():
    """The instance term is NT-Xent: supcon_loss with per-image ids; checked against the closed form."""
    torch = pytest.importorskip("torch")
    from napari_medai.retrieval.preprocess import prepare
    from napari_medai.retrieval.train import supcon_loss, train_embedder

    n = 4
    base = torch.eye(8)[:n]
    z = torch.cat([base, base])  # two identical views per image, images mutually orthogonal
    loss = float(supcon_loss(z, torch.arange(n).repeat(2), t=0.1))
    assert loss == pytest.approx(math.log(1 + (2 * n - 2) * math.exp(-10)), abs=2e-6)  # float32
    x = np.stack([prepare(shape_image(k, s), 32) for k in ("disc", "square") for s in range(-4, 4)])
    _, _, hist = train_embedder(x, np.repeat([0, 1], 8), n_classes=2, epochs=1, batch_size=8, instance_weight=0.5,
                                arch={"widths": [4, 8, 8, 8, 8], "embed_dim": 8}, device="cpu", mixed_precision=False)
    assert np.isfinite(hist[0]["loss"])


def test_build_never_writes_over_an_input_or_a_non_library_file(case_folder, tmp_path, capsys):
    """`retrieve build cases.csv -o cases.csv` used to replace the case list with the library."""
    import hashlib

    from napari_medai.cli.main import main

    csv = tmp_path / "cases.csv"
    csv.write_text("path,label\n" + "".join(f"{p},{p.parent.name}\n" for p in sorted(case_folder.rglob("*.png"))))
    before = hashlib.sha256(csv.read_bytes()).hexdigest()
    assert main(["retrieve", "build", str(csv), "-o", str(csv), "--embedder", "raw-pixels"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {csv} exists and is not a case library (an input?); give a new file name")
    assert len(err.splitlines()) == 1
    assert hashlib.sha256(csv.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cases", "cases.csv"]  # no temporary file left
    # an existing library is still replaced (rebuilding in place is the normal workflow)
    lib = tmp_path / "lib.medlib"
    CaseLibrary.build(case_folder, embedder=PixelEmbedder()).save(lib)
    assert main(["retrieve", "build", str(csv), "-o", str(lib), "--embedder", "raw-pixels", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["cases"] == 8


def test_embedder_training_with_one_class_is_refused():
    """One label used to train silently (loss 0, a descriptor that has learned nothing)."""
    pytest.importorskip("torch")
    from napari_medai.retrieval.train import train_embedder

    x = np.zeros((4, 32, 32), np.float32)
    with pytest.raises(MedaiError, match="1 label.* needs at least two classes"):
        train_embedder(x, [0, 0, 0, 0], n_classes=1, epochs=1, device="cpu")


def test_query_with_nan_values_is_refused(case_folder):
    """NaN voxels used to become 0 and the query went on with a descriptor of another image."""
    lib = CaseLibrary.build(case_folder, embedder=PixelEmbedder())
    query = shape_image("disc").astype(np.float32)
    query[::7, ::5] = np.nan
    with pytest.raises(MedaiError, match="the image has 70 NaN or infinite values; fix or mask them"):
        lib.query(query, k=2)
    with pytest.raises(MedaiError, match="NaN or infinite"):
        lib.add_images([np.full((SIZE, SIZE), np.inf, np.float32)], labels=["disc"])
    assert len(lib) == 8


def test_build_into_an_unwritable_folder_is_refused_before_embedding(case_folder, tmp_path, capsys, monkeypatch):
    """It used to embed every case and then end in 'internal error PermissionError'."""
    import os

    from napari_medai.cli.main import main

    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(locked) else real_access(p, mode))
    monkeypatch.setattr(CaseLibrary, "build", classmethod(lambda *a, **k: pytest.fail("embedded before the check")))
    assert main(["retrieve", "build", str(case_folder), "-o", str(locked / "lib.medlib")]) == 2
    err = capsys.readouterr().err
    assert err == f"error: cannot write in {locked} (permission denied); choose a folder you can write to\n"
    assert list(locked.iterdir()) == []
