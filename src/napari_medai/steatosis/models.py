"""Networks in plain torch (no torchvision / timm). Imported lazily: this module imports torch.

- :class:`SEInceptionResNetV2`: Inception-ResNet-v2 (Szegedy et al. 2017) with Squeeze-and-Excitation
  blocks in the convolution branches of the Inception-ResNet-B and -C modules, and multi-level
  fusion: the outputs of the A, SE-B and SE-C stages are global-average-pooled and concatenated
  before dropout and the 4-grade classifier (the method paper). ``width`` scales every channel
  count, ``blocks`` sets the number of A/B/C modules (paper: 5, 10, 5), ``input_size`` the size the
  input is resized to, ``stem`` is ``"full"`` (the original stride-2 stem, for 299x299) or
  ``"small"`` (stride-1 3x3 convolutions, for 28-64 px ROI crops).
- :class:`CompactCNN`: three conv blocks, global pooling, dropout, linear.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def _c(ch: float, width: float) -> int:
    return max(4, int(round(ch * width)))


class ConvBN(nn.Sequential):
    """Convolution without bias, batch norm and ReLU; "same" padding by default (odd kernels)."""

    def __init__(self, cin, cout, k, stride=1, padding=None):
        if padding is None:
            padding = (k[0] // 2, k[1] // 2) if isinstance(k, tuple) else k // 2
        super().__init__(nn.Conv2d(cin, cout, k, stride=stride, padding=padding, bias=False),
                         nn.BatchNorm2d(cout, eps=1e-3), nn.ReLU(inplace=True))


class SE(nn.Module):
    """Squeeze-and-Excitation (Hu et al. 2018): channel gates from globally pooled features."""

    def __init__(self, ch, reduction=8):
        super().__init__()
        hidden = max(2, ch // reduction)
        self.fc1 = nn.Conv2d(ch, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, ch, 1)

    def forward(self, x):
        """Scale each channel of ``x`` (N, C, H, W) by its learned gate in (0, 1)."""
        s = F.adaptive_avg_pool2d(x, 1)
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(s))))


class BlockA(nn.Module):
    """Inception-ResNet-A (35x35 grid in the original)."""

    def __init__(self, ch, w, scale=0.17):
        super().__init__()
        self.scale = scale
        self.b0 = ConvBN(ch, _c(32, w), 1)
        self.b1 = nn.Sequential(ConvBN(ch, _c(32, w), 1), ConvBN(_c(32, w), _c(32, w), 3))
        self.b2 = nn.Sequential(ConvBN(ch, _c(32, w), 1), ConvBN(_c(32, w), _c(48, w), 3),
                                ConvBN(_c(48, w), _c(64, w), 3))
        self.up = nn.Conv2d(_c(32, w) * 2 + _c(64, w), ch, 1)

    def forward(self, x):
        """Residual update: ``relu(x + scale * up(branches))``, same shape as ``x``."""
        y = torch.cat([self.b0(x), self.b1(x), self.b2(x)], 1)
        return F.relu(x + self.scale * self.up(y))


class SEBlockB(nn.Module):
    """SE-Inception-ResNet-B: SE on the concatenated convolution branches before the residual add."""

    def __init__(self, ch, w, scale=0.10, se_reduction=8):
        super().__init__()
        self.scale = scale
        self.b0 = ConvBN(ch, _c(192, w), 1)
        self.b1 = nn.Sequential(ConvBN(ch, _c(128, w), 1), ConvBN(_c(128, w), _c(160, w), (1, 7)),
                                ConvBN(_c(160, w), _c(192, w), (7, 1)))
        cat = _c(192, w) * 2
        self.se = SE(cat, se_reduction)
        self.up = nn.Conv2d(cat, ch, 1)

    def forward(self, x):
        """Residual update with SE-gated branches; same shape as ``x``."""
        y = self.se(torch.cat([self.b0(x), self.b1(x)], 1))
        return F.relu(x + self.scale * self.up(y))


class SEBlockC(nn.Module):
    """SE-Inception-ResNet-C; the last block of the stage skips its ReLU (``activation=False``)."""

    def __init__(self, ch, w, scale=0.20, se_reduction=8, activation=True):
        super().__init__()
        self.scale = scale
        self.activation = activation
        self.b0 = ConvBN(ch, _c(192, w), 1)
        self.b1 = nn.Sequential(ConvBN(ch, _c(192, w), 1), ConvBN(_c(192, w), _c(224, w), (1, 3)),
                                ConvBN(_c(224, w), _c(256, w), (3, 1)))
        cat = _c(192, w) + _c(256, w)
        self.se = SE(cat, se_reduction)
        self.up = nn.Conv2d(cat, ch, 1)

    def forward(self, x):
        """Residual update with SE-gated branches; same shape as ``x``."""
        y = self.se(torch.cat([self.b0(x), self.b1(x)], 1))
        x = x + self.scale * self.up(y)
        return F.relu(x) if self.activation else x


class ReductionA(nn.Module):
    """Reduction-A: halves the grid; ``out`` is its channel count (input + two conv branches)."""

    def __init__(self, ch, w):
        super().__init__()
        # the paper's filter counts k, l, m, n (Table 1, Inception-ResNet-v2 column)
        ch_k, ch_l, ch_m, ch_n = _c(256, w), _c(256, w), _c(384, w), _c(384, w)
        self.b0 = ConvBN(ch, ch_n, 3, stride=2, padding=1)
        self.b1 = nn.Sequential(ConvBN(ch, ch_k, 1), ConvBN(ch_k, ch_l, 3),
                                ConvBN(ch_l, ch_m, 3, stride=2, padding=1))
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.out = ch + ch_n + ch_m

    def forward(self, x):
        """Concatenate the strided conv branches and the max-pooled input (half the grid)."""
        return torch.cat([self.b0(x), self.b1(x), self.pool(x)], 1)


class ReductionB(nn.Module):
    """Reduction-B: halves the grid; ``out`` is its channel count (input + three conv branches)."""

    def __init__(self, ch, w):
        super().__init__()
        self.b0 = nn.Sequential(ConvBN(ch, _c(256, w), 1),
                                ConvBN(_c(256, w), _c(384, w), 3, stride=2, padding=1))
        self.b1 = nn.Sequential(ConvBN(ch, _c(256, w), 1),
                                ConvBN(_c(256, w), _c(288, w), 3, stride=2, padding=1))
        self.b2 = nn.Sequential(ConvBN(ch, _c(256, w), 1), ConvBN(_c(256, w), _c(288, w), 3),
                                ConvBN(_c(288, w), _c(320, w), 3, stride=2, padding=1))
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.out = ch + _c(384, w) + _c(288, w) + _c(320, w)

    def forward(self, x):
        """Concatenate the strided conv branches and the max-pooled input (half the grid)."""
        return torch.cat([self.b0(x), self.b1(x), self.b2(x), self.pool(x)], 1)


class SEInceptionResNetV2(nn.Module):
    """SE-Inception-ResNet-v2 with multi-level fusion of the A, SE-B and SE-C stage outputs."""

    def __init__(self, in_channels=1, n_classes=4, width=1.0, blocks=(5, 10, 5), input_size=299,
                 stem="full", dropout=0.2, se_reduction=8):
        super().__init__()
        self.input_size = int(input_size) if input_size else None
        w = float(width)
        if stem == "full":  # original stem: 299 -> 35x35x320 (approximately, with padding)
            self.stem = nn.Sequential(
                ConvBN(in_channels, _c(32, w), 3, stride=2, padding=0), ConvBN(_c(32, w), _c(32, w), 3, padding=0),
                ConvBN(_c(32, w), _c(64, w), 3), nn.MaxPool2d(3, stride=2),
                ConvBN(_c(64, w), _c(80, w), 1), ConvBN(_c(80, w), _c(192, w), 3, padding=0), nn.MaxPool2d(3, stride=2),
            )
        else:  # small ROI crops: keep the resolution for the A stage
            self.stem = nn.Sequential(ConvBN(in_channels, _c(32, w), 3), ConvBN(_c(32, w), _c(64, w), 3),
                                      ConvBN(_c(64, w), _c(192, w), 1))
        # mixed_5b (a 4-branch inception module) -> 320 channels
        c0 = _c(192, w)
        self.m5b = nn.ModuleList([
            ConvBN(c0, _c(96, w), 1),
            nn.Sequential(ConvBN(c0, _c(48, w), 1), ConvBN(_c(48, w), _c(64, w), 5)),
            nn.Sequential(ConvBN(c0, _c(64, w), 1), ConvBN(_c(64, w), _c(96, w), 3), ConvBN(_c(96, w), _c(96, w), 3)),
            nn.Sequential(nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False), ConvBN(c0, _c(64, w), 1)),
        ])
        ca = _c(96, w) * 2 + _c(64, w) * 2
        nA, nB, nC = blocks
        self.stage_a = nn.Sequential(*[BlockA(ca, w) for _ in range(nA)])
        self.red_a = ReductionA(ca, w)
        cb = self.red_a.out
        self.stage_b = nn.Sequential(*[SEBlockB(cb, w, se_reduction=se_reduction) for _ in range(nB)])
        self.red_b = ReductionB(cb, w)
        cc = self.red_b.out
        self.stage_c = nn.Sequential(*[SEBlockC(cc, w, se_reduction=se_reduction, activation=i < nC - 1)
                                       for i in range(nC)])
        self.fused_channels = ca + cb + cc
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(self.fused_channels, n_classes)

    def features(self, x):
        """The fused descriptor (N, ``fused_channels``): pooled A, SE-B and SE-C outputs, concatenated.

        The input (N, C, H, W) is first resized to ``input_size`` when that is set.
        """
        if self.input_size and x.shape[-1] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        x = self.stem(x)
        x = torch.cat([b(x) for b in self.m5b], 1)
        a = self.stage_a(x)
        b = self.stage_b(self.red_a(a))
        c = self.stage_c(self.red_b(b))
        # multi-level fusion: average-pool A, SE-B and SE-C outputs and concatenate
        return torch.cat([F.adaptive_avg_pool2d(t, 1).flatten(1) for t in (a, b, c)], 1)

    def forward(self, x):
        """Grade logits (N, ``n_classes``) for a batch of crops (N, C, H, W)."""
        return self.fc(self.dropout(self.features(x)))


class CompactCNN(nn.Module):
    """A small baseline: three conv blocks, global average pooling, dropout and a linear classifier."""

    def __init__(self, in_channels=1, n_classes=4, width=16, dropout=0.3, input_size=None):
        super().__init__()
        self.input_size = int(input_size) if input_size else None
        c = int(width)
        self.body = nn.Sequential(
            ConvBN(in_channels, c, 3), ConvBN(c, c, 3), nn.MaxPool2d(2),
            ConvBN(c, 2 * c, 3), ConvBN(2 * c, 2 * c, 3), nn.MaxPool2d(2),
            ConvBN(2 * c, 4 * c, 3),
        )
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(4 * c, n_classes)

    def forward(self, x):
        """Grade logits (N, ``n_classes``); the input is resized to ``input_size`` first when that is set."""
        if self.input_size and x.shape[-1] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        return self.fc(self.dropout(F.adaptive_avg_pool2d(self.body(x), 1).flatten(1)))


ARCHITECTURES = {"se-irv2": SEInceptionResNetV2, "cnn": CompactCNN}

#: compact defaults that train on a CPU in minutes on 28x28 crops
DEFAULT_PARAMS = {
    "se-irv2": {"width": 0.125, "blocks": [1, 2, 1], "input_size": 28, "stem": "small", "dropout": 0.3},
    "cnn": {"width": 16, "dropout": 0.3},
    "se-irv2-full": {"width": 1.0, "blocks": [5, 10, 5], "input_size": 299, "stem": "full", "dropout": 0.2},
}


def build(arch: str, in_channels: int = 2, **params) -> nn.Module:
    """Instantiate an architecture by its registry name (``se-irv2`` or ``cnn``) from a card's params.

    Raises:
        ValueError: ``arch`` is not in :data:`ARCHITECTURES`.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch}")
    if "blocks" in params:
        params["blocks"] = tuple(params["blocks"])
    return ARCHITECTURES[arch](in_channels=in_channels, **params)
