"""One input file -> outputs + a summary row. These are the units a Dask worker runs.

Each function is top level (picklable), never raises for a bad input (the failure becomes a row), and
writes outputs atomically through ``save_image``.
"""

from __future__ import annotations

import time
import traceback
from pathlib import Path
from typing import Any

from ..errors import MedaiError


def output_stem(path: str | Path) -> str:
    """The file name of ``path`` without its image suffix (``.nii.gz`` counts as one)."""
    name = Path(str(path).rstrip("/")).name
    for suffix in (".nii.gz", ".nii", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def worker_device(requested: str = "auto") -> str:
    """On a multi-GPU LocalCluster, worker i uses GPU i (mod the count); elsewhere ``requested``."""
    if requested != "auto":
        return requested
    try:
        from distributed import get_worker

        name = get_worker().name
    except (ImportError, ValueError):
        return requested
    from ..runtime.device import available_devices

    gpus = [d for d in available_devices() if d.startswith("cuda")]
    if gpus and str(name).isdigit():
        return gpus[int(name) % len(gpus)]
    return requested


def enhance_file(path: str, out_dir: str, params: dict) -> dict:
    """Worker task: CLAHE of one file, written next to the others in ``out_dir``."""
    from ..enhance.core import clahe
    from ..io.readers import load_image
    from ..io.writers import save_image

    loaded = load_image(path)
    result = clahe(
        loaded.data,
        clip_limit=params.get("clip_limit", 0.01),
        kernel_size=params.get("kernel_size"),
        nbins=params.get("nbins", 256),
        mode=params.get("mode", "auto"),
        device=worker_device(params.get("device", "auto")),
    )
    suffix = ".nii.gz" if loaded.geometry.ndim == 3 else ".png"
    out = save_image(Path(out_dir) / f"{output_stem(path)}_clahe{suffix}", result, loaded.geometry, inputs=[path],
                     rgb=loaded.rgb)
    return {"outputs": [str(out)], "shape": list(loaded.data.shape)}


def grade_file(path: str, out_dir: str, params: dict) -> dict:
    """Worker task: steatosis grade of one B-mode frame (the result as a dict)."""
    from ..io.readers import load_image
    from ..steatosis.core import grade_steatosis

    loaded = load_image(path)
    result = grade_steatosis(
        loaded.data,
        roi=params.get("roi"),
        kidney_roi=params.get("kidney_roi"),
        model=params.get("model"),
        device=worker_device(params.get("device", "auto")),
        auto_roi=bool(params.get("auto_roi", False)),
        heatmap=False,
    )
    return {
        "outputs": [],
        "grade": int(result.grade),
        "label": result.label,
        "probabilities": [round(float(p), 5) for p in result.probabilities],
        "hepatorenal_index": getattr(result, "hepatorenal_index", None),
        "roi": list(result.roi), "roi_source": result.roi_source,
        "uncertain": bool(result.uncertain), "uncertain_reasons": list(result.uncertain_reasons),
    }


def segment_file(path: str, out_dir: str, params: dict) -> dict:
    """Worker task: liver / tumour labels of one CT volume (written with the input's affine) or slice (as
    ``napari-medai segment`` takes it: a PNG of labels)."""
    from ..io.readers import load_image
    from ..io.writers import save_image
    from ..segmentation.core import segment

    loaded = load_image(path)
    volume = loaded.geometry.ndim == 3
    result = segment(
        loaded.data,
        spacing=loaded.geometry.spacing,
        affine=loaded.geometry.affine_ras() if volume else None,  # 2-D images have no RAS affine
        model=params.get("model"),
        device=worker_device(params.get("device", "auto")),
    )
    suffix = ".nii.gz" if volume else ".png"
    out = save_image(Path(out_dir) / f"{output_stem(path)}_labels{suffix}", result.labels, loaded.geometry,
                     inputs=[path])
    return {"outputs": [str(out)], "volumes_ml": {k: round(float(v), 2) for k, v in result.volumes_ml.items()},
            "notes": list(result.notes)}


TASKS = {"enhance": enhance_file, "grade": grade_file, "segment": segment_file}


def run_task(tool: str, path: str, out_dir: str, params: dict) -> dict:
    """Run one case; a refused input or a crash becomes a ``failed`` row instead of an exception."""
    started = time.perf_counter()
    row: dict[str, Any] = {"input": path, "tool": tool}
    try:
        row.update(TASKS[tool](path, out_dir, params))
        row["status"] = "ok"
    except MedaiError as exc:
        row.update(status="failed", error=str(exc))
    except Exception as exc:  # noqa: BLE001 - isolate the failure to this case
        row.update(status="failed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc(limit=5))
    row["seconds"] = round(time.perf_counter() - started, 3)
    return row
