import json

import nibabel as nib
import numpy as np

from napari_medai.cli.main import main


def test_info_json_is_one_document(capsys):
    assert main(["info", "--json"]) == 0
    out = capsys.readouterr().out
    document = json.loads(out)
    assert document["devices"][-1] == "cpu"
    assert "Research use only" in document["notice"]


def test_models_json(capsys):
    assert main(["models", "--json"]) == 0
    cards = json.loads(capsys.readouterr().out)
    assert isinstance(cards, list)
    for card in cards:
        assert len(card["sha256"]) == 64


def test_usage_error_is_one_error_line(capsys):
    assert main(["no-such-command"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")


def test_cli_entry_point_has_no_traceback(tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not a nifti")
    proc = subprocess.run([sys.executable, "-m", "napari_medai.cli.main", "info", "--json"], capture_output=True, text=True)
    assert proc.returncode == 0 and json.loads(proc.stdout)["versions"]["napari-medai"]
