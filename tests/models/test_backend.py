"""prepare_lm: the per-backend compute format (activation dtype, two-core float mat-vecs)."""

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from moshi_mlx import models
from moshi_mlx.models.backend import default_activation_dtype, prepare_lm
from moshi_mlx.models.config import LmConfig
from moshi_mlx.modules.parallel import ParallelLinear
from moshi_mlx.weights.quantize import quantize_model

pytestmark = pytest.mark.skipif(mx.default_device().type != mx.DeviceType.cpu, reason="CPU policy")


def _cfg() -> LmConfig:
    d = models.lm_preset("random-tiny").to_dict()
    d.update(dim=512, num_heads=4, depformer_dim=128, depformer_dim_feedforward=528)  # some layers >= 1M weights
    return LmConfig.from_dict(d)


def _steps(lm, n=8, fmt=None):
    gen = models.LmGen(lm, temp=0.0, temp_text=0.0, compute=fmt)
    out, logits = [], []
    for i in range(n):
        out.append(gen.step([i % 60, (3 * i) % 60]))
        logits.append(np.array(gen.last_text_logits.astype(mx.float32)))
    return out, np.stack(logits), gen


def test_bf16_model_split_over_two_streams_is_exact():
    lm = models.random_lm(_cfg(), seed=2, dtype=mx.bfloat16)
    ref_tokens, ref_logits, _ = _steps(lm)
    fmt = prepare_lm(lm, parallel=True, upcast=False)
    assert fmt.parallel_linears > 0 and fmt.activation_dtype == "bfloat16"
    assert any(isinstance(m, ParallelLinear) for _, m in lm.named_modules())
    tokens, logits, _ = _steps(lm, fmt=fmt)
    assert tokens == ref_tokens
    np.testing.assert_array_equal(logits, ref_logits)
    # as the live loop runs it: on a pooled worker thread with its own stream
    from moshi_mlx.runtime.workers import run_in_worker

    out = {}
    assert run_in_worker(lambda: out.update(res=_steps(lm, fmt=fmt))).wait(120)
    assert out["res"][0] == ref_tokens
    np.testing.assert_array_equal(out["res"][1], ref_logits)


def test_quantized_model_gets_float32_activations_on_cpu():
    lm = models.random_lm(_cfg(), seed=2, dtype=mx.bfloat16)
    quantize_model(lm, bits=8, group_size=64)  # bf16 scales, like the published files
    assert lm.dtype == mx.bfloat16
    assert default_activation_dtype(lm) == mx.float32
    assert default_activation_dtype(lm, mx.Device(mx.gpu)) == mx.bfloat16  # Metal/CUDA: bf16 stays
    fmt = prepare_lm(lm)
    assert fmt.activation_dtype == "float32" and fmt.activation == mx.float32
    assert lm.dtype == mx.bfloat16  # the module keeps its parameters' dtype; the format travels beside it
    _, logits, gen = _steps(lm, 3, fmt)
    assert gen.dtype == mx.float32
    assert gen.last_text_logits.dtype == mx.float32
    assert all(c.keys.dtype == mx.float32 for c in gen._cache)  # the whole step runs in fp32
    # quantized scales are left as stored (bf16): fp32 copies were measured no faster
    assert lm.transformer.layers[0].self_attn.in_proj.scales.dtype == mx.bfloat16


@pytest.mark.parametrize("quantized", [True, False])
def test_gpu_format_computes_in_the_matmul_dtype_whatever_the_norms_are_stored_in(quantized):
    """A checkpoint with float32 norms (and bf16 weights or bf16 quantization scales) runs in
    bf16 on a GPU: activations, KV cache and quantized mat-vec inputs alike."""
    lm = models.random_lm(_cfg(), seed=2, dtype=mx.bfloat16)
    if quantized:
        quantize_model(lm, bits=8, group_size=64)
    for _, m in lm.named_modules():
        if type(m).__name__ == "RMSNorm":
            m.weight = m.weight.astype(mx.float32)
    assert lm.dtype == mx.float32  # what the norms alone would have chosen
    fmt = prepare_lm(lm, profile="gpu")
    assert fmt.activation_dtype == "bfloat16" and fmt.activation == mx.bfloat16
    _, _, gen = _steps(lm, 3, fmt)
    assert gen._last_hidden.dtype == mx.bfloat16 and all(c.keys.dtype == mx.bfloat16 for c in gen._cache)
    assert all(a.dtype == mx.bfloat16 for a in gen.last_audio_logits)


