"""`napari-medai demo`: every tool on the sample data.

With a display it opens napari with the widgets docked and the samples loaded. Without one it runs each
tool through the public API, writes the results, ``report.json``, ``report.md`` and viewer screenshots
(rendered under Xvfb by ``make demo``) to the output folder.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .runtime.provenance import RESEARCH_NOTICE


def _dice(a: np.ndarray, b: np.ndarray):
    from .segmentation.metrics import dice

    value = dice(a, b)
    return None if value is None else round(value, 4)


# ---------------------------------------------------------------------------------------- tool steps
def demo_clahe(out: Path, shots: list) -> dict:
    """CLAHE on the B-mode frame (2-D) and the sample CT (3-D); writes both results."""
    from . import clahe
    from .io.readers import load_image
    from .io.writers import save_image
    from .sample_data import BMODE_FRAME, CT_VOLUME

    frame = load_image(BMODE_FRAME)
    started = time.perf_counter()
    enhanced = clahe(frame.data, clip_limit=0.01)
    seconds_2d = time.perf_counter() - started
    save_image(out / "clahe_bmode.png", enhanced)
    ct = load_image(CT_VOLUME)
    started = time.perf_counter()
    enhanced_ct = clahe(ct.data, mode="3d", clip_limit=0.01)
    seconds_3d = time.perf_counter() - started
    save_image(out / "clahe_ct_3d.nii.gz", enhanced_ct, ct.geometry)
    shots.append(("clahe_bmode", [(frame.data, {"name": "B-mode"}, "image"), (enhanced, {"name": "CLAHE"}, "image")]))
    return {
        "outputs": ["clahe_bmode.png", "clahe_ct_3d.nii.gz"],
        "bmode_seconds": round(seconds_2d, 3),
        "ct_3d_seconds": round(seconds_3d, 3),
        "ct_shape": list(ct.data.shape),
        "range": [float(enhanced.min()), float(enhanced.max())],
    }


def demo_steatosis(out: Path, shots: list) -> dict:
    """Grade the sample B-mode frame with its liver and kidney ROIs."""
    from . import grade_steatosis
    from .io.readers import load_image
    from .sample_data import BMODE_FRAME, BMODE_KIDNEY_ROI, BMODE_LIVER_ROI

    frame = load_image(BMODE_FRAME)
    result = grade_steatosis(frame.data, roi=BMODE_LIVER_ROI, kidney_roi=BMODE_KIDNEY_ROI)
    def rectangle(roi):
        x, y, w, h = roi
        return np.array([[y, x], [y, x + w], [y + h, x + w], [y + h, x]], dtype=float)

    rois = {"data": [rectangle(BMODE_LIVER_ROI), rectangle(BMODE_KIDNEY_ROI)], "shape_type": "rectangle",
            "edge_color": ["yellow", "cyan"], "face_color": "transparent", "edge_width": 2,
            "name": "liver / kidney ROI"}
    shots.append(("steatosis_heatmap", [(frame.data, {"name": "B-mode"}, "image"),
                                        (result.heatmap, {"name": "heat map", "colormap": "inferno",
                                                          "blending": "additive"}, "image"),
                                        ([], rois, "shapes")]))
    return {
        "truth": "S0 (biopsy fat 3 %)",
        "grade": int(result.grade),
        "label": result.label,
        "probabilities": [round(float(p), 4) for p in result.probabilities],
        "hepatorenal_index": (None if getattr(result, "hepatorenal_index", None) is None
                              else round(float(result.hepatorenal_index), 3)),
    }


def demo_segmentation(out: Path, shots: list) -> dict:
    """Segment the sample CT and the phantom; Dice against the reference labels."""
    from . import segment
    from .io.readers import load_image
    from .io.writers import save_image
    from .sample_data import CT_LIVER, CT_VOLUME
    from .sample_data.phantom import make_ct_phantom

    ct = load_image(CT_VOLUME)
    truth = load_image(CT_LIVER).data
    result = segment(ct.data, spacing=ct.geometry.spacing, affine=ct.geometry.affine_ras())
    save_image(out / "segmentation_ct.nii.gz", result.labels, ct.geometry)
    volume, labels, spacing = make_ct_phantom(seed=0)
    phantom = segment(volume, spacing=spacing)
    ct_kwargs = {"name": "CT", "contrast_limits": (-200, 250), **ct.geometry.layer_kwargs()}
    shots.append(("segmentation_ct", [(ct.data, ct_kwargs, "image"),
                                      (result.labels, {"name": "labels", **ct.geometry.layer_kwargs()}, "labels")]))
    return {
        "outputs": ["segmentation_ct.nii.gz"],
        "ct_liver_dice_vs_totalsegmentator": _dice(result.labels >= 1, truth == 1),
        "ct_volumes_ml": {k: round(float(v), 1) for k, v in result.volumes_ml.items()},
        "ct_notes": list(result.notes),
        "phantom_liver_dice": _dice(phantom.labels >= 1, labels >= 1),
        "phantom_tumour_dice": _dice(phantom.labels == 2, labels == 2),
    }


def retrieval_query() -> np.ndarray:
    """The demo's query: the first brain MRI sample as another export might store it, mirrored left-right and
    cropped by 8 % on each side, so the nearest case is found, not matched byte for byte."""
    from .io.readers import load_image
    from .sample_data import BRAIN_MRI

    image = load_image(BRAIN_MRI[0]).data
    h, w = image.shape[:2]
    return np.ascontiguousarray(image[int(0.08 * h):int(0.92 * h), int(0.08 * w):int(0.92 * w)][:, ::-1])


def demo_retrieval(out: Path, shots: list) -> dict:
    """Build a library from the brain MRI samples and query it with a mirrored, cropped copy of one of them."""
    from . import CaseLibrary
    from .sample_data import BRAIN_MRI, brain_mri_label

    cases = out / "retrieval_cases"
    for path in BRAIN_MRI:
        folder = cases / brain_mri_label(path)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / path.name).write_bytes(path.read_bytes())
    library = CaseLibrary.build(cases)
    library.save(out / "brain_library.sqlite")
    hits = library.query(retrieval_query(), k=3)
    return {
        "library": "brain_library.sqlite",
        "query": f"{BRAIN_MRI[0].name}, mirrored left-right and cropped by 8 % on each side",
        "hits": [{"label": h.label, "path": Path(h.path).name, "distance": round(float(h.distance), 4)} for h in hits],
    }


# (report name, sub-package that must be present, step)
STEPS: list[tuple[str, str, Callable]] = [
    ("clahe", "enhance", demo_clahe),
    ("steatosis", "steatosis", demo_steatosis),
    ("segmentation", "segmentation", demo_segmentation),
    ("retrieval", "retrieval", demo_retrieval),
]


def _tool_available(package: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(f"napari_medai.{package}") is not None


# ---------------------------------------------------------------------------------------- headless
WINDOW = (1280, 800)


def _widget_shot_steps(out: Path) -> list:
    """(file stem, widget display name, setup(viewer, widget) that loads the sample and runs the tool)."""
    import napari_medai as nm

    from .io.readers import load_image
    from .sample_data import BMODE_FRAME, BMODE_KIDNEY_ROI, BMODE_LIVER_ROI, CT_VOLUME
    from .viewer import roi_rectangle

    def settings(viewer, w):
        nm.add_to_viewer(viewer, load_image(CT_VOLUME))

    def clahe(viewer, w):
        nm.add_to_viewer(viewer, load_image(BMODE_FRAME), name="B-mode liver")
        w.clip_limit.value = 0.01
        w(block=True)
        viewer.layers[0].visible = False

    def steatosis(viewer, w):
        image = nm.add_to_viewer(viewer, load_image(BMODE_FRAME), name="B-mode liver")
        w.create_roi_layers()
        viewer.layers["liver ROI"].add_rectangles(roi_rectangle(BMODE_LIVER_ROI))
        viewer.layers["kidney ROI"].add_rectangles(roi_rectangle(BMODE_KIDNEY_ROI))
        w.image.value = image
        w(block=True)

    def segmentation(viewer, w):
        ct = nm.add_to_viewer(viewer, load_image(CT_VOLUME), name="abdominal CT")
        w.image.value = ct
        w(block=True)
        labels = viewer.layers[-1]
        z = int(np.argmax((np.asarray(labels.data) > 0).sum(axis=(1, 2))))  # the slice with the most liver
        viewer.dims.set_point(0, float(ct.data_to_world([z, 0, 0])[0]))

    def retrieval(viewer, w):
        viewer.add_image(retrieval_query(), name="query: brain MRI (mirrored, cropped)")
        w.library_path.value = str(out / "brain_library.sqlite")
        w.open_library()
        w.k.value = 3
        w(block=True)

    return [("settings", "Settings", settings), ("clahe", "CLAHE enhancement", clahe),
            ("steatosis", "Fatty-liver grading", steatosis),
            ("segmentation", "Liver and tumour segmentation", segmentation),
            ("retrieval", "Nearest-case retrieval", retrieval)]


def _settle(viewer) -> None:
    """Lay out a hidden window before its screenshot: its docks keep their first (default) width until
    the window is rendered once."""
    from qtpy.QtWidgets import QApplication

    viewer.window._qt_window.grab()
    QApplication.processEvents()


def _screenshots(out: Path, shots: list) -> list[str]:
    """Every widget docked in a 1280x800 (offscreen) napari window, run on its sample, and the window
    with all widgets docked. ``shots`` (layers only) is kept for callers that render results alone."""
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return []
    import napari

    written = []
    previous = os.environ.get("NAPARI_MEDAI_SYNC")
    os.environ["NAPARI_MEDAI_SYNC"] = "1"  # each tool runs in the foreground so the shot shows its result
    try:
        for stem, widget_name, setup in _widget_shot_steps(out):
            if stem == "retrieval" and not (out / "brain_library.sqlite").exists():
                continue
            viewer = napari.Viewer(show=False)
            try:
                viewer.window._qt_window.resize(*WINDOW)
                _, widget = viewer.window.add_plugin_dock_widget("napari-medai", widget_name)
                setup(viewer, widget)
                if stem != "segmentation":
                    viewer.reset_view()
                _settle(viewer)
                path = out / f"screenshot_{stem}.png"
                # Never show() the window: under Xvfb + Mesa a shown canvas hits GL_INVALID_VALUE; napari
                # renders hidden windows for screenshots (the bare canvas of a hidden window is black).
                viewer.screenshot(str(path), canvas_only=False)
                written.append(path.name)
            except Exception as exc:  # one failing shot must not hide the others
                print(f"warning: screenshot of {widget_name!r} failed: {type(exc).__name__}: {exc}")
            finally:
                viewer.close()
        viewer = napari.Viewer(show=False)
        try:
            viewer.window._qt_window.resize(*WINDOW)
            _dock_all(viewer)
            viewer.open_sample("napari-medai", "abdomen_ct")
            _settle(viewer)
            path = out / "screenshot_viewer_with_widgets.png"
            viewer.screenshot(str(path), canvas_only=False)
            written.append(path.name)
        finally:
            viewer.close()
    finally:
        if previous is None:
            os.environ.pop("NAPARI_MEDAI_SYNC", None)
        else:
            os.environ["NAPARI_MEDAI_SYNC"] = previous
    return written


def _dock_all(viewer) -> list[str]:
    import npe2

    names = [w.display_name for w in npe2.PluginManifest.from_distribution("napari-medai").contributions.widgets]
    docked = []
    for name in names:
        try:
            viewer.window.add_plugin_dock_widget("napari-medai", name, tabify=True)
            docked.append(name)
        except Exception as exc:  # a widget that fails to build must not hide the others
            print(f"warning: widget {name!r} could not be docked: {exc}")
    return docked


def run_headless(out_dir: str | os.PathLike = "demo_output") -> dict:
    """Run every tool on the samples, write results, report.json, report.md and screenshots."""
    from .io.writers import ensure_output_folder

    out = ensure_output_folder(out_dir)
    report: dict = {"notice": RESEARCH_NOTICE, "tools": {}, "failed": []}
    shots: list = []
    for name, package, step in STEPS:
        if not _tool_available(package):
            report["tools"][name] = {"status": "not in this build"}
            continue
        started = time.perf_counter()
        try:
            result = step(out, shots)
            result["status"] = "ok"
        except Exception as exc:  # the demo reports every tool, even after one fails
            result = {"status": "failed", "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
            report["failed"].append(name)
        result["seconds"] = round(time.perf_counter() - started, 2)
        report["tools"][name] = result
        print(f"{name:14s} {result['status']} ({result['seconds']} s)")
    try:
        report["screenshots"] = _screenshots(out, shots)
    except Exception as exc:
        report["screenshots_error"] = f"{type(exc).__name__}: {exc}"
    (out / "report.json").write_text(json.dumps(report, indent=2))
    lines = ["# napari-medai demo report", "", f"_{RESEARCH_NOTICE}_", ""]
    for name, result in report["tools"].items():
        lines.append(f"## {name}: {result['status']}")
        for key, value in result.items():
            if key not in ("status", "traceback"):
                lines.append(f"- **{key}**: {value}")
        lines.append("")
    for shot in report.get("screenshots", []):
        lines.append(f"![{shot}]({shot})")
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out}/report.md; to check every model and tool on this machine's CPU and GPUs: napari-medai selftest")
    return report


# ---------------------------------------------------------------------------------------- GUI
def open_gui() -> int:
    """Open napari with every widget docked and the samples loaded."""
    import napari

    viewer = napari.Viewer(title="napari-medai demo (research use only)")
    _dock_all(viewer)
    for key in ("abdomen_ct", "bmode_liver"):
        viewer.open_sample("napari-medai", key)
    napari.run()
    return 0
