"""Mimi's streaming step as compiled fixed-shape functions (the accelerator path).

One 80 ms frame through Mimi is a few hundred small kernels (SEANet's convolutions, two
transformers, the quantizer); on a GPU their launch overhead is the cost, as for the LM
(models/frame_step.py). Each direction (encoder, decoder) becomes one `mx.compile`d
function of (input, streaming state...) -> (output, new state...):
- the convolutions' carried samples (`_prev`, `_carry`) go in and come out as arrays;
- each transformer layer's KV ring goes in and is updated in place at array slots, the
  positions (RoPE offset, slots, visibility mask) computed on the host per call
  (`modules.kv_cache.RingChunk`, `chunk_inputs`).
The same modules' `step` code is what is traced, so results equal the eager stream's.
The first call of a stream (no state yet) and chunks longer than the transformer's
context run eagerly; traces are cached per input shape.
"""

from __future__ import annotations

import threading
from typing import Callable

import mlx.core as mx
import mlx.nn as nn

from ..modules.kv_cache import KVCache, RingChunk, chunk_inputs

_CARRIED = ("_prev", "_carry")


class CompiledStream:
    """One direction of a Mimi stream. `body(x)` is the eager step over `parts`;
    `tokens(x)` the number of transformer tokens that input makes."""

    def __init__(
        self,
        parts: list[nn.Module],
        transformers: list[nn.Module],
        body: Callable[[mx.array], mx.array],
        tokens: Callable[[mx.array], int],
    ):
        self.parts = parts
        self.transformer_modules = transformers  # modules streaming through a `_cache` list of KVCache
        self.body = body
        self.tokens = tokens
        self._per_thread: dict[int, Callable] = {}
        self._layout: tuple | None = None
        self.compiled_calls = 0  # calls that ran the compiled function (the rest ran eagerly)

    def _fn(self) -> Callable:
        """This thread's compiled function (a trace records its thread's streams)."""
        fn = self._per_thread.get(threading.get_ident())
        if fn is None:
            fn = self._per_thread[threading.get_ident()] = mx.compile(lambda *a: self._traced(*a))
        return fn

    def _carried(self) -> list[tuple[nn.Module, str]]:
        # a conv without padding (or overlap) never sets its state: it is not carried
        return [
            (m, a)
            for part in self.parts
            for _, m in part.named_modules()
            for a in _CARRIED
            if hasattr(m, a) and getattr(m, "carries_state", True)
        ]

    def _transformers(self) -> list[nn.Module]:
        return self.transformer_modules

    def __call__(self, x: mx.array) -> mx.array:
        carried = self._carried()
        trans = self._transformers()
        caches: list[KVCache] = [c for t in trans for c in (t._cache or [])]
        T = self.tokens(x)
        ready = (
            all(getattr(m, a) is not None for m, a in carried)
            and all(t._cache for t in trans)
            and all(c.keys is not None and c.context is not None and T <= c.context for c in caches)
        )
        if not ready:
            return self.body(x)
        states = [getattr(m, a) for m, a in carried]
        rings = [a for c in caches for a in (c.keys, c.values)]
        pos = [a for c in caches for a in chunk_inputs(c, T)]
        for m, a in carried:  # only the trace's inputs hold the old state: updated in place
            setattr(m, a, None)
        for c in caches:
            c.keys = c.values = None
        self._layout = (len(states), [len(t._cache) for t in trans])
        out = self._fn()(x, *states, *rings, *pos)
        self.compiled_calls += 1
        del states, rings
        y, rest = out[0], out[1:]
        n = len(carried)
        for (m, a), v in zip(carried, rest[:n]):
            setattr(m, a, v)
        for i, c in enumerate(caches):
            c.keys, c.values = rest[n + 2 * i], rest[n + 2 * i + 1]
            c.offset += T
        return y

    def _traced(self, x, *args):
        n_states, per_transformer = self._layout
        carried = self._carried()
        trans = self._transformers()
        states = args[:n_states]
        n_caches = sum(per_transformer)
        rings = args[n_states : n_states + 2 * n_caches]
        pos = args[n_states + 2 * n_caches :]
        for (m, a), v in zip(carried, states):
            setattr(m, a, v)
        saved = [t._cache for t in trans]
        chunks: list[RingChunk] = []
        i = 0
        for t, n in zip(trans, per_transformer):
            t._cache = []
            for _ in range(n):
                c = RingChunk(rings[2 * i], rings[2 * i + 1], *pos[3 * i : 3 * i + 3])
                t._cache.append(c)
                chunks.append(c)
                i += 1
        try:
            y = self.body(x)
        finally:
            for t, c in zip(trans, saved):
                t._cache = c
        return (y, *[getattr(m, a) for m, a in carried], *[b for c in chunks for b in (c.keys, c.values)])
