"""The deployed graph: fused network + decode, as one module with constant grid points."""

from __future__ import annotations

import torch
from torch import nn

from fss_core.nn import decode_for_inference, fuse_conv_bn
from fss_core.nn.detector import Detector


class InferenceGraph(nn.Module):
    """images (B, 3, H, W) float RGB [0, 1] -> detections (B, A, 4 + C): xyxy px, then cls·obj scores; an oriented
    model (card task obb): (B, A, 5 + C), cx cy w h θ (px, rad) then the scores.

    The same graph for every assigner: the assigner exists only at training time.
    """

    def __init__(self, model: Detector, height: int, width: int):
        super().__init__()
        self.net = fuse_conv_bn(model)
        points, strides = model.points(height, width)
        self.register_buffer("points", points, persistent=False)
        self.register_buffer("strides", strides, persistent=False)
        self.height, self.width = height, width
        self.task = model.card.task

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return decode_for_inference(self.net(images), self.points, self.strides, self.task)
