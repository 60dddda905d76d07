"""Streaming speech-to-text: word/time/end-of-turn bookkeeping, the stt_config padding, the
streaming transcriber against the live loop's pipeline, and the transcript files."""

import argparse
import json
import math

import numpy as np
import pytest

from moshi_mlx.errors import ConfigError, OutputError, UsageError
from moshi_mlx.models import LmConfig
from moshi_mlx.models.config import preset
from moshi_mlx.cli.model_args import load_session
from moshi_mlx.runtime.pipeline import FRAME_SIZE, SAMPLE_RATE
from moshi_mlx.runtime.stt import SttDecoder, SttTiming, StreamingTranscriber, stt_padding
from moshi_mlx.runtime.stt_live import PipelineTranscriber
from moshi_mlx.runtime.subtitles import cues, save_transcript, to_srt, to_vtt


class PieceTok:
    pieces = {10: "▁Hel", 11: "lo", 12: "▁world", 13: "!", 14: "▁again"}

    def piece(self, t):
        return self.pieces.get(t)


def _cfg(prefix=1.0, delay=0.5, heads=4):
    d = json.loads(json.dumps(preset("random-tiny-stt").to_dict()))
    d["stt_config"] = {"audio_silence_prefix_seconds": prefix, "audio_delay_seconds": delay}
    d["extra_heads_num_heads"] = heads
    return LmConfig.from_dict(d)


def _heads(p_end):
    h = np.full((4, 6), 1 / 6, np.float32)
    h[2, 0] = p_end
    return h


def test_timing_from_stt_config():
    t = SttTiming.of(preset("stt-2.6b-en"))
    assert (t.prefix_samples, t.delay_seconds, t.suffix_samples) == (24000, 2.5, 84000)
    assert t.text_offset == pytest.approx(3.5)
    assert stt_padding(preset("stt-1b-en_fr")) == (0.0, 1.5)
    assert stt_padding(preset("moshiko")) == (0.0, 0.0)  # no stt_config: no padding
    # the semantic-VAD heads are in the -candle checkpoint only (the -mlx and PyTorch ones have none)
    assert preset("stt-1b-en_fr-candle").extra_heads_num_heads == 4
    assert preset("stt-1b-en_fr").extra_heads_num_heads == 0 and preset("stt-2.6b-en").extra_heads_num_heads == 0


def test_words_times_pads_and_end_of_turn():
    dec = SttDecoder(PieceTok(), _cfg(prefix=1.0, delay=0.5))
    # frame f's token is at (f + 1) * 0.08 s, minus prefix 1.0 and delay 0.5
    steps = [
        (3, 0.9),
        (10, 0.1),
        (11, 0.1),
        (3, 0.2),
        (0, 0.1),
        (12, 0.1),
        (13, 0.1),
        (3, 0.8),
        (3, 0.9),
        (3, 0.2),
        (14, 0.1),
        (3, 0.7),
    ]
    ups = [dec.add(tok, 20 + i, _heads(p)) for i, (tok, p) in enumerate(steps)]
    text = "".join(u.text for u in ups)
    assert text == "Hello world! again"
    done = [w for u in ups for w in u.words]
    assert [w.text for w in done] == ["Hello", "world!", "again"]
    assert done[0].start == pytest.approx(22 * 0.08 - 1.5) and done[0].end == pytest.approx(24 * 0.08 - 1.5)
    assert ups[3].words == [done[0]]  # a word is complete when padding follows it
    assert ups[1].first_start == pytest.approx(done[0].start)
    events = [e for u in ups for e in u.events]
    # p at the first step is high but nothing was said yet: no event; then one per rising edge after speech
    assert [e.kind for e in events] == ["end_of_turn", "end_of_turn"]
    assert events[0].time == pytest.approx(28 * 0.08 - 1.0)  # audio time: prefix removed, no text delay
    assert events[0].probability == pytest.approx(0.8)
    assert dec.finish().words == []
    data = dec.to_dict()
    assert data["text"] == "Hello world! again" and len(data["events"]) == 2 and data["text_delay_seconds"] == 0.5


