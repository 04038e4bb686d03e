"""Every tool knows when an input is not what it was made for (#15).

A battery of wrong inputs per tool, built from real images (the packaged samples, so these always run;
the shared data where present): CT slices into grading and retrieval, ultrasound and photos into
segmentation and retrieval, noise and a blank image; each must be refused or flagged. In-domain
inputs must not be.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from napari_medai.errors import MedaiError


# ------------------------------------------------------------------------------------ real inputs
def _load(path):
    from napari_medai.io.readers import load_image

    return load_image(path)


def _bmode():
    from napari_medai.sample_data import BMODE_FRAME

    return np.asarray(_load(BMODE_FRAME).data)


def _brain(i=0):
    from napari_medai.sample_data import BRAIN_MRI

    return np.asarray(_load(BRAIN_MRI[i]).data)


def _ct():
    from napari_medai.sample_data import CT_LIVER, CT_VOLUME

    return np.asarray(_load(CT_VOLUME).data), np.asarray(_load(CT_LIVER).data)


def _ct_slice_hu(z=20):
    return _ct()[0][z]


def _ct_slice_8bit(z=20):
    """The CT slice exported as an 8-bit picture (liver window -200..250 HU), as a screenshot would be."""
    hu = _ct_slice_hu(z).astype(np.float64)
    return (np.clip((hu + 200) / 450, 0, 1) * 255).astype(np.uint8)


def _photo():
    skimage = pytest.importorskip("skimage")
    from PIL import Image

    return np.asarray(Image.open(Path(skimage.__file__).parent / "data" / "astronaut.png").convert("RGB"))


def _noise(shape=(256, 256), seed=0):
    return np.random.default_rng(seed).uniform(0, 255, shape).astype(np.uint8)


def _blank(shape=(256, 256)):
    return np.zeros(shape, np.uint8)


def _liver_roi(z=20):
    """A 28x28 ROI at the centre of the sample CT's liver on slice z."""
    _, liver = _ct()
    ys, xs = np.nonzero(liver[z] > 0)
    cy, cx = int(np.median(ys)), int(np.median(xs))
    return (cx - 14, cy - 14, 28, 28)


# ======================================================================================= segmentation
@pytest.mark.parametrize("name", ["bmode", "brain", "photo", "noise", "blank", "bmode-float", "normalised", "ct-8bit"])
def test_segment_refuses_what_is_not_ct_in_hu(name):
    from napari_medai import segment

    image = {
        "bmode": _bmode, "brain": _brain, "photo": _photo, "noise": _noise, "blank": _blank,
        "bmode-float": lambda: _bmode().astype(np.float32),  # an ultrasound frame as float 0..255
        "normalised": lambda: _ct_slice_hu().astype(np.float32) / 1000.0,  # HU / 1000: not HU
        "ct-8bit": _ct_slice_8bit,
    }[name]()
    before = image.copy()
    spacing = (1.0, 1.0) if image.ndim == 2 or image.shape[-1] == 3 else (1.0, 1.0, 1.0)
    with pytest.raises(MedaiError) as info:
        segment(image, spacing=spacing, device="cpu")
    message = str(info.value)
    assert "\n" not in message and ("Hounsfield" in message or "HU" in message)
    np.testing.assert_array_equal(image, before)


def test_validate_ct_hu_passes_packaged_ct_slice_and_phantom():
    from napari_medai.sample_data.phantom import make_ct_phantom
    from napari_medai.segmentation.core import validate_ct_hu

    ct, _ = _ct()
    validate_ct_hu(ct)
    validate_ct_hu(ct[15])  # one slice
    for seed in range(3):
        volume, _, _ = make_ct_phantom(seed=seed)
        validate_ct_hu(volume)


def test_validate_ct_hu_names_a_missing_rescale_intercept():
    """Raw CT numbers (HU + 1024, as uint16 exports without RescaleIntercept store them) are refused with
    the fix in the message; the packaged CT and one of its slices, unshifted, pass (above)."""
    from napari_medai.segmentation.core import validate_ct_hu

    ct, _ = _ct()
    for raw in ((ct.astype(np.int32) + 1024).clip(0).astype(np.uint16), (ct[15] + 1024).astype(np.float32)):
        with pytest.raises(MedaiError, match="without its rescale intercept") as info:
            validate_ct_hu(raw)
        assert "subtract 1024" in str(info.value) and "\n" not in str(info.value)


