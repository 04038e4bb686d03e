"""``napari-medai selftest``: proof that this machine runs every tool, on the CPU and on each GPU.

:func:`run_selftest` reports the versions and devices, verifies every registered model by SHA-256
and loads it, runs each of the four tools on its packaged sample on the CPU and on every accelerator
present (or the one asked for), checks the CPU answers against known values and the accelerators'
answers against the CPU's, and times each step. Every step is caught on its own, so one failure
never hides another; :attr:`SelftestReport.failures` names each of them.

Qt-free: the CLI (``napari-medai selftest``) and the Settings widget's "Check this machine" button
are thin wrappers over :func:`run_selftest`. Research use only - not a medical device.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any, Optional

import numpy as np

from ..errors import CancelledError, MedaiError
from .progress import Progress, ShouldStop, check_stop
from .provenance import RESEARCH_NOTICE

# Limits (the targets). Parity: accelerator against the CPU. Sanity: CPU against known values.
CLAHE_MAX_DIFF = 1e-3  # max |CLAHE(accelerator) - CLAHE(cpu)|, intensities in [0, 1]
SEGMENTATION_MIN_DICE = 0.99  # foreground (liver + tumour) Dice between devices
RETRIEVAL_MIN_COSINE = 0.999  # descriptor cosine between devices, worst sample
GRADE_MAX_DIFF = 1e-3  # max |p(accelerator) - p(cpu)| over the 4 grade probabilities
SKIMAGE_MAX_DIFF = 1e-3  # CLAHE 2-D against scikit-image's equalize_adapthist
LIVER_VOLUME_ML = (600.0, 4000.0)  # a plausible adult liver (the segmentation plausibility range)
LIVER_MIN_DICE = 0.85  # sample CT liver against its packaged reference mask (measured 0.90)
SELF_HIT_MAX_DISTANCE = 1e-3  # a sample queried against a library holding it finds itself

# (import name, required)
_VERSIONED = (("torch", True), ("monai", True), ("numba", True), ("faiss", False))


@dataclass
class Check:
    """One verdict: a model's SHA-256, a sanity value on the CPU, or a parity value between devices."""

    name: str
    tool: str
    device: str
    kind: str  # "model" | "sanity" | "parity"
    ok: bool
    value: Any = None
    limit: str = ""
    message: str = ""

    def to_dict(self) -> dict:
        """The check as plain JSON-ready values, for ``selftest --json``."""
        return asdict(self)


@dataclass
class StepResult:
    """One timed run: a tool on one device, or a model's verification and loading."""

    tool: str
    device: str
    ok: bool
    seconds: float
    details: dict = field(default_factory=dict)
    error: Optional[str] = None

    def to_dict(self) -> dict:
        """The step as plain JSON-ready values, for ``selftest --json``."""
        return asdict(self)


@dataclass
class ModelCheck:
    """One registered model: whether its weights match their SHA-256 and load, and how long that took."""

    name: str
    task: str
    version: str
    shipped: bool
    sha256_ok: bool
    loaded: Optional[bool]  # None: no loader for this task (verified only)
    seconds: float
    error: Optional[str] = None

    def to_dict(self) -> dict:
        """The model's verdict as plain JSON-ready values, for ``selftest --json``."""
        return asdict(self)


