"""Where the project's real training/benchmark data lives (never needed at run time).

One setting: ``NAPARI_MEDAI_DATA``, defaulting to ``../shared/data`` beside the repository.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

REPO_ROOT = Path(__file__).resolve().parents[2]


def shared_data_dir() -> Optional[Path]:
    """The real-data folder (``$NAPARI_MEDAI_DATA``, default ``../shared/data``) or None when absent."""
    path = Path(os.environ.get("NAPARI_MEDAI_DATA", REPO_ROOT.parent / "shared" / "data")).expanduser()
    return path if path.is_dir() else None
