"""Run a tool over a cohort on Dask, with a resumable manifest and a per-case summary."""

from __future__ import annotations

import contextlib
import csv
import glob
import hashlib
import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..errors import MedaiError
from ..io.writers import atomic_output, ensure_output_folder
from ..runtime.progress import Progress, ShouldStop, callbacks, check_stop
from .tasks import TASKS, run_task

MANIFEST = "manifest.json"


@dataclass
class BatchSummary:
    """Outcome of a batch run: one row per case (``status`` ok / error / cancelled) and the skipped count."""
    rows: list = field(default_factory=list)
    skipped: int = 0
    seconds: float = 0.0
    workers: int = 0
    scheduler: str = ""

    @property
    def failed(self) -> list:
        """The rows whose status is not ``ok``."""
        return [r for r in self.rows if r.get("status") != "ok"]

    def to_dict(self) -> dict:
        """JSON-ready summary (counts and rows)."""
        return {
            "cases": len(self.rows),
            "ok": len(self.rows) - len(self.failed),
            "failed": len(self.failed),
            "skipped_unchanged": self.skipped,
            "seconds": round(self.seconds, 3),
            "workers": self.workers,
            "scheduler": self.scheduler,
            "rows": self.rows,
        }


def expand_inputs(inputs: Sequence[str]) -> list[str]:
    """Files, DICOM folders, globs, or CSV files with a ``path`` column (relative to the CSV)."""
    paths: list[str] = []
    for item in inputs:
        if item.lower().endswith(".csv") and Path(item).is_file():
            with open(item, newline="") as handle:
                reader = csv.DictReader(handle)
                if "path" not in (reader.fieldnames or []):
                    raise MedaiError(f"{item} has no 'path' column; add one listing the input files")
                for row in reader:
                    candidate = Path(row["path"])
                    paths.append(str(candidate if candidate.is_absolute() else Path(item).parent / candidate))
        elif any(ch in item for ch in "*?["):
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                raise MedaiError(f"pattern {item!r} matches no files; check the glob")
            paths.extend(matches)
        else:
            paths.append(item)
    if not paths:
        raise MedaiError("no inputs given; pass files, folders, globs or a CSV with a 'path' column")
    return list(dict.fromkeys(str(Path(p)) for p in paths))


def _digest(path: str) -> Optional[str]:
    target = Path(path)
    if not target.exists():
        return None
    digest = hashlib.sha256()
    files = sorted(p for p in target.rglob("*") if p.is_file()) if target.is_dir() else [target]
    for file in files:
        digest.update(file.name.encode())
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _params_key(tool: str, params: dict) -> str:
    return hashlib.sha256(json.dumps([tool, params], sort_keys=True, default=str).encode()).hexdigest()[:16]


def _load_manifest(out_dir: Path) -> dict:
    path = out_dir / MANIFEST
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError:
        return {}  # a damaged manifest only costs a re-run


def _write_json_atomic(path: Path, document) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(document, indent=2, default=str))


def _is_done(entry: Optional[dict], input_sha: Optional[str], key: str) -> bool:
    if not entry or entry.get("status") != "ok" or entry.get("input_sha256") != input_sha or entry.get("params") != key:
        return False
    return all(Path(p).exists() and _digest(p) == sha for p, sha in entry.get("outputs", {}).items())