def test_no_vad_heads_no_events():
    dec = SttDecoder(PieceTok(), _cfg(heads=0))
    for i, tok in enumerate([10, 3, 12, 3]):
        assert dec.add(tok, i, None).events == []
    assert [w.text for w in dec.words] == ["Hel", "world"]
    assert dec.words[0].start == 0.0  # clamped: times before the audio's start are 0


def _demo(name="random-tiny-stt"):
    return load_session(argparse.Namespace(model=name, seed=3))


def _speech(seconds, rate=SAMPLE_RATE):
    t = np.arange(int(rate * seconds)) / rate
    return (0.3 * np.sin(2 * np.pi * 190 * t) * (np.sin(2 * np.pi * 1.5 * t) > 0)).astype(np.float32)


def test_streaming_transcriber_chunking_and_padding():
    s = _demo()
    tr = StreamingTranscriber(s.lm, s.codec, s.tokenizer)
    pcm = _speech(2.3)
    whole = tr.transcribe(pcm)
    tokens, n = list(tr.decoder.tokens), tr.frames
    t = tr.timing
    assert n == math.ceil((t.prefix_samples + len(pcm)) / FRAME_SIZE) + t.suffix_samples // FRAME_SIZE
    assert len(tokens) == n
    assert whole.text.strip() == tr.text
    # fed in odd pieces: the same steps, the same words
    tr.reset()
    for i in range(0, len(pcm), 777):
        tr.feed(pcm[i : i + 777])
    tr.flush()
    assert tr.decoder.tokens == tokens and tr.text == whole.text.strip()
    with pytest.raises(UsageError):
        tr.feed(pcm[:10])


def test_pipeline_path_equals_streaming_transcriber():
    """The CLI's pipeline (encoder and LM threads) gives the steps the sync API gives."""
    s = _demo()
    pcm = _speech(1.7)
    tr = StreamingTranscriber(s.lm, s.codec, s.tokenizer)
    tr.transcribe(pcm)
    pt = PipelineTranscriber(s).start()
    for i in range(0, len(pcm), 1000):
        pt.push(pcm[i : i + 1000], wait=True)
    pt.finish(timeout=60)
    ups = pt.drain()
    assert pt.decoder.tokens == tr.decoder.tokens
    assert [w.to_dict() for w in pt.decoder.words] == [w.to_dict() for w in tr.words]
    assert ups[-1].words == [] or ups[-1].words[-1] is pt.decoder.words[-1]


def test_other_rates_are_resampled():
    s = _demo()
    tr = StreamingTranscriber(s.lm, s.codec, s.tokenizer, sample_rate=48000)
    tr.transcribe(np.stack([_speech(1.0, 48000)] * 2, axis=1))  # stereo at 48 kHz
    assert tr.frames == math.ceil(24000 / FRAME_SIZE) + tr.timing.suffix_samples // FRAME_SIZE


def test_refuses_models_that_are_not_speech_to_text():
    s = _demo("random-tiny")
    with pytest.raises(ConfigError, match="not a speech-to-text model"):
        StreamingTranscriber(s.lm, s.codec, s.tokenizer)
    h = _demo("random-tiny-helium")
    with pytest.raises(ConfigError, match="it is a text model"):
        StreamingTranscriber(h.lm, h.codec, h.tokenizer)


class W:
    def __init__(self, text, start, end):
        self.text, self.start, self.end = text, start, end


def test_cues_and_subtitle_formats(tmp_path):
    words = [W("Hello", 0.0, 0.3), W("there.", 0.4, 0.8), W("How", 0.9, 1.1), W("are", 3.0, 3.2), W("you", 3.3, 3.5)]
    cs = cues(words)
    assert [c.text for c in cs] == ["Hello there.", "How", "are you"]  # sentence end, then a 1.9 s pause
    srt = to_srt(cs)
    assert srt.startswith("1\n00:00:00,000 --> 00:00:00,800\nHello there.\n\n2\n")
    assert to_vtt(cs).startswith("WEBVTT\n\n00:00:00.000 --> 00:00:00.800\nHello there.\n")
    assert cues([W("a", 3661.5, 3662.0)])[0].start == 3661.5 and "01:01:01,500" in to_srt(cues([W("a", 3661.5, 3662)]))
    p = tmp_path / "t.srt"
    p.write_text("old")
    with pytest.raises(OutputError, match="already exists"):
        save_transcript(p, {"text": "x"}, words)
    assert p.read_text() == "old"
    save_transcript(p, {"text": "x"}, words, force=True)
    assert p.read_text() == srt and not list(tmp_path.glob(".*partial"))
    with pytest.raises(UsageError, match="format"):
        save_transcript(tmp_path / "t.doc", {}, words)


