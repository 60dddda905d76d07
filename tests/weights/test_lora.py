"""LoRA fine-tunes (moshi-finetune's folder: config.json with `lora: true` + lora.safetensors):
fused at load exactly as Kyutai's PyTorch moshi fuses them (fixtures from
scripts/make_fixtures_lora.py: moshi 0.2.13, `get_moshi_lm(..., lora_weights, fuse_lora=True)`),
through `load_lm` and `convert`, and every bad input is one line."""

import json
import re
import shutil

import mlx.core as mx
import numpy as np
import pytest

from moshi_mlx.errors import Error
from moshi_mlx.models import LmGen
from moshi_mlx.models.config import LmConfig
from moshi_mlx.weights import lm_loader
from moshi_mlx.weights.convert import SourceInfo, convert, resolve_source
from moshi_mlx.weights.errors import WeightsError
from moshi_mlx.weights.lm_loader import ArraySource
from moshi_mlx.weights.lora import LoraSource, lora_files
from moshi_mlx.weights.random_state import random_lora, random_state
from moshi_mlx.weights.recipes import make_recipe
from moshi_mlx.weights.safetensors_io import SafetensorsFile, save_safetensors

from ..models.lm_fixtures import FIXTURES, rel_err
from .hf_cache import fake_hub  # noqa: F401  (fixture)
from ..models import test_lm_parity as parity

CASES = ["lora_moshi7b_narrow", "lora_variants"]


def save_file(tensors: dict, path: str) -> None:
    save_safetensors(path, {k: mx.array(v) for k, v in tensors.items()})


def _case_files(name: str, root):
    """(cfg dict, fixture arrays, base path, adapters path): the fine-tune's folder, as
    moshi-finetune leaves it, plus the base weights written beside it."""
    data = dict(np.load(FIXTURES / f"{name}.npz"))
    cfg_dict = json.loads(str(data["config"]))
    cfg = LmConfig.from_dict(cfg_dict)
    root.mkdir(parents=True, exist_ok=True)
    save_file(random_state(cfg, int(data["seed"])), str(root / "model.safetensors"))
    layout = json.loads(str(data["lora_layout"]))
    save_file(random_lora(layout, int(data["lora_seed"])), str(root / "lora.safetensors"))
    (root / "config.json").write_text(json.dumps(cfg_dict))
    return cfg_dict, data, root / "model.safetensors", root / "lora.safetensors"


