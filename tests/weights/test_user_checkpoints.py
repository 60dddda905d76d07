"""Checkpoints and configs as users hold them after saving, editing or copying them
(loading QA): a config.json saved with a byte-order mark, wrapper prefixes from PyTorch
DDP / torch.compile and a training module's `model.`, repo ids in other capitals, Hub
sources given to convert, PersonaPlex's voices in the cache, sharded checkpoints with their
index. Weights are random, in the published key layouts."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import mlx.core as mx
import pytest
from mlx.utils import tree_flatten

from moshi_mlx.models.config import LmConfig, preset
from moshi_mlx.models.mimi_config import MimiConfig, mimi_202407
from moshi_mlx.weights import lm_loader
from moshi_mlx.weights.convert import convert, resolve_source
from moshi_mlx.weights.lm_loader import load_lm_state
from moshi_mlx.weights.random_checkpoint import write_random_checkpoint
from moshi_mlx.weights.random_state import random_state
from moshi_mlx.weights.resolve import resolve_mimi, resolve_model
from moshi_mlx.weights import hub
from moshi_mlx.weights.hub import cached, hf_get
from moshi_mlx.weights.safetensors_io import SafetensorsFile, save_safetensors

from .hf_cache import add_repo, header_only, torch_layout
from .test_published_repos import _offline, cache  # noqa: F401  (fixture)

BOM = "\ufeff"


def _with_bom(path):
    path.write_text(BOM + path.read_text(encoding="utf-8"), encoding="utf-8")
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")


def test_a_config_json_with_a_byte_order_mark_is_read(tmp_path):
    """Notepad saves UTF-8 with a BOM; every config.json a user gives was 'is not valid
    JSON: Unexpected UTF-8 BOM' (LM config, a folder's config.json, the Mimi config and the
    repo config.json naming the Mimi)."""
    src = tmp_path / "model"
    write_random_checkpoint(preset("random-tiny"), src, seed=0)
    cfg_path = src / "config.json"
    _with_bom(cfg_path)
    assert LmConfig.from_json(cfg_path).dim == preset("random-tiny").dim
    got = resolve_model(src)
    assert got.how == str(cfg_path) and got.cfg.dim == preset("random-tiny").dim
    mimi_cfg = tmp_path / "mimi.json"
    mimi_cfg.write_text(BOM + json.dumps(mimi_202407().to_dict()), encoding="utf-8")
    assert MimiConfig.from_json(mimi_cfg) == mimi_202407()
    d = json.loads(cfg_path.read_text(encoding="utf-8-sig"))
    d.update(mimi_name="my-mimi.safetensors", mimi_config_name="mimi.json")
    cfg_path.write_text(BOM + json.dumps(d), encoding="utf-8")
    (src / "my-mimi.safetensors").write_bytes(b"x")
    (src / "mimi.json").write_bytes(mimi_cfg.read_bytes())
    path, named = resolve_mimi(repo=str(src))
    assert path == src / "my-mimi.safetensors" and named == mimi_202407()


# ---- 1. a fine-tune saved from a DDP / torch.compile model ----------------------------------

WRAPPED = {
    "DDP": lambda k: "module." + k,
    "torch.compile": lambda k: "_orig_mod." + k,
    "compile inside DDP": lambda k: "module._orig_mod." + k,
    "compiled submodule": lambda k: k.replace("transformer.", "transformer._orig_mod.", 1),
    # FullyShardedDataParallel (FSDP1) around the model and each layer, activation
    # checkpointing inside (apply_activation_checkpointing): the names its state_dict() keeps
    "FSDP + checkpointed layers": lambda k: (
        "_fsdp_wrapped_module."
        + re.sub(r"^(transformer\.layers\.\d+)\.", r"\1._fsdp_wrapped_module._checkpoint_wrapped_module.", k)
    ),
    "checkpointed submodule": lambda k: k.replace("transformer.", "transformer._checkpoint_wrapped_module.", 1),
    # a training module holding the model as an attribute (Lightning's `self.model`), under DDP too
    "training module's self.model": lambda k: "model." + k,
    "self.lm inside DDP": lambda k: "module.lm." + k,
}


def _rewrite(src, dst, rename):
    """`src`'s tensors saved at `dst` under `rename(name)`, with its config.json beside."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    save_safetensors(dst, {rename(k): v for k, v in SafetensorsFile(src).load_all().items()})
    if (src.parent / "config.json").is_file():
        shutil.copy(src.parent / "config.json", dst.parent / "config.json")
    return dst


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random-tiny checkpoint in the released PyTorch layout, its config.json beside it."""
    return write_random_checkpoint(preset("random-tiny"), tmp_path_factory.mktemp("tiny"), seed=3)


def _same_params(a, b):
    pa, pb = dict(tree_flatten(a.parameters())), dict(tree_flatten(b.parameters()))
    assert pa.keys() == pb.keys()
    for k in pa:
        assert mx.array_equal(pa[k], pb[k]).item(), k


@pytest.mark.parametrize("how", list(WRAPPED))
def test_a_ddp_or_compiled_fine_tune_loads_and_converts(tiny, tmp_path, how):
    """Every name behind `module.` (DistributedDataParallel) and/or `_orig_mod.`
    (torch.compile), also in the middle (a compiled submodule): it was 'model.safetensors
    does not fit the config (...): missing 51 tensor(s): ...; unexpected 51 tensor(s): ...'
    from load and convert alike."""
    ref = lm_loader.load_lm(tiny)
    path = _rewrite(tiny, tmp_path / "ft" / "model.safetensors", WRAPPED[how])
    _same_params(lm_loader.load_lm(path), ref)
    stored = SafetensorsFile(path).stored_names  # our name -> the wrapped name in the file
    assert (
        stored
        and set(stored) <= set(SafetensorsFile(tiny).keys())
        and all(WRAPPED[how](k) == v for k, v in stored.items())
    )
    (path.parent / "config.json").unlink()  # without its config.json: the preset its shapes fit
    got = resolve_model(path.parent)
    assert "matched by tensor shapes" in got.how and got.fit.pytorch
    out = convert(resolve_source(path), tmp_path / "out", copy_assets=False)
    _same_params(
        lm_loader.load_lm(out.out_dir),
        lm_loader.load_lm(convert(resolve_source(tiny), tmp_path / "plain", copy_assets=False).out_dir),
    )
    state = {WRAPPED[how](k): v for k, v in random_state(preset("random-tiny"), 1).items()}
    _same_params(
        load_lm_state(dict(state), "random-tiny"), load_lm_state(random_state(preset("random-tiny"), 1), "random-tiny")
    )
    assert state and load_lm_state(state, "random-tiny", consume=True) is not None and not state  # emptied as promised


def test_wrapped_lora_adapters_and_a_clash_left_as_stored(tmp_path):
    """A fine-tune's adapters saved from a DDP model are read under the model's names; a file
    where dropping the wrapper parts would make two names one keeps its names (the fit names
    them)."""
    from moshi_mlx.weights.safetensors_io import unwrapped_names

    assert unwrapped_names(["module.a.weight", "module.b.weight"]) == {
        "module.a.weight": "a.weight",
        "module.b.weight": "b.weight",
    }
    assert unwrapped_names(["module.a.weight", "a.weight"]) == {}
    assert unwrapped_names(["a.module", "emb.0.weight"]) == {}  # a leaf is the tensor's own name
    p = tmp_path / "lora.safetensors"
    save_safetensors(p, {"module.transformer.layers.0.self_attn.in_proj.lora_A.weight": mx.zeros((2, 4))})
    assert SafetensorsFile(p).keys() == ["transformer.layers.0.self_attn.in_proj.lora_A.weight"]


def test_a_container_prefix_is_dropped_only_in_front_of_published_names(tmp_path):
    """`model.` in front of every name is a training module's attribute when a published name
    follows; adapters of one submodule, a voice embedding and another model's names keep
    theirs. MODEL_ROOTS is every published layout's first name part."""
    from moshi_mlx.models import Lm
    from moshi_mlx.models.config import PRESETS
    from moshi_mlx.weights.lm_keys import pytorch_layout
    from moshi_mlx.weights.mimi_keys import random_published_weights
    from moshi_mlx.weights.safetensors_io import MODEL_ROOTS, unwrapped_names

    roots = {k.split(".")[0] for k in random_published_weights(mimi_202407(), seed=0)}
    for name in PRESETS:
        roots |= {k.split(".")[0] for k in pytorch_layout(preset(name))}
        roots |= {k.split(".")[0] for k, _ in tree_flatten(Lm(preset(name)).parameters())}
    assert MODEL_ROOTS == roots
    assert unwrapped_names(["model.encoder.model.0.conv.conv.weight", "model.quantizer.x.y"]) == {
        "model.encoder.model.0.conv.conv.weight": "encoder.model.0.conv.conv.weight",
        "model.quantizer.x.y": "quantizer.x.y",
    }
    assert unwrapped_names(["net.model.transformer.a.weight", "net.model.emb.0.weight"]) == {
        "net.model.transformer.a.weight": "transformer.a.weight",
        "net.model.emb.0.weight": "emb.0.weight",
    }
    for kept in (
        ["transformer.layers.0.self_attn.in_proj.lora_A.weight", "transformer.layers.0.gating.lora_B.weight"],
        ["speaker_wavs"],
        ["bert.encoder.weight", "bert.pooler.weight"],  # another model: its names, for the fit to name
        ["model.transformer.a.weight", "model.unknown.b"],
        ["model.transformer.a.weight", "emb.0.weight"],
    ):
        assert unwrapped_names(kept) == {}, kept


