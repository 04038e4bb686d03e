"""The one lazy-import mechanism of the package.

- :func:`attach` gives a package lazy attributes (``lazy_loader.attach``, the Scientific Python
  SPEC 1 helper): ``import napari_medai`` stays fast and torch, MONAI, numba and faiss load only
  when a function that needs them runs.
- Heavy third-party modules are imported inside the functions that use them (plain ``import``).
- :func:`require` imports an optional dependency and, when it is missing, refuses with one
  :class:`~napari_medai.errors.MedaiError` line naming the extra to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import lazy_loader

from .errors import MedaiError

# import name -> (distribution, extra that installs it)
OPTIONAL = {
    "sklearn": ("scikit-learn", "train"),
    "matplotlib": ("matplotlib", "train"),
    "napari": ("napari", "napari"),
    "magicgui": ("magicgui", "napari"),
    "qtpy": ("qtpy", "napari"),
    "distributed": ("dask[distributed]", "dask"),
    "dask": ("dask[distributed]", "dask"),
}


def attach(package: str, attributes: dict[str, list[str]]):
    """``__getattr__, __dir__, __all__`` for ``package`` whose ``attributes`` maps a submodule to
    the names it provides, imported on first access."""
    return lazy_loader.attach(package, submod_attrs=attributes)


def require(module: str, purpose: str = "") -> ModuleType:
    """Import ``module`` or raise :class:`MedaiError` saying which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        if exc.name is not None and exc.name.split(".")[0] != top:
            raise
        dist, extra = OPTIONAL.get(top, (top, None))
        hint = f"pip install 'napari-medai[{extra}]'" if extra else f"pip install {dist}"
        what = f" ({purpose})" if purpose else ""
        raise MedaiError(f"{dist} is not installed but is needed{what}; install it with {hint}") from exc
