"""Audio-prefix voices (kyutai/tts-0.75b-en-public's conditioning: no speaker cross-attention,
the voice is a recording's Mimi codes forced as the first frames), end to end through the
runtime with a tiny model of that structure. Token agreement with the reference is
tests/models/test_tts_parity.py (tts_prefix*)."""

import json
from importlib import resources

import numpy as np
import pytest
import soundfile as sf

from moshi_mlx.errors import UsageError
from moshi_mlx.models.config import LmConfig, preset_path
from moshi_mlx.models.tts import TtsGen, TtsSettings, audio_window
from moshi_mlx.runtime.codec import MimiFrameCodec
from moshi_mlx.runtime.transcript import ByteTokenizer
from moshi_mlx.runtime.tts import TtsSession, load_voice, synthesize
from moshi_mlx.weights.mimi_loader import random_mimi
from moshi_mlx.weights.random_state import random_lm


def _prefix_cfg() -> LmConfig:
    d = json.loads(preset_path("tts-tiny").read_text())
    d.update(cross_attention=False, conditioners={}, fuser={"sum": [], "cross": []}, text_card_out=5)
    return LmConfig.from_dict(d)


@pytest.fixture(scope="module")
def session():
    cfg = _prefix_cfg()
    mimi = random_mimi(
        seed=1, num_codebooks=cfg.n_q, config=str(resources.files("moshi_mlx") / "configs" / "mimi-tiny.json")
    )
    return TtsSession(
        cfg, random_lm(cfg, seed=2), MimiFrameCodec(mimi), ByteTokenizer(), 12.5, 24000, "test", n_q=cfg.n_q
    )


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    path = tmp_path_factory.mktemp("voice") / "me.wav"
    sf.write(path, (0.1 * np.random.default_rng(0).standard_normal(48000)).astype(np.float32), 24000)  # 2 s
    return path


def test_a_recording_is_encoded_as_the_prefix(session, recording):
    codes = load_voice(str(recording), session.cfg, codec=session.codec)
    assert codes.shape == (session.cfg.n_q, 25 - 2) and codes.dtype == np.int64  # 25 frames, the last 2 dropped
    assert 0 <= codes.min() and codes.max() < session.cfg.card
    again = load_voice(str(recording), session.cfg, codec=session.codec)  # the codec is reset: same codes
    assert np.array_equal(codes, again)


def test_the_prefix_is_forced_then_cut_from_the_audio(session, recording):
    cfg = session.cfg
    voice = load_voice(str(recording), cfg, codec=session.codec)
    P = voice.shape[1]
    settings = TtsSettings.from_config(cfg, 12.5, max_steps=300)
    gen = TtsGen(session.lm, settings, [voice], cfg_coef=2.0, temp=0.0)
    assert gen.use_cfg and gen.prefix_frames == P
    from moshi_mlx.models.tts import TokenIds, script_to_entries

    entries = script_to_entries(
        ByteTokenizer(), TokenIds(cfg.text_card + 1), 12.5, ["hello world"], multi_speaker=False, padding_between=1
    )  # as synthesize
    res = gen.generate(entries)
    d = settings.delay_steps
    for t in range(P):  # frame f carries voice frame f - delay_steps; its text is the zero token
        assert res.frames[d + t, 1:].tolist() == voice[:, t].tolist()
        assert res.text_log[t][1] == -1
    assert res.end_step is not None and res.end_step > P
    chunks = []
    report = synthesize(session, "hello world", [voice], chunks.append, cfg_coef=2.0, temp=0.0, max_steps=300)
    assert report.end_step == res.end_step
    assert len(chunks) == report.frames == len(audio_window(d, res.end_step, 1 << 30, P))
    assert all(0 <= t for _, t in report.words)


def test_bad_prefix_voices_are_one_line(session, recording, tmp_path):
    cfg = session.cfg
    with pytest.raises(UsageError, match="takes a voice recording .* not a speaker embedding"):
        load_voice(str(tmp_path / "x.safetensors"), cfg, codec=session.codec)
    with pytest.raises(UsageError, match="pass codec=session.codec"):
        load_voice(str(recording), cfg)
    short = tmp_path / "short.wav"
    sf.write(short, np.zeros(2000, np.float32), 24000)
    with pytest.raises(UsageError, match="too short"):
        load_voice(str(short), cfg, codec=session.codec)
    settings = TtsSettings.from_config(cfg, 12.5)
    codes = load_voice("random", cfg, seed=3)
    with pytest.raises(UsageError, match="needs all 4 codebooks"):
        TtsGen(session.lm, settings, [codes], n_q=2)
    with pytest.raises(UsageError, match="takes one voice"):
        TtsGen(session.lm, settings, [codes, codes])
    with pytest.raises(UsageError, match=r"Mimi codes \[4, T\]"):
        TtsGen(session.lm, settings, [np.zeros((32, 10), np.float32)])
    assert TtsGen(session.lm, settings, []).prefix is None  # no voice: no prefix
