"""Batch on Dask: a 2-worker LocalCluster with a corrupt input, resume, and a separate scheduler."""

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("distributed")
pytest.importorskip("napari_medai.enhance.core")

from napari_medai.batch.runner import expand_inputs, run_batch  # noqa: E402
from napari_medai.errors import MedaiError  # noqa: E402


@pytest.fixture
def cohort(tmp_path):
    import imageio.v3 as iio

    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        iio.imwrite(folder / f"case{i}.png", (rng.random((40, 50)) * 120 + 40 * i).astype(np.uint8))
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    return folder


def test_local_cluster_isolates_a_corrupt_input_and_resumes(cohort, tmp_path):
    out = tmp_path / "out"
    inputs = [str(cohort / "*.png")]
    first = run_batch("enhance", inputs, out, workers=2)
    assert first.workers == 2
    status = {r["input"].split("/")[-1]: r["status"] for r in first.rows}
    assert status == {"broken.png": "failed", "case0.png": "ok", "case1.png": "ok", "case2.png": "ok"}
    [failed] = first.failed
    assert "not a readable PNG" in failed["error"]
    from napari_medai.io.readers import load_image

    enhanced = load_image(out / "case1_clahe.png").data
    assert enhanced.shape == (40, 50) and enhanced.max() == 255 and enhanced.min() == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] == 3 and summary["failed"] == 1
    assert (out / "summary.csv").read_text().count("\n") == 5

    second = run_batch("enhance", inputs, out, workers=2)
    assert second.skipped == 3  # unchanged inputs with verified outputs are skipped
    assert len(second.failed) == 1  # the broken one is retried (and fails again)
    (out / "case2_clahe.png").write_bytes(b"tampered")
    third = run_batch("enhance", inputs, out, workers=1)
    assert third.skipped == 2  # a changed output is redone


def test_cli_exit_code_and_json(cohort, tmp_path, capsys):
    from napari_medai.cli.main import main

    code = main(["batch", "enhance", str(cohort / "case0.png"), str(cohort / "broken.png"), "-o", str(tmp_path / "o"),
                 "--workers", "1", "--json"])
    assert code == 1
    document = json.loads(capsys.readouterr().out)
    assert document["ok"] == 1 and document["failed"] == 1


def test_output_folder_that_is_a_file_is_refused_in_one_line(cohort, tmp_path, capsys):
    """`-o` naming an existing file used to end in 'internal error FileExistsError'."""
    from napari_medai.cli.main import main

    taken = cohort / "case1.png"
    before = taken.read_bytes()
    assert main(["batch", "enhance", str(cohort / "case0.png"), "-o", str(taken), "--workers", "1"]) == 2
    err = capsys.readouterr().err
    assert err == f"error: output folder {taken} is a file; give a folder (it is created if missing)\n"
    assert taken.read_bytes() == before


def test_csv_inputs_and_bad_globs(cohort, tmp_path):
    table = tmp_path / "cohort.csv"
    table.write_text("path,label\nin/case0.png,a\nin/case1.png,b\n")
    assert [p.split("/")[-1] for p in expand_inputs([str(table)])] == ["case0.png", "case1.png"]
    with pytest.raises(MedaiError, match="matches no files"):
        expand_inputs([str(tmp_path / "*.nii.gz")])


