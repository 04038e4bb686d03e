"""napari widget: open or build a case library, query it with the image / slice / Shapes ROI in view,
browse the k nearest cases as a thumbnail gallery (click to open a case), see the label vote.

Thin: the work is :class:`napari_medai.retrieval.library.CaseLibrary`, run through JobPanel.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import numpy as np
from qtpy.QtCore import QSize, Qt
from qtpy.QtGui import QIcon, QImage, QPixmap
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from .._qt.common import research_banner
from .._qt.jobs import JobPanel
from ..errors import MedaiError

MODES = ("current slice / image", "Shapes ROI")


def current_plane(layer, viewer) -> tuple[np.ndarray, Optional[int]]:
    """The 2D plane of an Image layer at the viewer's current position: (plane, slice index or None)."""
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    rgb = bool(getattr(layer, "rgb", False))
    nd = data.ndim - (1 if rgb else 0)
    if nd == 2:
        return np.asarray(data), None
    point = np.asarray(layer.world_to_data(viewer.dims.point))
    lead = [int(np.clip(round(float(point[a])), 0, data.shape[a] - 1)) for a in range(nd - 2)]
    plane = np.asarray(data[tuple(lead)])
    return plane, (lead[-1] if lead else None)


def roi_from_shapes(shapes_layer, image_layer) -> tuple[int, int, int, int]:
    """Bounding box (x, y, w, h), in the image's pixel units, of the selected (else the last) shape."""
    if shapes_layer is None or len(shapes_layer.data) == 0:
        raise MedaiError("draw a rectangle (or any shape) on a Shapes layer to query with an ROI")
    sel = sorted(shapes_layer.selected_data) if shapes_layer.selected_data else [len(shapes_layer.data) - 1]
    verts = np.asarray(shapes_layer.data[sel[0]], float)
    world = np.array([shapes_layer.data_to_world(v) for v in verts])
    data_pts = np.array([image_layer.world_to_data(w) for w in world])
    rgb = bool(getattr(image_layer, "rgb", False))
    yx = data_pts[:, -2:] if not rgb else data_pts[:, -2:]
    y0, x0 = np.floor(yx.min(0)).astype(int)
    y1, x1 = np.ceil(yx.max(0)).astype(int)
    return int(x0), int(y0), int(x1 - x0), int(y1 - y0)


def _icon(thumb: Optional[np.ndarray]) -> QIcon:
    if thumb is None:
        return QIcon()
    a = np.ascontiguousarray(thumb.astype(np.uint8))
    h, w = a.shape[:2]
    img = QImage(a.data, w, h, w, QImage.Format_Grayscale8).copy()
    return QIcon(QPixmap.fromImage(img))


