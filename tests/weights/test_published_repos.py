"""Every published repo, held the way users hold it: in the Hugging Face cache (offline flag,
no network, with and without huggingface_hub's `.no_exist` records), as a local copy of its
folder, as its weights file alone. The files are the repos' real names in their real key
layouts and dtypes; full-size checkpoints have a real header and no data (`hf_cache.header_only`),
which is all the resolver reads: config, layout and quantization are decided from it.
The end-to-end tests at the bottom load and run narrow models in the same layouts.
"""

from __future__ import annotations

import json
import os
import shutil
import socket

import mlx.core as mx
import numpy as np
import pytest

import moshi_mlx
from moshi_mlx.errors import UsageError
from moshi_mlx.models.config import LmConfig, preset
from moshi_mlx.weights import hub
from moshi_mlx.weights.hub import hf_get
from moshi_mlx.weights.errors import WeightsError
from moshi_mlx.weights.quantize import QuantSpec
from moshi_mlx.weights.resolve import resolve_model

from .hf_cache import add_repo, fake_hub, header_only, mlx_layout, torch_layout  # noqa: F401  (fixture)

MIMI, TOK32K = "tokenizer-e351c8d8-checkpoint125.safetensors", "tokenizer_spm_32k_3.model"
STT_MIMI = "mimi-pytorch-e351c8d8@125.safetensors"


def _stt_config(name: str) -> dict:
    d = preset(name).to_dict()
    d.pop("_source", None)
    return d


def _hibiki_config(weights: str, mimi: str) -> dict:
    """A Hibiki 2B repo's config.json: the preset's keys (upstream's moshi_mlx_2b.json) and the
    file names its loaders read (upstream's local_web requires mimi_name and tokenizer_name)."""
    return {**_stt_config("hibiki-2b"), "moshi_name": weights, "mimi_name": mimi}


# repo -> (weights file, its layout: (preset, "mlx"/"torch", bits, group), config.json or None, companions)
def _moshi(fmt_file, bits=None, group=None, layout="mlx", name="moshiko"):
    return (fmt_file, (name, layout, bits, group), None, (MIMI, TOK32K))


PUBLISHED = {
    "kyutai/moshiko-mlx-q4": _moshi("model.q4.safetensors", 4, 32),
    "kyutai/moshiko-mlx-q8": _moshi("model.q8.safetensors", 8, 64),
    "kyutai/moshiko-mlx-bf16": _moshi("model.safetensors"),
    "kyutai/moshika-mlx-q4": _moshi("model.q4.safetensors", 4, 32, name="moshika"),
    "kyutai/moshika-mlx-q8": _moshi("model.q8.safetensors", 8, 64, name="moshika"),
    "kyutai/moshika-mlx-bf16": _moshi("model.safetensors", name="moshika"),
    "kyutai/moshiko-pytorch-bf16": _moshi("model.safetensors", layout="torch"),
    "kyutai/moshika-pytorch-bf16": _moshi("model.safetensors", layout="torch", name="moshika"),
    # the Hibiki 2B repos' files, as the Hub lists them (2026-12): a config.json naming them
    "kyutai/hibiki-2b-mlx-bf16": (
        "hibiki-mlx-220b12c0@200.safetensors",
        ("hibiki-2b", "mlx", None, None),
        _hibiki_config("hibiki-mlx-220b12c0@200.safetensors", "mimi-dbaa9758@125.safetensors"),
        ("mimi-dbaa9758@125.safetensors", "tokenizer_spm_48k_multi6_2.model"),
    ),
    "kyutai/hibiki-2b-pytorch-bf16": (
        "hibiki-pytorch-220b12c0@200.safetensors",
        ("hibiki-2b", "torch", None, None),
        _hibiki_config("hibiki-pytorch-220b12c0@200.safetensors", STT_MIMI),
        (STT_MIMI, "tokenizer_spm_48k_multi6_2.model"),
    ),
    "kyutai/stt-1b-en_fr-mlx": (
        "model.safetensors",
        ("stt-1b-en_fr", "mlx", None, None),
        _stt_config("stt-1b-en_fr"),
        (STT_MIMI, "tokenizer_en_fr_audio_8000.model"),
    ),
    "kyutai/stt-1b-en_fr": (
        "model.safetensors",
        ("stt-1b-en_fr", "torch", None, None),
        _stt_config("stt-1b-en_fr"),
        (STT_MIMI, "tokenizer_en_fr_audio_8000.model"),
    ),
    "kyutai/stt-1b-en_fr-candle": (
        "model.safetensors",
        ("stt-1b-en_fr-candle", "torch", None, None),
        _stt_config("stt-1b-en_fr-candle"),
        (STT_MIMI, "tokenizer_en_fr_audio_8000.model"),
    ),
    "kyutai/stt-2.6b-en-mlx": (
        "model.safetensors",
        ("stt-2.6b-en", "mlx", None, None),
        _stt_config("stt-2.6b-en"),
        (STT_MIMI, "tokenizer_en_audio_4000.model"),
    ),
    "kyutai/tts-1.6b-en_fr": (
        "dsm_tts_1e68beda@240.safetensors",
        ("tts-1.6b-en_fr", "torch", None, None),
        _stt_config("tts-1.6b-en_fr"),
        (MIMI, "tokenizer_spm_8k_en_fr_audio.model"),  # its Mimi has the moshiko repos' name
    ),
}
HELIUM = "kyutai/helium-1-preview-2b-mlx"
HELIUM_FILES = {
    None: ("helium-1-preview-2b-bf16.safetensors", None),
    4: ("helium-1-preview-2b-q4.safetensors", 4),
    6: ("helium-1-preview-2b-q6.safetensors", 6),
    8: ("helium-1-preview-2b-q8.safetensors", 8),
}


def _layout(spec):
    name, kind, bits, group = spec
    cfg = preset(name)
    return torch_layout(cfg) if kind == "torch" else mlx_layout(cfg, bits, group)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The published files, once: name -> local path (full-size headers, no data)."""
    root = tmp_path_factory.mktemp("published")
    out = {}
    for repo, (wname, spec, cfg, companions) in PUBLISHED.items():
        d = root / repo.replace("/", "--")
        d.mkdir()
        out[repo] = {wname: header_only(d / wname, _layout(spec))}
        for c in companions:
            (d / c).write_bytes(b"companion " + c.encode())
            out[repo][c] = d / c
        if cfg is not None:
            (d / "config.json").write_text(json.dumps(cfg))
            out[repo]["config.json"] = d / "config.json"
    d = root / "helium"
    d.mkdir()
    out[HELIUM] = {
        n: header_only(d / n, mlx_layout(preset("helium-2b"), b, None if b is None else 64))
        for n, b in HELIUM_FILES.values()
    }
    (d / "tokenizer_spm_48k_multi6_2.model").write_bytes(b"tok")
    out[HELIUM]["tokenizer_spm_48k_multi6_2.model"] = d / "tokenizer_spm_48k_multi6_2.model"
    return out


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache, made the current one; the network is not touched."""
    import huggingface_hub.constants as c

    path = tmp_path / "hf-cache"
    path.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(path))
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(path))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", False)
    return path


def _offline(monkeypatch):
    import huggingface_hub.constants as c

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)


def _no_network(monkeypatch):
    def fail(*a, **k):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setattr(hub.socket, "getaddrinfo", fail)
    monkeypatch.setattr(hub, "_REACHABLE", {})  # (a probe of an earlier test, online, is not this one's)

    def no_request(*a, **k):  # nothing may go past the cache
        raise AssertionError("a request was made")

    import huggingface_hub

    real = huggingface_hub.hf_hub_download
    monkeypatch.setattr(
        huggingface_hub, "hf_hub_download", lambda *a, **k: real(*a, **k) if k.get("local_files_only") else no_request()
    )


def _expected(repo):
    wname, (name, kind, bits, group), cfg, companions = PUBLISHED[repo]
    quant = {QuantSpec(bits, group)} if bits else set()
    return wname, preset(name), kind == "torch", quant, companions


def _arch(cfg: LmConfig) -> dict:
    d = cfg.to_dict()
    for k in ("_source", "moshi_name", "mimi_name", "tokenizer_name", "lm_gen_config"):
        d.pop(k, None)
    return d


def _check(files, repo, wname, cfg, pytorch, quant, companions):
    assert files.weights.name == wname
    assert _arch(files.cfg) == _arch(cfg)
    assert files.fit.pytorch == pytorch
    assert set(files.fit.quant.values()) == quant
    if quant:  # upstream quantizes every Linear and embedding table
        assert len(files.fit.quant) == sum(1 for k in files.fit.expected if k.endswith(".scales"))
        assert "text_emb" in files.fit.quant
    for c in companions:
        assert files.get(c).read_bytes().startswith(b"companion")
    assert {files.mimi, files.tokenizer} <= set(companions)  # the names the model looks up are the repo's


