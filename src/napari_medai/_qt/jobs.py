"""The one runner for widgets: a job off the UI thread, with progress, a Cancel button and errors
as notifications.

A job is any ``fn(progress, should_stop) -> result``: the same core functions the CLI calls. Cancel sets
a flag that the core polls through ``should_stop``; the core raises :class:`CancelledError` within a
fraction of a second. ``NAPARI_MEDAI_SYNC=1`` runs jobs synchronously (tests, scripts).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any, Optional

from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget

from ..errors import CancelledError, MedaiError

log = logging.getLogger(__name__)
Job = Callable[[Callable[[int, int], None], Callable[[], bool]], Any]


class _Relay(QObject):
    # Signals cross from the worker thread to the UI thread through Qt's queued connections.
    progressed = Signal(int, int)


def sync_mode() -> bool:
    return os.environ.get("NAPARI_MEDAI_SYNC", "") not in ("", "0", "false")


def notify_error(message: str) -> None:
    try:
        from napari.utils.notifications import show_error

        show_error(message)
    except Exception:  # no napari app: log instead
        log.error(message)


def notify_info(message: str) -> None:
    try:
        from napari.utils.notifications import show_info

        show_info(message)
    except Exception:
        log.info(message)


class JobPanel(QWidget):
    """Progress bar, status line and Cancel button; runs one job at a time."""

    def __init__(self, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.bar = QProgressBar()
        self.bar.setRange(0, 1)
        self.bar.setValue(0)
        self.status = QLabel("idle")
        self.status.setWordWrap(True)
        self.bar.setToolTip("progress of the running job")
        self.status.setToolTip("what the last job did, or why it failed")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("stop the running job; nothing is added to the viewer")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        row = QHBoxLayout()
        row.addWidget(self.bar, 1)
        row.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row)
        layout.addWidget(self.status)
        self._relay = _Relay()
        self._relay.progressed.connect(self._on_progress)
        self._stop = threading.Event()
        self.worker = None
        self.last_error: Optional[str] = None
        self.last_seconds: Optional[float] = None
        self.force_sync: Optional[bool] = None  # True/False overrides NAPARI_MEDAI_SYNC (``w(block=True)``)
        self.last_value: Any = None  # what ``on_result`` returned for the last job (the new layer)

    # ---- public --------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return self.worker is not None

    def cancel(self) -> None:
        self._stop.set()
        self.status.setText("cancelling…")

    def run(
        self,
        job: Job,
        on_result: Callable[[Any], None],
        *,
        title: str = "job",
        on_finished: Optional[Callable[[], None]] = None,
    ):
        """Start ``job``; ``on_result`` runs on the UI thread with its return value.

        In the foreground (``NAPARI_MEDAI_SYNC=1`` or ``force_sync``) this returns what ``on_result``
        returned (the new layer); in the background it returns the worker."""
        if self.busy:
            notify_info(f"{title}: another job is still running; wait or cancel it")
            return None
        self._stop.clear()
        self.last_error = None
        self.last_value = None
        self.bar.setRange(0, 0)  # busy until the first progress report
        self.status.setText(f"{title}: running…")
        self.cancel_button.setEnabled(True)
        started = time.perf_counter()

        def progress(i: int, n: int) -> None:
            self._relay.progressed.emit(int(i), int(n))

        def done_ok(result: Any) -> None:
            self.last_seconds = time.perf_counter() - started
            self.status.setText(f"{title}: done in {self.last_seconds:.1f} s")
            try:
                self.last_value = on_result(result)
            except MedaiError as exc:
                self._fail(title, str(exc))

        def done_err(exc: BaseException) -> None:
            if isinstance(exc, CancelledError):
                self.status.setText(f"{title}: cancelled")
            elif isinstance(exc, MedaiError):
                self._fail(title, str(exc))
            else:
                log.exception("%s failed", title, exc_info=exc)
                self._fail(title, f"{type(exc).__name__}: {exc}")

        def finished() -> None:
            self.worker = None
            self.cancel_button.setEnabled(False)
            self.bar.setRange(0, 1)
            self.bar.setValue(1 if self.last_error is None else 0)
            if on_finished:
                on_finished()

        if self.force_sync if self.force_sync is not None else sync_mode():
            self.worker = True
            try:
                result = job(progress, self._stop.is_set)
            except BaseException as exc:  # noqa: BLE001 - reported like the threaded path
                done_err(exc)
            else:
                done_ok(result)
            finished()
            return self.last_value

        from napari.qt.threading import create_worker

        worker = create_worker(
            job,
            progress,
            self._stop.is_set,
            _start_thread=False,
            _connect={"returned": done_ok, "errored": done_err, "finished": finished},
        )
        self.worker = worker
        worker.start()
        return worker

    # ---- internals -------------------------------------------------------------------------
    def _fail(self, title: str, message: str) -> None:
        self.last_error = message
        self.status.setText(f"{title}: failed - {message}")
        notify_error(f"{title}: {message}")

    def _on_progress(self, i: int, n: int) -> None:
        if n <= 0:
            return
        self.bar.setRange(0, n)
        self.bar.setValue(min(i, n))
