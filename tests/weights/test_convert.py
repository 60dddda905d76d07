"""Streaming conversion to model folders: the result equals in-memory quantization tensor
for tensor, loads back with its quantization read from the file, generates, keeps the zero
token, reads each source tensor once in file order, and every bad input is one line."""

import json

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from moshi_mlx import models
from moshi_mlx.cli.convert import run
from moshi_mlx.models.config import LmConfig
from moshi_mlx.weights import convert as convert_mod
from moshi_mlx.weights.convert import convert, plan_conversion, resolve_source
from moshi_mlx.errors import ConfigError, Error
from moshi_mlx.weights.errors import WeightsError
from moshi_mlx.weights import lm_loader
from moshi_mlx.weights.lm_loader import load_lm_state, save_lm
from moshi_mlx.weights.model_dir import model_quant_spec, read_model_dir
from moshi_mlx.weights.quantize import QuantSpec, available_modes, quantize_model
from moshi_mlx.weights.random_checkpoint import iter_random_state, write_random_checkpoint
from moshi_mlx.weights.random_state import random_state
from moshi_mlx.weights.recipes import make_recipe, module_role
from moshi_mlx.weights.safetensors_io import SafetensorsFile

from .test_published_repos import cache  # noqa: F401  (fixture)


load_lm = lm_loader.load_lm  # the model as stored (these tests compare tensors and logits with the files)


def load_lm_from_hub(repo):
    """The LM of a repo (or a local folder in its place) through the public loader, as stored."""
    import moshi_mlx

    return moshi_mlx.load(repo, compute="stored", codec=False, tokenizer="none").lm


def small_cfg() -> LmConfig:
    """random-tiny with widths every group size divides (the real 7B's widths do too)."""
    d = models.lm_preset("random-tiny").to_dict()
    d.update(
        dim=128,
        hidden_scale=6.0,
        depformer_dim=128,
        depformer_dim_feedforward=384,
        depformer_weights_per_step_schedule=[0, 0],
    )  # shared depformer weights: stacked sources
    d.pop("_source", None)
    return LmConfig.from_dict(d)


@pytest.fixture(scope="module")
def cfg():
    return small_cfg()


@pytest.fixture(scope="module")
def src(tmp_path_factory, cfg):
    """A bf16 PyTorch-layout checkpoint with its config.json beside it."""
    return write_random_checkpoint(cfg, tmp_path_factory.mktemp("src"), seed=3)


def _params(lm) -> dict:
    return dict(tree_flatten(lm.parameters()))


def _assert_same_params(a, b):
    pa, pb = _params(a), _params(b)
    assert pa.keys() == pb.keys(), set(pa) ^ set(pb)
    for k in pa:
        assert pa[k].dtype == pb[k].dtype, k
        assert mx.array_equal(pa[k], pb[k]).item(), k


def _tokens(lm, n=8):
    gen = models.LmGen(lm, temp=0.0, temp_text=0.0)
    return [gen.step([i % 60, -1 if i % 3 == 0 else 7]) for i in range(n)]


def _in_memory(src, cfg, recipe: str):
    """The same model quantized the plain way: load bf16, quantize in place."""
    lm = load_lm(src, cfg)
    if recipe in ("q8", "q4"):
        bits, group = (8, 64) if recipe == "q8" else (4, 32)
        quantize_model(lm, bits, group)
    elif recipe == "mixed-4-8":
        quantize_model(lm, 4, 32, lambda p, m: p.startswith("transformer."))
        quantize_model(lm, 8, 64)
    elif recipe == "float-heads":
        quantize_model(lm, 4, 32, lambda p, m: module_role(p) not in ("embedding", "head"))
    return lm


def test_random_checkpoint_streams_random_state(cfg):
    ref = random_state(cfg, 5)
    got = dict(iter_random_state(cfg, 5))
    assert got.keys() == ref.keys()
    for k in ref:
        np.testing.assert_array_equal(got[k], ref[k])
    scaled = dict(iter_random_state(cfg, 5, head_scale=4.0))
    np.testing.assert_allclose(scaled["text_linear.weight"], 4 * ref["text_linear.weight"], rtol=1e-6)
    np.testing.assert_allclose(scaled["linears.1.weight"], 4 * ref["linears.1.weight"], rtol=1e-6)
    np.testing.assert_array_equal(scaled["emb.0.weight"], ref["emb.0.weight"])


