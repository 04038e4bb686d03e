"""Steatosis grading: metrics, readers, folds, index, core contract, shipped model, CLI."""

import json

import numpy as np
import pytest

from napari_medai.errors import MedaiError
from napari_medai.steatosis import metrics as M

# ---------------------------------------------------------------------------------------------
# metrics against a hand-worked confusion matrix

def test_one_vs_rest_metrics_hand_worked():
    # rows true S0..S3, columns predicted
    cm = np.array([[5, 1, 0, 0],
                   [2, 3, 1, 0],
                   [0, 0, 2, 2],
                   [0, 0, 0, 4]])
    y_true, y_pred = [], []
    for t in range(4):
        for p in range(4):
            y_true += [t] * cm[t, p]
            y_pred += [p] * cm[t, p]
    np.testing.assert_array_equal(M.confusion(y_true, y_pred), cm)
    ovr = M.one_vs_rest(cm)
    # S0: TP 5, FN 1, FP 2, TN 12 (total 20)
    assert (ovr[0]["tp"], ovr[0]["fn"], ovr[0]["fp"], ovr[0]["tn"]) == (5, 1, 2, 12)
    assert ovr[0]["acc"] == pytest.approx(17 / 20)
    assert ovr[0]["se"] == pytest.approx(5 / 6)
    assert ovr[0]["sp"] == pytest.approx(12 / 14)
    # S2: TP 2, FN 2, FP 1, TN 15
    assert ovr[2]["se"] == pytest.approx(0.5) and ovr[2]["sp"] == pytest.approx(15 / 16)
    prob = np.eye(4)[y_pred]
    s = M.summary(y_true, prob)
    assert s["accuracy"] == pytest.approx(14 / 20)
    assert s["balanced_accuracy"] == pytest.approx(np.mean([5 / 6, 3 / 6, 2 / 4, 4 / 4]))
    assert s["macro_se"] == pytest.approx(s["balanced_accuracy"])
    # steatosis score = P(S>=1): only S0 rows predicted S0 score 0; positives predicted S0 (2 of 14) tie
    assert s["steatosis_auc"] == pytest.approx(M.auc(np.asarray(y_true) >= 1, prob[:, 1:].sum(1)))


def test_auc_and_bootstrap():
    assert M.auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert M.auc([0, 0, 1, 1], [0.1, 0.2, 0.2, 0.9]) == pytest.approx(0.875)  # tie counts half
    y = np.repeat([0, 1, 2, 3], 6)
    prob = np.eye(4)[y] * 0.9 + 0.025
    ci = M.patient_bootstrap(y, prob, np.repeat(np.arange(8), 3), n_boot=50)
    assert ci["balanced_accuracy"] == [pytest.approx(1.0), pytest.approx(1.0)]


# ---------------------------------------------------------------------------------------------
# readers and folds

def test_mat_reader_on_synthetic_byra_file(tmp_path):
    import scipy.io

    from napari_medai.steatosis.data import read_any, read_mat

    rng = np.random.default_rng(0)
    recs = []
    for pid, fat in [(1, 3), (2, 20), (3, 50), (4, 80)]:
        imgs = np.zeros((2, 434, 636), np.uint8)
        yy, xx = np.mgrid[:434, :636]
        sector = (np.hypot(yy + 40, xx - 318) < 440) & (np.abs(xx - 318) < (yy + 40) * 0.9)
        for k in range(2):
            imgs[k][sector] = np.clip(60 + fat + rng.normal(0, 10, sector.sum()), 0, 255).astype(np.uint8)
        recs.append({"id": pid, "class": int(fat > 5), "fat": fat, "images": imgs})
    arr = np.empty((1, 4), dtype=[("id", "O"), ("class", "O"), ("fat", "O"), ("images", "O")])
    for i, r in enumerate(recs):
        arr[0, i] = (np.array([[r["id"]]]), np.array([[r["class"]]]), np.array([[r["fat"]]]), r["images"])
    path = tmp_path / "dataset_liver_bmodes_steatosis_assessment_IJCARS.mat"
    scipy.io.savemat(path, {"data": arr})
    d = read_mat(path)
    assert d.crops.shape == (8, 28, 28)
    np.testing.assert_array_equal(d.grade, [0, 0, 1, 1, 2, 2, 3, 3])
    np.testing.assert_array_equal(d.patient, ["1", "1", "2", "2", "3", "3", "4", "4"])
    assert not d.has_index
    # the automatic liver patch lies inside the synthetic sector: mean ~ 60 + fat
    assert abs(d.crops[6].mean() - 140) < 5
    assert len(read_any(path)) == 8


