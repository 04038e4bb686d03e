"""CLAHE benchmark: napari-medai against scikit-image, OpenCV and kornia, one process, same inputs.

    .venv/bin/python benchmarks/clahe.py                 # full table (a few minutes on 2 cores)
    .venv/bin/python benchmarks/clahe.py --quick         # smaller cases, fewer repeats
    .venv/bin/python benchmarks/clahe.py --json out.json

Every figure is the median of several runs after a warm-up run (numba's compile / cache load and
torch's first-call costs are reported separately, in fresh subprocesses). The machine may be shared:
compare the ratios, which are measured side by side, rather than absolute times.

Inputs are real images from ../shared/data (NAPARI_MEDAI_DATA): the B-mode ultrasound frame (resized
to 575x360 and 1024x1024) and the full abdominal CT (512x512x146, int16 HU); synthetic fallbacks are
used (and said so) where the folder is absent. scikit-image gets the same min-max input as ours (for
HU: the image shifted to start at 0, since scikit-image clips negative integers).

OpenCV and kornia do 2-D CLAHE with their own semantics (tile grid, clip limit relative to the mean
bin count, no interpolation at the border the way scikit-image does it), so their outputs are not
compared, only their speed: OpenCV with an 8x8 grid and clip 2.0 (its default), kornia likewise.
"""

from __future__ import annotations

import os

# torch (and kornia) run on GNU OpenMP. With its default active wait, every parallel torch op cost
# ~10 ms on this shared 2-core machine while other processes kept the cores busy (a 575x360 image:
# 447 ms -> 20 ms with the passive policy). It must be set before torch loads; it only helps the
# torch/kornia rows (our numba kernels run on a thread pool of their own, scikit-image and OpenCV do not
# use OpenMP here).
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import argparse
import datetime
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def timeit(fn, repeats: int, warmup: int = 1) -> float:
    """Call fn warmup times untimed, then return the median wall time in seconds of repeats calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def load_inputs(quick: bool) -> dict:
    """Return the named (mode, image) benchmark cases from the shared B-mode frame and CT, and notes on fallbacks."""
    from napari_medai.data_paths import shared_data_dir

    root = shared_data_dir()
    inputs, notes = {}, []
    import cv2

    if root is not None and (root / "steatosis/frames/ID_1_Class_0_Fat_3_Image_1.jpeg").exists():
        from napari_medai.io.readers import load_image

        frame = load_image(root / "steatosis/frames/ID_1_Class_0_Fat_3_Image_1.jpeg").data
        ct_path = root / "ct/full-abdomen/abdomen_ct_512x512x146.nii.gz"
        ct = load_image(ct_path).data.astype(np.int16) if ct_path.exists() else None
    else:
        frame, ct = None, None
    if frame is None:
        notes.append("no real B-mode frame found: synthetic 2-D input")
        rng = np.random.default_rng(0)
        frame = (rng.normal(0, 1, (434, 636)).cumsum(0).cumsum(1))
        frame = ((frame - frame.min()) / np.ptp(frame) * 255).astype(np.uint8)
    if ct is None:
        notes.append("no real CT found: synthetic volume")
        rng = np.random.default_rng(1)
        ct = (rng.normal(0, 1, (146, 512, 512)).cumsum(1) * 20).astype(np.int16)
    inputs["2D 575x360 (US frame, uint8)"] = ("2d", cv2.resize(frame, (575, 360), interpolation=cv2.INTER_AREA))
    inputs["2D 1024x1024 (US frame, uint8)"] = (
        "2d", cv2.resize(frame, (1024, 1024), interpolation=cv2.INTER_CUBIC)
    )
    z0 = (ct.shape[0] - 64) // 2
    n_slices = 8 if quick else 32
    inputs[f"slices {n_slices}x512x512 (CT, int16)"] = ("slices", np.ascontiguousarray(ct[z0:z0 + n_slices]))
    inputs["3D 64x256x256 (CT, int16)"] = ("3d", np.ascontiguousarray(ct[z0:z0 + 64, ::2, ::2]))
    if not quick:
        inputs[f"3D {ct.shape[0]}x{ct.shape[1]}x{ct.shape[2]} (CT, int16)"] = ("3d", np.ascontiguousarray(ct))
    return inputs, notes


def skimage_ref(mode: str, image: np.ndarray):
    """Return a no-argument callable running scikit-image's CLAHE on image (integers shifted to start at 0)."""
    from skimage.exposure import equalize_adapthist

    if image.dtype.kind == "i":
        image = (image.astype(np.int64) - int(image.min())).astype(np.uint16)
    if mode == "slices":
        return lambda: np.stack([equalize_adapthist(s) for s in image])
    return lambda: equalize_adapthist(image)


