"""`make demo` without a display: every tool runs on the sample data and writes results + screenshots."""

import json

import numpy as np


def test_headless_demo_runs_every_tool(tmp_path, make_napari_viewer):
    make_napari_viewer()  # makes sure a Qt app and Xvfb display exist, as under `make demo`
    from napari_medai.demo import run_headless

    report = run_headless(tmp_path / "demo")
    assert report["failed"] == [], {k: v.get("error") for k, v in report["tools"].items()}
    tools = report["tools"]
    assert {name: t["status"] for name, t in tools.items()} == {
        "clahe": "ok", "steatosis": "ok", "segmentation": "ok", "retrieval": "ok"}
    assert tools["clahe"]["range"] == [0.0, 1.0]
    assert tools["steatosis"]["grade"] == 0  # the sample frame is a normal liver (biopsy fat 3 %)
    assert abs(sum(tools["steatosis"]["probabilities"]) - 1) < 1e-3
    assert tools["segmentation"]["ct_liver_dice_vs_totalsegmentator"] > 0.85
    assert tools["segmentation"]["phantom_liver_dice"] > 0.5  # measured 0.59 (seed 0, model v1)
    assert "HU" in tools["segmentation"]["ct_notes"][0]  # the sample CT is non-contrast: said, not silent
    # the query is a mirrored, cropped copy of the glioma case: found first, at a distance, well ahead of the others
    hits = tools["retrieval"]["hits"]
    assert hits[0]["label"] == "glioma" and 0.01 < hits[0]["distance"] < 0.5 * hits[1]["distance"]
    out = tmp_path / "demo"
    for name in ("report.md", "report.json", "clahe_bmode.png", "clahe_ct_3d.nii.gz", "segmentation_ct.nii.gz",
                 "brain_library.sqlite"):
        assert (out / name).is_file(), name
    assert json.loads((out / "report.json").read_text())["tools"]["segmentation"]["status"] == "ok"
    shots = report["screenshots"]
    assert "screenshot_viewer_with_widgets.png" in shots
    # every widget, docked and run on its sample (the user guide shows these)
    for tool in ("settings", "clahe", "steatosis", "segmentation", "retrieval"):
        assert f"screenshot_{tool}.png" in shots, shots
    import imageio.v3 as iio

    image = iio.imread(out / "screenshot_viewer_with_widgets.png")
    assert image.shape[0] > 500 and float(np.std(image)) > 10  # a rendered window, not a blank frame


def test_demo_json_keeps_progress_lines_off_stdout(monkeypatch, capsys):
    """`demo --json` prints one JSON document on stdout; the per-tool lines go to stderr."""
    from napari_medai import demo
    from napari_medai.cli.main import main

    def fake_headless(out):
        print("clahe          ok (0.1 s)")
        return {"tools": {"clahe": {"status": "ok"}}, "failed": []}

    monkeypatch.setattr(demo, "run_headless", fake_headless)
    assert main(["demo", "--json", "--out", "unused"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["tools"]["clahe"]["status"] == "ok"
    assert "clahe          ok" in captured.err
