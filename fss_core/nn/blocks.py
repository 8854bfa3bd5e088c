"""Building blocks of the inference graph: conv-BN-activation units and CSP layers.

Every convolution that is followed by batch norm lives in :class:`ConvBNAct`, so one
function (:func:`fss_core.nn.fuse.fuse_conv_bn`) can fold all of them for inference.
"""

from __future__ import annotations

import torch
from torch import nn

# YOLOX's batch-norm settings: they train from scratch with large batches and EMA.
BN_EPS = 1e-3
BN_MOMENTUM = 0.03

ACTIVATIONS = {"silu": nn.SiLU, "relu": nn.ReLU, "lrelu": lambda: nn.LeakyReLU(0.1), "none": nn.Identity}


def make_act(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class ConvBNAct(nn.Module):
    """Conv2d (no bias) -> BatchNorm2d -> activation; 'same' padding for odd kernels."""

    def __init__(self, c_in: int, c_out: int, k: int = 1, s: int = 1, groups: int = 1, act: str = "silu"):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, s, padding=(k - 1) // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act = make_act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class DWConv(nn.Module):
    """Depthwise k×k conv followed by a pointwise 1×1 conv (both with BN and activation)."""

    def __init__(self, c_in: int, c_out: int, k: int = 3, s: int = 1, act: str = "silu"):
        super().__init__()
        self.dconv = ConvBNAct(c_in, c_in, k, s, groups=c_in, act=act)
        self.pconv = ConvBNAct(c_in, c_out, 1, 1, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pconv(self.dconv(x))


def conv3x3(c_in: int, c_out: int, s: int = 1, depthwise: bool = False, act: str = "silu") -> nn.Module:
    """The 3×3 conv of a card: dense, or depthwise-separable for the nano card."""
    return DWConv(c_in, c_out, 3, s, act=act) if depthwise else ConvBNAct(c_in, c_out, 3, s, act=act)


class Bottleneck(nn.Module):
    """1×1 then 3×3 conv with an optional residual connection (CSP inner block)."""

    def __init__(self, c_in: int, c_out: int, shortcut: bool = True, expansion: float = 1.0,
                 depthwise: bool = False, act: str = "silu"):
        super().__init__()
        hidden = int(c_out * expansion)
        self.conv1 = ConvBNAct(c_in, hidden, 1, act=act)
        self.conv2 = conv3x3(hidden, c_out, 1, depthwise, act)
        self.use_add = shortcut and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(self.conv1(x))
        return x + y if self.use_add else y


class CSPLayer(nn.Module):
    """Cross-stage-partial layer: half the channels go through n bottlenecks, half bypass."""

    def __init__(self, c_in: int, c_out: int, n: int = 1, shortcut: bool = True,
                 depthwise: bool = False, act: str = "silu"):
        super().__init__()
        hidden = int(c_out * 0.5)
        self.conv1 = ConvBNAct(c_in, hidden, 1, act=act)
        self.conv2 = ConvBNAct(c_in, hidden, 1, act=act)
        self.conv3 = ConvBNAct(2 * hidden, c_out, 1, act=act)
        self.m = nn.Sequential(*[Bottleneck(hidden, hidden, shortcut, 1.0, depthwise, act) for _ in range(n)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(torch.cat((self.m(self.conv1(x)), self.conv2(x)), dim=1))


class SPPBottleneck(nn.Module):
    """Spatial pyramid pooling with max-pools of 5, 9 and 13 (stride 1)."""

    def __init__(self, c_in: int, c_out: int, kernels: tuple[int, ...] = (5, 9, 13), act: str = "silu"):
        super().__init__()
        hidden = c_in // 2
        self.conv1 = ConvBNAct(c_in, hidden, 1, act=act)
        self.pools = nn.ModuleList(nn.MaxPool2d(k, 1, k // 2) for k in kernels)
        self.conv2 = ConvBNAct(hidden * (len(kernels) + 1), c_out, 1, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        return self.conv2(torch.cat([x] + [p(x) for p in self.pools], dim=1))


class Focus(nn.Module):
    """Space-to-depth (2×2 pixels -> 4 channels) then a conv: the stride-2 stem of CSPDarkNet."""

    def __init__(self, c_in: int, c_out: int, k: int = 3, act: str = "silu"):
        super().__init__()
        self.conv = ConvBNAct(c_in * 4, c_out, k, 1, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tl = x[..., ::2, ::2]
        bl = x[..., 1::2, ::2]
        tr = x[..., ::2, 1::2]
        br = x[..., 1::2, 1::2]
        return self.conv(torch.cat((tl, bl, tr, br), dim=1))
