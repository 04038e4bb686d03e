"""napari widget for CLAHE: pick a layer and the parameters, preview the current slice, run the whole
layer in the background (progress + Cancel), get a new layer with the source's geometry and provenance.

Thin: the work is :func:`napari_medai.enhance.core.run_clahe` (numba/torch are imported only when a job
runs). Research use only, not a medical device.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from .._qt.common import device_combo, image_layers, research_banner
from .._qt.jobs import JobPanel
from ..errors import MedaiError

MODES = ("auto", "2d", "slices", "3d")
PREVIEW_SUFFIX = " CLAHE preview"
RESULT_SUFFIX = " CLAHE"


def layer_array(layer) -> np.ndarray:
    """The full-resolution data of an Image layer as a NumPy array (level 0 of a multiscale)."""
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    return np.asarray(data)


def current_plane_index(layer, viewer) -> tuple:
    """Indices of the leading (non-YX) axes of ``layer`` at the viewer's current position."""
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    nd = data.ndim - (1 if getattr(layer, "rgb", False) else 0)
    if nd <= 2:
        return ()
    point = np.asarray(layer.world_to_data(viewer.dims.point), dtype=float)
    return tuple(int(np.clip(round(float(point[a])), 0, data.shape[a] - 1)) for a in range(nd - 2))


