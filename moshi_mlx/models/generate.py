"""`LmGen`: streaming generation, one model position per 80 ms frame.

Alignment (a deliberate choice, tested against the reference): the model runs in the
training convention — position p consumes every stream's tokens of frame p - 1 - delay
and predicts the text of frame p and audio codebook k of frame p - delay[k] — but without
an extra frame of latency: `step(user_frame_t)` runs position t + 1, the first position
that can consume frame t. Position 0 (all initial tokens) runs inside the first call after
construction or `reset()`. So the answer to frame t is computed as soon as frame t
arrives, like the reference `LMGen`, and no user frame is dropped (the reference `LMGen`
overwrites the first one with the initial token). Feeding the reference `LMGen`
`[anything, u0, u1, ...]` while feeding us `[u0, u1, ...]` gives identical tokens.

Returned per call: the text token of frame t + 1 (position t + 1's prediction; the text
of frame 0, predicted at position 0, is `prefix_text_token`), and the model's own audio
frame that became complete at that position — frame t + 1 - D with D the largest delay of
the generated codebooks — or None while there is none yet (with D = 0, frame 0 comes from
position 0 and is `prefix_audio_tokens`).

Only one host synchronisation per step: the sampled tokens. Caches are preallocated rings
(the temporal transformer's holds `context` positions however long the conversation is).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import mlx.core as mx
import numpy as np

from ..errors import ConfigError, UsageError
from ..modules.kv_cache import KVCache
from .backend import ComputeFormat
from .frame_step import CompiledFrame, compiled_step_supported
from .lm import Lm
from .sampling import SamplingOptions, is_greedy

_UNSET: Any = object()
# positions per temporal-transformer call in `LmGen.prefill`: on a GPU a call streams the
# weights once for all its positions; MLX's CPU backend here runs a multi-row matmul slower
# than as many one-row calls (bench/persona_bench.py, docs/personaplex.md), so one per call there
PREFILL_CHUNK = 128
CPU_PREFILL_CHUNK = 1
# (logits [B, V], PRNG key or None) -> tokens [B] int32; `Sampler` is one
TokenSampler = Callable[[mx.array, "mx.array | None"], mx.array]
# (position, text logits [B, V]) -> text logits
LogitsProcessor = Callable[[int, mx.array], mx.array]


# MLX's array sizes are 32-bit: a larger buffer is not an error MLX raises, it crashes
_MAX_ELEMENTS = 2**31 - 1


def physical_memory() -> int | None:
    """Bytes of memory this machine has (None if unknown)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # pragma: no cover - not POSIX
        return None


