"""The `napari-medai` command line: a thin layer over the Python API."""
