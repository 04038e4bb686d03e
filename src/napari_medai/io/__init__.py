"""Medical image I/O with geometry: readers, writers and the geometry helper."""
