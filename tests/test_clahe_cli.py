"""`napari-medai enhance`: real files in, geometry and values out."""

import json

import nibabel as nib
import numpy as np
import pytest

from napari_medai.cli.main import main
from napari_medai.enhance import clahe
from napari_medai.io.readers import load_image
from napari_medai.sample_data import BMODE_FRAME, CT_VOLUME


def test_enhance_nifti_volume_keeps_affine_and_values(tmp_path, capsys):
    out = tmp_path / "ct_clahe.nii.gz"
    code = main(["enhance", str(CT_VOLUME), "-o", str(out), "--window", "-200,250", "--kernel-size", "4,16,16",
                 "--clip-limit", "0.02", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    doc = json.loads(captured.out)  # exactly one JSON document on stdout
    assert doc["parameters"]["mode"] == "3d" and doc["parameters"]["kernel_size"] == [4, 16, 16]
    assert doc["parameters"]["window"] == [-200.0, 250.0] and doc["device"] == "cpu"

    src_img, out_img = nib.load(str(CT_VOLUME)), nib.load(str(out))
    np.testing.assert_allclose(out_img.affine, src_img.affine, atol=1e-4)
    assert out_img.shape == src_img.shape and out_img.get_data_dtype() == np.float32

    loaded = load_image(CT_VOLUME)
    expected = clahe(loaded.data, window=(-200, 250), kernel_size=(4, 16, 16), clip_limit=0.02)
    written = load_image(out)
    assert written.geometry.matches(loaded.geometry)
    np.testing.assert_array_equal(written.data, expected)
    assert written.data.min() == 0.0 and written.data.max() == 1.0


def test_enhance_png_is_8bit_and_tiff_float(tmp_path, capsys):
    png, tif = tmp_path / "frame.png", tmp_path / "frame.tif"
    assert main(["enhance", str(BMODE_FRAME), "-o", str(png)]) == 0
    assert "wrote" in capsys.readouterr().out
    frame = load_image(BMODE_FRAME).data
    expected = clahe(frame)
    got = load_image(png).data
    assert got.dtype == np.uint8 and got.shape == frame.shape
    assert np.abs(got.astype(int) - np.round(expected * 255).astype(int)).max() <= 1

    assert main(["enhance", str(BMODE_FRAME), "-o", str(tif), "--nbins", "128", "--kernel-size", "32"]) == 0
    import tifffile

    data = tifffile.imread(str(tif))
    assert data.dtype == np.float32
    np.testing.assert_array_equal(data, clahe(frame, nbins=128, kernel_size=32))


def test_enhance_slices_mode_and_tiff_volume(tmp_path):
    out = tmp_path / "slices.tif"
    assert main(["enhance", str(CT_VOLUME), "-o", str(out), "--mode", "slices", "--kernel-size", "16,16"]) == 0
    import tifffile

    data = tifffile.imread(str(out))
    ct = load_image(CT_VOLUME).data
    np.testing.assert_array_equal(data, clahe(ct, mode="slices", kernel_size=16))


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--kernel-size", "3,3,3", "--mode", "slices"], "kernel size"),
        (["--window", "250,-200"], "window"),
        (["--clip-limit", "-1"], "clip limit"),
        (["--device", "tpu"], "device"),
    ],
)
def test_enhance_refusals_are_one_line_and_leave_nothing(tmp_path, capsys, extra, words):
    out = tmp_path / "x.nii.gz"
    assert main(["enhance", str(CT_VOLUME), "-o", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and words in err[0]
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_enhance_volume_to_png_is_refused_before_work(tmp_path, capsys):
    assert main(["enhance", str(CT_VOLUME), "-o", str(tmp_path / "v.png")]) == 2
    assert "2-D images only" in capsys.readouterr().err


def test_enhance_one_slice_nifti_to_png_is_the_2d_result(tmp_path, capsys):
    """A 2-D NIfTI slice reads as (1, H, W); writing it as PNG used to be refused as a 3-D volume."""
    import imageio.v3 as iio

    ct = nib.load(str(CT_VOLUME))
    plane = np.asarray(ct.dataobj)[:, :, 15]
    nib.save(nib.Nifti1Image(plane, ct.affine), tmp_path / "slice.nii.gz")
    assert main(["enhance", str(tmp_path / "slice.nii.gz"), "-o", str(tmp_path / "slice.png"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["shape"] == [101, 122] and doc["parameters"]["mode"] == "2d"
    expected = clahe(load_image(tmp_path / "slice.nii.gz").data[0], mode="2d", device="cpu")
    np.testing.assert_array_equal(iio.imread(tmp_path / "slice.png"), np.round(expected * 255).astype(np.uint8))
