"""Streaming speech-to-text with Kyutai's STT models (`kyutai/stt-1b-en_fr`, `kyutai/stt-2.6b-en`).

Those models are Moshi's architecture with no depformer (dep_q = 0): every audio stream is
input and only text comes out. The text stream lags the audio by the model's delay
(`stt_config.audio_delay_seconds`); it is trained to start after a silence prefix
(`audio_silence_prefix_seconds`). So, as Kyutai's scripts do, the audio gets that much
silence before it and `delay + 1 s` of silence after it (the tail lets the last words out).

Text stream conventions: words are made of SentencePiece pieces (a new word starts with
"▁"); padding (`existing_text_padding_id`, 3) fills the frames between words and an
end-of-padding token (0) comes right before a word. A word is complete when padding
follows it.

Timestamps are on the input audio's timeline, in seconds: a text token has the time of the
frame it belongs to (the step that consumed input frame f produced the text of frame f + 1,
at (f + 1) x 80 ms), minus the silence prefix and the model's text delay; a word ends one
frame after its last token. Kyutai's `stt_from_file_pytorch.py` stamps the same tokens one
frame earlier (by step index) and ends words at the next end-of-padding.

The extra heads (the 1B model's semantic voice-activity detector: 4 heads of 6 classes) are
read at every step; upstream's microphone script takes head 2, class 0 as the probability
that the speaker's turn is over (> 0.5: end of turn). Their times are those of the audio
heard so far (prefix removed, no text delay: they are about the audio).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import mlx.core as mx
import numpy as np

from ..errors import ConfigError, UsageError
from ..models import LmGen
from ..models.sampling import check_text_sampling
from ..constants import DEFAULT_SEED, FRAME_SECONDS, FRAME_SIZE, SAMPLE_RATE
from ..validation import mono_pcm, real
from ..validation import sample_rate as check_rate
from .pipeline import make_resampler

TEXT_TEMP = 0.0  # greedy text unless told, as Kyutai's STT scripts (make_stt_gen, moshi-stt --temp)

END_OF_TURN_HEAD = 2  # upstream stt_from_mic_mlx.py: vad_heads[2][0, 0, 0] > 0.5
END_OF_TURN_CLASS = 0
END_OF_TURN_THRESHOLD = 0.5
TAIL_SECONDS = 1.0  # silence after the model's delay, as Kyutai's scripts


@dataclass(frozen=True)
class SttTiming:
    """How a model's audio is padded, from its `stt_config` (none: no padding at all)."""

    prefix_samples: int = 0  # silence before the audio (24 kHz samples)
    delay_seconds: float = 0.0  # how far the text lags the audio
    suffix_samples: int = 0  # silence after the audio: the delay + 1 s, as Kyutai's scripts

    @classmethod
    def of(cls, cfg) -> "SttTiming":
        stt = cfg.extra.get("stt_config")
        if not stt:
            return cls()
        prefix = float(stt.get("audio_silence_prefix_seconds", 0.0))
        delay = float(stt.get("audio_delay_seconds", 0.0))
        if prefix < 0 or delay < 0:
            raise ConfigError(f"stt_config has negative times: prefix {prefix} s, delay {delay} s")
        return cls(int(prefix * SAMPLE_RATE), delay, int((delay + TAIL_SECONDS) * SAMPLE_RATE))

    @property
    def prefix_seconds(self) -> float:
        return self.prefix_samples / SAMPLE_RATE

    @property
    def text_offset(self) -> float:
        """Seconds to subtract from a text token's frame time to get its input-audio time."""
        return self.prefix_seconds + self.delay_seconds


def stt_padding(cfg) -> tuple[float, float]:
    """(prefix, suffix) seconds of silence a speech-to-text model wants around the audio
    ((0, 0) without an stt_config); also used by file inference."""
    t = SttTiming.of(cfg)
    return t.prefix_seconds, t.suffix_samples / SAMPLE_RATE


@dataclass
class SttWord:
    text: str
    start: float  # seconds on the input audio's timeline
    end: float

    def to_dict(self) -> dict:
        return {"word": self.text, "start": round(self.start, 3), "end": round(self.end, 3)}


@dataclass
class VadEvent:
    """`end_of_turn`: the end-of-turn probability rose above the threshold after speech."""

    time: float  # seconds of input audio heard when it was detected
    kind: str
    probability: float

    def to_dict(self) -> dict:
        return {"event": self.kind, "time": round(self.time, 3), "probability": round(self.probability, 4)}


@dataclass
class SttUpdate:
    """What one `feed` (or one step) produced."""

    text: str = ""  # printable text, as it streams (pieces, spaces between words)
    words: list[SttWord] = field(default_factory=list)  # words completed
    events: list[VadEvent] = field(default_factory=list)
    first_start: float | None = None  # start time of the first word begun here (for display)

    def extend(self, other: "SttUpdate") -> None:
        if self.first_start is None:
            self.first_start = other.first_start
        self.text += other.text
        self.words += other.words
        self.events += other.events


