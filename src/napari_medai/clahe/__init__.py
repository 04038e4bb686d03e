"""CLAHE: contrast-limited adaptive histogram equalisation in 2-D, per slice and in 3-D.

``from napari_medai.clahe import clahe`` (or ``napari_medai.clahe`` at the top level).
Research use only, not a medical device.
"""

from .core import ClaheResult, clahe, run_clahe

__all__ = ["clahe", "run_clahe", "ClaheResult"]
