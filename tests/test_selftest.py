"""`napari-medai selftest`: the CPU self-test passes with known values; tampered weights, an accelerator
that disagrees with the CPU and a crash on one device each fail it, naming what failed.

One real self-test runs per module (about 20 s of CPU time); the other tests replay its tool outputs
(the model verification they exercise is real) so that they take well under a second each.
"""

import copy
import json
import shutil

import numpy as np
import pytest

from napari_medai.cli.main import main
from napari_medai.runtime import selftest
from napari_medai.runtime.device import available_devices
from napari_medai.runtime.registry import PACKAGE_MODELS, get_card, sha256_of


@pytest.fixture(scope="module")
def recorded():
    """Run the real self-test once ("auto": the CPU here) and keep each tool's CPU outputs."""
    outputs = {}

    def recording(tool):
        def run(device, samples, should_stop=None):
            out = tool.run(device, samples, should_stop)
            outputs[(tool.name, device)] = out
            return out

        return selftest.Tool(tool.name, run, tool.sanity, tool.compare)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(selftest, "TOOLS", [recording(t) for t in selftest.TOOLS])
        calls = []
        report = selftest.run_selftest("auto", progress=lambda i, n: calls.append((i, n)))
    return report, outputs, calls


def _replay(monkeypatch, outputs, perturb=None):
    """Tools that return the recorded CPU outputs; on other devices ``perturb(tool, out)`` changes them."""

    def replaying(tool):
        def run(device, samples, should_stop=None):
            out = copy.deepcopy(outputs[(tool.name, "cpu")])
            return out if device == "cpu" or perturb is None else perturb(tool.name, out)

        return selftest.Tool(tool.name, run, tool.sanity, tool.compare)

    monkeypatch.setattr(selftest, "TOOLS", [replaying(t) for t in selftest.TOOLS])


def _fake_gpu(monkeypatch):
    def select(device="auto"):
        return ["cuda:0"], "GPU checked: cuda:0 against the CPU (mocked)", {"device": "cuda:0"}, ["cuda:0", "cpu"]

    monkeypatch.setattr(selftest, "select_devices", select)


def test_cpu_selftest_passes_with_known_values(recorded):
    report, _, calls = recorded
    assert report.ok, report.failures
    assert report.failures == []
    assert report.checked_devices[0] == "cpu"
    tools = ("clahe", "grading", "segmentation", "retrieval")
    assert {(s.tool, s.device) for s in report.steps} >= {(t, "cpu") for t in tools}
    assert all(s.ok and s.seconds > 0 for s in report.steps)
    assert calls[-1][0] == calls[-1][1]  # progress reached n of n
    # every shipped model verified and loaded
    shipped = {p.name for p in PACKAGE_MODELS.iterdir() if (p / "card.json").is_file()}
    models = {m.name: m for m in report.models}
    assert shipped <= set(models)
    assert all(models[n].sha256_ok and models[n].loaded for n in shipped)
    checks = {c.name: c for c in report.checks}
    assert checks["CLAHE B-mode 2-D: float32 in [0, 1]"].value == [0.0, 1.0]
    assert checks["CLAHE 2-D matches scikit-image"].value <= 1e-3
    assert 600 <= checks["segmentation: liver volume plausible (ml)"].value <= 4000  # measured 1103.7 ml
    assert checks["segmentation: liver Dice vs packaged reference"].value >= 0.85  # measured 0.921
    assert checks["grading: sample frame graded S0 (biopsy fat 3 %)"].value == 0
    assert checks["retrieval: each sample's top hit is itself"].value <= 1e-3
    grading = next(s for s in report.steps if s.tool == "grading" and s.device == "cpu")
    assert grading.details["roi"] == [288, 200, 28, 28]  # the explicit liver ROI of the sample
    assert report.cpu_seconds < 120  # measured about 19 s of CPU time with cold imports (target: 60 s wall on 2 cores)