def test_a_ddp_mimi_loads_with_either_backend(tmp_path):
    """The codec fine-tuned under DDP: the MLX backend reads the names behind `module.`;
    rustymimi, which reads the file itself, gets a copy under the published names."""
    import numpy as np

    from moshi_mlx.weights.mimi_keys import random_published_weights
    from moshi_mlx.weights.mimi_loader import load_mimi

    w = {
        k: mx.array(v).astype(mx.bfloat16)
        for k, v in random_published_weights(mimi_202407(), seed=0, codebook_scale=0.5).items()
    }
    plain, ddp = tmp_path / "mimi.safetensors", tmp_path / "ddp" / "mimi.safetensors"
    save_safetensors(plain, w)
    ddp.parent.mkdir()
    save_safetensors(ddp, {"module." + k: v for k, v in w.items()})
    del w
    pcm = np.random.default_rng(0).standard_normal((1, 1, 1920 * 2)).astype(np.float32) * 0.1
    backends = ["mlx"]
    try:
        import rustymimi  # noqa: F401

        backends.append("rustymimi")
    except ImportError:
        pass
    for backend in backends:
        a = np.array(load_mimi(plain, num_codebooks=8, backend=backend).encode(pcm))
        b = np.array(load_mimi(ddp, num_codebooks=8, backend=backend).encode(pcm))
        assert a.shape[-1] == 2 and (a == b).all(), backend


