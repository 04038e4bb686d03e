"""Running the tools leaves the process's settings as the user set them (issue 16).

napari's process is shared with the user and other plugins: no threading layer is chosen, no thread
count is changed, not even for the length of a call (a second job running meanwhile would see it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SRC = str(Path(__file__).resolve().parents[1] / "src")


def test_clahe_starts_and_chooses_no_numba_threading_layer():
    """In a fresh process: numba's layer setting is untouched and numba's pool is not even started
    by CLAHE (it runs on a pool of its own); a thread count the caller set through numba is used."""
    script = (
        "import json, numpy as np, numba\n"
        "from numba.np.ufunc import parallel\n"
        "before = str(numba.config.THREADING_LAYER)\n"
        "from napari_medai import clahe\n"
        "from napari_medai.enhance import _numba\n"
        "a = clahe(np.arange(96 * 128, dtype=np.uint8).reshape(96, 128), device='cpu')\n"
        "b = clahe(np.arange(8 * 32 * 32, dtype=np.int16).reshape(8, 32, 32), mode='3d', device='cpu')\n"
        "out = dict(before=before, after=str(numba.config.THREADING_LAYER),\n"
        "           started=bool(parallel._is_initialized), threads=_numba.n_threads(),\n"
        "           ok=bool(0 <= a.min() and a.max() <= 1 and b.max() == 1.0))\n"
        "numba.set_num_threads(1)\n"  # starts numba's layer (the user's choice), thread-local setting
        "out['threads_after_user_set'] = _numba.n_threads()\n"
        "print(json.dumps(out))\n"
    )
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("NUMBA_THREADING_LAYER", None)
    env["NUMBA_NUM_THREADS"] = "2"
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["before"] == got["after"] == "default"
    assert got["started"] is False
    assert got["ok"] is True
    assert got["threads"] == 2
    assert got["threads_after_user_set"] == 1


def test_clahe_result_does_not_depend_on_the_thread_count(monkeypatch):
    from napari_medai.enhance import _numba
    from napari_medai.enhance.core import clahe

    rng = np.random.default_rng(3)
    vol = rng.integers(-1000, 1500, size=(12, 70, 90)).astype(np.int16)
    results = []
    for n in (1, 3):
        monkeypatch.setattr(_numba, "n_threads", lambda n=n: n)
        results.append(clahe(vol, mode="3d", kernel_size=(4, 16, 16), device="cpu"))
    np.testing.assert_array_equal(results[0], results[1])


@pytest.fixture
def torch_thread_calls(monkeypatch):
    torch = pytest.importorskip("torch")
    calls = []
    for name in ("set_num_threads", "set_num_interop_threads"):
        monkeypatch.setattr(torch, name, lambda n, name=name: calls.append((name, n)))
    return calls


def test_embedding_a_query_does_not_touch_torch_threads(torch_thread_calls):
    import torch

    from napari_medai.retrieval.embedder import get_embedder

    before = torch.get_num_threads()
    emb = get_embedder(None, device="cpu")
    z = emb.embed([np.tile(np.linspace(0, 255, 64, dtype=np.float32), (64, 1))])
    assert z.shape == (1, emb.dim) and np.isfinite(z).all()
    assert torch_thread_calls == []
    assert torch.get_num_threads() == before


def test_library_query_does_not_touch_faiss_threads(monkeypatch):
    faiss = pytest.importorskip("faiss")
    from napari_medai.retrieval.embedder import PixelEmbedder
    from napari_medai.retrieval.library import CaseLibrary

    calls = []
    monkeypatch.setattr(faiss, "omp_set_num_threads", calls.append)
    before = faiss.omp_get_max_threads()
    rng = np.random.default_rng(0)
    emb = PixelEmbedder(4)
    emb.dim = 16
    lib = CaseLibrary(emb, index="flat")
    x = rng.standard_normal((200, 16)).astype(np.float32)
    lib.add_vectors(x, ["c"] * len(x))
    ref = CaseLibrary(emb, index="numpy")
    ref.add_vectors(x, ["c"] * len(x))
    d, i = lib.search_vectors(x[:1], 3)
    np.testing.assert_array_equal(i, ref.search_vectors(x[:1], 3)[1])
    assert d[0, 0] == pytest.approx(0.0, abs=1e-5)
    assert calls == []
    assert faiss.omp_get_max_threads() == before


def test_training_a_texture_net_leaves_torch_threads_alone():
    torch = pytest.importorskip("torch")
    from napari_medai.steatosis.train import train_net

    before = torch.get_num_threads()
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 255, size=(8, 28, 28)).astype(np.uint8)
    state = train_net(crops, np.array([0, 1, 2, 3] * 2), "cnn", {"width": 4}, preprocess="raw", epochs=1, batch=8)
    assert state and all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    assert torch.get_num_threads() == before


def test_no_module_in_src_sets_thread_counts():
    """Thread counts are process-wide (napari's process is shared): no call in src/ sets them."""
    import ast
    import pathlib

    src = pathlib.Path(__file__).resolve().parents[1] / "src" / "napari_medai"
    setters = {"set_num_threads", "set_num_interop_threads", "omp_set_num_threads", "set_threading_layer"}
    offenders = [
        f"{path.relative_to(src)}:{node.lineno}"
        for path in src.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) in setters
    ]
    assert offenders == []
