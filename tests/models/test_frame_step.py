"""The compiled fixed-shape frame step (models/frame_step.py) against the eager one."""

import mlx.core as mx
import numpy as np
import pytest

from moshi_mlx import models
from moshi_mlx.models.backend import prepare_lm
from moshi_mlx.models.config import LmConfig


def _tiny(**over) -> LmConfig:
    d = models.lm_preset("random-tiny").to_dict()
    d.update(over)
    return LmConfig.from_dict(d)


def _generate(cfg, compiled: bool, steps: int, dtype=None, **gen_kw):
    lm = models.random_lm(cfg, seed=7)
    if dtype is not None:
        lm.set_dtype(dtype)
    fmt = prepare_lm(lm, profile="gpu", compile=compiled)
    assert fmt.compiled == compiled
    gen = models.LmGen(lm, seed=3, compute=fmt, **gen_kw)
    assert gen.compiled == compiled
    rng = np.random.default_rng(1)
    tokens, logits = [], []
    for _ in range(steps):
        tokens.append(gen.step(rng.integers(-1, cfg.card, cfg.user_q)))
        logits.append(np.array(gen.last_text_logits[0].astype(mx.float32)))
    return tokens, np.stack(logits), gen


@pytest.mark.parametrize("dtype", [None, mx.bfloat16], ids=["fp32", "bf16"])
def test_compiled_step_samples_what_the_eager_step_samples(dtype):
    """Sampling (the reference settings), across ring buckets (64, then the 100-slot
    context) and wraps: same tokens, same logits, same PRNG sequence."""
    cfg = _tiny(context=100)
    eager, le, _ = _generate(cfg, False, 230, dtype)
    comp, lc, gen = _generate(cfg, True, 230, dtype)
    assert comp == eager
    np.testing.assert_allclose(lc, le, rtol=1e-5, atol=1e-5)
    assert gen._cache[0].offset == 231  # position 0 plus one per call


def test_compiled_step_after_reset_forgets_the_conversation():
    cfg = _tiny(context=32)
    lm = models.random_lm(cfg, seed=7)
    fmt = prepare_lm(lm, profile="gpu")
    gen = models.LmGen(lm, temp=0.0, temp_text=0.0, compute=fmt)
    rng = np.random.default_rng(2)
    user = rng.integers(0, cfg.card, (40, cfg.user_q))
    first = [gen.step(u) for u in user]
    gen.reset()  # the rings keep stale keys: the mask must hide them
    assert [gen.step(u) for u in user] == first


def test_profiles_choose_the_step():
    cfg = _tiny()
    lm = models.random_lm(cfg, seed=0)
    assert prepare_lm(lm, profile="cpu").compiled is False
    assert models.LmGen(lm, compute=prepare_lm(lm, profile="cpu")).compiled is False
    assert models.LmGen(lm).compiled is False  # no format given: as stored, eager
    gpu = prepare_lm(lm, profile="gpu")
    assert gpu.compiled is True and models.LmGen(lm, compute=gpu).compiled is True
    assert not hasattr(lm, "compiled_step") and not hasattr(lm, "activation_dtype")  # the module holds parameters
    assert "compiled frame step" in prepare_lm(lm, profile="gpu").describe()
    assert prepare_lm(lm, profile="gpu", compile=False).compiled is False
    assert lm.out_norm.fused and prepare_lm(lm, profile="gpu").fused_norms > 0  # bf16 norms fed as they are
    assert prepare_lm(lm, profile="cpu").fused_norms == 0 and not lm.out_norm.fused  # back to the float32 casts
    with pytest.raises(ValueError, match="profile"):
        prepare_lm(lm, profile="tpu")


def test_unbounded_context_stays_eager():
    lm = models.random_lm(_tiny(context=None), seed=0)
    fmt = prepare_lm(lm, profile="gpu")
    assert fmt.compiled is False
    assert models.LmGen(lm, compute=fmt).compiled is False