HOW = ["offline flag, .no_exist recorded", "no network, no flag", "cache of another tool (no .no_exist)"]


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("repo", list(PUBLISHED))
def test_from_the_cache(files, cache, monkeypatch, repo, how):
    wname, cfg, pytorch, quant, companions = _expected(repo)
    absent = () if "config.json" in files[repo] or "another tool" in how else ("config.json",)
    add_repo(cache, repo, files[repo], absent=absent)
    if how.startswith("offline"):
        _offline(monkeypatch)
    else:
        _no_network(monkeypatch)
    _check(resolve_model(repo), repo, wname, cfg, pytorch, quant, companions)


@pytest.mark.parametrize("repo", list(PUBLISHED))
def test_local_copy_of_the_folder_and_the_file_alone(files, tmp_path, monkeypatch, repo):
    _no_network(monkeypatch)
    wname, cfg, pytorch, quant, companions = _expected(repo)
    folder = tmp_path / repo.split("/")[1]
    folder.mkdir()
    for n, p in files[repo].items():
        shutil.copy(p, folder / n) if n == "config.json" else (folder / n).hardlink_to(p)
    _check(resolve_model(folder), repo, wname, cfg, pytorch, quant, companions)
    alone = resolve_model(folder / wname)
    assert _arch(alone.cfg) == _arch(cfg) and set(alone.fit.quant.values()) == quant
    if "config.json" not in files[repo]:
        assert "matched by tensor shapes" in alone.how
        # the file moved away from its companions: still detected from its header alone
        lone = tmp_path / "elsewhere" / wname
        lone.parent.mkdir()
        lone.hardlink_to(folder / wname)
        assert _arch(resolve_model(weights=lone).cfg) == _arch(cfg)


@pytest.mark.parametrize("q", [None, 4, 6, 8])
def test_helium_files_by_quantization(files, cache, monkeypatch, q):
    add_repo(cache, HELIUM, files[HELIUM], absent=("config.json",))
    _offline(monkeypatch)
    name, bits = HELIUM_FILES[q]
    for source in (HELIUM, "helium-2b"):  # the repo, or the preset name
        got = resolve_model(source, quantized=q)
        assert got.weights.name == name
        assert set(got.fit.quant.values()) == ({QuantSpec(bits, 64)} if bits else set())
        assert _arch(got.cfg) == _arch(preset("helium-2b"))


def test_helium_local_folder_picks_the_file_by_quantization(files, tmp_path):
    folder = tmp_path / "helium"
    folder.mkdir()
    for n, p in files[HELIUM].items():
        (folder / n).hardlink_to(p)
    for q, (name, bits) in HELIUM_FILES.items():
        got = resolve_model(folder, quantized=q)
        assert got.weights.name == name and "matched by tensor shapes" in got.how


def test_asking_a_known_repo_for_a_quantization_it_lacks_names_the_repo(files, cache, monkeypatch):
    add_repo(cache, "kyutai/moshiko-mlx-q4", files["kyutai/moshiko-mlx-q4"], absent=("config.json",))
    _offline(monkeypatch)
    with pytest.raises(
        UsageError,
        match=r"kyutai/moshiko-mlx-q4 holds q4 weights, not q8; the q8 weights are in "
        r"kyutai/moshiko-mlx-q8",
    ):
        resolve_model("kyutai/moshiko-mlx-q4", quantized=8)


def test_a_missing_file_names_repo_file_and_the_download_command(files, cache, monkeypatch):
    repo = "kyutai/moshiko-mlx-q4"
    only = {k: v for k, v in files[repo].items() if k != "model.q4.safetensors"}
    add_repo(cache, repo, only, absent=("config.json",))
    _offline(monkeypatch)
    with pytest.raises(WeightsError) as e:
        resolve_model(repo)
    msg = str(e.value)
    assert "\n" not in msg
    assert "model.q4.safetensors from kyutai/moshiko-mlx-q4 is not in the local Hugging Face cache" in msg
    assert "download kyutai/moshiko-mlx-q4 model.q4.safetensors" in msg


def test_a_format_not_cached_names_the_one_that_is(files, cache, monkeypatch):
    """The README's `moshi-local -q 4` once, then `moshi-local` offline: the bf16 repo is not
    cached and the line says which format of the same model is."""
    add_repo(cache, "kyutai/moshiko-mlx-q4", files["kyutai/moshiko-mlx-q4"], absent=("config.json",))
    hel = {k: v for k, v in files[HELIUM].items() if "bf16" not in k and "q8" not in k and "q6" not in k}
    add_repo(cache, HELIUM, hel, absent=("config.json",))
    _offline(monkeypatch)
    q4 = "kyutai/moshiko-mlx-q4"
    hint = f"(kyutai/moshiko-mlx-q4 is in the cache: --hf-repo {q4}, or load('{q4}'))"
    # the default model at bf16 or q8: its q4 is named; moshika's repo: none of moshika is cached
    for source, quantized in ((None, None), (None, 8), ("kyutai/moshika-mlx-bf16", None)):
        with pytest.raises(WeightsError) as e:
            resolve_model(source, quantized=quantized)
        assert str(e.value).endswith(hint) == (source is None), str(e.value)
    with pytest.raises(WeightsError, match=r"\(helium-1-preview-2b-q4.safetensors is in the cache: quantized=4\)$"):
        resolve_model(HELIUM)


def test_a_repo_config_that_is_not_a_moshi_config_is_not_read_as_one(files, cache, monkeypatch, tmp_path):
    """A repo may hold a config.json for another tool (PersonaPlex's is ignored by its own
    loader): the preset known for the repo, or the shapes, decide."""
    repo = "kyutai/moshiko-mlx-q8"
    other = tmp_path / "config.json"
    other.write_text(json.dumps({"model_type": "personaplex", "architectures": ["Something"], "torch_dtype": "bf16"}))
    add_repo(cache, repo, {**files[repo], "config.json": other})
    _offline(monkeypatch)
    got = resolve_model(repo)
    assert got.how == "preset moshiko" and set(got.fit.quant.values()) == {QuantSpec(8, 64)}
    # a config.json that IS an LM config but is wrong is still refused, in one line
    bad = tmp_path / "bad" / "config.json"
    bad.parent.mkdir()
    bad.write_text(json.dumps({**preset("moshiko").to_dict(), "dim": "wide"}))
    (bad.parent / "model.q8.safetensors").hardlink_to(files[repo]["model.q8.safetensors"])
    with pytest.raises(moshi_mlx.ConfigError, match="dim"):
        resolve_model(bad.parent)


def test_detection_understands_mixed_quantization(tmp_path):
    """A file with modules at several bits / group sizes (convert's recipes) is still matched."""
    cfg = preset("moshiko")
    lay = mlx_layout(cfg, 4, 32)
    q8 = mlx_layout(cfg, 8, 64)
    mixed = {k: (q8[k] if k.startswith("depformer") and k in q8 else v) for k, v in lay.items()}
    p = header_only(tmp_path / "model.mixed.safetensors", mixed)
    got = resolve_model(weights=p)
    assert "matched by tensor shapes" in got.how
    assert set(got.fit.quant.values()) == {QuantSpec(4, 32), QuantSpec(8, 64)}


def test_a_file_that_fits_no_preset_says_so(tmp_path):
    cfg = preset("moshiko")
    lay = mlx_layout(cfg, 4, 32)
    lay.pop("text_linear.weight")
    p = header_only(tmp_path / "model.q4.safetensors", lay)
    with pytest.raises(moshi_mlx.ConfigError, match="its tensors fit no preset"):
        resolve_model(weights=p)


# ---- end to end: narrow models in the same layouts, loaded and run from the cache -----------


def _tokenizer(path, vocab=24):
    import sentencepiece as spm

    corpus = path.parent / f"{path.stem}-corpus.txt"
    corpus.write_text("hello world this is a test of the speech model on a mac offline\n" * 50)
    spm.SentencePieceTrainer.Train(
        input=str(corpus), model_prefix=str(path.with_suffix("")), vocab_size=vocab, minloglevel=2
    )
    return path


