"""napari widget for CLAHE: pick a layer and the parameters, preview the current slice, run the whole
layer in the background (progress + Cancel), get a new layer with the source's geometry and provenance.

Thin: the work is :func:`napari_medai.enhance.core.run_clahe` (numba/torch are imported only when a job
runs). Research use only, not a medical device.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, FloatSpinBox, LineEdit, SpinBox

from .._qt.common import ToolWidget, banner, button, device_box, docs_link, embed, form, layer_box, remember, row, text
from .._qt.jobs import JobPanel
from ..errors import MedaiError
from ..io.layers import layer_data, plane_indices

MODES = ("auto", "2d", "slices", "3d")
PREVIEW_SUFFIX = " CLAHE preview"
RESULT_SUFFIX = " CLAHE"


def _is_source(layer) -> bool:
    from napari.layers import Image

    return isinstance(layer, Image) and not layer.name.endswith(PREVIEW_SUFFIX)


class ClaheWidget(ToolWidget):
    """CLAHE enhancement: scikit-image semantics, 2-D / per slice / true 3-D."""

    tool = "clahe"

    def __init__(self, napari_viewer):
        self.last_result = None
        self.last_provenance: Optional[dict] = None
        image = layer_box(napari_viewer, "image", "image layer", _is_source,
                          tooltip="the image or volume to enhance; follows the selected layer")
        clip = FloatSpinBox(name="clip_limit", label="clip limit", value=0.01, min=0.0, max=1.0, step=0.005,
                            tooltip="normalised clip limit (scikit-image); higher = more contrast, 0 = no clipping")
        clip.native.setDecimals(4)
        kernel = LineEdit(name="kernel_size", label="kernel size", value="",
                          tooltip="tile size in pixels: empty = 1/8 of each axis; N, or N,N,N for (z, y, x)")
        kernel.native.setPlaceholderText("auto (1/8 of each axis), N or N,N,N")
        nbins = SpinBox(name="nbins", label="bins", value=256, min=2, max=65536,
                        tooltip="histogram bins per tile (scikit-image nbins)")
        mode = ComboBox(name="mode", label="mode", choices=list(MODES), value="auto",
                        tooltip="auto: 2d for images, 3d for volumes; slices: every slice on its own; "
                                "3d: true 3-D tiles")
        use_window = CheckBox(name="use_window", text="window", value=False,
                              tooltip="clip intensities to [low, high] before equalising (e.g. a CT window in HU)")
        lo = FloatSpinBox(name="window_low", value=-200.0, min=-1e6, max=1e6, enabled=False,
                          tooltip="lower end of the intensity window (HU for CT)")
        hi = FloatSpinBox(name="window_high", value=250.0, min=-1e6, max=1e6, enabled=False,
                          tooltip="upper end of the intensity window (HU for CT)")
        use_window.changed.connect(lambda on: (setattr(lo, "enabled", on), setattr(hi, "enabled", on)))
        self.job_panel = JobPanel()
        widgets = [
            banner(),
            form("options", [image, clip, kernel, nbins, mode, device_box()]),
            row("window_row", [use_window, lo, hi]),
            row("buttons", [
                button("preview_button", "Preview slice", "2-D CLAHE of the slice in view only (fast); Run does "
                       "the whole layer", self.preview),
                button("run_button", "Run", "enhance the whole layer in the background; the result is a new "
                       "layer with the source's geometry", self.run),
            ]),
            embed(self.job_panel, "jobs_holder"),
            text("info", tooltip="what the last run did"),
            docs_link("clahe.md", "CLAHE"),
        ]
        super().__init__(napari_viewer, widgets, name="napari_medai_clahe")
        self.jobs = self.job_panel
        remember(self.clip_limit, "clahe.clip_limit")

    # ---- layers ------------------------------------------------------------------------------
    def source_layer(self):
        """The chosen image layer; refuses when there is none."""
        layer = self.image.value
        if layer is None or layer not in self.viewer.layers:
            raise MedaiError("open an image first and pick it in 'image layer'")
        return layer

    # ---- parameters ------------------------------------------------------------------------------
    def parameters(self) -> dict:
        """The controls as keyword arguments of ``run_clahe``."""
        kernel = str(self.kernel_size.value).strip().lower()
        window = (float(self.window_low.value), float(self.window_high.value)) if self.use_window.value else None
        return {
            "clip_limit": float(self.clip_limit.value),
            "kernel_size": None if kernel in ("", "auto") else kernel,
            "nbins": int(self.nbins.value),
            "mode": self.mode.value,
            "window": window,
            "device": self.device.value,
        }

    # ---- actions --------------------------------------------------------------------------------
    def preview(self):
        """2-D CLAHE of the plane in view; shown as a one-slice layer at that slice."""
        from ..io.geometry import Geometry
        from .core import run_clahe

        try:
            layer = self.source_layer()
            params = self.parameters()
            index = plane_indices(layer, self.viewer.dims.point)
            data = layer_data(layer)
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
        self.info.value = (f"preview of {where}: 2-D CLAHE, kernel {'x'.join(map(str, result.kernel_size))}, "
                          f"{result.seconds * 1000:.0f} ms on {result.device}")
        return self.viewer.layers[name]

    def run(self):
        """Enhance the whole layer in the background; the result is a new layer."""
        from .core import run_clahe

        try:
            layer = self.source_layer()
            params = self.parameters()
        except MedaiError as exc:
            self.jobs._fail("CLAHE", str(exc))
            return None
        data = np.asarray(layer_data(layer))
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
        self.info.value = (
            f"{result.mode}, kernel {'x'.join(map(str, result.kernel_size))}, clip {result.clip_limit:g}: "
            f"{result.seconds:.2f} s with {result.backend} on {result.device}"
        )
        return new
