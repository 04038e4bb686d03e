"""napari widget: open or build a case library, query it with the image / slice / Shapes ROI in view,
browse the k nearest cases as a thumbnail gallery (click to open a case), see the label vote, or
"no close cases in this library" when the query is out of the library's domain.

Thin: the work is :class:`napari_medai.retrieval.library.CaseLibrary`, run through JobPanel.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import numpy as np
from magicgui.widgets import ComboBox, SpinBox
from qtpy.QtCore import QSize, Qt
from qtpy.QtGui import QIcon, QImage, QPixmap
from qtpy.QtWidgets import QListWidget, QListWidgetItem

from .._qt.common import (
    ToolWidget,
    banner,
    button,
    docs_link,
    embed,
    file_edit,
    form,
    layer_box,
    made_by,
    registered_models,
    remember,
    row,
    text,
)
from .._qt.jobs import JobPanel
from ..errors import MedaiError
from ..io.layers import current_plane, shape_to_roi
from ..runtime.provenance import RESEARCH_NOTICE

MODES = ("current slice / image", "Shapes ROI")


def _icon(thumb: Optional[np.ndarray]) -> QIcon:
    if thumb is None:
        return QIcon()
    a = np.ascontiguousarray(thumb.astype(np.uint8))
    h, w = a.shape[:2]
    img = QImage(a.data, w, h, w, QImage.Format_Grayscale8).copy()
    return QIcon(QPixmap.fromImage(img))


def _is_image(layer) -> bool:
    from napari.layers import Image

    return isinstance(layer, Image) and not made_by(layer, "retrieval")


def _is_shapes(layer) -> bool:
    from napari.layers import Shapes

    return isinstance(layer, Shapes)


class RetrievalWidget(ToolWidget):
    """Nearest-case retrieval: a case library, a query from the view, a gallery of the nearest cases."""

    tool = "retrieval"

    def __init__(self, napari_viewer):
        self.library = None
        self.hits: list = []
        self.last_provenance: Optional[dict] = None
        library_path = file_edit(name="library_path", label="library", mode="r",
                                filter="Case libraries (*.medlib *.sqlite *.db);;All files (*)",
                                tooltip="a saved case library (.medlib / .sqlite); the last one is remembered")
        build_folder = file_edit(name="build_folder", label="build from", mode="d",
                                tooltip="a folder with one sub-folder per class (or pick a CSV with path,label)")
        embedder = ComboBox(name="embedder", label="embedder (build)",
                            choices=registered_models("embedding") + ["raw-pixels"],
                            tooltip="the network that turns each case into a descriptor when building")
        image = layer_box(napari_viewer, "image", "image", _is_image,
                          tooltip="the image to query with (the slice in view of a volume); follows the selected layer")
        mode = ComboBox(name="mode", label="query with", choices=list(MODES), value=MODES[0],
                        tooltip="the whole slice/image in view, or the selected (else last) shape of a Shapes layer")
        shapes = layer_box(napari_viewer, "shapes", "shapes (ROI)", _is_shapes, optional=True, follow=False,
                           tooltip="the Shapes layer holding the ROI for 'Shapes ROI'")
        k = SpinBox(name="k", label="k", value=10, min=1, max=100, tooltip="how many nearest cases to show")
        self.gallery = QListWidget()
        self.gallery.setViewMode(QListWidget.IconMode)
        self.gallery.setIconSize(QSize(96, 96))
        self.gallery.setResizeMode(QListWidget.Adjust)
        self.gallery.setMovement(QListWidget.Static)
        self.gallery.setWordWrap(True)
        self.gallery.setSpacing(4)
        self.gallery.setMinimumHeight(160)
        self.gallery.setToolTip("the nearest cases, nearest first; click one to open it in the viewer")
        self.job_panel = JobPanel()
        widgets = [
            banner(),
            form("library_form", [library_path, build_folder, embedder]),
            row("library_buttons", [
                button("open_button", "Open library", "load the library file named in 'library'", self.open_library),
                button("build_button", "Build library", "embed every case in 'build from' and save the library "
                       "next to it as <folder>.medlib", self.build_from_folder),
            ]),
            text("library_text", "No library loaded.", tooltip="the library in use"),
            form("query_form", [image, mode, shapes, k]),
            button("query_button", "Find similar cases", "query the library with the image, slice or ROI in view",
                   self.run_query),
            embed(self.job_panel, "jobs_holder"),
            text("vote_text", tooltip="labels of the nearest cases - similar cases, not a diagnosis"),
            embed(self.gallery, "gallery_holder"),
            text("hint", "Click a case to open it in the viewer.", tooltip="cases open as new layers"),
            docs_link("retrieval.md", "Retrieval"),
        ]
        super().__init__(napari_viewer, widgets, name="napari_medai_retrieval")
        self.jobs = self.job_panel
        remember(self.library_path, "retrieval.last_library")
        remember(self.embedder, "retrieval.embedder")
        self.gallery.itemClicked.connect(self._item_clicked)

    def run(self):
        """Query the library (the main button)."""
        return self.run_query()

    # ---- library -----------------------------------------------------------------------------
    def open_library(self):
        """Load the library file named in 'library'."""
        path = str(self.library_path.value or "").strip()
        if path in ("", ".") or not Path(path).is_file():
            self.jobs._fail("Open library", "pick a library file in 'library' first (a .medlib or .sqlite file)")
            return None
        return self.load_library(path)

    def build_from_folder(self):
        """Build a library from 'build from' and save it next to the folder."""
        folder = str(self.build_folder.value or "").strip()
        if folder in ("", ".") or not Path(folder).exists():
            self.jobs._fail("Build library", "pick a folder with one sub-folder per class in 'build from' first")
            return None
        return self.build_library(folder, save_to=str(Path(folder).with_suffix(".medlib")))

    def load_library(self, path):
        """Load a saved library in the background."""
        from .library import CaseLibrary

        return self.jobs.run(lambda progress, should_stop: CaseLibrary.load(path), on_result=self._set_library,
                             title="Open library")

    def build_library(self, source, save_to=None, embedder: Optional[str] = None):
        """Build a library from a folder or CSV in the background, optionally saving it."""
        from .library import CaseLibrary

        name = embedder or self.embedder.value or None

        def job(progress, should_stop):
            lib = CaseLibrary.build(source, embedder=name, progress=progress, should_stop=should_stop)
            if save_to:
                lib.save(save_to)
            return lib

        return self.jobs.run(job, on_result=self._set_library, title="Build library")

    def _set_library(self, lib):
        self.library = lib
        s = lib.summary()
        labels = ", ".join(f"{k} {v}" for k, v in sorted(s["labels"].items()))
        where = f" - {s['path']}" if s["path"] else " (not saved)"
        self.library_text.value = f"{s['cases']} cases ({labels}); embedder {s['embedder']}{where}"
        if s["path"]:
            self.library_path.value = str(s["path"])  # remembered for the next napari start
        return lib

    # ---- query -------------------------------------------------------------------------------
    def query_inputs(self):
        """(plane, roi, slice index, layer) for the current settings (UI thread)."""
        layer = self.image.value
        if layer is None or layer not in self.viewer.layers:
            raise MedaiError("no image layer to query with; open an image first")
        plane, index = current_plane(layer, self.viewer.dims.point)
        sl = index[-1] if index else None
        roi = None
        if self.mode.value == MODES[1]:
            roi = shape_to_roi(self.shapes.value, layer)
        return plane, roi, sl, layer

    def run_query(self):
        """Query the library with the image, slice or ROI in view."""
        from ..runtime.provenance import make_provenance

        if self.library is None:
            self.jobs._fail("Query", "no case library; open or build one first")
            return None
        try:
            plane, roi, sl, layer = self.query_inputs()
        except MedaiError as exc:
            self.jobs._fail("Query", str(exc))
            return None
        lib, k = self.library, int(self.k.value)

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

        return self.jobs.run(job, on_result=self._show_hits, title="Query")

    def _show_hits(self, result):
        from .library import vote

        hits, prov = result
        self.hits = hits
        out_of_domain = bool(getattr(hits, "out_of_domain", False))
        reasons = list(getattr(hits, "reasons", None) or [])
        prov["parameters"]["out_of_domain"] = out_of_domain
        self.last_provenance = prov
        self.gallery.clear()
        for i, h in enumerate(hits):
            close = getattr(h, "close", True)
            caption = f"{h.rank}. {h.label}\nd={h.distance:.3f}" + ("" if close else " (far)")
            item = QListWidgetItem(_icon(h.thumbnail), caption)
            item.setData(Qt.UserRole, i)
            item.setToolTip(f"{h.path}" + (f" (slice {h.slice_index})" if h.slice_index is not None else "")
                            + ("" if close else " - not close to the query"))
            self.gallery.addItem(item)
        notice = f"<br><i>Similar cases, not a diagnosis. {RESEARCH_NOTICE}</i>"
        if out_of_domain:
            why = f" ({'; '.join(reasons)})" if reasons else ""
            self.vote_text.value = ("<b>No close cases in this library.</b> The query is unlike every case" + why
                                    + "; the nearest cases below are shown for reference only." + notice)
        else:
            votes = vote(hits)
            self.vote_text.value = ("<b>Label vote:</b> " + ", ".join(f"{lab} {c}/{len(hits)}" for lab, c, _ in votes)
                                    + notice)
        return hits

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
