"""LmGen against our own teacher-forced batch forward, over thousands of steps, plus the
behaviour of reset, seeds, CFG and bad input."""

import mlx.core as mx
import numpy as np
import pytest

from moshi_mlx import models
from moshi_mlx.models.config import LmConfig

from .lm_fixtures import rel_err


def _tiny(**over) -> LmConfig:
    d = models.lm_preset("random-tiny").to_dict()
    d.update(over)
    return LmConfig.from_dict(d)


def _run(gen, cfg, steps, seed=0):
    rng = np.random.default_rng(seed)
    user = rng.integers(0, cfg.card, (steps, cfg.user_q))
    texts, audio, logits = [], [], []
    for t in range(steps):
        text, frame = gen.step(user[t])
        if t == 0:
            texts.append(gen.prefix_text_token)
        texts.append(text)
        audio.append(frame)
        logits.append(gen.last_text_logits[0])
    return user, texts, audio, logits


STT_LIKE = dict(dep_q=0, delays=[0] * 5)  # text only out, all audio in (like Kyutai's STT)
HELIUM_LIKE = dict(n_q=0, dep_q=0, delays=[0], text_card_out=1001)  # text LM


@pytest.mark.parametrize(
    "context,steps,over", [(64, 4200, {}), (None, 150, {}), (16, 60, STT_LIKE), (16, 60, HELIUM_LIKE)]
)
def test_streaming_equals_teacher_forced_batch(context, steps, over):
    """Feeding frame t at call t runs training position t + 1: the batch forward of the
    generated sequence predicts exactly the generated tokens, across ~65 wraps of a 64-slot
    ring and past step 4096 (where upstream MLX breaks)."""
    cfg = _tiny(context=context, **over)
    lm = models.random_lm(cfg, seed=11)
    gen = models.LmGen(lm, temp=0.0, temp_text=0.0)
    user, texts, audio, logits = _run(gen, cfg, steps)
    D = gen.own_delay
    T = steps - D + 1 if D else steps
    codes = np.zeros((1, cfg.num_streams, T), dtype=np.int64)
    codes[0, 0] = texts[:T]
    for f in range(T if cfg.dep_q else 0):
        codes[0, 1 : 1 + cfg.dep_q, f] = audio[f + D - 1]
    codes[0, 1 + cfg.dep_q :] = user[:T].T
    out = lm.forward_train(codes)
    batch_text = np.array(out.text_logits[0])
    ours = np.stack([np.array(x) for x in logits])  # position p = t + 1
    assert rel_err(ours[: T - 1], batch_text[1:T]) < 1e-4
    assert (batch_text.argmax(-1) == codes[0, 0]).all()
    if cfg.dep_q:
        amask = np.array(out.audio_mask[0])
        pred = np.array(out.audio_logits[0]).argmax(-1)
        assert (pred[amask] == codes[0, 1 : 1 + cfg.dep_q][amask]).all()
    else:
        assert out.audio_logits is None and all(a is None for a in audio)


def test_reset_and_seed_reproduce_sampling():
    cfg = _tiny()
    lm = models.random_lm(cfg, seed=1)
    gen = models.LmGen(lm, temp=1.0, temp_text=1.0, top_k=20, top_k_text=50, seed=5)
    a = _run(gen, cfg, 30)[1]
    gen.reset()
    b = _run(gen, cfg, 30)[1]
    other = _run(models.LmGen(lm, temp=1.0, temp_text=1.0, seed=6), cfg, 30)[1]
    assert a == b
    assert a != other
    assert gen.prefix_text_token is not None and gen.position == 31 and gen.frames == 30


def test_first_call_runs_position_zero_and_audio_lags_by_the_delay():
    cfg = _tiny(delays=[0, 0, 2, 0, 2])
    gen = models.LmGen(models.random_lm(cfg, seed=2), temp=0.0, temp_text=0.0)
    outs = [gen.step([1, 2])[1] for _ in range(4)]
    # own delay 2: call t completes frame t + 1 - 2
    assert outs[0] is None and all(len(o) == cfg.dep_q for o in outs[1:])