def check_kv_cache_fits(cfg, batch: int, itemsize: int) -> None:
    """The temporal transformer's KV cache (a ring of `context` positions per layer) as a
    one-line ConfigError when it cannot exist: a buffer past MLX's 32-bit sizes, or more
    bytes than the machine has (a config's context of 2**30 crashed the process)."""
    if cfg.context is None:
        return
    kv_heads = cfg.num_heads // cfg.kv_repeat
    per_buffer = batch * kv_heads * cfg.context * (cfg.dim // cfg.num_heads)
    if per_buffer > _MAX_ELEMENTS:
        raise ConfigError(
            f"context {cfg.context}: a layer's KV cache would hold {per_buffer:,} values, more than "
            f"MLX's 32-bit array sizes allow ({_MAX_ELEMENTS:,})"
        )
    total, mem = 2 * cfg.num_layers * per_buffer * itemsize, physical_memory()
    if mem is not None and total > mem:
        raise ConfigError(
            f"context {cfg.context}: the KV cache needs {total / 2**30:.1f} GB, more than this "
            f"machine's {mem / 2**30:.1f} GB of memory"
        )


@dataclass(frozen=True)
class GenState:
    """Everything a conversation built up in an `LmGen` (`LmGen.state()`): its position,
    the token history the next positions read, the PRNG key and the temporal transformer's
    caches (per layer: offset, keys, values). `LmGen.restore(state)` continues from it, in
    the same generator or another of the same model (a saved conversation, or a persona
    prompt prefilled once and reused); `save(path)` / `load(path)` keep it in a file."""

    position: int
    frames: int
    history: np.ndarray  # [streams, ring] token ids (-2 = none)
    prefix_text_token: int | None
    prefix_audio_tokens: list[int] | None
    key: mx.array
    cache: tuple[tuple[int, mx.array | None, mx.array | None], ...]
    forced_until: int = 0  # frames before this one were given for every stream (a prompt's prefill)

    def save(self, path: str | os.PathLike) -> None:
        arrays = {"history": mx.array(self.history.astype(np.int32)), "key": self.key}
        for i, (_, k, v) in enumerate(self.cache):
            if k is not None:
                arrays[f"cache.{i}.keys"], arrays[f"cache.{i}.values"] = k, v
        meta = {
            "position": self.position,
            "frames": self.frames,
            "prefix_text_token": self.prefix_text_token,
            "prefix_audio_tokens": self.prefix_audio_tokens,
            "offsets": [c[0] for c in self.cache],
            "forced_until": self.forced_until,
        }
        from ..outputs import write_staged

        # through a file object: MLX adds '.safetensors' to a name without it ('conv.state' was
        # written as 'conv.state.safetensors', which load('conv.state') did not find); staged, so an
        # interrupt or a full disk leaves an existing state as it was
        with write_staged(path) as f:
            mx.save_safetensors(f, arrays, metadata={"moshi_mlx.gen_state": json.dumps(meta)})

    @classmethod
    def load(cls, path: str | os.PathLike) -> "GenState":
        try:
            arrays, metadata = mx.load(str(path), format="safetensors", return_metadata=True)
            meta = json.loads(metadata["moshi_mlx.gen_state"])
        except (OSError, RuntimeError, ValueError, KeyError) as e:
            raise UsageError(f"{path}: not a saved generator state ({e})") from None
        cache = tuple(
            (off, arrays.get(f"cache.{i}.keys"), arrays.get(f"cache.{i}.values"))
            for i, off in enumerate(meta["offsets"])
        )
        return cls(
            meta["position"],
            meta["frames"],
            np.array(arrays["history"]).astype(np.int64),
            meta["prefix_text_token"],
            meta["prefix_audio_tokens"],
            arrays["key"],
            cache,
            meta.get("forced_until", 0),
        )


def _copy(a: mx.array | None) -> mx.array | None:
    """A copy no later in-place cache write can reach (ring slots are written in place)."""
    return None if a is None else mx.array(a)


class LmGen:
    def __init__(
        self,
        lm: Lm,
        options: SamplingOptions | None = None,
        *,
        condition: dict[str, str | None] | None = _UNSET,
        null_condition: dict[str, str | None] | None = _UNSET,
        compute: ComputeFormat | None = None,
        text_sampler: TokenSampler | None = None,
        audio_sampler: TokenSampler | None = None,
        logits_processors: Sequence[LogitsProcessor] = (),
        cache: list[KVCache] | None = None,
        prompt=None,
        **sampling: Any,
    ):
        """Make a streaming generator: one user frame in, the model's text and audio out per step.

        Unset options are the model's `lm_gen_config`, then the reference LMGen's defaults
        (audio temp 0.8 / top-k 250, text temp 0.7 / top-k 25). Temperature 0 (or
        use_sampling=False) is greedy. cfg_coef != 1 enables classifier-free guidance: a
        second batch row runs with `null_condition` and the logits become
        null + cfg_coef * (cond - null) for text and every codebook.

        Args:
            lm: The model.
            options: A `SamplingOptions` (default: all defaults).
            condition: Value per conditioner (Hibiki: {"description": "very_good"}, its
                default).
            null_condition: The guidance row's conditions (Hibiki default
                {"description": "very_bad"}, as in Kyutai's scripts; otherwise every
                conditioner's null value, its learnt padding).
            compute: The model's `ComputeFormat` (`prepare_lm`'s, `Model.compute`): its
                activation dtype and whether steps run compiled; None: as stored, eager.
            text_sampler: A prebuilt sampler used instead of the options' (as mlx-lm's
                `generate_step(sampler=...)`): `(logits [B, V], PRNG key) -> tokens [B]`
                int32, MLX ops only (the compiled step traces them).
            audio_sampler: The same for the audio codebooks.
            logits_processors: Functions `(position, text logits [B, V]) -> logits` applied
                in order to the (guided) text logits before sampling (e.g. forcing tokens);
                they run in Python, so a generator with processors steps eagerly.
            cache: The temporal transformer's per-layer caches, owned by the caller (as
                mlx-lm's `prompt_cache`; `lm.make_cache()` makes one): the generator fills
                them instead of its own, so the caller can read them or keep them;
                `state()` / `restore()` save and restore them with the rest of the
                conversation.
            prompt: Frames given before every conversation (`models.persona.Prompt`,
                PersonaPlex's voice and role), prefilled by each `reset()`.
            **sampling: `SamplingOptions` names (`temp=0.0, seed=3`) overriding single fields.

        Raises:
            UsageError: A bad option, sampler, condition or cache (one line naming it).
        """
        self.lm = lm
        self.compute = compute if compute is not None else ComputeFormat()
        # the activations' dtype (the format's, else the weights')
        self.dtype: mx.Dtype = self.compute.activation if self.compute.activation is not None else lm.dtype
        cfg = lm.cfg
        self.cfg = cfg
        # the options as given, every unset one filled in from the model's lm_gen_config
        self.options: SamplingOptions = SamplingOptions.of(options, **sampling).resolved(cfg.lm_gen_config)
        text, audio = self.options.samplers()
        self.text_sampler: TokenSampler = text_sampler if text_sampler is not None else text
        self.audio_sampler: TokenSampler = audio_sampler if audio_sampler is not None else audio
        self.logits_processors = tuple(logits_processors)
        for f in (self.text_sampler, self.audio_sampler, *self.logits_processors):
            if not callable(f):
                raise UsageError(f"samplers and logits processors must be functions, got {f!r}")
        self.cfg_coef = self.options.cfg_coef
        self.seed = self.options.seed

        hibiki = cfg.model_type == "hibiki" and "description" in cfg.conditioners
        if condition is _UNSET:
            condition = {"description": "very_good"} if hibiki else None
        if null_condition is _UNSET:
            null_condition = {"description": "very_bad"} if hibiki else {n: None for n in cfg.conditioners}
        if cfg.conditioners and condition is None:
            raise UsageError(f"this model is conditioned on {sorted(cfg.conditioners)}: pass condition={{...}}")
        self.condition = condition
        self.null_condition = null_condition
        self.use_cfg = self.cfg_coef != 1.0
        if self.use_cfg and not cfg.conditioners:
            raise UsageError("classifier-free guidance (cfg_coef != 1) needs a conditioned model")
        cond = lm.condition_tensor(condition)
        if self.use_cfg:
            cond = mx.concatenate([cond, lm.condition_tensor(null_condition)], axis=0)
        self._cond = None if cond is None else cond.astype(self.dtype)
        if self._cond is not None:
            # evaluated now: MLX graphs belong to the stream (thread) that built them, and the
            # live loop steps from a worker thread
            mx.eval(self._cond)

        self.batch = 2 if self.use_cfg else 1
        check_kv_cache_fits(cfg, self.batch, self.dtype.size)
        self.delays = np.array(cfg.delays, dtype=np.int64)
        self.own_delay = cfg.own_delay
        self._ring = cfg.max_delay + 2
        self._init = lm.initial_tokens()
        self._streams = np.arange(cfg.num_streams)
        if cache is None:
            cache = lm.make_cache()
        elif (
            not isinstance(cache, (list, tuple))
            or len(cache) != cfg.num_layers
            or not all(isinstance(c, KVCache) for c in cache)
        ):
            raise UsageError(
                f"cache must be a list of {cfg.num_layers} KVCaches, one per temporal layer "
                f"(lm.make_cache() makes one), got {type(cache).__name__}"
            )
        self._cache = list(cache)
        self._dep_cache = lm.depformer.make_cache() if lm.has_depformer else None
        # the compiled fixed-shape step (models/frame_step.py) where the compute format chose it
        self._frame: CompiledFrame | None = None
        if self.compute.compiled and not self.logits_processors and compiled_step_supported(lm) is None:
            self._frame = CompiledFrame(self)
        self.prompt = prompt
        self.reset()

    @property
    def compiled(self) -> bool:
        """Whether steps run the compiled fixed-shape functions (see models/frame_step.py)."""
        return self._frame is not None

    # ---- state ---------------------------------------------------------------------
    def reset(self) -> None:
        """Start a new conversation (caches keep their buffers, so nothing is reallocated).

        A `prompt` given at construction is prefilled again.
        """
        for c in self._cache:
            c.reset()
        self._hist = np.full((self.cfg.num_streams, self._ring), -2, dtype=np.int64)
        self.position = 0  # next position to run
        self.frames = 0  # user frames consumed
        self.prefix_text_token: int | None = None
        self.prefix_audio_tokens: list[int] | None = None
        self._forced_until = 0  # frames before this one were given for every stream (prefill)
        self._key = mx.random.key(self.seed)
        mx.eval(self._key)
        self._last_hidden: mx.array | None = None
        if self.prompt is not None:
            self.prefill(self.prompt.frames, self.prompt.embeddings)

    def state(self) -> GenState:
        """Save the conversation so far, to continue it later (`restore`).

        Returns:
            A copy (see `GenState`); stepping on does not change it.
        """
        mx.eval(self._key, *[a for c in self._cache for a in c.state])
        return GenState(
            self.position,
            self.frames,
            self._hist.copy(),
            self.prefix_text_token,
            None if self.prefix_audio_tokens is None else list(self.prefix_audio_tokens),
            _copy(self._key),
            tuple((int(c.offset), _copy(c.keys), _copy(c.values)) for c in self._cache),
            self._forced_until,
        )

    def restore(self, state: GenState) -> None:
        """Continue from a saved state: the next steps give what they gave after `state()` was
        taken, with the same options.

        Args:
            state: A `GenState` from this generator or another of the same model.

        Raises:
            UsageError: Not a `GenState`, or one of another model.
        """
        if not isinstance(state, GenState):
            raise UsageError(
                f"restore() takes a GenState (LmGen.state() or GenState.load()), got {type(state).__name__}"
            )
        if state.history.shape != self._hist.shape or len(state.cache) != len(self._cache):
            raise UsageError(
                f"this state is of another model: history {state.history.shape}, {len(state.cache)} "
                f"layers; this generator has {self._hist.shape}, {len(self._cache)}"
            )
        for c, (offset, keys, values) in zip(self._cache, state.cache):
            c.offset, c.keys, c.values = offset, _copy(keys), _copy(values)
        self._hist = state.history.copy()
        self.position, self.frames, self._forced_until = state.position, state.frames, state.forced_until
        self.prefix_text_token = state.prefix_text_token
        self.prefix_audio_tokens = None if state.prefix_audio_tokens is None else list(state.prefix_audio_tokens)
        self._key = _copy(state.key)
        mx.eval(self._key, *[a for c in self._cache for a in c.state])
        self._last_hidden = None

    def _frame_keys(self) -> tuple[mx.array, list[mx.array]]:
        """This position's PRNG keys from one split (one kernel, not one per token): the
        text token's and one per audio codebook (views of the split, no gather). Unsplit
        (and unused) when every sampler is greedy."""
        if is_greedy(self.text_sampler) and is_greedy(self.audio_sampler):
            return self._key, []
        n = self.cfg.dep_q if self.lm.has_depformer else 0
        self._key, text, *audio = (k.reshape(2) for k in mx.split(mx.random.split(self._key, 2 + n), 2 + n))
        return text, audio

    def _guided(self, logits: mx.array) -> mx.array:
        if not self.use_cfg:
            return logits
        cond, null = logits[:1], logits[1:]
        return null + (cond - null) * self.cfg_coef

    # ---- one position --------------------------------------------------------------
    def _inputs(self, p: int) -> np.ndarray:
        f = p - 1 - self.delays
        tok = self._hist[self._streams, f % self._ring]
        return np.where(f >= 0, tok, self._init)

    def _temporal(self, inputs: np.ndarray, key: mx.array) -> tuple[mx.array, mx.array, mx.array]:
        """Helium + text head for one position (inputs: its tokens [1 + n_q]; key: the text
        token's): (hidden, guided text logits, text token), lazy."""
        if self._frame is not None:
            return self._frame.run_temporal(inputs, key)
        tokens = mx.array(inputs.astype(np.int32))[None, :, None]
        if self.batch > 1:
            tokens = mx.concatenate([tokens] * self.batch, axis=0)
        h, text_logits = self.lm.forward_text(tokens, self._cond, self._cache, dtype=self.compute.activation)
        guided = self._guided(text_logits[:, -1])
        for process in self.logits_processors:
            guided = process(self.position, guided)
        text = self.text_sampler(guided, key)
        return h, guided, text

    def _depformer(
        self, h: mx.array, text: mx.array, keys: list[mx.array], forced: dict[int, int] | None = None
    ) -> mx.array:
        """The frame's audio tokens [B, dep_q] given the text token (keys: one per
        codebook), lazy. forced: codebook -> its given token (after a prefill), which
        replaces the sampled one and is the next codebook's input (teacher forcing)."""
        if self._frame is not None and not forced:
            audio, self.last_audio_logits = self._frame.run_depformer(h, text, keys)
            return audio

        def pick(k: int, logits: mx.array) -> mx.array:
            g = self._guided(logits)
            self.last_audio_logits.append(g)
            tok = self.audio_sampler(g, None if is_greedy(self.audio_sampler) else keys[k])
            if forced and k in forced:
                return mx.full(tok.shape, forced[k], dtype=tok.dtype)
            return tok

        return self.lm.depformer.sample(h, text, self._dep_cache, pick)

    def _run(self, p: int) -> tuple[int, list[int]]:
        lm, cfg = self.lm, self.cfg
        text_key, audio_keys = self._frame_keys()
        h, guided, text = self._temporal(self._inputs(p), text_key)
        self._last_hidden = h
        self.last_text_logits = guided  # lazy; read by tests and tools, costs nothing otherwise
        self.last_audio_logits: list[mx.array] = []
        if lm.has_depformer:
            # the temporal transformer computes while Python builds the depformer's graph
            mx.async_eval(text)
            frames = p - self.delays[1 : 1 + cfg.dep_q]
            forced = {
                k: int(self._hist[1 + k, f % self._ring]) for k, f in enumerate(frames) if 0 <= f < self._forced_until
            }
            audio = self._depformer(h, text, audio_keys, forced)
            out = mx.concatenate([text[:, None], audio], axis=1)[0]
        else:
            out = text
        mx.eval(out, self._key)
        vals = out.tolist()  # the one host sync of the step
        hist, R = self._hist, self._ring
        hist[0, p % R] = vals[0]
        for k in range(cfg.dep_q):
            f = p - cfg.delays[1 + k]
            if f >= 0:
                hist[1 + k, f % R] = vals[1 + k]
        return vals[0], vals[1:]

    def _audio_frame(self, p: int) -> list[int] | None:
        f = p - self.own_delay
        if f < 0 or self.cfg.dep_q == 0:
            return None
        return self._hist[1 : 1 + self.cfg.dep_q, f % self._ring].tolist()

    def step(self, user_codes=None) -> tuple[int, list[int] | None]:
        """Advance one 80 ms frame: the user's codes in, the model's next tokens out.

        See the module docstring for the frame alignment.

        Args:
            user_codes: User frame t: ints [n_q - dep_q], -1 = zero token.

        Returns:
            (text token of frame t + 1, own audio frame t + 1 - D or None).

        Raises:
            UsageError: The wrong number of codes, or codes out of [-1, card].
        """
        cfg = self.cfg
        u = np.asarray([] if user_codes is None else user_codes, dtype=np.int64).reshape(-1)
        if u.shape[0] != cfg.user_q:
            raise UsageError(f"expected {cfg.user_q} user codes per frame, got {u.shape[0]}")
        if u.size and (u.min() < -1 or u.max() > cfg.card):
            raise UsageError(f"user codes must be in [-1, {cfg.card}], got {u.tolist()}")
        if self.position == self.frames:  # the first position after reset() or prefill()
            p = self.position
            self.prefix_text_token, _ = self._run(p)
            self.prefix_audio_tokens = self._audio_frame(p) if p == 0 else None  # only with no own delay
            self.position = p + 1
        t = self.frames
        self._hist[1 + cfg.dep_q :, t % self._ring] = u
        p = self.position
        text, _ = self._run(p)
        self.position += 1
        self.frames += 1
        return text, self._audio_frame(p)

    def prefill(self, frames, embeddings: mx.array | None = None, chunk: int | None = None) -> None:
        """Start the conversation after given frames (a prompt), filling only the KV cache.

        Positions 0..T-1 only predict given tokens, so they run as forwards of the temporal
        transformer alone that only fill its KV cache: no text head, no depformer, no
        sampling. The next `step(user frame T)` runs position T (the first free one, where
        the given tokens of frame T - 1 of delayed codebooks are still forced) then T + 1.

        Args:
            frames: [1 + n_q, T]: every stream's tokens of frames 0..T-1.
            embeddings: [E, dim]: positions 0..E-1's input embeddings, given instead of the
                frames' (a stored voice prompt; those frames then only matter from
                E - 1 - max delay).
            chunk: Positions per forward (None: the device's default).

        Raises:
            UsageError: Not right after `reset()`, or frames/embeddings of the wrong shape.
        """
        cfg = self.cfg
        if self.position != 0:
            raise UsageError("prefill() starts a conversation: call it right after reset()")
        frames = np.asarray(frames, dtype=np.int64)
        if frames.ndim != 2 or frames.shape[0] != cfg.num_streams or frames.shape[1] == 0:
            raise UsageError(f"prefill frames must be [{cfg.num_streams}, T > 0], got {list(frames.shape)}")
        T = frames.shape[1]
        if chunk is None:
            chunk = PREFILL_CHUNK if mx.default_device().type == mx.DeviceType.gpu else CPU_PREFILL_CHUNK
        E = 0 if embeddings is None else int(embeddings.shape[0])
        if embeddings is not None:
            embeddings = mx.array(embeddings) if isinstance(embeddings, np.ndarray) else embeddings
            if embeddings.ndim != 2 or embeddings.shape[1] != cfg.dim:
                raise UsageError(f"prefill embeddings must be [E, {cfg.dim}], got {list(embeddings.shape)}")
        if E > T:
            raise UsageError(f"{E} prompt embeddings for {T} frames")
        pos = np.arange(T)[None, :] - 1 - self.delays[:, None]  # the frame each position consumes
        tokens = np.where(pos >= 0, frames[self._streams[:, None], np.maximum(pos, 0)], self._init[:, None])
        for start in range(0, T, chunk):
            stop = min(T, start + chunk)
            parts = []
            if start < E:
                parts.append(embeddings[start : min(stop, E)].astype(self.dtype)[None])
            if stop > E:
                parts.append(
                    self.lm.embed(
                        mx.array(tokens[None, :, max(start, E) : stop].astype(np.int32)), self.compute.activation
                    )
                )
            x = parts[0] if len(parts) == 1 else mx.concatenate(parts, axis=1)
            if self.batch > 1:
                x = mx.concatenate([x] * self.batch, axis=0)
            if self._cond is not None:
                x = x + self._cond.astype(x.dtype)
            x = self.lm.transformer(x, self._cache)
            mx.eval(x, [c.state for c in self._cache])
        for f in range(max(0, T - self._ring), T):
            self._hist[:, f % self._ring] = frames[:, f]
        self.position = self.frames = self._forced_until = T

    def extra_heads(self) -> list[mx.array]:
        """Softmax outputs of the model's extra heads (e.g. STT voice activity) at the last position."""
        if self._last_hidden is None:
            return []
        h = self._last_hidden
        h = h[:1] if h.ndim == 2 else h[:1, -1]  # the compiled step's hidden is [B, dim]
        return [mx.softmax(head(h).astype(mx.float32), axis=-1) for head in getattr(self.lm, "extra_heads", [])]

    def is_text_padding(self, token: int) -> bool:
        """True for the text stream's padding tokens (PAD and end-of-padding), which carry no text."""
        return token in (self.cfg.existing_text_padding_id, self.cfg.existing_text_end_padding_id)