def test_csv_reader_recovers_grey_levels_and_folds_never_share_patients(shared_data):
    from napari_medai.io.readers import load_image
    from napari_medai.sample_data import BMODE_FRAME, BMODE_LIVER_ROI
    from napari_medai.steatosis.data import read_csv
    from napari_medai.steatosis.train import make_folds

    d = read_csv(shared_data / "steatosis" / "labels.csv")
    assert len(d) == 470 and len(set(d.patient)) == 47 and d.has_index
    x, y, w, h = BMODE_LIVER_ROI
    frame_crop = load_image(BMODE_FRAME).data[y:y + h, x:x + w].astype(float)
    # crop 0 of patient 1 is that ROI: dividing by index x calibration restores the frame's grey levels
    assert d.crops[0].mean() == pytest.approx(frame_crop.mean(), rel=0.02)
    folds = make_folds(d.grade, d.patient, 5, seed=0)
    seen = set()
    for tr, te in folds:
        assert not set(d.patient[tr]) & set(d.patient[te])
        assert set(d.grade[te]) >= {0, 1}
        seen |= set(te.tolist())
    assert seen == set(range(470))


def test_folder_reader(tmp_path):
    from PIL import Image

    from napari_medai.steatosis.data import read_folder

    for g, name in enumerate(["S0", "S1", "moderate", "3"]):
        (tmp_path / name).mkdir()
        for k in range(2):
            Image.fromarray(np.full((28, 28), 50 + 30 * g, np.uint8)).save(tmp_path / name / f"ID_{g}{k}_x.png")
    d = read_folder(tmp_path)
    np.testing.assert_array_equal(np.sort(d.grade), [0, 0, 1, 1, 2, 2, 3, 3])
    assert d.crops[d.grade == 3].mean() == pytest.approx(140)


# ---------------------------------------------------------------------------------------------
# core contract

def _synthetic_frame(liver=120.0, kidney=100.0):
    rng = np.random.default_rng(1)
    img = np.clip(rng.normal(80, 12, (200, 240)), 0, 255).astype(np.uint8)
    img[40:100, 40:120] = np.clip(rng.normal(liver, 12, (60, 80)), 0, 255).astype(np.uint8)
    img[120:160, 150:210] = np.clip(rng.normal(kidney, 12, (40, 60)), 0, 255).astype(np.uint8)
    return img


def test_index_from_two_rois_and_contract():
    from napari_medai import grade_steatosis

    img = _synthetic_frame()
    before = img.copy()
    r = grade_steatosis(img, roi=(40, 40, 80, 60), kidney_roi=(150, 120, 60, 40), device="cpu")
    np.testing.assert_array_equal(img, before)  # input untouched
    expected = img[40:100, 40:120].mean() / img[120:160, 150:210].mean()
    assert r.hepatorenal_index == pytest.approx(expected, rel=1e-6)
    assert r.probabilities.shape == (4,) and r.probabilities.sum() == pytest.approx(1.0)
    assert r.label == ("S0 normal", "S1 mild", "S2 moderate", "S3 severe")[r.grade]
    assert r.heatmap.shape == img.shape and r.heatmap.dtype == np.float32
    assert r.heatmap[:40].max() == 0 and r.heatmap[100:].max() == 0  # zero outside the ROI
    assert r.roi == (40, 40, 80, 60) and r.model == "steatosis-default"
    # polygon / mask ROI gives the same index
    mask = np.zeros(img.shape, bool)
    mask[40:100, 40:120] = True
    r2 = grade_steatosis(img, roi=mask, kidney_roi=(150, 120, 60, 40), device="cpu")
    assert r2.hepatorenal_index == pytest.approx(expected, rel=1e-6)
    # RGB -> luminance
    rgb = np.repeat(img[..., None], 3, axis=2)
    r3 = grade_steatosis(rgb, roi=(40, 40, 80, 60), kidney_roi=(150, 120, 60, 40), device="cpu")
    np.testing.assert_allclose(r3.probabilities, r.probabilities, atol=1e-6)


