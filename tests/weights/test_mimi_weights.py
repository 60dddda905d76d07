"""Loading Mimi checkpoints: the published key list, the alternative names PyTorch accepts,
and one-line errors that name the problem for every kind of wrong file."""

import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from moshi_mlx import models
from moshi_mlx.models.mimi_config import MimiConfig, mimi_202407
from moshi_mlx.errors import UsageError
from moshi_mlx.weights.errors import WeightsError
from moshi_mlx.weights.mimi_keys import published_shapes
from moshi_mlx.weights.mimi_loader import resolve_weights
from moshi_mlx.weights.safetensors_io import SafetensorsFile, save_safetensors

from .test_published_repos import cache  # noqa: F401  (fixture)

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "mimi"
META = json.loads((FIX / "fixtures.json").read_text())
SMALL_CFG = MimiConfig.from_dict(META["small"]["config"])


def _small_tensors():
    return SafetensorsFile(FIX / "small.safetensors").load_all()


def _save(tmp_path, tensors, name="m.safetensors"):
    path = tmp_path / name
    save_safetensors(path, tensors)
    return path


def _codes(m):
    pcm = np.load(FIX / "small_expected.npz")["pcm"]
    return np.array(m.encode(pcm))


def test_published_layout_of_the_real_codec():
    """The released file has 318 tensors (as PyTorch's state_dict); spot-check shapes from
    the checkpoint's documented layout."""
    shapes = published_shapes(mimi_202407())
    assert len(shapes) == 318
    assert shapes["encoder.model.0.conv.conv.weight"] == (64, 1, 7)
    assert shapes["encoder.model.12.conv.conv.weight"] == (1024, 512, 16)
    assert shapes["decoder.model.2.convtr.convtr.weight"] == (1024, 512, 16)
    assert shapes["decoder.model.14.conv.conv.weight"] == (1, 64, 3)
    assert shapes["encoder_transformer.transformer.layers.7.self_attn.in_proj_weight"] == (1536, 512)
    assert shapes["upsample.convtr.convtr.convtr.weight"] == (512, 1, 4)
    assert shapes["quantizer.rvq_rest.vq.layers.30._codebook.embedding_sum"] == (2048, 256)


def test_in_memory_pytorch_names_load_the_same(tmp_path):
    ref = _codes(models.load_mimi(FIX / "small.safetensors", num_codebooks=8, config=SMALL_CFG))
    renamed = {}
    for k, v in _small_tensors().items():
        k = k.replace("self_attn.in_proj_weight", "self_attn.in_projs.0.weight")
        k = k.replace("self_attn.out_proj.weight", "self_attn.out_projs.0.weight")
        k = k.replace("_codebook.embedding_sum", "_codebook.embed_avg").replace(
            "_codebook.cluster_usage", "_codebook.cluster_size"
        )
        renamed[k] = v.astype(mx.bfloat16) if k.endswith("linear1.weight") else v
    m = models.load_mimi(_save(tmp_path, renamed), num_codebooks=8, config=SMALL_CFG)
    codes = _codes(m)
    assert codes.shape == ref.shape and (codes == ref).mean() > 0.5  # bf16 weights: close, not exact


def test_a_language_model_file_is_rejected(tmp_path):
    lm = {"text_emb.weight": mx.zeros((10, 4)), "transformer.layers.0.self_attn.in_proj_weight": mx.zeros((12, 4))}
    with pytest.raises(WeightsError, match="language-model checkpoint.*not a Mimi"):
        models.load_mimi(_save(tmp_path, lm), config=SMALL_CFG)
    with pytest.raises(WeightsError, match="not a Mimi checkpoint"):
        models.load_mimi(_save(tmp_path, {"foo": mx.zeros((2,))}, "other.safetensors"), config=SMALL_CFG)


def test_missing_unexpected_and_misshaped_keys_are_named(tmp_path):
    t = _small_tensors()
    missing = dict(t)
    del missing["decoder.model.5.convtr.convtr.weight"]
    with pytest.raises(WeightsError, match=r"lacks 1 Mimi weight\(s\): decoder\.model\.5\.convtr\.convtr\.weight"):
        models.load_mimi(_save(tmp_path, missing), config=SMALL_CFG)
    extra = dict(t, **{"encoder.model.99.conv.conv.weight": mx.zeros((1,))})
    with pytest.raises(WeightsError, match=r"unexpected weight\(s\).*encoder\.model\.99"):
        models.load_mimi(_save(tmp_path, extra), config=SMALL_CFG)
    bad = dict(t, **{"quantizer.rvq_first.input_proj.weight": mx.zeros((16, 31, 1))})
    with pytest.raises(
        WeightsError, match=r"wrong shape.*rvq_first\.input_proj\.weight \(16, 31, 1\) \(expected \(16, 32, 1\)\)"
    ):
        models.load_mimi(_save(tmp_path, bad), config=SMALL_CFG)


