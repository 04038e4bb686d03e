"""Progress and cancellation callbacks shared by the CLI, the widgets and scripts.

Every compute function takes ``progress(i, n)`` and ``should_stop()``: the same function then drives a
CLI bar, the napari progress bar, or nothing at all.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional

from ..errors import CancelledError

Progress = Callable[[int, int], None]
ShouldStop = Callable[[], bool]


def no_progress(i: int, n: int) -> None:
    """A progress callback that ignores its arguments."""


def never_stop() -> bool:
    """A ``should_stop`` callback that never asks to stop."""
    return False


def callbacks(
    progress: Optional[Progress], should_stop: Optional[ShouldStop]
) -> tuple[Progress, ShouldStop]:
    """Replace missing callbacks by no-ops."""
    return progress or no_progress, should_stop or never_stop


def check_stop(should_stop: Optional[ShouldStop]) -> None:
    """Raise :class:`CancelledError` when the caller asked to stop."""
    if should_stop is not None and should_stop():
        raise CancelledError()


def sub_progress(progress: Optional[Progress], start: int, span: int, total: int) -> Progress:
    """Map a sub-task's ``(i, n)`` onto ``[start, start + span]`` of an overall ``total``."""
    progress = progress or no_progress

    def report(i: int, n: int) -> None:
        progress(start + round(span * i / max(n, 1)), total)

    return report
