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
    assert any("Research use only" in l.text() for l in widget.findChildren(type(widget.info)))
    liver = widget.create_roi_layers()
    assert liver.name == "liver ROI" and "kidney ROI" in viewer.layers
    # shapes share the image's geometry: draw in pixel coordinates of the layer
    liver.add_rectangles(_rect(*BMODE_LIVER_ROI))
    viewer.layers["kidney ROI"].add_rectangles(_rect(*BMODE_KIDNEY_ROI))
    widget.run()
    assert widget.jobs.last_error is None
    r = widget.last_result
    expected = grade_steatosis(frame, roi=BMODE_LIVER_ROI, kidney_roi=BMODE_KIDNEY_ROI, device="cpu")
    np.testing.assert_allclose(r.probabilities, expected.probabilities, atol=1e-9)
    assert r.roi == BMODE_LIVER_ROI and r.grade == 0
    assert "S0 normal" in widget.grade_label.text()
    assert "1.12" in widget.index_label.text()
    assert widget.bars[0].value() == int(round(1000 * r.probabilities[0]))
    heat = viewer.layers["bmode steatosis heat map"]
    assert heat.data.shape == frame.shape
    assert Geometry.from_layer(heat).matches(Geometry.from_layer(layer))
    prov = heat.metadata["napari_medai"]
    assert "steatosis" in str(prov)


def test_widget_without_roi_asks_for_one_and_grades_a_stack(make_napari_viewer):
    from napari_medai.steatosis.widget import SteatosisWidget

    viewer = make_napari_viewer()
    frame = load_image(BMODE_FRAME).data
    viewer.add_image(np.stack([frame, frame]), name="cine")
    widget = SteatosisWidget(viewer)
    widget.model.setText("steatosis-default")
    widget.run()
    assert "draw a liver ROI" in widget.info.text().lower() or "no roi" in widget.info.text().lower()
    assert len(widget.last_results) == 2
    assert "patient summary (2 frames)" in widget.grade_label.text()
    assert viewer.layers["cine steatosis heat map"].data.shape == (2,) + frame.shape
