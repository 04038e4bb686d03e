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

With ``members`` > 1 in the arch params, the model is that many MSRNets trained with different seeds;
the descriptor is their descriptors concatenated and re-normalised (``descriptor_dim`` long), the
logits their mean.
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


class MSRNetEnsemble(nn.Module):
    def __init__(self, members: list):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x):
        outputs = [m(x) for m in self.members]
        z = F.normalize(torch.cat([z for z, _ in outputs], 1), dim=1)
        logits = None if outputs[0][1] is None else torch.stack([lg.float() for _, lg in outputs]).mean(0)
        return z, logits


def build_net(arch_params: dict) -> "MSRNet | MSRNetEnsemble":
    n_members = int(arch_params.get("members", 1))
    if n_members > 1:
        return MSRNetEnsemble([build_net({**arch_params, "members": 1}) for _ in range(n_members)])
    return MSRNet(
        widths=tuple(arch_params.get("widths", (24, 48, 96, 160, 256))),
        embed_dim=int(arch_params.get("embed_dim", 128)),
        n_classes=int(arch_params.get("n_classes", 3)),
        in_ch=int(arch_params.get("in_ch", 1)),
        dropout=float(arch_params.get("dropout", 0.2)),
    )
