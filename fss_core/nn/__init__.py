"""The inference graph: model cards, backbones, necks, decoupled head, decode, fusion, profiling."""

from fss_core.nn.card import ModelCard, available_cards, load_card
from fss_core.nn.decode import (
    box_channels,
    decode,
    decode_boxes,
    decode_for_inference,
    decode_rboxes,
    make_points,
    split_logits,
)
from fss_core.nn.detector import Detector, build_model
from fss_core.nn.fuse import fuse_conv_bn
from fss_core.nn.profile import count_flops, count_params

__all__ = ["ModelCard", "available_cards", "load_card", "box_channels", "decode", "decode_boxes", "decode_rboxes",
           "decode_for_inference", "split_logits", "make_points", "Detector", "build_model", "fuse_conv_bn",
           "count_flops", "count_params"]