def test_a_wrapped_mimi_in_memory_is_read_as_a_file_is():
    """A Mimi state_dict() from a DDP / FSDP model handed over as a dict (not a file): its
    names behind the wrapper parts, as `SafetensorsFile` reads them; it was 'is not a Mimi
    checkpoint: it has no encoder/decoder/quantizer weights'."""
    import numpy as np

    from moshi_mlx.weights.mimi_keys import random_published_weights, to_model_weights

    cfg = mimi_202407()
    w = random_published_weights(cfg, seed=0)
    ref = to_model_weights(w, cfg)
    for wrap in ("module.", "_fsdp_wrapped_module._orig_mod."):
        got = to_model_weights({wrap + k: v for k, v in w.items()}, cfg)
        assert got.keys() == ref.keys() and all(np.array_equal(got[k], ref[k]) for k in ref), wrap


# ---- 3. repo ids in other capitals ----------------------------------------------------------

MIMI, TOK32K = "tokenizer-e351c8d8-checkpoint125.safetensors", "tokenizer_spm_32k_3.model"


def _repo_files(tmp_path, cfg, name="model.safetensors", **extra):
    """A published repo's files: full-size header (PyTorch layout, no data) and companions."""
    d = tmp_path / f"files-{len(list(tmp_path.glob('files-*')))}"
    d.mkdir()
    out = {name: header_only(d / name, torch_layout(cfg))}
    for c, data in {MIMI: b"companion", TOK32K: b"companion", **extra}.items():
        (d / c).write_bytes(data)
        out[c] = d / c
    return out


