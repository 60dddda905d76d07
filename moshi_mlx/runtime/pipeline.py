"""The one full-duplex pipeline every front end shares (live loop, file inference, benches).

    device input ──► [raw queue] ──► encoder thread ──► [code queue] ──► LM thread
         (callback)                  (resample, frame,                  (gen.step, text,
                                      codec.encode_step)                 lag control)
                                                                            │
    device output ◄── [output deque] ◄── decoder thread ◄── [token queue] ◄─┘
         (callback)                      (codec.decode_step, resample)

Audio callbacks only append to / pop from queues and never block or allocate models'
work. Every worker blocks on its queue (no polling), and the three workers overlap: while
the LM steps on frame t, the encoder works on frame t+1 and the decoder on frame t-1.

Latency is bounded by `max_lag_ms`, the longest allowed delay from the capture of an input
frame to the playback of the output frame its LM step produced: the LM skips frames that
are already too old to be answered in time, and the output side drops frames that would
play too late. Both are counted and the current delay is always available in `stats`.
See docs/threading.md.
"""

from __future__ import annotations

import atexit
import collections
import itertools
import queue
import threading
import time
import warnings
import weakref
from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np

from ..constants import FRAME_SECONDS, FRAME_SIZE, SAMPLE_RATE, TEXT_EOS_ID
from ..errors import UsageError
from ..validation import silence_non_finite
from .workers import run_in_worker

# The live loop's default lag bound (ms): the pipeline, Model.pipeline, LiveOptions, the web
# server and the --max-lag-ms flags of moshi-local, moshi-translate and moshi-web read it here
MAX_LAG_MS = 400.0

# LM steps the warm-up runs at most, waiting for the first audio (after the model's delay)
WARM_UP_STEPS = 8

_STOP = object()
_END = object()  # end of the speaker's input (a translation model's end-of-input marker)
_END_IF_OPEN = object()  # the same, unless the end policy already ended the turn (no speech since)
_ACTIVE: "weakref.WeakSet[DuplexPipeline]" = weakref.WeakSet()  # started, not yet stopped


def abort_all(timeout: float = 10.0) -> None:
    """Abort every running pipeline and wait for its workers (the CLI runner calls this on
    the way out, and it runs at exit for API callers who left a conversation open: MLX
    threads must be idle when the interpreter shuts down, or it aborts with "terminate
    called without an active exception")."""
    for pipe in list(_ACTIVE):
        pipe.abort(timeout)


atexit.register(abort_all)


class FrameCoder(Protocol):
    """One 80 ms frame at a time, numpy in and out (runtime/codec.py: `MimiFrameCodec`)."""

    def encode_step(self, frame: np.ndarray) -> np.ndarray: ...  # [1920] -> [K] ints
    def decode_step(self, codes: np.ndarray) -> np.ndarray: ...  # [dep_q] -> [1920]
    def reset(self) -> None: ...


class FrameGenerator(Protocol):
    def step(self, user_codes) -> tuple[int, object]: ...
    def reset(self) -> None: ...


class Resampler(Protocol):
    def __call__(self, x: np.ndarray) -> np.ndarray: ...


def make_resampler(sr_in: int, sr_out: int) -> Resampler | None:
    """A streaming resampler between a device rate and Mimi's (None when they are equal)."""
    if int(sr_in) == int(sr_out):
        return None
    from ..audio.resample import Resampler as _StreamResampler

    return _StreamResampler(int(sr_in), int(sr_out)).process


@dataclass
class TextEvent:
    token: int
    step: int  # LM step index (80 ms each, counted from the start of the session)
    frame: int  # index of the input frame this step consumed
    t_capture: float
    # a translation model's text EOS answering an end-of-input marker: the turn is translated
    end_of_turn: bool = False


