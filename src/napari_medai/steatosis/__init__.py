"""Fatty-liver (hepatic steatosis) grading on B-mode ultrasound: S0 normal .. S3 severe.

``grade_steatosis(image, roi=..., kidney_roi=...)``. Research use only - not a medical device.
"""

__all__ = ["grade_steatosis", "SteatosisResult", "GRADE_LABELS"]


def __getattr__(name):
    if name in __all__:
        from . import core

        return getattr(core, name)
    raise AttributeError(name)
