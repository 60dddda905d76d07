"""Hibiki-Zero's checkpoint: the published PyTorch names (its depformer_norms.{i} included)
map onto ours one to one, at the real 3B size, and a checkpoint in that layout converts to
q4 and q8 and loads back generating what in-memory quantization generates."""

import mlx.core as mx
import pytest
from mlx.utils import tree_flatten

from moshi_mlx import models
from moshi_mlx.cli.convert import run
from moshi_mlx.models.config import preset
from moshi_mlx.weights import lm_loader
from moshi_mlx.weights.lm_keys import pytorch_layout, pytorch_sources
from moshi_mlx.weights.quantize import quantize_model
from moshi_mlx.weights.random_checkpoint import write_random_checkpoint


def test_real_size_layout_maps_every_tensor():
    """hibiki-zero-3b: 3.13 B parameters in the PyTorch layout (the 3B of the model card), each
    PyTorch tensor read by some parameter of ours and each norm of the depformer's 16 steps a
    LayerNorm with weight and bias."""
    cfg = preset("hibiki-zero-3b")
    layout = pytorch_layout(cfg)
    assert abs(sum(int(mx.array(s).prod().item()) for s in layout.values()) / 1e9 - 3.13) < 0.01
    sources = pytorch_sources(cfg, layout)
    assert {s.key for s in sources.values()} == set(layout)
    for k in range(16):
        assert layout[f"depformer_norms.{k}.weight"] == (1024,) and layout[f"depformer_norms.{k}.bias"] == (1024,)
        assert sources[f"depformer.slices.{k}.out_norm.bias"].key == f"depformer_norms.{k}.bias"
    # GQA: 16 query heads of 128, 8 key/value heads; FF 6 x 2048 gated -> 8192; depformer 6 x 1024 -> 4096
    assert layout["transformer.layers.0.self_attn.in_proj_weight"] == (2048 + 2 * 8 * 128, 2048)
    assert layout["transformer.layers.0.gating.linear_in.weight"] == (2 * 8192, 2048)
    assert layout["depformer.layers.0.gating.8.linear_in.weight"] == (2 * 4096, 1024)
    assert layout["depformer.layers.0.self_attn.in_proj_weight"] == (9 * 3 * 1024, 1024)


@pytest.mark.parametrize("bits,group,fname", [(4, 32, "model.q4.safetensors"), (8, 64, "model.q8.safetensors")])
def test_converts_to_q4_and_q8(tmp_path, bits, group, fname):
    cfg = preset("random-tiny-hibiki-zero")
    src = write_random_checkpoint(cfg, tmp_path / "src", seed=4)
    args = ["-q"] if bits == 4 else ["-q", "--q-bits", "8"]
    assert run([str(src), "--out", str(tmp_path / "out"), *args]) == 0
    lm = lm_loader.load_lm(tmp_path / "out")
    ref = lm_loader.load_lm(src, cfg)
    quantize_model(ref, bits, group)
    pa, pb = dict(tree_flatten(lm.parameters())), dict(tree_flatten(ref.parameters()))
    assert pa.keys() == pb.keys() and all(mx.array_equal(pa[k], pb[k]).item() for k in pa)
    assert "depformer.slices.3.out_norm.weight" in pa and pa["depformer.slices.3.linear_out.scales"] is not None

    def tokens(m):
        gen = models.LmGen(m, temp=0.0, temp_text=0.0)
        return [gen.step([i % 60, 7, 64, -1]) for i in range(12)]

    assert tokens(lm) == tokens(ref)
    assert (tmp_path / "out" / fname).is_file()