def test_validate_ct_hu_passes_every_shared_ct_and_refuses_the_mr(shared_data):
    from napari_medai.segmentation.core import validate_ct_hu

    ct = shared_data / "ct"
    paths = [ct / "chaos-ct-1" / "chaos_ct_01_ct.nii.gz", ct / "full-abdomen" / "abdomen_ct_512x512x146.nii.gz",
             ct / "ircadb-07" / "ircadb01_07_ct.nii.gz", ct / "totalseg-example" / "example_ct.nii.gz",
             ct / "totalseg-example" / "example_ct_sm.nii.gz", ct / "totalseg-example" / "example_ct_dicom"]
    for path in paths:
        if path.exists():
            validate_ct_hu(np.asarray(_load(path).data), path.name)
            with pytest.raises(MedaiError, match="rescale intercept"):  # the same CT as raw CT numbers
                validate_ct_hu(np.asarray(_load(path).data).astype(np.float32) + 1024, path.name)
    # LiTS slices converted back to HU through the green channel (HU = G/255*200 - 40) pass too
    lits = sorted((ct / "lits-slices-2d" / "images").glob("*"))[:3]
    for path in lits:
        green = np.asarray(_load(path).data)[..., 1].astype(np.float32)
        validate_ct_hu(green / 255 * 200 - 40)
    mr = ct / "totalseg-example" / "example_mr_sm.nii.gz"
    if mr.exists():
        with pytest.raises(MedaiError, match="not a CT"):
            validate_ct_hu(np.asarray(_load(mr).data), mr.name)
    us = sorted((shared_data / "us-abdominal" / "images").glob("*"))[:5]
    for path in us:
        with pytest.raises(MedaiError):
            validate_ct_hu(np.asarray(_load(path).data).astype(np.float32), path.name)


