"""PersonaPlex against NVIDIA's PyTorch code (tests/fixtures/persona, made by
scripts/make_fixtures_personaplex.py): random weights in the real 475-tensor layout, the
four prompt phases from a WAV voice and from a stored (.pt) voice, then 160 greedy
conversation frames on random user codes. NVIDIA runs all 16 depformer slices; we load and
run 8, so identical tokens also show that skipping the user's slices is exact."""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from moshi_mlx import models
from moshi_mlx.audio.io import read_audio
from moshi_mlx.audio.loudness import integrated_loudness, normalize_loudness
from moshi_mlx.errors import AudioError, UsageError
from moshi_mlx.models.config import LmConfig, preset
from moshi_mlx.models.generate import LmGen
from moshi_mlx.models.mimi_config import MimiConfig
from moshi_mlx.models.persona import SILENCE_FRAMES, build_prompt, system_prompt_text
from moshi_mlx.runtime.persona import encode_voice, load_voice
from moshi_mlx.weights.errors import WeightsError
from moshi_mlx.weights.lm_keys import pytorch_layout
from moshi_mlx.weights.lm_loader import load_lm_state
from moshi_mlx.weights.random_state import random_state
from moshi_mlx.weights.torch_pickle import load_torch_file

FIX = Path(__file__).resolve().parent.parent / "fixtures"
PERSONA = FIX / "persona"


@pytest.fixture(scope="module")
def case():
    data = dict(np.load(PERSONA / "personaplex_narrow.npz"))
    cfg = LmConfig.from_dict(json.loads(str(data["config"])))
    lm = load_lm_state(random_state(cfg, int(data["seed"])), cfg, dtype=mx.float32)
    return cfg, lm, data


def _mimi():
    cfg = MimiConfig.from_dict(json.loads((FIX / "mimi" / "fixtures.json").read_text())["small"]["config"])
    return models.load_mimi(FIX / "mimi" / "small.safetensors", num_codebooks=8, config=cfg)


def _converse(lm, prompt, user: np.ndarray) -> tuple[list[int], list[list[int]]]:
    """Text and agent audio of frames T, T+1, ... (T = the prompt's length)."""
    gen = LmGen(lm, use_sampling=False, prompt=prompt)
    texts, audios = [], []
    for u in user:
        text, audio = gen.step(u)
        if not texts:
            texts.append(gen.prefix_text_token)
        texts.append(text)
        audios.append(audio)
    return texts, audios


def _check_conversation(rows: np.ndarray, texts, audios, n: int) -> None:
    """rows: NVIDIA's step outputs of the conversation; step j gives frame T + j - 1."""
    ref = rows[1:]  # frames T, T+1, ...
    assert len(ref) >= 150
    for i in range(len(ref)):
        assert texts[i] == ref[i, 0], f"text of conversation frame {i}"
        assert audios[i] == ref[i, 1:].tolist(), f"audio of conversation frame {i}"


def test_layout_is_475_tensors_and_loads_8_slices(case):
    cfg, lm, _ = case
    assert len(pytorch_layout(cfg)) == 475
    assert len(pytorch_layout(preset("personaplex-7b"))) == 475
    assert pytorch_layout(preset("personaplex-7b"))["depformer.layers.0.self_attn.in_proj_weight"] == (49152, 1024)
    assert len(lm.depformer.slices) == 8


def test_wav_voice_matches_nvidia(case):
    cfg, lm, data = case
    voice = encode_voice(_mimi(), read_audio(PERSONA / "voice.wav"), "voice")
    prompt = build_prompt(cfg, voice, [int(t) for t in data["prompt"]])
    rows = data["from_wav"]
    T = prompt.frames.shape[1]
    conv = len(data["user"])
    assert T == len(rows) - conv - 1  # NVIDIA's steps: the prompt's (its first seeds the cache), then one per frame
    # the prompt phases, every stream given: NVIDIA's step s outputs frame s - 2
    np.testing.assert_array_equal(rows[2 : T + 1].T, prompt.frames[:9, : T - 1])
    texts, audios = _converse(lm, prompt, data["user"])
    _check_conversation(rows[-conv:], texts, audios, conv)