def test_json_document_has_the_expected_keys(recorded):
    report, _, _ = recorded
    doc = json.loads(json.dumps(report.to_dict()))
    assert {"ok", "failures", "requested_device", "devices", "gpu_checked", "gpu_note", "versions", "models",
            "steps", "checks", "limits", "seconds", "cpu_seconds", "notice"} <= set(doc)
    assert doc["ok"] is True and doc["failures"] == []
    assert {"python", "napari-medai", "torch", "monai", "numpy", "numba", "faiss"} <= set(doc["versions"])
    assert doc["versions"]["torch"] and doc["versions"]["numpy"] == np.__version__
    assert doc["devices"]["available"] == available_devices()
    assert doc["limits"]["segmentation_min_dice"] == 0.99 and doc["limits"]["clahe_max_abs_diff"] == 1e-3
    if available_devices() == ["cpu"]:
        assert doc["gpu_checked"] is False and doc["gpu_note"].startswith("no GPU checked")
        assert doc["devices"]["checked"] == ["cpu"]
        assert "no GPU checked" in report.format_table()
    assert "result: OK" in report.format_table()


def test_cli_json_is_one_document_and_exit_0(recorded, monkeypatch, capsys):
    _replay(monkeypatch, recorded[1])
    assert main(["selftest", "--device", "cpu", "--json"]) == 0
    out = capsys.readouterr().out
    doc = json.loads(out)  # nothing but one JSON document on stdout
    assert doc["ok"] is True and doc["gpu_checked"] is False
    assert doc["gpu_note"] == "no GPU checked: the CPU alone was asked for"


def test_tampered_weights_copy_is_detected_and_named(recorded, monkeypatch, tmp_path, capsys):
    folder = tmp_path / "models" / "liver-tumor-ct-copy"
    shutil.copytree(PACKAGE_MODELS / "liver-tumor-ct", folder)
    card = json.loads((folder / "card.json").read_text())
    card["name"] = "liver-tumor-ct-copy"  # the package's own card would shadow one of the same name
    (folder / "card.json").write_text(json.dumps(card))
    weights = folder / card["weights"]
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit of one byte
    weights.write_bytes(bytes(data))
    monkeypatch.setenv("NAPARI_MEDAI_MODELS", str(tmp_path / "models"))
    _replay(monkeypatch, recorded[1])

    assert main(["selftest", "--json"]) == 1
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert doc["ok"] is False
    assert [f for f in doc["failures"] if "liver-tumor-ct-copy" in f and "SHA-256" in f], doc["failures"]
    assert len(doc["failures"]) == 1  # the shipped models and the tools still pass
    copy_entry = next(m for m in doc["models"] if m["name"] == "liver-tumor-ct-copy")
    assert copy_entry["sha256_ok"] is False and copy_entry["shipped"] is False
    assert "error: selftest failed" in captured.err and "liver-tumor-ct-copy" in captured.err
    shipped = get_card("liver-tumor-ct")  # the shipped file is untouched
    assert sha256_of(shipped.weights_path) == shipped.sha256