@dataclass
class PipelineStats:
    frames_in: int = 0  # 80 ms input frames encoded
    frames_stepped: int = 0  # LM steps run
    frames_skipped: int = 0  # input frames the LM skipped because they were too old
    input_overflows: int = 0  # raw device blocks dropped because the encoder fell behind
    input_non_finite: int = 0  # captured samples that were NaN or infinite (a device's glitch), encoded as silence
    frames_out: int = 0  # output frames decoded
    frames_played: int = 0
    frames_trimmed: int = 0  # output frames dropped because they would play too late
    frames_settled: int = 0  # output frames dropped because output ran a frame ahead for long
    underruns: int = 0  # output callbacks that found nothing to play (after start)
    end_markers: int = 0  # end-of-input markers sent (translation: end of a turn)
    turns_done: int = 0  # markers answered by the model's text EOS
    last_delay_ms: float = float("nan")
    # the most recent values only (bounded: a session may last hours)
    delays_ms: collections.deque = field(default_factory=lambda: collections.deque(maxlen=50_000))
    step_ms: collections.deque = field(default_factory=lambda: collections.deque(maxlen=4096))

    def summary(self) -> dict:
        d = np.array(self.delays_ms) if self.delays_ms else np.array([np.nan])
        s = np.array(self.step_ms) if self.step_ms else np.array([np.nan])
        with warnings.catch_warnings():  # no values yet: NaN, without numpy's "All-NaN slice" warnings on stderr
            warnings.simplefilter("ignore", RuntimeWarning)
            return self._summary(d, s)

    def _summary(self, d: np.ndarray, s: np.ndarray) -> dict:
        return {
            "frames_in": self.frames_in,
            "frames_stepped": self.frames_stepped,
            "frames_skipped": self.frames_skipped,
            "input_overflows": self.input_overflows,
            "input_non_finite": self.input_non_finite,
            "frames_out": self.frames_out,
            "frames_played": self.frames_played,
            "frames_trimmed": self.frames_trimmed,
            "frames_settled": self.frames_settled,
            "underruns": self.underruns,
            "end_markers": self.end_markers,
            "turns_done": self.turns_done,
            "delay_ms_median": float(np.nanmedian(d)),
            "delay_ms_p90": float(np.nanpercentile(d, 90)),
            "delay_ms_max": float(np.nanmax(d)),
            "step_ms_median": float(np.nanmedian(s)),
        }


@dataclass
class _Item:
    frame: int
    t_capture: float
    payload: object
    marker: bool = False  # the end-of-input marker: never skipped by lag control


class _Reframer:
    """Accumulates arbitrary-length mono blocks into exact 1920-sample frames."""

    def __init__(self):
        self._buf = np.zeros(0, np.float32)

    def push(self, x: np.ndarray) -> list[np.ndarray]:
        self._buf = np.concatenate([self._buf, x.astype(np.float32, copy=False)])
        n = len(self._buf) // FRAME_SIZE
        frames = [self._buf[i * FRAME_SIZE : (i + 1) * FRAME_SIZE] for i in range(n)]
        self._buf = self._buf[n * FRAME_SIZE :]
        return frames

    @property
    def pending(self) -> int:
        return len(self._buf)