def test_activation_choices():
    lm = models.random_lm(models.lm_preset("random-tiny"), seed=0)
    assert prepare_lm(lm, activation="bfloat16", parallel=False).activation_dtype == "bfloat16"
    assert prepare_lm(lm, activation="stored", parallel=False).activation_dtype == "float32"
    with pytest.raises(ValueError, match="unknown activation dtype"):
        prepare_lm(lm, activation="int8")


def test_plan_upcast_depformer_first_within_budget():
    from moshi_mlx.models.backend import plan_upcast

    extra = {"depformer": 100, "temporal": 1000}
    assert plan_upcast(extra, 99) == []
    assert plan_upcast(extra, 100) == ["depformer"]
    assert plan_upcast(extra, 1099) == ["depformer"]  # the temporal copy would not fit
    assert plan_upcast(extra, 1100) == ["depformer", "temporal"]
    assert plan_upcast({"depformer": 0, "temporal": 50}, 60) == ["temporal"]  # nothing to copy: skipped


def test_upcast_gives_float32_copies_and_the_same_results():
    from moshi_mlx.models.backend import upcast_extra_bytes

    lm = models.random_lm(_cfg(), seed=5, dtype=mx.bfloat16)
    ref = models.random_lm(_cfg(), seed=5, dtype=mx.bfloat16)
    ref.set_dtype(mx.float32)  # the same (bf16-rounded) values, everything in fp32
    ref_tokens, ref_logits, _ = _steps(ref)
    extra = upcast_extra_bytes(lm)
    assert extra["depformer"] > 0 and extra["temporal"] > 0
    fmt = prepare_lm(lm, upcast=True, upcast_budget=sum(extra.values()))
    assert fmt.upcast == ["depformer", "temporal"] and fmt.upcast_bytes == sum(extra.values())
    assert fmt.activation_dtype == "float32"  # every float layer is fp32: so are the activations
    assert lm.text_emb.weight.dtype == mx.bfloat16  # embedding tables (one row read per step) stay
    tokens, logits, _ = _steps(lm, fmt=fmt)
    assert tokens == ref_tokens
    np.testing.assert_allclose(logits, ref_logits, rtol=1e-5, atol=1e-5)


def test_upcast_within_budget_keeps_the_rest_bf16():
    from moshi_mlx.models.backend import upcast_extra_bytes

    lm = models.random_lm(_cfg(), seed=5, dtype=mx.bfloat16)
    extra = upcast_extra_bytes(lm)
    fmt = prepare_lm(lm, upcast_budget=extra["depformer"])  # "auto" on a CPU
    assert fmt.upcast == ["depformer"] and fmt.activation_dtype == "bfloat16"
    assert lm.depformer.slices[0].transformer.layers[0].gating.linear_in.weight.dtype == mx.float32
    assert lm.transformer.layers[0].gating.linear_in.weight.dtype == mx.bfloat16
    _steps(lm, 2, fmt)  # bf16 activations through fp32 depformer layers (cast around them)
    q = models.random_lm(_cfg(), seed=5, dtype=mx.bfloat16)
    quantize_model(q, bits=8, group_size=64)  # layers whose width 64 does not divide stay bf16
    leftovers = sum(
        m.weight.size * 2 for _, m in q.named_modules() if type(m) is nn.Linear and m.weight.dtype == mx.bfloat16
    )
    packed = {p: m.weight for p, m in q.named_modules() if isinstance(m, nn.QuantizedLinear)}
    assert leftovers > 0 and packed
    fmt = prepare_lm(q, upcast=True, upcast_budget=2**40)
    assert fmt.upcast_bytes == leftovers  # only float layers get copies: quantized weights never expand
    assert all(m.weight is packed[p] for p, m in q.named_modules() if isinstance(m, nn.QuantizedLinear))
    with pytest.raises(ValueError, match="unknown upcast group"):
        prepare_lm(q, upcast=["decoder"])


class _FakeMetal:
    """MLX's Metal calls as a Mac would answer them (this machine has no Metal)."""

    def __init__(self, recommended: int, wired: int = 0):
        self.recommended, self.wired, self.calls = recommended, wired, []

    def install(self, monkeypatch):
        monkeypatch.setattr(mx.metal, "is_available", lambda: True)
        monkeypatch.setattr(mx, "device_info", lambda: {"max_recommended_working_set_size": self.recommended})
        monkeypatch.setattr(mx, "set_wired_limit", self.set_wired_limit)

    def set_wired_limit(self, n: int) -> int:
        old, self.wired = self.wired, n
        self.calls.append(n)
        return old