VAD_REPO = "kyutai/stt-1b-en_fr-candle"  # the published STT weights that carry the end-of-turn heads


def has_end_of_turn(cfg) -> bool:
    """Whether the model has the semantic-VAD extra heads end of turn is read from."""
    return cfg.extra_heads_num_heads > END_OF_TURN_HEAD and cfg.extra_heads_dim > END_OF_TURN_CLASS


class SttDecoder:
    """Text tokens (+ extra heads) of successive steps -> words with times and VAD events.
    Pure bookkeeping: no model, so the live loop and the file path share it."""

    def __init__(self, tokenizer, cfg, *, vad_threshold: float = END_OF_TURN_THRESHOLD):
        self.tokenizer = tokenizer
        self.timing = SttTiming.of(cfg)
        self.pad_ids = {cfg.existing_text_padding_id, cfg.existing_text_end_padding_id}
        self.has_vad = has_end_of_turn(cfg)
        self.vad_threshold = vad_threshold
        self.reset()

    def reset(self) -> None:
        self.words: list[SttWord] = []
        self.events: list[VadEvent] = []
        self.tokens: list[int] = []
        self.end_of_turn_prob: list[float] = []  # per step (models with the VAD heads)
        self._open: SttWord | None = None
        self._above = True  # no event before the first speech
        self._words_since_turn = 0

    def _text_time(self, frame: int) -> float:
        return max(0.0, (frame + 1) * FRAME_SECONDS - self.timing.text_offset)

    def _audio_time(self, frame: int) -> float:
        return max(0.0, (frame + 1) * FRAME_SECONDS - self.timing.prefix_seconds)

    def _close(self, out: SttUpdate) -> None:
        if self._open is not None and self._open.text:
            self.words.append(self._open)
            out.words.append(self._open)
            self._words_since_turn += 1
        self._open = None

    def add(self, token: int, frame: int, heads: np.ndarray | None = None) -> SttUpdate:
        """One step: its text token, the input frame it consumed, the extra heads' softmax
        [num_heads, dim] (or None)."""
        out = SttUpdate()
        self.tokens.append(int(token))
        piece = None if token in self.pad_ids else self.tokenizer.piece(int(token))
        if piece is None:
            if token in self.pad_ids:
                self._close(out)
        else:
            t = self._text_time(frame)
            if piece.startswith("▁") or self._open is None:
                self._close(out)
                self._open = SttWord(piece.lstrip("▁"), t, t + FRAME_SECONDS)
                if out.first_start is None:
                    out.first_start = t
                out.text += (" " if self.words else "") + piece.lstrip("▁")
            else:
                self._open.text += piece
                self._open.end = t + FRAME_SECONDS
                out.text += piece
        if heads is not None and self.has_vad:
            p = float(heads[END_OF_TURN_HEAD, END_OF_TURN_CLASS])
            self.end_of_turn_prob.append(p)
            above = p > self.vad_threshold
            if above and not self._above and (self._words_since_turn or self._open is not None):
                self._close(out)
                ev = VadEvent(self._audio_time(frame), "end_of_turn", p)
                self.events.append(ev)
                out.events.append(ev)
                self._words_since_turn = 0
            self._above = above
        return out

    def finish(self) -> SttUpdate:
        """End of the audio: the word still open is complete."""
        out = SttUpdate()
        self._close(out)
        return out

    @property
    def text(self) -> str:
        words = self.words + ([self._open] if self._open is not None else [])
        return " ".join(w.text for w in words if w.text)

    def to_dict(self) -> dict:
        return {
            "text": self.text,
            "words": [w.to_dict() for w in self.words],
            "events": [e.to_dict() for e in self.events],
            "text_delay_seconds": self.timing.delay_seconds,
            "silence_prefix_seconds": round(self.timing.prefix_seconds, 4),
        }


def check_stt_model(cfg, name: str | None = None) -> None:
    """Refuse a model that is not speech-to-text, from its config alone (so `load(check=...)`
    refuses it before its weights are read); `name`: what the user gave, for the message. The
    words are the API's (the model's kind, `moshi_mlx.load`); moshi-stt adds its flag and tools."""
    who = name or "this model"
    if cfg.kind != "speech-to-text":
        raise ConfigError(
            f"{who} is not a speech-to-text model: it is a {cfg.kind} model; for speech-to-text load a "
            f'Kyutai STT model, e.g. moshi_mlx.load("{VAD_REPO}")'
        )


