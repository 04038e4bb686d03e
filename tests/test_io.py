"""Readers, writers and geometry: real files from ../shared/data and synthetic oblique volumes."""

import os

import nibabel as nib
import numpy as np
import pytest

from napari_medai.errors import MedaiError
from napari_medai.io.geometry import Geometry
from napari_medai.io.readers import load_image
from napari_medai.io.writers import save_image


def _oblique_affine():
    angle = np.deg2rad(17.0)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.7, 1.3, 4.5]) @ np.diag([-1, 1, 1])  # flipped, oblique, anisotropic
    affine[:3, 3] = [12.5, -30.25, 88.0]
    return affine


def test_nifti_round_trip_keeps_affine_and_voxels(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(-1000, 1000, size=(9, 7, 5)).astype(np.int16)  # NIfTI (i, j, k)
    affine = _oblique_affine()
    source = tmp_path / "oblique.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), source)

    loaded = load_image(source)
    assert loaded.data.shape == (5, 7, 9)  # napari (k, j, i)
    np.testing.assert_allclose(sorted(loaded.geometry.spacing), [0.7, 1.3, 4.5], atol=1e-6)
    assert loaded.geometry.spacing[0] == pytest.approx(4.5)

    out = save_image(tmp_path / "copy.nii.gz", loaded.data, loaded.geometry, inputs=[source])
    back = nib.load(out)
    np.testing.assert_allclose(back.affine, affine, atol=1e-5)
    np.testing.assert_array_equal(np.asanyarray(back.dataobj), data)
    assert back.header.get_qform(coded=True)[1] == 1 and back.header.get_sform(coded=True)[1] == 1


def test_geometry_survives_a_napari_layer_round_trip():
    from napari.layers import Image

    geometry = Geometry.from_affine_ras(_oblique_affine()[:, [2, 1, 0, 3]])
    layer = Image(np.zeros((5, 7, 9), np.float32), **geometry.layer_kwargs())
    again = Geometry.from_layer(layer)
    assert again.matches(geometry)
    np.testing.assert_allclose(again.affine_ras(), geometry.affine_ras(), atol=1e-9)
    # the writer's path (scale, translate, affine from the layer's metadata) is the same code
    state = Geometry.from_layer_state(layer.scale, layer.translate, layer.affine.affine_matrix, 3)
    np.testing.assert_allclose(state.affine_ras(), geometry.affine_ras(), atol=1e-9)
    assert Geometry.from_layer_state((2.0, 1.0), (5.0, 0.0), None, 2).origin == (5.0, 0.0)


def test_totalsegmentator_nifti_scale(shared_data):
    loaded = load_image(shared_data / "ct/totalseg-example/example_ct.nii.gz")
    assert loaded.geometry.layer_kwargs()["scale"] == (3.0, 3.0, 3.0)
    assert loaded.modality == "CT"
    assert loaded.data.shape == (112, 101, 122)


def test_dicom_series_spacing_from_positions_and_hu(shared_data):
    import pydicom

    folder = shared_data / "ct/totalseg-example/example_ct_dicom"
    first = pydicom.dcmread(str(sorted(folder.iterdir())[0]), stop_before_pixels=True)
    assert float(first.SliceThickness) == 3.0  # the tag is wrong; positions are 2 mm apart
    loaded = load_image(folder)
    assert loaded.data.shape == (20, 512, 512)
    np.testing.assert_allclose(loaded.geometry.spacing, (2.0, 0.9765625, 0.9765625), atol=1e-6)
    assert loaded.data.min() == -1024  # HU: rescale intercept applied
    air = loaded.data[:, :20, :20]
    assert np.median(air) < -900
    assert "PatientName" not in loaded.info and "PatientID" not in loaded.info


def test_dicom_matches_its_nifti_export(shared_data):
    """Our DICOM reader and TotalSegmentator's NIfTI export of the series place voxels at the same
    world positions (the export stores rows bottom-up, so voxel (k, j, i) there is (k, 511 - j, i) here)."""
    dicom = load_image(shared_data / "ct/totalseg-example/example_ct_dicom")
    seg = load_image(shared_data / "ct/totalseg-example/example_seg_dicom.nii.gz")
    assert seg.data.shape == dicom.data.shape
    rows = dicom.data.shape[1]
    for k, j, i in [(0, 0, 0), (19, 100, 400), (7, 511, 3)]:
        world_dicom = dicom.geometry.affine_ras() @ [k, j, i, 1]
        world_nifti = seg.geometry.affine_ras() @ [k, rows - 1 - j, i, 1]
        np.testing.assert_allclose(world_dicom, world_nifti, atol=1e-3)


def test_rgb_and_grey_jpeg(shared_data, tmp_path):
    frame = load_image(shared_data / "steatosis/frames/ID_1_Class_0_Fat_3_Image_1.jpeg")
    assert frame.data.ndim == 2 and frame.data.dtype == np.uint8 and not frame.rgb
    rgb = np.zeros((40, 50, 3), np.uint8)
    rgb[..., 0] = 200
    save_image(tmp_path / "rgb.png", rgb, rgb=True)
    loaded = load_image(tmp_path / "rgb.png")
    assert loaded.rgb and loaded.data.shape == (40, 50, 3) and loaded.data[0, 0, 0] == 200


def test_png16_and_tiff_float(tmp_path):
    import imageio.v3 as iio
    import tifffile

    data16 = (np.arange(60, dtype=np.uint16) * 1000).reshape(6, 10)
    iio.imwrite(tmp_path / "a.png", data16)
    assert load_image(tmp_path / "a.png").data.dtype == np.uint16
    stack = np.random.default_rng(1).random((4, 8, 9)).astype(np.float32)
    tifffile.imwrite(tmp_path / "s.tif", stack)
    loaded = load_image(tmp_path / "s.tif")
    assert loaded.data.shape == (4, 8, 9)
    np.testing.assert_array_equal(loaded.data, stack)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("empty.nii.gz", b"", "empty file"),
        ("text.nii.gz", b"hello, not an image", "not gzip"),
        ("bad.png", b"\x89PNG garbage", "not a readable PNG"),
        ("odd.xyz", b"abc", "unsupported file type"),
    ],
)
def test_bad_files_are_refused_in_one_line(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(MedaiError, match=message) as info:
        load_image(path)
    assert "\n" not in str(info.value)


def test_truncated_gzip_and_nan_are_refused(tmp_path):
    data = np.ones((20, 20, 20), np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "ok.nii.gz")
    raw = (tmp_path / "ok.nii.gz").read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(MedaiError, match="truncated|not a readable"):
        load_image(tmp_path / "cut.nii.gz")
    data[3, 3, 3] = np.nan
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "nan.nii.gz")
    with pytest.raises(MedaiError, match="NaN"):
        load_image(tmp_path / "nan.nii.gz")


