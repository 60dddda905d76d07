"""TTS parity with Kyutai's PyTorch `moshi` 0.2.13 `TTSModel` (fixtures from scripts/make_fixtures_tts.py).

Reduced-width models with the structure of tts-1.6b-en_fr (cross-attention to the speaker
tensor conditioner, LUT conditioners, demuxed lookahead stream, 32 scheduled depformer
steps), weights rebuilt from the same seeded numpy RNG in the released PyTorch layout
(so the key mapping of the cross-attention and conditioners is exercised too), greedy:
every frame of text and audio tokens, every (predicted, fed) text pair, the end of speech,
the transcript and the script's entries must be identical.
"""

import json

import mlx.core as mx
import numpy as np
import pytest

from moshi_mlx.models.config import LmConfig
from moshi_mlx.models.tts import TokenIds, TtsGen, TtsSettings, script_to_entries
from moshi_mlx.runtime.transcript import ByteTokenizer
from moshi_mlx.weights.lm_loader import load_lm_state
from moshi_mlx.weights.random_state import random_state

from .lm_fixtures import FIXTURES

TTS_FIXTURES = FIXTURES.parent / "tts"
VOICE_T = 125


def _case(name: str):
    data = dict(np.load(TTS_FIXTURES / f"{name}.npz"))
    cfg = LmConfig.from_dict(json.loads(str(data["config"])))
    state = random_state(cfg, int(data["seed"]))
    state["text_linear.weight"][[0, 3]] *= float(data["boost"])
    lm = load_lm_state(state, cfg, dtype=mx.float32, consume=True)
    if "prefix" in data:  # an audio-prefix model: the voice is Mimi codes
        return cfg, lm, data, data["prefix"]
    dim = cfg.conditioners["speaker_wavs"].dim
    voice = np.random.default_rng(500 + int(data["seed"])).standard_normal((dim, VOICE_T), dtype=np.float32)
    return cfg, lm, data, voice


@pytest.mark.parametrize("name", ["tts_narrow", "tts_narrow_cfg", "tts_narrow_ctx", "tts_prefix_cfg", "tts_prefix"])
def test_tts_greedy_matches_reference(name):
    """The `tts_prefix*` cases have the structure of kyutai/tts-0.75b-en-public: no
    cross-attention, the voice as a 16-frame audio prefix, 16 codebooks, a 5-token text
    head (text_card_out), real CFG masking the prefix in the null row (`tts_prefix_cfg`)."""
    cfg, lm, data, voice = _case(name)
    entries = script_to_entries(
        ByteTokenizer(),
        TokenIds(cfg.text_card + 1),
        12.5,
        json.loads(str(data["script"])),
        multi_speaker=bool(cfg.fuse_cross),
        padding_between=int(data["padding_between"]),
    )
    assert [[e.tokens, e.text, e.padding] for e in entries] == json.loads(str(data["entries"]))
    settings = TtsSettings.from_config(cfg, 12.5, max_steps=int(data["max_steps"]))
    gen = TtsGen(lm, settings, [voice], cfg_coef=float(data["cfg_coef"]), temp=0.0, n_q=int(data["n_q"]))
    assert gen.use_cfg == ("cfg" not in cfg.conditioners and float(data["cfg_coef"]) != 1.0)
    res = gen.generate(entries)
    ref = data["frames"]
    n = ref.shape[1]
    assert len(ref) >= 100
    assert res.text_log == [tuple(p) for p in data["text_log"].tolist()]
    for f in range(len(ref)):
        assert res.frames[f, :n].tolist() == ref[f].tolist(), f"{name}: frame {f} differs"
    assert res.frames.shape[0] == len(ref)
    assert (res.frames[:, n:] == -1).all()  # codebooks beyond n_q are never generated
    assert res.end_step == int(data["end_step"])
    assert res.transcript == [tuple(t) for t in json.loads(str(data["transcript"]))]
    assert res.consumption_times == data["consumption_times"].tolist()
