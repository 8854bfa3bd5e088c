"""Conv-BN folding for inference: each ConvBNAct becomes one biased conv + activation."""

from __future__ import annotations

import copy

import torch
from torch import nn

from fss_core.nn.blocks import ConvBNAct


def fold_bn_into_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A conv whose output equals bn(conv(x)) with the BN's running statistics."""
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                      conv.padding, conv.dilation, conv.groups, bias=True).to(conv.weight.device)
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)                       # (C_out,)
    fused.weight.data.copy_(conv.weight.data * scale[:, None, None, None])
    conv_bias = conv.bias.data if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused.bias.data.copy_((conv_bias - bn.running_mean) * scale + bn.bias.data)
    return fused


@torch.no_grad()
def fuse_conv_bn(model: nn.Module) -> nn.Module:
    """A fused copy of ``model`` in eval mode; the original is left untouched."""
    fused = copy.deepcopy(model).eval()
    for module in fused.modules():
        if isinstance(module, ConvBNAct) and isinstance(module.bn, nn.BatchNorm2d):
            module.conv = fold_bn_into_conv(module.conv, module.bn)
            module.bn = nn.Identity()
    return fused
