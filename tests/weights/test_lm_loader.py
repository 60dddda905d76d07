"""load_lm: both checkpoint layouts, quantization read from the file, the Hub cache, and
a one-line WeightsError for every kind of bad input."""

import json

import mlx.core as mx
import numpy as np
import pytest

from moshi_mlx import models
from moshi_mlx.models.config import LmConfig
from moshi_mlx.errors import ConfigError
from moshi_mlx.weights.errors import WeightsError
from moshi_mlx.weights import lm_loader
from moshi_mlx.weights.lm_loader import load_lm_state, save_lm
from moshi_mlx.weights.quantize import quantize_model
from moshi_mlx.weights.random_state import random_state
from moshi_mlx.weights.safetensors_io import SafetensorsFile, save_safetensors


load_lm = lm_loader.load_lm  # the model as stored (these tests compare tensors and logits with the files)


def load_lm_from_hub(repo):
    """The LM of a repo (or a local folder in its place) through the public loader, as stored."""
    import moshi_mlx

    return moshi_mlx.load(repo, compute="stored", codec=False, tokenizer="none").lm


def _cfg(**over) -> LmConfig:
    d = models.lm_preset("random-tiny").to_dict()
    d.update(depformer_weights_per_step_schedule=[0, 0], **over)  # shared depformer weights too
    return LmConfig.from_dict(d)


CODES = np.random.default_rng(0).integers(0, 60, (1, 5, 6))


def _logits(lm):
    out = lm.forward_train(CODES)
    return np.array(out.text_logits), np.array(out.audio_logits)


def _save_np(path, tensors):
    save_safetensors(path, {k: mx.array(v) for k, v in tensors.items()})


def _tokens(lm, n=6):
    gen = models.LmGen(lm, temp=0.0, temp_text=0.0)
    return [gen.step([i % 60, 1]) for i in range(n)]


@pytest.fixture(scope="module")
def cfg():
    return _cfg()


@pytest.fixture(scope="module")
def reference(cfg):
    return _logits(load_lm_state(random_state(cfg, 7), cfg))


def test_pytorch_released_names(tmp_path, cfg, reference):
    p = tmp_path / "model.safetensors"
    _save_np(p, random_state(cfg, 7))
    lm = load_lm(p, cfg)
    for a, b in zip(_logits(lm), reference):
        np.testing.assert_array_equal(a, b)


def test_pytorch_in_memory_names(tmp_path, cfg, reference):
    """`state_dict()` names: attention weights split per step as in_projs.N / out_projs.N."""
    state = random_state(cfg, 7)
    for k in [k for k in state if k.endswith(("in_proj_weight", "out_proj.weight"))]:
        w = state.pop(k)
        mult = cfg.dep_weights if k.startswith("depformer.") else 1
        stem = k.replace("in_proj_weight", "in_projs").replace("out_proj.weight", "out_projs")
        for i, chunk in enumerate(np.split(w, mult)):
            state[f"{stem}.{i}.weight"] = chunk
    p = tmp_path / "model.safetensors"
    _save_np(p, state)
    for a, b in zip(_logits(load_lm(p, cfg)), reference):
        np.testing.assert_array_equal(a, b)


def test_mlx_layout_round_trip_and_dtype(tmp_path, cfg, reference):
    lm = load_lm_state(random_state(cfg, 7), cfg, dtype=mx.bfloat16)
    p = tmp_path / "model.safetensors"
    save_lm(lm, p)
    assert "depformer.slices.1.transformer.layers.0.norm1.weight" in SafetensorsFile(p)
    again = load_lm(p, cfg)
    assert again.dtype == mx.bfloat16 and again.text_linear.weight.dtype == mx.bfloat16
    as_f32 = load_lm(p, cfg, dtype=mx.float32)
    assert as_f32.dtype == mx.float32
    np.testing.assert_allclose(_logits(as_f32)[0], reference[0], rtol=0.05, atol=0.05)


@pytest.mark.parametrize("recipe", ["q8g64", "q4g32", "mixed"])
def test_quantized_files_load_with_bits_from_shapes(tmp_path, cfg, recipe):
    lm = models.random_lm(cfg, seed=7)
    if recipe == "mixed":  # depformer 8-bit / 64 where the width allows, the rest 4-bit / 32
        spec = quantize_model(lm, 8, 64, lambda path, m: path.startswith("depformer"))
        spec.update(quantize_model(lm, 4, 32))
    else:
        bits, group = (8, 64) if recipe == "q8g64" else (4, 32)
        spec = quantize_model(lm, bits, group)
    p = tmp_path / f"model.{recipe}.safetensors"
    save_lm(lm, p)
    loaded = load_lm(p, cfg)
    found = {path: (m.bits, m.group_size) for path, m in loaded.named_modules() if "scales" in m}
    assert found == spec
    assert len(set(spec.values())) == (2 if recipe == "mixed" else 1)
    assert type(loaded.text_emb).__name__ == "QuantizedScaledEmbedding"
    assert _tokens(loaded) == _tokens(lm)
    assert spec  # something was quantized
    # quantized embeddings keep the zero token
    assert np.all(np.array(loaded.audio_embs[0](mx.array([[-1]]))) == 0)