def test_gpu_format_keeps_the_weights_resident_on_metal(monkeypatch):
    from moshi_mlx.models.backend import parameter_bytes, resident_target, wired_limit

    lm = models.random_lm(_cfg(), seed=5, dtype=mx.bfloat16)
    size = parameter_bytes(lm)
    a, b = nn.Linear(64, 32, bias=False), nn.Linear(64, 32, bias=False)
    b.weight = a.weight  # one array held by two modules counts once
    assert parameter_bytes(a, b) == parameter_bytes(a) == 64 * 32 * 4
    metal = _FakeMetal(recommended=10 * size)
    metal.install(monkeypatch)
    fmt = prepare_lm(lm, profile="gpu")
    assert fmt.wired_bytes == 10 * size and fmt.memory_warning is None
    assert metal.calls == []  # preparing sets nothing: the limit is held while the model is in use
    assert "weights kept resident" in fmt.describe()
    assert prepare_lm(lm, profile="cpu").wired_bytes == 0  # the CPU format leaves it alone
    with wired_limit(fmt.wired_bytes):
        assert metal.wired == 10 * size
    assert metal.wired == 0  # given back on exit, as mlx-lm's generate does
    # a limit already higher (the user's own) is kept, never lowered, and is what comes back
    metal.wired = 20 * size
    with wired_limit(fmt.wired_bytes):
        assert metal.wired == 20 * size
    assert metal.wired == 20 * size
    # weights over 90% of what stays resident: one line saying so and what fits
    metal.wired = 0
    wired, warning = resident_target(int(0.95 * 10 * size))
    assert wired == 10 * size and "stall" in warning and "-q 4" in warning and "\n" not in warning


def test_wired_limit_is_given_back_when_the_last_holder_leaves(monkeypatch):
    """Two models at once: the limit stays raised until both are closed (in any order),
    then is what it was before the first; an exception inside the block gives it back too."""
    from moshi_mlx.models.backend import wired_limit
    from moshi_mlx.runtime import loading

    metal = _FakeMetal(recommended=1000, wired=7)
    metal.install(monkeypatch)
    first, second = wired_limit(1000), wired_limit(1000)
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert metal.wired == 1000  # the second holder still needs it
    second.__exit__(None, None, None)
    assert metal.wired == 7
    with pytest.raises(RuntimeError), wired_limit(1000):
        raise RuntimeError("boom")
    assert metal.wired == 7
    # a Model holds it from load to close() (or collection, or exit)
    model = loading._demo("random-tiny", 0, "stored", None, with_codec=False)
    model.compute = prepare_lm(model.lm, profile="gpu")
    held = loading.Model(model.cfg, model.lm, None, model.tokenizer, "test", compute=model.compute)
    assert metal.wired == 1000
    with held:
        pass
    assert metal.wired == 7
    held.close()  # twice is fine
    assert metal.wired == 7


def test_wired_limit_does_nothing_without_metal():
    from moshi_mlx.models.backend import resident_target, wired_limit

    assert not mx.metal.is_available()  # this machine
    assert resident_target(10**12) == (0, None)
    with wired_limit(10**12):  # no Metal: nothing to set
        pass


def test_memory_warning_reaches_the_cli_user(monkeypatch, capsys):
    import argparse

    from moshi_mlx.cli import model_args
    from moshi_mlx.runtime import loading

    metal = _FakeMetal(recommended=1000)  # far below the demo model's weights
    metal.install(monkeypatch)
    args = argparse.Namespace(
        model="random-tiny",
        hf_repo=None,
        quantize=None,
        moshi_weight=None,
        mimi_weight=None,
        tokenizer=None,
        lm_config=None,
        dtype="auto",
        mimi_backend="auto",
        offline=False,
        seed=0,
    )
    monkeypatch.setattr(model_args, "load", lambda **kw: _with_gpu_format(loading, kw))
    model = model_args.load_session(args)
    assert model.warnings and model.warnings[0] == model.compute.memory_warning
    err = capsys.readouterr().err
    assert err.count("warning: the weights take") == 1 and "Traceback" not in err


def _with_gpu_format(loading, kw):
    model = loading._demo("random-tiny", 0, "stored", None, with_codec=False)
    model.compute = prepare_lm(model.lm, profile="gpu")
    return model
