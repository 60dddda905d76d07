"""`Conversation`: talk to a model from Python, chunk by chunk, at any sample rate.

    with model.conversation(sample_rate=16000) as conv:
        for chunk in chunks:                # mono float32, any length
            out = conv.feed(chunk)          # what the model produced so far
            play(out.audio); print(out.text, end="")
        rest = conv.close()                 # the model finishes its last frames

It runs the live loop's `DuplexPipeline` (encoder, LM and decoder overlapping on their own
threads) with the caller in place of the sound card: input is resampled to 24 kHz and cut
into 80 ms frames here, each frame's capture time is when `feed` received it, and output is
resampled back to the caller's rate.

Two ways to drive it (`max_lag_ms`):
- None (default, for files, batch jobs and tests): every frame is answered, however long
  it takes; `feed` waits until each whole frame given so far has been answered, so what
  comes back is exactly the answer to the input so far and a run is reproducible.
- a bound (e.g. 400, the live loop's): for audio arriving in real time (a browser, a
  network stream). `feed` never waits; it returns what is ready. Frames the LM could not
  answer within the bound are skipped and answers that became too old are dropped, as in
  the live loop, so the delay stays bounded when the machine is too slow.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..constants import FRAME_SECONDS, FRAME_SIZE, SAMPLE_RATE
from ..errors import UsageError
from ..validation import mono_pcm, positive_or_off
from ..validation import sample_rate as check_rate
from .pipeline import DuplexPipeline, TextEvent


@dataclass
class TextPiece:
    """A piece of the model's text as it is produced (a word start begins with a space)."""

    text: str
    start: float  # seconds from the start of the conversation (the model's timeline)
    token: int


@dataclass
class Output:
    """What one `feed` (or `close`) returned."""

    audio: np.ndarray  # the model's voice, float32 mono at the conversation's rate
    pieces: list[TextPiece] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(p.text for p in self.pieces)

    def __add__(self, other: "Output") -> "Output":
        return Output(np.concatenate([self.audio, other.audio]), self.pieces + other.pieces)


class _CountingGen:
    """The LM generator, counting the audio frames it emits (so `feed` knows what to wait
    for) and keeping every step's tokens when asked."""

    def __init__(self, gen, keep: bool):
        self.gen, self.keep = gen, keep
        self.audio_frames = 0
        self.steps: list = []
        self.user: list = []  # the user's codes of each step (keep): the tokens file's input stream

    def step(self, codes):
        text, audio = self.gen.step(codes)
        if audio is not None:
            self.audio_frames += 1
        if self.keep:
            self.steps.append((int(text), None if audio is None else np.asarray(audio).tolist()))
            self.user.append(np.asarray(codes).reshape(-1).tolist())
        return text, audio

    def reset(self):
        self.gen.reset()


def _mono(pcm) -> np.ndarray:
    """Float samples (integer PCM scaled: int16 32767 -> ~1.0), mixed to mono; NaN/inf refused."""
    return mono_pcm("the audio", pcm)


