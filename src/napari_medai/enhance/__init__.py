"""CLAHE: contrast-limited adaptive histogram equalisation in 2-D, per slice and in 3-D.

``from napari_medai.clahe import clahe`` or ``napari_medai.clahe(image, ...)``. Research use only, not
a medical device.

The package shares its name with the top-level function ``napari_medai.clahe``. Once this sub-package
is imported, Python binds ``napari_medai.clahe`` to the package, so the package itself is callable
and forwards to :func:`napari_medai.clahe.core.clahe`: ``napari_medai.clahe(image)`` works in either case.
"""

import sys as _sys
import types as _types

from .core import ClaheResult, clahe, run_clahe

__all__ = ["clahe", "run_clahe", "ClaheResult"]


class _CallablePackage(_types.ModuleType):
    def __call__(self, *args, **kwargs):
        return clahe(*args, **kwargs)


_sys.modules[__name__].__class__ = _CallablePackage