def test_a_repo_id_in_other_capitals_is_the_repo(cache, monkeypatch, tmp_path):  # noqa: F811
    """The Hub resolves `Kyutai/Moshiko-PyTorch-BF16` as `kyutai/moshiko-pytorch-bf16`: it was
    no known preset (a Moshi config.json looked for, and offline 'model.safetensors from
    Kyutai/... is not in the local Hugging Face cache'), and the cache folder, named as the
    repo was typed when downloaded, was not found under other capitals."""
    _offline(monkeypatch)
    moshiko, persona = "kyutai/moshiko-pytorch-bf16", "nvidia/personaplex-7b-v1"
    other = tmp_path / "config.json"  # PersonaPlex's own config.json is not read, whatever the capitals
    other.write_text(json.dumps(preset("moshiko").to_dict()))
    add_repo(cache, moshiko, _repo_files(tmp_path, preset("moshiko")), absent=("config.json",))
    add_repo(cache, persona, {**_repo_files(tmp_path, preset("personaplex-7b")), "config.json": other})
    for typed, want in (("Kyutai/Moshiko-PyTorch-BF16", "moshiko"), ("NVIDIA/PersonaPlex-7B-v1", "personaplex-7b")):
        got = resolve_model(typed)
        assert got.how == f"preset {want}" and got.fit.pytorch, got.how
        assert got.get(MIMI).read_bytes() == b"companion" and got.get(TOK32K).read_bytes() == b"companion"
        assert resolve_model(f"hf://{typed}/model.safetensors").weights == got.weights
        assert hf_get(MIMI, typed) == got.get(MIMI)
    # downloaded as typed in capitals: found under the lower-case id (the exact spelling first)
    shutil.rmtree(cache / "models--kyutai--moshiko-pytorch-bf16")
    snap = add_repo(cache, "Kyutai/Moshiko-PyTorch-BF16", _repo_files(tmp_path, preset("moshiko")))
    got = resolve_model(moshiko)
    assert got.weights == snap / "model.safetensors" and got.how == "preset moshiko"
    assert cached(moshiko, MIMI) == snap / MIMI
    assert (
        hub.cached_spelling(moshiko) == "Kyutai/Moshiko-PyTorch-BF16" and hub.cached_spelling("kyutai/x") == "kyutai/x"
    )


# ---- 4. convert takes the sources loading takes ---------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [
        "kyutai/moshiko-pytorch-bf16",
        "Kyutai/Moshiko-PyTorch-BF16",
        "hf://kyutai/moshiko-pytorch-bf16",
        "hf://kyutai/moshiko-pytorch-bf16/model.safetensors",
        "https://huggingface.co/kyutai/moshiko-pytorch-bf16/blob/main/model.safetensors",
    ],
)
def test_convert_takes_a_hub_source_as_loading_does(cache, monkeypatch, tmp_path, capsys, spec):  # noqa: F811
    """`moshi-convert SOURCE` with a repo id or an hf:// / Hub address was 'file not found:
    hf:/kyutai/...' (the path's // collapsed) while load() took them: now the one resolver
    finds the file in the cache, and the Mimi and tokenizer come from the repo."""
    from moshi_mlx.cli.convert import run

    from .hf_cache import narrow_preset

    _offline(monkeypatch)
    cfg = LmConfig.from_dict(narrow_preset("moshiko"))
    src = write_random_checkpoint(cfg, tmp_path / "src", seed=1)
    (src.parent / "config.json").unlink()  # the published repo has none: the config comes with the file
    files = {"model.safetensors": src, MIMI: tmp_path / "m", TOK32K: tmp_path / "t"}
    (tmp_path / "m").write_bytes(b"mimi")
    (tmp_path / "t").write_bytes(b"tok")
    add_repo(cache, "kyutai/moshiko-pytorch-bf16", files, absent=("config.json",))
    cfg_json = tmp_path / "narrow.json"
    cfg_json.write_text(json.dumps(narrow_preset("moshiko")))
    out = tmp_path / "out"
    assert run([spec, "--out", str(out), "--config", str(cfg_json), "--quiet"]) == 0, capsys.readouterr().err
    assert (out / MIMI).read_bytes() == b"mimi" and (out / TOK32K).read_bytes() == b"tok"
    _same_params(lm_loader.load_lm(out), lm_loader.load_lm(src, cfg))