def test_cfg_uses_the_null_condition():
    cfg = models.lm_preset("random-tiny").to_dict()
    cfg.update(
        conditioners={
            "description": {
                "type": "lut",
                "lut": {
                    "n_bins": 5,
                    "dim": 8,
                    "tokenizer": "noop",
                    "possible_values": ["very_bad", "bad", "neutral", "good", "very_good"],
                },
            }
        },
        fuser={"sum": ["description"]},
        model_type="hibiki",
    )
    cfg = LmConfig.from_dict(cfg)
    lm = models.random_lm(cfg, seed=3)

    def logits(**kw):
        gen = models.LmGen(lm, temp=0.0, temp_text=0.0, **kw)
        gen.step([1, 2])
        return np.array(gen.last_text_logits[0])

    plain = logits()
    guided = logits(cfg_coef=3.0)
    other_null = logits(cfg_coef=3.0, null_condition={"description": None})
    same_as_cond = logits(cfg_coef=3.0, null_condition={"description": "very_good"})
    assert not np.allclose(plain, guided)
    assert not np.allclose(guided, other_null)
    np.testing.assert_allclose(same_as_cond, plain, rtol=1e-5, atol=1e-5)  # null == cond: CFG is a no-op
    with pytest.raises(ValueError, match="very_great"):
        models.LmGen(lm, condition={"description": "very_great"})


def test_bad_user_input_and_unconditioned_cfg():
    cfg = _tiny()
    lm = models.random_lm(cfg, seed=4)
    gen = models.LmGen(lm)
    with pytest.raises(ValueError, match="expected 2 user codes"):
        gen.step([1, 2, 3])
    with pytest.raises(ValueError, match=r"in \[-1, 64\]"):
        gen.step([1, 65])
    with pytest.raises(ValueError, match="needs a conditioned model"):
        models.LmGen(lm, cfg_coef=2.0)


def test_lm_gen_config_defaults_and_overrides():
    d = models.lm_preset("random-tiny").to_dict()
    d["lm_gen_config"] = {"temp": 0.0, "temp_text": 0.0, "top_k": 250, "top_k_text": 50}
    lm = models.random_lm(LmConfig.from_dict(d), seed=0)
    gen = models.LmGen(lm)
    assert gen.audio_sampler.greedy and gen.text_sampler.greedy and gen.text_sampler.top_k == 50
    gen = models.LmGen(lm, temp_text=0.5)
    assert gen.text_sampler.temp == 0.5
    default = models.LmGen(models.random_lm("random-tiny"))
    assert (default.audio_sampler.temp, default.audio_sampler.top_k) == (0.8, 250)
    assert (default.text_sampler.temp, default.text_sampler.top_k) == (0.7, 25)


def test_extra_heads_and_padding_helpers():
    d = models.lm_preset("random-tiny").to_dict()
    d.update(extra_heads_num_heads=2, extra_heads_dim=6)
    gen = models.LmGen(models.random_lm(LmConfig.from_dict(d)), temp=0.0, temp_text=0.0)
    assert gen.extra_heads() == []
    gen.step([0, 0])
    heads = gen.extra_heads()
    assert len(heads) == 2 and heads[0].shape == (1, 6)
    assert abs(float(mx.sum(heads[0])) - 1.0) < 1e-5
    assert gen.is_text_padding(3) and gen.is_text_padding(0) and not gen.is_text_padding(5)


def test_a_kv_cache_that_cannot_exist_is_a_config_error(monkeypatch):
    """A config's context of 2**30 crashed the process (rc 139) when the cache was allocated."""
    from moshi_mlx.errors import ConfigError
    from moshi_mlx.models import generate
    from moshi_mlx.models.config import LmConfig

    d = models.lm_preset("random-tiny").to_dict()
    lm = models.random_lm(LmConfig.from_dict(d), seed=0)
    lm.cfg = LmConfig.from_dict(dict(d, context=2**30))  # same weights, a window no buffer can hold
    with pytest.raises(ConfigError, match="32-bit"):
        models.LmGen(lm)
    lm.cfg = LmConfig.from_dict(dict(d, context=4096))
    monkeypatch.setattr(generate, "physical_memory", lambda: 2**20)  # a 1 MB machine
    with pytest.raises(ConfigError, match="KV cache needs .* GB, more than this machine's"):
        models.LmGen(lm)
    monkeypatch.setattr(generate, "physical_memory", lambda: None)
    models.LmGen(lm).step([0, 0])  # unknown memory: no guess, it runs
