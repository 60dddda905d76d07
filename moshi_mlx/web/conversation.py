"""One browser conversation on the live loop's `DuplexPipeline`.

The server holds one `Engine` (the loaded model: codec, generator, tokenizer) for its whole
life and starts a `Conversation` per WebSocket connection. Starting one resets every piece of
state (Mimi's streaming buffers, the LM's KV caches and PRNG) and applies that connection's
sampling settings, so no connection inherits anything from the previous one. The generator
and its caches are reused, not rebuilt: a new conversation allocates nothing.

The browser's audio clock drives the pipeline: each block of microphone samples is pushed in
and a block of the same length is read out for playback (`feed`), exactly like a sound card's
duplex callback, so the pipeline's lag control (late input skipped, late output dropped)
works as in `moshi-local`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..models.sampling import Sampler
from ..runtime.pipeline import SAMPLE_RATE, DuplexPipeline, TextEvent, make_resampler
from ..runtime.transcript import FRAME_SECONDS, Transcript
from .protocol import Settings


def configure_lm_gen(gen, s: Settings) -> None:
    """Apply a connection's sampling settings to an `LmGen` (takes effect at its next reset)."""
    gen.text_sampler = Sampler(s.temp_text, s.top_k_text, s.top_p_text)
    gen.audio_sampler = Sampler(s.temp, s.top_k, s.top_p)
    gen.seed = s.seed
    gen.options.update(temp=s.temp, temp_text=s.temp_text, top_k=s.top_k, top_k_text=s.top_k_text,
                       top_p=s.top_p, top_p_text=s.top_p_text, use_sampling=True)


def lm_gen_settings(gen) -> Settings:
    """The settings an `LmGen` runs with now (the CLI's flags over the model's defaults)."""
    t, a = gen.text_sampler, gen.audio_sampler
    return Settings(temp=a.temp, temp_text=t.temp, top_k=a.top_k, top_k_text=t.top_k, top_p=a.top_p,
                    top_p_text=t.top_p, seed=int(gen.seed) % (2**31))


@dataclass
class Engine:
    """The loaded model, shared by all conversations (one at a time)."""

    codec: object  # runtime.pipeline.FrameCodec
    gen: object  # runtime.pipeline.FrameGenerator (an LmGen)
    n_user: int
    tokenizer: object
    pad_id: int
    description: str
    defaults: Settings
    is_demo: bool = False
    configure: Callable[[object, Settings], None] = field(default=configure_lm_gen)

    @classmethod
    def from_session(cls, session, gen) -> "Engine":
        """From `runtime.loading.load_session` and `make_gen`."""
        return cls(session.codec, gen, session.n_user, session.tokenizer, session.cfg.existing_text_padding_id,
                   session.description, lm_gen_settings(gen), session.is_demo)


def to_float(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


def to_int16(x: np.ndarray) -> bytes:
    return (np.clip(x, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()


class Conversation:
    """A running conversation. `on_text(piece, seconds)` is called from the LM thread with
    each printable piece of Moshi's text; keep it cheap (hand it to the event loop)."""

    def __init__(self, engine: Engine, sample_rate: int, settings: Settings, *,
                 on_text: Callable[[str, float], None], max_lag_ms: float | None = 400.0,
                 step_delay_s: float = 0.0):
        engine.codec.reset()
        engine.configure(engine.gen, settings)
        engine.gen.reset()
        self.settings = settings
        self.sample_rate = sample_rate
        self._on_text = on_text
        self.transcript = Transcript(engine.tokenizer, pad_id=engine.pad_id)
        self.pipe = DuplexPipeline(
            engine.codec, engine.gen, engine.n_user, max_lag_ms=max_lag_ms,
            in_resampler=make_resampler(sample_rate, SAMPLE_RATE),
            out_resampler=make_resampler(SAMPLE_RATE, sample_rate), output_rate=sample_rate,
            on_text=self._text, step_delay_s=step_delay_s,
        ).start()

    def _text(self, ev: TextEvent) -> None:
        piece = self.transcript.add(ev.token, ev.frame)
        if piece:
            self._on_text(piece, (ev.frame + 1) * FRAME_SECONDS)

    def feed(self, pcm: bytes) -> bytes:
        """A block of the client's int16 microphone PCM in; the same length of Moshi out."""
        x = to_float(pcm)
        self.pipe.push_input(x)
        return to_int16(self.pipe.read_output(len(x)))

    @property
    def error(self) -> BaseException | None:
        return self.pipe.error if self.pipe.failed.is_set() else None

    def stats(self) -> dict:
        s = self.pipe.stats
        recent = list(s.step_ms)[-20:]
        lag = s.last_delay_ms
        return {"lag_ms": None if lag != lag else round(lag, 1), "steps": s.frames_stepped,
                "skipped": s.frames_skipped, "trimmed": s.frames_trimmed + s.frames_settled,
                "overflows": s.input_overflows,
                "step_ms": round(float(np.median(recent)), 2) if recent else None}

    def close(self) -> None:
        """Stop the workers and wait for them (blocking: call it off the event loop), so the
        engine is free for the next conversation."""
        self.pipe.stop(timeout=None)
