"""Messy input at the I/O layer: broken DICOM series, odd dimensions, fuzzed bytes."""

import warnings

import nibabel as nib
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dicom_factory import write_series
from napari_medai.errors import MedaiError
from napari_medai.io.readers import load_image


def test_synthetic_series_spacing_hu_and_no_identifiers(tmp_path):
    write_series(tmp_path / "s", 6, spacing=2.5, thickness_tag=5.0)
    loaded = load_image(tmp_path / "s")
    assert loaded.data.shape == (6, 16, 12)
    np.testing.assert_allclose(loaded.geometry.spacing, (2.5, 0.8, 0.6))
    assert loaded.data.dtype == np.int16 and loaded.data.min() >= -24 and loaded.data.max() < 200
    flat = repr(loaded.info) + repr(loaded.layer_kwargs()["metadata"])
    assert "Secret" not in flat and "12345" not in flat


def test_shuffled_file_order_is_sorted_by_position(tmp_path):
    write_series(tmp_path / "s", 5, positions=[8.0, 0.0, 6.0, 2.0, 4.0])
    loaded = load_image(tmp_path / "s")
    assert loaded.geometry.spacing[0] == pytest.approx(2.0)
    # Slice at z=0 was written second (index 1 -> pixel offset +1).
    assert loaded.data[0].min() >= 1000 - 1024 + 1


def test_several_series_in_one_folder_are_refused(tmp_path):
    write_series(tmp_path / "s", 3, series_uid="1.2.3.111")
    write_series(tmp_path / "s", 3, series_uid="1.2.3.222")
    with pytest.raises(MedaiError, match="2 DICOM series"):
        load_image(tmp_path / "s")


def test_missing_slices_are_refused(tmp_path):
    write_series(tmp_path / "s", 5, positions=[0.0, 2.0, 4.0, 10.0, 12.0])
    with pytest.raises(MedaiError, match="missing slices"):
        load_image(tmp_path / "s")


def test_corrupt_slice_is_named(tmp_path):
    files = write_series(tmp_path / "s", 4)
    raw = files[2].read_bytes()
    files[2].write_bytes(raw[: len(raw) - 100])  # pixel data cut short
    with pytest.raises(MedaiError, match=files[2].name):
        load_image(tmp_path / "s")


def test_gantry_tilt_warns_and_keeps_the_sheared_geometry(tmp_path):
    write_series(tmp_path / "s", 4, spacing=2.0, tilt_mm_per_slice=0.5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = load_image(tmp_path / "s")
    assert any("gantry tilt" in str(w.message) for w in caught)
    world = loaded.geometry.affine_ras() @ [3, 0, 0, 1]
    np.testing.assert_allclose(world[:3], [100.0, 120.0 - 1.5, 6.0], atol=1e-6)  # RAS of slice 3 origin


@pytest.mark.parametrize("shape", [(10,), (4, 5, 6, 2), (3, 4, 5, 1, 1, 2)])
def test_unsupported_dimensions_are_refused(tmp_path, shape):
    path = tmp_path / "odd.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(shape, np.float32), np.eye(4)), path)
    if len(shape) == 1:
        with pytest.raises(MedaiError):
            load_image(path)
        return
    with pytest.raises(MedaiError, match="split time points or channels"):
        load_image(path)


def test_trailing_singleton_dimensions_are_squeezed(tmp_path):
    path = tmp_path / "v.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 5, 6, 1), np.float32), np.eye(4)), path)
    assert load_image(path).data.shape == (6, 5, 4)


def test_infinite_values_are_refused(tmp_path):
    import tifffile

    data = np.ones((8, 8), np.float32)
    data[1, 1] = np.inf
    tifffile.imwrite(tmp_path / "inf.tif", data)
    with pytest.raises(MedaiError, match="NaN or infinite"):
        load_image(tmp_path / "inf.tif")


SUFFIXES = [".nii", ".nii.gz", ".png", ".jpg", ".tif", ".dcm"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.binary(min_size=0, max_size=600), suffix=st.sampled_from(SUFFIXES), keep_header=st.booleans())
def test_fuzzed_files_never_crash_the_readers(tmp_path, payload, suffix, keep_header):
    """Random bytes (optionally after a valid magic number) give a MedaiError or a valid image, never a crash."""
    magic = {".nii.gz": b"\x1f\x8b", ".png": b"\x89PNG\r\n\x1a\n", ".jpg": b"\xff\xd8\xff", ".tif": b"II*\x00",
             ".dcm": b"\0" * 128 + b"DICM", ".nii": b"\x5c\x01\x00\x00"}[suffix]
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes((magic if keep_header else b"") + payload)
    try:
        loaded = load_image(path)
    except MedaiError as exc:
        assert "\n" not in str(exc)
    else:
        assert loaded.data.size > 0
