"""napari start-up stays fast: importing the plugin, its widgets and the CLI loads no heavy library."""

import json
import subprocess
import sys

HEAVY = ["torch", "monai", "numba", "faiss", "sklearn", "distributed"]

SCRIPT = """
import importlib, json, sys
import npe2
import napari_medai, napari_medai._napari
from napari_medai.cli.main import build_parser
build_parser()
manifest = npe2.PluginManifest.from_distribution("napari-medai")
for command in manifest.contributions.commands:
    module = command.python_name.split(":")[0]
    try:
        importlib.import_module(module)
    except ModuleNotFoundError:
        pass
print(json.dumps(sorted(m for m in %r if m in sys.modules)))
"""


def test_plugin_widgets_and_cli_import_no_heavy_library():
    proc = subprocess.run([sys.executable, "-c", SCRIPT % HEAVY], capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert loaded == [], f"imported at start-up: {loaded}"
