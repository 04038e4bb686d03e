"""SteatosisWidget in a real viewer (jobs run synchronously: NAPARI_MEDAI_SYNC=1 from conftest)."""

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari_medai.io.geometry import Geometry  # noqa: E402
from napari_medai.io.readers import load_image  # noqa: E402
from napari_medai.sample_data import BMODE_FRAME, BMODE_KIDNEY_ROI, BMODE_LIVER_ROI  # noqa: E402


def _rect(x, y, w, h):
    return np.array([[y, x], [y, x + w], [y + h, x + w], [y + h, x]], float)


def test_widget_grades_with_rois_and_adds_aligned_heatmap(make_napari_viewer):
    from napari_medai import grade_steatosis
    from napari_medai.steatosis.widget import SteatosisWidget

    viewer = make_napari_viewer()
    frame = load_image(BMODE_FRAME).data
    layer = viewer.add_image(frame, name="bmode", scale=(0.2, 0.2), translate=(5.0, 7.0))
    widget = SteatosisWidget(viewer)
    assert "Research use only" in widget.notice.value
    liver = widget.create_roi_layers()
    assert liver.name == "liver ROI" and "kidney ROI" in viewer.layers
    assert widget.image.value is layer and widget.liver_roi.value is liver
    # shapes share the image's geometry: draw in pixel coordinates of the layer
    liver.add_rectangles(_rect(*BMODE_LIVER_ROI))
    viewer.layers["kidney ROI"].add_rectangles(_rect(*BMODE_KIDNEY_ROI))
    heat = widget()
    assert widget.jobs.last_error is None
    r = widget.last_result
    expected = grade_steatosis(frame, roi=BMODE_LIVER_ROI, kidney_roi=BMODE_KIDNEY_ROI, device="cpu")
    np.testing.assert_allclose(r.probabilities, expected.probabilities, atol=1e-9)
    assert r.roi == BMODE_LIVER_ROI and r.grade == 0
    assert "S0 normal" in widget.grade_text.value
    assert "1.12" in widget.index_text.value
    assert widget.bars[0].value == int(round(1000 * r.probabilities[0]))
    assert heat is viewer.layers["bmode steatosis heat map"]
    assert heat.data.shape == frame.shape
    assert Geometry.from_layer(heat).matches(Geometry.from_layer(layer))
    assert heat.colorbar.visible  # a colour bar, and its units in the widget and the provenance
    assert "probability" in widget.heatmap_text.value
    assert "probability" in heat.metadata["napari_medai"]["heatmap_units"]
    assert heat.metadata["napari_medai"]["tool"] == "steatosis"
    assert heat.metadata["napari_medai"]["parameters"]["roi_source"] == "user"


def test_widget_refuses_a_bare_grade_without_roi(make_napari_viewer):
    from napari_medai.steatosis.widget import SteatosisWidget

    viewer = make_napari_viewer()
    frame = load_image(BMODE_FRAME).data
    viewer.add_image(np.stack([frame, frame]), name="cine")
    widget = SteatosisWidget(viewer)
    assert widget() is None
    assert "liver ROI" in widget.jobs.last_error and "automatically" in widget.jobs.last_error
    assert [layer.name for layer in viewer.layers] == ["cine"]


def test_widget_grades_a_stack_with_a_roi(make_napari_viewer):
    from napari_medai.steatosis.widget import SteatosisWidget

    viewer = make_napari_viewer()
    frame = load_image(BMODE_FRAME).data
    viewer.add_image(np.stack([frame, frame]), name="cine")
    roi = viewer.add_shapes([_rect(*BMODE_LIVER_ROI)], shape_type="rectangle", name="roi")
    widget = SteatosisWidget(viewer)
    widget.liver_roi.value = roi
    widget()
    assert len(widget.last_results) == 2
    assert "patient summary (2 frames)" in widget.grade_text.value
    assert viewer.layers["cine steatosis heat map"].data.shape == (2,) + frame.shape


def test_uncertain_grade_is_shown_with_reasons(make_napari_viewer, monkeypatch):
    """Whatever the core marks uncertain the widget says so (the flag comes from the core, #15)."""
    from napari_medai.steatosis import core
    from napari_medai.steatosis.widget import SteatosisWidget

    real = core.grade_steatosis

    def marked(*args, **kwargs):
        result = real(*args, **kwargs)
        result.uncertain, result.uncertain_reasons = True, ["top probability 0.41 < 0.5"]
        return result

    monkeypatch.setattr(core, "grade_steatosis", marked)
    viewer = make_napari_viewer()
    frame = load_image(BMODE_FRAME).data
    viewer.add_image(frame, name="bmode")
    roi = viewer.add_shapes([_rect(*BMODE_LIVER_ROI)], shape_type="rectangle", name="roi")
    widget = SteatosisWidget(viewer)
    widget.liver_roi.value = roi
    heat = widget()
    assert "uncertain" in widget.grade_text.value
    assert "top probability 0.41 < 0.5" in widget.uncertain_text.value
    assert heat.metadata["napari_medai"]["parameters"]["uncertain"] is True


def test_automatic_roi_is_drawn_as_an_editable_shapes_layer(make_napari_viewer, monkeypatch):
    from napari_medai.steatosis import core
    from napari_medai.steatosis import widget as steatosis_widget
    from napari_medai.steatosis.widget import AUTO_LAYER, SteatosisWidget

    if not steatosis_widget._supports_auto_roi():  # before #15's core lands: emulate its contract
        real = core.grade_steatosis

        def grade(image, *, roi=None, auto_roi=False, **kwargs):
            result = real(image, roi=BMODE_LIVER_ROI if auto_roi else roi, **kwargs)
            result.roi_source, result.uncertain, result.uncertain_reasons = "auto", True, ["automatic ROI"]
            return result

        monkeypatch.setattr(core, "grade_steatosis", grade)
    viewer = make_napari_viewer()
    frame = load_image(BMODE_FRAME).data
    layer = viewer.add_image(frame, name="bmode", scale=(0.5, 0.5))
    widget = SteatosisWidget(viewer)
    widget.auto_roi.value = True
    widget()
    assert widget.jobs.last_error is None, widget.jobs.last_error
    result = widget.last_result
    assert getattr(result, "roi_source", None) == "auto" and result.uncertain
    shapes = viewer.layers[AUTO_LAYER]
    x, y, w, h = result.roi
    corners = shapes.data[0]
    np.testing.assert_allclose(corners.min(0), [y, x])
    np.testing.assert_allclose(corners.max(0), [y + h, x + w])
    np.testing.assert_allclose(shapes.scale, layer.scale)  # drawn on the image, not beside it
    assert widget.liver_roi.value is shapes and widget.auto_roi.value is False  # edit it, then Grade again
    assert "uncertain" in widget.grade_text.value
