"""Our parameter names and shapes for the published 7B are the published layouts
(reference facts: shared/reference/upstream-moshi.md §2a, §2b, §1.5). Nothing is evaluated:
the model's arrays stay lazy."""

from mlx.utils import tree_flatten

from moshi_mlx import models
from moshi_mlx.models.lm import Lm
from moshi_mlx.weights.lm_keys import pytorch_layout, pytorch_sources
from moshi_mlx.weights.quantize import apply_quantization, quantizable_modules


def test_moshi_7b_mlx_names_and_shapes():
    cfg = models.lm_preset("moshiko")
    params = {k: tuple(v.shape) for k, v in tree_flatten(Lm(cfg).parameters())}
    expected = {
        "text_emb.weight": (32001, 4096),
        "audio_embs.15.weight": (2049, 4096),
        "transformer.layers.31.self_attn.in_proj.weight": (12288, 4096),
        "transformer.layers.0.self_attn.out_proj.weight": (4096, 4096),
        "transformer.layers.0.norm1.weight": (4096,),
        "transformer.layers.0.gating.linear_in.weight": (22528, 4096),
        "transformer.layers.0.gating.linear_out.weight": (4096, 11264),
        "out_norm.weight": (4096,),
        "text_linear.weight": (32000, 4096),
        "depformer.slices.0.linear_in.weight": (1024, 4096),
        "depformer.slices.7.linear_out.weight": (2048, 1024),
        "depformer.slices.0.emb.weight": (32001, 1024),
        "depformer.slices.1.emb.weight": (2049, 1024),
        "depformer.slices.7.transformer.layers.5.self_attn.in_proj.weight": (3072, 1024),
        "depformer.slices.3.transformer.layers.2.gating.linear_in.weight": (5632, 1024),
        "depformer.slices.3.transformer.layers.2.gating.linear_out.weight": (1024, 2816),
        "depformer.slices.4.transformer.layers.0.norm2.weight": (1024,),
    }
    for k, shape in expected.items():
        assert params[k] == shape, k
    assert len([k for k in params if k.startswith("depformer.slices.")]) == 8 * (3 + 6 * 6)
    total = sum(a * (b if len(s) > 1 else 1) for s in params.values() for a, b in [(s[0], s[-1])])
    assert abs(total / 1e9 - 7.688) < 0.01  # upstream §1.5: 7.688B parameters


def test_moshi_7b_pytorch_names_map_onto_ours():
    cfg = models.lm_preset("moshiko")
    torch_shapes = pytorch_layout(cfg)
    assert torch_shapes["transformer.layers.0.self_attn.in_proj_weight"] == (12288, 4096)
    assert torch_shapes["depformer.layers.0.self_attn.in_proj_weight"] == (8 * 3072, 1024)
    assert torch_shapes["depformer.layers.0.gating.7.linear_in.weight"] == (5632, 1024)
    assert torch_shapes["depformer_emb.6.weight"] == (2049, 1024)
    assert torch_shapes["out_norm.alpha"] == (1, 1, 4096)
    sources = pytorch_sources(cfg, torch_shapes)
    ours = {k for k, _ in tree_flatten(Lm(cfg).parameters())}
    assert set(sources) == ours
    assert {s.key for s in sources.values()} == set(torch_shapes)


def test_moshi_7b_q4_layout():
    cfg = models.lm_preset("moshiko")
    lm = Lm(cfg)
    apply_quantization(lm, {p: (4, 32) for p in quantizable_modules(lm)})
    params = {k: tuple(v.shape) for k, v in tree_flatten(lm.parameters())}
    assert params["text_emb.weight"] == (32001, 512) and params["text_emb.scales"] == (32001, 128)
    assert params["transformer.layers.0.gating.linear_out.weight"] == (4096, 1408)
    assert params["depformer.slices.0.linear_in.biases"] == (1024, 128)
    assert params["out_norm.weight"] == (4096,)