@pytest.mark.parametrize(
    "recipe,args,fname",
    [
        ("q8", ["-q", "--q-bits", "8"], "model.q8.safetensors"),
        ("q4", ["-q"], "model.q4.safetensors"),
        ("mixed-4-8", ["--quant-predicate", "mixed_4_8"], "model.mixed-4-8.safetensors"),
        ("float-heads", ["-q", "--recipe", "float-heads"], "model.q4-float-heads.safetensors"),
    ],
)
def test_round_trip_equals_in_memory_quantization(tmp_path, cfg, src, recipe, args, fname, capsys):
    out = tmp_path / recipe
    assert run([str(src), "--out", str(out), *args]) == 0
    assert (out / fname).is_file() and not list(out.glob("*.partial"))
    assert "100%" in capsys.readouterr().err  # the progress bar ran to the end
    lm = load_lm(out)  # the folder: config.json names the file
    ref = _in_memory(src, cfg, recipe)
    _assert_same_params(lm, ref)
    assert _tokens(lm) == _tokens(ref)
    # config.json records what the tensors say, and the file names the Mimi/tokenizer of the source config
    md = read_model_dir(out)
    assert md.config.moshi_name == fname
    spec = model_quant_spec(lm)
    for path, q in spec.items():
        assert md.quantization.spec_for(path) == q
    assert md.quantization.recipe == ("uniform" if recipe in ("q8", "q4") else recipe)
    if recipe == "mixed-4-8":
        assert spec["transformer.layers.0.gating.linear_in"] == QuantSpec(4, 32)
        for p in ("depformer.slices.1.linear_out", "text_emb", "audio_embs.3", "depformer.slices.0.emb", "text_linear"):
            assert spec[p] == QuantSpec(8, 64), p
    if recipe == "float-heads":
        assert "text_linear" not in spec and "audio_embs.0" not in spec
        assert md.quantization.spec_for("text_linear") is None
    meta = SafetensorsFile(out / fname).metadata
    assert json.loads(meta["quantization"]) == json.loads((out / "config.json").read_text())["quantization"]


def test_mlx_layout_source_gives_the_same_file(tmp_path, cfg, src):
    mlx_src = tmp_path / "mlx"
    mlx_src.mkdir()
    save_lm(load_lm(src, cfg), mlx_src / "model.safetensors")
    info = resolve_source(mlx_src / "model.safetensors", config=cfg)
    a = convert(info, tmp_path / "a", recipe=make_recipe(None, 4))
    b = convert(resolve_source(src), tmp_path / "b", recipe=make_recipe(None, 4))
    fa, fb = SafetensorsFile(a.weights), SafetensorsFile(b.weights)
    assert sorted(fa.keys()) == sorted(fb.keys())
    for k in fa.keys():
        assert mx.array_equal(fa.load(k), fb.load(k)).item(), k


def test_float_conversion_and_dtype(tmp_path, cfg, src):
    res = convert(resolve_source(src), tmp_path / "f32", dtype=mx.float32)
    assert res.weights.name == "model.safetensors" and res.record is None
    lm = load_lm(tmp_path / "f32")
    assert lm.dtype == mx.float32 and not model_quant_spec(lm)
    assert "quantization" not in json.loads((tmp_path / "f32" / "config.json").read_text())
    _assert_same_params(lm, load_lm(src, cfg, dtype=mx.float32))


@pytest.mark.skipif("mxfp4" not in available_modes(), reason="this MLX has no mxfp4 mode")
def test_fp_mode_detected_from_tensors(tmp_path, src):
    assert run([str(src), "--out", str(tmp_path / "mx"), "-q", "--q-mode", "mxfp4"]) == 0
    lm = load_lm(tmp_path / "mx")
    spec = set(model_quant_spec(lm).values())
    assert spec == {QuantSpec(4, 32, "mxfp4")}
    assert np.all(np.array(lm.audio_embs[1](mx.array([[-1, 3]])).astype(mx.float32))[0, 0] == 0)
    assert len(_tokens(lm, 3)) == 3


