"""SEANet encoder/decoder (causal, streaming) on [B, T, C] arrays.

The layer lists keep PyTorch's indices (`model.3` is the first strided conv, ELUs are
parameter-free entries), so checkpoint keys map by stripping wrapper names only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import mlx.core as mx
import mlx.nn as nn

from .conv import ELU, StreamingConv1d, StreamingConvTranspose1d


@dataclass
class SeanetConfig:
    """Field names follow Kyutai's `seanet` config dict."""

    channels: int = 1
    dimension: int = 512
    n_filters: int = 64
    n_residual_layers: int = 1
    ratios: list[int] = field(default_factory=lambda: [8, 6, 5, 4])  # decoder order
    kernel_size: int = 7
    last_kernel_size: int = 3
    residual_kernel_size: int = 3
    dilation_base: int = 2
    compress: int = 2
    true_skip: bool = True
    pad_mode: str = "constant"

    @property
    def hop_length(self) -> int:
        h = 1
        for r in self.ratios:
            h *= r
        return h


class SeanetResBlock(nn.Module):
    """x + conv_k1(elu(conv_k(elu(x)))) ; a 1x1 conv replaces the identity if not true_skip."""

    def __init__(self, dim: int, cfg: SeanetConfig, dilation: int):
        super().__init__()
        hidden = dim // cfg.compress
        self.block = [
            ELU(),
            StreamingConv1d(dim, hidden, cfg.residual_kernel_size, dilation=dilation, pad_mode=cfg.pad_mode),
            ELU(),
            StreamingConv1d(hidden, dim, 1, pad_mode=cfg.pad_mode),
        ]
        self.true_skip = cfg.true_skip
        if not cfg.true_skip:
            self.shortcut = StreamingConv1d(dim, dim, 1, pad_mode=cfg.pad_mode)

    def __call__(self, x: mx.array) -> mx.array:
        y = x
        for layer in self.block:
            y = layer(y)
        return (x if self.true_skip else self.shortcut(x)) + y

    def step(self, x: mx.array) -> mx.array:
        y = x
        for layer in self.block:
            y = layer.step(y)
        return (x if self.true_skip else self.shortcut.step(x)) + y

    def reset(self) -> None:
        for layer in self.block:
            layer.reset()
        if not self.true_skip:
            self.shortcut.reset()


class _Sequential(nn.Module):
    def __call__(self, x: mx.array) -> mx.array:
        for layer in self.model:
            x = layer(x)
        return x

    def step(self, x: mx.array) -> mx.array:
        for layer in self.model:
            x = layer.step(x)
        return x

    def reset(self) -> None:
        for layer in self.model:
            layer.reset()


class SeanetEncoder(_Sequential):
    """[B, T, channels] at the sample rate -> [B, T / hop, dimension]."""

    def __init__(self, cfg: SeanetConfig):
        super().__init__()
        self.cfg = cfg
        pm = cfg.pad_mode
        mult = 1
        model: list[nn.Module] = [StreamingConv1d(cfg.channels, cfg.n_filters, cfg.kernel_size, pad_mode=pm)]
        for ratio in reversed(cfg.ratios):
            dim = mult * cfg.n_filters
            for j in range(cfg.n_residual_layers):
                model.append(SeanetResBlock(dim, cfg, cfg.dilation_base**j))
            model += [ELU(), StreamingConv1d(dim, 2 * dim, 2 * ratio, stride=ratio, pad_mode=pm)]
            mult *= 2
        model += [ELU(), StreamingConv1d(mult * cfg.n_filters, cfg.dimension, cfg.last_kernel_size, pad_mode=pm)]
        self.model = model


class SeanetDecoder(_Sequential):
    """[B, T, dimension] -> [B, T * hop, channels]."""

    def __init__(self, cfg: SeanetConfig):
        super().__init__()
        self.cfg = cfg
        pm = cfg.pad_mode
        mult = 2 ** len(cfg.ratios)
        model: list[nn.Module] = [StreamingConv1d(cfg.dimension, mult * cfg.n_filters, cfg.kernel_size, pad_mode=pm)]
        for ratio in cfg.ratios:
            dim = mult * cfg.n_filters
            model += [ELU(), StreamingConvTranspose1d(dim, dim // 2, 2 * ratio, stride=ratio)]
            for j in range(cfg.n_residual_layers):
                model.append(SeanetResBlock(dim // 2, cfg, cfg.dilation_base**j))
            mult //= 2
        model += [ELU(), StreamingConv1d(cfg.n_filters, cfg.channels, cfg.last_kernel_size, pad_mode=pm)]
        self.model = model
