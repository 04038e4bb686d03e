"""napari widget for liver and tumour segmentation: pick a CT layer, a model and a device, run in the
background (progress + Cancel), get a Labels layer aligned with the source (geometry + provenance).

Re-running on the same image updates the existing result layer through ``data_setitem`` so the change
can be undone. Thin: the work is :func:`napari_medai.segmentation.core.segment` (torch is imported only
when a job runs). Research use only, not a medical device.
"""

from __future__ import annotations


import numpy as np
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from .._qt.common import device_combo, device_note, image_layers, research_banner
from .._qt.jobs import JobPanel
from ..errors import MedaiError

RESULT_SUFFIX = " segmentation"
DEFAULT_MODEL = "liver-tumor-ct"


def _segmentation_models() -> list[str]:
    try:
        from ..runtime.registry import list_models

        names = [c.name for c in list_models(task="segmentation")]
    except MedaiError:
        names = []
    return [DEFAULT_MODEL] + [n for n in names if n != DEFAULT_MODEL]


class SegmentationWidget(QWidget):
    """Liver (1) and tumour (2) segmentation of CT with the shipped model or a user model."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.last_result = None
        self.last_layer = None

        self.layer_box = QComboBox()
        self.model_box = QComboBox()
        self.model_box.setEditable(True)
        self.model_box.addItems(_segmentation_models())
        self.model_box.setToolTip("registered model name, a folder with card.json, a TorchScript file or a MONAI bundle")
        self.browse_button = QPushButton("...")
        self.browse_button.setToolTip("choose a TorchScript file (.ts/.pt) or a model folder")
        self.browse_button.clicked.connect(self._browse)
        model_row = QHBoxLayout()
        model_row.addWidget(self.model_box, 1)
        model_row.addWidget(self.browse_button)
        self.device = device_combo()

        form = QFormLayout()
        form.addRow("CT layer", self.layer_box)
        form.addRow("model", model_row)
        form.addRow("device", self.device)

        self.run_button = QPushButton("Segment liver and tumours")
        self.run_button.clicked.connect(self.run)
        self.volumes = QLabel("")
        self.volumes.setWordWrap(True)  # notes can be long
        self.jobs = JobPanel(self)

        layout = QVBoxLayout(self)
        layout.addWidget(research_banner())
        layout.addLayout(form)
        layout.addWidget(self.run_button)
        layout.addWidget(self.jobs)
        layout.addWidget(self.volumes)
        layout.addWidget(device_note(self.device.currentText()))
        layout.addStretch(1)

        self.refresh_layers()
        events = self.viewer.layers.events
        events.inserted.connect(self.refresh_layers)
        events.removed.connect(self.refresh_layers)

    # ---- layers --------------------------------------------------------------------------------
    def refresh_layers(self, *_):
        current = self.layer_box.currentText()
        names = [l.name for l in image_layers(self.viewer, rgb_ok=False)]
        self.layer_box.blockSignals(True)
        self.layer_box.clear()
        self.layer_box.addItems(names)
        if current in names:
            self.layer_box.setCurrentText(current)
        self.layer_box.blockSignals(False)

    def source_layer(self):
        name = self.layer_box.currentText()
        if not name or name not in self.viewer.layers:
            raise MedaiError("open a CT image first and pick it in 'CT layer'")
        return self.viewer.layers[name]

    def _browse(self):  # pragma: no cover - a file dialog
        path, _ = QFileDialog.getOpenFileName(self, "TorchScript model", "", "TorchScript (*.ts *.pt);;All files (*)")
        if path:
            self.model_box.setCurrentText(path)

    # ---- run -------------------------------------------------------------------------------------
    def run(self):
        from ..io.geometry import Geometry
        from .core import segment

        try:
            layer = self.source_layer()
            if getattr(layer, "rgb", False):
                raise MedaiError(f"layer '{layer.name}' is RGB; segmentation needs a grey-level CT in HU")
            data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
            data = np.asarray(data)
            if data.ndim not in (2, 3):
                raise MedaiError(f"layer '{layer.name}' has shape {data.shape}; give a 2-D slice or a 3-D volume")
            geometry = Geometry.from_layer(layer)
        except MedaiError as exc:
            self.jobs._fail("Segmentation", str(exc))
            return None
        affine = geometry.affine_ras() if geometry.ndim == 3 else None
        model = self.model_box.currentText().strip() or DEFAULT_MODEL
        device = self.device.currentText()

        def job(progress, should_stop):
            return segment(data, spacing=geometry.spacing, affine=affine, model=model, device=device,
                           progress=progress, should_stop=should_stop)

        return self.jobs.run(job, on_result=lambda result: self._show(layer, geometry, result), title="Segmentation")

    # ---- results ---------------------------------------------------------------------------------
    def _show(self, layer, geometry, result):
        from napari.utils.notifications import show_warning

        from ..runtime.provenance import attach_provenance, make_provenance

        prov = make_provenance(
            "segmentation", parameters=result.parameters(), device=result.device, seconds=result.seconds,
            model=result.model if hasattr(result.model, "sha256") else None, input_shape=result.labels.shape,
            geometry=geometry, source=layer.name,
            extra={"volumes_ml": result.volumes_ml, "areas_cm2": result.areas_cm2,
                   "labels": {str(k): v for k, v in result.names.items()}, "notes": list(result.notes)},
        )
        name = layer.name + RESULT_SUFFIX
        existing = self.viewer.layers[name] if name in self.viewer.layers else None
        if existing is not None and tuple(existing.data.shape) == tuple(result.labels.shape):
            old = np.asarray(existing.data)
            changed = np.nonzero(old != result.labels)
            if len(changed[0]):
                existing.data_setitem(changed, result.labels[changed])  # one undoable edit
            existing.metadata = attach_provenance(existing.metadata, prov)
            out = existing
        else:
            if existing is not None:
                self.viewer.layers.remove(existing)
            out = self.viewer.add_labels(result.labels, name=name, metadata=attach_provenance({}, prov),
                                         **geometry.layer_kwargs())
        self.last_result, self.last_layer = result, out
        self.volumes.setText(result.summary() + "".join(f"\nNote: {note}" for note in result.notes))
        for note in result.notes:
            show_warning(f"Segmentation: {note}")
        return out