class HeadsGen:
    """An `LmGen` whose steps also keep the extra heads' softmax (`last_heads`, numpy
    [num_heads, dim] or None), for the pipeline's LM thread: read it in `on_text`, which
    runs on the same thread right after the step."""

    def __init__(self, gen: LmGen):
        self.gen = gen
        self.last_heads: np.ndarray | None = None
        self.has_heads = bool(gen.cfg.extra_heads_num_heads)

    def step(self, codes):
        text, audio = self.gen.step(codes)
        if self.has_heads:
            heads = mx.stack(self.gen.extra_heads())[:, 0]
            self.last_heads = np.array(heads)
        return text, audio

    def reset(self) -> None:
        self.gen.reset()
        self.last_heads = None


def make_stt_gen(
    lm,
    *,
    temp: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int = DEFAULT_SEED,
    compute=None,
) -> LmGen:
    """Greedy text by default (Kyutai's STT scripts use temperature 0); compute: the
    model's `ComputeFormat`."""
    check_text_sampling(temp, top_k, top_p)
    return LmGen(
        lm,
        temp_text=TEXT_TEMP if temp is None else temp,
        top_k_text=top_k,
        top_p_text=top_p,
        seed=seed,
        compute=compute,
    )


class StreamingTranscriber:
    """Speech-to-text on audio given in pieces of any length: `feed(pcm)` -> `SttUpdate`
    (the words completed, the text streamed, end-of-turn events), `flush()` at the end.

    lm, codec (a `MimiFrameCodec`), tokenizer, compute: as `moshi_mlx.load()` gives them (or `Model.transcriber`).
    sample_rate: rate of the audio fed (resampled to 24 kHz, streaming).
    """

    def __init__(
        self,
        lm,
        codec,
        tokenizer,
        *,
        sample_rate: int = SAMPLE_RATE,
        temp: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int = DEFAULT_SEED,
        vad_threshold: float = END_OF_TURN_THRESHOLD,
        compute=None,
    ):
        check_stt_model(lm.cfg)
        sample_rate = check_rate("sample_rate", sample_rate)
        vad_threshold = real("vad_threshold", vad_threshold, lo=0.0, hi=1.0)
        self.cfg = lm.cfg
        self.codec = codec
        self.gen = HeadsGen(make_stt_gen(lm, temp=temp, top_k=top_k, top_p=top_p, seed=seed, compute=compute))
        self.decoder = SttDecoder(tokenizer, lm.cfg, vad_threshold=vad_threshold)
        self.sample_rate = int(sample_rate)
        self.reset()

    @property
    def timing(self) -> SttTiming:
        return self.decoder.timing

    def reset(self) -> None:
        """A new stream: model state, codec state, words and the silence prefix."""
        self.gen.reset()
        self.codec.reset()
        self.decoder.reset()
        self._resample = make_resampler(self.sample_rate, SAMPLE_RATE)
        self._buf = np.zeros(self.timing.prefix_samples, np.float32)
        self.frames = 0  # 80 ms frames stepped (prefix and tail included)
        self.samples_in = 0  # input samples at 24 kHz
        self._flushed = False

    def _run_frames(self) -> SttUpdate:
        out = SttUpdate()
        n = len(self._buf) // FRAME_SIZE
        for i in range(n):
            codes = self.codec.encode_step(self._buf[i * FRAME_SIZE : (i + 1) * FRAME_SIZE])
            text, _ = self.gen.step(np.asarray(codes).reshape(-1)[: self.cfg.user_q])
            out.extend(self.decoder.add(text, self.frames, self.gen.last_heads))
            self.frames += 1
        self._buf = self._buf[n * FRAME_SIZE :]
        return out

    def feed(self, pcm: np.ndarray) -> SttUpdate:
        """Mono samples (or [n, channels], mixed to mono) at `sample_rate`."""
        if self._flushed:
            raise UsageError("this stream was flushed: call reset() to start another")
        x = mono_pcm("the audio", pcm)  # integer PCM scaled, NaN/inf refused (AudioError)
        if self._resample is not None:
            x = self._resample(x)
        self.samples_in += len(x)
        self._buf = np.concatenate([self._buf, x])
        return self._run_frames()

    def flush(self) -> SttUpdate:
        """End of the audio: the partial frame and the model's delay + 1 s of silence go
        through, so the last words come out."""
        if self._flushed:
            return SttUpdate()
        pad = (-len(self._buf)) % FRAME_SIZE + self.timing.suffix_samples
        self._buf = np.concatenate([self._buf, np.zeros(pad, np.float32)])
        out = self._run_frames()
        out.extend(self.decoder.finish())
        self._flushed = True
        return out

    @property
    def words(self) -> list[SttWord]:
        return self.decoder.words

    @property
    def events(self) -> list[VadEvent]:
        return self.decoder.events

    @property
    def text(self) -> str:
        return self.decoder.text

    def transcribe(self, pcm: np.ndarray) -> SttUpdate:
        """A whole recording at once (reset, feed, flush)."""
        self.reset()
        out = self.feed(pcm)
        out.extend(self.flush())
        return out
