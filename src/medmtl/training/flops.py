"""FLOPs of a network's steps, counted by ``torch.utils.flop_counter`` with one correction.

torch's formula for a convolution's backward counts the weight gradient as if the convolution
had one group: for a depthwise convolution (every EfficientNet and MobileNet block) that is
``groups`` times too many (a training step of Unet + EfficientNet-b0 came out at 9.6x its
forward instead of about 3x). The weight gradient multiplies exactly the pairs the forward
multiplied, so it costs the forward's FLOPs; the input gradient's formula is right as it is.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count, get_shape


def _conv_backward_flop(
    grad_out_shape: list[int],
    x_shape: list[int],
    w_shape: list[int],
    _bias: Any,
    _stride: Any,
    _padding: Any,
    _dilation: Any,
    transposed: bool,
    _output_padding: Any,
    _groups: Any,
    output_mask: list[bool],
    out_shape: Any,
    **kwargs: Any,
) -> int:
    flops = 0
    if output_mask[0]:  # grad_input: a transposed convolution of grad_out with the weight
        flops += conv_flop_count(grad_out_shape, w_shape, get_shape(out_shape[0]), not transposed)
    if output_mask[1]:  # grad_weight: the forward's multiplications, once each
        flops += conv_flop_count(x_shape, w_shape, grad_out_shape, transposed)
    return flops


def flop_counter() -> FlopCounterMode:
    """A ``FlopCounterMode`` (2 FLOPs per multiply-add; matrix products, convolutions and
    attention) with the convolution backward counted right for grouped convolutions."""
    return FlopCounterMode(
        display=False,
        custom_mapping={torch.ops.aten.convolution_backward: _conv_backward_flop},
    )
