"""PyTorch int8 checkpoints (`quantize: true`, moshi's scripts/export_quantized.py): random
files in the exact key layout moshi 0.2.13 saves (tests/fixtures/lm/int8_layout.json, from
scripts/make_fixtures_int8.py) load and convert as their dequantized float weights, checked
against a dequantization computed here with numpy."""

import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from moshi_mlx.models.config import LmConfig
from moshi_mlx.weights import lm_loader
from moshi_mlx.weights.convert import SourceInfo, convert
from moshi_mlx.weights.errors import WeightsError
from moshi_mlx.weights.random_state import _scale
from moshi_mlx.weights.safetensors_io import SafetensorsFile, save_safetensors

LAYOUTS = json.loads((Path(__file__).resolve().parent.parent / "fixtures" / "lm" / "int8_layout.json").read_text())
_MX = {"BF16": mx.bfloat16, "F32": mx.float32}


def _files(name: str, root: Path, seed: int = 0):
    """(config, int8 file, float32 file of the numpy dequantization of the same weights)."""
    case = LAYOUTS[name]
    cfg = LmConfig.from_dict({**case["config"], "quantize": True})
    rng = np.random.default_rng(seed)
    q, ref = {}, {}
    for k, (dt, shape) in sorted(case["layout"].items()):
        if k.endswith("_scb"):
            continue
        if dt == "I8":
            cb = rng.integers(-127, 128, shape).astype(np.int8)
            scb = (rng.uniform(0.5, 2.0, shape[0]) * shape[1] ** -0.5).astype(np.float32)
            q[k], q[k + "_scb"] = mx.array(cb), mx.array(scb)
            # bitsandbytes int8_vectorwise_dequant: A * stats.view(-1, 1) * 7.874015718698502e-3, float32
            ref[k] = (cb.astype(np.float32) * scb[:, None]) * np.float32(7.874015718698502e-3)
            exact = cb.astype(np.float64) * scb[:, None].astype(np.float64) / 127
            np.testing.assert_allclose(ref[k], exact, rtol=2.5e-7, atol=0)
        else:
            mean, std = _scale(k, tuple(shape))
            q[k] = mx.array((rng.standard_normal(shape) * std + mean).astype(np.float32)).astype(_MX[dt])
            ref[k] = np.array(q[k].astype(mx.float32))
    save_safetensors(root / "model.q8.safetensors", q)
    save_safetensors(root / "model.f32.safetensors", {k: mx.array(v) for k, v in ref.items()})
    return cfg, root / "model.q8.safetensors", root / "model.f32.safetensors"


def _params(lm) -> dict:
    return {k: np.array(v.astype(mx.float32)) for k, v in tree_flatten(lm.parameters())}


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_loads_as_its_dequantized_weights(tmp_path, name):
    cfg, q8, f32 = _files(name, tmp_path)
    ours = _params(lm_loader.load_lm(q8, cfg, dtype=mx.float32))
    ref = _params(lm_loader.load_lm(f32, cfg, dtype=mx.float32))
    assert ours.keys() == ref.keys()
    for k in ref:
        assert np.array_equal(ours[k], ref[k]), k
    # as stored (no dtype): the int8 weights come as bfloat16, like the file's other tensors
    lm = lm_loader.load_lm(q8, cfg)
    w = dict(tree_flatten(lm.parameters()))["transformer.layers.0.self_attn.in_proj.weight"]
    assert w.dtype == mx.bfloat16
    assert np.array_equal(
        np.array(w.astype(mx.float32)),
        np.array(mx.array(ref["transformer.layers.0.self_attn.in_proj.weight"]).astype(mx.bfloat16).astype(mx.float32)),
    )


def test_convert_reads_the_dequantized_weights(tmp_path):
    """convert of the int8 file == convert of its numpy dequantization (bfloat16 MLX folder;
    the variants widths fit no group size, the LoRA tests quantize after an adapter)."""
    cfg, q8, f32 = _files("variants", tmp_path)
    plain = LmConfig.from_dict(LAYOUTS["variants"]["config"])
    a = convert(SourceInfo(q8, cfg, "test"), tmp_path / "a")
    b = convert(SourceInfo(f32, plain, "test"), tmp_path / "b")
    fa, fb = SafetensorsFile(a.weights), SafetensorsFile(b.weights)
    assert sorted(fa.keys()) == sorted(fb.keys())
    assert fa.dtype("transformer.layers.0.self_attn.in_proj.weight") == "BF16"
    for k in fa.keys():
        assert np.array_equal(np.array(fa.load(k).astype(mx.float32)), np.array(fb.load(k).astype(mx.float32))), k
    assert "quantize" not in json.loads(a.config.read_text())
    assert lm_loader.load_lm(tmp_path / "a") is not None


def test_config_accepts_quantize():
    cfg = LmConfig.from_dict({**LAYOUTS["variants"]["config"], "quantize": True})
    assert cfg.quantize and cfg.to_dict()["quantize"] is True
    assert "quantize" not in LmConfig.from_dict(LAYOUTS["variants"]["config"]).to_dict()


def test_bad_int8_files_are_one_line(tmp_path):
    cfg = LmConfig.from_dict(LAYOUTS["variants"]["config"])
    w = mx.zeros((500, 96), mx.int8)
    for tensors, match in (
        ({"text_linear.weight_scb": mx.zeros((500,))}, "has no int8 weight text_linear.weight"),
        (
            {"text_linear.weight": w, "text_linear.weight_scb": mx.zeros((3,))},
            r"does not hold one scale per row of text_linear.weight \[500, 96\]",
        ),
        (
            {"text_linear.weight": mx.zeros((500, 96)), "text_linear.weight_scb": mx.zeros((500,))},
            "has dtype F32, expected int8",
        ),
    ):
        save_safetensors(tmp_path / "m.safetensors", tensors)
        with pytest.raises(WeightsError, match=match) as e:
            lm_loader.load_lm(tmp_path / "m.safetensors", cfg)
        assert "\n" not in str(e.value)