@pytest.fixture(scope="module")
def narrow_moshiko(tmp_path_factory):
    """moshiko-mlx-q4's three files at narrow width (q4/g32 as upstream quantizes: every
    Linear and embedding that the group divides), the published Mimi with random weights,
    a real SentencePiece tokenizer; and the narrow config that stands for the preset."""
    from moshi_mlx.models import random_lm
    from moshi_mlx.models.mimi_config import mimi_202407
    from moshi_mlx.weights.lm_loader import save_lm
    from moshi_mlx.weights.mimi_keys import random_published_weights
    from moshi_mlx.weights.quantize import quantize_model

    from .hf_cache import narrow_preset

    root = tmp_path_factory.mktemp("narrow-moshiko")
    d = narrow_preset("moshiko", text_card=24)
    (root / "preset.json").write_text(json.dumps(d))
    lm = random_lm(LmConfig.from_dict(dict(d)), seed=3, dtype=mx.bfloat16)
    quantize_model(lm, 4, 32)
    save_lm(lm, root / "model.q4.safetensors")
    mimi = {k: mx.array(v) for k, v in random_published_weights(mimi_202407(), seed=5).items()}
    mx.save_safetensors(str(root / MIMI), mimi)
    _tokenizer(root / TOK32K)
    return root


@pytest.fixture
def narrow_presets(monkeypatch, narrow_moshiko):
    """The moshiko/moshika presets at narrow width (the repo -> preset mapping unchanged)."""
    from moshi_mlx.models import config as config_mod

    real = config_mod.preset_path
    monkeypatch.setattr(
        config_mod,
        "preset_path",
        lambda name: narrow_moshiko / "preset.json" if name in ("moshiko", "moshika") else real(name),
    )


@pytest.mark.parametrize("how", ["offline flag", "no network"])
def test_the_default_model_loads_and_answers_from_the_cache(
    narrow_moshiko, narrow_presets, cache, monkeypatch, tmp_path, how
):
    repo = "kyutai/moshiko-mlx-q4"
    add_repo(
        cache, repo, {n: narrow_moshiko / n for n in ("model.q4.safetensors", MIMI, TOK32K)}, absent=("config.json",)
    )
    _offline(monkeypatch) if how == "offline flag" else _no_network(monkeypatch)
    for model in (moshi_mlx.load(repo), moshi_mlx.load(quantized=4)):  # the repo, or -q 4's default
        assert model.files.weights.name == "model.q4.safetensors" and model.files.how == "preset moshiko"
        pcm = (0.1 * np.sin(np.arange(6 * 1920) / 10)).astype(np.float32)  # 6 frames
        reply = model.respond(pcm, sample_rate=24000, temp=0, temp_text=0)
        assert reply.audio.shape[0] == pcm.shape[0] and np.isfinite(reply.audio).all()


def test_run_inference_from_the_cache_with_hf_repo_and_q(narrow_moshiko, narrow_presets, cache, monkeypatch, tmp_path):
    import soundfile as sf

    from moshi_mlx.cli.run_inference import main

    repo = "kyutai/moshiko-mlx-q4"
    add_repo(cache, repo, {n: narrow_moshiko / n for n in ("model.q4.safetensors", MIMI, TOK32K)})  # no records
    _no_network(monkeypatch)
    sf.write(tmp_path / "in.wav", np.zeros(6 * 1920, np.float32), 24000)
    for i, flags in enumerate((["--hf-repo", repo], ["-q", "4"], ["--hf-repo", repo, "-q", "4", "--offline"])):
        out = tmp_path / f"out{i}.wav"
        assert main([str(tmp_path / "in.wav"), str(out), "--quiet", *flags]) == 0
        assert sf.info(out).frames == 6 * 1920


def test_an_lm_takes_the_published_mimi_cached_under_another_repo_offline(
    narrow_moshiko, narrow_presets, cache, monkeypatch, tmp_path, capsys
):
    """Offline, kyutai/moshika-mlx-q4's weights and tokenizer in the cache but not its Mimi,
    which kyutai/moshiko-mlx-q4 holds there (the same published file: moshi-mimi took it, the
    LM path did not: 'tokenizer-e351c8d8-checkpoint125.safetensors from kyutai/moshika-mlx-q4 is
    not in the local Hugging Face cache ...'): load(), run_inference and the resolver take it,
    and the loaded line says so (once: a NOTE line repeated it); the STT repos' name of it counts too. Only where the file asked for
    is the published one: a Mimi of another name is not replaced."""
    import soundfile as sf

    from moshi_mlx.cli.run_inference import main

    add_repo(
        cache,
        "kyutai/moshika-mlx-q4",
        {n: narrow_moshiko / n for n in ("model.q4.safetensors", TOK32K)},
        absent=("config.json",),
    )
    mimi_snap = add_repo(cache, "kyutai/moshiko-mlx-q4", {MIMI: narrow_moshiko / MIMI})
    _offline(monkeypatch)
    files = resolve_model("kyutai/moshika-mlx-q4", quantized=4)
    assert files.companion("mimi") == mimi_snap / MIMI
    note = f"{MIMI} from kyutai/moshiko-mlx-q4, the same published file: kyutai/moshika-mlx-q4's is not in the cache"
    assert files.mimi_note == note
    model = moshi_mlx.load("kyutai/moshika-mlx-q4", quantized=4)
    assert (
        model.files.mimi_note == note and f", Mimi {MIMI} via {model.mimi_backend} ({note}), " in model.description
    ), model.description
    sf.write(tmp_path / "in.wav", np.zeros(2 * 1920, np.float32), 24000)
    argv = [str(tmp_path / "in.wav"), str(tmp_path / "out.wav"), "--hf-repo", "kyutai/moshika-mlx-q4"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    # named once, in the loaded line: a "NOTE: Mimi ..." line repeated it
    assert f"\nloaded {model.description}\n" in "\n" + err and err.count(note) == 1 and "NOTE" not in err, err
    # the STT repos' name of the same file (mimi-pytorch-e351c8d8@125.safetensors) stands in too
    shutil.rmtree(cache / "models--kyutai--moshiko-mlx-q4")
    stt = add_repo(cache, "kyutai/stt-1b-en_fr", {"mimi-pytorch-e351c8d8@125.safetensors": narrow_moshiko / MIMI})
    assert (
        resolve_model("kyutai/moshika-mlx-q4", quantized=4).companion("mimi")
        == stt / "mimi-pytorch-e351c8d8@125.safetensors"
    )
    # a Mimi of another name is not the published one: its own line, as before
    shutil.rmtree(cache / "models--kyutai--stt-1b-en_fr")
    add_repo(cache, "kyutai/moshiko-mlx-q4", {MIMI: narrow_moshiko / MIMI})
    files = resolve_model("kyutai/moshika-mlx-q4", quantized=4, mimi="mimi-other@1.safetensors")
    with pytest.raises(WeightsError, match=r"^mimi-other@1.safetensors from kyutai/moshika-mlx-q4 is not in the local"):
        files.companion("mimi")


def test_helium_cli_with_q_from_the_cache(cache, monkeypatch, tmp_path, capsys):
    """`moshi-helium -q 4` (and 8) loads the repo's helium-1-preview-2b-q4 file offline; it
    was refused ('-q picks Moshi's repos') and an explicit repo silently loaded bf16."""
    from moshi_mlx.cli.helium import main
    from moshi_mlx.models import config as config_mod
    from moshi_mlx.models import random_lm
    from moshi_mlx.weights.lm_loader import save_lm
    from moshi_mlx.weights.quantize import quantize_model

    from .hf_cache import narrow_preset

    d = narrow_preset("helium-2b", text_card=23, text_card_out=24)
    (tmp_path / "preset.json").write_text(json.dumps(d))
    real = config_mod.preset_path
    monkeypatch.setattr(config_mod, "preset_path", lambda n: tmp_path / "preset.json" if n == "helium-2b" else real(n))
    files = {"tokenizer_spm_48k_multi6_2.model": _tokenizer(tmp_path / "tokenizer_spm_48k_multi6_2.model")}
    for q in (4, 8):
        lm = random_lm(LmConfig.from_dict(dict(d)), seed=q, dtype=mx.bfloat16)
        quantize_model(lm, q, 64)
        name = f"helium-1-preview-2b-q{q}.safetensors"
        save_lm(lm, tmp_path / name)
        files[name] = tmp_path / name
    add_repo(cache, HELIUM, files, absent=("config.json",))
    _offline(monkeypatch)
    for q in (4, 8):
        assert main(["hello world", "-q", str(q), "--max-tokens", "3", "--temp", "0"]) == 0
        assert capsys.readouterr().out.startswith("hello world")
    assert main(["hello", "--max-tokens", "1"]) == 2  # bf16 is not in this cache: one line, file and repo
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1
        and "helium-1-preview-2b-bf16.safetensors from kyutai/helium-1-preview-2b-mlx "
        "is not in the local Hugging Face cache"
        in err
    )