def test_missing_path_and_empty_folder(tmp_path):
    with pytest.raises(MedaiError, match="does not exist"):
        load_image(tmp_path / "nope.nii.gz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MedaiError, match="empty"):
        load_image(tmp_path / "empty")


def test_writer_never_overwrites_input_and_leaves_nothing_on_failure(tmp_path, monkeypatch):
    source = tmp_path / "in.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), np.eye(4)), source)
    before = source.read_bytes()
    with pytest.raises(MedaiError, match="is the input"):
        save_image(source, np.ones((4, 4, 4)), Geometry.identity(3), inputs=[source])
    assert source.read_bytes() == before

    import napari_medai.io.writers as writers

    def explode(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(writers, "_write_nifti", explode)
    with pytest.raises(RuntimeError):
        save_image(tmp_path / "out.nii.gz", np.ones((4, 4, 4)), Geometry.identity(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.nii.gz"]


def test_gigantic_header_is_refused_before_allocating(tmp_path, monkeypatch):
    header = nib.Nifti1Header()
    header.set_data_shape((4000, 4000, 4000))
    header.set_data_dtype(np.float32)
    image = nib.Nifti1Image(np.zeros((1, 1, 1), np.float32), np.eye(4), header=header)
    path = tmp_path / "huge.nii"
    # Write just the header: the data part is absent, as in a hostile or broken file.
    with open(path, "wb") as handle:
        image.header.set_data_shape((4000, 4000, 4000))
        handle.write(image.header.binaryblock + b"\x00" * 4)
    with pytest.raises(MedaiError, match="would need about"):
        load_image(path)


def test_outputs_get_the_usual_permissions_not_mkstemps_0600(tmp_path):
    import stat

    old = os.umask(0o022)
    try:
        out = save_image(tmp_path / "x.nii.gz", np.zeros((3, 4, 5), np.uint8), Geometry.identity(3))
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["x.nii.gz"]  # no temporary file left beside it
