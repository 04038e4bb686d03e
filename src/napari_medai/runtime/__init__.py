"""Runtime services shared by every tool: device, progress, provenance and the model registry."""
