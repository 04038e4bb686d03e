"""Every third-party import in src/ is declared in pyproject.toml, in the right place (issue 16).

- core dependencies: what the CLI and the Python API need without Qt;
- extras: ``napari`` (widgets, Qt), ``dask`` (batch on a cluster), ``train`` (training reports);
- an import of a ``train`` package goes through ``napari_medai._lazy.require`` so that a core install
  gets one ``error:`` line naming the extra instead of a traceback.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "napari_medai"

# import name -> distribution, where they differ (checked against the installed metadata below)
IMPORT_TO_DIST = {
    "PIL": "pillow",
    "yaml": "pyyaml",
    "sklearn": "scikit-learn",
    "skimage": "scikit-image",
    "faiss": "faiss-cpu",
    "lazy_loader": "lazy-loader",
    "PyQt5": "pyqt5",
}
# where an extra's packages may be imported directly (paths relative to src/napari_medai)
EXTRA_FILES = {
    "napari": re.compile(r"^(_qt/.*|.*/widget\.py|_napari\.py|demo\.py|viewer\.py)$"),
    "dask": re.compile(r"^batch/(runner|tasks)\.py$"),
}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(req: str) -> str:
    return _norm(re.split(r"[\s\[<>=!~;]", req.strip(), maxsplit=1)[0])


def declared() -> dict[str, set[str]]:
    """``{"core": {...}, extra: {...}}`` of normalised distribution names (extras resolved)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    out = {"core": {_requirement_name(r) for r in project["dependencies"]}}
    for extra, reqs in project["optional-dependencies"].items():
        names = set()
        for r in reqs:
            if re.match(r"napari-medai\[(.+)\]", r.strip()):
                continue
            names.add(_requirement_name(r))
            if _requirement_name(r) == "dask" and "[distributed]" in r:
                names.add("distributed")  # dask's own extra installs the distribution of that name
        out[extra] = names
    return out


def imports() -> list[tuple[str, str, bool]]:
    """(file relative to the package, top-level module, imported through ``require``) for every
    absolute import and every ``import_module("...")`` / ``require("...")`` with a literal name."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found += [(rel, a.name.split(".")[0], False) for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.append((rel, node.module.split(".")[0], False))
            elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
                  and isinstance(node.args[0].value, str)):
                fn = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                if fn in ("import_module", "require"):
                    found.append((rel, node.args[0].value.split(".")[0], fn == "require"))
    return [(f, m, r) for f, m, r in found if m not in sys.stdlib_module_names and m != "napari_medai"]


def _dist(module: str) -> str:
    return _norm(IMPORT_TO_DIST.get(module, module))


def test_mapping_matches_installed_metadata():
    from importlib.metadata import packages_distributions

    installed = packages_distributions()
    for module, dist in IMPORT_TO_DIST.items():
        if module in installed:
            assert dist in {_norm(d) for d in installed[module]}, module


def test_the_scan_finds_imports():
    modules = {m for _, m, _ in imports()}
    assert {"numpy", "torch", "PIL", "qtpy", "sklearn"} <= modules


def test_every_third_party_import_is_declared_where_it_is_used():
    deps = declared()
    everything = set().union(*deps.values())
    problems = []
    for rel, module, via_require in imports():
        dist = _dist(module)
        if dist not in everything:
            problems.append(f"{rel}: {module} ({dist}) is not declared in pyproject.toml")
            continue
        if dist in deps["core"]:
            continue
        if dist in deps["train"]:
            if not via_require:
                problems.append(f"{rel}: {module} is a train extra: import it with napari_medai._lazy.require")
            continue
        extras = [e for e, pattern in EXTRA_FILES.items() if dist in deps[e] and pattern.match(rel)]
        if not extras and not via_require:
            problems.append(f"{rel}: {module} ({dist}) is only in an extra; a core module cannot import it")
    assert problems == []


def test_train_packages_are_not_core():
    deps = declared()
    assert {"scikit-learn", "matplotlib"} <= deps["train"]
    assert not {"scikit-learn", "matplotlib"} & deps["core"]
    assert not {"napari", "qtpy", "pyqt5", "magicgui"} & deps["core"]


BLOCKED = ["sklearn", "matplotlib", "napari", "qtpy", "PyQt5", "magicgui", "superqt", "dask", "distributed"]
CORE_SCRIPT = r"""
import importlib.abc, sys, json, io, contextlib
BLOCKED = set(%r)

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, Block())
import numpy as np
from napari_medai import clahe, grade_steatosis, CaseLibrary, MedaiError
from napari_medai.cli.main import main
from napari_medai.retrieval.embedder import PixelEmbedder
out = {}
buf = io.StringIO()
with contextlib.redirect_stdout(buf):
    out["info_rc"] = main(["info", "--json"])
out["info_ok"] = "versions" in json.loads(buf.getvalue())
out["clahe_max"] = float(clahe(np.arange(64 * 64, dtype=np.uint8).reshape(64, 64)).max())
img = (np.random.default_rng(0).random((300, 400)) * 255).astype(np.uint8)
r = grade_steatosis(img, roi=(100, 100, 120, 120))
out["grade_ok"] = bool(abs(sum(r.probabilities) - 1) < 1e-5)
lib = CaseLibrary(PixelEmbedder(8))
lib.add_vectors(np.eye(64, dtype=np.float32)[:4], ["a", "a", "b", "b"])
out["query"] = len(lib.search_vectors(np.eye(64, dtype=np.float32)[:1], 2)[1][0])
from napari_medai.steatosis.train import make_folds
try:
    make_folds([0, 1] * 5, list(range(10)), 2)
except MedaiError as e:
    out["train_refusal"] = str(e)
out["loaded"] = sorted(m for m in BLOCKED if m in sys.modules)
print(json.dumps(out))
"""


def test_core_runs_the_cli_and_api_without_qt_napari_dask_or_training_packages():
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", CORE_SCRIPT % BLOCKED], capture_output=True, text=True, env=env,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["info_rc"] == 0 and got["info_ok"]
    assert got["clahe_max"] == 1.0
    assert got["grade_ok"]
    assert got["query"] == 2
    assert "scikit-learn is not installed" in got["train_refusal"] and "napari-medai[train]" in got["train_refusal"]
    assert got["loaded"] == []