def test_the_cache_hf_home_names_on_a_path_with_spaces_and_accents(narrow_moshiko, tmp_path):
    """The CLI in a fresh process, as a user runs it: the cache is where HF_HOME says
    (huggingface_hub reads it at import), on a path with a space and an accent; a cache
    holding no model at all (HF_HOME set in another shell) names the path it looked in."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import soundfile as sf

    home = tmp_path / "my caches" / "hübsch"
    cfg = json.loads((narrow_moshiko / "preset.json").read_text())
    cfg["moshi_name"] = "model.q4.safetensors"
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    files = {n: narrow_moshiko / n for n in ("model.q4.safetensors", MIMI, TOK32K)}
    add_repo(home / "hub", "me/narrow", {**files, "config.json": tmp_path / "config.json"})
    sf.write(tmp_path / "in.wav", np.zeros(4 * 1920, np.float32), 24000)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(HF_HUB_OFFLINE="1", PYTHONPATH=str(Path(moshi_mlx.__file__).parent.parent))

    def run(hf_home):
        argv = ["-m", "moshi_mlx.run_inference", "in.wav", "out.wav", "--force", "--hf-repo", "me/narrow", "--quiet"]
        return subprocess.run(
            [sys.executable, *argv], cwd=tmp_path, env={**env, "HF_HOME": str(hf_home)}, capture_output=True, text=True
        )

    done = run(home)
    assert done.returncode == 0 and sf.info(tmp_path / "out.wav").frames == 4 * 1920, done.stderr
    done = run(tmp_path / "elsewhere")
    assert done.returncode == 2 and done.stderr.strip().endswith(
        f"(the cache in use, {tmp_path / 'elsewhere' / 'hub'}, holds no model: downloaded with another HF_HOME "
        "or HF_HUB_CACHE?)"
    ), done.stderr


# ---- caches in odd states ------------------------------------------------------------------


def _move_main(cache, repo, commit="b" * 40, files=None):
    """refs/main moved on to `commit`, whose snapshot holds only `files` (as after a later
    download of one file, e.g. a README, once the repo changed)."""
    root = cache / ("models--" + repo.replace("/", "--"))
    snap = root / "snapshots" / commit
    snap.mkdir(parents=True)
    for name, src in (files or {}).items():
        (snap / name).symlink_to(src)
    (root / "refs" / "main").write_text(commit)


@pytest.mark.parametrize("how", ["offline flag", "no network"])
@pytest.mark.parametrize("state", ["main moved to a snapshot without the file", "no refs/main (by commit hash)"])
def test_the_file_cached_at_another_revision_is_used(files, cache, monkeypatch, state, how):
    """huggingface_hub looks only in main's snapshot; the file the user has is in another one."""
    repo = "kyutai/moshiko-mlx-q4"
    add_repo(cache, repo, files[repo], refs="refs" not in state)
    if "moved" in state:
        _move_main(cache, repo)
    _offline(monkeypatch) if how == "offline flag" else _no_network(monkeypatch)
    got = resolve_model(repo)
    assert got.weights.name == "model.q4.safetensors" and got.how == "preset moshiko"
    assert got.get(MIMI).read_bytes().startswith(b"companion")


def test_an_interrupted_download_is_said_so(files, cache, monkeypatch):
    """An interrupted download leaves `blobs/<etag>.incomplete` and no snapshot link."""
    repo = "kyutai/moshiko-mlx-q4"
    snap = add_repo(
        cache, repo, {k: v for k, v in files[repo].items() if k != "model.q4.safetensors"}, absent=("config.json",)
    )
    (snap.parent.parent / "blobs" / ("e" * 64 + ".incomplete")).write_bytes(b"\0" * 4096)
    _offline(monkeypatch)
    with pytest.raises(WeightsError) as e:
        resolve_model(repo)
    msg = str(e.value)
    assert (
        "\n" not in msg
        and "model.q4.safetensors from kyutai/moshiko-mlx-q4 is not in the local Hugging Face "
        "cache (it holds an interrupted download of this repo: run the download again)"
        in msg
    )
    assert "hf download kyutai/moshiko-mlx-q4 model.q4.safetensors" in msg


def test_a_hub_that_refuses_connections_serves_the_cache_at_once(files, cache, monkeypatch):
    """The Hub's name resolves, connections are refused: the cached model (no `.no_exist`
    record for its config.json) loads at once; it was 'config.json ... cannot be reached'
    after ~24 s of retries."""
    import time

    _no_network(monkeypatch)
    monkeypatch.setattr(hub.socket, "getaddrinfo", lambda *a, **k: [])
    monkeypatch.setattr(hub, "_REACHABLE", {})

    def refuse(*a, **k):
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(hub.socket, "create_connection", refuse)
    repo = "kyutai/moshiko-mlx-q4"
    add_repo(cache, repo, files[repo])
    t = time.monotonic()
    got = resolve_model(repo)
    assert got.how == "preset moshiko" and time.monotonic() - t < 10


# ---- local copies as users hold them -------------------------------------------------------


def test_q_on_a_folder_of_another_quantization_is_refused(files, tmp_path):
    """`-q 8` on a local copy of the q4 repo (its file renamed model.safetensors, too) loaded
    the q4 weights without a word."""
    folder = tmp_path / "moshiko"
    folder.mkdir()
    (folder / "model.safetensors").hardlink_to(files["kyutai/moshiko-mlx-q4"]["model.q4.safetensors"])
    assert {q.bits for q in resolve_model(folder).fit.quant.values()} == {4}  # detected by shapes
    assert {q.bits for q in resolve_model(folder, quantized=4).fit.quant.values()} == {4}
    with pytest.raises(
        UsageError,
        match=r"^model.safetensors holds q4 weights, not q8: drop quantized=8 to load it as it is, "
        r"or pass the q8 file$",
    ):
        resolve_model(folder, quantized=8)
    bf16 = tmp_path / "bf16"
    bf16.mkdir()
    (bf16 / "model.safetensors").hardlink_to(files["kyutai/moshiko-mlx-bf16"]["model.safetensors"])
    with pytest.raises(UsageError, match="holds float weights, not q4"):
        resolve_model(bf16, quantized=4)


def test_q_on_a_folder_of_several_files_without_that_one_is_refused(files, tmp_path):
    """A folder holding the q4 and bf16 files given -q 8: it said 'should hold one
    .safetensors model file, found model.q4.safetensors, model.safetensors; set moshi_name'."""
    folder = tmp_path / "moshiko"
    folder.mkdir()
    (folder / "model.q4.safetensors").hardlink_to(files["kyutai/moshiko-mlx-q4"]["model.q4.safetensors"])
    (folder / "model.safetensors").hardlink_to(files["kyutai/moshiko-mlx-bf16"]["model.safetensors"])
    assert resolve_model(folder, quantized=4).weights.name == "model.q4.safetensors"
    assert resolve_model(folder).weights.name == "model.safetensors"
    with pytest.raises(
        UsageError,
        match=r"moshiko holds no q8 weights file \(it holds model.q4.safetensors, model.safetensors\): drop quantized=8, "
        r"or pass the file$",
    ):
        resolve_model(folder, quantized=8)


def test_a_config_of_another_tool_with_one_moshi_key_is_not_read(files, tmp_path):
    """DistilBERT-style config.json (`dim`, `n_layers`, ...): it was refused as a Moshi config
    with 'unknown config keys'; the shapes decide."""
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "model.q4.safetensors").hardlink_to(files["kyutai/moshiko-mlx-q4"]["model.q4.safetensors"])
    (folder / "config.json").write_text(
        json.dumps({"dim": 768, "n_layers": 6, "n_heads": 12, "vocab_size": 30522, "model_type": "distilbert"})
    )
    assert "matched by tensor shapes" in resolve_model(folder).how


