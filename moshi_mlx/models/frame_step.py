"""The LM frame step as two compiled, fixed-shape functions (the accelerator path).

On a GPU a step of Moshi 7B streams its weights in a few milliseconds; what costs is the
per-operation overhead: building thousands of graph nodes in Python and launching as
many small kernels. `mx.compile` traces each function once and replays it: the graph is
rebuilt by C++, and chains of elementwise ops become single fused kernels. A trace needs
fixed shapes and no Python state, so:

- temporal: (tokens, position, slot, mask, text PRNG key, ring buffers...) -> (hidden,
  guided text logits, text token, updated ring buffers...). Activations are [B, dim],
  one position per row (a matmul of a [B, 1, dim] input adds a flatten and an unflatten
  node), and Linears are `StepLinear`s (no transpose node). The position is an array
  (RoPE takes it as one), the KV rings are updated in place at an array slot
  (`modules.kv_cache.RingStep`), and attention covers a power-of-two bucket of slots, so
  a conversation traces a handful of shapes at most (64, 128, ..., the context);
- depformer: (hidden, text token, a key per codebook) -> (audio tokens, guided logits
  per codebook). Its cache starts empty at every frame, so the whole frame is one trace.

Same modules, same arithmetic order and the same PRNG key sequence as the eager step
(`LmGen._run`), so both give the same tokens; `models.backend.prepare_lm` decides which
one a model uses.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import mlx.core as mx
import numpy as np

from ..modules.kv_cache import FrameCache, RingStep, ring_bucket, ring_mask
from ..modules.norm import prime_norm_weights
from ..modules.parallel import use_step_linears
from .sampling import is_greedy

if TYPE_CHECKING:  # pragma: no cover
    from .generate import LmGen


def compiled_step_supported(lm) -> str | None:
    """None if the compiled step can run this model, else why not."""
    cfg = lm.cfg
    if cfg.context is None:
        return "the temporal transformer has no context window (an unbounded cache has no fixed shape)"
    if not cfg.causal:
        return "the temporal transformer is not causal"
    return None


class CompiledFrame:
    """The compiled temporal and depformer functions of one `LmGen` (its samplers, CFG and
    condition are part of the trace)."""

    def __init__(self, gen: "LmGen"):
        self.gen = gen
        lm = gen.lm
        prime_norm_weights(lm, gen.dtype)
        use_step_linears(lm)
        # the condition as rows [B, dim] in the activation dtype, made once
        self._cond = None if gen._cond is None else gen._cond[:, 0].astype(gen.dtype)
        if self._cond is not None:
            mx.eval(self._cond)
        self.context = lm.cfg.context
        self._per_thread: dict[int, tuple] = {}

    def _compiled(self) -> tuple:
        """This thread's compiled functions: a trace records the streams of the thread that
        made it (the live loop steps from a worker thread), so each thread traces its own."""
        fns = self._per_thread.get(threading.get_ident())
        if fns is None:
            fns = (mx.compile(lambda *a: self._temporal(*a)), mx.compile(lambda *a: self._depformer(*a)))
            self._per_thread[threading.get_ident()] = fns
        return fns

    # ---- traced bodies (run once per shape; no Python state may change here) ----------------
    def _temporal(self, tokens, offset, slot, mask, bucket, key, *kv):
        gen = self.gen
        caches = [RingStep(kv[i], kv[i + 1], offset, slot, mask, bucket) for i in range(0, len(kv), 2)]
        h, text_logits = gen.lm.forward_text(
            tokens, self._cond, caches, dtype=gen.compute.activation, audio_stack=gen.compute.audio_stack
        )
        guided = gen._guided(text_logits)
        text = gen.text_sampler(guided, key)
        return (h, guided, text, *[a for c in caches for a in (c.keys, c.values)])

    def _depformer(self, h, text, *keys):
        gen = self.gen
        logits: list[mx.array] = []

        def pick(k: int, lg: mx.array) -> mx.array:
            g = gen._guided(lg)
            logits.append(g)
            return gen.audio_sampler(g, None if is_greedy(gen.audio_sampler) else keys[k])

        cache = [FrameCache(c.context) for c in gen.lm.depformer.make_cache()]
        audio = gen.lm.depformer.sample(h, text, cache, pick)
        return (audio, *logits)

    # ---- one position -----------------------------------------------------------------------
    def _mask(self, filled: int, bucket: int) -> mx.array | None:
        """Which of the bucket's slots hold a position; None when all do (the plain kernel)."""
        return None if filled == bucket else ring_mask(filled, bucket)

    def run_temporal(self, inputs, key: mx.array) -> tuple[mx.array, mx.array, mx.array]:
        """Helium + text sampling for one position, lazily; advances the rings.
        inputs: the position's tokens, ints [1 + n_q] (numpy); key: the text token's.
        Returns hidden [B, dim], guided text logits, text token."""
        gen = self.gen
        tokens = mx.array(np.broadcast_to(np.asarray(inputs, dtype=np.int32), (gen.batch, len(inputs))))
        caches = gen._cache
        cap = self.context
        off = caches[0].offset
        B = gen.batch
        for c, layer in zip(caches, gen.lm.transformer.layers):
            attn = layer.self_attn
            shape = (B, attn.num_kv_heads, cap, attn.head_dim)
            if c.keys is None or c.keys.shape != shape or c.keys.dtype != gen.dtype:
                c.keys = mx.zeros(shape, dtype=gen.dtype)
                c.values = mx.zeros(shape, dtype=gen.dtype)
        filled = min(off + 1, cap)
        bucket = ring_bucket(filled, cap)
        kv = [a for c in caches for a in (c.keys, c.values)]
        for c in caches:  # only the trace's inputs hold the old buffers: updated in place
            c.keys = c.values = None
        out = self._compiled()[0](
            tokens,
            mx.array(off, dtype=mx.int32),
            mx.array([off % cap], dtype=mx.int32),
            self._mask(filled, bucket),
            bucket,
            key,
            *kv,
        )
        del kv
        h, guided, text = out[:3]
        new = out[3:]
        for i, c in enumerate(caches):
            c.keys, c.values = new[2 * i], new[2 * i + 1]
            c.offset += 1
        return h, guided, text

    def run_depformer(self, h: mx.array, text: mx.array, keys: list[mx.array]) -> tuple[mx.array, list[mx.array]]:
        """The frame's audio tokens [B, dep_q] and the guided logits per codebook, lazily
        (keys: one per codebook; none when sampling is greedy)."""
        audio, *logits = self._compiled()[1](h, text, *keys)
        return audio, list(logits)