@dataclass
class SelftestReport:
    """Everything :func:`run_selftest` found; ``ok`` is True when nothing failed."""

    requested_device: str
    available_devices: list
    auto_device: dict
    checked_devices: list
    gpu_checked: bool
    gpu_note: str
    versions: dict = field(default_factory=dict)
    models: list = field(default_factory=list)  # ModelCheck
    steps: list = field(default_factory=list)  # StepResult
    checks: list = field(default_factory=list)  # Check
    failures: list = field(default_factory=list)  # one line each, naming what failed
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # process CPU time (all threads): comparable between busy and idle machines

    @property
    def ok(self) -> bool:
        """True when no step, model or check failed."""
        return not self.failures

    def to_dict(self) -> dict:
        """The whole report, with the limits it was judged by, as JSON-ready values."""
        return {
            "ok": self.ok,
            "failures": list(self.failures),
            "requested_device": self.requested_device,
            "devices": {"available": list(self.available_devices), "auto": dict(self.auto_device),
                        "checked": list(self.checked_devices)},
            "gpu_checked": self.gpu_checked,
            "gpu_note": self.gpu_note,
            "versions": dict(self.versions),
            "models": [m.to_dict() for m in self.models],
            "steps": [s.to_dict() for s in self.steps],
            "checks": [c.to_dict() for c in self.checks],
            "limits": {
                "clahe_max_abs_diff": CLAHE_MAX_DIFF, "segmentation_min_dice": SEGMENTATION_MIN_DICE,
                "retrieval_min_cosine": RETRIEVAL_MIN_COSINE, "grade_max_prob_diff": GRADE_MAX_DIFF,
                "clahe_vs_skimage_max_diff": SKIMAGE_MAX_DIFF, "liver_volume_ml": list(LIVER_VOLUME_ML),
                "liver_min_dice_vs_reference": LIVER_MIN_DICE,
            },
            "seconds": round(self.seconds, 2),
            "cpu_seconds": round(self.cpu_seconds, 2),
            "notice": RESEARCH_NOTICE,
        }

    def format_table(self) -> str:
        """The report for people: versions, devices, models, steps per device, checks, verdict."""
        lines = [f"napari-medai selftest ({RESEARCH_NOTICE})", ""]
        lines.append("versions  " + ", ".join(f"{k} {v if v is not None else 'MISSING'}"
                                              for k, v in self.versions.items()))
        lines.append(f"devices   available: {', '.join(self.available_devices)}; "
                     f"checked: {', '.join(self.checked_devices)}")
        lines.append(f"          {self.gpu_note}")
        lines.append("")
        if self.models:
            lines.append(f"{'model':26s} {'task':13s} {'version':8s} {'sha256':7s} {'load':7s} {'time':>7s}")
            for m in self.models:
                load = "-" if m.loaded is None else ("ok" if m.loaded else "FAIL")
                name = m.name + ("" if m.shipped else " (user)")
                sha = "ok" if m.sha256_ok else "FAIL"
                lines.append(f"{name:26s} {m.task:13s} {m.version:8s} {sha:7s} {load:7s} {m.seconds:6.2f}s")
            lines.append("")
        tools = list(dict.fromkeys(s.tool for s in self.steps))
        if tools:
            width = 16
            lines.append(f"{'tool':14s}" + "".join(f" {d:>{width}s}" for d in self.checked_devices))
            for tool in tools:
                row = f"{tool:14s}"
                for device in self.checked_devices:
                    step = next((s for s in self.steps if s.tool == tool and s.device == device), None)
                    cell = "-" if step is None else f"{'ok' if step.ok else 'FAIL'} {step.seconds:6.2f}s"
                    row += f" {cell:>{width}s}"
                lines.append(row)
            lines.append("")
        if self.checks:
            lines.append(f"{'':5s} {'check':56s} {'device':8s} value (limit)")
            for c in self.checks:
                value = _short(c.value)
                limit = f" ({c.limit})" if c.limit else ""
                lines.append(f"{'ok' if c.ok else 'FAIL':5s} {c.name[:56]:56s} {c.device:8s} {value}{limit}")
            lines.append("")
        if self.ok:
            lines.append(f"result: OK - {sum(c.ok for c in self.checks)} checks passed in {self.seconds:.1f} s "
                         f"(CPU time {self.cpu_seconds:.1f} s)")
        else:
            lines.append(f"result: FAILED - {len(self.failures)} problem(s) in {self.seconds:.1f} s:")
            lines.extend(f"  - {f}" for f in self.failures)
        if not self.gpu_checked:
            lines.append("no GPU checked")
        return "\n".join(lines)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_short(v) for v in value) + "]"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_short(v)}" for k, v in value.items())
    return str(value)