@pytest.mark.parametrize(
    "spec",
    [
        "kyutai/moshiko-mlx-q4/",
        "https://huggingface.co/kyutai/moshiko-mlx-q4",
        "https://huggingface.co/kyutai/moshiko-mlx-q4/tree/main",
        "hf://kyutai/moshiko-mlx-q4",
        "https://huggingface.co/kyutai/moshiko-mlx-q4/blob/main/model.q4.safetensors",
        "https://huggingface.co/kyutai/moshiko-mlx-q4/resolve/main/model.q4.safetensors?download=true",
    ],
)
def test_a_repo_written_loosely_is_the_repo(files, cache, monkeypatch, spec):
    """A trailing slash, hf://owner/name, the repo's page address or a file's (blob/resolve,
    as copied from the browser): it was 'no such model folder' ('file not found: https://...'
    as --moshi-weight)."""
    repo = "kyutai/moshiko-mlx-q4"
    add_repo(cache, repo, files[repo], absent=("config.json",))
    _offline(monkeypatch)
    got = resolve_model(spec)
    assert got.where == repo and got.how == "preset moshiko" and got.weights.name == "model.q4.safetensors"
    if "/main/" in spec:  # a file's address where weights (or a tokenizer, a Mimi) are expected
        assert resolve_model(weights=spec).weights == got.weights
        assert hf_get(spec.replace("model.q4.safetensors", MIMI)) == got.get(MIMI)
        with pytest.raises(UsageError, match=r"a file of revision 'v0\.1', but files are read from a repo's main"):
            resolve_model(weights=spec.replace("/main/", "/v0.1/"))


def test_another_revision_is_refused_for_a_repo_page_as_for_a_file(files, cache, monkeypatch):
    """`--hf-repo https://huggingface.co/OWNER/NAME/tree/dev` was read as the repo, quietly at
    main, while a file's address of that revision was refused: both are one line now, in the
    same words, naming the download that gets that revision (there is no revision flag)."""
    from moshi_mlx.weights.hub import download_command, repo_id

    repo = "kyutai/moshiko-mlx-q4"
    add_repo(cache, repo, files[repo], absent=("config.json",))
    _offline(monkeypatch)
    page, file = (
        f"https://huggingface.co/{repo}/tree/dev",
        f"https://huggingface.co/{repo}/blob/dev/model.q4.safetensors",
    )
    said = {}
    for spec, how in (
        (page, download_command(repo) + " --revision dev --local-dir DIR) and pass DIR"),
        (page + "/sub", download_command(repo) + ' --revision dev --include "sub/*" --local-dir DIR) and pass DIR/sub'),
        (file, download_command(repo, "model.q4.safetensors") + " --revision dev) and pass its path"),
    ):
        for call in (lambda: resolve_model(spec), lambda: resolve_model(weights=spec)):
            with pytest.raises(UsageError) as e:
                call()
            msg = str(e.value)
            assert "\n" not in msg and msg.startswith(f"{spec}: ") and msg.endswith(how), msg
            said[spec] = msg[len(spec) :].split(" of revision 'dev', but files are read from a repo's main revision")
    assert said[page][0] == ": the repo" and said[file][0] == ": a file", said
    assert said[page + "/sub"][0] == ": the folder 'sub' of the repo", said
    with pytest.raises(UsageError, match=r"of revision 'refs/pr/1'"):  # the Hub's PR address, one revision
        repo_id(f"https://huggingface.co/{repo}/tree/refs%2Fpr%2F1")
    assert repo_id(f"https://huggingface.co/{repo}/tree/main") == repo
    assert resolve_model(f"https://huggingface.co/{repo}/tree/main").where == repo


def test_a_folder_inside_a_repo_is_refused_not_read_as_its_top(files, cache, monkeypatch):
    """`https://huggingface.co/OWNER/NAME/tree/main/FOLDER` (a folder's page, copied from the
    browser) was read as the repo's top level, the folder quietly dropped: a model is read from
    a repo's top (there is no subfolder option), so it is one line naming the download of that
    folder and the path to give. The top's page (`.../tree/main`, `.../tree/main/`) stays the repo."""
    from moshi_mlx.weights.hub import download_command, repo_id

    repo = "kyutai/moshiko-mlx-q4"
    add_repo(cache, repo, files[repo], absent=("config.json",))
    _offline(monkeypatch)
    for folder in ("q4", "models/q4"):
        spec = f"https://huggingface.co/{repo}/tree/main/{folder}"
        for call in (lambda: resolve_model(spec), lambda: resolve_model(weights=spec), lambda: repo_id(spec)):
            with pytest.raises(UsageError) as e:
                call()
            assert str(e.value) == (
                f"{spec}: the folder '{folder}' of the repo {repo}, but a model is read from a repo's top level "
                f'(there is no subfolder option): download it ({download_command(repo)} --include "{folder}/*" '
                f"--local-dir DIR) and pass DIR/{folder}"
            )
    for top in (f"https://huggingface.co/{repo}/tree/main/", f"https://huggingface.co/{repo}/tree/main//"):
        assert repo_id(top) == repo


def test_a_revision_the_cache_holds_is_read_from_its_snapshot(files, cache, monkeypatch):
    """`hf download REPO --revision REV` leaves refs/REV and the commit's snapshot: the repo at
    that revision (REPO@REV, its page .../tree/REV, a file's .../blob/REV/FILE; a branch, a
    commit hash or its first 7 characters) is read from that snapshot. It was refused ('of
    revision ..., but files are read from a repo's main revision'), after the download that
    refusal itself asked for; REPO@REV was 'no such model folder (and not a Hugging Face repo
    id)'. A revision the cache does not hold is still refused in that line."""
    from .hf_cache import COMMIT

    repo = "kyutai/moshiko-mlx-q4"
    snap = add_repo(cache, repo, files[repo], refs=False)
    (snap.parent.parent / "refs").mkdir()
    (snap.parent.parent / "refs" / "v0.1").write_text(COMMIT)
    _offline(monkeypatch)
    page = f"https://huggingface.co/{repo}"
    for spec in (
        f"{repo}@v0.1",
        f"{repo}@{COMMIT}",
        f"{repo}@{COMMIT[:7]}",
        f"{page}/tree/v0.1",
        f"{page}/tree/{COMMIT}",
    ):
        got = resolve_model(spec)
        assert got.weights == snap / "model.q4.safetensors" and got.where == str(snap), spec
        assert set(got.fit.quant.values()) == {QuantSpec(4, 32)} and got.get(MIMI).read_bytes().startswith(b"companion")
    assert resolve_model(weights=f"{page}/blob/v0.1/model.q4.safetensors").weights == snap / "model.q4.safetensors"
    assert hf_get(f"{page}/resolve/{COMMIT}/{MIMI}?download=true") == snap / MIMI
    # HfFileSystem's spelling, hf://owner/name@REV[/FILE]
    assert resolve_model(f"hf://{repo}@v0.1").weights == snap / "model.q4.safetensors"
    assert resolve_model(f"hf://{repo}@{COMMIT[:8]}/model.q4.safetensors").where == str(snap)
    assert hf_get(f"hf://{repo}@v0.1/{MIMI}") == snap / MIMI
    assert resolve_model(f"{repo}@main").where == repo  # main is what is read anyway
    for spec in (f"{repo}@dev", f"hf://{repo}@dev", f"{page}/tree/dev", f"{page}/blob/v0.1/model.q8.safetensors"):
        with pytest.raises(
            UsageError, match=r"of revision '(dev|v0\.1)', but files are read from a repo's main revision"
        ):
            resolve_model(spec)


def test_a_malformed_repo_id_is_one_line(cache, monkeypatch, tmp_path):
    """A spec the Hub cannot take as a repo id (a revision after @, a missing local folder
    with a space or an accent: `my models/modèle`) is no such folder; it was 'not in the local
    Hugging Face cache ... (hf download my models/modèle model.safetensors)'. A valid id whose
    first part is a folder here (a mistyped path) says there is no such folder either."""
    _offline(monkeypatch)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my models").mkdir()
    for spec in ("kyutai/moshiko@", "my models/modèle ü", "models/x..y"):
        with pytest.raises(
            WeightsError, match=r"^\S.*: no such model folder \(and not a Hugging Face repo id, owner/name\)$"
        ):
            resolve_model(spec)
    (tmp_path / "models").mkdir()
    with pytest.raises(
        WeightsError,
        match=r"from models/moshiko-q4 is not in the local Hugging Face cache \(nor is there a folder models/moshiko-q4 here\)",
    ):
        resolve_model("models/moshiko-q4")
    with pytest.raises(WeightsError) as e:
        resolve_model("kyutai/moshiko-mlx-q4")
    assert "nor is there a folder" not in str(e.value)