def test_upstream_style_files_load(tmp_path, cfg, src):
    """Files written the way Kyutai's scripts do (`nn.quantize` then `save_weights`), with
    the published names and no config.json: bits and group come from the shapes."""
    for bits, group, name in ((4, 32, "model.q4.safetensors"), (8, 64, "model.q8.safetensors")):
        lm = load_lm(src, cfg)
        nn.quantize(lm, group_size=group, bits=bits)
        folder = tmp_path / f"q{bits}"
        folder.mkdir()
        lm.save_weights(str(folder / name))
        loaded = load_lm(folder / name, cfg)
        assert set(model_quant_spec(loaded).values()) == {QuantSpec(bits, group)}
        assert type(loaded.text_emb).__name__ == "QuantizedScaledEmbedding"
        _assert_same_params(loaded, lm)
        assert _tokens(loaded, 4) == _tokens(lm, 4)


def test_auto_detection_everywhere(tmp_path, cfg, src):
    out = tmp_path / "q4"
    convert(resolve_source(src), out, recipe=make_recipe("mixed-4-8"))
    by_folder = load_lm(out)
    by_file = load_lm(out / "model.mixed-4-8.safetensors")  # config.json beside it
    by_repo = load_lm_from_hub(str(out))  # a local folder where a Hub repo is expected
    by_cfg = load_lm(out / "model.mixed-4-8.safetensors", cfg)  # explicit config, no record involved
    for lm in (by_file, by_repo, by_cfg):
        assert model_quant_spec(lm) == model_quant_spec(by_folder)
    # the record is checked against the tensors: a wrong one is named, not obeyed
    d = json.loads((out / "config.json").read_text())
    d["quantization"]["bits"] = 2  # the default spec (whichever it is) now says 2 bits
    (out / "config.json").write_text(json.dumps(d))
    with pytest.raises(
        WeightsError,
        match=r"disagrees with the tensors for \d+ module\(s\): \S+: "
        r"recorded 2-bit affine g\d+, stored [48]-bit affine g\d+",
    ) as e:
        load_lm(out)
    assert "\n" not in str(e.value)


def test_a_model_folder_stands_in_for_a_hub_repo(tmp_path, src):
    """What the run CLIs do with --hf-repo FOLDER: every file name resolves in the folder."""
    from moshi_mlx.weights.hub import hf_get, hf_get_optional

    out = tmp_path / "m"
    convert(resolve_source(src), out, recipe=make_recipe(None, 8))
    assert hf_get("config.json", str(out)) == out / "config.json"
    assert hf_get("model.q8.safetensors", str(out)) == out / "model.q8.safetensors"
    assert hf_get_optional("tokenizer.model", str(out)) is None
    with pytest.raises(WeightsError, match=f"model folder {out} has no file 'mimi.safetensors'"):
        hf_get("mimi.safetensors", str(out))
    assert set(model_quant_spec(load_lm("model.q8.safetensors", repo=str(out))).values()) == {QuantSpec(8, 64)}


def test_zero_token_semantics_survive_quantization(tmp_path, cfg, src):
    out = tmp_path / "q4"
    convert(resolve_source(src), out, recipe=make_recipe(None, 4))
    lm = load_lm(out)
    embs = [lm.text_emb, lm.audio_embs[0], lm.audio_embs[3], lm.depformer.slices[0].emb, lm.depformer.slices[1].emb]
    for emb in embs:
        assert type(emb).__name__ == "QuantizedScaledEmbedding"
        y = np.array(emb(mx.array([[-1, 5, -1]])).astype(mx.float32))
        assert np.all(y[0, 0] == 0) and np.all(y[0, 2] == 0) and np.any(y[0, 1] != 0)
    # a whole -1 user stream: same as the float model fed -1 (both see zero vectors there)
    codes = np.random.default_rng(1).integers(0, 60, (1, 5, 6))
    codes[:, 3:] = -1
    q = np.array(lm.forward_train(codes).text_logits.astype(mx.float32))
    f = np.array(load_lm(src, cfg, dtype=mx.float32).forward_train(codes).text_logits)
    assert np.isfinite(q).all() and np.corrcoef(q.ravel(), f.ravel())[0, 1] > 0.9