def test_liver_echo_and_index_echo_features():
    from napari_medai.steatosis.features import classical_features, feature_names, liver_echo

    crops = np.stack([np.full((28, 28), 100.0), np.full((28, 28), 50.0)])
    crops[0, :14] = 60.0  # mean 80
    np.testing.assert_allclose(liver_echo(crops), np.log([80.0, 50.0]))
    X = classical_features(crops, [1.5, 0.9], "index+echo")
    np.testing.assert_allclose(X, [[np.log(1.5), np.log(80.0)], [np.log(0.9), np.log(50.0)]])
    assert feature_names("index+echo") == ["log_hepatorenal_index", "log_liver_echo"]


def test_no_roi_is_refused_unless_auto_and_refusals():
    from napari_medai import grade_steatosis

    img = _synthetic_frame()
    with pytest.raises(MedaiError, match="roi"):
        grade_steatosis(img, device="cpu", heatmap=False)
    r = grade_steatosis(img, device="cpu", heatmap=False, auto_roi=True)
    assert r.roi_source == "auto" and r.uncertain and len(r.roi) == 4
    assert any("automatically" in reason for reason in r.uncertain_reasons)
    bad = img.astype(float)
    bad[5, 5] = np.nan
    cases = [
        (dict(image=bad), "NaN"),
        (dict(image=img, roi=(10, 10, 0, 5)), "empty"),
        (dict(image=img, roi=(500, 10, 20, 20)), "outside"),
        (dict(image=np.zeros((3, 64, 64), np.uint8)), "3-D"),
        (dict(image=img, roi=np.zeros(img.shape, bool)), "empty"),
        (dict(image=img, roi="1,2,3"), "X,Y,W,H"),
    ]
    for kwargs, match in cases:
        with pytest.raises(MedaiError, match=match):
            grade_steatosis(kwargs.pop("image"), device="cpu", **kwargs)


def test_sample_frame_with_rois_is_graded_normal():
    from napari_medai import grade_steatosis
    from napari_medai.io.readers import load_image
    from napari_medai.sample_data import BMODE_FRAME, BMODE_KIDNEY_ROI, BMODE_LIVER_ROI

    frame = load_image(BMODE_FRAME).data
    r = grade_steatosis(frame, roi=BMODE_LIVER_ROI, kidney_roi=BMODE_KIDNEY_ROI, device="cpu")
    assert r.hepatorenal_index == pytest.approx(1.1224, abs=0.002)  # data set's 1.123 for this frame
    assert r.grade == 0 and r.probabilities[0] > 0.5


def test_frame_saved_as_2d_nifti_is_graded_like_the_jpeg(tmp_path, capsys):
    """A 2-D NIfTI frame reads as a one-slice stack (1, H, W); it used to be refused as '3-D - pick a frame'."""
    import nibabel as nib

    from napari_medai.cli.main import main
    from napari_medai.io.readers import load_image
    from napari_medai.sample_data import BMODE_FRAME, BMODE_KIDNEY_ROI, BMODE_LIVER_ROI

    frame = load_image(BMODE_FRAME).data
    nib.save(nib.Nifti1Image(np.ascontiguousarray(frame.T), np.eye(4)), tmp_path / "frame.nii.gz")
    assert load_image(tmp_path / "frame.nii.gz").data.shape == (1, *frame.shape)
    args = ["--roi", ",".join(map(str, BMODE_LIVER_ROI)), "--kidney-roi", ",".join(map(str, BMODE_KIDNEY_ROI)),
            "--json"]
    assert main(["grade", str(BMODE_FRAME), str(tmp_path / "frame.nii.gz"), *args]) == 0
    jpeg, nifti = json.loads(capsys.readouterr().out)["results"]
    assert nifti["grade"] == jpeg["grade"] == 0
    assert nifti["probabilities"] == jpeg["probabilities"]
    assert nifti["hepatorenal_index"] == pytest.approx(1.1224, abs=0.002)


