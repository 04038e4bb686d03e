"""Liver and tumour segmentation of CT (slice-wise 2-D UNet by default; user TorchScript / MONAI models).

Research use only, not a medical device. Heavy libraries (torch, MONAI) load only when a job runs.
"""

from __future__ import annotations

__all__ = ["segment", "SegmentationResult", "postprocess"]


def __getattr__(name):
    if name in __all__:
        from . import core

        return getattr(core, name)
    raise AttributeError(name)
