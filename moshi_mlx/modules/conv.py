"""Causal 1-d convolutions on [B, T, C] arrays, each with a streaming `step` and a batch
twin (`__call__`) that give the same result.

Both are written as one matrix product (plus an im2col copy or an overlap-add) with the
weight stored in the product's natural row-major `[K, N]` layout: on MLX's CPU backend a
plain `a @ b` is the fastest BLAS orientation and `conv_transpose1d` is not routed through
BLAS at all, and keeping time before channels avoids any NCL<->NLC transposes.

Weight layouts (the loader converts the PyTorch ones):
- `StreamingConv1d.weight`: [kernel * in, out], row `j * in + c` is tap j, input channel c.
- `StreamingConvTranspose1d.weight`: [in, kernel * out] (dense) or [kernel, channels]
  (depthwise, groups == channels), column `j * out + o` is tap j, output channel o.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

PAD_MODES = ("constant", "replicate")


def elu(x: mx.array) -> mx.array:
    """ELU with alpha 1 (PyTorch's `nn.ELU()`), via expm1 for accuracy near 0."""
    return mx.where(x > 0, x, mx.expm1(mx.minimum(x, 0)))


class ELU(nn.Module):
    """Parameter-free module so SEANet's layer list keeps PyTorch's indices."""

    def __call__(self, x: mx.array) -> mx.array:
        return elu(x)

    def step(self, x: mx.array) -> mx.array:
        return elu(x)

    def reset(self) -> None:
        pass


class _CausalConv(nn.Module):
    """What both convolutions share: their sizes, the weight (its shape is the subclass's
    layout), the optional bias and the [B, T, in_channels] input check."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        weight_shape: tuple[int, int],
        bias: bool,
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.weight = mx.zeros(weight_shape)
        if bias:
            self.bias = mx.zeros((out_channels,))

    def _check(self, x: mx.array) -> None:
        if x.ndim != 3 or x.shape[-1] != self.in_channels:
            raise ValueError(f"expected [B, T, {self.in_channels}] input, got shape {tuple(x.shape)}")


class StreamingConv1d(_CausalConv):
    """Causal Conv1d: `(kernel - 1) * dilation + 1 - stride` samples of left padding
    (zeros, or the first sample repeated for `pad_mode="replicate"`).

    `step` keeps those samples from the previous call, so feeding a signal in chunks (each
    a multiple of `stride`) gives exactly the batch output.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        bias: bool = True,
        pad_mode: str = "constant",
    ):
        if pad_mode not in PAD_MODES:
            raise ValueError(f"unsupported pad_mode {pad_mode!r}; expected one of {', '.join(PAD_MODES)}")
        if min(in_channels, out_channels, kernel_size, stride, dilation) < 1:
            raise ValueError("channels, kernel_size, stride and dilation must be positive")
        weight_shape = (kernel_size * in_channels, out_channels)
        super().__init__(in_channels, out_channels, kernel_size, stride, weight_shape, bias)
        self.dilation = dilation
        self.pad_mode = pad_mode
        self.padding = max((kernel_size - 1) * dilation + 1 - stride, 0)
        self._prev: mx.array | None = None

    @property
    def carries_state(self) -> bool:
        """Whether `step` keeps samples for the next call (`_prev`): only a padded conv does."""
        return self.padding > 0

    def _check(self, x: mx.array) -> None:
        super()._check(x)
        if x.shape[1] % self.stride:
            raise ValueError(f"input length {x.shape[1]} is not a multiple of the stride {self.stride}")

    def _initial_pad(self, x: mx.array) -> mx.array:
        B, _, C = x.shape
        if self.pad_mode == "replicate":
            return mx.broadcast_to(x[:, :1], (B, self.padding, C))
        return mx.zeros((B, self.padding, C), dtype=x.dtype)

    def _apply(self, xp: mx.array) -> mx.array:
        """Convolve an already left-padded input (no further padding)."""
        B, L, C = xp.shape
        k, s, d = self.kernel_size, self.stride, self.dilation
        t_out = (L - (k - 1) * d - 1) // s + 1
        if k == 1 and s == 1:
            cols = xp
        else:
            xp = mx.contiguous(xp)
            cols = mx.as_strided(xp, (B, t_out, k, C), (L * C, s * C, d * C, 1)).reshape(B, t_out, k * C)
        if "bias" in self:
            return mx.addmm(self.bias, cols, self.weight)
        return cols @ self.weight

    def __call__(self, x: mx.array) -> mx.array:
        """Whole signal at once (a fresh stream): [B, T, in] -> [B, T / stride, out]."""
        self._check(x)
        if self.padding:
            x = mx.concatenate([self._initial_pad(x), x], axis=1)
        return self._apply(x)

    def step(self, x: mx.array) -> mx.array:
        """Next chunk of the stream; the chunk's length must be a multiple of the stride."""
        self._check(x)
        if not self.padding:
            return self._apply(x)
        prev = self._prev
        if prev is None or prev.shape[0] != x.shape[0]:
            prev = self._initial_pad(x)
        xp = mx.concatenate([prev, x], axis=1)
        self._prev = xp[:, xp.shape[1] - self.padding :]
        return self._apply(xp)

    def reset(self) -> None:
        self._prev = None