def test_single_channel_frame_and_overlapping_rois():
    """(H, W, 1) used to be refused as 3-D; a kidney ROI on the liver ROI gave a confident S0 (index 1.0)."""
    from napari_medai import grade_steatosis
    from napari_medai.io.readers import load_image
    from napari_medai.sample_data import BMODE_FRAME, BMODE_KIDNEY_ROI, BMODE_LIVER_ROI

    frame = load_image(BMODE_FRAME).data
    plain = grade_steatosis(frame, roi=BMODE_LIVER_ROI, kidney_roi=BMODE_KIDNEY_ROI, device="cpu", heatmap=False)
    channel = grade_steatosis(frame[..., None], roi=BMODE_LIVER_ROI, kidney_roi=BMODE_KIDNEY_ROI, device="cpu",
                              heatmap=False)
    np.testing.assert_array_equal(channel.probabilities, plain.probabilities)
    assert not plain.uncertain
    same = grade_steatosis(frame, roi=BMODE_LIVER_ROI, kidney_roi=BMODE_LIVER_ROI, device="cpu", heatmap=False)
    assert same.hepatorenal_index == pytest.approx(1.0)
    assert same.uncertain and any("ROIs overlap" in reason for reason in same.uncertain_reasons)


def _composite(crop, hri):
    """A real liver crop beside a uniform 'kidney' patch whose mean gives the recorded index."""
    img = np.zeros((64, 96), np.float64)
    img[18:46, 8:36] = crop
    img[18:46, 60:88] = crop.mean() / hri
    return img


@pytest.mark.parametrize("patient,grade", [(4, 0), (3, 0), (26, 3), (40, 3)])
def test_clear_patients_get_their_grade(shared_data, patient, grade):
    from napari_medai import grade_steatosis
    from napari_medai.steatosis.data import read_csv

    d = read_csv(shared_data / "steatosis" / "labels.csv")
    rows = np.flatnonzero(d.patient == str(patient))
    probs = []
    for i in rows:
        r = grade_steatosis(_composite(d.crops[i], d.hri[i]), roi=(8, 18, 28, 28), kidney_roi=(60, 18, 28, 28),
                            device="cpu", heatmap=False)
        assert r.probabilities.sum() == pytest.approx(1.0)
        assert r.hepatorenal_index == pytest.approx(d.hri[i], rel=1e-6)
        probs.append(r.probabilities)
    assert int(np.argmax(np.mean(probs, axis=0))) == grade


def test_shipped_model_reproduces_its_card(shared_data):
    from napari_medai.runtime.registry import get_card
    from napari_medai.steatosis.data import read_csv
    from napari_medai.steatosis.train import cross_validate

    card = get_card("steatosis-default")
    assert "research use only" in card.intended_use.lower()
    d = read_csv(shared_data / "steatosis" / "labels.csv")
    res = cross_validate(d, "classical", n_folds=5, seed=0, n_boot=20, log=lambda *a: None)
    shipped = card.metrics["all_candidates_and_baselines"]
    for name in ("index", "glcm", "index+glcm", "index+echo"):
        for key in ("balanced_accuracy", "steatosis_auc"):
            assert res["candidates"][name]["folds"][key]["mean"] == pytest.approx(shipped[name][key]["mean"], abs=0.01)
    assert shipped["index"]["steatosis_auc"]["mean"] > 0.9


# ---------------------------------------------------------------------------------------------
# models and training smoke

def test_networks_forward_and_train_smoke():
    torch = pytest.importorskip("torch")
    from napari_medai.steatosis.models import DEFAULT_PARAMS, SEInceptionResNetV2, build
    from napari_medai.steatosis.train import net_proba, train_net

    torch.manual_seed(0)
    net = build("se-irv2", in_channels=2, **DEFAULT_PARAMS["se-irv2"])
    assert net(torch.zeros(2, 2, 28, 28)).shape == (2, 4)
    # fused = pooled A + SE-B + SE-C channels
    big = SEInceptionResNetV2(in_channels=1, width=0.0625, blocks=(1, 1, 1), input_size=75, stem="full").eval()
    assert big.features(torch.zeros(1, 1, 40, 40)).shape == (1, big.fused_channels)
    rng = np.random.default_rng(0)
    crops = np.concatenate([rng.normal(60, 10, (16, 28, 28)), rng.normal(160, 10, (16, 28, 28))]).clip(0, 255)
    y = np.repeat([0, 3], 16)
    state = train_net(crops, y, "cnn", {"width": 4}, "raw", epochs=15, batch=8, lr=1e-2)
    p = net_proba(state, crops, "cnn", {"width": 4}, "raw")
    assert p.shape == (32, 4) and (p.argmax(1) == y).mean() >= 0.9


