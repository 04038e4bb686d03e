"""Settings widget: device (only devices that exist), user model folder, research-use notice, and
"Check this machine" (the self-test, run off the UI thread by the job runner)."""

from __future__ import annotations

from qtpy.QtGui import QFontDatabase
from qtpy.QtWidgets import (QComboBox, QFormLayout, QLabel, QLineEdit, QPlainTextEdit, QPushButton, QVBoxLayout,
                            QWidget)

from ..errors import MedaiError
from ..runtime.settings import get_settings, set_device, set_model_dir
from .common import device_note, refresh_device_note, research_banner
from .jobs import JobPanel


class SettingsWidget(QWidget):
    def __init__(self, napari_viewer=None):
        super().__init__()
        from ..runtime.device import available_devices
        from ..runtime.registry import list_models

        self.viewer = napari_viewer
        settings = get_settings()
        self.device = QComboBox()
        self.device.addItems(["auto", *available_devices()])
        self.device.setCurrentText(settings.device)
        self.device.currentTextChanged.connect(self._on_device)
        self.model_dir = QLineEdit(settings.model_dir or "")
        self.model_dir.setPlaceholderText("folder with <model>/card.json (optional)")
        apply_dir = QPushButton("Use folder")
        apply_dir.clicked.connect(self._on_model_dir)
        self.note = device_note(settings.device)
        self.models = QLabel()
        self.models.setWordWrap(True)
        self._list_models(list_models)
        form = QFormLayout()
        form.addRow("Device", self.device)
        form.addRow("Model folder", self.model_dir)
        form.addRow("", apply_dir)
        layout = QVBoxLayout(self)
        layout.addWidget(research_banner())
        layout.addLayout(form)
        layout.addWidget(self.note)
        layout.addWidget(self.models)
        self.check_button = QPushButton("Check this machine")
        self.check_button.setToolTip("Self-test: every model and tool on the CPU and each GPU, with parity (about a minute)")
        self.check_button.clicked.connect(self._on_check)
        self.jobs = JobPanel()
        self.selftest_report = None
        self.selftest_table = QPlainTextEdit()
        self.selftest_table.setReadOnly(True)
        self.selftest_table.setFont(QFontDatabase.systemFont(QFontDatabase.FixedFont))
        self.selftest_table.setLineWrapMode(QPlainTextEdit.NoWrap)
        self.selftest_table.setVisible(False)
        layout.addWidget(self.check_button)
        layout.addWidget(self.jobs)
        layout.addWidget(self.selftest_table, 1)
        layout.addStretch(1)

    def _list_models(self, list_models) -> None:
        try:
            names = [f"{c.name} ({c.task})" for c in list_models()]
        except MedaiError as exc:
            names = [str(exc)]
        self.models.setText("Models: " + (", ".join(names) or "none registered"))

    def _on_device(self, text: str) -> None:
        set_device(text)
        refresh_device_note(self.note, text)

    def _on_model_dir(self) -> None:
        from ..runtime.registry import list_models
        from .jobs import notify_error

        try:
            set_model_dir(self.model_dir.text().strip() or None)
        except MedaiError as exc:
            notify_error(str(exc))
        self._list_models(list_models)

    def _on_check(self) -> None:
        from ..runtime.selftest import run_selftest

        self.check_button.setEnabled(False)
        self.jobs.run(
            lambda progress, should_stop: run_selftest("auto", progress=progress, should_stop=should_stop),
            self._show_selftest, title="self-test", on_finished=lambda: self.check_button.setEnabled(True),
        )

    def _show_selftest(self, report) -> None:
        from .jobs import notify_error

        self.selftest_report = report
        self.selftest_table.setPlainText(report.format_table())
        self.selftest_table.setVisible(True)
        if not report.ok:
            notify_error(f"self-test: {len(report.failures)} problem(s): {report.failures[0]}")
