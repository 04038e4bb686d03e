"""napari widget for fatty-liver grading: image + liver ROI (+ optional kidney-cortex ROI) from Shapes
layers, or an automatic ROI on request -> grade (marked uncertain when it is), probabilities (bars),
hepatorenal index, and an occlusion heat map layer with a colour bar, aligned with the source. An
automatic ROI is drawn as an editable Shapes layer. A stack is graded frame by frame with a summary.

Thin: the work is :func:`napari_medai.steatosis.core.grade_steatosis` (torch only inside the job).
Research use only, not a medical device.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, ProgressBar

from .._qt.common import (
    ToolWidget,
    banner,
    button,
    device_box,
    device_note,
    docs_link,
    embed,
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

AUTO_LAYER = "liver ROI (automatic)"
HEAT_SUFFIX = " steatosis heat map"
LIVER_LAYER = "liver ROI"
KIDNEY_LAYER = "kidney ROI"
LABELS = ("S0 normal", "S1 mild", "S2 moderate", "S3 severe")


def shape_roi(shapes_layer, image_layer, frame_shape):
    """The selected (else the last) shape of ``shapes_layer`` in the image's pixel grid: (x, y, w, h) for a
    rectangle, a boolean mask for a polygon / ellipse (``io.layers.shape_to_roi``). None without a shape."""
    if shapes_layer is None or len(shapes_layer.data) == 0:
        return None
    from ..io.layers import shape_to_roi

    return shape_to_roi(shapes_layer, image_layer, frame_shape)


def _is_image(layer) -> bool:
    from napari.layers import Image

    return isinstance(layer, Image) and not made_by(layer, "steatosis")


def _is_shapes(layer) -> bool:
    from napari.layers import Shapes

    return isinstance(layer, Shapes)


def _supports_auto_roi() -> bool:
    import inspect

    from . import core

    return "auto_roi" in inspect.signature(core.grade_steatosis).parameters


class SteatosisWidget(ToolWidget):
    """Fatty-liver grade (S0-S3) from a liver ROI, optionally with a kidney-cortex ROI."""

    tool = "steatosis"

    def __init__(self, napari_viewer):
        from . import core

        self.last_result = None
        self.last_results: list = []
        self.last_provenance: Optional[dict] = None
        self.last_roi_layer = None
        image = layer_box(napari_viewer, "image", "image", _is_image,
                          tooltip="the B-mode frame (or a stack of frames) to grade; follows the selected layer")
        liver = layer_box(napari_viewer, "liver_roi", "liver ROI", _is_shapes, optional=True, follow=False,
                          tooltip="Shapes layer whose last shape outlines liver parenchyma (away from vessels)")
        kidney = layer_box(napari_viewer, "kidney_roi", "kidney ROI", _is_shapes, optional=True, follow=False,
                           tooltip="optional Shapes layer on the right kidney cortex: adds the hepatorenal index")
        auto = CheckBox(name="auto_roi", text="place the liver ROI automatically", value=False,
                        tooltip="without a drawn liver ROI, let the model place one (marked uncertain); it is drawn "
                                "as an editable 'liver ROI (automatic)' layer")
        model = ComboBox(name="model", label="model", choices=registered_models("steatosis", core.DEFAULT_MODEL),
                         tooltip="registered steatosis model (Settings adds a folder with your own)")
        device = device_box()
        bars = [ProgressBar(name=f"p_s{i}", label=name, min=0, max=1000, value=0,
                            tooltip=f"probability of {name} (averaged over the frames of a stack)")
                for i, name in enumerate(LABELS)]
        self.job_panel = JobPanel()
        widgets = [
            banner(),
            form("options", [image, liver, kidney, model, device]),
            auto,
            row("buttons", [
                button("roi_button", "Add ROI layers", "create 'liver ROI' and 'kidney ROI' Shapes layers and start "
                       "drawing a rectangle", self.create_roi_layers),
                button("run_button", "Grade", "grade the image in the background from the liver ROI", self.run),
            ]),
            embed(self.job_panel, "jobs_holder"),
            text("grade_text", "grade: -", tooltip="the grade, or the patient summary of a stack"),
            text("uncertain_text", tooltip="why the grade is uncertain, when it is"),
            form("probabilities", bars),
            text("index_text", "hepatorenal index: -", tooltip="mean liver / mean kidney-cortex grey level"),
            text("info", tooltip="warnings from the grader"),
            text("heatmap_text", tooltip="what the heat map shows"),
            device_note(device),
            docs_link("steatosis.md", "Fatty-liver grading"),
        ]
        super().__init__(napari_viewer, widgets, name="napari_medai_steatosis")
        self.jobs = self.job_panel
        self.bars = bars
        remember(self.model, "steatosis.model")

    # ---- layers ------------------------------------------------------------------------------
    def create_roi_layers(self):
        """Shapes layers for the liver (yellow) and kidney cortex (cyan) ROIs, liver active in rectangle mode."""
        image = self.image.value
        kwargs = {}
        if image is not None and image.ndim == 2:
            from ..io.geometry import Geometry

            kwargs = Geometry.from_layer(image).layer_kwargs()
        if KIDNEY_LAYER not in self.viewer.layers:
            self.viewer.add_shapes(name=KIDNEY_LAYER, edge_color="cyan", face_color="transparent", edge_width=2,
                                   **kwargs)
        if LIVER_LAYER not in self.viewer.layers:
            self.viewer.add_shapes(name=LIVER_LAYER, edge_color="yellow", face_color="transparent", edge_width=2,
                                   **kwargs)
        liver = self.viewer.layers[LIVER_LAYER]
        self.viewer.layers.selection.active = liver
        try:
            liver.mode = "add_rectangle"
        except Exception:  # pragma: no cover
            pass
        self.reset_choices()
        self.liver_roi.value = liver
        self.kidney_roi.value = self.viewer.layers[KIDNEY_LAYER]
        if image is not None:
            self.image.value = image
        self.info.value = ("draw a rectangle or polygon in liver parenchyma (away from vessels) on 'liver ROI', "
                           "optionally one in the right kidney cortex on 'kidney ROI', then Grade")
        return liver

    # ---- run ----------------------------------------------------------------------------------
    def _inputs(self):
        image = self.image.value
        if image is None or image not in self.viewer.layers:
            raise MedaiError("open a B-mode image first and pick it in 'image'")
        data = image.data[0] if getattr(image, "multiscale", False) else image.data
        data = np.asarray(data)
        rgb = bool(image.rgb)
        frame_shape = data.shape[-3:-1] if rgb else data.shape[-2:]
        liver = shape_roi(self.liver_roi.value, image, frame_shape)
        kidney = shape_roi(self.kidney_roi.value, image, frame_shape)
        return image, data, rgb, liver, kidney

    def run(self):
        """Grade the chosen image (every frame of a stack) in the background; results come back here."""
        from . import core

        try:
            image, data, rgb, liver, kidney = self._inputs()
            auto = bool(self.auto_roi.value) and liver is None
            if liver is None and not auto:
                raise MedaiError("no liver ROI: draw one on a Shapes layer (Add ROI layers) and pick it in "
                                 "'liver ROI', or tick 'place the liver ROI automatically'")
            if auto and not _supports_auto_roi():
                raise MedaiError("automatic ROI placement is not in this build; draw a liver ROI")
        except MedaiError as exc:
            self.jobs._fail("Steatosis", str(exc))
            return None
        extra = {"auto_roi": True} if auto else {}
        model = self.model.value or None
        device = self.device.value
        frames = [data] if data.ndim == (3 if rgb else 2) else [data[i] for i in range(data.shape[0])]

        def job(progress, should_stop):
            out = []
            for i, f in enumerate(frames):
                def sub(j, n, i=i):
                    progress(i * 100 + int(100 * j / max(n, 1)), 100 * len(frames))
                out.append(core.grade_steatosis(f, roi=liver, kidney_roi=kidney, model=model, device=device,
                                           progress=sub, should_stop=should_stop, **extra))
            return out

        return self.jobs.run(job, on_result=lambda results: self._show(image, results, liver, kidney),
                             title="Steatosis")

    def grade(self):
        """Same as :meth:`run`."""
        return self.run()

    # ---- results ------------------------------------------------------------------------------
    def _show(self, image, results, liver, kidney):
        from ..io.geometry import Geometry
        from ..runtime.provenance import attach_provenance, make_provenance
        from ..runtime.registry import resolve_model
        from ..viewer import HEATMAP_UNITS, heatmap_kwargs, show_colorbar

        self.last_results = results
        probs = np.mean([r.probabilities for r in results], axis=0)
        grade = int(np.argmax(probs))
        self.last_result = results[0] if len(results) == 1 else None
        for bar, p in zip(self.bars, probs):
            bar.value = int(round(1000 * float(p)))
        uncertain = [i for i, r in enumerate(results) if getattr(r, "uncertain", False)]
        flag = " - uncertain" if uncertain else ""
        if len(results) == 1:
            self.grade_text.value = f"<b>grade: {results[0].label}{flag}</b>"
        else:
            per = ", ".join(f"{i}: S{r.grade}{'?' if i in uncertain else ''}" for i, r in enumerate(results))
            self.grade_text.value = (f"<b>patient summary ({len(results)} frames): {LABELS[grade]}{flag}</b>"
                                     f"<br>per frame: {per}")
        reasons = sorted({why for r in results for why in (getattr(r, "uncertain_reasons", None) or [])})
        self.uncertain_text.value = ("<b>Uncertain:</b> " + "; ".join(reasons or ["see the warnings below"])
                                     if uncertain else "")
        hri = [r.hepatorenal_index for r in results if r.hepatorenal_index is not None]
        self.index_text.value = (f"hepatorenal index: {np.mean(hri):.3f}" if hri else
                                 "hepatorenal index: - (draw a kidney-cortex ROI)")
        warnings = sorted({w for r in results for w in r.warnings})
        self.info.value = "\n".join(warnings)
        heat = results[0].heatmap if len(results) == 1 else np.stack([r.heatmap for r in results])
        try:
            card = resolve_model(results[0].model, task="steatosis")
        except MedaiError:
            card = None
        sources = sorted({getattr(r, "roi_source", "user") for r in results})
        params = {"roi": list(results[0].roi) if results[0].roi else ("mask" if liver is not None else None),
                  "roi_source": sources[0] if len(sources) == 1 else sources,
                  "kidney_roi": list(results[0].kidney_roi) if results[0].kidney_roi else None,
                  "grade": grade, "probabilities": [float(p) for p in probs],
                  "uncertain": bool(uncertain), "uncertain_reasons": reasons,
                  "hepatorenal_index": float(np.mean(hri)) if hri else None}
        geometry = Geometry.from_layer(image)
        prov = make_provenance("steatosis", parameters=params, device=results[0].device,
                               seconds=float(sum(r.seconds for r in results)), model=card,
                               input_shape=np.shape(image.data), geometry=geometry, source=image.name,
                               extra={"heatmap_units": HEATMAP_UNITS})
        self.last_provenance = prov
        name = image.name + HEAT_SUFFIX
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)
        layer = self.viewer.add_image(heat, name=name, metadata=attach_provenance({}, prov),
                                      **heatmap_kwargs(heat), **geometry.layer_kwargs())
        show_colorbar(layer)
        self.heatmap_text.value = (f"Heat map (colour bar, 0 to {layer.contrast_limits[1]:.2g}): {HEATMAP_UNITS}; "
                                   "zero outside the ROI.")
        if "auto" in sources:
            self._draw_auto_roi(image, results, geometry, prov)
        return layer

    def _draw_auto_roi(self, image, results, geometry, prov):
        """The ROI the grader placed, as an editable Shapes layer picked as the liver ROI for a re-grade."""
        from ..runtime.provenance import attach_provenance
        from ..viewer import roi_rectangle

        shapes = []
        for i, r in enumerate(results):
            if r.roi is None:
                continue
            corners = roi_rectangle(r.roi)
            if len(results) > 1:
                corners = np.column_stack([np.full(4, float(i)), corners])
            shapes.append(corners)
        if not shapes:
            return None
        if AUTO_LAYER in self.viewer.layers:
            self.viewer.layers.remove(AUTO_LAYER)
        kwargs = geometry.layer_kwargs() if image.ndim == shapes[0].shape[1] else {}
        layer = self.viewer.add_shapes(shapes, shape_type="rectangle", name=AUTO_LAYER, edge_color="yellow",
                                       face_color="transparent", edge_width=2,
                                       metadata=attach_provenance({}, prov), **kwargs)
        self.last_roi_layer = layer
        self.reset_choices()
        self.liver_roi.value = layer
        self.auto_roi.value = False
        self.info.value = (self.info.value + "\n" if self.info.value else "") + (
            "The automatic liver ROI is drawn as 'liver ROI (automatic)' and picked as the liver ROI: move or "
            "resize it, then Grade again.")
        self.viewer.layers.selection.active = image
        return layer
