import os

import pytest

# Widget jobs run synchronously in tests unless a test asks for the threaded path.
os.environ.setdefault("NAPARI_MEDAI_SYNC", "1")


@pytest.fixture
def shared_data():
    """The real data folder (../shared/data or $NAPARI_MEDAI_DATA); skips cleanly when absent."""
    from napari_medai.data_paths import shared_data_dir

    path = shared_data_dir()
    if path is None:
        pytest.skip("real data not available (set NAPARI_MEDAI_DATA or provide ../shared/data)")
    return path
