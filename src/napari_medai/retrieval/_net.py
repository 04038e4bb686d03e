"""Multi-scale residual CNN used as the case embedder (imports torch: load lazily).

Architecture (``msrnet``):

* stem: 3x3 conv, stride 2
* four stages, each a multi-scale residual block: two parallel 3x3 branches (dilation 1 and 2,
  i.e. 3x3 and 5x5 receptive fields) concatenated, a 3x3 fusion conv, and a projected shortcut;
  every stage halves the resolution
* multi-scale head: global-average-pooled features of stages 2, 3 and 4 are concatenated and
  projected to the descriptor (``embed_dim``), followed by the classifier.

The descriptor is the L2-normalised penultimate layer (the projection output), so Euclidean
distances between descriptors lie in [0, 2].

With ``members`` > 1 in the arch params, the model is that many MSRNets trained alike with different
seeds or input sizes; the descriptor is their descriptors concatenated and re-normalised
(``descriptor_dim`` long), the logits their mean. ``member_sizes`` (optional) gives each member's input
size: the ensemble takes images prepared at the largest and area-resizes them for the smaller members,
exactly as ``preprocess.resize_area`` would (same box weights).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MSBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 2):
        super().__init__()
        half = cout // 2
        self.b3 = nn.Sequential(
            nn.Conv2d(cin, half, 3, stride, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU(inplace=True)
        )
        self.b5 = nn.Sequential(
            nn.Conv2d(cin, cout - half, 3, stride, 2, dilation=2, bias=False),
            nn.BatchNorm2d(cout - half),
            nn.ReLU(inplace=True),
        )
        self.fuse = nn.Sequential(nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.short = nn.Sequential(
            nn.AvgPool2d(stride) if stride > 1 else nn.Identity(),
            nn.Conv2d(cin, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        )

    def forward(self, x):
        y = torch.cat([self.b3(x), self.b5(x)], 1)
        return F.relu(self.fuse(y) + self.short(x), inplace=True)


class MSRNet(nn.Module):
    def __init__(self, widths=(24, 48, 96, 160, 256), embed_dim: int = 128, n_classes: int = 3,
                 in_ch: int = 1, dropout: float = 0.2):
        super().__init__()
        w0, w1, w2, w3, w4 = widths
        self.stem = nn.Sequential(
            nn.Conv2d(in_ch, w0, 3, 2, 1, bias=False), nn.BatchNorm2d(w0), nn.ReLU(inplace=True)
        )
        self.s1 = MSBlock(w0, w1)
        self.s2 = MSBlock(w1, w2)
        self.s3 = MSBlock(w2, w3)
        self.s4 = MSBlock(w3, w4)
        self.proj = nn.Linear(w2 + w3 + w4, embed_dim)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(embed_dim, n_classes) if n_classes else None

    def features(self, x):
        x = self.stem(x)
        x = self.s1(x)
        f2 = self.s2(x)
        f3 = self.s3(f2)
        f4 = self.s4(f3)
        pooled = torch.cat([f.mean((2, 3)) for f in (f2, f3, f4)], 1)
        return self.proj(pooled)

    def forward(self, x):
        """Return (descriptor (L2-normalised), logits)."""
        z = self.features(x)
        logits = self.head(self.drop(F.relu(z))) if self.head is not None else None
        return F.normalize(z.float(), dim=1), logits


def area_weights(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) matrix of the box filter that ``preprocess.resize_area`` (Pillow BOX) applies along
    one axis, read off Pillow itself so the two agree to float rounding."""
    import numpy as np
    from PIL import Image

    eye = Image.fromarray(np.eye(n_in, dtype=np.float32), mode="F")
    return torch.from_numpy(np.asarray(eye.resize((n_in, n_out), Image.BOX), dtype=np.float32).copy())


class MSRNetEnsemble(nn.Module):
    def __init__(self, members: list, input_sizes: list[int] | None = None):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.input_sizes = [int(s) for s in input_sizes] if input_sizes else None
        self._weights: dict = {}

    def _resized(self, x, size: int):
        n = x.shape[-1]
        if size == n:
            return x
        key = (n, size, x.device)
        if key not in self._weights:
            self._weights[key] = area_weights(n, size).to(x.device)
        w = self._weights[key].to(x.dtype)
        return w @ x @ w.T

    def forward(self, x):
        sizes = self.input_sizes or [x.shape[-1]] * len(self.members)
        outputs = [m(self._resized(x, s)) for m, s in zip(self.members, sizes)]
        z = F.normalize(torch.cat([z for z, _ in outputs], 1), dim=1)
        logits = None if outputs[0][1] is None else torch.stack([lg.float() for _, lg in outputs]).mean(0)
        return z, logits


def build_net(arch_params: dict) -> MSRNet | MSRNetEnsemble:
    n_members = int(arch_params.get("members", 1))
    if n_members > 1:
        single = {k: v for k, v in arch_params.items() if k not in ("members", "member_sizes")}
        return MSRNetEnsemble([build_net(single) for _ in range(n_members)], arch_params.get("member_sizes"))
    return MSRNet(
        widths=tuple(arch_params.get("widths", (24, 48, 96, 160, 256))),
        embed_dim=int(arch_params.get("embed_dim", 128)),
        n_classes=int(arch_params.get("n_classes", 3)),
        in_ch=int(arch_params.get("in_ch", 1)),
        dropout=float(arch_params.get("dropout", 0.2)),
    )