def _error_text(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return text if isinstance(exc, MedaiError) else f"{type(exc).__name__}: {text}"


def _round(x: float, digits: int = 6) -> float:
    return float(round(float(x), digits))


# -------------------------------------------------------------------------------- samples
@dataclass
class Samples:
    """The packaged samples every tool runs on (loaded once)."""

    frame: np.ndarray  # B-mode frame (434, 636) uint8
    liver_roi: tuple
    kidney_roi: tuple
    ct: np.ndarray  # abdominal CT (z, y, x) HU
    ct_spacing: tuple
    ct_affine: np.ndarray
    ct_liver: np.ndarray  # its reference liver mask (TotalSegmentator)
    mri: list  # brain MRI slices
    mri_labels: list
    mri_names: list


def load_samples() -> Samples:
    """Read the packaged B-mode frame, CT volume (with its liver mask) and brain MRI slices.

    Raises:
        MedaiError: the brain MRI samples are not installed.
    """
    from ..io.readers import load_image
    from ..sample_data import (
        BMODE_FRAME,
        BMODE_KIDNEY_ROI,
        BMODE_LIVER_ROI,
        BRAIN_MRI,
        CT_LIVER,
        CT_VOLUME,
        brain_mri_label,
    )

    if not BRAIN_MRI:
        raise MedaiError("the packaged brain MRI samples are missing; reinstall napari-medai")
    ct = load_image(CT_VOLUME)
    return Samples(
        frame=load_image(BMODE_FRAME).data, liver_roi=tuple(BMODE_LIVER_ROI), kidney_roi=tuple(BMODE_KIDNEY_ROI),
        ct=ct.data, ct_spacing=tuple(ct.geometry.spacing), ct_affine=ct.geometry.affine_ras(),
        ct_liver=load_image(CT_LIVER).data == 1,
        mri=[load_image(p).data for p in BRAIN_MRI], mri_labels=[brain_mri_label(p) for p in BRAIN_MRI],
        mri_names=[p.name for p in BRAIN_MRI],
    )


# -------------------------------------------------------------------------------- the four tools
# Each tool: run(device, samples, should_stop) -> outputs (arrays + a "details" dict for the report);
# sanity(outputs, samples) -> checks on the CPU answer; compare(cpu, other, device) -> parity checks.


def _clahe_run(device: str, s: Samples, should_stop: Optional[ShouldStop] = None) -> dict:
    from ..enhance.core import run_clahe

    frame = run_clahe(s.frame, device=device, clip_limit=0.01, should_stop=should_stop)
    volume = run_clahe(s.ct, mode="3d", device=device, clip_limit=0.01, should_stop=should_stop)
    return {"frame": frame.image, "volume": volume.image,
            "details": {"backend": frame.backend, "device": frame.device, "frame_shape": list(s.frame.shape),
                        "volume_shape": list(s.ct.shape)}}


def _in_unit_range(name: str, a: np.ndarray) -> Check:
    ok = a.dtype == np.float32 and bool(np.isfinite(a).all()) and float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    return Check(f"CLAHE {name}: float32 in [0, 1]", "clahe", "cpu", "sanity", ok,
                 [_round(a.min()), _round(a.max())], "[0, 1]")


def _clahe_sanity(out: dict, s: Samples) -> list:
    from skimage.exposure import equalize_adapthist

    from ..enhance.core import run_clahe

    checks = [_in_unit_range("B-mode 2-D", out["frame"]), _in_unit_range("CT 3-D", out["volume"])]
    ref = equalize_adapthist(s.frame, clip_limit=0.01)
    diff = float(np.abs(out["frame"].astype(np.float64) - ref).max())
    checks.append(Check("CLAHE 2-D matches scikit-image", "clahe", "cpu", "sanity", diff <= SKIMAGE_MAX_DIFF,
                        _round(diff, 8), f"<= {SKIMAGE_MAX_DIFF:g}"))
    # the torch kernel is what GPUs run: on the CPU it must agree with the numba kernel
    for key, kwargs in (("frame", {}), ("volume", {"mode": "3d"})):
        image = s.frame if key == "frame" else s.ct
        torch_out = run_clahe(image, device="cpu", backend="torch", clip_limit=0.01, **kwargs).image
        diff = float(np.abs(torch_out - out[key]).max())
        label = "2-D" if key == "frame" else "3-D"
        checks.append(Check(f"CLAHE {label}: torch kernel (GPU path) = numba", "clahe", "cpu", "sanity",
                            diff <= CLAHE_MAX_DIFF, _round(diff, 8), f"<= {CLAHE_MAX_DIFF:g}"))
    return checks


def _clahe_compare(ref: dict, out: dict, device: str) -> list:
    checks = []
    for key, label in (("frame", "2-D B-mode"), ("volume", "3-D CT")):
        if out[key].shape == ref[key].shape:
            diff = float(np.abs(out[key].astype(np.float64) - ref[key]).max())
        else:
            diff = float("inf")
        checks.append(Check(f"CLAHE {label} max |diff| vs cpu", "clahe", device, "parity", diff <= CLAHE_MAX_DIFF,
                            _round(diff, 8), f"<= {CLAHE_MAX_DIFF:g}"))
    return checks


def _grading_run(device: str, s: Samples, should_stop: Optional[ShouldStop] = None) -> dict:
    from ..steatosis.core import grade_steatosis

    # always an explicit liver ROI (grading refuses without one); the sample's known liver/kidney ROIs
    result = grade_steatosis(s.frame, roi=s.liver_roi, kidney_roi=s.kidney_roi, device=device, should_stop=should_stop)
    details = {"grade": int(result.grade), "label": result.label, "model": result.model, "ran_on": result.device,
               "probabilities": [_round(p) for p in result.probabilities], "roi": list(s.liver_roi)}
    if getattr(result, "uncertain", None) is not None:
        details["uncertain"] = bool(result.uncertain)
    if result.device != device:
        details["note"] = f"model {result.model} is classical: it runs on {result.device} whatever the device"
    return {"probabilities": np.asarray(result.probabilities, np.float64), "grade": int(result.grade),
            "heatmap": np.asarray(result.heatmap), "details": details}


def _grading_sanity(out: dict, s: Samples) -> list:
    p = out["probabilities"]
    total = float(p.sum())
    return [
        Check("grading: 4 probabilities summing to 1", "grading", "cpu", "sanity",
              p.shape == (4,) and bool(np.isfinite(p).all()) and abs(total - 1) <= 1e-6, _round(total), "1 +- 1e-6"),
        Check("grading: sample frame graded S0 (biopsy fat 3 %)", "grading", "cpu", "sanity", out["grade"] == 0,
              out["grade"], "0"),
        Check("grading: heat map has the frame's shape", "grading", "cpu", "sanity",
              out["heatmap"].shape == s.frame.shape[:2] and bool(np.isfinite(out["heatmap"]).all()),
              list(out["heatmap"].shape), str(list(s.frame.shape[:2]))),
    ]


def _grading_compare(ref: dict, out: dict, device: str) -> list:
    diff = float(np.abs(out["probabilities"] - ref["probabilities"]).max())
    return [
        Check("grading: probabilities max |diff| vs cpu", "grading", device, "parity", diff <= GRADE_MAX_DIFF,
              _round(diff, 8), f"<= {GRADE_MAX_DIFF:g}"),
        Check("grading: same grade as cpu", "grading", device, "parity", out["grade"] == ref["grade"],
              out["grade"], str(ref["grade"])),
    ]


def _segmentation_run(device: str, s: Samples, should_stop: Optional[ShouldStop] = None) -> dict:
    from ..segmentation.core import segment

    result = segment(s.ct, spacing=s.ct_spacing, affine=s.ct_affine, device=device, should_stop=should_stop)
    details = {"model": result.model_name, "ran_on": result.device, "shape": list(s.ct.shape),
               "volumes_ml": {k: _round(v, 1) for k, v in result.volumes_ml.items()}, "notes": list(result.notes)}
    return {"labels": result.labels, "volumes_ml": dict(result.volumes_ml), "details": details}


def _segmentation_sanity(out: dict, s: Samples) -> list:
    from ..segmentation.metrics import dice as _dice

    labels = out["labels"]
    liver_ml = float(out["volumes_ml"].get("liver", 0.0))
    lo, hi = LIVER_VOLUME_ML
    dice = (_dice(labels >= 1, s.ct_liver) or 0.0) if labels.shape == s.ct_liver.shape else 0.0
    return [
        Check("segmentation: labels have the CT's shape", "segmentation", "cpu", "sanity",
              labels.shape == s.ct.shape, list(labels.shape), str(list(s.ct.shape))),
        Check("segmentation: liver volume plausible (ml)", "segmentation", "cpu", "sanity", lo <= liver_ml <= hi,
              _round(liver_ml, 1), f"{lo:g}-{hi:g}"),
        Check("segmentation: liver Dice vs packaged reference", "segmentation", "cpu", "sanity",
              dice >= LIVER_MIN_DICE, _round(dice, 4), f">= {LIVER_MIN_DICE:g}"),
    ]


def _segmentation_compare(ref: dict, out: dict, device: str) -> list:
    from ..segmentation.metrics import dice as _dice

    a, b = ref["labels"], out["labels"]
    if a.shape != b.shape:
        return [Check("segmentation: labels shape vs cpu", "segmentation", device, "parity", False,
                      list(b.shape), str(list(a.shape)))]
    dice = _dice(a >= 1, b >= 1)
    dice = 1.0 if dice is None else dice  # both empty: the devices agree
    tumour = _dice(a == 2, b == 2)
    # tumour Dice is reported, not gated: on the sample a few voxels are tumour, so one voxel swings it
    return [
        Check("segmentation: liver+tumour Dice vs cpu", "segmentation", device, "parity",
              dice >= SEGMENTATION_MIN_DICE, _round(dice, 5), f">= {SEGMENTATION_MIN_DICE:g}"),
        Check("segmentation: tumour Dice vs cpu (reported only)", "segmentation", device, "parity", True,
              None if tumour is None else _round(tumour, 4), "not gated"),
    ]


def _retrieval_run(device: str, s: Samples, should_stop: Optional[ShouldStop] = None) -> dict:
    from ..retrieval.embedder import get_embedder
    from ..retrieval.library import CaseLibrary

    embedder = get_embedder(None, device=device)
    vectors = embedder.embed(s.mri, should_stop=should_stop)
    library = CaseLibrary(embedder)
    library.add_vectors(vectors, s.mri_labels, paths=s.mri_names)
    top, distances, out_of_domain = [], [], []
    for image in s.mri:
        check_stop(should_stop)
        hits = library.query(image, k=len(s.mri))
        top.append(hits[0].path)
        distances.append(float(hits[0].distance))
        out_of_domain.append(getattr(hits, "out_of_domain", None))
    details = {"embedder": embedder.name, "dim": int(vectors.shape[1]), "library_cases": len(s.mri),
               "top_hits": top, "top_distances": [_round(d, 8) for d in distances]}
    if any(o is not None for o in out_of_domain):
        details["out_of_domain"] = out_of_domain
    return {"vectors": vectors, "top": top, "distances": distances, "details": details}


def _retrieval_sanity(out: dict, s: Samples) -> list:
    vectors = out["vectors"]
    self_hit = out["top"] == s.mri_names and max(out["distances"]) <= SELF_HIT_MAX_DISTANCE
    return [
        Check("retrieval: descriptors finite, one per sample", "retrieval", "cpu", "sanity",
              vectors.shape[0] == len(s.mri) and bool(np.isfinite(vectors).all()), list(vectors.shape), ""),
        Check("retrieval: each sample's top hit is itself", "retrieval", "cpu", "sanity", self_hit,
              _round(max(out["distances"]), 8), f"same file, distance <= {SELF_HIT_MAX_DISTANCE:g}"),
    ]


def _retrieval_compare(ref: dict, out: dict, device: str) -> list:
    a, b = ref["vectors"].astype(np.float64), out["vectors"].astype(np.float64)
    if a.shape != b.shape:
        return [Check("retrieval: descriptor shape vs cpu", "retrieval", device, "parity", False,
                      list(b.shape), str(list(a.shape)))]
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
    worst = float(cos.min())
    return [
        Check("retrieval: descriptor cosine vs cpu (worst sample)", "retrieval", device, "parity",
              worst >= RETRIEVAL_MIN_COSINE, _round(worst, 7), f">= {RETRIEVAL_MIN_COSINE:g}"),
        Check("retrieval: same top hits as cpu", "retrieval", device, "parity", out["top"] == ref["top"],
              out["top"], ""),
    ]


@dataclass
class Tool:
    """One tool under test: how to run it on a device, sanity-check the CPU answer, and compare devices."""

    name: str
    run: Callable[[str, Samples, Optional[ShouldStop]], dict]
    sanity: Callable[[dict, Samples], list]
    compare: Callable[[dict, dict, str], list]


# Looked up when the self-test runs (tests replace entries to mock an accelerator).
TOOLS: list = [
    Tool("clahe", _clahe_run, _clahe_sanity, _clahe_compare),
    Tool("grading", _grading_run, _grading_sanity, _grading_compare),
    Tool("segmentation", _segmentation_run, _segmentation_sanity, _segmentation_compare),
    Tool("retrieval", _retrieval_run, _retrieval_sanity, _retrieval_compare),
]


# -------------------------------------------------------------------------------- versions, devices, models
def collect_versions() -> tuple[dict, list]:
    """Versions of python, napari-medai and the numeric stack; failures for required ones that do not import."""
    from .provenance import package_versions

    versions, errors = package_versions([module for module, _ in _VERSIONED])
    failures = [f"versions: {module} cannot be imported ({_error_text(errors[module])}); reinstall it"
                for module, required in _VERSIONED if required and module in errors]
    return versions, failures


def select_devices(device: str = "auto") -> tuple[list, str, dict, list]:
    """(accelerators to check, note on GPUs, auto choice, available devices). Raises MedaiError, as
    :func:`resolve_device` does, for a device that does not exist here."""
    from .device import available_devices, resolve_device

    text = (str(device) if device is not None else "auto").strip().lower() or "auto"
    available = available_devices()
    auto = resolve_device("auto")
    auto_info = {"device": auto.name, "reason": auto.reason, "cpu_fallback": auto.is_fallback}
    if text == "auto":
        accelerators = [d for d in available if d != "cpu"]
        note = (f"GPU checked: {', '.join(accelerators)} against the CPU" if accelerators
                else "no GPU checked: no CUDA or MPS device found on this machine")
    else:
        choice = resolve_device(text)  # refuses a device that is not here, in one line
        accelerators = [] if choice.kind == "cpu" else [choice.name]
        note = (f"GPU checked: {choice.name} against the CPU" if accelerators
                else "no GPU checked: the CPU alone was asked for")
    return accelerators, note, auto_info, available


def check_models(
    progress: Optional[Callable[[], None]] = None, should_stop: Optional[ShouldStop] = None
) -> tuple[list, list, list]:
    """Verify every registered model's SHA-256 and load it on the CPU. Returns (ModelCheck, Check, failures)."""
    from .registry import PACKAGE_MODELS, list_models, verify_weights

    models, checks, failures = [], [], []
    try:
        cards = list_models()
    except Exception as exc:  # noqa: BLE001 - an unreadable card is a finding, not a crash
        failures.append(f"models: cannot list the registered models ({_error_text(exc)})")
        return models, checks, failures
    if not cards:
        failures.append("models: no model is registered; reinstall napari-medai")
    for card in cards:
        check_stop(should_stop)
        started = time.perf_counter()
        shipped = card.folder is not None and card.folder.resolve().parent == PACKAGE_MODELS.resolve()
        sha_ok, loaded, error = False, None, None
        try:
            verify_weights(card)
            sha_ok = True
            loaded = _load_model(card)
        except CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001
            error = _error_text(exc)
            if sha_ok:
                loaded = False
        seconds = time.perf_counter() - started
        models.append(ModelCheck(card.name, card.task, str(card.version), shipped, sha_ok, loaded,
                                 _round(seconds, 3), error))
        what = "SHA-256 ok, loaded" if loaded else "SHA-256 ok"
        checks.append(Check(f"model {card.name}: {what}", "models", "cpu", "model", error is None,
                            "ok" if error is None else "FAIL", "", error or ""))
        if error is not None:
            stage = "fails verification" if not sha_ok else "does not load"
            failures.append(f"model {card.name} {stage}: {error}")
        if progress:
            progress()
    return models, checks, failures


def _load_model(card) -> Optional[bool]:
    """Load a verified model with its tool's own loader on the CPU; None when no loader fits its task."""
    if card.task == "segmentation":
        from ..segmentation.core import load_model

        load_model(card, "cpu")
    elif card.task == "steatosis":
        from ..steatosis.grader import load_grader

        load_grader(card)
    elif card.task == "embedding":
        from ..retrieval.embedder import CNNEmbedder

        CNNEmbedder(card, device="cpu")._load()
    else:
        return None
    return True


# -------------------------------------------------------------------------------- the self-test
def run_selftest(
    device: str = "auto",
    *,
    progress: Optional[Progress] = None,
    should_stop: Optional[ShouldStop] = None,
) -> SelftestReport:
    """Check this machine: versions, devices, every model, every tool on the CPU and on accelerators.

    device
        ``auto``: the CPU and every accelerator present; ``cpu``: the CPU only; ``cuda``, ``cuda:N``
        or ``mps``: the CPU and that device (a device that does not exist here raises
        :class:`MedaiError`, before anything runs).
    progress, should_stop
        ``progress(i, n)`` after each step; ``should_stop()`` is polled between steps (raises
        :class:`CancelledError`).

    Never raises for what it finds: crashes, tampered weights and mismatches go to
    :attr:`SelftestReport.failures`.
    """
    wall0, cpu0 = time.perf_counter(), time.process_time()
    accelerators, gpu_note, auto_info, available = select_devices(device)
    devices = ["cpu", *accelerators]
    report = SelftestReport(
        requested_device=str(device), available_devices=available, auto_device=auto_info,
        checked_devices=devices, gpu_checked=bool(accelerators), gpu_note=gpu_note,
    )
    tools = list(TOOLS)
    from .registry import list_models

    try:
        n_models = len(list_models())
    except Exception:  # noqa: BLE001 - reported by check_models
        n_models = 0
    total = 2 + n_models + len(tools) * len(devices) + 1
    done = [0]

    def tick() -> None:
        done[0] += 1
        if progress is not None:
            progress(min(done[0], total), total)

    check_stop(should_stop)
    report.versions, failures = collect_versions()
    report.failures += failures
    tick()

    check_stop(should_stop)
    models, checks, failures = check_models(tick, should_stop)
    report.models, report.failures = models, report.failures + failures
    report.checks += checks
    done[0] = 1 + n_models

    samples, samples_error = None, None
    try:
        samples = load_samples()
    except CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001
        samples_error = _error_text(exc)
        report.failures.append(
            f"samples: cannot load the packaged samples ({samples_error}); reinstall napari-medai")
    tick()

    outputs: dict = {}
    for dev in devices:
        for tool in tools:
            check_stop(should_stop)
            started = time.perf_counter()
            if samples is None:
                report.steps.append(StepResult(tool.name, dev, False, 0.0, error=f"not run: {samples_error}"))
                tick()
                continue
            try:
                out = tool.run(dev, samples, should_stop)
            except CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - one crash must not hide the other tools
                seconds = time.perf_counter() - started
                error = _error_text(exc)
                report.steps.append(StepResult(tool.name, dev, False, _round(seconds, 3), error=error,
                                               details={"traceback": traceback.format_exc(limit=6)}))
                report.failures.append(f"{tool.name} on {dev} crashed: {error}")
            else:
                seconds = time.perf_counter() - started
                outputs[(tool.name, dev)] = out
                report.steps.append(StepResult(tool.name, dev, True, _round(seconds, 3),
                                               details=dict(out.get("details", {}))))
            tick()

    check_stop(should_stop)
    for tool in tools:
        ref = outputs.get((tool.name, "cpu"))
        if ref is not None:
            report.checks += _guarded(tool.name, "cpu", partial(tool.sanity, ref, samples), report.failures)
        for dev in accelerators:
            out = outputs.get((tool.name, dev))
            if ref is None or out is None:
                if ref is None and out is not None:
                    report.failures.append(f"{tool.name}: no parity check for {dev} because the CPU run failed")
                continue
            report.checks += _guarded(tool.name, dev, partial(tool.compare, ref, out, dev), report.failures)
    for c in report.checks:
        if not c.ok and c.kind != "model":
            where = "on cpu" if c.kind == "sanity" else f"{c.device} vs cpu"
            limit = f" (limit {c.limit})" if c.limit else ""
            report.failures.append(f"{c.tool} {where}: {c.name} = {_short(c.value)}{limit}")
    tick()
    report.seconds = time.perf_counter() - wall0
    report.cpu_seconds = time.process_time() - cpu0
    return report


def _guarded(tool: str, device: str, fn: Callable[[], list], failures: list) -> list:
    """Run a check function; a crash in it is itself a failure, not a lost report."""
    try:
        return list(fn())
    except CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001
        failures.append(f"{tool} checks on {device} crashed: {_error_text(exc)}")
        return []
