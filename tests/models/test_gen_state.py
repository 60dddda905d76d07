"""A cache the caller owns, and a conversation saved and restored (`LmGen.state` /
`restore`, `GenState.save` / `load`): what a persona prompt prefilled once, or a saved
conversation, needs. The continuation must be token for token what it would have been."""

import numpy as np
import pytest

from moshi_mlx import models
from moshi_mlx.errors import UsageError
from moshi_mlx.models.backend import ComputeFormat
from moshi_mlx.models.generate import GenState
from moshi_mlx.modules.kv_cache import BaseCache, FrameCache, KVCache, RingChunk, RingStep


def _lm(**over):
    d = models.lm_preset("random-tiny").to_dict()
    d.update(context=24, **over)  # a ring that wraps within the test
    return models.random_lm(models.LmConfig.from_dict(d), seed=4)


USER = np.random.default_rng(3).integers(-1, 60, (60, 2))


def _steps(gen, frames):
    return [gen.step(u) for u in frames]


def test_every_cache_has_the_one_interface():
    for cls in (KVCache, RingStep, RingChunk, FrameCache):
        assert issubclass(cls, BaseCache)
    c = KVCache(4)
    assert c.offset == 0 and c.state == [] and not c.fused_kv and FrameCache.fused_kv


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_a_cache_the_caller_owns_gives_the_same_tokens(compiled):
    lm = _lm()
    fmt = ComputeFormat(compiled=compiled)
    ref = _steps(models.LmGen(lm, seed=1, compute=fmt), USER[:30])
    mine = lm.make_cache()
    gen = models.LmGen(lm, seed=1, compute=fmt, cache=mine)
    assert gen.compiled == compiled
    assert _steps(gen, USER[:30]) == ref
    assert all(c.offset == 31 for c in mine)  # the caller's caches hold the 31 positions run (position 0 + 30)
    with pytest.raises(UsageError, match="cache must be a list of 2 KVCaches"):
        models.LmGen(lm, cache=lm.make_cache()[:1])


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_a_saved_conversation_continues_token_for_token(tmp_path, compiled):
    lm = _lm()
    fmt = ComputeFormat(compiled=compiled)
    straight = _steps(models.LmGen(lm, seed=2, compute=fmt), USER)
    gen = models.LmGen(lm, seed=2, compute=fmt)
    assert _steps(gen, USER[:20]) == straight[:20]  # e.g. a persona prompt, prefilled once
    state = gen.state()
    assert _steps(gen, USER[20:]) == straight[20:]  # stepping on leaves the saved state as it was
    gen.restore(state)
    assert _steps(gen, USER[20:]) == straight[20:]
    # into another generator of the same model, with a cache its caller owns, and through a file
    state.save(tmp_path / "conv.safetensors")
    other = models.LmGen(lm, seed=2, compute=fmt, cache=lm.make_cache())
    other.restore(GenState.load(tmp_path / "conv.safetensors"))
    assert _steps(other, USER[20:]) == straight[20:]
    assert other.prefix_text_token == gen.prefix_text_token and other.frames == len(USER)


def test_a_state_of_another_model_is_refused(tmp_path):
    state = models.LmGen(_lm(), seed=0).state()
    with pytest.raises(UsageError, match="another model"):
        models.LmGen(_lm(num_layers=3), seed=0).restore(state)
    with pytest.raises(UsageError, match="takes a GenState"):
        models.LmGen(_lm(), seed=0).restore({"position": 3})
    (tmp_path / "x.safetensors").write_bytes(b"not a state")
    with pytest.raises(UsageError, match="not a saved generator state"):
        GenState.load(tmp_path / "x.safetensors")


def test_a_state_is_saved_under_its_name_and_never_half(tmp_path, monkeypatch):
    """`save("conv.state")` writes exactly that file (MLX's save_safetensors adds
    '.safetensors' to a name without it: it wrote conv.state.safetensors, and load("conv.state")
    did not find it); a save interrupted over an existing state leaves the old one whole, and
    no temporary file behind."""
    import mlx.core as mx

    lm = _lm()
    gen = models.LmGen(lm, seed=5)
    _steps(gen, USER[:4])
    path = tmp_path / "conv.state"
    gen.state().save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conv.state"]
    assert GenState.load(path).frames == 4
    old = path.read_bytes()

    def interrupted(f, arrays, metadata=None):
        f.write(b"\0" * 100)  # a part of the new state, then Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(mx, "save_safetensors", interrupted)
    _steps(gen, USER[4:8])
    with pytest.raises(KeyboardInterrupt):
        gen.state().save(path)
    assert path.read_bytes() == old and sorted(p.name for p in tmp_path.iterdir()) == ["conv.state"]


def test_a_prefilled_prompt_is_saved_with_the_conversation():
    """A prompt prefilled once (PersonaPlex's voice and role: `prefill`), saved, and reused by
    a generator that never saw it: the same tokens as the one that prefilled it, its
    given audio still forced where the prompt's frames are owed."""
    lm = _lm()
    cfg = lm.cfg
    frames = np.random.default_rng(9).integers(0, 60, (cfg.num_streams, 12))
    gen = models.LmGen(lm, seed=6)
    gen.prefill(frames)
    state = gen.state()
    assert state.forced_until == 12
    straight = _steps(gen, USER[:15])
    other = models.LmGen(lm, seed=6, cache=lm.make_cache())
    other.restore(state)
    assert _steps(other, USER[:15]) == straight