def test_stored_voice_matches_nvidia(case):
    cfg, lm, data = case
    voice = load_voice(PERSONA / "voice.pt", None)
    np.testing.assert_array_equal(voice.embeddings, data["embeddings"])
    prompt = build_prompt(cfg, voice, [int(t) for t in data["prompt"]])
    assert prompt.embeddings.shape[0] == voice.steps - 1
    conv = len(data["user"])
    texts, audios = _converse(lm, prompt, data["user"])
    _check_conversation(data["from_pt"][-conv:], texts, audios, conv)
    # and the same conversation as from the recording (NVIDIA's too)
    np.testing.assert_array_equal(data["from_pt"][-conv:], data["from_wav"][-conv:])


def test_prefill_in_chunks_equals_one_position_per_call(case):
    cfg, lm, data = case
    voice = load_voice(PERSONA / "voice.pt", None)
    prompt = build_prompt(cfg, voice, [int(t) for t in data["prompt"]])
    outs = []
    for chunk in (1, 5, 1000):
        gen = LmGen(lm, use_sampling=False)
        gen.prefill(prompt.frames, prompt.embeddings, chunk=chunk)
        outs.append([gen.step(u) for u in data["user"][:20]])
    assert outs[0] == outs[1] == outs[2]


def test_torch_reader_bf16_and_refusals(tmp_path):
    f32 = load_torch_file(PERSONA / "voice.pt")
    bf16 = load_torch_file(PERSONA / "voice_bf16.pt")
    expect = f32["embeddings"].astype(np.float32)
    rounded = ((expect.view(np.uint32) + 0x7FFF + ((expect.view(np.uint32) >> 16) & 1)) & 0xFFFF0000).view(np.float32)
    np.testing.assert_array_equal(bf16["embeddings"], rounded)
    np.testing.assert_array_equal(bf16["cache"], f32["cache"])
    # a pickle naming any other global is refused, never run
    import pickle
    import zipfile

    evil = tmp_path / "evil.pt"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"x": print}, protocol=2))
    with pytest.raises(WeightsError, match="refusing to load .*print"):
        load_torch_file(evil)
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    with pytest.raises(WeightsError, match="not a torch.save file"):
        load_torch_file(tmp_path / "junk.pt")


def test_prompt_text_and_phases():
    assert system_prompt_text("  You are Ann. ") == "<system> You are Ann. <system>"
    assert system_prompt_text("<system> kept <system>") == "<system> kept <system>"
    cfg = preset("random-tiny-persona")
    p = build_prompt(cfg, None, [10, 11])
    assert p.frames.shape == (17, 2 * SILENCE_FRAMES + 2 - 1)
    assert p.frames[0].tolist() == [3] * (SILENCE_FRAMES - 1) + [10, 11] + [3] * SILENCE_FRAMES
    with pytest.raises(UsageError, match="PersonaPlex"):
        build_prompt(preset("random-tiny"), None, [])


def test_loudness_normalisation():
    rng = np.random.default_rng(0)
    x = (0.05 * rng.standard_normal(24000)).astype(np.float32)
    y = normalize_loudness(x, 24000, -24.0)
    assert abs(integrated_loudness(y, 24000) + 24.0) < 1e-6
    with pytest.raises(AudioError, match="silent"):
        normalize_loudness(np.zeros(24000, np.float32), 24000, -24.0)


def test_loudness_equals_pyloudnorm():
    rng = np.random.default_rng(7)  # scripts/make_fixtures_personaplex.py loudness_signals (SEED 7)
    ref = np.load(PERSONA / "loudness.npz")["lufs"]
    signals = []
    for n, rate in ((36000, 24000), (240000, 24000), (44100 * 3 + 17, 44100), (9601, 16000)):
        x = rng.standard_normal(n) * np.linspace(0.01, 0.5, n) * (np.sin(np.arange(n) / 3000) > -0.3)
        signals.append((x, rate))
    ours = [integrated_loudness(x, rate) for x, rate in signals]
    np.testing.assert_allclose(ours, ref, atol=1e-9)


