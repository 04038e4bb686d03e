import json

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


def test_cli_entry_point_refuses_bad_input_in_one_line(tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not a nifti")
    out = tmp_path / "out.nii.gz"
    proc = subprocess.run([sys.executable, "-m", "napari_medai.cli.main", "enhance", str(bad), "-o", str(out)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "not gzip" in lines[0]
    assert "Traceback" not in proc.stderr
    assert not out.exists() and bad.read_bytes() == b"not a nifti"


def test_closed_stdout_is_not_an_internal_error():
    """`napari-medai ... --json | head -3` used to end in 'error: internal error BrokenPipeError'."""
    import os
    import subprocess
    import sys

    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader has gone before the first write
    proc = subprocess.run([sys.executable, "-m", "napari_medai.cli.main", "models", "--json"], stdout=write_end,
                          stderr=subprocess.PIPE, text=True, check=False)
    os.close(write_end)
    assert proc.returncode == 141
    assert proc.stderr == ""