def test_mocked_accelerator_mismatch_and_crash_fail(recorded, monkeypatch):
    def perturb(tool, out):
        if tool == "clahe":
            out["frame"] = np.clip(out["frame"] + 0.01, 0, 1).astype(np.float32)
        elif tool == "segmentation":
            labels = out["labels"].copy()
            labels[: labels.shape[0] // 2] = 0  # half the liver lost
            out["labels"] = labels
        elif tool == "retrieval":
            rng = np.random.default_rng(0)
            out["vectors"] = out["vectors"] + 0.2 * rng.standard_normal(out["vectors"].shape).astype(np.float32)
        elif tool == "grading":
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return out

    _fake_gpu(monkeypatch)
    _replay(monkeypatch, recorded[1], perturb)
    report = selftest.run_selftest("auto")
    assert not report.ok and report.gpu_checked
    assert report.checked_devices == ["cpu", "cuda:0"]
    text = "\n".join(report.failures)
    assert "clahe cuda:0 vs cpu: CLAHE 2-D B-mode max |diff| vs cpu" in text
    assert "segmentation cuda:0 vs cpu: segmentation: liver+tumour Dice vs cpu" in text
    assert "retrieval cuda:0 vs cpu: retrieval: descriptor cosine vs cpu" in text
    assert "grading on cuda:0 crashed: RuntimeError: CUDA error" in text
    assert not any("on cpu" in f for f in report.failures)  # the CPU answers are still fine
    checks = {(c.name, c.device): c for c in report.checks}
    assert checks[("CLAHE 2-D B-mode max |diff| vs cpu", "cuda:0")].value == pytest.approx(0.01, abs=1e-3)
    assert checks[("CLAHE 3-D CT max |diff| vs cpu", "cuda:0")].ok  # the untouched volume agrees
    assert checks[("segmentation: liver+tumour Dice vs cpu", "cuda:0")].value < 0.99
    assert "cuda:0" in report.format_table() and "FAILED" in report.format_table()


def test_mocked_accelerator_that_agrees_passes(recorded, monkeypatch):
    _fake_gpu(monkeypatch)
    _replay(monkeypatch, recorded[1], perturb=lambda tool, out: out)
    report = selftest.run_selftest("auto")
    assert report.ok, report.failures
    parity = [c for c in report.checks if c.kind == "parity"]
    assert {c.tool for c in parity} == {"clahe", "grading", "segmentation", "retrieval"}
    assert all(c.device == "cuda:0" and c.ok for c in parity)


@pytest.mark.skipif(available_devices() != ["cpu"], reason="this machine has an accelerator")
def test_cli_refuses_a_missing_cuda_in_one_line(capsys):
    assert main(["selftest", "--device", "cuda", "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: device 'cuda' is not available here")


def test_settings_button_shows_the_table(recorded, monkeypatch, make_napari_viewer):
    from napari_medai._qt.settings import SettingsWidget

    _replay(monkeypatch, recorded[1])
    widget = SettingsWidget(make_napari_viewer())
    widget.check_button.clicked.emit()  # jobs run synchronously in tests (NAPARI_MEDAI_SYNC=1)
    assert widget.selftest_report is not None and widget.selftest_report.ok
    assert "result: OK" in widget.selftest_table.toPlainText()
    assert widget.check_button.enabled and widget.jobs.last_error is None


def test_should_stop_cancels_and_is_not_reported_as_a_crash(monkeypatch):
    from napari_medai.errors import CancelledError
    from napari_medai.runtime.progress import check_stop

    stop, seen = [False], []

    def run(device, samples, should_stop=None):
        seen.append(device)
        stop[0] = True  # the user presses Cancel while the tool runs
        check_stop(should_stop)  # the tool polls the caller's should_stop
        return {}

    monkeypatch.setattr(selftest, "TOOLS", [selftest.Tool("clahe", run, None, None)] * 2)
    with pytest.raises(CancelledError):
        selftest.run_selftest("cpu", should_stop=lambda: stop[0])
    assert seen == ["cpu"]  # cancelled inside the first tool, the second never ran
    with pytest.raises(CancelledError):
        selftest.run_selftest("cpu", should_stop=lambda: True)


def test_one_version_loop_for_info_and_selftest(capsys):
    """`info` and `selftest` report versions through runtime.provenance.package_versions (one loop)."""
    from napari_medai.runtime.provenance import package_versions
    from napari_medai.runtime.selftest import collect_versions

    versions, errors = package_versions(["numpy", "no_such_module_for_medai"])
    assert versions["no_such_module_for_medai"] is None and "no_such_module_for_medai" in errors
    assert versions["numpy"] == np.__version__ and versions["python"] and versions["napari-medai"]
    chosen, failures = collect_versions()
    assert failures == [] and {"torch", "monai", "numba", "faiss"} <= set(chosen)
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)["versions"]
    assert {k: info[k] for k in chosen} == chosen