def make_client(scheduler: Optional[str], workers: Optional[int], connect_timeout: str = "10s"):
    """A Dask client: an existing scheduler's address, or an embedded LocalCluster."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise MedaiError("batch needs dask: pip install 'napari-medai[dask]'") from None
    if scheduler:
        try:
            return Client(scheduler, timeout=connect_timeout), None
        except (OSError, TimeoutError) as exc:
            raise MedaiError(f"cannot reach the Dask scheduler at {scheduler} ({exc}); "
                             "check the address and that it runs") from None
    from ..runtime.device import available_devices

    gpus = [d for d in available_devices() if d.startswith("cuda")]
    n_workers = workers or (len(gpus) or min(2, os.cpu_count() or 1))
    # One process per worker, one job at a time each: models are not thread-safe and a GPU takes one job.
    # Each worker gets its share of the cores for torch/numba, so workers do not oversubscribe the CPU.
    threads = str(max(1, (os.cpu_count() or 1) // n_workers))
    cluster = LocalCluster(
        n_workers=n_workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        resources={"GPU": 1} if gpus else None,
        silence_logs=40,
        env={"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "NUMBA_NUM_THREADS": threads,
             "OMP_WAIT_POLICY": "PASSIVE"},
    )
    return Client(cluster), cluster


@contextlib.contextmanager
def cluster_client(scheduler: Optional[str], workers: Optional[int], connect_timeout: str = "10s") -> Iterator:
    """A Dask client for the duration of a job; an embedded cluster is shut down afterwards."""
    client, cluster = make_client(scheduler, workers, connect_timeout)
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def completed(futures: list, progress: Progress, should_stop: ShouldStop) -> Iterator[tuple[int, Any]]:
    """Yield ``(position, result)`` as tasks finish, reporting progress; Cancel drops the pending ones."""
    from distributed import as_completed

    position = {future.key: i for i, future in enumerate(futures)}
    for done, future in enumerate(as_completed(futures), start=1):
        yield position[future.key], future.result()
        progress(done, len(futures))
        if should_stop():
            for pending in futures:
                pending.cancel()
            check_stop(should_stop)


def run_batch(
    tool: str,
    inputs: Sequence[str],
    out_dir: str | os.PathLike,
    *,
    params: Optional[dict] = None,
    scheduler: Optional[str] = None,
    workers: Optional[int] = None,
    progress: Optional[Progress] = None,
    should_stop: Optional[ShouldStop] = None,
    connect_timeout: str = "10s",
) -> BatchSummary:
    """Run ``tool`` (enhance / grade / segment) over ``inputs`` on Dask, writing into ``out_dir``."""
    if tool not in TASKS:
        raise MedaiError(f"unknown batch tool {tool!r}; use one of {', '.join(TASKS)}")
    progress, should_stop = callbacks(progress, should_stop)
    params = dict(params or {})
    out = ensure_output_folder(out_dir)
    paths = expand_inputs(inputs)
    key = _params_key(tool, params)
    manifest = _load_manifest(out)
    summary = BatchSummary()
    todo, shas = [], {}
    for path in paths:
        shas[path] = _digest(path)
        entry = manifest.get(path)
        if _is_done(entry, shas[path], key):
            summary.skipped += 1
            summary.rows.append({**entry["row"], "status": "ok", "skipped": True})
        else:
            todo.append(path)
    started = time.perf_counter()
    progress(0, len(todo))
    if todo:
        with cluster_client(scheduler, workers, connect_timeout) as client:
            workers_info = client.scheduler_info().get("workers", {})
            summary.workers = len(workers_info)
            summary.scheduler = scheduler or "LocalCluster"
            resources = {"GPU": 1} if any(w.get("resources", {}).get("GPU") for w in workers_info.values()) else None
            futures = [
                client.submit(run_task, tool, path, str(out), params, pure=False, key=f"{tool}-{i}-{Path(path).name}",
                              resources=resources)
                for i, path in enumerate(todo)
            ]
            for _, row in completed(futures, progress, should_stop):
                summary.rows.append(row)
                if row["status"] == "ok":
                    manifest[row["input"]] = {
                        "status": "ok",
                        "input_sha256": shas[row["input"]],
                        "params": key,
                        "outputs": {p: _digest(p) for p in row.get("outputs", [])},
                        "row": row,
                    }
                    _write_json_atomic(out / MANIFEST, manifest)  # resumable after a crash or Ctrl-C
    summary.seconds = time.perf_counter() - started
    _write_summary(out, summary)
    return summary


def _write_summary(out: Path, summary: BatchSummary) -> None:
    from .. import __version__

    document = summary.to_dict()
    document["package_version"] = __version__
    _write_json_atomic(out / "summary.json", document)
    columns = ["input", "status", "seconds", "outputs", "error"]
    extra = sorted({k for r in summary.rows for k in r} - set(columns) - {"traceback", "tool"})
    with atomic_output(out / "summary.csv") as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns + extra, extrasaction="ignore")
        writer.writeheader()
        for row in summary.rows:
            writer.writerow({k: (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in row.items()})
