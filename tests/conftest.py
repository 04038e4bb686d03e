import os
import tempfile

import pytest

# Widget jobs run synchronously in tests unless a test asks for the threaded path.
os.environ.setdefault("NAPARI_MEDAI_SYNC", "1")
# Never read or write the user's napari settings or remembered widget choices: a fresh, temporary
# napari config (as on a fresh install) for the whole session, set before napari reads it.
_CONFIG = tempfile.mkdtemp(prefix="napari-medai-test-config-")
os.environ["NAPARI_CONFIG"] = os.path.join(_CONFIG, "settings.yaml")
os.environ["NAPARI_MEDAI_PREFS"] = os.path.join(_CONFIG, "napari-medai-widgets.json")


@pytest.fixture(autouse=True)
def _fresh_widget_prefs(tmp_path, monkeypatch):
    """Remembered widget choices start empty in every test (one test's choice never leaks into another)."""
    monkeypatch.setenv("NAPARI_MEDAI_PREFS", str(tmp_path / "napari-medai-widgets.json"))


@pytest.fixture
def shared_data():
    """The real data folder (../shared/data or $NAPARI_MEDAI_DATA); skips cleanly when absent."""
    from napari_medai.data_paths import shared_data_dir

    path = shared_data_dir()
    if path is None:
        pytest.skip("real data not available (set NAPARI_MEDAI_DATA or provide ../shared/data)")
    return path


def pytest_collection_modifyitems(items):
    # Skip for missing data *before* napari's viewer fixture starts: napari's teardown expects a
    # call phase and errors on tests skipped during setup.
    for item in items:
        names = getattr(item, "fixturenames", None)
        if names and "shared_data" in names and "make_napari_viewer" in names:
            names.remove("shared_data")
            names.insert(0, "shared_data")
