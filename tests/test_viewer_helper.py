"""`napari_medai.add_to_viewer` and `LoadedImage.layer_kwargs`: every result lands aligned with its source;
the README's Python route runs as written."""

import re
import types
from pathlib import Path

import numpy as np
import pytest

from napari_medai.io.readers import load_image
from napari_medai.sample_data import BMODE_FRAME, CT_LIVER, CT_VOLUME

README = Path(__file__).resolve().parents[1] / "README.md"


def _readme_route() -> str:
    text = README.read_text()
    marker = text.index("<!-- python-route")
    return re.search(r"```python\n(.*?)```", text[marker:], re.S).group(1)


def test_readme_python_route_lands_aligned(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    ct_path = tmp_path / "ct.nii.gz"
    ct_path.write_bytes(Path(CT_VOLUME).read_bytes())
    code = _readme_route().replace('"ct.nii.gz"', repr(str(ct_path)))
    fake_napari = types.SimpleNamespace(Viewer=lambda: viewer, run=lambda: None)
    namespace = {"__name__": "readme"}
    exec(compile(code.replace("import napari\n", ""), "README.md", "exec"), {"napari": fake_napari, **namespace},
         namespace)
    ct, labels = namespace["ct"], namespace["labels"]
    matrix = lambda layer: np.asarray(layer._data_to_world.affine_matrix)  # noqa: E731
    np.testing.assert_allclose(matrix(labels), matrix(ct), atol=1e-9)
    # and both sit exactly where the plugin's reader puts the same file
    [opened] = viewer.open(str(ct_path), plugin="napari-medai")
    np.testing.assert_allclose(matrix(ct), matrix(opened), atol=1e-9)
    # named, coloured structures with volumes as features
    assert list(labels.features["name"]) == ["background", "liver", "tumour"]
    assert labels.features["volume_ml"][1] == pytest.approx(namespace["seg"].volumes_ml["liver"])
    assert np.allclose(labels.colormap.map(np.array([1]))[0][:3], (0.80, 0.36, 0.26), atol=0.01)
    assert labels.metadata["napari_medai"]["tool"] == "segmentation"
    # the label under a world point is the same voxel of the CT
    world = ct.data_to_world([20, 60, 60])
    np.testing.assert_allclose(labels.world_to_data(world), [20, 60, 60], atol=1e-6)


def test_layer_kwargs_work_for_labels_and_images(make_napari_viewer):
    viewer = make_napari_viewer()
    img = load_image(CT_VOLUME)
    truth = load_image(CT_LIVER).data.astype(np.uint8)
    image = viewer.add_image(img.data, **img.layer_kwargs())
    labels = viewer.add_labels(truth, **img.layer_kwargs("labels"))  # used to raise on "rgb"
    np.testing.assert_allclose(labels.affine.affine_matrix, image.affine.affine_matrix)
    np.testing.assert_allclose(labels.translate, image.translate)
    assert labels.name.endswith(" labels")
    from napari_medai.errors import MedaiError

    with pytest.raises(MedaiError):
        img.layer_kwargs("points")


def test_add_to_viewer_places_arrays_and_heat_maps_and_refuses_mismatch(make_napari_viewer):
    import napari_medai as nm
    from napari_medai.errors import MedaiError
    from napari_medai.sample_data import BMODE_LIVER_ROI

    viewer = make_napari_viewer()
    frame = load_image(BMODE_FRAME)
    src = viewer.add_image(frame.data, name="bmode", scale=(0.3, 0.3), translate=(4.0, 2.0))
    enhanced = nm.add_to_viewer(viewer, nm.clahe(frame.data), like=src)
    assert enhanced.name == "bmode result"
    np.testing.assert_allclose(enhanced.scale, src.scale)
    np.testing.assert_allclose(enhanced.translate, src.translate)
    mask = nm.add_to_viewer(viewer, frame.data > 100, like=src)
    assert type(mask).__name__ == "Labels" and mask.data.dtype == np.uint8
    result = nm.grade_steatosis(frame.data, roi=BMODE_LIVER_ROI)
    heat = nm.add_to_viewer(viewer, result, like=src)
    heat = heat[0] if isinstance(heat, list) else heat
    assert heat.name == "bmode steatosis heat map" and heat.colorbar.visible
    np.testing.assert_allclose(heat.scale, src.scale)
    with pytest.raises(MedaiError, match="like="):
        nm.add_to_viewer(viewer, np.zeros((3, 4, 5), np.float32), like=src)
    with pytest.raises(MedaiError, match="cannot place"):
        nm.add_to_viewer(viewer, {"not": "a result"})


def test_tumour_count_and_largest_diameter():
    from napari_medai.segmentation.measure import max_diameter_mm, tumour_summary

    labels = np.zeros((20, 40, 40), np.uint8)
    labels[5:15, 5:35, 5:35] = 1
    labels[8:11, 10:20, 10:12] = 2  # 3 x 10 x 2 voxels
    labels[12, 30, 30] = 2  # a single voxel
    spacing = (2.0, 0.5, 0.5)
    out = tumour_summary(labels, {1: "liver", 2: "tumour"}, spacing)
    assert out["tumour_count"] == 2
    # corners (8,10,10) and (10,19,11): sqrt((2*2)^2 + (9*0.5)^2 + (1*0.5)^2)
    assert out["largest_tumour_mm"] == pytest.approx(np.sqrt(16 + 20.25 + 0.25), abs=0.05)
    assert tumour_summary(labels, {1: "liver"}, spacing) == {"tumour_count": None, "largest_tumour_mm": None}
    disc = np.hypot(*np.mgrid[-30:31, -30:31]) <= 25
    assert max_diameter_mm(disc, (1.0, 1.0)) == pytest.approx(50.0, abs=0.5)
