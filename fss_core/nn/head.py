"""Decoupled head: per pyramid level a 1×1 stem, then separate class and box/objectness branches."""

from __future__ import annotations

import math

import torch
from torch import nn

from fss_core.nn.blocks import ConvBNAct, conv3x3
from fss_core.nn.decode import ANGLE_BIAS

PRIOR_PROB = 0.01  # initial foreground probability of class and objectness logits (RetinaNet)


class DecoupledHead(nn.Module):
    """Maps each level's feature map to raw predictions.

    Output: (B, A, K + 1 + C) float — per point ``[tx, ty, tw, th, (tθ,) obj_logit, cls_logits…]`` (K = 4, or 5
    with ``box_channels=5`` for oriented boxes) with points ordered level by level, row-major within a level.
    :func:`fss_core.nn.decode.decode` turns this into boxes and probabilities. The output is the same in train and
    eval mode.
    """

    def __init__(self, num_classes: int, in_channels: tuple[int, ...], hidden: int,
                 depthwise: bool = False, act: str = "silu", box_channels: int = 4):
        super().__init__()
        self.num_classes = num_classes
        self.stems = nn.ModuleList(ConvBNAct(c, hidden, 1, act=act) for c in in_channels)
        self.cls_convs = nn.ModuleList(
            nn.Sequential(conv3x3(hidden, hidden, 1, depthwise, act), conv3x3(hidden, hidden, 1, depthwise, act))
            for _ in in_channels)
        self.reg_convs = nn.ModuleList(
            nn.Sequential(conv3x3(hidden, hidden, 1, depthwise, act), conv3x3(hidden, hidden, 1, depthwise, act))
            for _ in in_channels)
        self.cls_preds = nn.ModuleList(nn.Conv2d(hidden, num_classes, 1) for _ in in_channels)
        self.box_channels = box_channels
        self.reg_preds = nn.ModuleList(nn.Conv2d(hidden, box_channels, 1) for _ in in_channels)
        self.obj_preds = nn.ModuleList(nn.Conv2d(hidden, 1, 1) for _ in in_channels)
        self.reset_bias()

    def reset_bias(self) -> None:
        bias = -math.log((1 - PRIOR_PROB) / PRIOR_PROB)
        for conv in list(self.cls_preds) + list(self.obj_preds):
            nn.init.constant_(conv.bias, bias)
        if self.box_channels == 5:
            for conv in self.reg_preds:
                with torch.no_grad():
                    conv.bias[4] = ANGLE_BIAS

    def forward(self, feats: tuple[torch.Tensor, ...]) -> torch.Tensor:
        outputs = []
        for i, x in enumerate(feats):
            x = self.stems[i](x)
            cls_feat = self.cls_convs[i](x)
            reg_feat = self.reg_convs[i](x)
            out = torch.cat((self.reg_preds[i](reg_feat), self.obj_preds[i](reg_feat),
                             self.cls_preds[i](cls_feat)), dim=1)      # (B, K+1+C, H, W)
            outputs.append(out.flatten(2))                              # (B, K+1+C, H*W)
        return torch.cat(outputs, dim=2).permute(0, 2, 1).contiguous()  # (B, A, K+1+C)