class StreamingConvTranspose1d(_CausalConv):
    """Causal ConvTranspose1d: the last `kernel - stride` output samples of a call overlap
    the next call's first ones, so `step` keeps them (without bias) and adds them there;
    the batch twin drops them, as PyTorch's causal convtr trims them on the right.

    `groups` is 1 (dense) or equal to the channel count (depthwise).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
        bias: bool = True,
    ):
        if kernel_size < stride:
            raise ValueError(f"kernel_size {kernel_size} must be at least the stride {stride}")
        if groups not in (1, in_channels) or (groups > 1 and in_channels != out_channels):
            raise ValueError("ConvTranspose1d supports groups=1 or depthwise (groups == in == out channels)")
        depthwise = groups > 1
        weight_shape = (kernel_size, out_channels) if depthwise else (in_channels, kernel_size * out_channels)
        super().__init__(in_channels, out_channels, kernel_size, stride, weight_shape, bias)
        self.depthwise = depthwise
        self.groups = groups
        # taps are grouped in blocks of `stride`; block m lands m input frames later
        self.blocks = -(-kernel_size // stride)
        self._carry: mx.array | None = None

    @property
    def carries_state(self) -> bool:
        """Whether `step` keeps overlapping samples for the next call (`_carry`)."""
        return self.blocks > 1

    def _blocks(self, x: mx.array) -> mx.array:
        """Per-input-frame contributions, [B, T, blocks, stride, out]."""
        B, T, _ = x.shape
        k, s, n, C = self.kernel_size, self.stride, self.blocks, self.out_channels
        if self.depthwise:
            w = self.weight
            if n * s != k:
                w = mx.concatenate([w, mx.zeros((n * s - k, C), dtype=w.dtype)], axis=0)
            return (x[:, :, None, :] * w).reshape(B, T, n, s, C)
        y = (x @ self.weight).reshape(B, T, k, C)
        if n * s != k:
            y = mx.concatenate([y, mx.zeros((B, T, n * s - k, C), dtype=y.dtype)], axis=2)
        return y.reshape(B, T, n, s, C)

    def _overlap_add(self, x: mx.array, carry: mx.array | None) -> tuple[mx.array, mx.array | None]:
        """Returns (output [B, T * stride, out] with bias, new carry [B, blocks-1, stride, out])."""
        B, T, _ = x.shape
        n, s, C = self.blocks, self.stride, self.out_channels
        parts = self._blocks(x)
        # block m of input frame t lands in output frame t + m
        full = None
        for m in range(n):
            p = parts[:, :, m]
            if n > 1:
                p = mx.pad(p, [(0, 0), (m, n - 1 - m), (0, 0), (0, 0)])
            full = p if full is None else full + p
        if n > 1 and carry is not None:
            full = mx.concatenate([full[:, : n - 1] + carry, full[:, n - 1 :]], axis=1)
        out = full[:, :T].reshape(B, T * s, C)
        new_carry = full[:, T:] if n > 1 else None
        if "bias" in self:
            out = out + self.bias
        return out, new_carry

    def __call__(self, x: mx.array) -> mx.array:
        """Whole signal at once: [B, T, in] -> [B, T * stride, out]."""
        self._check(x)
        return self._overlap_add(x, None)[0]

    def step(self, x: mx.array) -> mx.array:
        self._check(x)
        carry = self._carry
        if carry is not None and carry.shape[0] != x.shape[0]:
            carry = None
        out, self._carry = self._overlap_add(x, carry)
        return out

    def reset(self) -> None:
        self._carry = None
