"""Fatty-liver (hepatic steatosis) grading on B-mode ultrasound: S0 normal .. S3 severe.

``grade_steatosis(image, roi=..., kidney_roi=...)``. Research use only - not a medical device.
"""

from .. import _lazy

__all__ = ["grade_steatosis", "SteatosisResult", "GRADE_LABELS"]


__getattr__, __dir__, _ = _lazy.attach(__name__, {"core": __all__})
