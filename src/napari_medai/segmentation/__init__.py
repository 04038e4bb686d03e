"""Liver and tumour segmentation of CT (slice-wise 2-D UNet by default; user TorchScript / MONAI models).

Research use only, not a medical device. Heavy libraries (torch, MONAI) load only when a job runs.
"""

from __future__ import annotations

from .. import _lazy

__all__ = ["segment", "SegmentationResult", "postprocess"]


__getattr__, __dir__, _ = _lazy.attach(__name__, {"core": __all__})