@pytest.fixture(scope="module", params=CASES)
def case(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    cfg_dict, data, base, adapters = _case_files(request.param, root)
    # the config.json beside the base names the adapters (lora.safetensors by default)
    lm = lm_loader.load_lm(base, dtype=mx.float32)
    yield request.param, LmConfig.from_dict(cfg_dict), lm, data, root


def test_forward_matches_pytorch_fused(case):
    name, cfg, lm, data, _ = case
    parity.test_teacher_forced_forward_matches_reference((name, cfg, lm, data))


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_greedy_generation_matches_pytorch_fused(case, compiled):
    """>= 60 greedy steps, text and audio tokens identical, text logits within 1e-4."""
    name, cfg, lm, data, _ = case
    assert data["user"].shape[0] >= 50
    parity.test_greedy_generation_matches_reference((name, cfg, lm, data), compiled)


def test_unfused_reference_computes_the_same(case):
    """moshi's unfused mode (`fuse_lora=False`, LoRALinear kept) gives the same logits up to
    rounding: fusing changes nothing but the arithmetic order."""
    name, cfg, lm, data, _ = case
    out = lm.forward_train(data["codes"])
    mask = data["text_mask"]
    ours = np.array(out.text_logits[0])[:, ::16]
    assert rel_err(ours[mask], data["unfused_text_logits"][mask]) < 1e-4


def test_the_adapters_change_the_model(case):
    """Without them the base alone generates other tokens: the parity above needs the fusion."""
    name, cfg, lm, data, root = case
    plain = LmConfig.from_dict({k: v for k, v in cfg.to_dict().items() if not k.startswith("lora")})
    base = lm_loader.load_lm(root / "model.safetensors", plain, dtype=mx.float32)
    gen = LmGen(base, temp=0.0, temp_text=0.0)
    texts = [gen.step(u)[0] for u in data["user"][:20]]
    assert texts != data["gen_text"][1:21].tolist()


def _torch_slice(src, key: str, torch_shape) -> np.ndarray:
    """The reference model's in-memory tensor `key` read from our fused source (released layout)."""
    m = re.match(r"^(.+\.self_attn)\.(in|out)_projs\.(\d+)\.weight$", key)
    if m is None:
        return np.array(src.load(key).view(mx.uint16))
    stacked = f"{m[1]}.in_proj_weight" if m[2] == "in" else f"{m[1]}.out_proj.weight"
    rows = torch_shape[0]
    i = int(m[3])
    return np.array(src.load(stacked).view(mx.uint16))[i * rows : (i + 1) * rows]


@pytest.mark.parametrize("name", CASES)
def test_bfloat16_fusion_is_bit_exact(tmp_path, name):
    """In bfloat16 moshi rounds B @ A, then x scaling, then the sum: so do we (bits equal)."""
    cfg_dict, data, base, adapters = _case_files(name, tmp_path)
    src = LoraSource(
        SafetensorsFile(base),
        SafetensorsFile(adapters),
        cfg_dict["lora_scaling"],
        cfg_dict["lora_rank"],
        dtype=mx.bfloat16,
    )
    keys = [k for k in data if k.startswith("bf16__")]
    assert len(keys) >= 3
    for k in keys:
        ref = data[k]
        ours = _torch_slice(src, k[len("bf16__") :], ref.shape)
        assert ours.shape == ref.shape and np.array_equal(ours, ref), k


def _numpy_fused(state: dict, adapters: dict, scaling: float) -> dict:
    """An independent float32 fusion of in-memory-named adapters into a released-layout state."""
    out = {k: v.copy() for k, v in state.items()}
    for k in adapters:
        if not k.endswith(".lora_A.weight"):
            out[k] = adapters[k]
            continue
        mod = k[: -len(".lora_A.weight")]
        delta = scaling * (adapters[mod + ".lora_B.weight"] @ adapters[k])
        m = re.match(r"^(.+\.self_attn)\.(in|out)_projs\.(\d+)$", mod)
        if m is not None and mod + ".weight" not in state:
            key = f"{m[1]}.in_proj_weight" if m[2] == "in" else f"{m[1]}.out_proj.weight"
            i, n = int(m[3]), delta.shape[0]
            out[key][i * n : (i + 1) * n] += delta
        else:
            out[mod + ".weight"] += delta
    return out


def test_fused_tensors_match_an_independent_fusion(tmp_path):
    cfg_dict, data, base, adapters = _case_files("lora_moshi7b_narrow", tmp_path)
    state = {k: np.array(v) for k, v in SafetensorsFile(base).load_all().items()}
    lora = {k: np.array(v) for k, v in SafetensorsFile(adapters).load_all().items()}
    ref = _numpy_fused(state, lora, cfg_dict["lora_scaling"])
    src = LoraSource(SafetensorsFile(base), SafetensorsFile(adapters), cfg_dict["lora_scaling"])
    assert sorted(src.keys()) == sorted(state)  # the adapters' keys are hidden
    changed = 0
    for k in state:
        ours = np.array(src.load(k))
        np.testing.assert_allclose(ours, ref[k], rtol=0, atol=2e-6)
        changed += not np.array_equal(ref[k], state[k])
    assert changed >= 40


def _every_linear(cfg: LmConfig, rank: int) -> dict:
    """Adapters for every Linear of `cfg` (attention in the stacked spelling), as a layout."""
    from moshi_mlx.weights.lm_keys import pytorch_layout

    tables = re.compile(r"^(text_emb|emb\.\d+|depformer_emb\.\d+|depformer_text_emb|.*\.embed)\.weight$")
    out = {}
    for k, shape in pytorch_layout(cfg).items():
        if len(shape) != 2 or tables.match(k) or not k.endswith("weight"):
            continue
        mod = k[: -len("_weight")] if k.endswith("in_proj_weight") else k[: -len(".weight")]
        mult = cfg.dep_weights if k.startswith("depformer.layers.") and ".self_attn." in k else 1
        out[f"{mod}.lora_A.weight"] = [mult * rank, shape[1]]
        out[f"{mod}.lora_B.weight"] = [shape[0], rank]
    return out


def test_convert_fuses_then_quantizes(tmp_path):
    """convert of the fine-tune (base + adapters + config.json, found beside the base) ==
    convert of the fused checkpoint, tensor for tensor; the config.json written holds no
    LoRA keys and the folder loads as a plain model."""
    d = {**_tiny(), "lora": True, "lora_rank": 4, "lora_scaling": 0.5}
    cfg = LmConfig.from_dict(d)
    ft = tmp_path / "ft"
    ft.mkdir()
    state = random_state(cfg, 5)
    save_file(state, str(ft / "model.safetensors"))
    save_file(random_lora(_every_linear(cfg, 4), 6), str(ft / "lora.safetensors"))
    (ft / "config.json").write_text(json.dumps(d))
    info = resolve_source(ft / "model.safetensors")
    assert info.lora == ft / "lora.safetensors"
    a = convert(info, tmp_path / "a", recipe=make_recipe(None, 8))
    fused = LoraSource(
        SafetensorsFile(ft / "model.safetensors"), SafetensorsFile(ft / "lora.safetensors"), 0.5, dtype=mx.bfloat16
    )
    assert len(fused.deltas) >= 19
    (tmp_path / "fused").mkdir()
    save_safetensors(str(tmp_path / "fused" / "model.safetensors"), {k: fused.load(k) for k in fused.keys()})
    plain = LmConfig.from_dict(_tiny())
    b = convert(
        SourceInfo(tmp_path / "fused" / "model.safetensors", plain, "test"), tmp_path / "b", recipe=make_recipe(None, 8)
    )
    fa, fb = SafetensorsFile(a.weights), SafetensorsFile(b.weights)
    assert a.weights.name == "model.q8.safetensors" and sorted(fa.keys()) == sorted(fb.keys())
    assert any(k.endswith(".scales") for k in fa.keys())
    for k in fa.keys():
        assert fa.dtype(k) == fb.dtype(k) and np.array_equal(_bits(fa.load(k)), _bits(fb.load(k))), k
    written = json.loads(a.config.read_text())
    assert not any(k.startswith("lora") for k in written)
    assert lm_loader.load_lm(tmp_path / "a") is not None
    # without the adapters the converted base differs
    c = convert(SourceInfo(ft / "model.safetensors", plain, "test"), tmp_path / "c", recipe=make_recipe(None, 8))
    k = "transformer.layers.0.gating.linear_in.weight"
    assert not np.array_equal(_bits(fa.load(k)), _bits(SafetensorsFile(c.weights).load(k)))


def _bits(a: mx.array) -> np.ndarray:
    return np.array(a.view(mx.uint16) if a.dtype == mx.bfloat16 else a)


def test_a_folder_with_its_base_loads_as_a_model_folder(tmp_path):
    cfg_dict, data, base, adapters = _case_files("lora_variants", tmp_path / "ft")
    ref = lm_loader.load_lm(base, dtype=mx.float32)
    lm = lm_loader.load_lm(tmp_path / "ft", dtype=mx.float32)  # two .safetensors, one base
    k = "transformer.layers.0.self_attn.in_proj.weight"
    assert np.array_equal(np.array(dict(_flat(lm))[k]), np.array(dict(_flat(ref))[k]))


def _flat(lm):
    from mlx.utils import tree_flatten

    return tree_flatten(lm.parameters())


def test_lora_files(tmp_path):
    cfg = {"lora": True, "lora_rank": 8, "lora_scaling": 2.0}
    assert lora_files({"lora": False}, tmp_path) is None
    with pytest.raises(WeightsError, match="adapters file lora.safetensors is not there"):
        lora_files(cfg, tmp_path)
    (tmp_path / "lora.safetensors").write_bytes(b"x")
    found = lora_files(cfg, tmp_path)
    assert found.adapters == tmp_path / "lora.safetensors" and found.base is None and found.rank == 8
    with pytest.raises(WeightsError, match="holds LoRA adapters only .* kyutai/moshiko-pytorch-bf16"):
        lora_files(cfg, tmp_path, base_required=True)
    (tmp_path / "my.safetensors").write_bytes(b"x")
    (tmp_path / "base.safetensors").write_bytes(b"x")
    found = lora_files(
        LmConfig.from_dict({**_tiny(), **cfg, "lora_name": "my.safetensors", "moshi_name": "base.safetensors"}),
        tmp_path,
        base_required=True,
    )
    assert found.adapters.name == "my.safetensors" and found.base.name == "base.safetensors"


def _tiny() -> dict:
    from moshi_mlx.models.config import preset_path

    return json.loads(preset_path("random-tiny").read_text())


def test_config_accepts_the_lora_keys():
    cfg = LmConfig.from_dict({**_tiny(), "lora": True, "lora_rank": 16, "lora_scaling": 1, "lora_name": "a.sft"})
    assert (cfg.lora, cfg.lora_rank, cfg.lora_scaling, cfg.lora_name) == (True, 16, 1.0, "a.sft")
    assert LmConfig.from_dict(cfg.to_dict()) == cfg
    plain = LmConfig.from_dict(_tiny())
    assert not plain.lora and not any(k.startswith("lora") for k in plain.to_dict())
    for bad, msg in (
        ({"lora_rank": 0}, "lora_rank must be >= 1"),
        ({"lora_scaling": 0}, "lora_scaling must be > 0"),
        ({"lora": "yes"}, "lora must be true or false"),
    ):
        with pytest.raises(Error, match=msg):
            LmConfig.from_dict({**_tiny(), **bad})


@pytest.fixture
def tiny_ft(tmp_path):
    """A tiny fine-tune: base, adapters on two modules, config with lora: true."""
    d = {**_tiny(), "lora": True, "lora_rank": 4, "lora_scaling": 2.0}
    cfg = LmConfig.from_dict(d)
    state = random_state(cfg, 0)
    layout = {
        "transformer.layers.0.gating.linear_in.lora_A.weight": [4, 64],
        "transformer.layers.0.gating.linear_in.lora_B.weight": [
            state["transformer.layers.0.gating.linear_in.weight"].shape[0],
            4,
        ],
        "depformer.layers.0.self_attn.in_projs.1.lora_A.weight": [4, 64],
        "depformer.layers.0.self_attn.in_projs.1.lora_B.weight": [192, 4],
    }
    save_file(state, str(tmp_path / "model.safetensors"))
    save_file(random_lora(layout, 1), str(tmp_path / "lora.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(d))
    return tmp_path, cfg, state, layout


def _one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg
    return msg


def test_bad_inputs_are_one_line(tiny_ft, tmp_path_factory):
    root, cfg, state, layout = tiny_ft
    base, adapters = root / "model.safetensors", root / "lora.safetensors"
    plain = LmConfig.from_dict(_tiny())
    with pytest.raises(WeightsError, match="no lora: true") as e:
        lm_loader.load_lm(base, plain, lora=adapters)
    _one_line(e)
    with pytest.raises(WeightsError, match="says lora: true but no LoRA adapters file was given") as e:
        lm_loader.load_lm(base, cfg)  # a config object: no folder to look in
    _one_line(e)
    with pytest.raises(WeightsError, match="holds LoRA adapters, not base weights") as e:
        lm_loader.load_lm(adapters, cfg, lora=adapters)
    _one_line(e)
    other = tmp_path_factory.mktemp("bad")
    lora = random_lora(layout, 1)

    def bad(tensors: dict, match: str, base_state=state):
        save_file(tensors, str(other / "l.safetensors"))
        save_file(base_state, str(other / "b.safetensors"))
        with pytest.raises(WeightsError, match=match) as e:
            lm_loader.load_lm(other / "b.safetensors", cfg, lora=other / "l.safetensors")
        _one_line(e)

    bad(
        {
            **lora,
            "transformer.layers.0.gating.linear_in.lora_A.weight": np.zeros((5, 64), np.float32),
            "transformer.layers.0.gating.linear_in.lora_B.weight": np.zeros((352, 5), np.float32),
        },
        "has rank 5, config.json says lora_rank 4",
    )
    bad(
        {"nowhere.lora_A.weight": np.zeros((4, 64), np.float32), "nowhere.lora_B.weight": np.zeros((8, 4), np.float32)},
        "adapts nowhere, which the base holds no weight for",
    )
    bad({"text_linear.lora_A.weight": np.zeros((4, 64), np.float32)}, "has no matching lora_B")
    bad(
        {
            "text_linear.lora_A.weight": np.zeros((4, 32), np.float32),
            "text_linear.lora_B.weight": np.zeros((1000, 4), np.float32),
        },
        r"gives a \[1000, 32\] update",
    )
    bad({**lora, "mystery.weight": np.zeros((3,), np.float32)}, "neither an adapter nor a tensor of the base")
    bad({"text_emb.weight": state["text_emb.weight"]}, r"holds no LoRA adapters \(no \*\.lora_A\.weight")
    # an MLX-layout base (our names) or a quantized one: the adapters name the reference's modules
    bad(lora, "base is in the MLX layout", {"audio_embs.0.weight": np.zeros((3, 3), np.float32)})
    bad(lora, "base weights are quantized", {**state, "x_scb": np.zeros(3, np.float32)})


def test_default_adapters_beside_the_config(tiny_ft):
    root, cfg, state, layout = tiny_ft
    ref = lm_loader.load_lm(root / "model.safetensors", cfg, lora=root / "lora.safetensors")
    lm = lm_loader.load_lm(root / "model.safetensors")  # config.json + lora.safetensors beside
    for (k, a), (_, b) in zip(_flat(ref), _flat(lm)):
        assert np.array_equal(np.array(a), np.array(b)), k
    shutil.move(root / "lora.safetensors", root / "gone.safetensors")
    with pytest.raises(WeightsError, match="adapters file lora.safetensors is not there"):
        lm_loader.load_lm(root / "model.safetensors")


def test_stacked_and_per_step_adapters_fuse_the_same(tiny_ft):
    """moshi's load hook splits `self_attn.in_proj.lora_A.weight` [mult x rank, in] into the
    per-step `in_projs.{i}` adapters: both spellings give one fused tensor."""
    root, cfg, state, layout = tiny_ft
    rng = np.random.default_rng(3)
    per = {
        f"depformer.layers.0.self_attn.in_projs.{i}.lora_{x}.weight": rng.standard_normal(s).astype(np.float32)
        for i in range(2)
        for x, s in (("A", (4, 64)), ("B", (192, 4)))
    }
    stacked = {
        f"depformer.layers.0.self_attn.in_proj.lora_{x}.weight": np.concatenate(
            [per[f"depformer.layers.0.self_attn.in_projs.{i}.lora_{x}.weight"] for i in range(2)]
        )
        for x in "AB"
    }
    k = "depformer.layers.0.self_attn.in_proj_weight"
    a = LoraSource(ArraySource(dict(state)), ArraySource(per), 2.0, 4).load(k)
    b = LoraSource(ArraySource(dict(state)), ArraySource(stacked), 2.0, 4).load(k)
    assert np.array_equal(np.array(a), np.array(b)) and not np.array_equal(np.array(a), state[k])
    # the in-memory base layout (in_projs.{i}.weight) takes either spelling too
    mem = {kk: v for kk, v in state.items() if kk != k}
    for i in range(2):
        mem[f"depformer.layers.0.self_attn.in_projs.{i}.weight"] = state[k][i * 192 : (i + 1) * 192]
    for lora in (per, stacked):
        src = LoraSource(ArraySource(dict(mem)), ArraySource(lora), 2.0, 4)
        got = np.concatenate(
            [np.array(src.load(f"depformer.layers.0.self_attn.in_projs.{i}.weight")) for i in range(2)]
        )
        assert np.array_equal(got, np.array(a))


def test_the_resolver_fuses_a_fine_tune_from_a_folder_and_from_the_cache(tiny_ft, tmp_path, monkeypatch):
    """`moshi_mlx.load(folder or repo)` goes through the resolver: the adapters are fused
    there too, from a local folder or a Hub repo in the cache (offline)."""
    import huggingface_hub.constants as c

    from moshi_mlx.weights.resolve import resolve_model

    from .hf_cache import add_repo

    folder, cfg, state, layout = tiny_ft
    ref = dict(_flat(lm_loader.load_lm(folder, dtype=mx.float32)))
    plain = dict(_flat(lm_loader.load_lm(folder / "model.safetensors", LmConfig.from_dict(_tiny()), dtype=mx.float32)))
    k = "transformer.layers.0.gating.linear_in.weight"
    assert not np.array_equal(np.array(ref[k]), np.array(plain[k]))  # the adapters changed it
    cache = tmp_path / "hf"
    add_repo(
        cache, "someone/my-finetune", {n: folder / n for n in ("config.json", "model.safetensors", "lora.safetensors")}
    )
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for source in (folder, "someone/my-finetune"):
        got = dict(_flat(lm_loader.load_resolved(resolve_model(source), dtype=mx.float32)))
        assert got.keys() == ref.keys()
        assert all(np.array_equal(np.array(got[n]), np.array(ref[n])) for n in ref), source


def test_adapters_only_names_the_command_that_works(tiny_ft, tmp_path, capsys):
    """A fine-tune folder without its base: the one line names base + this config.json, and
    that command runs (it named only `--hf-repo BASE`, which drops the adapters)."""
    import soundfile as sf

    from moshi_mlx.cli.run_inference import main

    ft, cfg, state, layout = tiny_ft
    base = tmp_path / "base"
    base.mkdir()
    (ft / "model.safetensors").rename(base / "model.safetensors")
    sf.write(tmp_path / "in.wav", np.zeros(2 * 1920, np.float32), 24000)
    common = [
        str(tmp_path / "in.wav"),
        str(tmp_path / "out.wav"),
        "--quiet",
        "--mimi-weight",
        "random",
        "--tokenizer",
        "none",
    ]
    assert main([*common, "--hf-repo", str(ft)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--hf-repo kyutai/moshiko-pytorch-bf16 --lm-config {ft / 'config.json'}" in err
    assert main([*common, "--hf-repo", str(base), "--lm-config", str(ft / "config.json")]) == 0
    assert sf.info(tmp_path / "out.wav").frames == 2 * 1920


def test_adapters_come_from_where_the_given_config_came_from(tiny_ft, tmp_path, fake_hub):  # noqa: F811
    """A fine-tune's config.json given from the Hub (hf://, or a name in the repo): its adapters
    are fetched from that repo, not looked for in the cache folder the config landed in (where
    they are not yet: the place was read off the config's log text, `Path(how).parent`)."""
    from moshi_mlx.weights.resolve import resolve_model

    folder, cfg, state, layout = tiny_ft
    ref = dict(_flat(lm_loader.load_lm(folder, dtype=mx.float32)))
    base = tmp_path / "base with spaces"
    base.mkdir()
    shutil.copy(folder / "model.safetensors", base / "model.safetensors")
    fake_hub["someone/my-finetune"] = {n: folder / n for n in ("config.json", "lora.safetensors")}
    fake_hub["someone/whole-finetune"] = {
        n: folder / n for n in ("config.json", "model.safetensors", "lora.safetensors")
    }
    for source, config in (
        (base, "hf://someone/my-finetune/config.json"),
        ("someone/whole-finetune", "config.json"),
        (base, folder / "config.json"),
    ):
        files = resolve_model(source, config=config)
        assert files.adapters is not None and files.adapters.name == "lora.safetensors", (source, config)
        got = dict(_flat(lm_loader.load_resolved(files, dtype=mx.float32)))
        assert all(np.array_equal(np.array(got[n]), np.array(ref[n])) for n in ref), (source, config)


def test_a_hub_repo_of_adapters_only_names_the_command_that_works(tiny_ft, tmp_path, fake_hub, monkeypatch):  # noqa: F811
    """moshi-finetune's consolidated/ (config.json with lora: true, lora.safetensors) pushed to
    the Hub as a repo: it was 'Hugging Face repo 'someone/my-finetune' has no file
    'model.safetensors'' online and, offline, '... download it once online (hf download
    someone/my-finetune model.safetensors)', a file that repo does not have; now the line a
    folder of adapters gets, with --lm-config hf://REPO/config.json, and that command runs."""
    import huggingface_hub.constants as c

    from moshi_mlx.weights.resolve import resolve_model

    folder, cfg, state, layout = tiny_ft
    base = tmp_path / "base"
    base.mkdir()
    shutil.copy(folder / "model.safetensors", base / "model.safetensors")
    fake_hub["someone/my-finetune"] = {n: folder / n for n in ("config.json", "lora.safetensors")}
    line = (
        r"^someone/my-finetune holds LoRA adapters only \(lora.safetensors\): pass the base weights they were trained "
        r"on with this repo's config.json, e.g. --hf-repo kyutai/moshiko-pytorch-bf16 --lm-config "
        r"hf://someone/my-finetune/config.json \(Python: "
    )
    with pytest.raises(WeightsError, match=line):
        resolve_model("someone/my-finetune")
    files = resolve_model(base, config="hf://someone/my-finetune/config.json")  # as the line says
    assert files.adapters.name == "lora.safetensors"
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)  # offline, from the cache those calls filled
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError, match=line):
        resolve_model("someone/my-finetune")
    assert resolve_model(base, config="hf://someone/my-finetune/config.json").adapters == files.adapters


def test_lora_weight_flag_fuses_the_adapters_and_refuses_bad_ones_in_one_line(tiny_ft, tmp_path, capsys):
    """`--lora-weight PATH` (upstream moshi.server's flag) reaches the one load path: the
    model the CLI loads is the fused one; a missing file, a file without adapters, adapters
    of another shape or a config without lora: true are one line, exit 2."""
    import soundfile as sf

    from moshi_mlx.cli import local_web, run_inference
    from moshi_mlx.cli.model_args import load, load_kwargs

    ft, cfg, state, layout = tiny_ft
    base = tmp_path / "base"  # the base alone: no config.json, its shapes fit random-tiny
    base.mkdir()
    shutil.copy(ft / "model.safetensors", base / "model.safetensors")
    (ft / "lora.safetensors").rename(ft / "my adapters.safetensors")  # not the default name: only the flag finds it
    lora = ft / "my adapters.safetensors"
    flags = ["--hf-repo", str(base), "--config-path", str(ft / "config.json"), "--lora-weight", str(lora)]
    args = local_web.parser().parse_args(flags)
    ref = dict(_flat(lm_loader.load_lm(base / "model.safetensors", cfg, lora=lora, dtype=mx.float32)))
    plain = dict(_flat(lm_loader.load_lm(base / "model.safetensors", LmConfig.from_dict(_tiny()), dtype=mx.float32)))
    got = dict(
        _flat(
            load(
                **{**load_kwargs(args), "mimi": "random", "tokenizer": "none", "dtype": "float32"}, compute="stored"
            ).lm
        )
    )
    k = "transformer.layers.0.gating.linear_in.weight"
    assert not np.array_equal(np.array(ref[k]), np.array(plain[k]))
    assert all(np.array_equal(np.array(got[n]), np.array(ref[n])) for n in ref)

    sf.write(tmp_path / "in.wav", np.zeros(2 * 1920, np.float32), 24000)
    common = [str(tmp_path / "in.wav"), str(tmp_path / "out.wav"), "--quiet", "--mimi-weight", "random"]
    common += ["--tokenizer", "none", "--force"]
    assert run_inference.main([*common, *flags]) == 0
    assert sf.info(tmp_path / "out.wav").frames == 2 * 1920
    capsys.readouterr()

    save_file(
        random_lora({**layout, "text_linear.lora_A.weight": [4, 48], "text_linear.lora_B.weight": [8, 4]}, 2),
        str(tmp_path / "misfit.safetensors"),
    )
    cases = [
        (["--lora-weight", str(tmp_path / "nope.safetensors")], "LoRA adapters: file not found: "),
        (["--lora-weight", str(base / "model.safetensors")], "holds no LoRA adapters"),
        (
            ["--lora-weight", str(tmp_path / "misfit.safetensors")],
            r"text_linear.lora_A.weight gives a \[8, 48\] update",
        ),
        (["--lm-config", "random-tiny", "--lora-weight", str(lora)], "the config has no lora: true"),
    ]
    for extra, match in cases:
        argv = [*common, "--hf-repo", str(base), "--lm-config", str(ft / "config.json"), *extra]
        assert run_inference.main(argv) == 2, extra
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ") and re.search(match, err), err
        assert "Traceback" not in err
