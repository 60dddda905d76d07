"""Depformer tensors several steps share (norms, a weights-per-step schedule) are held once.

The reference model has one tensor where the published MLX layout names one per slice.
After every load path (PyTorch layout, bf16 or cast; MLX layout) and every conversion
step (CPU compute format with float32 copies, in-memory quantization, saving, streaming
conversion) the slices sharing a tensor must reference the same array, MLX's active
memory must hold it once, and the files keep the per-slice keys upstream expects.
"""

import gc

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from moshi_mlx import models
from moshi_mlx.models.backend import _parallel_ok, prepare_lm, upcast_extra_bytes
from moshi_mlx.models.config import LmConfig
from moshi_mlx.models.lm import Lm
from moshi_mlx.weights.convert import SourceInfo, convert
from moshi_mlx.weights.lm_keys import shared_names
from moshi_mlx.weights.lm_loader import file_aliases, load_lm, save_lm
from moshi_mlx.weights.quantize import quantize_model
from moshi_mlx.weights.random_checkpoint import write_random_checkpoint
from moshi_mlx.weights.recipes import make_recipe
from moshi_mlx.weights.safetensors_io import SafetensorsFile

CODES = np.random.default_rng(0).integers(0, 60, (1, 5, 6))


def _cfg() -> LmConfig:
    """tts-tiny (cross-attention, demuxed text, scheduled depformer) with a depformer wide
    enough that a duplicated slice shows in MLX's active memory (~5 MB a copy in fp32)."""
    d = models.lm_preset("tts-tiny").to_dict()
    d.update(
        depformer_dim=256,
        depformer_dim_feedforward=768,
        depformer_num_layers=2,
        depformer_weights_per_step_schedule=[0, 1, 1, 1],
    )
    d.pop("_source", None)
    return LmConfig.from_dict(d)


@pytest.fixture(scope="module")
def cfg():
    return _cfg()


@pytest.fixture(scope="module")
def pt_file(tmp_path_factory, cfg):
    return write_random_checkpoint(cfg, tmp_path_factory.mktemp("pt"), seed=4, dtype="bfloat16")


def _params(lm) -> dict[str, mx.array]:
    return dict(tree_flatten(lm.parameters()))


def _distinct_bytes(params: dict) -> int:
    return sum({id(a): a.nbytes for a in params.values()}.values())


def _ideal_bytes(cfg, params: dict) -> int:
    alias = file_aliases(cfg, params)
    return sum(a.nbytes for k, a in params.items() if k not in alias)


def _assert_shared(cfg, lm) -> None:
    params = _params(lm)
    alias = file_aliases(cfg, params)
    assert alias, "the config shares nothing: the test would prove nothing"
    for k, first in alias.items():
        assert params[k] is params[first], f"{k} is a copy of {first}"
    assert _distinct_bytes(params) == _ideal_bytes(cfg, params)


def _settled_memory() -> int:
    gc.collect()
    mx.clear_cache()
    return mx.get_active_memory()


def _logits(lm):
    """Teacher-forced logits (float32) with a speaker tensor and the null LUT conditions."""
    voice = mx.array(np.random.default_rng(1).standard_normal((1, 3, 32)).astype(np.float32))
    cross = lm.cross_kv(lm.cross_source({"speaker_wavs": (voice, mx.ones((1, 3), dtype=mx.bool_))}))
    out = lm.forward_train(CODES, {"cfg": None, "control": None}, cross)
    return np.array(out.text_logits.astype(mx.float32)), np.array(out.audio_logits.astype(mx.float32))


