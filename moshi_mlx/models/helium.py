"""`TextGen`: text generation with the temporal transformer alone (Helium, the text model
Moshi is built on, or the Helium inside a Moshi checkpoint).

The sequence starts with a start token — Helium's BOS (1) for a text-only model (n_q = 0),
as upstream's `run_helium` does; for a multistream checkpoint the text stream's initial
token, as at the start of a conversation — then the prompt, then what is generated. Every
audio stream of a multistream model gets the zero token (a zero embedding), so the model
sees text only, as upstream MLX's text-only `Lm.__call__` does.

The prompt is prefilled causally in chunks (upstream's one-call prefill has no mask, see
/work/shared/reference); the KV caches are rings, so generation may run past the model's
context (older tokens then fall out of view, as in a long conversation).
"""

from __future__ import annotations

from typing import Iterable, Iterator

import mlx.core as mx
import numpy as np

from ..constants import DEFAULT_SEED
from ..errors import ConfigError, UsageError
from .backend import ComputeFormat
from .lm import Lm
from .sampling import Sampler

HELIUM_BOS = 1
# Upstream `run_helium`'s sampler (moshi_mlx.utils.Sampler defaults): temperature 0.8, top-p 0.95.
TEXT_DEFAULTS = {"temp": 0.8, "top_k": 0, "top_p": 0.95}
_PREFILL_CHUNK = 256


class TextGen:
    def __init__(
        self,
        lm: Lm,
        sampler: Sampler | None = None,
        *,
        seed: int = DEFAULT_SEED,
        start_token: int | None = None,
        compute: ComputeFormat | None = None,
    ):
        """sampler: default `TEXT_DEFAULTS`; temperature 0 is greedy. start_token: default
        BOS for a text-only model, the text initial token otherwise. compute: the model's
        `ComputeFormat` (its activation dtype), None: as stored."""
        cfg = lm.cfg
        if cfg.conditioners:
            raise ConfigError(
                f"this model is conditioned on {sorted(cfg.conditioners)} (a {cfg.kind} model): "
                "it is not used as a text model"
            )
        self.lm, self.cfg = lm, cfg
        self.act = compute.activation if compute is not None else None
        self.sampler = sampler if sampler is not None else Sampler(**TEXT_DEFAULTS)
        self.seed = seed
        self.start_token = (
            start_token if start_token is not None else (HELIUM_BOS if cfg.n_q == 0 else cfg.text_initial_token)
        )
        self._cache = lm.make_cache()
        self.reset()

    @property
    def vocab_size(self) -> int:
        """Tokens the model reads (its text embedding); it predicts `cfg.text_out_card`."""
        return self.cfg.text_card + 1

    def reset(self) -> None:
        """Forget the text so far (cache buffers are kept)."""
        for c in self._cache:
            c.reset()
        self._key = mx.random.key(self.seed)
        self._logits: mx.array | None = None
        self._pending: int | None = None  # sampled, fed at the next step (none wasted at the end)
        self.position = 0
        self.last_logits: mx.array | None = None

    def _feed(self, tokens: list[int]) -> None:
        """Run the model over `tokens` (appended to the sequence); keep the last logits."""
        bad = [t for t in tokens if not 0 <= t < self.vocab_size]
        if bad:
            raise UsageError(f"token id(s) {bad[:5]} outside the model's vocabulary [0, {self.vocab_size})")
        for i in range(0, len(tokens), _PREFILL_CHUNK):
            chunk = tokens[i : i + _PREFILL_CHUNK]
            x = np.full((1, 1 + self.cfg.n_q, len(chunk)), -1, dtype=np.int32)
            x[0, 0] = chunk
            _, logits = self.lm.forward_text(mx.array(x), None, self._cache, dtype=self.act)
            self._logits = logits[:, -1]
            mx.eval(self._logits)
            self.position += len(chunk)

    def prefill(self, prompt: Iterable[int]) -> None:
        """Start a new text: the start token, then `prompt` (token ids)."""
        self.reset()
        self._feed([self.start_token, *[int(t) for t in prompt]])

    def step(self) -> int:
        """Sample the next token (the previous one is fed back first)."""
        if self._pending is not None:
            self._feed([self._pending])
        if self._logits is None:
            raise UsageError("call prefill() before step()")
        self.last_logits = self._logits
        key = None
        if not self.sampler.greedy:
            self._key, key = mx.random.split(self._key)
        token = int(self.sampler(self._logits.astype(mx.float32), key).item())
        self._pending = token
        return token

    def generate(self, prompt: Iterable[int], max_tokens: int, stop: Iterable[int] = ()) -> Iterator[int]:
        """Yield up to `max_tokens` tokens after `prompt`, ending early after a token in `stop`."""
        if max_tokens < 0:
            raise UsageError(f"max_tokens must be >= 0, got {max_tokens}")
        stop = set(stop)
        self.prefill(prompt)
        for _ in range(max_tokens):
            token = self.step()
            yield token
            if token in stop:
                return
