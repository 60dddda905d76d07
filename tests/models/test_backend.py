"""prepare_lm: the per-backend compute format (activation dtype, two-core float mat-vecs)."""

import mlx.core as mx
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


def _steps(lm, n=8):
    gen = models.LmGen(lm, temp=0.0, temp_text=0.0)
    out, logits = [], []
    for i in range(n):
        out.append(gen.step([i % 60, (3 * i) % 60]))
        logits.append(np.array(gen.last_text_logits.astype(mx.float32)))
    return out, np.stack(logits), gen


def test_bf16_model_split_over_two_streams_is_exact():
    lm = models.random_lm(_cfg(), seed=2, dtype=mx.bfloat16)
    ref_tokens, ref_logits, _ = _steps(lm)
    fmt = prepare_lm(lm, parallel=True)
    assert fmt.parallel_linears > 0 and fmt.activation_dtype == "bfloat16"
    assert any(isinstance(m, ParallelLinear) for _, m in lm.named_modules())
    tokens, logits, _ = _steps(lm)
    assert tokens == ref_tokens
    np.testing.assert_array_equal(logits, ref_logits)


def test_quantized_model_gets_float32_activations_on_cpu():
    lm = models.random_lm(_cfg(), seed=2, dtype=mx.bfloat16)
    quantize_model(lm, bits=8, group_size=64)  # bf16 scales, like the published files
    assert lm.dtype == mx.bfloat16
    assert default_activation_dtype(lm) == mx.float32
    assert default_activation_dtype(lm, mx.Device(mx.gpu)) is None  # Metal/CUDA: bf16 stays
    fmt = prepare_lm(lm)
    assert fmt.activation_dtype == "float32" and lm.dtype == mx.float32
    _, logits, gen = _steps(lm, 3)
    assert gen.last_text_logits.dtype == mx.float32
    assert all(c.keys.dtype == mx.float32 for c in gen._cache)  # the whole step runs in fp32
    # quantized scales are left as stored (bf16): fp32 copies were measured no faster
    assert lm.transformer.layers[0].self_attn.in_proj.scales.dtype == mx.bfloat16


def test_activation_choices():
    lm = models.random_lm(models.lm_preset("random-tiny"), seed=0)
    assert prepare_lm(lm, activation="bfloat16", parallel=False).activation_dtype == "bfloat16"
    assert prepare_lm(lm, activation="stored", parallel=False).activation_dtype == "float32"
    with pytest.raises(ValueError, match="unknown activation dtype"):
        prepare_lm(lm, activation="int8")