class Conversation:
    """See the module docstring; made by `Model.conversation()`."""

    def __init__(self, model, gen, sample_rate: int, *, max_lag_ms: float | None = None, keep_tokens: bool = False):
        from ..audio.resample import Resampler

        sample_rate = check_rate("sample_rate", sample_rate)
        max_lag_ms = positive_or_off("max_lag_ms", max_lag_ms)  # None: no bound
        self.model = model
        self.sample_rate = sample_rate
        self.max_lag_ms = max_lag_ms
        self.generator = gen
        self.transcript = model.new_transcript()
        self.closed = False
        self._gen = _CountingGen(gen, keep_tokens)
        self._in_rs = Resampler(self.sample_rate, SAMPLE_RATE) if self.sample_rate != SAMPLE_RATE else None
        self._out_rs = Resampler(SAMPLE_RATE, self.sample_rate) if self.sample_rate != SAMPLE_RATE else None
        self._buf = np.zeros(0, np.float32)  # 24 kHz samples short of a whole frame
        self._pushed = 0  # frames given to the pipeline
        self._answered = 0  # text events received (one per LM step)
        self._taken = 0  # output frames taken from the pipeline
        self._cap: int | None = None  # 24 kHz samples of output at most (set by close)
        self._out24 = 0
        self._events: collections.deque = collections.deque()
        self._rest: list = []  # audio tokens answered but not decoded when stopped (abort(keep_answered))
        self._frames: list[int] = []  # input frame of each LM step (keep_tokens)
        # translation: the model position (80 ms from the start) of each text EOS that answered
        # an end-of-input marker (`end_input`)
        self.turn_ends: list[int] = []
        model.codec.reset()
        self._pipe = DuplexPipeline(
            model.codec,
            self._gen,
            model.n_user,
            max_lag_ms=max_lag_ms,
            on_text=self._on_text,
            settle_s=None,
            end_of_input=model.end_of_input(),
        ).start()

    # ---------------------------------------------------------------- public
    @property
    def tail_frames(self) -> int:
        """Frames of silence `close` feeds so the model's delayed voice catches up: own_delay - 1
        (`translation.input_end`; a step more would be thrown away by the output cap)."""
        from .translation import input_end

        return input_end(self.model).tail

    @property
    def frames_answered(self) -> int:
        """Frames the model has answered: the steps that gave an audio frame (a speaking
        model's first own_delay - 1 steps give none), every step for a text-only model."""
        return self._gen.audio_frames if self.model.speaks else self.frames_stepped

    @property
    def tokens(self) -> list:
        """(input frame, text token, audio tokens or None) per LM step (keep_tokens=True)."""
        return [(f, t, a) for f, (t, a) in zip(self._frames, self._gen.steps)]

    @property
    def frames_stepped(self) -> int:
        return self._pipe.stats.frames_stepped

    @property
    def stats(self):
        """The pipeline's counters (frames stepped/skipped/trimmed, step times)."""
        return self._pipe.stats

    def feed(self, pcm, *, wait: bool | None = None) -> Output:
        """Give the model more of the user's audio.

        Args:
            pcm: Mono float32 at the conversation's rate, any length; [n, channels] is mixed
                down.
            wait: Block until every whole frame given so far is answered (default: when
                max_lag_ms is None).

        Returns:
            The `Output` the model produced since the last call.

        Raises:
            AudioError: Audio that is not mono samples [n] or [n, channels], or NaN/inf.
            UsageError: A closed conversation.
        """
        self._check_open()
        x = _mono(pcm)
        if self._in_rs is not None:
            x = self._in_rs.process(x)
        self._push(x)
        if wait if wait is not None else self.max_lag_ms is None:
            self._wait(lambda: self._idle())
        return self._drain()

    def poll(self) -> Output:
        """What the model produced since the last call, without feeding anything."""
        self._check_open()
        self._raise_failure()
        return self._drain()

    def end_input(self, *, wait: bool | None = None) -> Output:
        """Translation models: say the speaker's turn ends here, so the last words get translated.

        The partial frame is padded with silence and the next frame is the end-of-input
        marker, so the model translates the last words and then writes its text EOS
        (`turn_ends`); keep feeding (silence, or the next turn) for it to do so.

        Args:
            wait: As in `feed`.

        Returns:
            What was produced, as `feed` does.

        Raises:
            UsageError: A model with no end-of-input marker (not a translation model).
        """
        self._check_open()
        if self.model.end_of_input() is None:
            raise UsageError("end_input() is for translation models (Hibiki): this model has no end-of-input marker")
        if self._in_rs is not None:
            self._push(self._in_rs.flush())
        if len(self._buf):
            self._push(np.zeros(FRAME_SIZE - len(self._buf), np.float32))
        self._pipe.push_end_of_input()
        self._pushed += 1  # the marker frame
        if wait if wait is not None else self.max_lag_ms is None:
            self._wait(lambda: self._idle())
        return self._drain()

    def close(self, progress: Callable[[int], None] | None = None) -> Output:
        """End of input: pad the last partial frame, let the model's delayed voice finish
        (`tail_frames` of silence), stop the workers.

        Args:
            progress: progress(frames_stepped), called while waiting.

        Returns:
            The rest of the output (the model's audio is then exactly as long as the input,
            rounded up to a frame); closing twice returns nothing.
        """
        if self.closed:
            return Output(np.zeros(0, np.float32))
        try:
            if self._in_rs is not None:
                self._push(self._in_rs.flush())
            if len(self._buf):
                self._push(np.zeros(FRAME_SIZE - len(self._buf), np.float32))
            self._cap = self._pushed * FRAME_SIZE
            if self.tail_frames:
                self._push(np.zeros(self.tail_frames * FRAME_SIZE, np.float32))
            self._pipe.close_input()

            def done() -> bool:
                if progress is not None:
                    progress(self._pipe.stats.frames_stepped)
                return self._pipe.finished.is_set()

            self._wait(done, 0.25)
            out = self._drain()
            if self._out_rs is not None:
                out.audio = np.concatenate([out.audio, self._out_rs.flush()])
            return out
        except KeyboardInterrupt:  # stop, keeping what was answered: the caller's abort() returns it
            self._halt(keep_answered=True)
            raise
        finally:
            self._halt()

    @property
    def user_codes(self) -> list:
        """The user's codes of each LM step (keep_tokens=True), beside `tokens`."""
        return list(self._gen.user)

    def abort(self, keep_answered: bool = False) -> Output:
        """Stop at once (Ctrl-C, an error): input not yet answered is dropped and the workers
        return to their pool (close() is the way to finish).

        Args:
            keep_answered: The audio of the frames the LM already answered is decoded here
                (the decoder lags the LM: on a CPU by many frames), so the audio returned
                covers every step in `tokens` (also after a close() that Ctrl-C stopped).

        Returns:
            What was produced and not yet taken.
        """
        self._halt(keep_answered)
        out = self._drain()
        rest, self._rest = self._rest, []
        if rest:
            pcm24 = np.concatenate([np.asarray(self.model.codec.decode_step(c), np.float32).reshape(-1) for c in rest])
            if self._cap is not None:
                pcm24 = pcm24[: max(self._cap - self._out24, 0)]
            self._out24 += len(pcm24)
            a = self._out_rs.process(pcm24) if self._out_rs is not None and len(pcm24) else pcm24
            out.audio = np.concatenate([out.audio, a.astype(np.float32, copy=False)])
        return out

    def _halt(self, keep_answered: bool = False) -> None:
        """Stop the workers once (output not yet taken stays for `_drain`); keep_answered: keep
        the audio tokens the decoder had not reached, for `abort` to decode."""
        if not self.closed:
            self.closed = True
            stopped = self._pipe.abort(timeout=10)
            if keep_answered and stopped and not self._pipe.failed.is_set():
                self._rest = self._pipe.undecoded()
        if self.model._active is self:
            self.model._active = None

    def __enter__(self) -> "Conversation":
        return self

    def __exit__(self, exc_type, *_) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    # ---------------------------------------------------------------- internals
    def _check_open(self) -> None:
        if self.closed:
            raise UsageError("this conversation is closed; start a new one with model.conversation()")

    def _raise_failure(self) -> None:
        if self._pipe.failed.is_set():
            err = self._pipe.error
            self.abort()
            raise err

    def _on_text(self, ev: TextEvent) -> None:  # LM thread
        if ev.end_of_turn:
            self.turn_ends.append(ev.frame + 1)
        if self._gen.keep:
            self._frames.append(ev.frame)
        self._events.append(ev)
        self._answered += 1

    def _push(self, x: np.ndarray) -> None:
        buf = np.concatenate([self._buf, x]) if len(self._buf) else x
        n = len(buf) // FRAME_SIZE
        now = time.monotonic()
        for i in range(n):
            # capture time of the frame's last sample: the chunk is taken as just received
            t_end = now - (len(buf) - (i + 1) * FRAME_SIZE) / SAMPLE_RATE
            # offline: block while the encoder is 256 frames behind; real time: drop the oldest
            # (counted in stats.input_overflows), like the live loop's capture callback
            self._pipe.push_input(buf[i * FRAME_SIZE : (i + 1) * FRAME_SIZE], t_end=t_end, wait=self.max_lag_ms is None)
        self._pushed += n
        self._buf = buf[n * FRAME_SIZE :].copy()

    def _idle(self) -> bool:
        """Every frame pushed has been stepped (or skipped) and its audio decoded."""
        st = self._pipe.stats  # (one frame per pushed block, so an overflow is one frame)
        stepped = self._answered + st.frames_skipped + st.input_overflows >= self._pushed
        return stepped and self._taken + len(self._pipe.output) >= self._gen.audio_frames

    def _wait(self, ready: Callable[[], bool], period: float = 0.005) -> None:
        while not ready():
            self._raise_failure()
            with self._pipe.output_available:
                self._pipe.output_available.wait(period)
        self._raise_failure()

    def _drain(self) -> Output:
        pieces = []
        while self._events:
            ev = self._events.popleft()
            piece = self.transcript.add(ev.token, ev.frame)
            if piece:
                pieces.append(TextPiece(piece, (ev.frame + 1) * FRAME_SECONDS, int(ev.token)))
        audio = []
        lag_s = None if self.max_lag_ms is None else self.max_lag_ms / 1000.0
        while True:
            try:
                item = self._pipe.output.popleft()
            except IndexError:
                break
            self._taken += 1
            if lag_s is not None and time.monotonic() - item.t_capture > lag_s:
                self._pipe.stats.frames_trimmed += 1  # the answer came too late to be useful
                continue
            pcm24 = item.payload[1]
            if self._cap is not None:
                pcm24 = pcm24[: max(self._cap - self._out24, 0)]
            self._out24 += len(pcm24)
            audio.append(pcm24)
        a = np.concatenate(audio) if audio else np.zeros(0, np.float32)
        if self._out_rs is not None and len(a):
            a = self._out_rs.process(a)
        return Output(a.astype(np.float32, copy=False), pieces)


__all__ = ["Conversation", "Output", "TextPiece"]