def test_streams_each_source_tensor_once_in_file_order(tmp_path, cfg, src, monkeypatch):
    reads = []
    orig = SafetensorsFile.load

    def spy(self, name):
        reads.append(name)
        return orig(self, name)

    monkeypatch.setattr(SafetensorsFile, "load", spy)
    convert(resolve_source(src), tmp_path / "o", recipe=make_recipe("mixed-4-8"))
    f = SafetensorsFile(src)
    assert sorted(reads) == sorted(f.keys())  # each tensor once (stacked depformer weights included)
    offsets = [f.tensors[k]["offsets"][0] for k in reads]
    assert offsets == sorted(offsets)


def test_interrupted_conversion_leaves_nothing_loadable(tmp_path, src, monkeypatch):
    def boom(plan):
        it = iter_orig(plan)
        for i, item in enumerate(it):
            if i == 5:
                raise OSError("No space left on device")
            yield item

    iter_orig = convert_mod.iter_converted
    monkeypatch.setattr(convert_mod, "iter_converted", boom)
    with pytest.raises(OSError):
        convert(resolve_source(src), tmp_path / "new" / "o", recipe=make_recipe(None, 4))
    assert list(tmp_path.iterdir()) == []  # the folders it made are gone again: nothing looks like a model


def test_no_room_for_config_json_leaves_no_new_weights(tmp_path, src, monkeypatch):
    """A disk with room for the weights but not for config.json: the weights are not renamed
    into place (a folder of new weights beside an old config, or none, would load wrong)."""
    import errno

    from moshi_mlx import outputs

    real = outputs.Staged

    class NoRoomForConfig(real):
        def __init__(self, path):
            if str(path).endswith("config.json"):
                raise outputs.os_error(path, OSError(errno.ENOSPC, "No space left on device"))
            super().__init__(path)

    monkeypatch.setattr(outputs, "Staged", NoRoomForConfig)
    monkeypatch.setattr(convert_mod, "Staged", NoRoomForConfig)
    with pytest.raises(Error, match="config.json: no space left on device"):
        convert(resolve_source(src), tmp_path / "fresh", recipe=make_recipe(None, 4))
    assert not (tmp_path / "fresh").exists()
    old = tmp_path / "old"
    old.mkdir()
    (old / "model.q4.safetensors").write_bytes(b"old weights")
    (old / "config.json").write_text("old config")
    with pytest.raises(Error, match="no space left on device"):
        convert(resolve_source(src), old, recipe=make_recipe(None, 4), force=True)
    assert (old / "model.q4.safetensors").read_bytes() == b"old weights"
    assert sorted(p.name for p in old.iterdir()) == ["config.json", "model.q4.safetensors"]


def test_a_ctrl_c_at_the_renames_replaces_both_files_or_neither(tmp_path, src, monkeypatch):
    """Ctrl-C lands as the weights are renamed into a folder holding an older conversion
    (--force): the new config.json is renamed too before the interrupt is raised (it was raised
    between the two: the old config.json beside the new weights, their temporary files left)."""
    import os
    import signal

    old = tmp_path / "old"
    old.mkdir()
    (old / "model.q4.safetensors").write_bytes(b"old weights")
    (old / "config.json").write_text("old config")
    real = os.replace
    renames = []

    def ctrl_c_at_the_first_rename(a, b):
        if not renames:
            os.kill(os.getpid(), signal.SIGINT)  # Python's handler: KeyboardInterrupt at the next line
        renames.append(os.path.basename(b))
        real(a, b)

    monkeypatch.setattr(os, "replace", ctrl_c_at_the_first_rename)
    # Python's own handler, whatever the test runner inherited: a job started in the background
    # of a non-interactive shell has SIGINT ignored, and then the Ctrl-C above would never land
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        before = signal.getsignal(signal.SIGINT)
        with pytest.raises(KeyboardInterrupt):
            convert(resolve_source(src), old, recipe=make_recipe(None, 4), force=True)
        assert signal.getsignal(signal.SIGINT) is before
    finally:
        signal.signal(signal.SIGINT, inherited)
    assert renames == ["model.q4.safetensors", "config.json"]
    assert sorted(p.name for p in old.iterdir()) == ["config.json", "model.q4.safetensors"]
    monkeypatch.setattr(os, "replace", real)
    assert read_model_dir(old).quantization is not None and (old / "model.q4.safetensors").stat().st_size > 100


