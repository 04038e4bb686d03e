"""napari widget for fatty-liver grading: image + liver ROI (+ optional kidney-cortex ROI) from Shapes
layers -> grade, probabilities (bar chart), hepatorenal index, and an occlusion heat map layer aligned
with the source. A stack of frames is graded frame by frame with a patient-level summary.

Thin: the work is :func:`napari_medai.steatosis.core.grade_steatosis` (torch only inside the job).
Research use only, not a medical device.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGridLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from .._qt.common import device_combo, device_note, image_layers, research_banner
from .._qt.jobs import JobPanel
from ..errors import MedaiError

NONE = "(none)"
LIVER_LAYER = "liver ROI"
KIDNEY_LAYER = "kidney ROI"
LABELS = ("S0 normal", "S1 mild", "S2 moderate", "S3 severe")


def shape_roi(shapes_layer, image_layer, frame_shape):
    """The last shape of ``shapes_layer`` in the image's pixel grid: (x, y, w, h) for a rectangle, a
    boolean mask for a polygon / ellipse. None when the layer has no shape."""
    if shapes_layer is None or len(shapes_layer.data) == 0:
        return None
    verts = np.asarray(shapes_layer.data[-1], dtype=float)
    kind = shapes_layer.shape_type[-1]
    try:
        world = np.array([shapes_layer.data_to_world(v) for v in verts])
        pix = np.array([image_layer.world_to_data(w) for w in world])
    except Exception:  # older napari: same coordinates
        pix = verts
    rc = pix[:, -2:]
    if kind == "rectangle":
        r0, c0 = rc.min(axis=0)
        r1, c1 = rc.max(axis=0)
        return (int(round(c0)), int(round(r0)), max(1, int(round(c1 - c0))), max(1, int(round(r1 - r0))))
    from skimage.draw import ellipse, polygon2mask

    if kind == "ellipse":
        mask = np.zeros(frame_shape, bool)
        center = rc.mean(axis=0)
        radius = (rc.max(axis=0) - rc.min(axis=0)) / 2
        rr, cc = ellipse(center[0], center[1], max(radius[0], 1), max(radius[1], 1), shape=frame_shape)
        mask[rr, cc] = True
        return mask
    return polygon2mask(frame_shape, rc)


class SteatosisWidget(QWidget):
    """Fatty-liver grade (S0-S3) from a liver ROI, optionally with a kidney-cortex ROI."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.last_result = None
        self.last_results = []
        self.last_provenance: Optional[dict] = None

        self.image_box = QComboBox()
        self.liver_box = QComboBox()
        self.kidney_box = QComboBox()
        self.model = QLineEdit("steatosis-default")
        self.model.setToolTip("registered model name or a folder with card.json")
        self.device = device_combo()
        form = QFormLayout()
        form.addRow("image", self.image_box)
        form.addRow("liver ROI (shapes)", self.liver_box)
        form.addRow("kidney ROI (optional)", self.kidney_box)
        form.addRow("model", self.model)
        form.addRow("device", self.device)

        self.draw_button = QPushButton("Add ROI layers")
        self.draw_button.setToolTip("create 'liver ROI' and 'kidney ROI' Shapes layers and start drawing a rectangle")
        self.draw_button.clicked.connect(self.create_roi_layers)
        self.run_button = QPushButton("Grade")
        self.run_button.clicked.connect(self.run)
        self.jobs = JobPanel(self)

        self.grade_label = QLabel("grade: -")
        self.index_label = QLabel("hepatorenal index: -")
        self.bars = []
        grid = QGridLayout()
        for i, name in enumerate(LABELS):
            bar = QProgressBar()
            bar.setRange(0, 1000)
            bar.setFormat(f"{name}: %p%")
            grid.addWidget(bar, i, 0)
            self.bars.append(bar)
        self.info = QLabel("")
        self.info.setWordWrap(True)

        layout = QVBoxLayout(self)
        layout.addWidget(research_banner())
        layout.addLayout(form)
        layout.addWidget(self.draw_button)
        layout.addWidget(self.run_button)
        layout.addWidget(self.jobs)
        layout.addWidget(self.grade_label)
        layout.addLayout(grid)
        layout.addWidget(self.index_label)
        layout.addWidget(self.info)
        layout.addWidget(device_note())
        layout.addStretch(1)

        self.refresh_layers()
        events = self.viewer.layers.events
        events.inserted.connect(self.refresh_layers)
        events.removed.connect(self.refresh_layers)

    # ---- layers ------------------------------------------------------------------------------
    def _fill(self, box, names, prefer=None, none=False):
        current = box.currentText()
        box.blockSignals(True)
        box.clear()
        if none:
            box.addItem(NONE)
        box.addItems(names)
        if current in names or (none and current == NONE):
            box.setCurrentText(current)
        elif prefer in names:
            box.setCurrentText(prefer)
        box.blockSignals(False)

    def refresh_layers(self, *_):
        from napari.layers import Shapes

        images = [l.name for l in image_layers(self.viewer) if not l.name.endswith(" steatosis heat map")]
        shapes = [l.name for l in self.viewer.layers if isinstance(l, Shapes)]
        self._fill(self.image_box, images)
        self._fill(self.liver_box, shapes, prefer=LIVER_LAYER, none=True)
        self._fill(self.kidney_box, shapes, prefer=KIDNEY_LAYER, none=True)
        if self.kidney_box.currentText() == self.liver_box.currentText() and KIDNEY_LAYER not in shapes:
            self.kidney_box.setCurrentText(NONE)

    def create_roi_layers(self):
        """Shapes layers for the liver (yellow) and kidney cortex (cyan) ROIs, liver active in rectangle mode."""
        image = self._layer(self.image_box.currentText())
        kwargs = {}
        if image is not None:
            from ..io.geometry import Geometry

            kwargs = Geometry.from_layer(image).layer_kwargs() if image.ndim == 2 else {}
        if KIDNEY_LAYER not in self.viewer.layers:
            self.viewer.add_shapes(name=KIDNEY_LAYER, edge_color="cyan", face_color="transparent", edge_width=2, **kwargs)
        if LIVER_LAYER not in self.viewer.layers:
            self.viewer.add_shapes(name=LIVER_LAYER, edge_color="yellow", face_color="transparent", edge_width=2, **kwargs)
        liver = self.viewer.layers[LIVER_LAYER]
        self.viewer.layers.selection.active = liver
        try:
            liver.mode = "add_rectangle"
        except Exception:  # pragma: no cover
            pass
        self.refresh_layers()
        self.liver_box.setCurrentText(LIVER_LAYER)
        self.kidney_box.setCurrentText(KIDNEY_LAYER)
        self.info.setText("draw a rectangle or polygon in liver parenchyma (away from vessels) on 'liver ROI', "
                          "optionally one in the right kidney cortex on 'kidney ROI', then Grade")
        return liver

    def _layer(self, name):
        return self.viewer.layers[name] if name and name != NONE and name in self.viewer.layers else None

    # ---- run ----------------------------------------------------------------------------------
    def run(self):
        return self.grade()

    def _inputs(self):
        image = self._layer(self.image_box.currentText())
        if image is None:
            raise MedaiError("open a B-mode image first and pick it in 'image'")
        data = image.data[0] if getattr(image, "multiscale", False) else image.data
        data = np.asarray(data)
        rgb = bool(image.rgb)
        frame_shape = data.shape[-3:-1] if rgb else data.shape[-2:]
        liver = shape_roi(self._layer(self.liver_box.currentText()), image, frame_shape)
        kidney = shape_roi(self._layer(self.kidney_box.currentText()), image, frame_shape)
        return image, data, rgb, liver, kidney

    def grade(self):
        """Grade the chosen image (every frame of a stack) in the background; results come back here."""
        from .core import grade_steatosis

        try:
            image, data, rgb, liver, kidney = self._inputs()
        except MedaiError as exc:
            self.jobs._fail("Steatosis", str(exc))
            return None
        if liver is None:
            self.info.setText("no liver ROI: the whole sector is graded. Draw a liver ROI for a reliable grade "
                              "(Add ROI layers).")
        model = self.model.text().strip() or None
        device = self.device.currentText()
        frames = [data] if data.ndim == (3 if rgb else 2) else [data[i] for i in range(data.shape[0])]

        def job(progress, should_stop):
            out = []
            for i, f in enumerate(frames):
                def sub(j, n, i=i):
                    progress(i * 100 + int(100 * j / max(n, 1)), 100 * len(frames))
                out.append(grade_steatosis(f, roi=liver, kidney_roi=kidney, model=model, device=device,
                                           progress=sub, should_stop=should_stop))
            return out

        return self.jobs.run(job, on_result=lambda results: self._show(image, results, liver, kidney), title="Steatosis")

    # ---- results ------------------------------------------------------------------------------
    def _show(self, image, results, liver, kidney):
        from ..io.geometry import Geometry
        from ..runtime.provenance import attach_provenance, make_provenance
        from ..runtime.registry import resolve_model

        self.last_results = results
        probs = np.mean([r.probabilities for r in results], axis=0)
        grade = int(np.argmax(probs))
        self.last_result = results[0] if len(results) == 1 else None
        for bar, p in zip(self.bars, probs):
            bar.setValue(int(round(1000 * float(p))))
        if len(results) == 1:
            self.grade_label.setText(f"<b>grade: {results[0].label}</b>")
        else:
            per = ", ".join(f"{i}: S{r.grade}" for i, r in enumerate(results))
            self.grade_label.setText(f"<b>patient summary ({len(results)} frames): {LABELS[grade]}</b><br>per frame: {per}")
        hri = [r.hepatorenal_index for r in results if r.hepatorenal_index is not None]
        self.index_label.setText(f"hepatorenal index: {np.mean(hri):.3f}" if hri else
                                 "hepatorenal index: - (draw a kidney-cortex ROI)")
        warnings = sorted({w for r in results for w in r.warnings})
        self.info.setText("\n".join(warnings))
        heat = results[0].heatmap if len(results) == 1 else np.stack([r.heatmap for r in results])
        try:
            card = resolve_model(results[0].model, task="steatosis")
        except MedaiError:
            card = None
        params = {"roi": list(results[0].roi) if results[0].roi else ("mask" if liver is not None else None),
                  "kidney_roi": list(results[0].kidney_roi) if results[0].kidney_roi else None,
                  "grade": grade, "probabilities": [float(p) for p in probs],
                  "hepatorenal_index": float(np.mean(hri)) if hri else None}
        geometry = Geometry.from_layer(image)
        prov = make_provenance("steatosis", parameters=params, device=results[0].device,
                               seconds=float(sum(r.seconds for r in results)), model=card,
                               input_shape=np.shape(image.data), geometry=geometry, source=image.name)
        self.last_provenance = prov
        name = image.name + " steatosis heat map"
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)
        vmax = float(heat.max()) if heat.max() > 0 else 1.0
        layer = self.viewer.add_image(heat, name=name, colormap="inferno", opacity=0.5, blending="additive",
                                      contrast_limits=(0.0, vmax), metadata=attach_provenance({}, prov),
                                      **geometry.layer_kwargs())
        return layer
