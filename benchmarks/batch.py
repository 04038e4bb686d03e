"""Batch throughput on Dask: the same cohort at 1 and 2 LocalCluster workers, in one process.

    python benchmarks/batch.py [--tool enhance|segment] [--cases N]

enhance: N copies of the sample B-mode frame and the sample CT; segment: N copies of the sample CT.
Prints cases/minute and the 2-worker / 1-worker ratio. Cluster start-up is included (it is part of a run).
"""

from __future__ import annotations

import argparse
import platform
import shutil
import tempfile
import time
from pathlib import Path

from napari_medai.batch.runner import run_batch
from napari_medai.sample_data import BMODE_FRAME, CT_VOLUME


def make_cohort(folder: Path, tool: str, cases: int) -> list[str]:
    """Copy the sample CT (and, for enhance, alternately the B-mode frame) into folder as N cases."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(cases):
        source = CT_VOLUME if tool == "segment" or i % 2 else BMODE_FRAME
        target = folder / f"case{i:03d}{''.join(source.suffixes)}"
        shutil.copy(source, target)
        paths.append(str(target))
    return paths


def main() -> None:
    """Time run_batch on the cohort with 1 and then 2 workers and print both rates and their ratio."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--tool", default="enhance", choices=["enhance", "segment"])
    parser.add_argument("--cases", type=int, default=24)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        inputs = make_cohort(Path(tmp) / "in", args.tool, args.cases)
        rates = {}
        for workers in (1, 2):
            started = time.perf_counter()
            summary = run_batch(args.tool, inputs, Path(tmp) / f"out{workers}", workers=workers)
            seconds = time.perf_counter() - started
            assert not summary.failed, summary.failed
            rates[workers] = args.cases / seconds * 60
            print(f"{args.tool}: {args.cases} cases, {workers} worker(s): {seconds:6.1f} s wall, "
                  f"{rates[workers]:6.1f} cases/min")
    print(f"ratio 2 workers / 1 worker: {rates[2] / rates[1]:.2f}x  ({platform.processor() or platform.machine()}, "
          f"{__import__('os').cpu_count()} cores)")


if __name__ == "__main__":
    main()