def cold_start_costs() -> dict:
    """First-call cost in a fresh process: numba compile (empty cache), then loading the cache."""
    import tempfile

    script = (
        "import time, numpy as np; t=time.perf_counter(); "
        "from napari_medai.enhance import clahe; t1=time.perf_counter(); "
        "clahe(np.arange(64*64, dtype=np.uint8).reshape(64,64)); t2=time.perf_counter(); "
        "clahe(np.arange(16*32*32, dtype=np.int16).reshape(16,32,32)); t3=time.perf_counter(); "
        "clahe(np.arange(64*64, dtype=np.float32).reshape(64,64)); t4=time.perf_counter(); "
        "print(t1-t, t2-t1, t3-t2, t4-t3)"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    out = {}
    with tempfile.TemporaryDirectory() as cache:
        for label in ("cold (empty numba cache: compile)", "warm (numba cache on disk)"):
            env["NUMBA_CACHE_DIR"] = cache
            # check=False: a failing child is recorded (its last stderr line) in the table, not raised
            proc = subprocess.run(
                [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600, check=False
            )
            if proc.returncode != 0:
                out[label] = proc.stderr.strip().splitlines()[-1:]
                continue
            imp, first2d, first3d, float2d = (float(v) for v in proc.stdout.split())
            out[label] = {"import_s": round(imp, 3), "first_2d_uint8_s": round(first2d, 3),
                          "first_3d_int16_s": round(first3d, 3), "first_2d_float32_s": round(float2d, 3)}
    return out


def main(argv=None) -> int:
    """Time every case with each implementation, print the table and optionally write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller inputs, fewer repeats")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per case (default 7, quick 3)")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--no-cold", action="store_true", help="skip the fresh-process compile/cache timing")
    args = parser.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 7)

    from napari_medai.enhance import _numba, clahe

    try:
        import cv2
    except ImportError:
        cv2 = None
    try:
        import torch
        from kornia.enhance import equalize_clahe
    except ImportError:
        equalize_clahe = None
    import torch

    load_before = os.getloadavg()
    inputs, notes = load_inputs(args.quick)
    rows = []
    for name, (mode, image) in inputs.items():
        big = image.size > 20_000_000
        reps = max(2, repeats // 3) if big else repeats
        ours = timeit(lambda image=image, mode=mode: clahe(image, mode=mode, device="cpu"), reps)
        row = {"case": name, "shape": list(image.shape), "mode": mode, "ours_numba_ms": ours * 1e3}
        ref_fn = skimage_ref(mode, image)
        sk_reps = 1 if big else max(2, reps // 2)
        row["skimage_ms"] = timeit(ref_fn, sk_reps, warmup=0 if big else 1) * 1e3
        ref = ref_fn()
        diff = np.abs(clahe(image, mode=mode, device="cpu").astype(np.float64) - ref)
        row["parity_mean"], row["parity_max"] = float(diff.mean()), float(diff.max())
        row["skimage_over_ours"] = row["skimage_ms"] / row["ours_numba_ms"]
        if not big:
            t_torch = timeit(
                lambda image=image, mode=mode: clahe(image, mode=mode, backend="torch", device="cpu"), max(2, reps // 2)
            )
            row["ours_torch_cpu_ms"] = t_torch * 1e3
        if mode == "2d" and cv2 is not None:
            cl = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))
            row["opencv_ms"] = timeit(lambda cl=cl, image=image: cl.apply(image), repeats * 3) * 1e3
            row["ours_over_opencv"] = row["ours_numba_ms"] / row["opencv_ms"]
        if mode == "2d" and equalize_clahe is not None:
            x = torch.from_numpy(image.astype(np.float32) / 255.0)[None, None]
            row["kornia_cpu_ms"] = timeit(
                lambda x=x: equalize_clahe(x, clip_limit=2.0, grid_size=(8, 8)), max(2, reps // 2)
            ) * 1e3
        rows.append(row)
        print(f"done: {name}", file=sys.stderr)

    cold = {} if args.no_cold else cold_start_costs()
    meta = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs",
        "cpu_model": _cpu_model(),
        "numba_threads": _numba.n_threads(),
        "numba_threading_layer": _layer(),
        "torch_threads": torch.get_num_threads(),
        "versions": _versions(),
        "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "repeats": repeats,
        "notes": notes,
    }
    print_table(rows, meta, cold)
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows, "cold_start": cold}, indent=2))
    return 0


def _layer():
    import numba

    try:
        return numba.threading_layer()
    except ValueError:
        return "not initialised"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _versions() -> dict:
    out = {}
    for mod in ("numpy", "numba", "torch", "skimage", "cv2", "kornia"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:
            out[mod] = None
    return out


def _fmt(value, digits=1):
    return "-" if value is None else f"{value:.{digits}f}"


def print_table(rows, meta, cold) -> None:
    """Print the run's header, a Markdown table of the rows and the fresh-process first-call costs."""
    print(f"# CLAHE benchmark {meta['date']} - {meta['cpu_model']}, {meta['machine']}")
    print(f"numba {meta['versions']['numba']} ({meta['numba_threads']} threads, {meta['numba_threading_layer']}), "
          f"torch {meta['versions']['torch']} ({meta['torch_threads']} threads), "
          f"skimage {meta['versions']['skimage']}, "
          f"OpenCV {meta['versions']['cv2']}, kornia {meta['versions']['kornia']}; load average before/after "
          f"{meta['load_average_before_after']}; OMP_WAIT_POLICY={meta['omp_wait_policy']}; median of "
          f"{meta['repeats']} runs after warm-up")
    for note in meta["notes"]:
        print(f"note: {note}")
    print()
    print("| case | ours (numba) ms | ours (torch CPU) ms | scikit-image ms | skimage / ours | OpenCV ms "
          "| ours / OpenCV | kornia CPU ms | parity mean / max |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {_fmt(r['ours_numba_ms'], 2)} | {_fmt(r.get('ours_torch_cpu_ms'))} | "
              f"{_fmt(r['skimage_ms'])} | **{_fmt(r['skimage_over_ours'])}x** | {_fmt(r.get('opencv_ms'), 2)} | "
              f"{_fmt(r.get('ours_over_opencv'), 2)}"
              f"{'x' if r.get('ours_over_opencv') else ''} | {_fmt(r.get('kornia_cpu_ms'))} | "
              f"{r['parity_mean']:.1e} / {r['parity_max']:.1e} |")
    if cold:
        print()
        print("First call in a fresh process (seconds):")
        for label, v in cold.items():
            print(f"- {label}: {v}")
    print()
    print("No GPU on this machine: the CUDA target (512x512x300 in <= 100 ms) was not measured here.")


if __name__ == "__main__":
    sys.exit(main())
