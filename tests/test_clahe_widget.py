"""ClaheWidget in a real viewer (jobs run synchronously: NAPARI_MEDAI_SYNC=1 from conftest)."""

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari_medai.enhance import clahe  # noqa: E402
from napari_medai.io.geometry import Geometry  # noqa: E402
from napari_medai.io.readers import load_image  # noqa: E402
from napari_medai.sample_data import BMODE_FRAME, CT_VOLUME  # noqa: E402


@pytest.fixture
def ct_viewer(make_napari_viewer):
    from napari_medai.enhance.widget import ClaheWidget

    viewer = make_napari_viewer()
    ct = load_image(CT_VOLUME)
    layer = viewer.add_image(ct.data, **ct.layer_kwargs())
    widget = ClaheWidget(viewer)
    return viewer, widget, layer, ct


def test_run_adds_layer_with_geometry_pixels_and_provenance(ct_viewer):
    viewer, widget, layer, ct = ct_viewer
    assert "Research use only" in widget.notice.value
    assert widget.image.value is layer
    widget.clip_limit.value = 0.02
    widget.kernel_size.value = "4,16,16"
    widget.use_window.value = True  # -200, 250 by default
    out = widget(block=True)
    assert out is viewer.layers[layer.name + " CLAHE"]
    expected = clahe(ct.data, kernel_size=(4, 16, 16), clip_limit=0.02, window=(-200, 250))
    np.testing.assert_array_equal(out.data, expected)
    assert out.data.dtype == np.float32 and out.data.shape == ct.data.shape
    assert Geometry.from_layer(out).matches(ct.geometry)
    np.testing.assert_allclose(out.scale, layer.scale)
    np.testing.assert_allclose(out.translate, layer.translate)
    np.testing.assert_allclose(out.affine.affine_matrix, layer.affine.affine_matrix)
    record = out.metadata["napari_medai"]
    assert record["tool"] == "clahe" and record["device"] == "cpu"
    assert record["parameters"]["mode"] == "3d" and record["parameters"]["kernel_size"] == [4, 16, 16]
    assert record["parameters"]["window"] == [-200.0, 250.0]
    assert record["input_shape"] == list(ct.data.shape) and "Research use only" in record["notice"]
    assert widget.jobs.last_error is None and widget.jobs.status.text().startswith("CLAHE: done")


def test_preview_runs_on_the_current_slice_only(ct_viewer):
    viewer, widget, layer, ct = ct_viewer
    viewer.dims.set_point(0, viewer.dims.range[0][0])  # world z of slice 0, then step to slice 12
    index = 12
    world = layer.data_to_world([index, 0, 0])
    viewer.dims.set_point(0, world[0])
    widget.mode.value = "slices"
    widget.kernel_size.value = "16"
    preview = widget.preview()
    assert preview.data.shape == (1,) + ct.data.shape[1:]
    np.testing.assert_array_equal(preview.data[0], clahe(ct.data[index], kernel_size=16))
    # the one-slice layer sits exactly on slice 12 of the source
    np.testing.assert_allclose(preview.data_to_world([0, 5, 7]), layer.data_to_world([index, 5, 7]), atol=1e-6)
    assert preview.metadata["napari_medai"]["preview_of_slice"] == [index]
    assert preview not in widget.image.choices  # previews are not offered as inputs
    assert widget.image.value is layer
    again = widget.preview()  # replaces, does not pile up
    assert sum(layer.name == again.name for layer in viewer.layers) == 1


def test_rgb_frame_and_refused_kernel(make_napari_viewer):
    from napari_medai.enhance.widget import ClaheWidget

    viewer = make_napari_viewer()
    frame = load_image(BMODE_FRAME).data
    rgb = np.stack([frame, frame, (frame * 0.7).astype(np.uint8)], -1)
    viewer.add_image(rgb, name="bmode", rgb=True)
    widget = ClaheWidget(viewer)
    widget.run()
    out = viewer.layers["bmode CLAHE"]
    assert out.rgb and out.data.shape == rgb.shape
    np.testing.assert_allclose(out.data, clahe(rgb), atol=1e-6)
    assert out.metadata["napari_medai"]["parameters"]["rgb"] is True

    widget.kernel_size.value = "bad,kernel"
    widget.run()
    assert widget.jobs.last_error and "kernel size" in widget.jobs.last_error
    assert [layer.name for layer in viewer.layers] == ["bmode", "bmode CLAHE"]


def test_cancel_from_the_job_panel_leaves_no_layer(ct_viewer):
    viewer, widget, layer, ct = ct_viewer
    # Cancel as soon as the job reports progress (the synchronous runner calls the slot directly).
    widget.jobs._relay.progressed.connect(lambda i, n: widget.jobs.cancel())
    widget.run()
    assert widget.jobs.status.text() == "CLAHE: cancelled"
    assert [layer.name for layer in viewer.layers] == [layer.name]


def test_scripted_from_the_dock_and_clip_limit_remembered(make_napari_viewer):
    """The route the README documents: dock by name, set a value, call the widget."""
    from napari_medai._qt.prefs import get_pref

    viewer = make_napari_viewer()
    frame = load_image(BMODE_FRAME)
    layer = viewer.add_image(frame.data, name="bmode")
    _, w = viewer.window.add_plugin_dock_widget("napari-medai", "CLAHE enhancement")
    w.clip_limit.value = 0.02
    out = w()  # NAPARI_MEDAI_SYNC=1 in tests: runs in the foreground and returns the layer
    np.testing.assert_allclose(out.data, clahe(frame.data, clip_limit=0.02), atol=1e-6)
    assert out.metadata["napari_medai"]["parameters"]["clip_limit"] == 0.02
    assert get_pref("clahe.clip_limit") == 0.02
    # the layer box follows the selected layer, but not the widget's own results
    other = viewer.add_image(frame.data[::2, ::2], name="half")
    viewer.layers.selection.active = other
    assert w.image.value is other
    viewer.layers.selection.active = out
    assert w.image.value is other
    viewer.layers.selection.active = layer
    assert w.image.value is layer


def test_button_runs_in_a_worker_thread(make_napari_viewer, qtbot, monkeypatch):
    """Off the UI thread (the real path): w() returns the worker; the layer arrives when it returns."""
    monkeypatch.setenv("NAPARI_MEDAI_SYNC", "0")
    viewer = make_napari_viewer()
    frame = load_image(BMODE_FRAME).data
    viewer.add_image(frame, name="bmode")
    _, w = viewer.window.add_plugin_dock_widget("napari-medai", "CLAHE enhancement")
    worker = w()
    assert worker is not None and w.jobs.busy
    with qtbot.waitSignal(worker.finished, timeout=60000):
        pass
    qtbot.waitUntil(lambda: "bmode CLAHE" in viewer.layers, timeout=10000)
    np.testing.assert_allclose(viewer.layers["bmode CLAHE"].data, clahe(frame), atol=1e-6)
    assert not w.jobs.busy