def test_public_api_transcriber_and_text_stream():
    import moshi_mlx

    model = moshi_mlx.load("random-tiny-stt", seed=3)
    tr = model.transcriber(sample_rate=16000)
    up = tr.feed(_speech(1.0, 16000))
    up.extend(tr.flush())
    assert up.words and up.words == tr.words and tr.text
    helium = moshi_mlx.load("random-tiny-helium", codec=False, tokenizer="none")
    assert helium.codec is None
    with pytest.raises(UsageError, match="codec"):
        helium.transcriber()
    text = "".join(helium.text_stream(temp=0.0).stream("1 2 3", 4))
    assert text.count("‹") == 4


def test_transcriber_takes_audio_as_a_conversation_does():
    """Integer PCM is scaled (int16 32767 -> ~1.0, not 32767.0), and bad audio or options are
    AudioError/UsageError with the conversation's sentences, never numpy's ValueError."""
    from moshi_mlx.errors import AudioError

    s = _demo()
    tr = StreamingTranscriber(s.lm, s.codec, s.tokenizer)
    pcm = _speech(1.0)
    tr.feed(pcm)
    ref = list(tr.decoder.tokens)
    tr.reset()
    tr.feed(np.round(pcm * 32767).astype(np.int16))
    assert tr.decoder.tokens == ref
    for bad, match in [
        (np.full(100, np.nan, np.float32), "NaN"),
        ("x", "expected audio samples"),
        (np.zeros((1, 1, 10), np.float32), "shape"),
        (np.zeros(10, np.int64), "not PCM"),
    ]:
        with pytest.raises(AudioError, match=match):
            tr.feed(bad)
    for kw, match in [
        (dict(sample_rate=0), "sample_rate"),
        (dict(sample_rate=16000.0), "sample_rate"),
        (dict(vad_threshold=2.0), "vad_threshold"),
        (dict(vad_threshold=float("nan")), "vad_threshold"),
    ]:
        with pytest.raises(UsageError, match=match):
            StreamingTranscriber(s.lm, s.codec, s.tokenizer, **kw)


def test_text_stream_refuses_bad_prompt_and_length():
    import moshi_mlx

    stream = moshi_mlx.load("random-tiny-helium", codec=False, tokenizer="none").text_stream(temp=0.0)
    for prompt, n, match in [
        ("1 2", 1.5, "max_tokens must be an integer"),
        ("1 2", "5", "max_tokens"),
        (None, 3, "prompt must be text or a list of token ids"),
        ([1, -2], 3, "token id"),
    ]:
        with pytest.raises(UsageError, match=match):
            list(stream.stream(prompt, n))
    assert "".join(stream.stream(np.array([1, 2]), 2)).count("‹") == 2


def test_the_api_refusal_speaks_api():
    """Model.transcriber() on a dialogue model names the model's kind and the moshi_mlx.load()
    call that gives an STT model, not a CLI flag (--hf-repo) or tool (moshi-local): those are
    moshi-stt's words (tests/cli/test_stt.py)."""
    import moshi_mlx

    with pytest.raises(ConfigError) as e:
        moshi_mlx.load("random-tiny").transcriber()
    msg = str(e.value)
    assert "is not a speech-to-text model: it is a dialogue model" in msg, msg
    assert 'moshi_mlx.load("kyutai/stt-1b-en_fr-candle")' in msg and "--" not in msg and "moshi-" not in msg, msg
