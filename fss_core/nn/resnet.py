"""ResNet-50/101 backbone and FPN neck (the paper's second instantiation: ResNet + FPN + decoupled head).

No pretrained weights are downloaded; ``fss convert resnet50.pth --model fss-r50`` turns torchvision-layout ImageNet
weights into this backbone (fss_core/foreign_weights.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fss_core.nn.blocks import ConvBNAct

RESNET_LAYERS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


class ResBottleneck(nn.Module):
    """1×1 reduce, 3×3 (stride here, as in ResNet v1.5), 1×1 expand ×4, residual add, ReLU."""

    expansion = 4

    def __init__(self, c_in: int, planes: int, stride: int):
        super().__init__()
        c_out = planes * self.expansion
        self.conv1 = ConvBNAct(c_in, planes, 1, act="relu")
        self.conv2 = ConvBNAct(planes, planes, 3, stride, act="relu")
        self.conv3 = ConvBNAct(planes, c_out, 1, act="none")
        self.downsample = ConvBNAct(c_in, c_out, 1, stride, act="none") if stride != 1 or c_in != c_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(self.conv3(self.conv2(self.conv1(x))) + identity)


class ResNet(nn.Module):
    """Returns C3, C4, C5 (strides 8, 16, 32; 512, 1024, 2048 channels)."""

    def __init__(self, depth: int):
        super().__init__()
        if depth not in RESNET_LAYERS:
            raise ValueError(f"resnet_depth must be one of {sorted(RESNET_LAYERS)}, got {depth}")
        self.stem = nn.Sequential(ConvBNAct(3, 64, 7, 2, act="relu"), nn.MaxPool2d(3, 2, 1))
        c_in, stages = 64, []
        for i, blocks in enumerate(RESNET_LAYERS[depth]):
            planes = 64 * 2**i
            layers = []
            for b in range(blocks):
                layers.append(ResBottleneck(c_in, planes, 2 if (b == 0 and i > 0) else 1))
                c_in = planes * ResBottleneck.expansion
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.out_channels = (512, 1024, 2048)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c2 = self.layer1(self.stem(x))
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return c3, c4, c5


class FPN(nn.Module):
    """Lateral 1×1 convs, top-down nearest upsampling with addition, 3×3 output convs."""

    def __init__(self, in_channels: tuple[int, int, int], channels: int = 256):
        super().__init__()
        self.lateral = nn.ModuleList(ConvBNAct(c, channels, 1, act="none") for c in in_channels)
        self.output = nn.ModuleList(ConvBNAct(channels, channels, 3, act="relu") for _ in in_channels)
        self.out_channels = (channels,) * len(in_channels)

    def forward(self, feats: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        lat = [conv(f) for conv, f in zip(self.lateral, feats)]
        for i in range(len(lat) - 2, -1, -1):
            lat[i] = lat[i] + F.interpolate(lat[i + 1], size=lat[i].shape[-2:], mode="nearest")
        return tuple(conv(x) for conv, x in zip(self.output, lat))
