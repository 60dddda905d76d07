"""The TTS pieces on their own: state machine rules, script parsing, conditions, quantized
cross-attention. Token-level agreement with the reference is tests/models/test_tts_parity.py."""

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from moshi_mlx.errors import ConfigError, UsageError
from moshi_mlx.models import lm_preset
from moshi_mlx.models.config import LmConfig
from moshi_mlx.models.tts import (
    MAX_SPEAKERS,
    Entry,
    StateMachine,
    TokenIds,
    TtsGen,
    TtsSettings,
    audio_window,
    script_to_entries,
    voice_condition,
)
from moshi_mlx.modules.cross_attention import CrossAttention, _rows
from moshi_mlx.runtime.transcript import ByteTokenizer
from moshi_mlx.weights.random_state import random_lm

IDS = TokenIds(card=301)


def _run(machine, entries, predictions):
    state = machine.new_state(entries)
    return [machine.process(i, state, p) for i, p in enumerate(predictions)], state


def test_state_machine_forces_initial_padding_then_feeds_a_word_token_by_token():
    m = StateMachine(IDS, max_padding=3, initial_padding=2)
    out, state = _run(m, [Entry([10, 11], "ab"), Entry([12], "c")], [0, 0, 0, 0, 0, 0, 7, 3])
    # steps 0-1 forced pad; step 2 NEW_WORD (model asked) -> 0; then tokens 10, 11 (as pads);
    # step 5 NEW_WORD -> next word; 7 is not a special token: read as PAD -> queued 12
    assert out == [3, 3, 0, 10, 11, 0, 12, 3]
    assert state.transcript == [("ab", 2), ("c", 5)]
    assert state.end_step is None


def test_state_machine_inserts_a_word_after_max_padding_and_ends_past_the_last_word():
    m = StateMachine(IDS, max_padding=2, initial_padding=0)
    out, state = _run(m, [Entry([9], "x")], [3, 3, 3, 3, 3, 3])
    # remaining_padding starts at initial_padding = 0: the first step must take a word
    assert out[0] == 0 and out[1] == 9
    # feeding the word's token counts as one of the max_padding pads: one more pad, then a
    # word is due and none is left -> end of speech at step 3
    assert state.end_step == 3
    assert out[2:] == [3, 3, 3, 3]


def test_state_machine_lookahead_stream_is_demuxed_into_the_text_token():
    m = StateMachine(IDS, second_stream_ahead=1, max_padding=5, initial_padding=0)
    out, state = _run(m, [Entry([10], "a"), Entry([20, 21], "b")], [0, 3, 3, 3])
    # step 0: NEW_WORD goes to the second stream, the main stream starts the word at once
    assert out[0] == (0 + 1) * IDS.card + 10
    # then the lookahead (word 1 ahead = "b") is fed on the second stream
    assert out[1] == (20 + 1) * IDS.card + 3 and out[2] == (21 + 1) * IDS.card + 3
    assert out[3] == 3  # nothing left on either stream: plain pad (second = -1)


def test_pause_entries_force_padding_without_text():
    m = StateMachine(IDS, max_padding=1, initial_padding=0)
    out, state = _run(m, [Entry([], "", padding=3), Entry([5], "w")], [0, 0, 0, 0, 0, 0])
    # the step that takes the pause entry is its first forced pad
    assert out[:3] == [3, 3, 3] and out[3] == 0 and out[4] == 5
    assert state.transcript == [("w", 3)] and state.consumption_times == [0, 3]


def test_script_to_entries_breaks_speakers_and_padding():
    tok = ByteTokenizer()
    e = script_to_entries(tok, IDS, 12.5, ["Hi (there): x", '<break time="0.4s"/>ok'], padding_between=1)
    assert [x.text for x in e] == ["Hi", "there", "x", "", "ok"]
    assert e[0].tokens == [IDS.main] + tok.encode("Hi") and e[0].padding == 1 + 3 - 1
    assert e[3].tokens == [] and e[3].padding == 5  # 0.4 s at 12.5 Hz
    assert e[4].tokens[0] == IDS.other
    assert script_to_entries(tok, IDS, 12.5, ["a b"], multi_speaker=False)[0].tokens == tok.encode("a")


def test_voice_condition_layout_and_errors():
    v = np.arange(6, dtype=np.float32).reshape(2, 3)  # [dim 2, T 3]
    tensor, mask = voice_condition([v], 2)
    assert tensor.shape == (1, MAX_SPEAKERS * 3, 2) and mask.shape == (1, MAX_SPEAKERS * 3)
    assert np.array_equal(tensor[0, :3], v.T) and mask[0, :3].all() and not mask[0, 3:].any()
    with pytest.raises(UsageError, match="expects \\[4, 3\\]"):
        voice_condition([v], 4)
    with pytest.raises(UsageError, match="at most 5 voices"):
        voice_condition([v] * 6, 2)


def test_tts_config_round_trip_and_non_tts_refused():
    cfg = lm_preset("tts-1.6b-en_fr")
    assert cfg.cross_attention and cfg.fuse_cross == ["speaker_wavs"] and cfg.fuse_sum == ["control", "cfg"]
    assert LmConfig.from_dict(cfg.to_dict()) == cfg
    assert TtsSettings.from_config(cfg, 12.5).delay_steps == 16
    with pytest.raises(ConfigError, match="not a TTS model"):
        TtsSettings.from_config(lm_preset("random-tiny"), 12.5)


def test_distilled_cfg_is_a_condition_value():
    lm = random_lm("tts-tiny", seed=1)
    s = TtsSettings.from_config(lm.cfg, 12.5)
    voice = np.zeros((32, 5), np.float32)
    assert not TtsGen(lm, s, [voice], cfg_coef=3.0).use_cfg
    with pytest.raises(UsageError, match="cfg_coef=2.2 is not one this model takes: 1.0, 1.5"):
        TtsGen(lm, s, [voice], cfg_coef=2.2)


def test_audio_window_keeps_end_step_frames_after_the_delay():
    assert audio_window(16, 10, 100) == range(18, 28)
    assert audio_window(16, None, 40) == range(18, 40)


@pytest.mark.parametrize("bits", [4, 8])
def test_cross_attention_rows_of_a_quantized_projection(bits):
    mx.random.seed(0)
    ca = CrossAttention(64, 4)
    q = nn.QuantizedLinear.from_linear(ca.in_proj, 32, bits)
    x = mx.random.normal((1, 3, 64))
    full = q(x)
    assert mx.allclose(_rows(q, x, 64, 192), full[..., 64:], atol=1e-5).item()
    assert mx.allclose(_rows(ca.in_proj, x, 0, 64), ca.in_proj(x)[..., :64], atol=1e-5).item()


def test_quantized_tts_model_generates():
    from moshi_mlx.weights.quantize import quantize_model

    lm = random_lm("tts-tiny", seed=2)
    quantize_model(lm, 8, 32)
    assert isinstance(lm.transformer.layers[0].cross_attention.in_proj, nn.QuantizedLinear)
    s = TtsSettings.from_config(lm.cfg, 12.5, max_steps=40)
    gen = TtsGen(lm, s, [np.ones((32, 5), np.float32)], temp=0.0)
    res = gen.generate(script_to_entries(ByteTokenizer(), gen.token_ids, 12.5, ["hi"]))
    assert res.frames.shape[1] == 1 + lm.cfg.dep_q and res.end_step is not None
    assert (res.frames[s.delay_steps + 2 :, 1:] >= 0).all()
