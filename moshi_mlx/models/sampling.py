"""Token sampling on the device: temperature, top-k, top-p, greedy at temperature 0, and
`SamplingOptions`, the one list of how `LmGen` samples.

Each call takes an explicit PRNG key, so a generator with a seed is reproducible and
nothing global is touched. top-k and top-p may be combined (top-k is applied first).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

import mlx.core as mx

from .. import validation as check
from ..constants import DEFAULT_SEED
from ..errors import UsageError

# The reference LMGen's defaults, used unless the model's lm_gen_config or the caller says otherwise.
REFERENCE_DEFAULTS: dict[str, Any] = {
    "use_sampling": True,
    "temp": 0.8,
    "temp_text": 0.7,
    "top_k": 250,
    "top_k_text": 25,
    "top_p": 0.0,
    "top_p_text": 0.0,
    "cfg_coef": 1.0,
}


def _opt(help: str, flag: bool = True) -> Any:
    """A SamplingOptions field: None (the model's default) unless given; `help` is its flag's."""
    return field(default=None, metadata={"help": help, "flag": flag})


@dataclass(frozen=True)
class SamplingOptions:
    """How `LmGen` samples, every option in one place (as whisper's `DecodingOptions`).

    The CLIs' sampling flags, `Model.generator`, the web page's settings and
    `LmConfig.lm_gen_config` all use these names. Each field's help is in its metadata.

    Attributes:
        temp, temp_text, top_k, top_k_text, top_p, top_p_text, use_sampling, cfg_coef:
            None means the model's `lm_gen_config`, else the reference LMGen's default
            (`REFERENCE_DEFAULTS`); `resolved(cfg)` fills them in.
        seed: Sampling seed, in [0, 2**32).

    Raises:
        UsageError: When made with a bad value (one line naming the option).
    """

    temp: float | None = _opt("audio temperature (0 = greedy)")
    temp_text: float | None = _opt("text temperature (0 = greedy)")
    top_k: int | None = _opt("audio top-k")
    top_k_text: int | None = _opt("text top-k")
    top_p: float | None = _opt("audio top-p (nucleus)")
    top_p_text: float | None = _opt("text top-p (nucleus)")
    use_sampling: bool | None = _opt("False: greedy everywhere, whatever the temperatures", flag=False)
    cfg_coef: float | None = _opt("classifier-free guidance coefficient (conditioned models, e.g. Hibiki)")
    seed: int = field(default=DEFAULT_SEED, metadata={"help": "sampling seed, in [0, 2**32)", "flag": True})

    def __post_init__(self) -> None:
        # whisper's `_verify_options`: every value checked once, here, with its name
        checks = {
            "temp": check.temperature,
            "temp_text": check.temperature,
            "top_k": check.top_k,
            "top_k_text": check.top_k,
            "top_p": check.top_p,
            "top_p_text": check.top_p,
            "cfg_coef": check.real,
            "seed": check.seed,
        }
        for name, fn in checks.items():
            v = getattr(self, name)
            if v is not None or name == "seed":
                object.__setattr__(self, name, fn(name, v))
        if self.use_sampling is not None and not isinstance(self.use_sampling, bool):
            raise UsageError(f"use_sampling must be True, False or None, got {self.use_sampling!r}")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def of(cls, options: "SamplingOptions | None" = None, **given: Any) -> "SamplingOptions":
        """`options` (default: all defaults) with the `given` values (None: left as is);
        an unknown name is one line listing the known ones."""
        unknown = sorted(set(given) - set(cls.names()))
        if unknown:
            raise UsageError(f"unknown sampling option(s) {', '.join(unknown)}; known: {', '.join(cls.names())}")
        if options is not None and not isinstance(options, SamplingOptions):
            raise UsageError(f"options must be a SamplingOptions, got {type(options).__name__}")
        base = options if options is not None else cls()
        given = {k: v for k, v in given.items() if v is not None}
        return dataclasses.replace(base, **given) if given else base

    def resolved(self, lm_gen_config: Mapping[str, Any] | None = None) -> "SamplingOptions":
        """Every None filled in: the model's `lm_gen_config` first, then `REFERENCE_DEFAULTS`."""
        defaults = {**REFERENCE_DEFAULTS, **(lm_gen_config or {})}
        return dataclasses.replace(self, **{k: defaults[k] for k in REFERENCE_DEFAULTS if getattr(self, k) is None})

    def samplers(self) -> tuple["Sampler", "Sampler"]:
        """(text sampler, audio sampler) of resolved options (use_sampling False: greedy)."""
        on = self.use_sampling is not False
        return (
            Sampler(self.temp_text if on else 0.0, self.top_k_text or 0, self.top_p_text or 0.0),
            Sampler(self.temp if on else 0.0, self.top_k or 0, self.top_p or 0.0),
        )

    def given(self) -> dict[str, Any]:
        """The options set (not None, and the seed), as keywords."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass(frozen=True)
class Sampler:
    temp: float = REFERENCE_DEFAULTS["temp"]  # the reference LMGen's audio temperature
    top_k: int = 0  # 0 = off
    top_p: float = 0.0  # 0 = off

    def __post_init__(self):
        # NaN would pass `< 0` and make every token the last id: refused by the shared checks
        object.__setattr__(self, "temp", check.temperature("temperature", self.temp))
        object.__setattr__(self, "top_k", check.top_k("top_k", self.top_k))
        object.__setattr__(self, "top_p", check.top_p("top_p", self.top_p))

    @property
    def greedy(self) -> bool:
        return self.temp == 0.0

    def __call__(self, logits: mx.array, key: mx.array | None) -> mx.array:
        """logits [B, V] -> tokens [B] (int32)."""
        if self.greedy:
            return _as_int32(mx.argmax(logits, axis=-1))
        V = logits.shape[-1]
        neg = mx.array(-float("inf"), dtype=mx.float32)
        kth = None
        if 0 < self.top_k < V:  # the k-th largest logit, read off a partition (no sort) of the
            # raw logits: dividing by a positive temperature keeps their order (and ties)
            kth = mx.partition(logits, V - self.top_k, axis=-1)[:, V - self.top_k : V - self.top_k + 1]
        tempered = logits.astype(mx.float32) / self.temp
        if kth is not None:  # one fused pass with the tempering and the draw below
            tempered = mx.where(logits < kth, neg, tempered)
        logits = tempered
        if 0.0 < self.top_p < 1.0:
            order = mx.argsort(-logits, axis=-1)
            sorted_logits = mx.take_along_axis(logits, order, axis=-1)
            probs = mx.softmax(sorted_logits, axis=-1)
            before = mx.cumsum(probs, axis=-1) - probs  # mass strictly above each token
            sorted_logits = mx.where(before > self.top_p, neg, sorted_logits)
            choice = gumbel_max(sorted_logits, key)
            return mx.take_along_axis(order, choice[:, None], axis=-1)[:, 0].astype(mx.int32)
        return gumbel_max(logits, key)


def is_greedy(sampler) -> bool:
    """A built-in greedy `Sampler` takes no PRNG key (a prebuilt sampler always gets one)."""
    return isinstance(sampler, Sampler) and sampler.greedy


def gumbel_max(logits: mx.array, key: mx.array | None) -> mx.array:
    """One exact draw from softmax(logits) per row [B, V] -> [B] (int32): the argmax of the
    logits plus Gumbel noise. In a compiled step that is three kernels (noise bits, one fused
    elementwise pass, argmax) where `mx.random.categorical`'s inverse CDF takes eight."""
    return _as_int32(mx.argmax(logits + mx.random.gumbel(logits.shape, key=key), axis=-1))


def _as_int32(index: mx.array) -> mx.array:
    """argmax's uint32 indices as int32, reinterpreted in place (a vocabulary index is far
    below 2**31): no conversion kernel per sampled token."""
    return mx.view(index, mx.int32)


def check_text_sampling(temp: float | None, top_k: int | None, top_p: float | None) -> None:
    """Sampling values as one-line usage errors (before anything is loaded)."""
    if temp is not None:
        check.temperature("temperature", temp)
    if top_k is not None:
        check.top_k("top-k", top_k)
    if top_p is not None:
        check.top_p("top-p", top_p)