def test_a_web_address_is_one_line_everywhere(tmp_path, capsys):
    """An http(s) address that is no Hub repo or file address: files are read from disk or
    the cache (offline-first). It was 'file not found: https:/example.com/...' from convert,
    'no such model folder' from load."""
    from moshi_mlx.cli.convert import run
    from moshi_mlx.errors import UsageError

    url = "https://example.com/models/model.safetensors"
    line = rf"^{url} is a web address: model files are read from disk or the Hugging Face cache, not from a URL; download it first \(.*download OWNER/NAME FILE for a file on the Hub.*\) or give a local path$"
    for call in (
        lambda: resolve_model(url),
        lambda: resolve_model(weights=url),
        lambda: hf_get(url),
        lambda: resolve_source(url),
    ):
        with pytest.raises(UsageError, match=line):
            call()
    assert run([url, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a web address" in err[0] and not (tmp_path / "out").exists()


# ---- 5. PersonaPlex's voices.tgz from the cache ---------------------------------------------


def test_convert_takes_personaplex_voices_from_the_cache(cache, monkeypatch, tmp_path):  # noqa: F811
    """A PersonaPlex checkpoint converted away from its repo: voices.tgz was copied only from
    beside the source, never from the cached nvidia/personaplex-7b-v1 (as the Mimi and the
    tokenizer are), and the note said 'copy voices.tgz there' instead of how to get it."""
    _offline(monkeypatch)
    cfg = LmConfig.from_dict({**preset("random-tiny-persona").to_dict(), "mimi_name": MIMI, "tokenizer_name": TOK32K})
    src = write_random_checkpoint(cfg, tmp_path / "ft", seed=2)
    # 1. not in the cache: the note names the download
    res = convert(resolve_source(src), tmp_path / "out1")
    assert res.missing_assets == [MIMI, TOK32K, "voices.tgz"]
    assert "download nvidia/personaplex-7b-v1 voices.tgz --local-dir" in res.missing_note(), res.missing_note()
    # 2. the published repo in the cache: all three copied from there
    (tmp_path / "v").write_bytes(b"presets")
    add_repo(
        cache,
        "nvidia/personaplex-7b-v1",
        {**_repo_files(tmp_path, preset("personaplex-7b")), "voices.tgz": tmp_path / "v"},
    )
    res = convert(resolve_source(src), tmp_path / "out2")
    assert sorted(res.copied) == sorted([MIMI, TOK32K, "voices.tgz"]) and res.missing_note() is None
    assert (tmp_path / "out2" / "voices.tgz").read_bytes() == b"presets"


# ---- 6. a sharded checkpoint (model.safetensors.index.json) ---------------------------------

INDEX = "model.safetensors.index.json"


def _shard(src, folder, n=3, rename=lambda k: k, sub=""):
    """`src`'s tensors split into `n` shards with their index, as transformers'
    save_pretrained / huggingface_hub's save_torch_state_dict leave them; config.json beside
    (`sub`: the shards in that subfolder of the index's, named by their path in the index)."""
    (folder / sub).mkdir(parents=True, exist_ok=True)
    tensors = SafetensorsFile(src).load_all()
    keys = sorted(tensors)
    where = {}
    for i in range(n):
        name = sub + f"model-{i + 1:05d}-of-{n:05d}.safetensors"
        part = keys[i::n]
        save_safetensors(folder / name, {rename(k): tensors[k] for k in part})
        where.update({rename(k): name for k in part})
    (folder / INDEX).write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": where}))
    if (src.parent / "config.json").is_file():
        shutil.copy(src.parent / "config.json", folder / "config.json")
    return folder


def test_a_sharded_checkpoint_loads_and_converts(tiny, tmp_path, cache, monkeypatch):  # noqa: F811
    """A fine-tune saved in shards with model.safetensors.index.json (transformers'
    save_pretrained, huggingface_hub's save_torch_state_dict: above 5 GB, a 7B in bf16 is 3-4
    shards) loads as the one file would, given as the folder, the index, or one shard; from
    the Hub cache too; and converts. It was 'D should hold one .safetensors model file, found
    model-00001-of-00003.safetensors, ...' (the index: 'not a safetensors file ... bad header
    length', one shard: 'does not fit the config: missing ...')."""
    ref = lm_loader.load_lm(tiny)
    d = _shard(tiny, tmp_path / "ft")
    for spec in (d, d / INDEX, d / "model-00002-of-00003.safetensors"):
        got = resolve_model(spec)
        assert got.weights == d / INDEX and got.how == str(d / "config.json"), spec
        _same_params(lm_loader.load_lm(spec), ref)
    (d / "config.json").unlink()  # the shapes decide, across the shards
    assert "matched by tensor shapes" in resolve_model(d).how
    out = convert(resolve_source(d), tmp_path / "out", copy_assets=False)
    _same_params(lm_loader.load_lm(out.out_dir), ref)
    assert out.source_bytes == sum(p.stat().st_size for p in d.glob("model-*.safetensors"))
    # behind a training module's `model.`, and from the Hub cache (offline), its shards fetched by name
    d2 = _shard(tiny, tmp_path / "ft2", n=2, rename=lambda k: "model." + k)
    _offline(monkeypatch)
    snap = add_repo(cache, "me/moshi-ft", {p.name: p for p in d2.iterdir()})
    got = resolve_model("me/moshi-ft")
    assert got.weights == snap / INDEX
    _same_params(lm_loader.load_lm("me/moshi-ft"), ref)


def test_shards_in_a_subfolder_of_the_index_load_and_a_path_out_of_it_is_refused(tiny, tmp_path, cache, monkeypatch):  # noqa: F811
    """An index naming its shards by a path in a subfolder (shards/model-00001-of-00002...)
    loads as shards beside it do: the folder, the index or one shard given, and from the Hub
    cache offline. It was refused as '... names the shard 'shards/model-00001-of-00002.safetensors'
    outside its folder', which it is not; a name that does escape the folder (an absolute path,
    '..') is still refused, and now says why."""
    ref = lm_loader.load_lm(tiny)
    d = _shard(tiny, tmp_path / "ft", n=2, sub="shards/")
    for spec in (d, d / INDEX, d / "shards" / "model-00002-of-00002.safetensors"):
        assert resolve_model(spec).weights == d / INDEX, spec
        _same_params(lm_loader.load_lm(spec), ref)
    files = {p.relative_to(d).as_posix(): p for p in d.rglob("*") if p.is_file()}
    assert "shards/model-00001-of-00002.safetensors" in files
    _offline(monkeypatch)
    monkeypatch.chdir(tmp_path)  # a file of the working directory with a shard's name is not the repo's
    (tmp_path / "shards").mkdir()
    shutil.copy(tiny, tmp_path / "shards" / "model-00001-of-00002.safetensors")
    snap = add_repo(cache, "me/moshi-ft", files)
    assert resolve_model("me/moshi-ft").weights == snap / INDEX
    _same_params(lm_loader.load_lm("me/moshi-ft"), ref)
    from moshi_mlx.weights.errors import WeightsError

    index = json.loads((d / INDEX).read_text())
    for bad in ("../model-00001-of-00002.safetensors", str(d / "shards" / "model-00001-of-00002.safetensors")):
        first = next(iter(index["weight_map"]))
        (d / INDEX).write_text(json.dumps({"weight_map": {**index["weight_map"], first: bad}}))
        with pytest.raises(
            WeightsError,
            match=rf"^{d / INDEX} names the shard '{re.escape(bad)}' outside its folder \(an absolute path or '\.\.'\)",
        ):
            resolve_model(d / INDEX)


def test_a_sharded_checkpoint_missing_a_shard_is_one_line(tiny, tmp_path, cache, monkeypatch):  # noqa: F811
    """A shard not downloaded (or of another save) is named, from a folder and from the cache."""
    from moshi_mlx.weights.errors import WeightsError

    d = _shard(tiny, tmp_path / "ft")
    (d / "model-00003-of-00003.safetensors").rename(tmp_path / "third.safetensors")
    with pytest.raises(
        WeightsError,
        match=rf"^{INDEX} names the shard model-00003-of-00003.safetensors, which is not in {d}: download it",
    ):
        resolve_model(d)
    _offline(monkeypatch)
    add_repo(cache, "me/moshi-ft", {p.name: p for p in d.iterdir()})
    with pytest.raises(WeightsError, match=r"^model-00003-of-00003.safetensors from me/moshi-ft is not in the local"):
        resolve_model("me/moshi-ft")
    save_safetensors(d / "model-00003-of-00003.safetensors", {"other.weight": mx.zeros((2,))})
    with pytest.raises(WeightsError, match=rf"^{INDEX} names \d+ tensor\(s\) its shards do not hold"):
        resolve_model(d)
    # an index cut short (a copy that did not finish): it was 'D should hold one .safetensors model
    # file, found model-00001-of-00003.safetensors, ...; set moshi_name', the shards taken for several files
    (d / INDEX).write_text((d / INDEX).read_text()[:40])
    (d / "config.json").unlink()  # (its moshi_name, model.safetensors, led to the index)
    with pytest.raises(WeightsError, match=rf"^{d / INDEX} is not a shard index: Unterminated string"):
        resolve_model(d)


def test_a_config_json_that_is_a_broken_link_is_named_not_taken_for_absent(tiny, tmp_path, cache, monkeypatch):  # noqa: F811
    """A config.json that is a link to nothing (a --local-dir copy by an older huggingface_hub,
    or a cache, whose blob a cleanup deleted) is one line naming the link and its target. It was
    taken for absent: the folder loaded by its tensor shapes' preset, the cache's repo too (or
    its preset), whatever the lost config.json said."""
    from moshi_mlx.weights.errors import WeightsError
    from moshi_mlx.weights.model_dir import read_model_dir

    d = tmp_path / "copy"
    d.mkdir()
    shutil.copy(tiny, d / "model.safetensors")
    gone = tmp_path / "blobs" / "c0ffee"
    (d / "config.json").symlink_to(gone)
    line = rf"^{d / 'config.json'} is a broken link \(to {gone}, which no longer exists, e.g. after a cache cleanup\): download the file again$"
    for spec in (d, d / "model.safetensors"):
        with pytest.raises(WeightsError, match=line):
            resolve_model(spec)
    with pytest.raises(WeightsError, match=line):
        resolve_model("kyutai/moshiko-pytorch-bf16", weights=d / "model.safetensors")
    with pytest.raises(WeightsError, match=line):
        read_model_dir(d)
    # the Hugging Face cache, offline: config.json's blob deleted (the weights' too, further down)
    _offline(monkeypatch)
    snap = add_repo(cache, "me/ft", {"config.json": tiny.parent / "config.json", "model.safetensors": tiny})
    blob = (snap / "config.json").resolve()
    blob.unlink()
    target = re.escape(str(Path("..") / ".." / "blobs" / blob.name))
    with pytest.raises(
        WeightsError,
        match=rf"^config.json of me/ft in the Hugging Face cache \({snap / 'config.json'}\) is a broken link "
        rf"\(to {target}, which no longer exists, e.g. after a cache cleanup\): download it again online "
        rf"\(hf download me/ft config.json\)$",
    ):
        resolve_model("me/ft")
    with pytest.raises(WeightsError, match=r"^config.json of me/ft in the Hugging Face cache .* is a broken link"):
        resolve_mimi(repo="me/ft")
    (snap / "model.safetensors").resolve().unlink()  # a weights file: the same line, not 'not in the cache'
    with pytest.raises(
        WeightsError, match=r"^model.safetensors of me/ft in the Hugging Face cache .* is a broken link"
    ):
        resolve_model("me/ft", config=tiny.parent / "config.json")


# ---- 7. a fine-tune's weights alone, given with the repo or folder they fine-tune ----------


def test_a_fine_tunes_weights_alone_take_the_config_of_the_repo_given(tmp_path, cache, monkeypatch):  # noqa: F811
    """`--hf-repo BASE --moshi-weight FT/model.safetensors` (or FT/): a fine-tune saved as its
    weights alone takes BASE's config.json, as upstream's CLIs read --hf-repo's config, and its
    Mimi and tokenizer from BASE. It was 'no config for model.safetensors: no config.json beside
    it and its tensors fit no preset' (the base's config.json was never read); a config given
    (--lm-config) naming the base's file made FT/ 'FT/config.json names the weights
    'model.q4.safetensors', which is not in FT', of a config.json FT does not have."""
    from .hf_cache import narrow_preset

    cfg = LmConfig.from_dict(narrow_preset("moshiko"))
    base = write_random_checkpoint(cfg, tmp_path / "base", seed=1, name="model.q4.safetensors").parent
    ft = write_random_checkpoint(cfg, tmp_path / "ft", seed=2)
    (ft.parent / "config.json").unlink()
    for c in (MIMI, TOK32K):
        (base / c).write_bytes(b"companion")
    _offline(monkeypatch)
    snap = add_repo(cache, "me/base", {p.name: p for p in base.iterdir()})
    for source, cfg_json in (("me/base", snap / "config.json"), (base, base / "config.json")):
        for weights in (ft, ft.parent):
            got = resolve_model(source, weights=weights)
            assert got.weights == ft and got.how == str(cfg_json), (source, weights)
            assert (
                got.companion("mimi").read_bytes() == b"companion"
                and got.companion("tokenizer").parent == Path(cfg_json).parent
            )
        assert resolve_model(ft.parent, config=cfg_json).weights == ft
    _same_params(lm_loader.load_resolved(resolve_model("me/base", weights=ft)), lm_loader.load_lm(ft, cfg))


def test_a_config_json_lacking_keys_says_which_defaults_were_used(tmp_path):
    """A hand-written or trimmed config.json: without `delays` it was 'delays has 1 entries,
    expected n_q + 1 = 17' (of a key the user never wrote); without keys that shape the tensors,
    'does not fit the config: 72 shape mismatch(es) ...' with no word of why."""
    from moshi_mlx.errors import ConfigError
    from moshi_mlx.weights.errors import WeightsError

    from .hf_cache import narrow_preset

    d = narrow_preset("moshiko")
    src = write_random_checkpoint(LmConfig.from_dict(dict(d)), tmp_path / "ft", seed=1)
    cfg_json = src.parent / "config.json"
    cfg_json.write_text(json.dumps({k: v for k, v in d.items() if k != "delays"}))
    with pytest.raises(ConfigError, match=r"config.json: delays is not given: it needs n_q \+ 1 = 17 entries"):
        resolve_model(src.parent)
    cfg_json.write_text(json.dumps({k: v for k, v in d.items() if k not in ("depformer_dim", "gating")}))
    with pytest.raises(WeightsError) as e:
        resolve_model(src.parent)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("model.safetensors does not fit the config")
    assert msg.endswith(f"({cfg_json} gives no gating, depformer_dim: their defaults were used)"), msg
    cfg_json.write_text(json.dumps(d))
    assert resolve_model(src.parent).how == str(cfg_json)


def test_weights_alone_with_a_gated_repo_keep_its_preset(tmp_path, monkeypatch):
    """The base's config.json is read where it can be: a gated repo not accepted (Hibiki-Zero)
    named for its preset beside local weights still gives its preset, as before."""
    from moshi_mlx.weights import resolve
    from moshi_mlx.weights.errors import WeightsError

    def gated(name, repo):
        raise WeightsError(f"Hugging Face repo {repo!r} is gated: accept its terms on the Hub and log in")

    monkeypatch.setattr(resolve, "hf_get_optional", gated)
    w = header_only(tmp_path / "model.safetensors", torch_layout(preset("hibiki-zero-3b")))
    got = resolve_model("kyutai/hibiki-zero-3b-pytorch-bf16", weights=w)
    assert got.how == "preset hibiki-zero-3b" and got.weights == w


def test_a_companion_named_by_the_config_is_the_folders_not_the_working_directorys(tmp_path, monkeypatch):
    """The tokenizer and Mimi a model's config or preset names are looked up where the weights
    are: a file of the same name in the working directory (another model's, a download left
    there) is not taken for them; a path the caller gives is still read from there."""
    from moshi_mlx import models
    from moshi_mlx.constants import MIMI_NAME, TOKENIZER_NAME
    from moshi_mlx.weights.random_checkpoint import write_random_checkpoint

    folder = tmp_path / "model"
    write_random_checkpoint(models.lm_preset("random-tiny"), folder, seed=0)
    (folder / TOKENIZER_NAME).write_bytes(b"the model's")
    (folder / MIMI_NAME).write_bytes(b"the model's")
    here = tmp_path / "elsewhere"
    here.mkdir()
    (here / TOKENIZER_NAME).write_bytes(b"another")
    (here / MIMI_NAME).write_bytes(b"another")
    monkeypatch.chdir(here)
    files = resolve_model(folder)
    assert files.companion("tokenizer") == folder / TOKENIZER_NAME
    assert files.companion("mimi") == folder / MIMI_NAME
    given = resolve_model(folder, tokenizer=TOKENIZER_NAME)  # the caller's own relative path
    assert given.companion("tokenizer").resolve() == here / TOKENIZER_NAME
