"""The runner: off the UI thread, progress, cancel within 1 s, errors as notifications."""

import threading
import time

import pytest

from napari_medai.errors import MedaiError
from napari_medai.runtime.progress import check_stop


@pytest.fixture
def threaded(monkeypatch):
    monkeypatch.setenv("NAPARI_MEDAI_SYNC", "0")


def _slow_job(progress, should_stop):
    for i in range(200):  # would take 10 s
        check_stop(should_stop)
        progress(i, 200)
        time.sleep(0.05)
    return "finished"


def test_cancel_stops_a_running_job_within_one_second(qtbot, threaded):
    from napari_medai._qt.jobs import JobPanel

    panel = JobPanel()
    qtbot.addWidget(panel)
    results = []
    worker = panel.run(_slow_job, results.append, title="slow")
    assert panel.busy and panel.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: panel.bar.maximum() == 200, timeout=3000)  # progress arrived
    started = time.perf_counter()
    with qtbot.waitSignal(worker.finished, timeout=1000):
        panel.cancel_button.click()
    assert time.perf_counter() - started < 1.0
    assert results == [] and not panel.busy
    assert "cancelled" in panel.status.text()


def test_result_arrives_on_the_ui_thread(qtbot, threaded):
    from napari_medai._qt.jobs import JobPanel

    panel = JobPanel()
    qtbot.addWidget(panel)
    results = []
    main_thread = threading.get_ident()
    seen = []

    def on_result(value):
        seen.append(threading.get_ident())
        results.append(value)

    panel.run(lambda progress, should_stop: (threading.get_ident(), 42), on_result, title="quick")
    qtbot.waitUntil(lambda: bool(results) and not panel.busy, timeout=5000)
    job_thread, value = results[0]
    assert value == 42
    assert job_thread != main_thread  # the job ran off the UI thread
    assert seen == [main_thread]  # the result came back on it


def test_refused_input_becomes_a_notification_not_a_crash(qtbot, monkeypatch):
    from napari_medai._qt import jobs

    shown = []
    monkeypatch.setattr(jobs, "notify_error", shown.append)
    panel = jobs.JobPanel()
    qtbot.addWidget(panel)

    def refuse(progress, should_stop):
        raise MedaiError("image has NaN values; fix them")

    panel.run(refuse, lambda r: None, title="grade")  # sync mode (conftest)
    assert shown == ["grade: image has NaN values; fix them"]
    assert panel.last_error == "image has NaN values; fix them" and not panel.busy
