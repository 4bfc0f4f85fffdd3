"""``ChannelClip``: ReLU6 with one upper bound per channel, what cross-layer equalization turns a ReLU6 into.

ReLU6 is not positively homogeneous (``min(s x, 6) != s min(x, 6)``), but scaling its parameter along with its input
keeps the equivariance: ``min(relu(x / s), 6 / s) = min(relu(x), 6) / s`` (white paper Sec. 3.2). After CLE scaled
channel ``i`` of the preceding layer by ``1 / s_i`` the clip becomes ``[0, 6 / s_i]``, a different bound per channel.

It lives here rather than in ``bench.ptq.cle`` because the graph pass (``bench.quant.insert``) has to know it as an
activation, and the quantization core must not depend on the PTQ methods built on top of it.

``torch.fx``'s default tracer keeps only modules defined under ``torch.nn`` as leaf call_module nodes: re-tracing an
equalised model would dissolve a ``ChannelClip`` into ``relu`` / ``minimum`` nodes. Classes with ``fx_leaf = True``
stay one node in ``bench.models.graph.trace`` (which ``prepare`` runs).
"""

from __future__ import annotations

import torch
from torch import nn


class ChannelClip(nn.Module):
    """``min(relu(x), upper[c])`` per channel ``c`` (axis 1), ``upper`` a buffer.

    A leaf call_module for ``bench.models.graph.trace``; a tracer that goes inside (or export) sees two elementwise
    ops and no data-dependent control flow.
    """

    fx_leaf = True
    upper: torch.Tensor

    def __init__(self, num_channels: int, upper: float = 6.0) -> None:
        super().__init__()
        self.register_buffer("upper", torch.full((num_channels,), float(upper)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (N, C) for the input of a linear layer, (N, C, H, W) for a conv: broadcast upper along axis 1
        shape = [1, -1] + [1] * (x.dim() - 2)
        return torch.minimum(torch.relu(x), self.upper.view(shape))

    def extra_repr(self) -> str:
        return f"num_channels={self.upper.numel()}"
