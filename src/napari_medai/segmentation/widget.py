"""napari widget for liver and tumour segmentation: pick a CT layer (follows the selected layer), a model
and a device, run in the background (progress + Cancel), get a Labels layer aligned with the source,
named and coloured per structure, with per-structure volumes, tumour count, largest tumour diameter and
the model's plausibility notes.

Re-running on the same image updates the existing result layer through ``data_setitem`` so the change
can be undone. Thin: the work is :func:`napari_medai.segmentation.core.segment` (torch is imported only
when a job runs); what the API refuses, this widget refuses with the same one-line message.
Research use only, not a medical device.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from magicgui.widgets import ComboBox

from .._qt.common import (
    ToolWidget,
    banner,
    button,
    device_box,
    device_note,
    docs_link,
    embed,
    file_edit,
    form,
    layer_box,
    made_by,
    registered_models,
    remember,
    text,
)
from .._qt.jobs import JobPanel
from ..errors import MedaiError

RESULT_SUFFIX = " segmentation"
DEFAULT_MODEL = "liver-tumor-ct"


def _is_ct(layer) -> bool:
    from napari.layers import Image

    return isinstance(layer, Image) and not layer.rgb and not made_by(layer, "segmentation")


def describe_model_path(path: str) -> str:
    """What the model picker shows before running: a MONAI bundle folder's metadata (name, version,
    description, label names, licence) over several lines, the one-line refusal for a folder that is not
    a readable bundle, and "" for an empty choice or a TorchScript file / card folder."""
    path = str(path or "").strip()
    if path in ("", "."):
        return ""
    from .bundle import describe_bundle, is_bundle

    if not is_bundle(path) and not (Path(path).is_dir() and not (Path(path) / "card.json").is_file()):
        return ""  # a TorchScript file or a card folder: segment() checks it when it runs
    try:
        info = describe_bundle(path)
    except MedaiError as exc:
        return f"error: {exc}"
    labels = ", ".join(f"{k} = {v}" for k, v in sorted((info.get("labels") or {}).items()))
    lines = [f"MONAI bundle {info.get('name') or '?'} {info.get('version') or ''}".rstrip(),
             str(info.get("description") or "").strip(),
             f"labels: {labels or 'not listed'}",
             f"licence: {info.get('license') or 'not stated'}"]
    return "\n".join(line for line in lines if line)


class SegmentationWidget(ToolWidget):
    """Liver (1) and tumour (2) segmentation of CT with the shipped model or a user model."""

    tool = "segmentation"

    def __init__(self, napari_viewer):
        self.last_result = None
        self.last_layer = None
        self.last_measures: dict = {}
        image = layer_box(napari_viewer, "image", "CT layer", _is_ct,
                          tooltip="a CT image or volume in HU; follows the selected layer")
        model = ComboBox(name="model", label="model", choices=registered_models("segmentation", DEFAULT_MODEL),
                         tooltip="registered segmentation model (Settings adds a folder with your own)")
        model_path = file_edit(name="model_path", label="or model file", mode="r", value="",
                              filter="TorchScript (*.ts *.pt);;All files (*)",
                              tooltip="optional: a TorchScript file or a card folder; overrides 'model' when set")
        bundle = file_edit(name="bundle", label="or MONAI bundle", mode="d", value="",
                           tooltip="optional: a MONAI bundle's root folder (configs/ with metadata.json and "
                                   "inference.json); overrides 'model' and 'or model file' when set")
        device = device_box()
        self.job_panel = JobPanel()
        widgets = [
            banner(),
            form("options", [image, model, model_path, bundle, device]),
            text("model_info", tooltip="the chosen MONAI bundle's name, version, description, label names and "
                 "licence (read before running)"),
            button("run_button", "Segment liver and tumours", "segment the CT layer in the background; the result "
                   "is a Labels layer aligned with it", self.run),
            embed(self.job_panel, "jobs_holder"),
            text("volumes", tooltip="per-structure volumes (ml; areas in cm2 for a slice), model, device and time"),
            text("measures", tooltip="tumour count and the largest tumour's diameter (voxel centre to centre)"),
            text("notes", tooltip="plausibility notes from the model: read them before using the result"),
            device_note(device),
            docs_link("segmentation.md", "Segmentation"),
        ]
        super().__init__(napari_viewer, widgets, name="napari_medai_segmentation")
        self.jobs = self.job_panel
        remember(self.model, "segmentation.model")
        for choice in (self.model, self.model_path, self.bundle):
            choice.changed.connect(lambda *_: self._update_model_info())
        self._update_model_info()

    def _update_model_info(self) -> None:
        """Show what the chosen model is (a bundle's metadata, or why the folder is refused)."""
        self.model_info.value = describe_model_path(self.model_choice())

    # ---- layers --------------------------------------------------------------------------------
    def source_layer(self):
        """The chosen CT layer; refuses when there is none."""
        layer = self.image.value
        if layer is None or layer not in self.viewer.layers:
            raise MedaiError("open a CT image first and pick it in 'CT layer'")
        return layer

    def model_choice(self) -> str:
        """The bundle folder when one is given, else the model file, else the registered model."""
        for edit in (self.bundle, self.model_path):
            path = str(edit.line_edit.value or "").strip()  # the typed text: FileEdit turns "" into "."
            if path not in ("", "."):
                return path
        return self.model.value or DEFAULT_MODEL

    # ---- run -------------------------------------------------------------------------------------
    def run(self):
        """Segment the CT layer in the background; the result is an aligned Labels layer."""
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
        model = self.model_choice()
        device = self.device.value

        def job(progress, should_stop):
            return segment(data, spacing=geometry.spacing, affine=affine, model=model, device=device,
                           progress=progress, should_stop=should_stop)

        return self.jobs.run(job, on_result=lambda result: self._show(layer, geometry, result), title="Segmentation")

    # ---- results ---------------------------------------------------------------------------------
    def _show(self, layer, geometry, result):
        from napari.utils.notifications import show_warning

        from ..runtime.provenance import attach_provenance
        from ..viewer import labels_kwargs, segmentation_provenance
        from .measure import tumour_summary

        measures = tumour_summary(result.labels, result.names, geometry.spacing)
        prov = segmentation_provenance(result, geometry, layer.name)
        prov["measures"] = measures
        styling = labels_kwargs(result.names, result.volumes_ml, result.areas_cm2)
        name = layer.name + RESULT_SUFFIX
        existing = self.viewer.layers[name] if name in self.viewer.layers else None
        if existing is not None and tuple(existing.data.shape) == tuple(result.labels.shape):
            old = np.asarray(existing.data)
            changed = np.nonzero(old != result.labels)
            if len(changed[0]):
                existing.data_setitem(changed, result.labels[changed])  # one undoable edit
            existing.metadata = attach_provenance(existing.metadata, prov)
            for key, value in styling.items():
                setattr(existing, key, value)
            out = existing
        else:
            if existing is not None:
                self.viewer.layers.remove(existing)
            out = self.viewer.add_labels(result.labels, name=name, metadata=attach_provenance({}, prov),
                                         **styling, **geometry.layer_kwargs())
        self.last_result, self.last_layer, self.last_measures = result, out, measures
        self.volumes.value = self._structures_text(result)
        if measures["tumour_count"] is None:
            self.measures.value = ""
        else:
            self.measures.value = (f"tumours: {measures['tumour_count']}; largest diameter "
                                   f"{measures['largest_tumour_mm']:.1f} mm")
        self.notes.value = "".join(f"Note: {note}\n" for note in result.notes).rstrip()
        for note in result.notes:
            show_warning(f"Segmentation: {note}")
        return out

    @staticmethod
    def _structures_text(result) -> str:
        if result.volumes_ml:
            parts = [f"{k}: {v:.1f} ml" for k, v in result.volumes_ml.items()]
        else:
            parts = [f"{k}: {v:.2f} cm2" for k, v in result.areas_cm2.items()]
        return ("\n".join(parts) + f"\n({result.model_name} on {result.device}, {result.seconds:.1f} s)")