def test_quality_compares_repos_from_the_cache(narrow_moshiko, narrow_presets, cache, monkeypatch, tmp_path, capsys):
    """`moshi-quality kyutai/moshiko-mlx-bf16 kyutai/moshiko-mlx-q4 --offline`: repo ids where
    weights are expected; it was 'file not found: kyutai/moshiko-mlx-bf16'."""
    from moshi_mlx.cli.quality import main
    from moshi_mlx.models import random_lm
    from moshi_mlx.weights.lm_loader import save_lm

    cfg = LmConfig.from_json(narrow_moshiko / "preset.json")
    save_lm(random_lm(cfg, seed=3, dtype=mx.bfloat16), tmp_path / "model.safetensors")
    add_repo(cache, "kyutai/moshiko-mlx-bf16", {"model.safetensors": tmp_path / "model.safetensors"})
    add_repo(cache, "kyutai/moshiko-mlx-q4", {"model.q4.safetensors": narrow_moshiko / "model.q4.safetensors"})
    _no_network(monkeypatch)
    assert main(["kyutai/moshiko-mlx-bf16", "kyutai/moshiko-mlx-q4", "--offline", "--frames", "2"]) == 0
    out = capsys.readouterr().out
    assert "quality vs kyutai/moshiko-mlx-bf16" in out and "kyutai--moshiko-mlx-q4" not in out


def test_a_local_dir_download_as_hf_leaves_it(files, tmp_path, monkeypatch):
    """`hf download REPO --local-dir DIR`: the files, README.md, .gitattributes and
    `.cache/huggingface/download/*.metadata`; given by path, with a trailing slash, relative
    and by `~`. Interrupted, the weights are only `.cache/.../<hash>.<etag>.incomplete`."""
    _no_network(monkeypatch)
    repo = "kyutai/moshiko-mlx-q4"
    d = tmp_path / "moshiko"
    meta = d / ".cache" / "huggingface" / "download"
    meta.mkdir(parents=True)
    (d / ".cache" / "huggingface" / ".gitignore").write_text("*")
    for n, p in files[repo].items():
        (d / n).hardlink_to(p)
        (meta / f"{n}.metadata").write_text(f"{'c' * 40}\n{'e' * 64}\n1700000000.0\n")
    (d / "README.md").write_text("---\nlicense: cc-by-4.0\n---\n# Moshiko q4\n")
    (d / ".gitattributes").write_text("*.safetensors filter=lfs diff=lfs merge=lfs -text\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    for spec in (d, f"{d}/", "moshiko", "./moshiko/", "~/moshiko"):
        got = resolve_model(spec)
        assert got.weights.name == "model.q4.safetensors" and set(got.fit.quant.values()) == {QuantSpec(4, 32)}
        assert got.get(MIMI).read_bytes().startswith(b"companion")
    (d / "model.q4.safetensors").unlink()
    (meta / ("0123abcd." + "e" * 64 + ".incomplete")).write_bytes(b"\0" * 4096)
    with pytest.raises(WeightsError, match=r"found none \(a download into it was interrupted: run it again\)$"):
        resolve_model(d)


def test_the_cache_snapshot_folder_and_a_symlinked_file_as_local_paths(files, cache, tmp_path, monkeypatch):
    """The snapshot folder of the cache given as a folder (its files are symlinks into blobs/),
    and a weights file that is a symlink to a blob elsewhere: companions are looked up beside
    the link, not beside the blob."""
    _no_network(monkeypatch)
    repo = "kyutai/moshiko-mlx-q4"
    snap = add_repo(cache, repo, files[repo], absent=("config.json",))
    for spec in (snap, f"{snap}/"):
        got = resolve_model(spec)
        assert got.weights == snap / "model.q4.safetensors" and set(got.fit.quant.values()) == {QuantSpec(4, 32)}
        assert got.get(MIMI).read_bytes().startswith(b"companion")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "model.q4.safetensors").symlink_to(snap / "model.q4.safetensors")
    (mine / MIMI).symlink_to(snap / MIMI)
    for got in (resolve_model(mine), resolve_model(weights=mine / "model.q4.safetensors")):
        assert got.weights.parent == mine and got.where == str(mine) and "matched by tensor shapes" in got.how
        assert got.get(MIMI).parent == mine


def test_a_folder_without_its_companions_names_them_before_loading(
    narrow_moshiko, narrow_presets, tmp_path, monkeypatch
):
    """A fine-tune's folder (moshi-finetune's consolidated/) or a weights file copied alone
    holds no Mimi and no tokenizer: each is named with what it is and how to give it (it was
    'model folder D has no file ...': the Mimi's published name does not say it is the codec),
    and before the LM's weights are read (a 7B model takes seconds)."""
    from moshi_mlx.weights import lm_loader

    d = tmp_path / "my fine-tune"
    d.mkdir()
    (d / "model.q4.safetensors").hardlink_to(narrow_moshiko / "model.q4.safetensors")

    def loaded(*a, **k):
        raise AssertionError("the LM was loaded before its companions were found")

    monkeypatch.setattr(lm_loader, "load_resolved", loaded)
    fix = r": put it there, pass its path \(--{}, or {}= in load\(\)\), or take it from the repo the weights come from"
    with pytest.raises(
        WeightsError,
        match=r"has no tokenizer_spm_32k_3.model \(the text tokenizer\)" + fix.format("tokenizer", "tokenizer"),
    ):
        moshi_mlx.load(d)
    (d / TOK32K).hardlink_to(narrow_moshiko / TOK32K)
    with pytest.raises(
        WeightsError, match=rf"has no {MIMI} \(the Mimi codec checkpoint\)" + fix.format("mimi-weight", "mimi")
    ):
        moshi_mlx.load(d / "model.q4.safetensors")


def test_a_cache_folder_given_as_a_model_folder(files, cache, monkeypatch):
    """Browsing ~/.cache/huggingface/hub, a user gives the repo's models--owner--name folder
    (or its snapshots/) where a model folder is expected: its main snapshot is used, or the
    newest holding weights when main moved on. It was 'should hold one .safetensors model
    file, found none'. The cache itself is named as one, with the repo ids it holds."""
    from moshi_mlx.weights.convert import resolve_source

    _no_network(monkeypatch)
    repo = "kyutai/moshiko-mlx-q4"
    snap = add_repo(cache, repo, files[repo], absent=("config.json",))
    root = snap.parent.parent
    _move_main(cache, repo)  # main's snapshot holds nothing: the one with the weights is taken
    for spec in (root, root / "snapshots", f"{root}/"):
        got = resolve_model(spec)
        assert got.weights == snap / "model.q4.safetensors" and set(got.fit.quant.values()) == {QuantSpec(4, 32)}
        assert got.get(MIMI).read_bytes().startswith(b"companion")
    assert resolve_model(weights=root).weights == snap / "model.q4.safetensors"
    pt = "kyutai/moshiko-pytorch-bf16"
    pt_snap = add_repo(cache, pt, files[pt], absent=("config.json",))
    assert resolve_source(pt_snap.parent.parent).asset_dir == pt_snap  # convert copies the Mimi and tokenizer
    with pytest.raises(
        UsageError,
        match=rf"^{cache} is a Hugging Face cache, not a model folder: give a repo id it holds "
        rf"\({repo}, {pt}\) with HF_HUB_CACHE={cache}$",
    ):
        resolve_model(cache)


# ---- repos in a format that is not read: candle's GGUF ------------------------------------

# kyutai/moshiko-candle-q8 and moshika-candle-q8 hold candle's `model.q8.gguf` (GGUF v3: magic,
# version, tensor and metadata counts), the Mimi and the tokenizer; no safetensors weights
GGUF = b"GGUF" + (3).to_bytes(4, "little") + (0).to_bytes(8, "little") * 2
NOT_READ = r"GGUF \(candle's format\) is not read here; take "


def _candle(tmp_path) -> dict:
    d = tmp_path / "candle"
    d.mkdir()
    (d / "model.q8.gguf").write_bytes(GGUF + b"\0" * 64)
    for c in (MIMI, TOK32K):
        (d / c).write_bytes(b"companion")
    return {n: d / n for n in ("model.q8.gguf", MIMI, TOK32K)}


