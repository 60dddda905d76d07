"""nvidia/personaplex-7b-v1 as users hold it: its PyTorch checkpoint (475 tensors, 16
depformer slices), a config.json that NVIDIA's own loader never reads, in the Hugging Face
cache or as a file alone; an 8-slice checkpoint loads too (NVIDIA copies slices 0-7 into
8-15; the user's slices are never run here, so both load the same 8), and conversion."""

from __future__ import annotations

import json

import mlx.core as mx
import numpy as np

from moshi_mlx.models.config import preset
from moshi_mlx.models.generate import LmGen
from moshi_mlx.weights.convert import convert, resolve_source
from moshi_mlx.weights.lm_keys import pytorch_layout
from moshi_mlx.weights.lm_loader import load_lm, load_model_dir
from moshi_mlx.weights.random_state import random_state
from moshi_mlx.weights.recipes import make_recipe
from moshi_mlx.weights.resolve import resolve_model
from moshi_mlx.weights.safetensors_io import save_safetensors

from .hf_cache import add_repo, header_only, torch_layout
from .test_published_repos import cache, _offline  # noqa: F401  (fixtures)

REPO = "nvidia/personaplex-7b-v1"


def test_the_repo_in_the_cache_ignores_its_config_json(cache, monkeypatch, tmp_path):  # noqa: F811
    cfg = preset("personaplex-7b")
    (tmp_path / "w").mkdir()
    weights = header_only(tmp_path / "w" / "model.safetensors", torch_layout(cfg))
    # even a config.json that reads as a Moshi LM config (here moshiko's, 8 slices) is not used
    other = tmp_path / "config.json"
    other.write_text(json.dumps(preset("moshiko").to_dict()))
    add_repo(cache, REPO, {"model.safetensors": weights, "config.json": other})
    _offline(monkeypatch)
    got = resolve_model(REPO)
    assert got.how == "preset personaplex-7b" and got.cfg.is_persona and got.fit.pytorch
    assert len(torch_layout(cfg)) == 475
    # the file alone: its 475 tensors fit the PersonaPlex preset, not moshiko
    assert "personaplex-7b" in resolve_model(weights=weights).how


def _narrow(**over):
    d = preset("random-tiny-persona").to_dict()
    d.update(over)
    from moshi_mlx.models.config import LmConfig

    return LmConfig.from_dict(d)


def test_eight_slice_checkpoint_loads_like_sixteen_and_converts(tmp_path):
    cfg16 = _narrow()
    state = random_state(cfg16, 3)
    assert len(state) == len(pytorch_layout(cfg16))
    # an 8-slice checkpoint: slices 8-15 dropped, attention weights stacked for 8
    cfg8 = _narrow(checkpoint_dep_q=None)
    dh = 3 * cfg16.depformer_dim
    state8 = {}
    for k, v in state.items():
        if "self_attn.in_proj_weight" in k and k.startswith("depformer"):
            v = v[: 8 * dh]
        elif "self_attn.out_proj.weight" in k and k.startswith("depformer"):
            v = v[: 8 * cfg16.depformer_dim]
        if k in pytorch_layout(cfg8):
            state8[k] = v
    assert len(state8) < len(state)
    p16, p8 = tmp_path / "a16.safetensors", tmp_path / "a8.safetensors"
    save_safetensors(p16, {k: mx.array(v) for k, v in state.items()})
    save_safetensors(p8, {k: mx.array(v) for k, v in state8.items()})
    cfg_file = tmp_path / "persona.json"
    cfg_file.write_text(json.dumps(cfg16.to_dict()))
    outs = []
    for p in (p16, p8):
        lm = load_lm(p, cfg16, dtype=mx.float32)
        gen = LmGen(lm, use_sampling=False)
        outs.append([gen.step(np.arange(8) + t) for t in range(6)])
    assert outs[0] == outs[1]
    # conversion to MLX (q8 here) keeps the PersonaPlex config and loads back
    (tmp_path / "voices.tgz").write_bytes(b"presets")
    info = resolve_source(p16, config=str(cfg_file))
    out = tmp_path / "mlx-q8"
    res = convert(info, out, recipe=make_recipe(None, bits=8))
    assert "voices.tgz" in res.copied and (out / "voices.tgz").read_bytes() == b"presets"
    lm = load_model_dir(out)
    assert lm.cfg.is_persona and len(lm.depformer.slices) == 8


def test_a_local_copy_of_the_repo_ignores_its_config_json_too(monkeypatch, tmp_path):
    """`hf download nvidia/personaplex-7b-v1 --local-dir X` (a folder, not the cache): its
    config.json read as a Moshi LM config (8 depformer slices) failed with "unexpected 120
    tensors"; its tensors name the preset, as the repo id does on the Hub."""
    cfg = preset("personaplex-7b")
    copy = tmp_path / "personaplex"
    copy.mkdir()
    weights = header_only(copy / "model.safetensors", torch_layout(cfg))
    (copy / "config.json").write_text(json.dumps(preset("moshiko").to_dict()))
    (copy / "voices.tgz").write_bytes(b"presets")
    for name in ("tokenizer-e351c8d8-checkpoint125.safetensors", "tokenizer_spm_32k_3.model"):
        (copy / name).write_bytes(b"")
    _offline(monkeypatch)
    for got in (resolve_model(copy), resolve_model(weights=weights)):
        assert got.how.startswith("preset personaplex-7b") and "config.json is not read" in got.how, got.how
        assert got.cfg.is_persona and got.fit.pytorch and got.weights == weights
        assert got.mimi == cfg.mimi_name and got.tokenizer == cfg.tokenizer_name
    seen = []  # a caller's check: run on the config.json's config, then on the preset that replaces it
    assert resolve_model(copy, check=seen.append).cfg is seen[-1] and len(seen) == 2 and seen[-1].is_persona
    # a config.json that fits the weights is still the config (a converted PersonaPlex folder's)
    (copy / "config.json").write_text(json.dumps({**cfg.to_dict(), "context": 1000}))
    assert resolve_model(copy).cfg.context == 1000
