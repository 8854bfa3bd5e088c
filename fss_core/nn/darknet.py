"""CSPDarkNet backbone and PAFPN neck, scaled by depth and width multipliers (YOLOX family)."""

from __future__ import annotations

import torch
from torch import nn

from fss_core.nn.blocks import ConvBNAct, CSPLayer, Focus, SPPBottleneck, conv3x3


class CSPDarknet(nn.Module):
    """Returns the stride-8, -16 and -32 feature maps (dark3, dark4, dark5)."""

    def __init__(self, depth: float, width: float, depthwise: bool = False, act: str = "silu"):
        super().__init__()
        c = int(width * 64)
        n = max(round(depth * 3), 1)
        self.stem = Focus(3, c, 3, act=act)
        self.dark2 = nn.Sequential(conv3x3(c, c * 2, 2, depthwise, act),
                                   CSPLayer(c * 2, c * 2, n, depthwise=depthwise, act=act))
        self.dark3 = nn.Sequential(conv3x3(c * 2, c * 4, 2, depthwise, act),
                                   CSPLayer(c * 4, c * 4, n * 3, depthwise=depthwise, act=act))
        self.dark4 = nn.Sequential(conv3x3(c * 4, c * 8, 2, depthwise, act),
                                   CSPLayer(c * 8, c * 8, n * 3, depthwise=depthwise, act=act))
        self.dark5 = nn.Sequential(conv3x3(c * 8, c * 16, 2, depthwise, act),
                                   SPPBottleneck(c * 16, c * 16, act=act),
                                   CSPLayer(c * 16, c * 16, n, shortcut=False, depthwise=depthwise, act=act))
        self.out_channels = (c * 4, c * 8, c * 16)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.dark2(self.stem(x))
        c3 = self.dark3(x)
        c4 = self.dark4(c3)
        c5 = self.dark5(c4)
        return c3, c4, c5


class PAFPN(nn.Module):
    """Top-down then bottom-up path aggregation over (c3, c4, c5); output channels = input channels."""

    def __init__(self, in_channels: tuple[int, int, int], depth: float, depthwise: bool = False, act: str = "silu"):
        super().__init__()
        c3, c4, c5 = in_channels
        n = round(3 * depth)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.lateral_conv0 = ConvBNAct(c5, c4, 1, act=act)
        self.C3_p4 = CSPLayer(2 * c4, c4, n, False, depthwise, act)
        self.reduce_conv1 = ConvBNAct(c4, c3, 1, act=act)
        self.C3_p3 = CSPLayer(2 * c3, c3, n, False, depthwise, act)
        self.bu_conv2 = conv3x3(c3, c3, 2, depthwise, act)
        self.C3_n3 = CSPLayer(2 * c3, c4, n, False, depthwise, act)
        self.bu_conv1 = conv3x3(c4, c4, 2, depthwise, act)
        self.C3_n4 = CSPLayer(2 * c4, c5, n, False, depthwise, act)
        self.out_channels = (c3, c4, c5)

    def forward(self, feats: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x3, x4, x5 = feats
        top5 = self.lateral_conv0(x5)
        f4 = self.C3_p4(torch.cat((self.up(top5), x4), 1))
        top4 = self.reduce_conv1(f4)
        p3 = self.C3_p3(torch.cat((self.up(top4), x3), 1))
        p4 = self.C3_n3(torch.cat((self.bu_conv2(p3), top4), 1))
        p5 = self.C3_n4(torch.cat((self.bu_conv1(p4), top5), 1))
        return p3, p4, p5
