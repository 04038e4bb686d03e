"""Issue 7: every tool refuses bad input in one `error:` line, touches nothing, leaves no output;
no tool opens a network connection; the same input gives the same output on the CPU."""

import hashlib
import importlib.util
import socket

import nibabel as nib
import numpy as np
import pytest

from napari_medai.cli.main import main

TOOLS = {"enhance": "napari_medai.enhance.cli", "grade": "napari_medai.steatosis.cli",
         "segment": "napari_medai.segmentation.cli"}


def _available(command_or_module):
    try:
        return importlib.util.find_spec(TOOLS.get(command_or_module, command_or_module)) is not None
    except ModuleNotFoundError:
        return False


def _bad_inputs(folder):
    folder.mkdir(exist_ok=True)
    cases = {}
    (folder / "zero.nii.gz").write_bytes(b"")
    cases["zero-byte file"] = folder / "zero.nii.gz"
    (folder / "text.nii.gz").write_text("this is not an image")
    cases["text named .nii.gz"] = folder / "text.nii.gz"
    good = folder / "good.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((16, 16, 8), np.int16), np.eye(4)), good)
    raw = good.read_bytes()
    (folder / "cut.nii.gz").write_bytes(raw[: len(raw) // 2])
    cases["truncated gzip"] = folder / "cut.nii.gz"
    nan = np.zeros((16, 16, 8), np.float32)
    nan[2, 2, 2] = np.nan
    nib.save(nib.Nifti1Image(nan, np.eye(4)), folder / "nan.nii.gz")
    cases["NaN voxels"] = folder / "nan.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4, 3), np.float32), np.eye(4)), folder / "4d.nii.gz")
    cases["4-D volume"] = folder / "4d.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((3, 4, 5, 1, 2, 2), np.float32), np.eye(4)), folder / "6d.nii.gz")
    cases["6-D array"] = folder / "6d.nii.gz"
    header = nib.Nifti1Header()
    header.set_data_shape((5000, 5000, 5000))
    header.set_data_dtype(np.float32)
    (folder / "huge.nii").write_bytes(header.binaryblock + b"\0" * 4)
    cases["gigantic header"] = folder / "huge.nii"
    cases["missing file"] = folder / "does_not_exist.nii.gz"
    (folder / "empty_dir").mkdir(exist_ok=True)
    cases["empty folder"] = folder / "empty_dir"
    return cases


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


CASE_NAMES = ["zero-byte file", "text named .nii.gz", "truncated gzip", "NaN voxels", "4-D volume", "6-D array",
              "gigantic header", "missing file", "empty folder"]


@pytest.mark.parametrize("command", list(TOOLS))
@pytest.mark.parametrize("case", CASE_NAMES)
def test_bad_input_is_refused_cleanly(tmp_path, capsys, command, case):
    if not _available(command):
        pytest.skip(f"{command} not in this build")
    source = _bad_inputs(tmp_path / "in")[case]
    before = _sha(source)
    out = tmp_path / "out" / "result.nii.gz"
    out.parent.mkdir()
    argv = [command, str(source)] + (["-o", str(out)] if command != "grade" else ["--auto-roi"])
    code = main(argv)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, (case, captured.err)
    assert len(lines) == 1 and lines[0].startswith("error:"), captured.err
    assert "Traceback" not in captured.err
    assert _sha(source) == before
    assert list(out.parent.iterdir()) == []


@pytest.mark.parametrize("command", ["enhance", "segment"])
def test_output_equal_to_input_is_refused(tmp_path, capsys, command):
    if not _available(command):
        pytest.skip(f"{command} not in this build")
    source = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(np.full((24, 24, 6), -100, np.int16), np.eye(4)), source)
    before = _sha(source)
    assert main([command, str(source), "-o", str(source)]) == 2
    assert capsys.readouterr().err.startswith("error:")
    assert _sha(source) == before


@pytest.fixture
def no_network(monkeypatch):
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise AssertionError(f"network connection attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return attempts


def test_no_tool_touches_the_network(tmp_path, no_network):
    from napari_medai.sample_data import BMODE_FRAME, BMODE_KIDNEY_ROI, BMODE_LIVER_ROI, BRAIN_MRI, CT_VOLUME

    ran = []
    if _available("enhance"):
        assert main(["enhance", str(BMODE_FRAME), "-o", str(tmp_path / "e.png")]) == 0
        ran.append("enhance")
    if _available("grade"):
        roi = ",".join(map(str, BMODE_LIVER_ROI))
        kidney = ",".join(map(str, BMODE_KIDNEY_ROI))
        assert main(["grade", str(BMODE_FRAME), "--roi", roi, "--kidney-roi", kidney, "--json"]) == 0
        ran.append("grade")
    if _available("segment"):
        assert main(["segment", str(CT_VOLUME), "-o", str(tmp_path / "s.nii.gz")]) == 0
        ran.append("segment")
    if _available("napari_medai.retrieval.library"):
        from napari_medai import CaseLibrary

        for path in BRAIN_MRI:
            (tmp_path / "cases" / path.stem.split("_")[2]).mkdir(parents=True, exist_ok=True)
            (tmp_path / "cases" / path.stem.split("_")[2] / path.name).write_bytes(path.read_bytes())
        CaseLibrary.build(tmp_path / "cases").query(np.zeros((64, 64), np.uint8) + 10, k=2)
        ran.append("retrieve")
    assert no_network == []
    if not ran:
        pytest.skip("no tool in this build")


def test_same_input_same_output_on_cpu(tmp_path):
    from napari_medai.io.readers import load_image
    from napari_medai.sample_data import BMODE_FRAME, BMODE_LIVER_ROI, CT_VOLUME

    checked = 0
    frame = load_image(BMODE_FRAME).data
    if _available("enhance"):
        from napari_medai import clahe

        np.testing.assert_array_equal(clahe(frame, device="cpu"), clahe(frame, device="cpu"))
        checked += 1
    if _available("grade"):
        from napari_medai import grade_steatosis

        a = grade_steatosis(frame, roi=BMODE_LIVER_ROI, device="cpu")
        b = grade_steatosis(frame, roi=BMODE_LIVER_ROI, device="cpu")
        np.testing.assert_array_equal(a.probabilities, b.probabilities)
        checked += 1
    if _available("segment"):
        from napari_medai import segment

        ct = load_image(CT_VOLUME)
        a = segment(ct.data, spacing=ct.geometry.spacing, device="cpu")
        b = segment(ct.data, spacing=ct.geometry.spacing, device="cpu")
        np.testing.assert_array_equal(a.labels, b.labels)
        checked += 1
    if not checked:
        pytest.skip("no tool in this build")


@pytest.mark.parametrize("command", ["enhance", "segment"])
def test_unwritable_output_folder_is_one_line_before_any_work(tmp_path, capsys, monkeypatch, command):
    """A read-only output folder used to end, after the whole job, in 'internal error PermissionError'."""
    import os

    if not _available(command):
        pytest.skip(f"{command} not in this build")
    source = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(np.full((24, 24, 6), -100, np.int16), np.eye(4)), source)
    before = _sha(source)
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(locked) else real_access(p, mode))
    import napari_medai.io.readers as readers

    monkeypatch.setattr(readers, "load_image", lambda *a: pytest.fail("the input was read before the output check"))
    assert main([command, str(source), "-o", str(locked / "out.nii.gz")]) == 2
    err = capsys.readouterr().err
    assert err == f"error: cannot write in {locked} (permission denied); choose a folder you can write to\n"
    assert list(locked.iterdir()) == [] and _sha(source) == before


def test_output_inside_the_input_dicom_folder_is_refused(tmp_path, capsys):
    """`segment series/ -o series/labels.nii.gz` used to add the labels to the input series folder."""
    from dicom_factory import write_series

    if not _available("enhance"):
        pytest.skip("enhance not in this build")
    write_series(tmp_path / "series", 3)
    listing = sorted(p.name for p in (tmp_path / "series").iterdir())
    assert main(["enhance", str(tmp_path / "series"), "-o", str(tmp_path / "series" / "out.nii.gz")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: output ") and "is inside the input folder" in err and len(err.splitlines()) == 1
    assert sorted(p.name for p in (tmp_path / "series").iterdir()) == listing
    assert main(["enhance", str(tmp_path / "series"), "-o", str(tmp_path / "out.nii.gz")]) == 0