def test_hibiki_embeds_eos_as_pad(tmp_path):
    cfg = _cfg(model_type="hibiki")
    lm = models.random_lm(cfg, seed=1)
    w = np.array(lm.text_emb.weight)
    np.testing.assert_array_equal(w[2], w[3])
    assert not np.array_equal(w[1], w[3])


def test_from_hub_cache_offline(tmp_path, monkeypatch, cfg, reference):
    snap = tmp_path / "hub" / "models--someone--tiny-lm" / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    (tmp_path / "hub" / "models--someone--tiny-lm" / "refs").mkdir()
    (tmp_path / "hub" / "models--someone--tiny-lm" / "refs" / "main").write_text("a" * 40)
    d = cfg.to_dict()
    d["moshi_name"] = "weights.safetensors"
    (snap / "config.json").write_text(json.dumps(d))
    _save_np(snap / "weights.safetensors", random_state(cfg, 7))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    lm = load_lm_from_hub("someone/tiny-lm")
    np.testing.assert_array_equal(_logits(lm)[0], reference[0])
    with pytest.raises(WeightsError, match="not in the local Hugging Face cache"):
        load_lm_from_hub("someone/other-lm")


# ---- bad input --------------------------------------------------------------------


def test_missing_file(tmp_path, cfg):
    with pytest.raises(WeightsError, match="file not found: .*nope.safetensors"):
        load_lm(tmp_path / "nope.safetensors", cfg)


def test_not_safetensors(tmp_path, cfg):
    p = tmp_path / "model.safetensors"
    p.write_text("this is a text file, certainly not a checkpoint")
    with pytest.raises(WeightsError, match="is not a safetensors file"):
        load_lm(p, cfg)


def test_truncated(tmp_path, cfg):
    p = tmp_path / "model.safetensors"
    _save_np(p, random_state(cfg, 7))
    data = p.read_bytes()
    p.write_bytes(data[: len(data) - 1000])
    with pytest.raises(WeightsError, match="is truncated"):
        load_lm(p, cfg)


def test_missing_and_unexpected_keys_are_named(tmp_path, cfg):
    state = random_state(cfg, 7)
    state.pop("linears.1.weight")
    state["surprise.weight"] = np.zeros((2, 2), np.float32)
    p = tmp_path / "model.safetensors"
    _save_np(p, state)
    with pytest.raises(
        WeightsError,
        match=r"missing 1 tensor\(s\): linears.1.weight; "
        r"unexpected 1 tensor\(s\): surprise.weight",
    ) as e:
        load_lm(p, cfg)
    assert "\n" not in str(e.value)


def test_shape_mismatch_is_named(tmp_path, cfg):
    p = tmp_path / "model.safetensors"
    _save_np(p, random_state(cfg, 7))
    wider = _cfg(card=80)
    with pytest.raises(WeightsError, match=r"shape mismatch\(es\): .*emb.0.weight \[65, 64\] vs expected \[81, 64\]"):
        load_lm(p, wider)


def test_bad_quantized_shapes(tmp_path, cfg):
    lm = models.random_lm(cfg, seed=7)
    quantize_model(lm, 4, 32)
    from mlx.utils import tree_flatten

    tensors = dict(tree_flatten(lm.parameters()))
    tensors["text_linear.weight"] = tensors["text_linear.weight"][:, :3]
    p = tmp_path / "model.q4.safetensors"
    save_safetensors(p, tensors)
    with pytest.raises(WeightsError, match="text_linear: .* do not fit an input width of 64"):
        load_lm(p, cfg)


def test_bitsandbytes_and_missing_config(tmp_path, cfg):
    p = tmp_path / "model.safetensors"
    _save_np(p, {"text_linear.weight_scb": np.zeros(3, np.float32)})
    with pytest.raises(WeightsError, match="text_linear.weight_scb has no int8 weight text_linear.weight beside it"):
        load_lm(p, cfg)
    with pytest.raises(ConfigError, match="no config.json beside it and its tensors fit no preset"):  # none given
        load_lm(p)