class RetrievalWidget(QWidget):
    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.library = None
        self.hits: list = []
        self.last_provenance: Optional[dict] = None

        layout = QVBoxLayout(self)
        layout.addWidget(research_banner())

        # library
        self.library_label = QLabel("No library loaded.")
        self.library_label.setWordWrap(True)
        row = QHBoxLayout()
        self.open_button = QPushButton("Open library…")
        self.build_button = QPushButton("Build from folder…")
        row.addWidget(self.open_button)
        row.addWidget(self.build_button)
        self.embedder_combo = QComboBox()
        self._fill_embedders()
        layout.addWidget(QLabel("<b>Case library</b>"))
        layout.addLayout(row)
        form0 = QFormLayout()
        form0.addRow("embedder (build)", self.embedder_combo)
        layout.addLayout(form0)
        layout.addWidget(self.library_label)

        # query
        form = QFormLayout()
        self.image_combo = QComboBox()
        self.mode_combo = QComboBox()
        self.mode_combo.addItems(MODES)
        self.shapes_combo = QComboBox()
        self.k_spin = QSpinBox()
        self.k_spin.setRange(1, 100)
        self.k_spin.setValue(10)
        form.addRow("image", self.image_combo)
        form.addRow("query with", self.mode_combo)
        form.addRow("shapes (ROI)", self.shapes_combo)
        form.addRow("k", self.k_spin)
        layout.addWidget(QLabel("<b>Query</b>"))
        layout.addLayout(form)
        self.query_button = QPushButton("Find similar cases")
        layout.addWidget(self.query_button)
        self.jobs = JobPanel(self)
        layout.addWidget(self.jobs)

        # results
        self.vote_label = QLabel("")
        self.vote_label.setWordWrap(True)
        layout.addWidget(self.vote_label)
        self.gallery = QListWidget()
        self.gallery.setViewMode(QListWidget.IconMode)
        self.gallery.setIconSize(QSize(96, 96))
        self.gallery.setResizeMode(QListWidget.Adjust)
        self.gallery.setMovement(QListWidget.Static)
        self.gallery.setWordWrap(True)
        self.gallery.setSpacing(4)
        self.gallery.setMinimumHeight(240)
        layout.addWidget(self.gallery, 1)
        hint = QLabel("Click a case to open it in the viewer.")
        hint.setStyleSheet("color: gray;")
        layout.addWidget(hint)

        self.open_button.clicked.connect(self._open_dialog)
        self.build_button.clicked.connect(self._build_dialog)
        self.query_button.clicked.connect(self.run_query)
        self.gallery.itemClicked.connect(self._item_clicked)
        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        self._refresh_layers()

    # ---- layers ----------------------------------------------------------------------------
    def _fill_embedders(self):
        names = []
        try:
            from ..runtime.registry import list_models

            names = [c.name for c in list_models(task="embedding")]
        except MedaiError:
            pass
        self.embedder_combo.clear()
        self.embedder_combo.addItems(names + ["raw-pixels"])

    def _refresh_layers(self, event=None):
        from napari.layers import Image, Shapes

        for combo, kind in ((self.image_combo, Image), (self.shapes_combo, Shapes)):
            current = combo.currentText()
            combo.clear()
            names = [layer.name for layer in self.viewer.layers if isinstance(layer, kind)]
            combo.addItems(names)
            if current in names:
                combo.setCurrentText(current)
            elif names:
                combo.setCurrentIndex(len(names) - 1)

    def _layer(self, name: str):
        if not name or name not in self.viewer.layers:
            return None
        return self.viewer.layers[name]

    # ---- library -----------------------------------------------------------------------------
    def _open_dialog(self):
        path, _ = QFileDialog.getOpenFileName(self, "Open case library", "", "Case libraries (*.medlib *.sqlite *.db);;All files (*)")
        if path:
            self.load_library(path)

    def _build_dialog(self):
        folder = QFileDialog.getExistingDirectory(self, "Folder with one sub-folder per class")
        if not folder:
            return
        out, _ = QFileDialog.getSaveFileName(self, "Save the library as", str(Path(folder).with_suffix(".medlib")), "Case libraries (*.medlib)")
        self.build_library(folder, save_to=out or None)

    def load_library(self, path):
        from .library import CaseLibrary

        self.jobs.run(lambda progress, should_stop: CaseLibrary.load(path), on_result=self._set_library, title="Open library")

    def build_library(self, source, save_to=None, embedder: Optional[str] = None):
        from .library import CaseLibrary

        name = embedder or self.embedder_combo.currentText() or None

        def job(progress, should_stop):
            lib = CaseLibrary.build(source, embedder=name, progress=progress, should_stop=should_stop)
            if save_to:
                lib.save(save_to)
            return lib

        self.jobs.run(job, on_result=self._set_library, title="Build library")

    def _set_library(self, lib):
        self.library = lib
        s = lib.summary()
        labels = ", ".join(f"{k} {v}" for k, v in sorted(s["labels"].items()))
        where = f" - {s['path']}" if s["path"] else " (not saved)"
        self.library_label.setText(f"{s['cases']} cases ({labels}); embedder {s['embedder']}{where}")

    # ---- query -------------------------------------------------------------------------------
    def query_inputs(self):
        """(plane, roi, slice index, layer) for the current settings (UI thread)."""
        layer = self._layer(self.image_combo.currentText())
        if layer is None:
            raise MedaiError("no image layer to query with; open an image first")
        plane, sl = current_plane(layer, self.viewer)
        roi = None
        if self.mode_combo.currentText() == MODES[1]:
            roi = roi_from_shapes(self._layer(self.shapes_combo.currentText()), layer)
        return plane, roi, sl, layer

    def run_query(self):
        from ..runtime.provenance import make_provenance

        if self.library is None:
            self.jobs._fail("Query", "no case library; open or build one first")
            return
        try:
            plane, roi, sl, layer = self.query_inputs()
        except MedaiError as exc:
            self.jobs._fail("Query", str(exc))
            return
        lib, k = self.library, int(self.k_spin.value())

        def job(progress, should_stop):
            t0 = time.perf_counter()
            progress(0, 1)
            hits = lib.query(plane, k=k, roi=roi)
            progress(1, 1)
            prov = make_provenance(
                "retrieval",
                parameters={"k": k, "roi": roi, "slice": sl, "library": str(lib.path) if lib.path else None,
                            "library_cases": len(lib)},
                device=getattr(getattr(lib.embedder, "device_choice", None), "name", "cpu"),
                seconds=time.perf_counter() - t0,
                model=lib.embedder,
                input_shape=plane.shape,
                source=layer.name,
            )
            return hits, prov

        self.jobs.run(job, on_result=self._show_hits, title="Query")

    def _show_hits(self, result):
        from .library import vote

        hits, prov = result
        self.hits = hits
        self.last_provenance = prov
        self.gallery.clear()
        for i, h in enumerate(hits):
            item = QListWidgetItem(_icon(h.thumbnail), f"{h.rank}. {h.label}\nd={h.distance:.3f}")
            item.setData(Qt.UserRole, i)
            item.setToolTip(f"{h.path}" + (f" (slice {h.slice_index})" if h.slice_index is not None else ""))
            self.gallery.addItem(item)
        votes = vote(hits)
        self.vote_label.setText(
            "<b>Label vote:</b> " + ", ".join(f"{lab} {c}/{len(hits)}" for lab, c, _ in votes)
            + "<br><i>Similar cases, not a diagnosis. Research use only - not a medical device.</i>"
        )

    def _item_clicked(self, item):
        self.open_case(int(item.data(Qt.UserRole)))

    def open_case(self, index: int):
        """Open hit ``index`` of the last query as a new image layer (with provenance)."""
        from ..runtime.provenance import attach_provenance

        h = self.hits[index]
        record = dict(self.last_provenance or {})
        record.update({"retrieved_case": h.to_dict()})
        name = f"case {h.case_id}: {h.label} (d={h.distance:.3f})"
        try:
            from ..io.readers import load_image

            img = load_image(h.path)
        except MedaiError:
            img = None
        if img is None:
            layer = self.viewer.add_image(h.thumbnail, name=name, metadata=attach_provenance({}, record))
            return layer
        kwargs = img.layer_kwargs()
        kwargs["name"] = name
        kwargs["metadata"] = attach_provenance(kwargs.get("metadata"), record)
        layer = self.viewer.add_image(img.data, **kwargs)
        if h.slice_index is not None and img.data.ndim - (1 if img.rgb else 0) == 3:
            world = layer.data_to_world([h.slice_index, 0, 0])
            self.viewer.dims.set_point(0, float(world[0]))
        return layer
