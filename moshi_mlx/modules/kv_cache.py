"""Key/value caches for streaming attention.

Kyutai's visibility rule, which every cache here honours exactly: a key at position `pk`
is visible to a query at position `pq` iff `0 <= pq - pk < context`. Keys are stored
already rotated (RoPE), so their slot order does not matter to attention, only the mask.

`KVCache` is a ring buffer of `context` slots, so memory is fixed and a conversation can
run for hours: slot `p % context` holds position `p`. For one token per call (the LM's
frame step) the ring holds exactly the visible keys and no mask is needed. For a chunk of
T > 1 tokens the visible keys of the earliest query may already be overwritten by the
latest, so attention runs over the old ring contents concatenated with the new keys, with
an explicit mask; the ring is written afterwards. Batch and streaming therefore agree for
any length (upstream's ring slicing does not, see docs/architecture.md).

Every cache shares one small interface, `BaseCache` (as mlx-lm's `_BaseCache`): `offset`,
`update_and_fetch`, `reset` and `state`; attention reads nothing else.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np


def visibility_mask(q_pos: np.ndarray, k_pos: np.ndarray, context: int | None) -> mx.array:
    """Boolean [Tq, Tk] mask: key visible iff it exists (pos >= 0), is not in the future
    and is less than `context` steps in the past."""
    delta = q_pos[:, None] - k_pos[None, :]
    ok = (k_pos[None, :] >= 0) & (delta >= 0)
    if context is not None:
        ok &= delta < context
    return mx.array(ok)


def batch_mask(length: int, causal: bool, context: int | None) -> mx.array | str | None:
    """Mask for a whole sequence seen at once (no cache), positions 0..length-1."""
    if not causal or length == 1:
        return None
    if context is None or context >= length:
        return "causal"
    pos = np.arange(length)
    return visibility_mask(pos, pos, context)


class BaseCache:
    """What attention needs of a cache: `offset` (the position of the next key: an int, or
    an array inside a compiled step, for RoPE), `update_and_fetch(k, v)` -> (keys, values,
    mask) to attend over, `reset()` (forget every key), and `state`, the arrays it holds
    (to save a conversation and restore it). `fused_kv`: it takes one token's keys and
    values as one array (`update_and_fetch_kv`), as the projection made them."""

    fused_kv = False
    keys: mx.array | None = None
    values: mx.array | None = None
    offset: int | mx.array = 0

    def update_and_fetch(self, k: mx.array, v: mx.array) -> tuple[mx.array, mx.array, mx.array | None]:
        raise NotImplementedError

    def update_and_fetch_kv(self, kv: mx.array, num_kv_heads: int) -> tuple[mx.array, mx.array, mx.array | None]:
        """One token's keys and values as one array [B, 2 * heads, 1, D] (keys first)."""
        k, v = mx.split(kv, [num_kv_heads], axis=1)
        return self.update_and_fetch(k, v)

    def reset(self) -> None:
        self.offset = 0

    @property
    def state(self) -> list[mx.array]:
        return [a for a in (self.keys, self.values) if a is not None]

    @state.setter
    def state(self, arrays) -> None:
        self.keys, self.values = arrays if arrays else (None, None)