class ClaheWidget(QWidget):
    """CLAHE enhancement: scikit-image semantics, 2-D / per slice / true 3-D."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.last_result = None
        self.last_provenance: Optional[dict] = None

        self.layer_box = QComboBox()
        self.clip = QDoubleSpinBox()
        self.clip.setRange(0.0, 1.0)
        self.clip.setDecimals(4)
        self.clip.setSingleStep(0.005)
        self.clip.setValue(0.01)
        self.clip.setToolTip("normalised clip limit; 0 = no clipping (plain adaptive equalisation)")
        self.kernel = QLineEdit()
        self.kernel.setPlaceholderText("auto (1/8 of each axis), N or N,N,N")
        self.nbins = QSpinBox()
        self.nbins.setRange(2, 65536)
        self.nbins.setValue(256)
        self.mode = QComboBox()
        self.mode.addItems(MODES)
        self.mode.setToolTip("auto: 2d for images, 3d for volumes; slices: every slice on its own")
        self.use_window = QCheckBox("window")
        self.window_lo = QDoubleSpinBox()
        self.window_hi = QDoubleSpinBox()
        for box, value in ((self.window_lo, -200.0), (self.window_hi, 250.0)):
            box.setRange(-1e6, 1e6)
            box.setDecimals(1)
            box.setValue(value)
            box.setEnabled(False)
        self.use_window.toggled.connect(self.window_lo.setEnabled)
        self.use_window.toggled.connect(self.window_hi.setEnabled)
        self.device = device_combo()

        window_row = QHBoxLayout()
        window_row.addWidget(self.use_window)
        window_row.addWidget(self.window_lo)
        window_row.addWidget(self.window_hi)
        form = QFormLayout()
        form.addRow("image layer", self.layer_box)
        form.addRow("clip limit", self.clip)
        form.addRow("kernel size", self.kernel)
        form.addRow("bins", self.nbins)
        form.addRow("mode", self.mode)
        form.addRow("intensity", window_row)
        form.addRow("device", self.device)

        self.preview_button = QPushButton("Preview slice")
        self.preview_button.setToolTip("2-D CLAHE of the slice in view only (fast); Run does the whole layer")
        self.preview_button.clicked.connect(self.preview)
        self.run_button = QPushButton("Run")
        self.run_button.clicked.connect(self.run)
        buttons = QHBoxLayout()
        buttons.addWidget(self.preview_button)
        buttons.addWidget(self.run_button)
        self.info = QLabel("")
        self.info.setWordWrap(True)
        self.jobs = JobPanel(self)

        layout = QVBoxLayout(self)
        layout.addWidget(research_banner())
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.jobs)
        layout.addWidget(self.info)
        layout.addStretch(1)

        self.refresh_layers()
        events = self.viewer.layers.events
        events.inserted.connect(self.refresh_layers)
        events.removed.connect(self.refresh_layers)
        if hasattr(events, "changed"):
            events.changed.connect(self.refresh_layers)

    # ---- layers ------------------------------------------------------------------------------
    def refresh_layers(self, *_):
        current = self.layer_box.currentText()
        names = [l.name for l in image_layers(self.viewer) if not l.name.endswith(PREVIEW_SUFFIX)]
        self.layer_box.blockSignals(True)
        self.layer_box.clear()
        self.layer_box.addItems(names)
        if current in names:
            self.layer_box.setCurrentText(current)
        else:
            active = getattr(self.viewer.layers.selection, "active", None)
            if active is not None and active.name in names:
                self.layer_box.setCurrentText(active.name)
        self.layer_box.blockSignals(False)

    def source_layer(self):
        name = self.layer_box.currentText()
        if not name or name not in self.viewer.layers:
            raise MedaiError("open an image first and pick it in 'image layer'")
        return self.viewer.layers[name]

    # ---- parameters ------------------------------------------------------------------------------
    def parameters(self) -> dict:
        text = self.kernel.text().strip().lower()
        window = (self.window_lo.value(), self.window_hi.value()) if self.use_window.isChecked() else None
        return {
            "clip_limit": float(self.clip.value()),
            "kernel_size": None if text in ("", "auto") else text,
            "nbins": int(self.nbins.value()),
            "mode": self.mode.currentText(),
            "window": window,
            "device": self.device.currentText(),
        }

    # ---- actions --------------------------------------------------------------------------------
    def preview(self):
        """2-D CLAHE of the plane in view; shown as a one-slice layer at that slice."""
        from ..io.geometry import Geometry
        from .core import run_clahe

        try:
            layer = self.source_layer()
            params = self.parameters()
            index = current_plane_index(layer, self.viewer)
            data = layer_array(layer)
            plane = np.asarray(data[index]) if index else data
            kernel = params["kernel_size"]
            if kernel is not None and "," in kernel:
                kernel = ",".join(kernel.split(",")[-2:])  # the in-plane part of a 3-D kernel
            result = run_clahe(
                plane, kernel_size=kernel, clip_limit=params["clip_limit"], nbins=params["nbins"], mode="2d",
                window=params["window"], rgb=bool(layer.rgb), device=params["device"],
            )
        except MedaiError as exc:
            self.jobs._fail("CLAHE preview", str(exc))
            return None
        geometry = Geometry.from_layer(layer)
        image = result.image
        if index:
            origin = np.asarray(geometry.origin, dtype=float)
            for axis, i in enumerate(index):
                origin[axis] += i * geometry.spacing[axis]
            geometry = Geometry(geometry.spacing, tuple(origin), geometry.orientation)
            image = image.reshape((1,) * len(index) + image.shape)
        prov = self._provenance(result, layer, geometry, extra={"preview_of_slice": list(index), "preview": True})
        name = layer.name + PREVIEW_SUFFIX
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)
        self.viewer.add_image(image, name=name, rgb=bool(layer.rgb), colormap="gray" if not layer.rgb else None,
                              contrast_limits=(0.0, 1.0), metadata=self._metadata(prov), **geometry.layer_kwargs())
        where = f"slice {', '.join(map(str, index))}" if index else "the image"
        self.info.setText(f"preview of {where}: 2-D CLAHE, kernel {'x'.join(map(str, result.kernel_size))}, "
                          f"{result.seconds * 1000:.0f} ms on {result.device}")
        return self.viewer.layers[name]

    def run(self):
        from .core import run_clahe

        try:
            layer = self.source_layer()
            params = self.parameters()
        except MedaiError as exc:
            self.jobs._fail("CLAHE", str(exc))
            return None
        data = layer_array(layer)
        rgb = bool(layer.rgb)

        def job(progress, should_stop):
            return run_clahe(data, rgb=rgb, progress=progress, should_stop=should_stop, **params)

        return self.jobs.run(job, on_result=lambda result: self._show_result(layer, result), title="CLAHE")

    # ---- results --------------------------------------------------------------------------------
    def _provenance(self, result, layer, geometry, extra=None) -> dict:
        from ..runtime.provenance import make_provenance

        return make_provenance(
            "clahe", parameters=result.parameters(), device=result.device, seconds=result.seconds,
            input_shape=np.shape(layer.data[0] if getattr(layer, "multiscale", False) else layer.data),
            geometry=geometry, source=layer.name, extra=extra,
        )

    @staticmethod
    def _metadata(prov: dict) -> dict:
        from ..runtime.provenance import attach_provenance

        return attach_provenance({}, prov)

    def _show_result(self, layer, result):
        from ..io.geometry import Geometry

        geometry = Geometry.from_layer(layer)
        prov = self._provenance(result, layer, geometry)
        self.last_result, self.last_provenance = result, prov
        name = layer.name + RESULT_SUFFIX
        new = self.viewer.add_image(
            result.image, name=name, rgb=result.rgb, colormap=None if result.rgb else "gray",
            contrast_limits=(0.0, 1.0), metadata=self._metadata(prov), **geometry.layer_kwargs(),
        )
        self.info.setText(
            f"{result.mode}, kernel {'x'.join(map(str, result.kernel_size))}, clip {result.clip_limit:g}: "
            f"{result.seconds:.2f} s with {result.backend} on {result.device}"
        )
        return new