def test_cli_segment_refuses_an_ultrasound_jpeg(tmp_path, capsys):
    from napari_medai.cli.main import main
    from napari_medai.sample_data import BMODE_FRAME

    out = tmp_path / "out" / "labels.nii.gz"
    out.parent.mkdir()
    assert main(["segment", str(BMODE_FRAME), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and BMODE_FRAME.name in err[0] and "8-bit" in err[0]
    assert list(out.parent.iterdir()) == []


def test_plausibility_notes_on_true_masks():
    from napari_medai.sample_data.phantom import make_ct_phantom
    from napari_medai.segmentation.core import LIVER_NAMES, plausibility_notes

    ct, liver = _ct()
    spacing = tuple(_load(__import__("napari_medai.sample_data", fromlist=["CT_LIVER"]).CT_LIVER).geometry.spacing)
    notes = plausibility_notes(liver, spacing, LIVER_NAMES)  # 1043 ml, cut at both ends of the 30 slices
    assert len(notes) == 1 and "first and last slice" in notes[0]
    volume, labels, sp = make_ct_phantom(seed=0)
    assert plausibility_notes(labels, sp, LIVER_NAMES) == []  # a whole 1.2 l liver inside the field of view
    assert "no liver found" in plausibility_notes(np.zeros_like(labels), sp, LIVER_NAMES)[0]
    small = np.zeros_like(labels)
    small[20:24, 50:70, 30:50] = 1  # 4 x 20 x 20 voxels = 38 ml
    [note] = plausibility_notes(small, sp, LIVER_NAMES)
    assert "outside the usual adult 600-4000 ml" in note and note.startswith("liver volume 38 ml")
    edge = np.zeros_like(labels)
    edge[10:40, 40:90, 0:40] = 1  # touches the left image border, 1.4 l
    [note] = plausibility_notes(edge, sp, LIVER_NAMES)
    assert "in-plane border" in note
    assert plausibility_notes(labels, sp, {1: "kidney"}) == []  # not a liver model: no notes


def test_plausibility_note_on_a_large_tumour_beside_the_liver():
    """A 200 ml tumour block sticking out of the liver (a quarter of its surface on liver) gets the note;
    the same block inside the liver, and a small one sticking out, do not."""
    from napari_medai.segmentation.core import LIVER_NAMES, plausibility_notes, tumour_liver_contact

    sp = (2.0, 1.0, 1.0)
    labels = np.zeros((80, 200, 200), np.uint8)
    labels[10:70, 20:180, 20:120] = 1  # 1.92 l of liver
    outside = labels.copy()
    outside[20:45, 60:120, 110:180] = 2  # 25 x 60 x 70 voxels = 210 ml, 10 of its 70 columns inside the liver
    [(_, _, contact)] = tumour_liver_contact(outside)
    assert 0.05 < contact < 0.5
    [note] = plausibility_notes(outside, sp, LIVER_NAMES)
    assert note.startswith("a 210 ml tumour region borders the liver on only") and "beside the liver" in note
    inside = labels.copy()
    inside[20:45, 60:120, 30:100] = 2  # the same 210 ml, surrounded by liver
    assert tumour_liver_contact(inside)[0][2] == 1.0 and plausibility_notes(inside, sp, LIVER_NAMES) == []
    small = labels.copy()
    small[20:30, 60:80, 110:140] = 2  # 12 ml sticking out: under LARGE_TUMOUR_ML
    assert plausibility_notes(small, sp, LIVER_NAMES) == []


def test_segment_json_carries_the_field_of_view_note(tmp_path, capsys):
    pytest.importorskip("torch")
    from napari_medai.cli.main import main
    from napari_medai.sample_data import CT_VOLUME

    assert main(["segment", str(CT_VOLUME), "-o", str(tmp_path / "l.nii.gz"), "--device", "cpu", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert any("cut by the field of view" in note for note in doc["notes"])
    assert not any("no liver found" in note for note in doc["notes"])


# ======================================================================================= grading
def test_grade_without_roi_is_refused_api_and_cli(capsys):
    from napari_medai import grade_steatosis
    from napari_medai.cli.main import main
    from napari_medai.sample_data import BMODE_FRAME

    with pytest.raises(MedaiError, match="roi"):
        grade_steatosis(_bmode(), device="cpu")
    assert main(["grade", str(BMODE_FRAME)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "--roi" in err[0]
    assert main(["grade", str(BMODE_FRAME), "--roi", "1,2,30,30", "--auto-roi"]) == 2  # one or the other
    assert capsys.readouterr().err.startswith("error:")


def test_grade_auto_roi_names_its_roi_and_is_uncertain(capsys):
    from napari_medai import grade_steatosis
    from napari_medai.cli.main import main
    from napari_medai.sample_data import BMODE_FRAME, BMODE_LIVER_ROI
    from napari_medai.steatosis.core import AUTO_ROI_SIZE, auto_liver_roi
    from napari_medai.steatosis.preprocess import sector_mask, to_gray

    frame = _bmode()
    roi = auto_liver_roi(frame)
    x, y, w, h = roi
    assert (w, h) == (AUTO_ROI_SIZE, AUTO_ROI_SIZE)
    assert sector_mask(to_gray(frame))[y:y + h, x:x + w].all()  # wholly inside the sector
    # in the liver region, within ~2 ROI widths of the drawn ROI (measured 108 px on this frame)
    assert np.hypot(x + w / 2 - BMODE_LIVER_ROI[0] - 14, y + h / 2 - BMODE_LIVER_ROI[1] - 14) < 130
    r = grade_steatosis(frame, auto_roi=True, device="cpu", heatmap=False)
    assert r.roi == roi and r.roi_source == "auto" and r.uncertain and r.n_patches == 9
    d = r.to_dict()
    assert d["uncertain"] is True and d["roi_source"] == "auto" and d["roi"] == list(roi) and d["uncertain_reasons"]
    assert main(["grade", str(BMODE_FRAME), "--auto-roi", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)["results"][0]
    assert doc["uncertain"] is True and doc["roi_source"] == "auto" and doc["roi"] == list(roi)


def test_grade_in_domain_with_drawn_rois_is_not_flagged():
    from napari_medai import grade_steatosis
    from napari_medai.sample_data import BMODE_KIDNEY_ROI, BMODE_LIVER_ROI

    r = grade_steatosis(_bmode(), roi=BMODE_LIVER_ROI, kidney_roi=BMODE_KIDNEY_ROI, device="cpu", heatmap=False)
    assert r.grade == 0 and not r.uncertain and r.uncertain_reasons == [] and r.roi_source == "user"
    assert r.to_dict()["uncertain"] is False


def test_grade_refuses_ct_in_hu_and_normalised_frames():
    from napari_medai import grade_steatosis

    with pytest.raises(MedaiError, match="not B-mode grey levels"):
        grade_steatosis(_ct_slice_hu(), roi=_liver_roi(), device="cpu")
    with pytest.raises(MedaiError, match="0..1"):
        grade_steatosis(_bmode().astype(np.float32) / 255.0, roi=(288, 200, 28, 28), device="cpu")


@pytest.mark.parametrize("name", ["ct-8bit", "noise", "blank"])
def test_grade_flags_wrong_inputs_as_uncertain(name):
    from napari_medai import grade_steatosis

    image, roi = {
        "ct-8bit": (_ct_slice_8bit, _liver_roi()),
        "noise": (_noise, (100, 100, 56, 56)),
        "blank": (_blank, (100, 100, 56, 56)),
    }[name]
    r = grade_steatosis(image(), roi=roi, device="cpu", heatmap=False)
    assert r.uncertain
    words = ("grey level", "texture", "does not look like")
    assert any(w in reason for reason in r.uncertain_reasons for w in words), r.uncertain_reasons


def test_grade_flags_real_ct_slices_and_passes_real_frames(shared_data):
    import csv

    from napari_medai import grade_steatosis

    # LiTS CT slices (RGB JPEG), ROI on the manual liver mask
    images = sorted((shared_data / "ct" / "lits-slices-2d" / "images").glob("*"))[::60]
    from scipy import ndimage as ndi

    flagged = 0
    n = 0
    for path in images:
        mask = np.asarray(_load(path.parent.parent / "masks" / (path.stem + "_mask.png")).data)
        inner = ndi.binary_erosion(mask == 1, iterations=14)
        if not inner.any():
            continue
        ys, xs = np.nonzero(inner)
        i = len(ys) // 2
        r = grade_steatosis(np.asarray(_load(path).data), roi=(int(xs[i]) - 14, int(ys[i]) - 14, 28, 28), device="cpu",
                            heatmap=False)
        flagged += r.uncertain
        n += 1
    assert n >= 5 and flagged == n
    # the 10 real frames with their drawn ROIs (frame 0 rows of labels.csv) raise no domain doubt
    with open(shared_data / "steatosis" / "labels.csv") as handle:
        rows = {r["patient_id"]: r for r in csv.DictReader(handle) if r["frame"] == "0"}
    from napari_medai.steatosis.core import domain_reasons

    for path in sorted((shared_data / "steatosis" / "frames").glob("*.jpeg")):
        pid = path.name.split("_")[1]
        x, y = int(rows[pid]["liver_roi_x"]), int(rows[pid]["liver_roi_y"])
        frame = np.asarray(_load(path).data)
        assert domain_reasons(frame[y:y + 28, x:x + 28][None].astype(np.float32), frame) == [], path.name


def test_batch_grade_passes_roi_options(tmp_path, capsys):
    from napari_medai.batch.tasks import grade_file
    from napari_medai.cli.main import main
    from napari_medai.sample_data import BMODE_FRAME, BMODE_LIVER_ROI

    assert main(["batch", "grade", str(BMODE_FRAME), "-o", str(tmp_path / "o")]) == 2
    assert "--roi" in capsys.readouterr().err
    row = grade_file(str(BMODE_FRAME), str(tmp_path), {"auto_roi": True, "device": "cpu"})
    assert row["uncertain"] is True and row["roi_source"] == "auto" and len(row["roi"]) == 4
    row = grade_file(str(BMODE_FRAME), str(tmp_path), {"roi": BMODE_LIVER_ROI, "device": "cpu"})
    assert row["roi_source"] == "user" and row["roi"] == list(BMODE_LIVER_ROI)
    with pytest.raises(MedaiError, match="roi"):
        grade_file(str(BMODE_FRAME), str(tmp_path), {"device": "cpu"})


# ======================================================================================= retrieval
def _augmented_brains():
    """Twelve brain-MRI cases from the three packaged slices (flips and small crops)."""
    out = []
    for i in range(3):
        a = _brain(i)
        out += [a, a[:, ::-1], a[8:-8, 8:-8], a[:, ::-1][16:, :]]
    return out


@pytest.fixture(scope="module")
def mri_library():
    from napari_medai.retrieval.library import CaseLibrary

    lib = CaseLibrary("raw-pixels")
    images = _augmented_brains()
    labels = [n for n in ("glioma", "meningioma", "pituitary") for _ in range(4)]
    lib.add_images(images, labels)
    return lib


def test_library_calibration_is_computed_from_the_library(mri_library):
    cal = mri_library.calibration
    assert cal.calibrated and cal.n_cases == 12 and cal.modality == "mri" and cal.modality_share == 1.0
    assert 0 < cal.close_distance < cal.far_distance
    assert cal.embedder_sha256 == mri_library.embedder.sha256


@pytest.mark.parametrize("name", ["ct-hu", "ct-8bit", "ultrasound", "photo", "noise", "blank"])
def test_query_of_another_modality_is_out_of_domain(mri_library, name):
    image = {"ct-hu": _ct_slice_hu, "ct-8bit": _ct_slice_8bit, "ultrasound": _bmode, "photo": _photo,
             "noise": _noise, "blank": _blank}[name]()
    result = mri_library.query(image, k=3)
    assert result.out_of_domain, (name, result.reasons)
    assert result.reasons and len(result) == 3  # hits still come back, for inspection


def test_in_domain_query_is_not_flagged(mri_library):
    from napari_medai.retrieval.library import Hit, QueryResult

    query = _brain(1)[4:-4, 12:]  # a crop of a library image
    result = mri_library.query(query, k=3)
    assert isinstance(result, QueryResult) and isinstance(result, list) and isinstance(result[0], Hit)
    assert not result.out_of_domain, result.reasons
    assert result[0].close and result[0].label == "meningioma"
    assert result[0].to_dict()["close"] is True


def test_old_library_file_is_calibrated_on_load(mri_library, tmp_path):
    from napari_medai.retrieval.library import CaseLibrary

    path = mri_library.save(tmp_path / "lib.medlib")
    con = sqlite3.connect(path)
    stored = json.loads(dict(con.execute("SELECT key, value FROM meta"))["domain_calibration"])
    assert stored["modality"] == "mri" and stored["n_cases"] == 12
    with con:
        con.execute("DELETE FROM meta WHERE key = 'domain_calibration'")  # as files written before #15
    con.close()
    old = CaseLibrary.load(path)
    assert old._calibration is None
    assert old.query(_ct_slice_hu(), k=2).out_of_domain  # calibrated on first query
    assert old.calibration.close_distance == pytest.approx(mri_library.calibration.close_distance)
    fresh = CaseLibrary.load(mri_library.save(tmp_path / "new.medlib"))
    assert fresh._calibration is not None  # stored calibration used, not recomputed


def test_tiny_library_says_it_is_not_calibrated():
    from napari_medai.retrieval.library import CaseLibrary

    lib = CaseLibrary("raw-pixels")
    lib.add_images(_augmented_brains()[:3], ["a", "b", "c"])
    result = lib.query(_brain(0), k=2)
    assert not result.calibrated and not result.out_of_domain and "not calibrated" in result.reasons[0]
    assert lib.query(_blank(), k=2).out_of_domain  # a blank query is refused by any library


def test_cli_query_json_has_out_of_domain_and_close(mri_library, tmp_path, capsys):
    from PIL import Image

    from napari_medai.cli.main import main
    from napari_medai.sample_data import BMODE_FRAME

    path = mri_library.save(tmp_path / "lib.medlib")
    assert main(["retrieve", "query", str(path), str(BMODE_FRAME), "-k", "3", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["out_of_domain"] is True and doc["reasons"] and all("close" in h for h in doc["hits"])
    q = tmp_path / "q.png"
    Image.fromarray(_brain(2)[:, ::-1]).save(q)
    assert main(["retrieve", "query", str(path), str(q), "-k", "2", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["out_of_domain"] is False and doc["hits"][0]["close"] is True


@pytest.fixture(scope="module")
def figshare_library():
    """A small figshare library (every 40th slice, 77 cases) with the shipped embedder."""
    from napari_medai.data_paths import shared_data_dir

    shared_data = shared_data_dir()
    if shared_data is None:
        pytest.skip("real data not available (set NAPARI_MEDAI_DATA or provide ../shared/data)")
    pytest.importorskip("torch")
    from napari_medai.retrieval.embedder import get_embedder
    from napari_medai.retrieval.library import CaseEntry, CaseLibrary

    fig = shared_data / "brain-mri" / "figshare"
    if not fig.is_dir() or not (shared_data / "brain-mri" / "other-sources").is_dir():
        pytest.skip("brain MRI folders not in the shared data")
    entries = [CaseEntry(str(p), p.parent.name) for c in ("glioma", "meningioma", "pituitary")
               for p in sorted((fig / c).glob("*.jpg"), key=lambda p: int(p.stem))[::40]]
    return CaseLibrary.build(entries, embedder=get_embedder("embedder-brain-mri", device="cpu"))


def test_figshare_library_flags_wrong_modality_not_other_mri_sources(figshare_library, shared_data):
    """A small figshare library with the shipped embedder: other-source tumour MRI mostly not flagged;
    CT, ultrasound and noise all flagged (the full measurement is in docs/retrieval.md)."""
    lib = figshare_library
    other = shared_data / "brain-mri" / "other-sources"
    assert lib.calibration.modality == "mri"
    tumour = sorted((other / "tumour-untyped").glob("*"))[::6] + sorted((other / "meningioma").glob("*"))[::3]
    flagged = [lib.query(str(p), k=3).out_of_domain for p in tumour]
    assert np.mean(flagged) <= 0.10, np.mean(flagged)
    wrong = (sorted((shared_data / "steatosis" / "frames").glob("*"))[::3]
             + sorted((shared_data / "ct" / "lits-slices-2d" / "images").glob("*"))[::100]
             + sorted((shared_data / "us-abdominal" / "images").glob("*"))[::6])  # another scanner, never trained on
    for path in wrong:
        assert lib.query(str(path), k=3).out_of_domain, path.name
    assert lib.query(_noise((512, 512), seed=3), k=3).out_of_domain


def test_fan_statistics_fixed_the_missed_ultrasound_without_flagging_other_mri(figshare_library, shared_data):
    """Calibration version 3 (fan statistics, retrained classifier): us-abdominal images the version-2
    classifier missed (P(MRI) 0.37-0.52 against figshare's floor 0.20) are flagged as ultrasound, and
    other-source MRI it took for CT (P(MRI) 0.14-0.18) are not flagged (validation images: they guided
    the change, docs/retrieval.md)."""
    us = shared_data / "us-abdominal" / "images"
    other = shared_data / "brain-mri" / "other-sources" / "notumor"
    for name in ("a36.jpg", "b4.jpg", "b23.jpg", "h60.jpg"):
        if not (us / name).is_file():
            pytest.skip("us-abdominal not in the shared data")
        result = figshare_library.query(str(us / name), k=3)
        assert result.out_of_domain and "looks like ultrasound" in result.reasons[0], (name, result.reasons)
    for name in ("sartaj_image265.jpg", "sartaj_image316.jpg"):
        result = figshare_library.query(str(other / name), k=3)
        assert not result.out_of_domain, (name, result.reasons)


CT_VOLUMES = ("chaos-ct-1/chaos_ct_01_ct.nii.gz", "full-abdomen/abdomen_ct_512x512x146.nii.gz",
              "ircadb-07/ircadb01_07_ct.nii.gz", "totalseg-example/example_ct.nii.gz",
              "totalseg-example/example_ct_sm.nii.gz", "totalseg-example/example_ct_dicom")


@pytest.mark.parametrize("name", CT_VOLUMES)
def test_every_shared_ct_volume_is_out_of_domain_for_an_mri_library(mri_library, shared_data, name):
    """The middle slice of each shared CT volume as loaded (CHAOS and IRCADb lie on their side, which
    the image statistics took for MRI) is flagged by its raw HU values; so is a slice along another axis."""
    from napari_medai.io.readers import load_image

    path = shared_data / "ct" / name
    if not path.exists():
        pytest.skip(f"{name} not in the shared data")
    result = mri_library.query(str(path), k=3)
    assert result.out_of_domain and any("CT values in HU" in r for r in result.reasons), result.reasons
    vol = np.asarray(load_image(path).data)
    other_axis = np.take(vol, vol.shape[1] // 2, axis=1)
    assert any("CT values in HU" in r for r in mri_library.query(other_axis, k=3).reasons)


def test_hu_check_reads_raw_values_before_preparation(mri_library):
    from napari_medai.retrieval.domain import HU_AIR_SHARE, hu_air_share, is_hu_like

    ct = _ct_slice_hu().astype(np.float32)
    assert hu_air_share(ct) > 0.2 and is_hu_like(ct)
    assert hu_air_share(_ct_slice_8bit()) == 0.0 and hu_air_share(_brain(0)) == 0.0  # uint8: never HU
    assert not is_hu_like(_brain(0).astype(np.float32) - 20)  # a slightly negative MRI offset is not air
    assert hu_air_share(np.full((8, 8), np.nan)) == 0.0
    assert mri_library.calibration.hu_share == 0.0
    for image in (ct, np.rot90(ct), ct[::-1]):  # upright, on its side, upside down: all CT in HU
        result = mri_library.query(image, k=2)
        assert result.out_of_domain
        reason = next(r for r in result.reasons if "CT values in HU" in r)
        assert "air at -1000" in reason and "the library holds MRI" in reason
    body = ct[ct.shape[0] // 3: 2 * ct.shape[0] // 3, ct.shape[1] // 3: 2 * ct.shape[1] // 3]
    assert hu_air_share(body) < HU_AIR_SHARE  # a crop inside the body holds no air: left to the image statistics


@pytest.fixture(scope="module")
def ct_library():
    """Fifteen CT slices in HU from the packaged volume (a library of CT cases)."""
    from napari_medai.retrieval.library import CaseLibrary

    vol = _ct()[0]
    lib = CaseLibrary("raw-pixels")
    lib.add_images([vol[z] for z in range(0, 30, 2)], ["liver"] * 15)
    return lib


def test_ct_library_takes_hu_queries_and_remembers_it(ct_library, tmp_path):
    from napari_medai.retrieval.library import CaseLibrary

    assert ct_library.calibration.hu_share == 1.0
    result = ct_library.query(_ct_slice_hu(21), k=2)
    assert not any("CT values in HU" in r for r in result.reasons), result.reasons
    path = ct_library.save(tmp_path / "ct.medlib")
    loaded = CaseLibrary.load(path)
    assert set(loaded._hu.values()) == {True} and len(loaded._hu) == 15
    loaded.remove([loaded.cases()[0]["case_id"]])
    assert loaded.calibrate_domain().hu_share == 1.0 and len(loaded._hu) == 14
    # a file saved before the flags existed: unknown; the library's modality decides
    con = sqlite3.connect(path)
    with con:
        con.execute("DELETE FROM meta WHERE key IN ('hu_cases', 'domain_calibration')")
    con.close()
    old = CaseLibrary.load(path)
    assert old._hu == {} and old.calibration.hu_share is None
    from napari_medai.retrieval.domain import library_takes_hu

    assert library_takes_hu(old.calibration) == (old.calibration.modality == "ct")


def test_old_mri_library_without_hu_flags_still_flags_hu_queries(mri_library, tmp_path):
    from napari_medai.retrieval.library import CaseLibrary

    path = mri_library.save(tmp_path / "mri.medlib")
    con = sqlite3.connect(path)
    with con:
        con.execute("DELETE FROM meta WHERE key IN ('hu_cases', 'domain_calibration')")
    con.close()
    old = CaseLibrary.load(path)
    result = old.query(_ct_slice_hu(), k=2)
    assert old.calibration.hu_share is None and old.calibration.modality == "mri"
    assert any("CT values in HU" in r for r in result.reasons), result.reasons


def _fan_and_head(size=(480, 640), seed=0):
    """A B-mode-like fan (Rayleigh speckle in a convex sector on black) and a head-like oval on black."""
    rng = np.random.default_rng(seed)
    H, W = size
    yy, xx = np.mgrid[:H, :W].astype(np.float64)
    rho, phi = np.hypot(xx - W / 2, yy + 60), np.arctan2(xx - W / 2, yy + 60)
    fan = (rho >= 100) & (rho <= 580) & (np.abs(phi) <= np.deg2rad(35))
    head = ((yy - H / 2) / 200) ** 2 + ((xx - W / 2) / 160) ** 2 <= 1
    return rng.rayleigh(40, (H, W)) * fan, np.where(head, 120 + rng.normal(0, 15, (H, W)), 0.0)


def test_fan_statistics_tell_a_scan_sector_from_a_head():
    """The shape of the non-black region (calibration version 3): a fan's sides are straight and diverge
    with depth, an oval's are curved and open far less, a frame-filling image has no fan at all."""
    from napari_medai.retrieval.domain import STATS_NAMES, image_stats, thumbnail
    from napari_medai.retrieval.preprocess import prepare

    i = STATS_NAMES.index("fan_spread")
    assert STATS_NAMES[i:i + 3] == ["fan_spread", "fan_sides", "fan_top"] and len(STATS_NAMES) == 37
    fan, head = _fan_and_head()
    f = image_stats(thumbnail(prepare(fan, 192)))[i:i + 3]
    h = image_stats(thumbnail(prepare(head, 192)))[i:i + 3]
    full = image_stats(thumbnail(prepare(np.random.default_rng(1).uniform(50, 200, (300, 300)), 192)))[i:i + 3]
    # the fan's width doubles from 15 % to 75 % of its height, along straight sides; its top is narrow
    assert f[0] > 0.8 and f[1] < 0.01 and f[2] < 0.4, f
    assert h[0] < 0.35 and h[1] > f[1] and h[2] > 0.55, h  # an oval: curved sides, a wide top
    assert full.tolist() == pytest.approx([0.0, 0.0, 1.0], abs=1e-6)  # no black: nothing to measure
    blank = image_stats(thumbnail(np.zeros((96, 96), np.float32)))[i:i + 3]
    assert blank.tolist() == [0.0, 0.0, 1.0]


def test_a_synthetic_fan_is_ultrasound_and_out_of_domain_for_an_mri_calibration():
    """The shipped classifier takes a plain speckle fan (no organs, no screen) for ultrasound, and the
    verdict of an MRI library (figshare's floor 0.21) flags it, naming ultrasound."""
    from napari_medai.retrieval.domain import DomainCalibration, image_modality, image_stats, thumbnail, verdict
    from napari_medai.retrieval.preprocess import prepare

    fan, _ = _fan_and_head(seed=2)
    p = image_modality(fan)
    assert p["ultrasound"] == max(p.values()) and p["ultrasound"] > 0.8 and p["mri"] < 0.1, p
    cal = DomainCalibration("x", 3064, close_distance=0.17, far_distance=0.58, modality="mri",
                            modality_share=0.98, modality_floor=0.21, hu_share=0.0)
    ood, reasons, close = verdict(cal, [0.1, 0.12], image_stats(thumbnail(prepare(fan, 192))), False, 0.0)
    assert ood and close == [True, True] and "looks like ultrasound" in reasons[0], reasons


def test_modality_classifier_matches_image_stats_and_its_data_terms():
    """The shipped classifier reads the statistics image_stats makes, and was not trained on data whose
    terms forbid it (us-abdominal is internal evaluation only)."""
    from pathlib import Path

    from napari_medai.retrieval import domain

    doc = json.loads(Path(domain.__file__).with_name(domain.MODALITY_MODEL).read_text())
    assert doc["features"] == list(domain.STATS_NAMES) and doc["classes"] == list(domain.MODALITIES)
    stats = domain.image_stats(domain.thumbnail(np.zeros((64, 64), np.float32)))
    assert stats.shape == (len(domain.STATS_NAMES),)
    assert np.asarray(doc["classifier"]["mean"]).shape == (len(domain.STATS_NAMES),)
    assert "us-abdominal" not in doc["data_terms"] and "share-alike" in doc["data_terms"]
    from napari_medai.steatosis.core import MIN_ULTRASOUND

    p = domain.image_modality(_bmode())  # a packaged Byra frame
    assert p["ultrasound"] == max(p.values()) and p["ultrasound"] >= MIN_ULTRASOUND, p
    for z in (15, 20, 25):  # 8-bit exports of CT slices: not ultrasound for grading
        p = domain.image_modality(_ct_slice_8bit(z))
        assert p["ultrasound"] < MIN_ULTRASOUND, (z, p)


def test_modality_check_weights_are_sha256_verified(monkeypatch):
    """The shipped modality classifier is verified like every weights file: a mismatch refuses."""
    from pathlib import Path

    from napari_medai.errors import MedaiError
    from napari_medai.retrieval import domain
    from napari_medai.runtime.registry import sha256_of

    shipped = Path(domain.__file__).with_name(domain.MODALITY_MODEL)
    assert sha256_of(shipped) == domain.MODALITY_SHA256
    monkeypatch.setattr(domain, "_MODALITY", None)
    monkeypatch.setattr(domain, "MODALITY_SHA256", "0" * 64)
    with pytest.raises(MedaiError, match="SHA-256"):
        domain.modality_model()