class KVCache(BaseCache):
    """Streaming cache for one attention layer.

    context: visibility window (None = unbounded, the buffer then grows by `step` slots).
    """

    step = 256

    def __init__(self, context: int | None):
        if context is not None and context <= 0:
            raise ValueError(f"attention context must be positive, got {context}")
        self.context = context
        self.keys: mx.array | None = None
        self.values: mx.array | None = None
        self.offset = 0

    def reset(self) -> None:
        """Forget every key; buffers are kept so a new conversation allocates nothing."""
        self.offset = 0

    def _allocate(self, k: mx.array, v: mx.array, capacity: int) -> None:
        B, H, _, Dk = k.shape
        Dv = v.shape[-1]
        if (
            self.keys is not None
            and self.keys.shape[:2] == (B, H)
            and self.keys.shape[2] >= capacity
            and self.keys.dtype == k.dtype
        ):
            return
        keys = mx.zeros((B, H, capacity, Dk), dtype=k.dtype)
        values = mx.zeros((B, H, capacity, Dv), dtype=v.dtype)
        if self.keys is not None and self.context is None and self.offset > 0:
            keys[:, :, : self.offset] = self.keys[:, :, : self.offset]
            values[:, :, : self.offset] = self.values[:, :, : self.offset]
        self.keys, self.values = keys, values

    def update_and_fetch(self, k: mx.array, v: mx.array):
        """Add T new keys/values [B, H, T, D]; return (keys, values, mask) to attend over."""
        T = k.shape[2]
        if self.context is None:
            return self._grow(k, v)
        cap = self.context
        start = self.offset
        if T == 1:
            self._allocate(k, v, cap)
            slot = start % cap
            self.keys[:, :, slot : slot + 1] = k
            self.values[:, :, slot : slot + 1] = v
            self.offset += 1
            filled = min(self.offset, cap)
            if filled == cap:
                return self.keys, self.values, None
            return self.keys[:, :, :filled], self.values[:, :, :filled], None
        return self._chunk(k, v, start, T, cap)

    def _chunk(self, k, v, start: int, T: int, cap: int):
        q_pos = np.arange(start, start + T)
        if start == 0:
            keys, values, k_pos = k, v, q_pos
        else:
            filled = min(start, cap)
            slots = np.arange(filled)
            # the position stored in each slot: the latest p < start with p % cap == slot
            old_pos = start - 1 - ((start - 1 - slots) % cap)
            keys = mx.concatenate([self.keys[:, :, :filled], k], axis=2)
            values = mx.concatenate([self.values[:, :, :filled], v], axis=2)
            k_pos = np.concatenate([old_pos, q_pos])
        mask = visibility_mask(q_pos, k_pos, self.context)
        self._allocate(k, v, cap)
        # write the last min(T, cap) new entries into the ring (it may wrap)
        n = min(T, cap)
        first = start + T - n
        k_new, v_new = k[:, :, T - n :], v[:, :, T - n :]
        s = first % cap
        head = min(n, cap - s)
        self.keys[:, :, s : s + head] = k_new[:, :, :head]
        self.values[:, :, s : s + head] = v_new[:, :, :head]
        if head < n:
            self.keys[:, :, : n - head] = k_new[:, :, head:]
            self.values[:, :, : n - head] = v_new[:, :, head:]
        self.offset += T
        return keys, values, mask

    def _grow(self, k, v):
        T = k.shape[2]
        start = self.offset
        needed = start + T
        if (
            self.keys is None
            or self.keys.shape[2] < needed
            or self.keys.dtype != k.dtype
            or self.keys.shape[:2] != k.shape[:2]
        ):
            capacity = ((needed + self.step - 1) // self.step) * self.step
            self._allocate(k, v, capacity)
        self.keys[:, :, start:needed] = k
        self.values[:, :, start:needed] = v
        self.offset = needed
        mask = None
        if T > 1:
            q_pos = np.arange(start, needed)
            mask = visibility_mask(q_pos, np.arange(needed), None)
        return self.keys[:, :, :needed], self.values[:, :, :needed], mask


class RingStep(BaseCache):
    """A `KVCache` ring seen by a compiled one-token step: buffers and position are arrays.

    A compiled function sees only arrays, so the ring's buffers come in as inputs and
    leave, updated, as outputs (`keys` / `values` after the call), and the position is an
    array (`offset`, for RoPE), so one trace serves every position. The new key goes to
    slot `slot` (= offset % context) by an in-place update; attention runs over the first
    `bucket` slots (the caller picks it, so the early steps do not read the whole ring) with
    `mask` marking the slots that hold a position, or no mask when all of them do (then
    attention is the plain kernel on every backend: MLX's CUDA one-query kernel takes no
    mask). Same visibility as `KVCache` for one token: the ring holds exactly the visible keys.
    """

    def __init__(
        self, keys: mx.array, values: mx.array, offset: mx.array, slot: mx.array, mask: mx.array | None, bucket: int
    ):
        self.keys, self.values = keys, values
        self.offset, self.slot, self.mask, self.bucket = offset, slot, mask, bucket

    def update_and_fetch(self, k: mx.array, v: mx.array):
        if k.shape[2] != 1:
            raise ValueError("RingStep takes one token per call")
        self.keys = mx.slice_update(self.keys, k, self.slot, axes=(2,))
        self.values = mx.slice_update(self.values, v, self.slot, axes=(2,))
        n = self.bucket
        if n == self.keys.shape[2]:
            return self.keys, self.values, self.mask
        return self.keys[:, :, :n], self.values[:, :, :n], self.mask


class RingChunk(BaseCache):
    """A `KVCache` ring seen by a compiled step of T tokens (Mimi's transformers take two per
    80 ms frame): attention runs over the whole ring followed by the new keys, with a mask
    the host computed from the positions (`chunk_inputs`), and the new keys are written at
    their ring slots (an array) by one in-place scatter per buffer. Same keys, same visibility as
    `KVCache._chunk`, at a fixed shape (T <= context)."""

    def __init__(self, keys: mx.array, values: mx.array, offset: mx.array, slots: mx.array, mask: mx.array):
        self.keys, self.values = keys, values
        self.offset, self.slots, self.mask = offset, slots, mask

    def update_and_fetch(self, k: mx.array, v: mx.array):
        keys = mx.concatenate([self.keys, k], axis=2)
        values = mx.concatenate([self.values, v], axis=2)
        # every token's slot in one scatter per buffer (a slice update per token would be T)
        at = self.slots[None, None, :, None]
        self.keys = mx.put_along_axis(self.keys, at, k, axis=2)
        self.values = mx.put_along_axis(self.values, at, v, axis=2)
        return keys, values, self.mask


def chunk_inputs(cache: KVCache, T: int) -> tuple[mx.array, mx.array, mx.array]:
    """(offset, slots [T], mask [T, context + T]) for a `RingChunk` continuing `cache`."""
    cap, start = cache.context, cache.offset
    slots = np.arange(cap)
    # the position each slot holds (the latest p < start with p % cap == slot), -1 if none yet
    old_pos = np.where(slots < min(start, cap), start - 1 - ((start - 1 - slots) % cap), -1)
    q_pos = np.arange(start, start + T)
    mask = visibility_mask(q_pos, np.concatenate([old_pos, q_pos]), cap)
    return mx.array(start, dtype=mx.int32), mx.array(q_pos % cap, dtype=mx.int32), mask


class FrameCache(BaseCache):
    """The cache of a stream that starts empty and takes one token per call, kept as the
    chronological list of its keys (concatenated; the last `context` kept): the depformer's
    within-frame cache in the compiled step, where it is rebuilt every frame and a ring's
    zero buffers, slot writes and slicing would be three ops where one does."""

    fused_kv = True

    def __init__(self, context: int | None):
        self.context = context
        self.keys: mx.array | None = None
        self.values: mx.array | None = None
        self.kv: mx.array | None = None  # `update_and_fetch_kv`'s keys and values, side by side
        self.offset = 0

    def reset(self) -> None:
        self.keys = self.values = self.kv = None
        self.offset = 0

    def _append(self, old: mx.array | None, new: mx.array) -> mx.array:
        """`old` followed along time by `new`, only the last `context` positions kept."""
        x = new if old is None else mx.concatenate([old, new], axis=2)
        return x if self.context is None or x.shape[2] <= self.context else x[:, :, -self.context :]

    def update_and_fetch_kv(self, kv: mx.array, num_kv_heads: int):
        """One token's keys and values as one array [B, 2 * heads, 1, D] (keys first), kept
        that way: one concatenation per call instead of two; the keys and values returned
        are views of it. Not to be mixed with `update_and_fetch` on the same cache."""
        if kv.shape[2] != 1:
            raise ValueError("update_and_fetch_kv takes one token per call")
        self.kv = kv = self._append(self.kv, kv)
        self.offset += 1
        k, v = mx.split(kv, [num_kv_heads], axis=1)
        return k, v, None

    def update_and_fetch(self, k: mx.array, v: mx.array):
        self.keys = keys = self._append(self.keys, k)
        self.values = values = self._append(self.values, v)
        self.offset += k.shape[2]
        return (
            keys,
            values,
            None if k.shape[2] == 1 else _frame_mask(self.offset, k.shape[2], keys.shape[2], self.context),
        )


def _frame_mask(end: int, T: int, n_keys: int, context: int | None) -> mx.array:
    q_pos = np.arange(end - T, end)
    return visibility_mask(q_pos, np.arange(end - n_keys, end), context)


def ring_bucket(filled: int, capacity: int, smallest: int = 64) -> int:
    """How many ring slots a one-token step attends over: the next power of two >= `filled`
    (at least `smallest`), at most the capacity; a handful of shapes, so few traces."""
    n = smallest
    while n < filled:
        n *= 2
    return min(n, capacity)


def ring_mask(filled: int, bucket: int) -> mx.array:
    """Boolean [1, 1, 1, bucket]: slots 0..filled-1 hold a visible key."""
    return mx.array((np.arange(bucket) < filled)[None, None, None])