def test_a_candle_gguf_repo_is_named_with_its_safetensors_twin(cache, monkeypatch, tmp_path, capsys):
    """`--hf-repo kyutai/moshiko-candle-q8` offline was 'model.safetensors from ... is not in the
    local Hugging Face cache ...; download it once online (hf download kyutai/moshiko-candle-q8
    model.safetensors)', a file the repo does not have; its local copy 'should hold one
    .safetensors model file, found none'; the file itself 'is not a safetensors file (or it is
    truncated): bad header length 14064895815'. Now each says it is GGUF, which is not read,
    and names the same model in safetensors."""
    from moshi_mlx.cli.run_inference import main

    files = _candle(tmp_path)
    for repo in ("kyutai/moshiko-candle-q8", "kyutai/moshika-candle-q8"):
        add_repo(cache, repo, files, absent=("config.json",))
    _offline(monkeypatch)
    twin = NOT_READ + r"kyutai/moshiko-mlx-q8, the same model in MLX's layout"
    for q in (None, 8):
        with pytest.raises(
            WeightsError,
            match=r"^kyutai/moshiko-candle-q8 holds no safetensors weights \(it holds GGUF files, model.q8.gguf: "
            + twin
            + r"\)$",
        ):
            resolve_model("kyutai/moshiko-candle-q8", quantized=q)
    with pytest.raises(WeightsError, match=r"^model.q8.gguf is a GGUF file, not a safetensors file: " + twin + "$"):
        resolve_model("kyutai/moshiko-candle-q8", weights="model.q8.gguf")
    either = (
        NOT_READ
        + r"the same model's safetensors weights \(for kyutai's -candle-q8 Moshi repos: kyutai/moshiko-mlx-q8, "
    )
    either += r"kyutai/moshika-mlx-q8\)"
    d = files["model.q8.gguf"].parent  # a local copy
    with pytest.raises(
        WeightsError,
        match=rf"^{d} should hold one .safetensors model file, found none \(it holds "
        rf"GGUF files, model.q8.gguf: {either}\)$",
    ):
        resolve_model(d, quantized=8)
    with pytest.raises(
        WeightsError, match=rf"^{d / 'model.q8.gguf'} is a GGUF file, not a safetensors file: {either}$"
    ):
        resolve_model(weights=d / "model.q8.gguf")
    import soundfile as sf

    sf.write(tmp_path / "in.wav", np.zeros(1920, np.float32), 24000)
    argv = [str(tmp_path / "in.wav"), str(tmp_path / "out.wav"), "--hf-repo", "kyutai/moshika-candle-q8", "-q", "8"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.rstrip().endswith("take kyutai/moshika-mlx-q8, the same model in MLX's layout)")


def test_a_candle_gguf_repo_online_is_named_and_its_gguf_not_downloaded(tmp_path, fake_hub):  # noqa: F811
    """Online, the repo has no model.safetensors ('Hugging Face repo ... has no file'): its file
    list says why; a .gguf named in a repo is refused before its download (8 GB)."""
    fake_hub["kyutai/moshiko-candle-q8"] = _candle(tmp_path)
    with pytest.raises(WeightsError, match=r"^kyutai/moshiko-candle-q8 holds no safetensors weights \(it holds GGUF"):
        resolve_model("kyutai/moshiko-candle-q8")
    with pytest.raises(WeightsError, match=r"^model.q8.gguf is a GGUF file"):
        resolve_model("kyutai/moshiko-candle-q8", weights="model.q8.gguf")
    assert ("kyutai/moshiko-candle-q8", "model.q8.gguf") not in fake_hub.asked


def test_a_gguf_file_given_as_the_mimi_names_the_mimi_file_to_take(tmp_path, fake_hub):  # noqa: F811
    """A GGUF file given as the Mimi codec (a -candle- repo's model.q8.gguf passed to --mimi-weight)
    was told to take the Moshi LM's safetensors repos ('... take the same model's safetensors
    weights (for kyutai's -candle-q8 Moshi repos: kyutai/moshiko-mlx-q8, ...)'), which is not the
    file it needs; now it names Mimi's published file, for load_mimi (either backend), the LM's
    mimi= and a name in a repo (refused before its download)."""
    from moshi_mlx import load
    from moshi_mlx.weights.mimi_loader import load_mimi
    from moshi_mlx.weights.random_checkpoint import write_random_checkpoint

    tiny_lm = write_random_checkpoint(preset("random-tiny"), tmp_path / "tiny", seed=0)
    files = _candle(tmp_path)
    fake_hub["kyutai/moshiko-candle-q8"] = files
    gguf = files["model.q8.gguf"]
    take = (
        NOT_READ + r"Mimi's safetensors file, tokenizer-e351c8d8-checkpoint125.safetensors \(in kyutai/moshiko-mlx-q8 "
        r"and every Moshi repo: hf://kyutai/moshiko-mlx-q8/tokenizer-e351c8d8-checkpoint125.safetensors\)$"
    )
    for backend in ("mlx", "rustymimi"):
        with pytest.raises(WeightsError, match=rf"^{gguf} is a GGUF file, not a safetensors file: " + take):
            load_mimi(gguf, backend=backend)
    with pytest.raises(WeightsError, match=rf"^{gguf} is a GGUF file, not a safetensors file: " + take):
        load(tiny_lm, mimi=gguf, tokenizer="none")
    for spec in ("hf://kyutai/moshiko-candle-q8/model.q8.gguf",):
        with pytest.raises(WeightsError, match=rf"^{spec} is a GGUF file, not a safetensors file: " + take):
            load_mimi(spec)
        with pytest.raises(WeightsError, match=rf"^{spec} is a GGUF file, not a safetensors file: " + take):
            load(tiny_lm, mimi=spec, tokenizer="none")
    with pytest.raises(WeightsError, match=r"^model.q8.gguf is a GGUF file, not a safetensors file: " + take):
        load_mimi("model.q8.gguf", hf_repo="kyutai/moshiko-candle-q8")
    assert fake_hub.asked == []  # nothing downloaded


# ---- a repo's files under other names than the preset's or the default ---------------------


def test_a_cache_without_the_config_json_that_names_the_files_says_to_download_it(files, cache, monkeypatch):
    """`hf download REPO FILE...` of the weights, Mimi and tokenizer only: the repo's config.json,
    which names them, is not in the cache. Offline, kyutai/hibiki-1b-mlx-bf16 (no preset) was
    'model.safetensors from ... is not in the local Hugging Face cache ...; download it once online
    (hf download kyutai/hibiki-1b-mlx-bf16 model.safetensors)', a file the repo does not have;
    hibiki-2b's preset named model.safetensors and tokenizer-e351c8d8-checkpoint125.safetensors,
    which neither 2B repo has. A file simply missing (no other of its kind) keeps its line."""
    src = files["kyutai/hibiki-2b-mlx-bf16"]
    w1b = "hibiki-mlx-dc2cf5a5@80.safetensors"
    add_repo(cache, "kyutai/hibiki-1b-mlx-bf16", {w1b: src["hibiki-mlx-220b12c0@200.safetensors"]})
    held = {n: p for n, p in src.items() if n != "config.json"}
    add_repo(cache, "kyutai/hibiki-2b-mlx-bf16", held)
    add_repo(cache, "kyutai/moshiko-mlx-q4", {n: p for n, p in files["kyutai/moshiko-mlx-q4"].items() if n != TOK32K})
    _offline(monkeypatch)
    tail = (
        r"to use: download it once online \(hf download {0} config.json\); a repo without one: give the file, hf://{0}/"
    )
    with pytest.raises(
        WeightsError,
        match=rf"^model.safetensors from kyutai/hibiki-1b-mlx-bf16 is not in the local Hugging Face cache, which "
        rf"holds {w1b} of it but not its config.json, which names the weights file "
        + tail.format("kyutai/hibiki-1b-mlx-bf16")
        + w1b
        + "$",
    ):
        resolve_model("kyutai/hibiki-1b-mlx-bf16")
    got = resolve_model("kyutai/hibiki-2b-mlx-bf16")  # the weights by the preset's name, its config
    assert got.weights.name == "hibiki-mlx-220b12c0@200.safetensors" and got.how == "preset hibiki-2b"
    assert got.companion("tokenizer").name == "tokenizer_spm_48k_multi6_2.model"
    with pytest.raises(
        WeightsError,
        match=rf"^{MIMI} from kyutai/hibiki-2b-mlx-bf16 is not in the local Hugging Face cache, which holds "
        r"mimi-dbaa9758@125.safetensors of it but not its config.json, which names the Mimi checkpoint "
        + tail.format("kyutai/hibiki-2b-mlx-bf16")
        + "mimi-dbaa9758@125.safetensors$",
    ):
        got.companion("mimi")
    # a cache of the repo's first revision, whose weights had the name they were uploaded with
    # (renamed model.safetensors since); the repo has no config.json (recorded absent)
    old, pt = "moshika_pt_3d736a96@120.safetensors", "kyutai/moshika-pytorch-bf16"
    add_repo(cache, pt, {old: files["kyutai/moshika-pytorch-bf16"]["model.safetensors"]}, absent=("config.json",))
    with pytest.raises(
        WeightsError,
        match=rf"^{pt} has no model.safetensors and no config.json naming its weights \(it holds {old}\): give the "
        rf"file, hf://{pt}/{old}$",
    ):
        resolve_model(pt)
    assert resolve_model(f"hf://{pt}/{old}").how == "preset moshika"
    q4 = resolve_model("kyutai/moshiko-mlx-q4")
    with pytest.raises(
        WeightsError, match=rf"^{TOK32K} from kyutai/moshiko-mlx-q4 is not in the local Hugging Face cache and offline"
    ):
        q4.companion("tokenizer")


def test_a_repo_without_config_json_whose_weights_have_another_name_names_them(files, fake_hub, tmp_path):  # noqa: F811
    """Online, a repo of one weights file not called model.safetensors and no config.json (a
    fine-tune pushed as is) was 'Hugging Face repo 'me/ft' has no file 'model.safetensors''; now
    the file it holds is named, to give as hf://me/ft/FILE, which loads."""
    repo = "kyutai/moshiko-pytorch-bf16"
    fake_hub["me/ft"] = {"ft_step500.safetensors": files[repo]["model.safetensors"], MIMI: files[repo][MIMI]}
    with pytest.raises(
        WeightsError,
        match=r"^me/ft has no model.safetensors and no config.json naming its weights \(it holds "
        r"ft_step500.safetensors\): give the file, hf://me/ft/ft_step500.safetensors$",
    ):
        resolve_model("me/ft")
    got = resolve_model("hf://me/ft/ft_step500.safetensors")
    assert got.how == "preset moshiko (matched by tensor shapes)" and got.fit.pytorch
    # moshi-finetune's full fine-tune pushed as it is: a config.json that names no weights file
    # (it was 'Hugging Face repo 'me/full-ft' has no file 'model.safetensors'')
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({**_stt_config("moshiko"), "moshi_name": None, "lora": False}))
    fake_hub["me/full-ft"] = {"consolidated.safetensors": files[repo]["model.safetensors"], "config.json": cfg}
    with pytest.raises(
        WeightsError,
        match=r"^me/full-ft has no model.safetensors and no config.json naming its weights \(it holds "
        r"consolidated.safetensors\): give the file, hf://me/full-ft/consolidated.safetensors$",
    ):
        resolve_model("me/full-ft")
    assert resolve_model("hf://me/full-ft/consolidated.safetensors").cfg.lora is False