def test_shared_names_follow_the_schedule():
    cfg = models.lm_preset("tts-tiny")  # schedule [0, 1, 2, 2], depformer_in per weight set, 1 layer
    shared = shared_names(cfg)
    s = "depformer.slices"
    for leaf in (
        "linear_in",
        "transformer.layers.0.self_attn.in_proj",
        "transformer.layers.0.self_attn.out_proj",
        "transformer.layers.0.gating.linear_in",
        "transformer.layers.0.gating.linear_out",
    ):
        assert shared[f"{s}.3.{leaf}.weight"] == f"{s}.2.{leaf}.weight"
        assert f"{s}.1.{leaf}.weight" not in shared and f"{s}.2.{leaf}.weight" not in shared
    for k in (1, 2, 3):  # one norm per depformer layer for every step, in the reference
        assert shared[f"{s}.{k}.transformer.layers.0.norm1.weight"] == f"{s}.0.transformer.layers.0.norm1.weight"
    # embeddings and output heads are per step
    assert not any(".emb." in k or (k.endswith(".linear_out.weight") and ".transformer." not in k) for k in shared)
    assert len(shared) == 5 + 3 * 2
    # no per-step weights: every slice runs the one depformer transformer
    d = cfg.to_dict()
    d.update(
        depformer_weights_per_step=False,
        depformer_weights_per_step_schedule=None,
        depformer_multi_linear=False,
        depformer_dim_feedforward=192,
    )
    d.pop("_source", None)
    one = shared_names(LmConfig.from_dict(d))
    assert (
        one[f"{s}.3.transformer.layers.0.gating.linear_in.weight"]
        == f"{s}.0.transformer.layers.0.gating.linear_in.weight"
    )
    assert one[f"{s}.2.linear_in.weight"] == f"{s}.0.linear_in.weight"


@pytest.mark.parametrize("dtype", [None, mx.float32])
def test_pytorch_layout_load_holds_shared_tensors_once(cfg, pt_file, dtype):
    lm = load_lm(pt_file, cfg, dtype=dtype)
    _assert_shared(cfg, lm)


def test_mlx_layout_keeps_per_slice_keys_and_loads_them_once(tmp_path, cfg, pt_file):
    ref = load_lm(pt_file, cfg)
    path = tmp_path / "mlx.safetensors"
    save_lm(ref, path)
    f = SafetensorsFile(path)
    assert set(f.keys()) == set(_params(Lm(cfg)))  # every slice's name, as upstream's layout has them
    for k, first in shared_names(cfg).items():  # each slice's copy, equal to the first's
        assert mx.array_equal(f.load(k), f.load(first)).item(), k
    del ref
    base = _settled_memory()
    lm = load_lm(path, cfg)
    active = _settled_memory() - base
    _assert_shared(cfg, lm)
    params = _params(lm)
    ideal = _ideal_bytes(cfg, params)
    per_name = sum(a.nbytes for a in params.values())
    assert per_name - ideal > 2_000_000  # what per-slice copies would cost here
    assert active < ideal + (per_name - ideal) / 4, (active, ideal, per_name)
    ta, aa = _logits(lm)
    tb, ab = _logits(load_lm(pt_file, cfg))
    np.testing.assert_array_equal(ta, tb)
    np.testing.assert_array_equal(aa, ab)


def test_mlx_layout_slices_that_differ_stay_apart(tmp_path, cfg, pt_file):
    """Sharing is decided by the values, not assumed from the config: an MLX file whose
    scheduled slices differ (a fine-tune, an edited file) loads as it is."""
    lm = load_lm(pt_file, cfg)
    name = "depformer.slices.3.transformer.layers.0.self_attn.in_proj.weight"
    assert shared_names(cfg)[name] == name.replace("slices.3", "slices.1")
    params = _params(lm)
    params[name] = params[name] * 2
    path = tmp_path / "edited.safetensors"
    mx.save_safetensors(str(path), params)
    got = _params(load_lm(path, cfg))
    assert mx.array_equal(got[name], params[name]).item()
    assert got[name] is not got[name.replace("slices.3", "slices.1")]
    assert (
        got[name.replace("layers.0", "layers.1")]
        is got[name.replace("layers.0", "layers.1").replace("slices.3", "slices.1")]
    )


