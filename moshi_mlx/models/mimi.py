"""Mimi, Kyutai's streaming neural audio codec: 24 kHz mono <-> 12.5 Hz codes.

    pcm [B, 1, T] -> SEANet encoder (25 Hz) -> transformer -> learnt stride-2 downsample
        -> split RVQ -> codes [B, K, T / 1920]
    codes -> RVQ decode -> depthwise transposed upsample -> transformer -> SEANet decoder

Everything runs on [B, T, C] arrays inside. `encode`/`decode` see a whole clip at once
(a fresh stream); `encode_step`/`decode_step` continue the codec's own stream, any whole
number of frames per call, and give exactly the batch result; `reset()` starts over.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ..errors import AudioError, UsageError
from ..modules.conv import StreamingConv1d, StreamingConvTranspose1d
from ..modules.quantization import SplitResidualVectorQuantizer
from ..modules.seanet import SeanetDecoder, SeanetEncoder
from ..modules.transformer import Transformer, TransformerConfig
from ..validation import float_pcm
from .mimi_config import MimiConfig, MimiTransformerConfig, QuantizerConfig, mimi_202407
from .backend import prepare_mimi
from .mimi_step import CompiledStream

# batch calls on longer inputs run as a private stream in chunks of this many frames: the
# same result (streaming is exact), bounded memory instead of T x T attention
BATCH_CHUNK_FRAMES = 64
_STATE_ATTRS = ("_prev", "_carry", "_cache")

__all__ = ["Mimi", "MimiConfig", "MimiTransformerConfig", "QuantizerConfig", "mimi_202407"]


class ProjectedTransformer(nn.Module):
    """The shared streaming transformer with optional in/out projections (Kyutai's names)."""

    def __init__(self, cfg: MimiTransformerConfig):
        super().__init__()
        self.transformer = Transformer(
            TransformerConfig(
                d_model=cfg.d_model,
                num_heads=cfg.num_heads,
                num_layers=cfg.num_layers,
                dim_feedforward=cfg.dim_feedforward,
                causal=True,
                context=cfg.context,
                max_period=cfg.max_period,
                positional_embedding=cfg.positional_embedding,
                norm=cfg.norm,
                gating=cfg.gating,
                activation="gelu",  # exact (erf) GELU, as the PyTorch reference
                layer_scale=cfg.layer_scale,
            )
        )
        if cfg.input_dimension != cfg.d_model:
            self.input_proj = nn.Linear(cfg.input_dimension, cfg.d_model, bias=False)
        if cfg.output_dimension != cfg.d_model:
            self.output_proj = nn.Linear(cfg.d_model, cfg.output_dimension, bias=False)
        self._cache = None

    def _run(self, x: mx.array, cache) -> mx.array:
        if "input_proj" in self:
            x = self.input_proj(x)
        x = self.transformer(x, cache)
        if "output_proj" in self:
            x = self.output_proj(x)
        return x

    def __call__(self, x: mx.array) -> mx.array:
        return self._run(x, None)

    def step(self, x: mx.array) -> mx.array:
        if self._cache is None:
            self._cache = self.transformer.make_cache()
        return self._run(x, self._cache)

    def reset(self) -> None:
        if self._cache is not None:
            for c in self._cache:
                c.reset()

    def state(self) -> list[mx.array]:
        return [a for c in (self._cache or []) for a in c.state]


class Mimi(nn.Module):
    def __init__(self, cfg: MimiConfig | None = None, num_codebooks: int | None = None):
        super().__init__()
        cfg = cfg or mimi_202407()
        self.cfg = cfg
        d = cfg.seanet.dimension
        q: QuantizerConfig = cfg.quantizer
        self.encoder = SeanetEncoder(cfg.seanet)
        self.decoder = SeanetDecoder(cfg.seanet)
        self.encoder_transformer = ProjectedTransformer(cfg.transformer)
        self.decoder_transformer = ProjectedTransformer(cfg.transformer)
        s = cfg.resample_stride
        if s > 1:
            self.downsample = _Downsample(d, s)
            self.upsample = _Upsample(d, s)
        self.quantizer = SplitResidualVectorQuantizer(
            q.dimension, q.input_dimension, q.output_dimension, q.n_q, q.n_q_semantic, q.bins
        )
        self._batch_size: dict[str, int | None] = {"encoder": None, "decoder": None}
        self.num_codebooks = num_codebooks if num_codebooks is not None else q.n_q
        self._compiled: dict[str, CompiledStream] | None = None
        prepare_mimi(self)  # the backend's format: compiled streaming steps on a GPU

    # ---- compute format ---------------------------------------------------------------------

    @property
    def compiled_step(self) -> bool:
        """Whether streaming steps run as compiled fixed-shape functions (models/mimi_step.py;
        the accelerator path, chosen by `models.backend.prepare_mimi`)."""
        return self._compiled is not None

    @compiled_step.setter
    def compiled_step(self, on: bool) -> None:
        if not on:
            self._compiled = None
            return
        if self._compiled is None:
            hop = int(np.prod(self.cfg.seanet.ratios))
            stride = self.cfg.resample_stride
            self._compiled = {
                "encoder": CompiledStream(
                    self._encoder_parts(), [self.encoder_transformer], self._encode_body, lambda x: x.shape[1] // hop
                ),
                "decoder": CompiledStream(
                    self._decoder_parts(), [self.decoder_transformer], self._decode_body, lambda c: c.shape[1] * stride
                ),
            }

    # ---- properties ------------------------------------------------------------------------

    @property
    def sample_rate(self) -> int:
        return self.cfg.sample_rate

    @property
    def frame_rate(self) -> float:
        return self.cfg.frame_rate

    @property
    def frame_size(self) -> int:
        return self.cfg.frame_size

    @property
    def cardinality(self) -> int:
        return self.cfg.quantizer.bins

    @property
    def total_codebooks(self) -> int:
        return self.cfg.quantizer.n_q

    @property
    def num_codebooks(self) -> int:
        return self.quantizer.num_codebooks

    @num_codebooks.setter
    def num_codebooks(self, n: int) -> None:
        self.quantizer.set_num_codebooks(int(n))

    # ---- batch (a whole clip = a fresh stream) ---------------------------------------------

    def encode(self, pcm) -> mx.array:
        """pcm [B, 1, T] float (24 kHz) -> int32 codes [B, K, ceil(T / frame_size)].

        The clip is zero-padded on the right to whole frames, as the reference does. Long
        clips run through a private stream in chunks (same result, bounded memory)."""
        x = self._pcm(pcm, whole_frames=False)
        T = x.shape[1]
        if T == 0:
            raise UsageError("cannot encode an empty signal")
        pad = -T % self.frame_size
        if pad:
            x = mx.pad(x, [(0, 0), (0, pad), (0, 0)])
        frames = x.shape[1] // self.frame_size
        if frames <= BATCH_CHUNK_FRAMES:
            emb = self.encoder(x)
            emb = self.encoder_transformer(emb)
            if "downsample" in self:
                emb = self.downsample(emb)
            return self.quantizer.encode(emb).transpose(0, 2, 1)
        n = BATCH_CHUNK_FRAMES * self.frame_size
        with self._private_stream(self._encoder_parts()):
            return mx.concatenate([self._encode_stream(x[:, i : i + n]) for i in range(0, x.shape[1], n)], axis=2)

    def decode(self, codes) -> mx.array:
        """codes [B, K, F] -> pcm [B, 1, F * frame_size] float32 (long inputs in chunks)."""
        c = self._codes(codes)
        if c.shape[1] <= BATCH_CHUNK_FRAMES:
            emb = self.quantizer.decode(c)
            if "upsample" in self:
                emb = self.upsample(emb)
            emb = self.decoder_transformer(emb)
            return self.decoder(emb).transpose(0, 2, 1)
        n = BATCH_CHUNK_FRAMES
        with self._private_stream(self._decoder_parts()):
            return mx.concatenate([self._decode_stream(c[:, i : i + n]) for i in range(0, c.shape[1], n)], axis=2)

    # ---- streaming -------------------------------------------------------------------------

    def encode_step(self, frame) -> mx.array:
        """frame [B, 1, n * frame_size] -> codes [B, K, n], continuing the encoder's stream."""
        x = self._pcm(frame, whole_frames=True)
        self._check_batch("encoder", x.shape[0])
        return self._encode_stream(x)

    def decode_step(self, codes) -> mx.array:
        """codes [B, K, n] -> pcm [B, 1, n * frame_size], continuing the decoder's stream."""
        c = self._codes(codes)
        self._check_batch("decoder", c.shape[0])
        return self._decode_stream(c)

    def _encode_body(self, x: mx.array) -> mx.array:
        emb = self.encoder.step(x)
        emb = self.encoder_transformer.step(emb)
        if "downsample" in self:
            emb = self.downsample.step(emb)
        return self.quantizer.encode(emb).transpose(0, 2, 1)

    def _decode_body(self, c: mx.array) -> mx.array:
        emb = self.quantizer.decode(c)
        if "upsample" in self:
            emb = self.upsample.step(emb)
        emb = self.decoder_transformer.step(emb)
        return self.decoder.step(emb).transpose(0, 2, 1)

    def _encode_stream(self, x: mx.array) -> mx.array:
        codes = self._compiled["encoder"](x) if self._compiled else self._encode_body(x)
        mx.eval(codes, self._state(self._encoder_parts()))
        return codes

    def _decode_stream(self, c: mx.array) -> mx.array:
        """c: validated codes [B, n, K]."""
        out = self._compiled["decoder"](c) if self._compiled else self._decode_body(c)
        mx.eval(out, self._state(self._decoder_parts()))
        return out

    @contextmanager
    def _private_stream(self, parts: list[nn.Module]):
        """Run a fresh stream through `parts`, then put the caller's stream state back."""
        saved = []
        for part in parts:
            for _, m in part.named_modules():
                for attr in _STATE_ATTRS:  # (arrays live in the Module dict, None in __dict__)
                    if hasattr(m, attr):
                        saved.append((m, attr, getattr(m, attr)))
                        setattr(m, attr, None)
        try:
            yield
        finally:
            for m, attr, value in saved:
                setattr(m, attr, value)

    def reset(self) -> None:
        """Start new streams (both directions)."""
        self.reset_encoder()
        self.reset_decoder()

    def reset_encoder(self) -> None:
        for part in self._encoder_parts():
            part.reset()
        self._batch_size["encoder"] = None

    def reset_decoder(self) -> None:
        for part in self._decoder_parts():
            part.reset()
        self._batch_size["decoder"] = None

    # ---- helpers ---------------------------------------------------------------------------

    def _encoder_parts(self) -> list[nn.Module]:
        parts = [self.encoder, self.encoder_transformer]
        return parts + ([self.downsample] if "downsample" in self else [])

    def _decoder_parts(self) -> list[nn.Module]:
        parts = [self.decoder, self.decoder_transformer]
        return parts + ([self.upsample] if "upsample" in self else [])

    @staticmethod
    def _state(parts: list[nn.Module]) -> list[mx.array]:
        out: list[mx.array] = []
        for part in parts:
            for _, m in part.named_modules():
                for attr in ("_prev", "_carry"):
                    a = getattr(m, attr, None)
                    if a is not None:
                        out.append(a)
                if isinstance(m, ProjectedTransformer):
                    out += m.state()
        return out

    def _check_batch(self, which: str, b: int) -> None:
        known = self._batch_size[which]
        if known is not None and known != b:
            raise UsageError(f"the {which} stream was started with batch size {known}, got {b}; call reset() first")
        self._batch_size[which] = b

    def _pcm(self, pcm, whole_frames: bool) -> mx.array:
        x = _mx_pcm(pcm)
        if x.ndim != 3 or x.shape[1] != 1:
            raise UsageError(f"expected pcm of shape [B, 1, T] (mono), got {tuple(x.shape)}")
        if whole_frames and (x.shape[2] == 0 or x.shape[2] % self.frame_size):
            raise UsageError(
                f"streaming input must be a positive multiple of {self.frame_size} samples, got {x.shape[2]}"
            )
        if x.dtype != mx.float32:
            x = x.astype(mx.float32)
        return x.reshape(x.shape[0], x.shape[2], 1)  # [B, 1, T] -> [B, T, 1]: no data movement

    def _codes(self, codes) -> mx.array:
        arr = np.asarray(codes) if not isinstance(codes, mx.array) else None
        c = codes if arr is None else mx.array(arr)
        if c.ndim != 3:
            raise UsageError(f"expected codes of shape [B, K, T], got {tuple(c.shape)}")
        k = c.shape[1]
        if not self.quantizer.n_q_semantic <= k <= self.total_codebooks:
            raise UsageError(
                f"expected between {self.quantizer.n_q_semantic} and {self.total_codebooks} codebooks, got {k}"
            )
        if mx.issubdtype(c.dtype, mx.floating) or c.dtype == mx.bool_:
            raise UsageError(f"codes must be integers, got {c.dtype}")
        if c.size:
            lo, hi = (int(v) for v in (mx.min(c), mx.max(c)))
            if lo < 0 or hi >= self.cardinality:
                raise UsageError(f"codes must be in [0, {self.cardinality}), got values in [{lo}, {hi}]")
        return c.astype(mx.int32).transpose(0, 2, 1)


def _mx_pcm(pcm) -> mx.array:
    """Samples as float32: integer PCM scaled (int16 32767 -> ~1.0), NaN/inf refused."""
    if isinstance(pcm, mx.array):
        if mx.issubdtype(pcm.dtype, mx.floating):
            if pcm.size and not bool(mx.all(mx.isfinite(pcm)).item()):
                raise AudioError("pcm: samples are NaN or infinite")
            return pcm
        pcm = np.array(pcm)
    return mx.array(float_pcm("pcm", pcm))


class _Downsample(nn.Module):
    """Learnt causal stride-s conv (kernel 2s), replicate (edge) padding, no bias."""

    def __init__(self, dim: int, stride: int):
        super().__init__()
        self.conv = StreamingConv1d(dim, dim, 2 * stride, stride=stride, bias=False, pad_mode="replicate")

    def __call__(self, x):
        return self.conv(x)

    def step(self, x):
        return self.conv.step(x)

    def reset(self):
        self.conv.reset()


class _Upsample(nn.Module):
    """Learnt causal depthwise transposed conv (kernel 2s, stride s), no bias."""

    def __init__(self, dim: int, stride: int):
        super().__init__()
        self.convtr = StreamingConvTranspose1d(dim, dim, 2 * stride, stride=stride, groups=dim, bias=False)

    def __call__(self, x):
        return self.convtr(x)

    def step(self, x):
        return self.convtr.step(x)

    def reset(self):
        self.convtr.reset()


def iter_frames(pcm: np.ndarray, frame_size: int, frames_per_chunk: int) -> Iterator[np.ndarray]:
    """Split [B, 1, T] into chunks of whole frames (the last zero-padded)."""
    T = pcm.shape[-1]
    chunk = frame_size * frames_per_chunk
    for start in range(0, max(T, 1), chunk):
        piece = pcm[..., start : start + chunk]
        n = -(-piece.shape[-1] // frame_size) * frame_size
        if n != piece.shape[-1]:
            piece = np.pad(piece, [(0, 0)] * (piece.ndim - 1) + [(0, n - piece.shape[-1])])
        yield piece


def best_backend() -> str:
    """The Mimi backend a live loop should use here: MLX on a GPU (Metal/CUDA); on a CPU,
    rustymimi when it is installed, because MLX's CPU matmuls (a reference BLAS in the Linux
    wheel) make the MLX codec slower than rustymimi there (README, "Mimi speed"); else MLX."""
    if mx.default_device().type == mx.DeviceType.gpu:
        return "mlx"
    from .mimi_rust import rustymimi_available

    return "rustymimi" if rustymimi_available() else "mlx"