def test_compiled_step_continues_on_another_thread():
    """The live loop steps from a worker thread: the stream continues there (its own trace)."""
    from concurrent.futures import ThreadPoolExecutor

    cfg = _tiny(context=48)
    rng = np.random.default_rng(5)
    user = rng.integers(0, cfg.card, (30, cfg.user_q))

    def gen():
        lm = models.random_lm(cfg, seed=7)
        fmt = prepare_lm(lm, profile="gpu")
        return models.LmGen(lm, temp=0.0, temp_text=0.0, compute=fmt)

    ref = gen()
    expected = [ref.step(u) for u in user]
    g = gen()
    got = [g.step(u) for u in user[:10]]
    with ThreadPoolExecutor(1) as pool:
        got += pool.submit(lambda: [g.step(u) for u in user[10:]]).result()
    assert got == expected


@pytest.mark.parametrize(
    "over",
    [dict(dep_q=0, delays=[0] * 5), dict(n_q=0, dep_q=0, delays=[0], text_card_out=1001)],
    ids=["stt-like", "helium-like"],
)
def test_compiled_step_without_depformer(over):
    cfg = _tiny(context=40, **over)
    eager, le, _ = _generate(cfg, False, 50)
    comp, lc, _ = _generate(cfg, True, 50)
    assert comp == eager
    np.testing.assert_allclose(lc, le, rtol=1e-5, atol=1e-5)


def test_compiled_step_graph_has_no_layout_nodes():
    """The accelerator step runs [B, dim] rows through StepLinears: no transpose, flatten or
    unflatten node anywhere, and one gather for all the audio streams' embeddings."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from bench.graph_count import graph_counts

    cfg = _tiny(context=40)
    lm = models.random_lm(cfg, seed=7)
    fmt = prepare_lm(lm, profile="gpu")
    gen = models.LmGen(lm, seed=3, compute=fmt)
    gen.step(np.zeros(cfg.user_q, dtype=np.int64))
    text_key, audio_keys = gen._frame_keys()
    h, guided, text = gen._frame.run_temporal(gen._inputs(gen.position), text_key)
    temporal = graph_counts(h, guided, text)
    mx.eval(h, guided, text)  # the depformer's count is then its own
    depformer = graph_counts(*gen._frame.run_depformer(h, text, audio_keys)[:1])
    # (a CPU runs attention as plain ops, with one transpose of the keys per layer)
    attentions = {id(temporal): cfg.num_layers, id(depformer): cfg.dep_q * cfg.dep_num_layers}
    for counts in (temporal, depformer):
        assert not {"Flatten", "Unflatten"} & set(counts), counts
        assert counts.get("Transpose", 0) <= attentions[id(counts)], counts
    assert temporal["Gather"] == 2  # the text table, then one gather for every audio stream
    assert temporal["Matmul"] >= 4 * cfg.num_layers  # the count is of the real graph
    # both residual adds of every layer (and the depformer's input sum) ride on a matmul
    assert temporal["AddMM"] == 2 * cfg.num_layers, temporal
    assert depformer["AddMM"] == cfg.dep_q * (2 * cfg.dep_num_layers + 1), depformer


def test_a_full_ring_attends_without_a_mask():
    """Once every slot of the bucket holds a position the step passes no mask (MLX's CUDA
    one-query attention kernel takes none); before that, one masking op per layer."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from bench.graph_count import graph_counts

    cfg = _tiny(context=40)
    lm = models.random_lm(cfg, seed=7)
    fmt = prepare_lm(lm, profile="gpu")
    gen = models.LmGen(lm, seed=3, compute=fmt)

    def selects(at: int) -> int:
        while gen.position < at:
            gen.step(np.zeros(cfg.user_q, dtype=np.int64))
        out = gen._frame.run_temporal(gen._inputs(gen.position), gen._frame_keys()[0])
        n = sum(v for k, v in graph_counts(*out).items() if "Select" in k)
        mx.eval(*out)
        gen.reset()
        return n

    assert gen._frame._mask(10, 40) is not None and gen._frame._mask(40, 40) is None
    assert selects(10) - selects(60) == cfg.num_layers