def test_a_transformers_checkpoint_is_named_as_one(cache, monkeypatch, tmp_path):
    """kmhf/hf-moshiko (Transformers' MoshiForConditionalGeneration: a config.json of its own,
    other tensor names, sharded) was 'no config for model.safetensors.index.json: no config.json
    beside it and its tensors fit no preset (...); pass a config', beside a config.json, and no
    config makes those names fit. A config.json of another tool beside weights that fit no preset
    is named too."""
    d = tmp_path / "hf-moshiko"
    d.mkdir()
    raw = {"architectures": ["MoshiForConditionalGeneration"], "model_type": "moshi", "hidden_size": 4096}
    (d / "config.json").write_text(json.dumps({**raw, "num_hidden_layers": 32, "transformers_version": "4.45.0"}))
    lay = {"model.decoder.layers.0.self_attn.q_proj.weight": ("BF16", (4096, 4096))}
    header_only(d / "model-00001-of-00001.safetensors", lay)
    (d / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {k: "model-00001-of-00001.safetensors" for k in lay}})
    )
    snap = add_repo(cache, "kmhf/hf-moshiko", {p.name: p for p in d.iterdir()})
    _offline(monkeypatch)
    for spec, where in ((d, d), ("kmhf/hf-moshiko", snap)):
        with pytest.raises(
            moshi_mlx.ConfigError,
            match=rf"^no config for model.safetensors.index.json: {where}/config.json is a Hugging Face Transformers "
            r"config \(MoshiForConditionalGeneration\), not a Moshi LM config, and its tensors fit no preset \(.*\); "
            r"Transformers' checkpoints are not read here: take the same model in Kyutai's layout "
            r"\(kyutai/moshiko-pytorch-bf16, kyutai/moshika-pytorch-bf16, or their -mlx- repos\)$",
        ):
            resolve_model(spec)
    # kyutai/stt-1b-en_fr-trfs: Transformers' layout of a model Kyutai publishes in its own
    stt = {"architectures": ["KyutaiSpeechToTextForConditionalGeneration"], "model_type": "kyutai_speech_to_text"}
    (d / "config.json").write_text(json.dumps(stt))
    with pytest.raises(
        moshi_mlx.ConfigError,
        match=r"\(KyutaiSpeechToTextForConditionalGeneration\), not a Moshi LM config, .*: take the same model in "
        r"Kyutai's layout \(kyutai/stt-1b-en_fr, kyutai/stt-2.6b-en, or their -mlx- repos\)$",
    ):
        resolve_model(d)
    (d / "config.json").write_text(json.dumps({"dim": 64, "trainer": "mine"}))  # one Moshi key: not a Moshi config
    with pytest.raises(
        moshi_mlx.ConfigError,
        match=rf"^no config for model.safetensors.index.json: {d}/config.json is not a Moshi LM config and its tensors "
        r"fit no preset \(.*\); pass a config \(--lm-config / --config\)$",
    ):
        resolve_model(d)


@pytest.mark.parametrize("repo", [None, "kyutai/moshiko-mlx-bf16", "kyutai/stt-1b-en_fr-candle"])
def test_a_weights_file_of_the_same_name_in_the_working_directory_is_not_the_repos(
    files, cache, monkeypatch, tmp_path, repo
):
    """The weights a repo's config or preset names come from the repo: a model.safetensors in the
    working directory (the README's `moshi-convert model.safetensors --out ...` leaves one there)
    was taken for kyutai/moshiko-mlx-bf16's (`moshi-local` without -q, `moshi_mlx.load()`:
    another model loaded silently) or kyutai/stt-1b-en_fr-candle's (`moshi-stt`: 'model.safetensors
    does not fit the config'). A path the caller gives is still read from there."""
    key = repo or "kyutai/moshiko-mlx-bf16"
    snap = add_repo(cache, key, files[key])
    _offline(monkeypatch)
    here = tmp_path / "work"
    here.mkdir()
    wname = PUBLISHED[key][0]
    os.link(files["kyutai/moshiko-mlx-q8"]["model.q8.safetensors"], here / wname)  # another model's (sparse: linked)
    monkeypatch.chdir(here)
    got = resolve_model(repo)
    assert got.weights == snap / wname
    assert got.how == (f"preset {PUBLISHED[key][1][0]}" if PUBLISHED[key][2] is None else str(snap / "config.json"))
    assert resolve_model(repo, weights=wname).weights.resolve() == here / wname  # the caller's path


def test_the_mimi_and_voices_a_repo_holds_are_not_the_working_directorys(files, cache, monkeypatch, tmp_path):
    """moshi-mimi's Mimi (the published name, or the config's `mimi_name`) and PersonaPlex's
    voices.tgz come from the repo or folder, not from a file of that name in the working
    directory (a broken voices.tgz there made `--voice NATF2` fail on the folder's)."""
    import tarfile
    from pathlib import Path

    from moshi_mlx.constants import MIMI_NAME, VOICES_NAME
    from moshi_mlx.runtime.persona import preset_voice
    from moshi_mlx.weights.resolve import resolve_mimi

    snap = add_repo(cache, "kyutai/moshiko-mlx-q8", files["kyutai/moshiko-mlx-q8"])
    hibiki = add_repo(cache, "kyutai/hibiki-2b-mlx-bf16", files["kyutai/hibiki-2b-mlx-bf16"])
    _offline(monkeypatch)
    here = tmp_path / "work"
    here.mkdir()
    for name in (MIMI_NAME, "mimi-dbaa9758@125.safetensors", VOICES_NAME):
        (here / name).write_bytes(b"another file")
    monkeypatch.chdir(here)
    assert resolve_mimi(repo="kyutai/moshiko-mlx-q8")[0] == snap / MIMI_NAME
    assert resolve_mimi(repo="kyutai/hibiki-2b-mlx-bf16")[0] == hibiki / "mimi-dbaa9758@125.safetensors"
    assert resolve_mimi(MIMI_NAME, repo="kyutai/moshiko-mlx-q8")[0].resolve() == here / MIMI_NAME  # given
    folder = tmp_path / "persona"
    folder.mkdir()
    voice = Path(__file__).resolve().parents[1] / "fixtures" / "persona" / "voice.pt"
    with tarfile.open(folder / VOICES_NAME, "w:gz") as tar:
        tar.add(voice, arcname="voices/NATF2.pt")
    assert preset_voice("NATF2", str(folder)).name == "NATF2"
