"""The memory guard: estimate a job's memory before allocating, and refuse with numbers."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from ..errors import MedaiError


def available_bytes() -> int:
    """Memory the process can still take (MemAvailable on Linux; a conservative guess elsewhere)."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def estimate_bytes(shape: Sequence[int], dtype="float32", copies: float = 1.0) -> int:
    """Bytes for ``copies`` arrays of ``shape`` and ``dtype``."""
    count = 1
    for s in shape:
        count *= int(s)
    return int(count * np.dtype(dtype).itemsize * copies)


def human(nbytes: float) -> str:
    """``nbytes`` as a short human-readable size (``1.5 GB``)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(nbytes) < 1024 or unit == "TB":
            return f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.1f} TB"


def ensure_fits(nbytes: int, what: str, fraction: float = 0.8) -> None:
    """Refuse a job that would need more than ``fraction`` of the available memory."""
    limit = int(os.environ.get("NAPARI_MEDAI_MAX_BYTES", "0")) or int(available_bytes() * fraction)
    if nbytes > limit:
        raise MedaiError(
            f"{what} would need about {human(nbytes)} of memory but only {human(limit)} is available; "
            "crop or downsample the input, or run it on a machine with more memory"
        )