def test_compiled_step_continues_a_prefilled_prompt():
    """The accelerator path (compiled fixed-shape step) takes over the KV rings the prefill
    filled, and the forced first position falls back to the eager depformer: same tokens."""
    from moshi_mlx.models.persona import Voice
    from moshi_mlx.weights.random_state import random_lm

    lm = random_lm("random-tiny-persona", 3)
    rng = np.random.default_rng(0)
    prompt = build_prompt(lm.cfg, Voice("v", codes=rng.integers(0, 2048, (8, 20))), [5, 6, 7])
    user = rng.integers(0, 2048, (15, 8))
    outs = []
    from moshi_mlx.models.backend import ComputeFormat

    for compiled in (False, True):
        gen = LmGen(lm, use_sampling=False, prompt=prompt, compute=ComputeFormat(compiled=compiled))
        assert gen.compiled == compiled
        outs.append([gen.step(u) for u in user])
    assert outs[0] == outs[1]


def test_presets_are_read_from_voices_tgz_without_extracting(tmp_path):
    import tarfile

    with tarfile.open(tmp_path / "voices.tgz", "w:gz") as tar:
        tar.add(PERSONA / "voice.pt", arcname="voices/NATF2.pt")
    voice = load_voice("NATF2", None, where=str(tmp_path))
    np.testing.assert_array_equal(voice.embeddings, load_voice(PERSONA / "voice.pt", None).embeddings)
    (tmp_path / "Mine.PT").write_bytes((PERSONA / "voice.pt").read_bytes())  # read as audio before
    np.testing.assert_array_equal(voice.embeddings, load_voice(tmp_path / "Mine.PT", None).embeddings)
    assert not (tmp_path / "voices").exists()
    with pytest.raises(WeightsError, match="has no voice VARM4"):
        load_voice("VARM4", None, where=str(tmp_path))
    with pytest.raises(UsageError, match="no such file and not a preset"):
        load_voice(tmp_path / "nope.wav", None)


def test_a_voice_file_too_short_or_silent_is_named(tmp_path):
    """The voice is one of two audio files a command takes: its loudness refusals name it
    (they said only 'the audio is silent' / 'audio of 0.36 s is shorter than a loudness block')."""
    import soundfile as sf

    sf.write(tmp_path / "short.flac", np.full((8000, 2), 0.1, np.float32), 22050)
    sf.write(tmp_path / "quiet.wav", np.zeros(24000, np.float32), 24000)
    with pytest.raises(AudioError, match=r"^voice .*short\.flac: audio of 0\.36 s is shorter than a loudness block"):
        load_voice(tmp_path / "short.flac", _mimi())
    with pytest.raises(AudioError, match=r"^voice .*quiet\.wav: the audio is silent"):
        load_voice(tmp_path / "quiet.wav", _mimi())


def test_no_role_given_is_nvidias_default_role():
    """DEFAULT_PERSONA was defined and used nowhere: a PersonaPlex conversation without a role got
    none, where NVIDIA's offline tool and web client give theirs. Now: not given -> that role;
    blank -> none; token ids only (--tokenizer none, nothing to write it with) -> none."""
    import moshi_mlx
    from moshi_mlx.models.persona import DEFAULT_PERSONA
    from moshi_mlx.web.conversation import Engine

    model = moshi_mlx.load("random-tiny-persona")
    default = len(model.tokenizer.encode(system_prompt_text(DEFAULT_PERSONA)))
    assert DEFAULT_PERSONA.startswith("You are a wise and friendly teacher.")
    assert model.generator().prompt.text_tokens == default > 0
    assert model.system_prompt(persona=DEFAULT_PERSONA).frames.tolist() == model.generator().prompt.frames.tolist()
    assert model.generator(persona="").prompt.text_tokens == 0
    assert Engine.from_model(model).persona == DEFAULT_PERSONA  # the page's role box starts with it
    assert Engine.from_model(model, persona="You are Ann.").persona == "You are Ann."
    ids_only = moshi_mlx.load("random-tiny-persona", tokenizer="none")
    assert ids_only.generator().prompt.text_tokens == 0 and Engine.from_model(ids_only).persona is None
