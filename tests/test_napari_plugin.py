"""The plugin in a real (headless, Xvfb) viewer: manifest, widgets, samples, reader and writer."""

import numpy as np
import pytest

from napari_medai.runtime.provenance import METADATA_KEY


def _manifest():
    import npe2

    return npe2.PluginManifest.from_distribution("napari-medai")


def _widget_names():
    return [w.display_name for w in _manifest().contributions.widgets]


def _sample_keys():
    return [s.key for s in _manifest().contributions.sample_data]


def test_manifest_validates():
    manifest = _manifest()
    assert manifest.name == "napari-medai"
    assert {"Settings", "CLAHE enhancement"} <= set(_widget_names())


@pytest.mark.parametrize("name", _widget_names())
def test_every_widget_docks(make_napari_viewer, name):
    viewer = make_napari_viewer()
    dock, widget = viewer.window.add_plugin_dock_widget("napari-medai", name)
    assert widget is not None
    from qtpy.QtWidgets import QLabel

    texts = " ".join(label.text() for label in widget.findChildren(QLabel))
    assert "Research use only" in texts


@pytest.mark.parametrize("key", _sample_keys())
def test_every_sample_opens(make_napari_viewer, key):
    viewer = make_napari_viewer()
    layers = viewer.open_sample("napari-medai", key)
    assert layers
    for layer in layers:
        assert layer.data.size > 0
        assert METADATA_KEY in layer.metadata


def test_ct_sample_geometry_and_label_alignment(make_napari_viewer):
    viewer = make_napari_viewer()
    ct, liver = viewer.open_sample("napari-medai", "abdomen_ct")
    assert tuple(ct.scale) == (3.0, 3.0, 3.0)
    np.testing.assert_allclose(ct.affine.affine_matrix, liver.affine.affine_matrix)
    np.testing.assert_allclose(ct.translate, liver.translate)
    # The liver label covers liver-like HU on the real CT.
    assert 20 < float(np.median(ct.data[liver.data == 1])) < 120


def test_reader_and_nifti_writer_round_trip(shared_data, make_napari_viewer, tmp_path):
    import nibabel as nib

    viewer = make_napari_viewer()
    source = shared_data / "ct/totalseg-example/example_ct_sm.nii.gz"
    [layer] = viewer.open(str(source), plugin="napari-medai")
    assert tuple(layer.scale) == (3.0, 3.0, 3.0)
    labels = viewer.add_labels((layer.data > 0).astype(np.uint8), scale=layer.scale,
                               translate=layer.translate, affine=layer.affine)
    out = tmp_path / "mask.nii.gz"
    from napari_medai._napari import write_nifti

    write_nifti(str(out), labels.data, {"scale": labels.scale, "translate": labels.translate,
                                        "affine": labels.affine.affine_matrix})
    np.testing.assert_allclose(nib.load(out).affine, nib.load(source).affine, atol=1e-4)
    assert nib.load(out).shape == nib.load(source).shape


def test_dicom_folder_opens_in_viewer(shared_data, make_napari_viewer):
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(shared_data / "ct/totalseg-example/example_ct_dicom"), plugin="napari-medai")
    np.testing.assert_allclose(layer.scale, (2.0, 0.9765625, 0.9765625))
    assert layer.data.min() == -1024
