"""The detector: backbone -> neck -> decoupled head, built from a :class:`ModelCard`."""

from __future__ import annotations

import torch
from torch import nn

from fss_core.nn.card import ModelCard
from fss_core.nn.darknet import PAFPN, CSPDarknet
from fss_core.nn.decode import box_channels, make_points
from fss_core.nn.head import DecoupledHead
from fss_core.nn.resnet import FPN, ResNet


class Detector(nn.Module):
    """images (B, 3, H, W) float in [0, 1], RGB -> raw predictions (B, A, K + 1 + C) (K = 4, or 5 for ``task: obb``).

    H and W must be multiples of 32. The return value is the same in train and eval mode;
    :func:`fss_core.nn.decode.decode` interprets it, with :meth:`points` for the grid.
    """

    def __init__(self, card: ModelCard):
        super().__init__()
        self.card = card
        if card.backbone == "cspdarknet":
            self.backbone = CSPDarknet(card.depth, card.width, card.depthwise, card.act)
            self.neck = PAFPN(self.backbone.out_channels, card.depth, card.depthwise, card.act)
            hidden = card.head_channels or int(256 * card.width)
        else:
            self.backbone = ResNet(card.resnet_depth)
            self.neck = FPN(self.backbone.out_channels, card.neck_channels)
            hidden = card.head_channels or card.neck_channels
        self.head = DecoupledHead(card.num_classes, self.neck.out_channels, hidden, card.depthwise, card.act,
                                  box_channels(card.task))
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eps = card.bn_eps
        if card.input_mean is not None:           # constants of the graph, not weights: never in the state dict
            self.register_buffer("input_mean", torch.tensor(card.input_mean).view(1, 3, 1, 1), persistent=False)
            self.register_buffer("input_std", torch.tensor(card.input_std).view(1, 3, 1, 1), persistent=False)

    @property
    def strides(self) -> tuple[int, ...]:
        return self.card.strides

    def points(self, height: int, width: int, device: torch.device | str = "cpu"):
        """(points (A, 2), strides (A,)) for an input of height × width pixels."""
        return make_points(height, width, self.card.strides, device)

    def forward_features(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.card.input_mean is not None:
            images = (images - self.input_mean) / self.input_std
        return self.neck(self.backbone(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(images))


def build_model(card: ModelCard) -> Detector:
    return Detector(card)