def test_the_small_file_against_the_published_config_names_the_mismatch():
    with pytest.raises(WeightsError, match="lacks"):
        models.load_mimi(FIX / "small.safetensors")


def test_truncated_and_missing_files(tmp_path):
    data = (FIX / "small.safetensors").read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="truncated"):
        models.load_mimi(cut, config=SMALL_CFG)
    with pytest.raises(WeightsError, match="not found"):
        models.load_mimi(tmp_path / "nope.safetensors", config=SMALL_CFG)


def test_rustymimi_names_a_bad_file_as_the_mlx_backend_does(tmp_path):
    """The CPU's default codec backend reads the file itself: a truncated download or the LM
    file given as Mimi were Rust's words ('MetadataIncompleteBuffer', 'cannot find tensor
    encoder.model.0.conv.conv.weight_g'); they are the MLX backend's lines now."""
    pytest.importorskip("rustymimi")
    from .hf_cache import header_only

    full = header_only(
        tmp_path / "mimi.safetensors", {k: ("F32", s) for k, s in published_shapes(mimi_202407()).items()}
    )
    size = full.stat().st_size
    with open(full, "r+b") as f:
        f.truncate(size // 2)
    lm = _save(tmp_path, {"text_emb.weight": mx.zeros((10, 4))}, "model.safetensors")
    for path, match in ((full, f"is truncated: its header describes {size} bytes"), (lm, "language-model checkpoint")):
        for backend in ("mlx", "rustymimi"):
            with pytest.raises(WeightsError, match=match):
                models.load_mimi(path, backend=backend)


def test_bad_arguments(tmp_path):
    with pytest.raises(UsageError, match="between 1 and 8"):  # the caller's value, not the file
        models.load_mimi(FIX / "small.safetensors", num_codebooks=9, config=SMALL_CFG)
    with pytest.raises(ValueError, match="unknown Mimi backend"):
        models.load_mimi(FIX / "small.safetensors", backend="torch")
    bad_cfg = json.loads(json.dumps(META["small"]["config"]))
    bad_cfg["seanet"]["activation"] = "GELU"
    with pytest.raises(WeightsError, match="activation='GELU' is not supported"):
        MimiConfig.from_dict(bad_cfg)
    bad_cfg = json.loads(json.dumps(META["small"]["config"]))
    bad_cfg["transformer"]["foo"] = 1
    with pytest.raises(WeightsError, match="unsupported key.*foo"):
        MimiConfig.from_dict(bad_cfg)


def test_hub_lookup_offline_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(WeightsError, match="(not in the local Hugging Face cache|HF_HUB_OFFLINE)"):
        resolve_weights(None, "kyutai/moshiko-mlx-q8")


def test_the_default_mimi_is_taken_from_any_cached_repo(cache, monkeypatch, tmp_path):  # noqa: F811
    """`moshi-mimi encode` (no --hf-repo) offline with only kyutai/moshiko-mlx-q4 (or an STT
    repo) downloaded: the same published Mimi is used from there; it was 'tokenizer-e351c8d8-
    checkpoint125.safetensors from kyutai/moshiko-mlx-q8 is not in the local Hugging Face cache'.
    A repo the caller names is still that repo."""
    from .hf_cache import add_repo
    from .test_published_repos import _offline

    f = tmp_path / "mimi.safetensors"
    f.write_bytes(b"the published Mimi")
    _offline(monkeypatch)
    with pytest.raises(WeightsError, match="from kyutai/moshiko-mlx-q8 is not in the local Hugging Face cache"):
        resolve_weights(None)
    snap = add_repo(cache, "kyutai/stt-1b-en_fr-candle", {"mimi-pytorch-e351c8d8@125.safetensors": f})
    assert resolve_weights(None) == (snap / "mimi-pytorch-e351c8d8@125.safetensors", None)
    snap = add_repo(cache, "kyutai/moshiko-mlx-q4", {"tokenizer-e351c8d8-checkpoint125.safetensors": f})
    assert resolve_weights(None) == (snap / "tokenizer-e351c8d8-checkpoint125.safetensors", None)
    with pytest.raises(WeightsError, match="from kyutai/moshiko-mlx-q8 is not in the local Hugging Face cache"):
        resolve_weights(None, "kyutai/moshiko-mlx-q8")


def test_random_mimi_is_seeded():
    cfg = SMALL_CFG
    a = models.random_mimi(3, config=cfg, num_codebooks=8)
    b = models.random_mimi(3, config=cfg, num_codebooks=8)
    c = models.random_mimi(4, config=cfg, num_codebooks=8)
    pcm = np.load(FIX / "small_expected.npz")["pcm"]
    ca, cb, cc = (np.array(m.encode(pcm)) for m in (a, b, c))
    np.testing.assert_array_equal(ca, cb)
    assert (ca != cc).any()
