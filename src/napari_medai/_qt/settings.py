"""Settings widget: device (only devices that exist), user model folder, the one-click NIfTI/DICOM reader
preference, "Check this machine" (the self-test, run off the UI thread by the job runner) and the
research-use notice. A magicgui container like every tool."""

from __future__ import annotations

from qtpy.QtGui import QFontDatabase
from qtpy.QtWidgets import QPlainTextEdit

from ..errors import MedaiError
from ..runtime.settings import get_settings, set_device, set_model_dir
from .common import (
    ToolWidget,
    banner,
    button,
    device_box,
    device_note,
    docs_link,
    embed,
    file_edit,
    form,
    remember,
    text,
)
from .jobs import JobPanel, notify_error, notify_info
from .prefs import get_pref


class SettingsWidget(ToolWidget):
    tool = "settings"

    def __init__(self, napari_viewer=None):
        device = device_box()
        model_dir = file_edit(name="model_dir", label="model folder", mode="d",
                             value=get_settings().model_dir or get_pref("model_dir") or "",
                             tooltip="a folder holding <model>/card.json sub-folders (your own models); optional")
        self.job_panel = JobPanel()
        self.selftest_report = None
        self.selftest_table = QPlainTextEdit()
        self.selftest_table.setReadOnly(True)
        self.selftest_table.setFont(QFontDatabase.systemFont(QFontDatabase.FixedFont))
        self.selftest_table.setLineWrapMode(QPlainTextEdit.NoWrap)
        self.selftest_table.setMinimumHeight(160)
        self.selftest_table.setToolTip("the last machine check: every model and tool, with timings and parity")
        self.selftest_table.setVisible(False)
        widgets = [
            banner(),
            form("options", [device, model_dir]),
            button("folder_button", "Use model folder", "register the models in 'model folder' for every tool",
                   self.use_model_folder),
            device_note(device),
            text("models", tooltip="models every tool can use"),
            text("reader_status", tooltip="which reader napari uses for .nii, .nii.gz, .dcm and DICOM folders"),
            button("reader_button", "Open NIfTI/DICOM with napari-medai",
                   "store in napari's preferences that .nii, .nii.gz, .dcm and DICOM folders open with "
                   "napari-medai (true spacing, origin and orientation); undo in Preferences > Plugins",
                   self.prefer_reader),
            button("check_button", "Check this machine",
                   "self-test: every model and tool on the chosen device (auto: the CPU and each GPU), with "
                   "GPU-vs-CPU parity (about a minute)", self.check_machine),
            embed(self.job_panel, "jobs_holder"),
            embed(self.selftest_table, "selftest_holder"),
            docs_link("user-guide.md"),
        ]
        super().__init__(napari_viewer, widgets, name="napari_medai_settings")
        self.jobs = self.job_panel
        remember(self.device, "device")
        if self.device.value != get_settings().device:
            self._on_device(self.device.value)
        self.device.changed.connect(self._on_device)
        self._list_models()
        self._show_reader_status()

    def run(self):
        return self.check_machine()

    # ---- actions ---------------------------------------------------------------------------------
    def _on_device(self, value: str) -> None:
        try:
            set_device(value)
        except MedaiError as exc:
            notify_error(str(exc))

    def use_model_folder(self) -> None:
        from .prefs import set_pref

        folder = str(self.model_dir.value or "").strip()
        folder = None if folder in ("", ".") else folder
        try:
            set_model_dir(folder)
        except MedaiError as exc:
            notify_error(str(exc))
            return
        set_pref("model_dir", folder)
        self._list_models()

    def _list_models(self) -> None:
        from ..runtime.registry import list_models

        try:
            names = [f"{c.name} ({c.task})" for c in list_models()]
        except MedaiError as exc:
            names = [str(exc)]
        self.models.value = "Models: " + (", ".join(names) or "none registered")

    def prefer_reader(self) -> list:
        from .._napari import prefer_medai_reader

        patterns = prefer_medai_reader(folders=True)
        self._show_reader_status()
        notify_info("NIfTI and DICOM now open with napari-medai (" + ", ".join(patterns) + ")")
        return patterns

    def _show_reader_status(self) -> None:
        from .._napari import medai_reader_preferred

        try:
            ok = medai_reader_preferred()
        except Exception:  # napari settings unavailable
            ok = False
        self.reader_status.value = (
            "NIfTI/DICOM open with napari-medai (drag-and-drop, File > Open, viewer.open(path, plugin=None))."
            if ok else
            "napari does not yet open NIfTI/DICOM with napari-medai: it asks each time, and "
            "viewer.open(path) uses its builtin reader. One click below fixes drag-and-drop and File > Open; "
            "in scripts use viewer.open(path, plugin='napari-medai')."
        )
        self.reader_button.enabled = not ok

    def check_machine(self):
        try:
            from ..runtime.selftest import run_selftest
        except ImportError:
            notify_error("the machine check is not in this build; run `napari-medai info` instead")
            return None
        device = self.device.value

        def job(progress, should_stop):
            return run_selftest(device, progress=progress, should_stop=should_stop)

        self.check_button.enabled = False
        return self.jobs.run(job, on_result=self._show_report, title="self-test",
                             on_finished=lambda: setattr(self.check_button, "enabled", True))

    def _show_report(self, report):
        self.selftest_report = report
        self.selftest_table.setPlainText(report.format_table())
        self.selftest_table.setVisible(True)
        if not report.ok:
            notify_error(f"self-test: {len(report.failures)} problem(s): {report.failures[0]}")
        return report