def test_a_stop_signal_after_the_weights_are_written_leaves_no_temporary_file(tmp_path, src, monkeypatch):
    """SIGTERM lands as the conversion leaves its write block (after MLX's cache limit is put
    back, before the renames): through the CLI runner the folder keeps the older conversion
    and no temporary file. The weights' temporary file was convert's own NAME.partial, known
    to the block's `except` only: `model.q4.safetensors.partial` was left there."""
    import signal

    from moshi_mlx.cli.runner import run_cli

    old = tmp_path / "old"
    old.mkdir()
    (old / "model.q4.safetensors").write_bytes(b"old weights")
    (old / "config.json").write_text("old config")
    real = convert_mod.mx.set_cache_limit
    calls = []

    def sigterm_at_the_second_call(limit):
        calls.append(limit)
        out = real(limit)
        if len(calls) == 2:  # the `finally` putting the limit back
            signal.raise_signal(signal.SIGTERM)  # the runner's handler raises here
        return out

    monkeypatch.setattr(convert_mod.mx, "set_cache_limit", sigterm_at_the_second_call)
    body = lambda argv: convert(resolve_source(src), old, recipe=make_recipe(None, 4), force=True)  # noqa: E731
    assert run_cli(body, []) == 143 and len(calls) == 2
    assert sorted(p.name for p in old.iterdir()) == ["config.json", "model.q4.safetensors"]
    assert (old / "model.q4.safetensors").read_bytes() == b"old weights"


def test_force_over_another_conversion_leaves_what_a_fresh_one_would(tmp_path, src, monkeypatch):
    """--force over a float conversion with a q4 one: the folder ends as a fresh q4 conversion
    plus the user's own files (the float model.safetensors and the old --eval report were
    left beside the new files: two weights files, a report on weights no longer there); a
    conversion that fails first removes nothing."""
    fresh = tmp_path / "fresh"
    convert(resolve_source(src), fresh, recipe=make_recipe(None, 4))
    out = tmp_path / "out"
    convert(resolve_source(src), out)
    (out / "quality.json").write_text("{}")  # the old --eval report
    (out / "model.q8.safetensors.partial").write_bytes(b"x")  # a killed conversion's temporary
    (out / "README.md").write_text("mine")  # the user's
    before = sorted(p.name for p in out.iterdir())

    def boom(plan):
        for i, item in enumerate(iter_orig(plan)):
            if i == 5:
                raise OSError("No space left on device")
            yield item

    iter_orig = convert_mod.iter_converted
    monkeypatch.setattr(convert_mod, "iter_converted", boom)
    with pytest.raises(Error, match="cannot write .*model.q4.safetensors: No space left on device"):
        convert(resolve_source(src), out, recipe=make_recipe(None, 4), force=True)
    assert sorted(p.name for p in out.iterdir()) == before  # nothing lost while the new one was not complete
    assert read_model_dir(out).quantization is None
    monkeypatch.setattr(convert_mod, "iter_converted", iter_orig)
    convert(resolve_source(src), out, recipe=make_recipe(None, 4), force=True)
    assert sorted(p.name for p in out.iterdir()) == sorted([p.name for p in fresh.iterdir()] + ["README.md"])
    assert (out / "model.q4.safetensors").read_bytes() == (fresh / "model.q4.safetensors").read_bytes()
    assert (out / "README.md").read_text() == "mine"
    convert(resolve_source(src), out, force=True)  # and back to float
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert read_model_dir(out).quantization is None
    # the API converting a folder's weights into that folder: the source is an input, never stale
    source = (out / "model.safetensors").read_bytes()
    convert(resolve_source(out / "model.safetensors"), out, recipe=make_recipe(None, 4), force=True)
    assert (out / "model.safetensors").read_bytes() == source and (out / "model.q4.safetensors").is_file()


