"""`SamplingOptions` (the one list of how LmGen samples) and what LmGen accepts beside it:
prebuilt samplers and logits processors, as mlx-lm's `generate_step` does."""

import dataclasses

import mlx.core as mx
import numpy as np
import pytest

from moshi_mlx import models
from moshi_mlx.constants import DEFAULT_SEED
from moshi_mlx.errors import UsageError
from moshi_mlx.models.backend import ComputeFormat
from moshi_mlx.models.config import LM_GEN_KEYS
from moshi_mlx.models.sampling import REFERENCE_DEFAULTS, Sampler, SamplingOptions


def _lm(**over):
    d = models.lm_preset("random-tiny").to_dict()
    d.update(over)
    return models.random_lm(models.LmConfig.from_dict(d), seed=3)


def _run(gen, n=6):
    rng = np.random.default_rng(0)
    return [gen.step(rng.integers(0, gen.cfg.card, gen.cfg.user_q)) for _ in range(n)]


def test_options_are_frozen_checked_and_named():
    o = SamplingOptions(temp=0.5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.temp = 1.0
    assert o.seed == DEFAULT_SEED and o.temp_text is None
    for bad, msg in [
        ({"temp": float("nan")}, "temp must be a finite number"),
        ({"top_p_text": 2}, "top_p_text"),
        ({"top_k": -1}, "top_k"),
        ({"seed": -1}, r"seed must be in \[0, 2\*\*32\)"),
        ({"seed": 2**32}, "seed"),
        ({"use_sampling": "yes"}, "use_sampling"),
        ({"cfg_coef": float("inf")}, "cfg_coef"),
    ]:
        with pytest.raises(UsageError, match=msg):
            SamplingOptions(**bad)
    with pytest.raises(UsageError, match="unknown sampling option.*temperature; known: temp, temp_text"):
        SamplingOptions.of(temperature=1.0)
    assert SamplingOptions.of(o, top_k=5, seed=None) == SamplingOptions(temp=0.5, top_k=5)  # None: left as is
    # the config keys are the same names (every field but the seed)
    assert set(LM_GEN_KEYS) == set(SamplingOptions.names()) - {"seed"} == set(REFERENCE_DEFAULTS)


def test_unset_options_come_from_the_config_then_the_reference():
    r = SamplingOptions(temp=0.1).resolved({"temp_text": 0.3, "top_k": 9})
    assert (r.temp, r.temp_text, r.top_k, r.top_k_text, r.cfg_coef) == (0.1, 0.3, 9, 25, 1.0)
    gen = models.LmGen(_lm(lm_gen_config={"top_k_text": 7}), SamplingOptions(temp=0.0), temp_text=0.2)
    assert gen.options.temp == 0.0 and gen.options.temp_text == 0.2 and gen.options.top_k_text == 7
    assert gen.text_sampler == Sampler(0.2, 7, 0.0) and gen.audio_sampler.greedy
    with pytest.raises(UsageError, match="unknown sampling option"):
        models.LmGen(_lm(), tmp=0.5)


def test_options_object_and_keywords_sample_the_same():
    lm = _lm()
    a = _run(models.LmGen(lm, SamplingOptions(temp=0.9, top_k=20, seed=4)))
    b = _run(models.LmGen(lm, temp=0.9, top_k=20, seed=4))
    assert a == b
    assert a != _run(models.LmGen(lm, temp=0.9, top_k=20, seed=5))  # the seed is used


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_prebuilt_samplers_replace_the_options(compiled):
    """A sampler given as a function is what draws (here: the built-in one, so the tokens
    equal the options' own; then a function that always picks token 3)."""
    lm = _lm(context=64)
    fmt = ComputeFormat(compiled=compiled)
    ref = _run(models.LmGen(lm, temp=0.7, temp_text=0.6, seed=2, compute=fmt))
    own = models.LmGen(
        lm,
        seed=2,
        compute=fmt,
        text_sampler=lambda lg, k: Sampler(0.6, 25)(lg, k),
        audio_sampler=lambda lg, k: Sampler(0.7, 250)(lg, k),
    )
    assert own.compiled == compiled and _run(own) == ref
    three = models.LmGen(lm, compute=fmt, audio_sampler=lambda lg, k: mx.full((lg.shape[0],), 3, mx.int32))
    frames = [audio for _, audio in _run(three, 8) if audio is not None]
    assert frames and all(a == [3] * lm.cfg.dep_q for a in frames)


def test_logits_processors_run_on_the_text_logits_in_order():
    lm = _lm()
    seen = []

    def force(position, logits):
        seen.append(position)
        return mx.where(mx.arange(logits.shape[-1]) == 5, 1e9, logits)

    def log(position, logits):  # runs after `force`: sees its output
        assert int(mx.argmax(logits[0])) == 5
        return logits

    gen = models.LmGen(
        lm, temp=0.0, temp_text=0.0, logits_processors=[force, log], compute=ComputeFormat(compiled=True)
    )
    texts = [t for t, _ in _run(gen, 4)]
    assert texts == [5] * 4 and gen.prefix_text_token == 5 and seen == [0, 1, 2, 3, 4]
    assert not gen.compiled  # processors run in Python: the eager step
    with pytest.raises(UsageError, match="must be functions"):
        models.LmGen(lm, logits_processors=[None])


def test_sampler_default_temperature_is_the_references():
    """Sampler's default temperature is REFERENCE_DEFAULTS' audio one, not 0.8 written again."""
    assert Sampler().temp == REFERENCE_DEFAULTS["temp"]
