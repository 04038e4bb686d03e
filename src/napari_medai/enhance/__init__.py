"""CLAHE: contrast-limited adaptive histogram equalisation in 2-D, per slice and in 3-D.

The public function is ``napari_medai.clahe`` (also ``napari_medai.enhance.clahe``); the CLI command is
``napari-medai enhance``. Research use only, not a medical device.
"""

from .core import ClaheResult, clahe, run_clahe

__all__ = ["clahe", "run_clahe", "ClaheResult"]