def test_source_resolution(tmp_path, cfg, src, monkeypatch):
    # no config.json: the preset whose shapes fit is used
    lonely = tmp_path / "lonely.safetensors"
    lonely.write_bytes(src.read_bytes())
    with pytest.raises(ConfigError, match="no config for lonely.safetensors: .* pass a config"):
        resolve_source(lonely)
    tiny = models.lm_preset("random-tiny")
    write_random_checkpoint(tiny, tmp_path / "tiny", seed=0)
    (tmp_path / "tiny" / "config.json").unlink()
    info = resolve_source(tmp_path / "tiny" / "model.safetensors")
    assert info.how == "preset random-tiny (matched by tensor shapes)"
    # --hf-repo from the local Hub cache, offline
    snap = tmp_path / "hub" / "models--someone--tiny-lm" / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    (tmp_path / "hub" / "models--someone--tiny-lm" / "refs").mkdir()
    (tmp_path / "hub" / "models--someone--tiny-lm" / "refs" / "main").write_text("a" * 40)
    d = cfg.to_dict()
    d.update(moshi_name="weights.safetensors", tokenizer_name="tok.model")
    (snap / "config.json").write_text(json.dumps(d))
    (snap / "weights.safetensors").write_bytes(src.read_bytes())
    (snap / "tok.model").write_bytes(b"not really a tokenizer")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    assert run(["--hf-repo", "someone/tiny-lm", "--out", str(tmp_path / "from-hub"), "-q", "--q-bits", "8"]) == 0
    md = read_model_dir(tmp_path / "from-hub")
    assert md.weights.name == "model.q8.safetensors" and md.tokenizer is not None  # the tokenizer came along
    _assert_same_params(load_lm(tmp_path / "from-hub"), _in_memory(src, cfg, "q8"))


def test_a_local_copy_of_a_repo_without_config_json_converts(tmp_path, capsys):
    """`hf download kyutai/moshiko-pytorch-bf16 --local-dir D` holds no config.json; the run
    CLIs load D by its shapes, and so does convert, as SOURCE or --hf-repo (it was refused:
    'D is a folder without config.json; pass the weights file itself')."""
    tiny = models.lm_preset("random-tiny")
    d = tmp_path / "local copy"
    write_random_checkpoint(tiny, d, seed=0)
    (d / "config.json").unlink()
    assert resolve_source(d).how == "preset random-tiny (matched by tensor shapes)"
    for i, argv in enumerate(([str(d)], ["--hf-repo", str(d)])):
        out = tmp_path / f"q8-{i}"
        assert run([*argv, "--out", str(out), "-q", "8", "--q-group-size", "32", "--quiet"]) == 0, capsys.readouterr()
        assert set(model_quant_spec(load_lm(out)).values()) == {QuantSpec(8, 32)}


# ---- bad input: one line on stderr, exit code 2 ------------------------------------------


