"""Feed-forward pieces: activations by config name and Kyutai's activation-gated MLP."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from .step_linear import add_linear

ACTIVATIONS = {
    "silu": nn.silu,
    "gelu": nn.gelu,  # exact (erf) GELU, as PyTorch's F.gelu
    "relu": nn.relu,
    "sigmoid": mx.sigmoid,
    "tanh": mx.tanh,
    "elu": nn.elu,
    "leaky_relu": nn.leaky_relu,
    "mish": nn.mish,
    "softsign": nn.softsign,
    "identity": lambda x: x,
}


def activation(name: str):
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unsupported activation {name!r}; expected one of {', '.join(ACTIVATIONS)}") from None


def gated_hidden_size(dim: int, dim_feedforward: int) -> int:
    """Hidden width of Kyutai's gated MLP: 21/8 * dim for the 4x default, else 2/3 * ff."""
    if dim_feedforward == 4 * dim:
        return (21 * dim) // 8
    return (2 * dim_feedforward) // 3


class GatedMLP(nn.Module):
    """`linear_in` produces [gate; up]; out = linear_out(act(gate) * up)."""

    def __init__(self, dim: int, dim_feedforward: int, act: str = "silu", bias: bool = False):
        super().__init__()
        hidden = gated_hidden_size(dim, dim_feedforward)
        self.act_name = act
        self._act = activation(act)
        self.linear_in = nn.Linear(dim, 2 * hidden, bias=bias)
        self.linear_out = nn.Linear(hidden, dim, bias=bias)

    def __call__(self, x: mx.array, residual: mx.array | None = None) -> mx.array:
        """linear_out(act(gate) * up), plus `residual` when given (one fused matmul-add
        where the layer allows, `step_linear.add_linear`)."""
        h = self.linear_in(x)
        gate, up = mx.split(h, 2, axis=-1)
        h = self._act(gate) * up
        return add_linear(self.linear_out, residual, h)