def test_quantize_model_quantizes_shared_weights_once(tmp_path, cfg, pt_file):
    lm = load_lm(pt_file, cfg)
    floats = _params(lm)
    spec = quantize_model(lm, 8, 64)
    s = "depformer.slices"
    assert f"{s}.3.transformer.layers.0.gating.linear_in" in spec and f"{s}.2.linear_in" in spec
    mods = dict(lm.named_modules())
    for k, first in shared_names(cfg).items():
        path, first_path = k.rsplit(".", 1)[0], first.rsplit(".", 1)[0]
        a, b = mods[path], mods[first_path]
        if isinstance(a, nn.QuantizedLinear):
            assert a is not b and all(a[n] is b[n] for n in ("weight", "scales", "biases")), path
            w, sc, bi = mx.quantize(floats[k], 64, 8)
            assert mx.array_equal(a.weight, w).item() and mx.array_equal(a.scales, sc).item()
    _assert_shared(cfg, lm)
    path = tmp_path / "q8.safetensors"
    save_lm(lm, path)
    again = load_lm(path, cfg)
    _assert_shared(cfg, again)
    ta, aa = _logits(lm)
    tb, ab = _logits(again)
    np.testing.assert_array_equal(ta, tb)
    np.testing.assert_array_equal(aa, ab)


def test_upcast_counts_and_copies_shared_weights_once(cfg, pt_file):
    lm = load_lm(pt_file, cfg)
    ref = _logits(lm)
    dep = {
        id(m.weight): m.weight.size * 2
        for p, m in lm.named_modules()
        if p.startswith("depformer.") and isinstance(m, nn.Linear)
    }
    extra = upcast_extra_bytes(lm)
    assert extra["depformer"] == sum(dep.values())  # unique bytes: the budget sees what the copy costs
    base = _settled_memory()
    fmt = prepare_lm(lm, profile="cpu", upcast=["depformer"], parallel=True, activation="stored")
    grown = _settled_memory() - base
    assert fmt.upcast_bytes == extra["depformer"]
    assert grown < extra["depformer"] * 1.25, (grown, extra)  # per-slice copies would take ~1.6x here
    params = _params(lm)
    for k, first in shared_names(cfg).items():
        assert params[k] is params[first], k
        if k.endswith("proj.weight"):
            assert params[k].dtype == mx.float32
    ta, aa = _logits(lm)
    np.testing.assert_allclose(ta, ref[0], rtol=1e-2, atol=1e-2)


def test_parallel_contiguity_fix_is_shared():
    """`_parallel_ok` re-lays out a slice of a stacked tensor once for all Linears holding it."""
    stacked = mx.random.normal((3 * 1024, 1024))
    view = stacked[1024:2048]
    a, b = nn.Linear(1024, 1024, bias=False), nn.Linear(1024, 1024, bias=False)
    a.weight = b.weight = view
    other = nn.Linear(1024, 1024, bias=False)
    other.weight = stacked[2048:]
    mx.eval(stacked, view, other.weight)
    assert _parallel_ok("x", a) and _parallel_ok("y", b) and _parallel_ok("z", other)
    assert a.weight is b.weight and a.weight is not other.weight
    assert mx.array_equal(a.weight, stacked[1024:2048]).item()


def test_streaming_conversion_writes_every_slice_and_loads_once(tmp_path, cfg, pt_file):
    res = convert(
        SourceInfo(pt_file, cfg, "test"), tmp_path / "q8", recipe=make_recipe("uniform", 8, 32), copy_assets=False
    )
    f = SafetensorsFile(res.weights)
    for k, first in shared_names(cfg).items():  # every slice's keys, the copies equal to the first's
        path, first_path = k.rsplit(".", 1)[0], first.rsplit(".", 1)[0]
        quantized = f"{path}.scales" in f
        assert quantized == (not k.endswith("norm1.weight") and not k.endswith("norm2.weight")), k
        for leaf in ("weight", "scales", "biases") if quantized else ("weight",):
            assert mx.array_equal(f.load(f"{path}.{leaf}"), f.load(f"{first_path}.{leaf}")).item(), (path, leaf)
    lm = load_lm(tmp_path / "q8")
    _assert_shared(cfg, lm)