# ---------------------------------------------------------------------------------------------
# CLI

def test_cli_grade_json(capsys):
    from napari_medai.cli.main import main
    from napari_medai.sample_data import BMODE_FRAME, BMODE_KIDNEY_ROI, BMODE_LIVER_ROI

    roi = ",".join(map(str, BMODE_LIVER_ROI))
    kidney = ",".join(map(str, BMODE_KIDNEY_ROI))
    assert main(["grade", str(BMODE_FRAME), str(BMODE_FRAME), "--roi", roi, "--kidney-roi", kidney, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert len(doc["results"]) == 2
    first = doc["results"][0]
    assert first["input"] == str(BMODE_FRAME) and first["grade"] == 0 and first["label"] == "S0 normal"
    assert sum(first["probabilities"]) == pytest.approx(1.0, abs=1e-5) and len(first["probabilities"]) == 4
    assert first["hepatorenal_index"] == pytest.approx(1.1224, abs=0.002) and first["model"] == "steatosis-default"
    assert main(["grade", str(BMODE_FRAME), "--roi", "9999,0,10,10"]) == 2
    assert capsys.readouterr().err.startswith("error:")


def test_cli_grade_several_frames_keeps_the_good_ones(tmp_path, capsys):
    """One refused frame among several gets its own error line and an error entry; the others are still graded,
    and the exit code says that an input was refused."""
    from napari_medai.cli.main import main
    from napari_medai.sample_data import BMODE_FRAME, BMODE_KIDNEY_ROI, BMODE_LIVER_ROI

    roi = ",".join(map(str, BMODE_LIVER_ROI))
    kidney = ",".join(map(str, BMODE_KIDNEY_ROI))
    bad = tmp_path / "empty.png"
    bad.write_bytes(b"")
    argv = ["grade", str(BMODE_FRAME), str(bad), str(BMODE_FRAME), "--roi", roi, "--kidney-roi", kidney, "--json"]
    assert main(argv) == 2
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert [d.get("grade") for d in doc["results"]] == [0, None, 0] and doc["model"] == "steatosis-default"
    assert doc["results"][1]["input"] == str(bad) and doc["results"][1]["error"]
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(bad) in errors[0]
    assert main(["grade", str(bad), "--roi", roi]) == 2  # a single frame: refused as before, one line
    assert capsys.readouterr().err.startswith("error: ")


def test_cli_train_classical_writes_reports(tmp_path, capsys):
    from PIL import Image

    from napari_medai.cli.main import main

    rng = np.random.default_rng(0)
    rows = ["path,patient_id,grade,hepatorenal_index"]
    for pid in range(12):
        g = pid % 4
        for k in range(3):
            f = tmp_path / f"p{pid}_{k}.png"
            Image.fromarray(np.clip(rng.normal(70 + 20 * g, 8, (28, 28)), 0, 255).astype(np.uint8)).save(f)
            rows.append(f"{f.name},{pid},{g},{0.9 + 0.25 * g + rng.normal(0, 0.03):.4f}")
    (tmp_path / "train.csv").write_text("\n".join(rows))
    out = tmp_path / "out"
    assert main(["train", "steatosis", "--data", str(tmp_path / "train.csv"), "--model-type", "classical",
                 "--folds", "3", "--bootstrap", "20", "-o", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    report = json.loads((out / "report.json").read_text())
    assert (out / "report.md").is_file() and (out / "confusion.png").stat().st_size > 1000
    assert report["candidates"]["index"]["pooled"]["balanced_accuracy"] > 0.9
    assert doc["selected"] in report["candidates"]
    from napari_medai import grade_steatosis

    img = np.zeros((28, 28), np.uint8) + 130
    r = grade_steatosis(img, roi=(0, 0, 28, 28), model=str(out / "model"), device="cpu", heatmap=False)
    assert r.probabilities.sum() == pytest.approx(1.0)