def _one_line_error(capsys, argv, match):
    assert run(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert "Traceback" not in err[0]
    import re

    assert re.search(match, err[0]), err[0]


def test_bad_bits_group_mode_recipe(tmp_path, src, capsys):
    out = str(tmp_path / "o")
    _one_line_error(
        capsys,
        [str(src), "--out", out, "-q", "--q-bits", "7"],
        r"7-bit affine quantization is not supported \(bits: 2, 3, 4, 5, 6, 8\)",
    )
    _one_line_error(
        capsys,
        [str(src), "--out", out, "-q", "--q-group-size", "48"],
        r"group size 48 is not supported for affine quantization \(group sizes: 32, 64, 128\)",
    )
    _one_line_error(capsys, [str(src), "--out", out, "-q", "--q-bits", "four"], "--q-bits must be an integer")
    _one_line_error(capsys, [str(src), "--out", out, "-q", "--q-mode", "fancy"], "unknown quantization mode 'fancy'")
    _one_line_error(
        capsys,
        [str(src), "--out", out, "--quant-predicate", "mostly-int4"],
        "unknown quantization recipe 'mostly-int4'; known: uniform",
    )
    _one_line_error(
        capsys, [str(src), "--out", out, "--recipe", "mixed-4-8", "--q-bits", "3"], "--q-bits 3 contradicts it"
    )
    _one_line_error(capsys, [str(src), "--out", out, "--q-bits", "8"], "need -q")
    assert not (tmp_path / "o").exists()


def test_eval_flags_checked_before_converting_and_imply_eval(tmp_path, src, capsys, monkeypatch):
    """--eval-codes was read only after the conversion was written (a typo cost a whole
    conversion), or silently ignored without --eval; --out '' meant the working folder."""
    out = tmp_path / "o"
    _one_line_error(
        capsys, [str(src), "--out", str(out), "--eval-codes", str(tmp_path / "nope.npz")], "codes file not found"
    )
    wav = tmp_path / "a.wav"
    wav.write_bytes(b"RIFF" + bytes(60))
    _one_line_error(capsys, [str(src), "--out", str(out), "--eval", "--eval-codes", str(wav)], "no NumPy or zip header")
    assert not out.exists()
    monkeypatch.chdir(tmp_path)
    _one_line_error(capsys, [str(src), "--out", "", "--force"], "--out: empty path")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav"]
    report = tmp_path / "r.json"
    assert run([str(src), "--out", str(out), "-q", "--eval-json", str(report), "--eval-frames", "3", "--quiet"]) == 0
    assert json.loads(report.read_text())  # the report was made: --eval-json implies --eval


def test_group_size_must_divide_the_width(tmp_path, capsys):
    d = models.lm_preset("random-tiny").to_dict()
    d.update(depformer_dim=32, depformer_num_heads=2, depformer_dim_feedforward=132)  # depformer MLP 88 wide
    tiny = models.LmConfig.from_dict(d)
    p = write_random_checkpoint(tiny, tmp_path / "tiny", seed=0)
    _one_line_error(
        capsys,
        [str(p), "--out", str(tmp_path / "o"), "-q"],
        r"depformer.slices.0.transformer.layers.0.gating.linear_out: its input width 88 is not divisible "
        r"by the group size 32; no supported group size divides it",
    )
    with pytest.raises(
        WeightsError,
        match="depformer.slices.0.transformer.layers.0.gating.linear_in: its input width "
        "32 is not divisible by the group size 128; group sizes that divide it: 32$",
    ):
        plan_conversion(SafetensorsFile(p), tiny, make_recipe("transformers-only", 4, 128))


def test_already_quantized_truncated_and_existing_output(tmp_path, src, capsys):
    q = tmp_path / "q4"
    assert run([str(src), "--out", str(q), "-q", "--quiet"]) == 0
    capsys.readouterr()
    _one_line_error(
        capsys,
        [str(q), "--out", str(tmp_path / "again"), "-q", "--q-bits", "8"],
        r"model.q4.safetensors is already quantized \(4-bit affine g32 \(\d+ modules\)\); convert from a "
        r"float",
    )
    _one_line_error(capsys, [str(src), "--out", str(q), "-q"], "already exists and is not empty; pass --force")
    assert run([str(src), "--out", str(q), "-q", "--q-bits", "8", "--force", "--quiet"]) == 0
    assert (q / "model.q8.safetensors").is_file()
    assert set(model_quant_spec(load_lm(q)).values()) == {QuantSpec(8, 64)}  # config.json now names the q8 file
    capsys.readouterr()
    cut = tmp_path / "cut.safetensors"
    data = src.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    _one_line_error(
        capsys,
        [str(cut), "--config", str(src.parent / "config.json"), "--out", str(tmp_path / "c"), "-q"],
        "cut.safetensors is truncated",
    )
    _one_line_error(capsys, [str(tmp_path / "nope.safetensors"), "--out", str(tmp_path / "c")], "file not found")
    _one_line_error(capsys, ["--out", str(tmp_path / "c")], "nothing to convert")


def test_in_memory_state_and_config_record_round_trip(cfg):
    """A loaded quantized model's spec, recorded and read back, checks clean."""
    from moshi_mlx.weights.model_dir import QuantRecord
    from moshi_mlx.weights.quantize import quantizable_modules

    lm = load_lm_state(random_state(cfg, 1), cfg)
    quantize_model(lm, 4, 32, lambda p, m: p.startswith("transformer."))
    spec = model_quant_spec(lm)
    plan = {**spec, **{p: None for p in quantizable_modules(lm)}}
    rec = QuantRecord.from_json(json.loads(json.dumps(QuantRecord.from_plan(plan).to_json())), "x")
    rec.check(spec, list(quantizable_modules(lm)), "x")
    assert rec.default == QuantSpec(4, 32) and rec.spec_for("text_linear") is None


def test_a_config_naming_no_tokenizer_still_converts_with_one(tmp_path, capsys, cache, monkeypatch):  # noqa: F811
    """A source config.json without tokenizer_name: convert copied no tokenizer and said
    nothing, and the output then failed to load ('has no file tokenizer_spm_32k_3.model').
    Now the file loading looks for is copied from the source folder or the Hugging Face
    cache, else one line at the end says what is missing and how to add it."""
    from moshi_mlx.constants import MIMI_NAME, TOKENIZER_NAME
    from moshi_mlx.weights.resolve import resolve_model

    from .hf_cache import add_repo
    from .test_published_repos import _offline

    _offline(monkeypatch)
    src_dir = tmp_path / "src"
    write_random_checkpoint(models.lm_preset("random-tiny"), src_dir, seed=0)
    assert json.loads((src_dir / "config.json").read_text()).get("tokenizer_name") is None
    # 1. neither beside the source nor in the cache: written all the same, one line says so
    out = tmp_path / "out1"
    assert run([str(src_dir), "--out", str(out)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    assert err[-1].startswith(f"note: {out} has no {MIMI_NAME}, {TOKENIZER_NAME} ") and "--local-dir" in err[-1]
    assert f"download kyutai/moshiko-mlx-bf16 {TOKENIZER_NAME} --local-dir {out}" in err[-1], err[-1]
    # 2. beside the source: copied, and the output finds it where loading looks
    (src_dir / TOKENIZER_NAME).write_bytes(b"spm")
    res = convert(resolve_source(src_dir / "model.safetensors"), tmp_path / "out2")
    assert TOKENIZER_NAME in res.copied and res.missing_assets == [MIMI_NAME]
    assert resolve_model(tmp_path / "out2").companion("tokenizer") == tmp_path / "out2" / TOKENIZER_NAME
    assert read_model_dir(tmp_path / "out2").tokenizer == tmp_path / "out2" / TOKENIZER_NAME
    # 3. only in the cache (a published repo that holds it): copied from there
    (src_dir / TOKENIZER_NAME).unlink()
    (tmp_path / "blobs").mkdir()
    for n in (MIMI_NAME, TOKENIZER_NAME):
        (tmp_path / "blobs" / n).write_bytes(n.encode())
    add_repo(cache, "kyutai/moshiko-mlx-q8", {n: tmp_path / "blobs" / n for n in (MIMI_NAME, TOKENIZER_NAME)})
    res = convert(resolve_source(src_dir / "model.safetensors"), tmp_path / "out3")
    assert sorted(res.copied) == sorted([MIMI_NAME, TOKENIZER_NAME]) and res.missing_note() is None
    assert (tmp_path / "out3" / TOKENIZER_NAME).read_bytes() == TOKENIZER_NAME.encode()