def test_existing_scheduler_on_loopback(cohort, tmp_path):
    dask = shutil.which("dask", path=str(__import__("pathlib").Path(sys.executable).parent))
    if dask is None:
        pytest.skip("dask CLI not installed")
    scheduler_file = tmp_path / "scheduler.json"
    scheduler = subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                  "--scheduler-file", str(scheduler_file)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker = None
    try:
        deadline = time.time() + 30
        while not scheduler_file.exists() and time.time() < deadline:
            time.sleep(0.2)
        address = json.loads(scheduler_file.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:")
        worker = subprocess.Popen([dask, "worker", address, "--nthreads", "1", "--no-dashboard"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        from distributed import Client

        with Client(address, timeout="20s") as client:
            client.wait_for_workers(1, timeout=30)
        summary = run_batch("enhance", [str(cohort / "case0.png")], tmp_path / "remote", scheduler=address)
        assert summary.scheduler == address and summary.workers == 1
        assert [r["status"] for r in summary.rows] == ["ok"]
    finally:
        for process in (worker, scheduler):
            if process is not None:
                process.terminate()
                process.wait(timeout=10)


def test_unreachable_scheduler_is_one_line(tmp_path, cohort):
    with pytest.raises(MedaiError, match="cannot reach the Dask scheduler"):
        run_batch("enhance", [str(cohort / "case0.png")], tmp_path / "x", scheduler="tcp://127.0.0.1:1",
                  connect_timeout="2s")


def test_retrieve_build_in_parallel_matches_the_serial_build(tmp_path, capsys):
    import imageio.v3 as iio

    from napari_medai.cli.main import main
    from napari_medai.retrieval.library import CaseLibrary

    rng = np.random.default_rng(3)
    for label, offset in (("bright", 120), ("dark", 0)):
        folder = tmp_path / "cases" / label
        folder.mkdir(parents=True)
        for i in range(5):
            iio.imwrite(folder / f"{label}{i}.png", (rng.random((48, 48)) * 100 + offset).astype(np.uint8))
    (tmp_path / "cases" / "dark" / "broken.png").write_bytes(b"\x89PNG broken")
    code = main(["retrieve", "build", str(tmp_path / "cases"), "-o", str(tmp_path / "par.medlib"),
                 "--embedder", "raw-pixels", "--workers", "2", "--json"])
    document = json.loads(capsys.readouterr().out)
    assert code == 1  # one case could not be read: reported, the rest built
    assert document["cases"] == 10 and [f["path"].endswith("broken.png") for f in document["failed"]] == [True]
    parallel = CaseLibrary.load(tmp_path / "par.medlib")
    good = [p for p in sorted((tmp_path / "cases").rglob("*.png")) if p.name != "broken.png"]
    serial = CaseLibrary(embedder="raw-pixels")
    serial.add_images([iio.imread(p) for p in good], [p.parent.name for p in good], paths=[str(p) for p in good])
    query = iio.imread(good[0])
    hits_parallel = [(h.label, round(h.distance, 5)) for h in parallel.query(query, k=10)]
    hits_serial = [(h.label, round(h.distance, 5)) for h in serial.query(query, k=10)]
    assert hits_parallel == hits_serial and hits_parallel[0][1] == 0.0


def test_segment_task_records_volumes_and_notes(tmp_path):
    """A batch segment record keeps the result's notes (the sample CT is non-contrast) next to its volumes."""
    pytest.importorskip("torch")
    from napari_medai.batch.tasks import segment_file
    from napari_medai.sample_data import CT_VOLUME

    record = segment_file(str(CT_VOLUME), str(tmp_path), {"device": "cpu"})
    assert Path(record["outputs"][0]).is_file()
    assert 900 < record["volumes_ml"]["liver"] < 1300  # TotalSegmentator label: 1043 ml
    assert any("HU" in note for note in record["notes"])
    # plausibility (#15): the sample's liver reaches its first and last slice
    assert any("cut by the field of view" in note for note in record["notes"])


def test_segment_task_takes_a_slice_as_segment_does(tmp_path):
    """A 2-D CT slice (an int16 TIFF in HU) gets a PNG of labels equal to segment()'s on the same slice (batch
    segment used to refuse slices that `napari-medai segment` takes)."""
    pytest.importorskip("torch")
    import tifffile

    from napari_medai import segment
    from napari_medai.batch.tasks import segment_file
    from napari_medai.io.readers import load_image
    from napari_medai.sample_data import CT_VOLUME

    ct = load_image(CT_VOLUME)
    path = tmp_path / "slice.tif"
    tifffile.imwrite(path, ct.data[15].astype(np.int16))
    record = segment_file(str(path), str(tmp_path), {"device": "cpu"})
    written = load_image(record["outputs"][0])
    assert record["outputs"][0].endswith("slice_labels.png")
    expected = segment(load_image(path).data, spacing=(1.0, 1.0), device="cpu").labels
    assert expected.any() and np.array_equal(written.data, expected)