class DuplexPipeline:
    """Codec + LM workers between a capture side and a playback side.

    codec: FrameCoder; gen: FrameGenerator; n_user_codebooks: codes the LM takes per frame.
    in_resampler / out_resampler convert device rate <-> 24 kHz (None when equal).
    max_lag_ms: bound on capture-to-playback delay (None: never skip or trim, used offline).
    on_text: called from the LM thread with each TextEvent (keep it cheap: enqueue).
    recorder: a StereoRecorder (user as captured at 24 kHz, model as played).
    step_delay_s: artificial extra compute per LM step (tests/benchmarks of lag control).
    settle_s: drop a frame when output has run a whole frame ahead for this long (None: never).
    echo: an EchoCanceller (runtime/echo.py): fed what the output device receives, it cleans
    the microphone before Mimi encodes it. record_raw_mic: the recording's user channel holds
    the microphone as captured instead of as cleaned (the default: what Moshi heard).
    end_of_input: a translation model's end-of-input marker codes (runtime/translation.py),
    sent in place of a frame by `push_end_of_input` or when `end_policy` (a SilencePolicy,
    fed every frame after echo cancellation) says a pause ends the turn; a text EOS after a
    marker is then `TextEvent.end_of_turn`. None: the model has no such marker.
    """

    def __init__(
        self,
        codec: FrameCoder,
        gen: FrameGenerator,
        n_user_codebooks: int,
        *,
        max_lag_ms: float | None = MAX_LAG_MS,
        in_resampler: Resampler | None = None,
        out_resampler: Resampler | None = None,
        on_text: Callable[[TextEvent], None] | None = None,
        recorder=None,
        clock: Callable[[], float] = time.monotonic,
        step_delay_s: float = 0.0,
        output_latency_s: float = 0.0,
        output_rate: int = SAMPLE_RATE,
        output_block_s: float = FRAME_SECONDS,
        settle_s: float | None = 2.0,
        raw_queue_blocks: int = 256,
        echo=None,
        record_raw_mic: bool = False,
        end_of_input: np.ndarray | None = None,
        end_policy=None,
    ):
        self.codec = codec
        self.gen = gen
        self.n_user = n_user_codebooks
        self.max_lag_s = None if max_lag_ms is None else max_lag_ms / 1000.0
        self.in_resampler = in_resampler
        self.out_resampler = out_resampler
        self.on_text = on_text
        self.recorder = recorder
        self.clock = clock
        self.step_delay_s = step_delay_s
        self.output_latency_s = output_latency_s
        self.output_rate = output_rate
        self.output_block_s = output_block_s
        self.settle_s = settle_s
        self.echo = echo
        self.record_raw_mic = record_raw_mic
        self.end_of_input = None if end_of_input is None else np.asarray(end_of_input).reshape(-1)
        if end_policy is not None and end_of_input is None:  # as push_end_of_input: not silently unused
            raise UsageError("an end_policy needs a translation model (an end-of-input marker); this model has none")
        self.end_policy = end_policy
        self._awaiting_eos = False  # a marker was stepped and its EOS has not come yet
        # where the input's end stands, for a driver that waits for the answer (runtime/live.py):
        # input frame indices (an output item's frame is that of the step that gave it)
        self.ends_done = 0  # push_end_of_input calls the encoder has handled
        self.last_marker_frame: int | None = None  # the latest end-of-input marker
        self.last_answer_frame: int | None = None  # the step whose EOS answered the latest marker
        self.last_step_frame: int | None = None  # the latest step
        self.last_output_frame: int | None = None  # the latest output frame played (or dropped as late)
        self._ahead_since: float | None = None
        self.stats = PipelineStats()
        self.error: BaseException | None = None
        self.failed = threading.Event()
        self.finished = threading.Event()  # set when the decoder has drained after close_input
        self.output: collections.deque = collections.deque()  # _Item(payload=(pcm_dev, pcm24))
        self.output_available = threading.Condition()
        self._raw: queue.Queue = queue.Queue(maxsize=raw_queue_blocks)
        self._codes: queue.Queue = queue.Queue()
        self._tokens: queue.Queue = queue.Queue()
        self._reframer = _Reframer()
        self._dropped_samples = 0  # device samples lost to input overflows (the echo canceller skips them)
        self._frame_index = 0
        self._step = 0
        self._done: list[threading.Event] = []
        self._play_partial: np.ndarray | None = None
        self._started_output = False
        self._running = False
        self._aborted = False
        self._undecoded: list = []  # audio tokens the decoder took but dropped on abort

    # ------------------------------------------------------------------ control
    def start(self) -> "DuplexPipeline":
        if self._running:
            return self
        self._running = True
        _ACTIVE.add(self)
        if self.max_lag_s is not None:  # real time: compile before any frame is timed (_warm_up)
            warm = run_in_worker(self._guard(self._warm_up))
            self._done = [warm]
            warm.wait()
            if self.failed.is_set() or self._aborted:
                return self
        self._done = [
            run_in_worker(self._guard(loop)) for loop in (self._encoder_loop, self._lm_loop, self._decoder_loop)
        ]
        return self

    def _warm_up(self) -> None:
        """Run the codec and the model on silence, untimed, before the first frame: the first
        call of each MLX kernel compiles it (MLX's CPU backend builds C++, seconds on a fresh
        machine; Metal its pipelines), and meanwhile the lag control would skip every frame the
        user said. The generator (`state`/`restore`) and the codec are put back as they were.
        A generator without them is left cold, and so is one whose caches already hold a prompt
        (PersonaPlex's): saving them would copy its whole KV cache (1.5 GB for a 7B model)."""
        frame = np.zeros(FRAME_SIZE, np.float32)
        codes = np.asarray(self.codec.encode_step(frame)).reshape(-1)
        codes = np.asarray(self.codec.encode_step(frame)).reshape(-1)  # a streaming state's second frame
        save, restore = getattr(self.gen, "state", None), getattr(self.gen, "restore", None)
        if callable(save) and callable(restore) and getattr(self.gen, "position", 0) == 0:
            saved = save()
            try:
                for _ in range(WARM_UP_STEPS):
                    if self._aborted:
                        break
                    _, audio = self.gen.step(codes[: self.n_user])
                    if audio is not None:
                        self.codec.decode_step(np.asarray(audio))
                        break
            finally:
                restore(saved)
        self.codec.reset()

    def push_end_of_input(self, if_open: bool = False) -> None:
        """The speaker's input ends here (a file's end, a push-to-talk release): the partial
        frame is completed with silence and the next frame is the end-of-input marker (its
        audio, silence, still goes through the encoder). Input pushed after it is a new turn.
        if_open: not when the end policy already ended the turn (no speech since its marker)."""
        if self.end_of_input is None:
            raise UsageError("this model has no end-of-input marker (only translation models do)")
        self._raw.put(_END_IF_OPEN if if_open else _END)

    def close_input(self, timeout: float | None = None) -> bool:
        """No more input: let the workers drain what they have, then stop. False if the
        input queue stayed full for `timeout` (the encoder takes no input: stalled, or far
        behind a device that delivered faster than real time)."""
        try:
            self._raw.put(_STOP, timeout=timeout)
        except queue.Full:
            return False
        return True

    def stop(self, timeout: float | None = 10.0) -> None:
        """Drain what is queued, then stop; bounded by `timeout` also when the input queue is
        full and the encoder takes nothing (a Ctrl-C then hung in `close_input`'s put): the
        queued input is then dropped, as by `abort`."""
        if not self._running:
            return
        if not self.close_input(timeout):
            self.abort(timeout)
            return
        for done in self._done:
            done.wait(timeout)
        self._running = False
        _ACTIVE.discard(self)

    def abort(self, timeout: float | None = 10.0) -> bool:
        """Stop now, dropping queued work (Ctrl-C, a failed output): each worker finishes
        the frame it is on and returns to the pool. True if all stopped within `timeout`."""
        self._aborted = True
        if not self._running:
            return True
        while True:  # make room in the bounded raw queue for the stop marker
            try:
                self._raw.get_nowait()
            except queue.Empty:
                break
        for q in (self._raw, self._codes, self._tokens):
            try:
                q.put_nowait(_STOP)
            except queue.Full:  # pragma: no cover - a producer refilled it; the flag still stops it
                pass
        ok = all(done.wait(timeout) for done in self._done)
        self._running = False
        _ACTIVE.discard(self)
        return ok

    def undecoded(self) -> list[np.ndarray]:
        """After `abort`: the audio tokens the LM produced that were not decoded, in order
        (a caller that must keep the audio of every frame answered decodes them itself: the
        codec's decoder state is right after the last frame decoded)."""
        items = list(self._undecoded)
        self._undecoded.clear()
        while True:
            try:
                item = self._tokens.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                items.append(item)
        return [item.payload for item in items]

    def _guard(self, fn):
        def run():
            try:
                fn()
            except BaseException as e:  # surface worker errors to the front end
                self.error = e
                self.failed.set()
                # unblock everyone downstream
                self._codes.put(_STOP)
                self._tokens.put(_STOP)
                self.finished.set()
                with self.output_available:
                    self.output_available.notify_all()

        return run

    # ------------------------------------------------------------------ capture side
    def push_input(self, block: np.ndarray, t_end: float | None = None, wait: bool = False) -> None:
        """From the capture callback: a block of device samples [n] or [n, channels].

        Never blocks (unless `wait`, for offline feeding): if the encoder is so far behind
        that the raw queue is full, the oldest block is dropped (`input_overflows`)."""
        t_end = self.clock() if t_end is None else t_end
        item = (np.array(block, dtype=np.float32, copy=True), t_end)
        if wait:
            self._raw.put(item)
            return
        while True:
            try:
                self._raw.put_nowait(item)
                return
            except queue.Full:
                try:
                    dropped = self._raw.get_nowait()
                    self.stats.input_overflows += 1
                    if dropped is not _STOP:
                        self._dropped_samples += len(dropped[0])
                except queue.Empty:
                    pass

    # ------------------------------------------------------------------ workers
    def _encoder_loop(self) -> None:
        while True:
            item = self._raw.get()
            if item is _STOP or self._aborted:
                self._codes.put(_STOP)
                return
            if item is _END or item is _END_IF_OPEN:
                if item is _END or self.end_policy is None or self.end_policy.open:
                    self._end_of_input()
                self.ends_done += 1
                continue
            block, t_end = item
            mono, bad = silence_non_finite(block.mean(axis=1) if block.ndim == 2 else block)
            self.stats.input_non_finite += bad
            x = self.in_resampler(mono) if self.in_resampler is not None else mono
            held = 0  # samples of the block the echo canceller still holds or delays
            if self.echo is not None:
                self.echo.skip_capture(self._dropped_samples)
                if self.recorder is not None and self.record_raw_mic:
                    self.recorder.add_user(x)
                x = self.echo.process(x, t_end)
                held = self.echo.lag_samples
            frames = self._reframer.push(x)
            for i, frame in enumerate(frames):
                # the frame's last sample was captured this long before the block's end
                behind = (len(frames) - 1 - i) * FRAME_SECONDS + (self._reframer.pending + held) / SAMPLE_RATE
                t_capture = t_end - behind
                if self.recorder is not None and not (self.echo is not None and self.record_raw_mic):
                    self.recorder.add_user(frame)
                marker = self.end_policy is not None and self.end_policy.frame(frame)
                self._encode(frame, t_capture, marker)

    def _encode(self, frame: np.ndarray, t_capture: float, marker: bool = False) -> None:
        """One 24 kHz frame through the codec to the LM's queue; as the end-of-input marker
        (its codes replaced, the codec still advanced over the frame's audio) if `marker`."""
        codes = np.asarray(self.codec.encode_step(frame)).reshape(-1)
        if marker:
            codes = self.end_of_input
            self.stats.end_markers += 1
            self.last_marker_frame = self._frame_index
        self.stats.frames_in += 1
        self._codes.put(_Item(self._frame_index, t_capture, codes, marker))
        self._frame_index += 1

    def _end_of_input(self) -> None:
        """The encoder's side of `push_end_of_input`: the pending partial frame padded with
        silence, then the marker frame (silence underneath)."""
        t = self.clock()
        if self._reframer.pending:
            for frame in self._reframer.push(np.zeros(FRAME_SIZE - self._reframer.pending, np.float32)):
                if self.recorder is not None:
                    self.recorder.add_user(frame)
                self._encode(frame, t)
        if self.end_policy is not None:
            self.end_policy.reset()
        silence = np.zeros(FRAME_SIZE, np.float32)
        if self.recorder is not None:
            self.recorder.add_user(silence)
        self._encode(silence, t, marker=True)

    def _too_late(self, t_capture: float) -> bool:
        if self.max_lag_s is None:
            return False
        # A frame stepped now is heard after the step, up to one playback period and the
        # output latency later; skip it if that would exceed the bound, so the LM never works
        # for output that the playback side would have to drop (its trim counts the latency too).
        recent = list(itertools.islice(reversed(self.stats.step_ms), 20))
        step_s = float(np.median(recent)) / 1000.0 if recent else 0.0
        return self.clock() - t_capture + step_s + self.output_block_s + self.output_latency_s > self.max_lag_s

    def _lm_loop(self) -> None:
        while True:
            item = self._codes.get()
            if item is _STOP or self._aborted:
                self._tokens.put(_STOP)
                return
            if not item.marker and self._too_late(item.t_capture):
                self.stats.frames_skipped += 1
                continue
            t0 = time.perf_counter()
            text, audio = self.gen.step(item.payload[: self.n_user])
            if self.step_delay_s:
                time.sleep(self.step_delay_s)
            self.stats.step_ms.append((time.perf_counter() - t0) * 1000.0)
            self.stats.frames_stepped += 1
            end_of_turn = False
            if item.marker:  # the step reading the marker may answer it at once
                self._awaiting_eos = True
            if self._awaiting_eos and int(text) == TEXT_EOS_ID:  # an EOS before any marker is ignored
                self._awaiting_eos, end_of_turn = False, True
                self.stats.turns_done += 1
                self.last_answer_frame = item.frame
            self.last_step_frame = item.frame
            if self.on_text is not None:
                self.on_text(TextEvent(int(text), self._step, item.frame, item.t_capture, end_of_turn))
            self._step += 1
            if audio is not None:
                self._tokens.put(_Item(item.frame, item.t_capture, np.asarray(audio)))

    def _decoder_loop(self) -> None:
        while True:
            item = self._tokens.get()
            if item is _STOP or self._aborted:
                if item is not _STOP:
                    self._undecoded.append(item)
                self.finished.set()
                with self.output_available:
                    self.output_available.notify_all()
                return
            pcm24 = np.asarray(self.codec.decode_step(item.payload), dtype=np.float32).reshape(-1)
            pcm = self.out_resampler(pcm24) if self.out_resampler is not None else pcm24
            self.stats.frames_out += 1
            self.output.append(_Item(item.frame, item.t_capture, (pcm, pcm24)))
            with self.output_available:
                self.output_available.notify_all()

    # ------------------------------------------------------------------ playback side
    def _record_delay(self, t_capture: float) -> None:
        delay = (self.clock() + self.output_latency_s - t_capture) * 1000.0
        self.stats.last_delay_ms = delay
        self.stats.delays_ms.append(delay)

    def read_output(self, n: int) -> np.ndarray:
        """From the playback callback: exactly `n` device samples (silence when nothing is
        ready). Never blocks; drops frames that would play later than `max_lag_ms`."""
        out = np.zeros(n, np.float32)
        got = 0
        while got < n:
            if self._play_partial is None:
                try:
                    item = self.output.popleft()
                except IndexError:
                    break
                self.last_output_frame = item.frame
                if (
                    self.max_lag_s is not None
                    and self.clock() + self.output_latency_s - item.t_capture > self.max_lag_s
                ):
                    self.stats.frames_trimmed += 1
                    continue
                self._record_delay(item.t_capture)
                self.stats.frames_played += 1
                self._started_output = True
                pcm, pcm24 = item.payload
                if self.recorder is not None:
                    self.recorder.add_model(pcm24)
                self._play_partial = pcm
            take = min(n - got, len(self._play_partial))
            out[got : got + take] = self._play_partial[:take]
            got += take
            rest = self._play_partial[take:]
            self._play_partial = rest if len(rest) else None
        if got < n:
            if self._started_output:
                self.stats.underruns += 1
            if self.recorder is not None:
                silence = int(round((n - got) * SAMPLE_RATE / self.output_rate))
                self.recorder.add_model(np.zeros(silence, np.float32))
        self._settle()
        if self.echo is not None:  # the reference: exactly what the device plays, silence included
            self.echo.add_reference(out, self.clock() + self.output_latency_s)
        return out

    def _settle(self) -> None:
        """A whole frame still waiting after a playback callback means output runs a frame
        ahead of need (e.g. after a slow first step, two answers arrived in one period): the
        delay is a frame longer than necessary for good. If that lasts `settle_s`, drop the
        oldest waiting frame, so the delay returns to its minimum (`frames_settled`)."""
        if self.settle_s is None or not self.output:
            self._ahead_since = None
            return
        now = self.clock()
        if self._ahead_since is None:
            self._ahead_since = now
        elif now - self._ahead_since >= self.settle_s:
            try:
                self.output.popleft()
                self.stats.frames_settled += 1
            except IndexError:
                pass
            self._ahead_since = None

    # ------------------------------------------------------------------ convenience
    def wait_output(self, timeout: float | None = None) -> bool:
        """Block until an output frame is queued or the pipeline finished (for lock-step
        drivers such as file inference); True if output is available."""
        with self.output_available:
            if self.output or self.finished.is_set():
                return bool(self.output)
            self.output_available.wait(timeout)
            return bool(self.output)
