"""Acoustic echo cancellation for the live loop: the microphone hears Moshi's own voice from
the speakers; a canceller removes it before Mimi encodes the microphone, so Moshi can be used
full duplex without headphones. Two cancellers (`--echo-canceller`): `linear` (the default,
audio/echo_filter.py: a frequency-domain Kalman filter and a residual suppressor driven by
its uncertainty, which keep the user's voice intact when both talk) and `aec3` (WebRTC's
AEC3 through livekit's `AudioProcessingModule`, whose suppressor ducks and chops the user
during double talk; no binding exposes its tuning).

Why it is built this way (docs/echo-cancellation.md has the measurements):
- The reference is what the output device received (after resampling, silence included:
  frames the LM skipped or the lag bound dropped are silence on the device's timeline).
  The playback callback only appends it to a deque; all the work happens on the encoder
  thread, which gives the canceller each microphone chunk with the reference that played
  while it was captured.
- Reference and microphone are paired on the devices' clock: each stream is anchored to the
  time its first sample was played / captured (PortAudio's reported latencies included), so
  the canceller only has to find the acoustic delay plus what the latencies got wrong. That
  residual is measured (GCC-PHAT cross-correlation of reference and microphone over 2 s
  windows) and reported; if it falls outside what the canceller covers, the reference is
  re-aligned by it.
- Both work at 24 kHz (AEC3 in 10 ms frames, the linear one in 20 ms blocks) and delay the
  cleaned signal by ~10 ms (block structure, overlap-add), which `lag_samples` reports so
  the pipeline's delay accounting stays honest.
"""

from __future__ import annotations

import collections
import math
import re
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from ..audio.echo_filter import LinearEchoCanceller
from ..audio.fractional import FractionalReader
from ..constants import FRAME_SIZE, SAMPLE_RATE
from ..errors import ConfigError, UsageError
from ..validation import silence_non_finite
from .clock_drift import DriftTracker

CHUNK = SAMPLE_RATE // 100  # 10 ms: AEC3's frame, and the unit of the ERLE meter and delay estimator
AEC3_DELAY = 224  # samples AEC3 delays the cleaned signal at 24 kHz (measured)
MODES = ("auto", "on", "off")
CANCELLERS = ("linear", "aec3")
RECOVERED_DB = 20.0  # live ERLE (0.5 s window) at which the canceller counts as re-converged after a path change
ARMED_WINDOWS = 6  # path changes count once the live ERLE was at RECOVERED_DB for 3 s (not while learning)
CHANGE_GAP_S = 1.0  # a detection within this long of the last one belongs to the same change
# delay windows (2 s of Moshi speaking each) in a row that found no echo of Moshi's voice before
# the linear canceller passes the microphone unchanged (headphones it was not told of, a muted
# speaker): with nothing to learn its filter fits the user's voice and the noise, mixes Moshi's
# voice into the microphone, and its suppressor ducks the user (docs/echo-cancellation.md)
NO_ECHO_WINDOWS = 2
DEFAULT_CANCELLER = "linear"

# Output device names that mean the speaker cannot reach the microphone.
_HEADPHONES = re.compile(
    r"head ?phone|headset|airpods|earpods|earbud|earphone|\bbuds\w*|bluetooth hands-?free", re.IGNORECASE
)


class EchoUnavailable(ConfigError):
    """The echo canceller's library is missing or does not run here."""


def looks_like_headphones(*device_names: str | None) -> bool:
    """True when a device name says headphones/headset (e.g. 'AirPods Pro', 'USB Headset')."""
    return any(n and _HEADPHONES.search(n) for n in device_names)


def resolve_mode(mode: str, output_name: str | None = None) -> tuple[bool, str]:
    """(enabled, why) for --echo-cancel: auto is on unless the output is known headphones."""
    if mode not in MODES:
        raise UsageError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "on":
        return True, "on"
    if mode == "off":
        return False, "off"
    if looks_like_headphones(output_name):
        return False, f"auto: off, output {output_name!r} looks like headphones"
    return True, "auto: on" + (f", output {output_name!r} is not known headphones" if output_name else "")


def _load_apm(noise_suppression: bool, high_pass: bool, auto_gain: bool):
    try:
        from livekit.rtc import AudioFrame
        from livekit.rtc.apm import AudioProcessingModule

        apm = AudioProcessingModule(
            echo_cancellation=True,
            noise_suppression=noise_suppression,
            high_pass_filter=high_pass,
            auto_gain_control=auto_gain,
        )
    except ImportError as e:
        raise EchoUnavailable(
            f"echo cancellation needs livekit's WebRTC audio processing ({e}); install it with: pip install livekit"
        ) from None
    except Exception as e:  # the native library failed to load or start
        raise EchoUnavailable(f"echo cancellation is unavailable here: {type(e).__name__}: {e}") from None
    return apm, AudioFrame


class _Aec3:
    """WebRTC AEC3 (livekit): 10 ms frames, finds delays of 0 to ~500 ms itself."""

    name = "WebRTC AEC3"
    chunk = CHUNK
    delay = AEC3_DELAY
    max_lag_s = 0.4  # beyond this the reference is re-aligned
    pass_without_echo = False  # its own suppressor leaves a microphone without echo alone

    def __init__(self, noise_suppression: bool, high_pass: bool, auto_gain: bool):
        self._apm, self._Frame = _load_apm(noise_suppression, high_pass, auto_gain)

    def process(self, ref: np.ndarray, mic: np.ndarray) -> np.ndarray:
        Frame = self._Frame
        self._apm.process_reverse_stream(Frame(_to_i16(ref), SAMPLE_RATE, 1, CHUNK))
        frame = Frame(_to_i16(mic), SAMPLE_RATE, 1, CHUNK)
        self._apm.process_stream(frame)
        return np.frombuffer(frame.data, np.int16).astype(np.float32) / 32768.0

    def set_delay_ms(self, ms: int) -> None:
        """Tell AEC3 the delay (it estimates its own; livekit < 1.0.x has no such call)."""
        if hasattr(self._apm, "set_stream_delay_ms"):
            self._apm.set_stream_delay_ms(ms)

    def moved(self) -> None:
        """The reference was re-aligned: AEC3 follows by itself."""

    @property
    def path_changed(self) -> bool:
        """AEC3 reports no echo-path changes."""
        return False


class _Linear:
    """audio/echo_filter.py: 20 ms blocks, a 400 ms filter (echoes up to ~200 ms behind the
    reference with 200 ms of reverberation; later ones are re-aligned)."""

    name = "linear: Kalman filter + residual suppressor"
    chunk = 2 * CHUNK
    max_lag_s = 0.2
    pass_without_echo = True  # see NO_ECHO_WINDOWS

    def __init__(self, high_pass: bool):
        self._c = LinearEchoCanceller(
            block=self.chunk, length=int(0.4 * SAMPLE_RATE), rate=SAMPLE_RATE, high_pass=high_pass
        )
        self.delay = self._c.delay

    def process(self, ref: np.ndarray, mic: np.ndarray) -> np.ndarray:
        return self._c.process(ref, mic)

    def set_delay_ms(self, ms: int) -> None:
        """The filter finds the delay within its length by itself."""

    def moved(self) -> None:
        """The reference was re-aligned: the learnt echo path no longer fits."""
        self._c.reset()

    @property
    def path_changed(self) -> bool:
        """The filter detected an abrupt echo-path change in the last block."""
        return self._c.filter.changed


def gcc_phat_lag(
    ref: np.ndarray, mic: np.ndarray, rate: int, min_lag_s: float, max_lag_s: float
) -> tuple[float, float]:
    """Lag (s) by which `mic` follows `ref`, and a confidence (peak over the mean |correlation|).

    PHAT weighting whitens both spectra so the peak is the direct path, not the loudest
    frequencies of the voice or the room's reverberation."""
    n = len(ref) + len(mic)
    nfft = 1 << (n - 1).bit_length()
    R = np.fft.rfft(ref, nfft)
    M = np.fft.rfft(mic, nfft)
    cross = M * np.conj(R)
    cross /= np.abs(cross) + 1e-12
    cc = np.fft.irfft(cross, nfft)
    lo, hi = int(np.floor(min_lag_s * rate)), int(np.ceil(max_lag_s * rate))
    lags = np.arange(lo, hi + 1)
    vals = np.abs(cc[lags % nfft])
    k = int(np.argmax(vals))
    conf = float(vals[k] / (np.mean(vals) + 1e-12))
    return lags[k] / rate, conf


@dataclass
class EchoStats:
    chunks: int = 0  # 10 ms microphone frames cleaned
    reference_missing: int = 0  # reference chunks not (fully) delivered in time (fed as silence)
    capture_gaps: int = 0  # times captured audio went missing (input overflow) and the timeline jumped
    realignments: int = 0  # times the reference was shifted by a measured delay
    device_latency_ms: float = 0.0  # PortAudio's input + output latency
    echo_delay_ms: float = float("nan")  # measured: mic behind the latency-aligned reference
    delay_confidence: float = float("nan")
    delay_estimates_ms: list = field(default_factory=list)
    erle_windows_db: collections.deque = field(default_factory=lambda: collections.deque(maxlen=20_000))
    # echo-path changes the canceller detected: [seconds into the session, seconds until the
    # live ERLE was back at RECOVERED_DB (None: not yet)]
    path_changes: list = field(default_factory=list)
    passed_chunks: int = 0  # 10 ms microphone chunks passed unchanged: no echo found (NO_ECHO_WINDOWS)
    drift_ppm: float = 0.0  # the reference read faster (+) or slower than the microphone's clock
    # per 80 ms of microphone: the encoder thread's wall time in `process`, and its CPU time
    # (the wall time also counts what other threads and processes took from it meanwhile)
    process_ms: collections.deque = field(default_factory=lambda: collections.deque(maxlen=4096))
    process_cpu_ms: collections.deque = field(default_factory=lambda: collections.deque(maxlen=4096))

    @property
    def round_trip_ms(self) -> float:
        return self.device_latency_ms + self.echo_delay_ms

    def summary(self) -> dict:
        def stat(values, fn):
            return float(fn(np.asarray(values))) if len(values) else float("nan")

        return {
            "chunks": self.chunks,
            "reference_missing": self.reference_missing,
            "capture_gaps": self.capture_gaps,
            "realignments": self.realignments,
            "device_latency_ms": self.device_latency_ms,
            "echo_delay_ms": self.echo_delay_ms,
            "round_trip_ms": self.round_trip_ms,
            "delay_confidence": self.delay_confidence,
            "erle_db_median": stat(self.erle_windows_db, np.median),
            "erle_seconds": len(self.erle_windows_db) * _ErleMeter.WINDOW / 100,
            "path_changes": len(self.path_changes),
            "reconverged_s": [d for _, d in self.path_changes],
            "passed_s": self.passed_chunks * CHUNK / SAMPLE_RATE,
            "drift_ppm": self.drift_ppm,
            "process_ms_per_80ms_median": stat(self.process_ms, np.median),
            "process_ms_per_80ms_max": stat(self.process_ms, np.max),
            "process_cpu_ms_per_80ms_median": stat(self.process_cpu_ms, np.median),
        }

    def describe(self) -> str:
        s = self.summary()
        if np.isnan(s["echo_delay_ms"]):  # no echo found: an ERLE figure would mean nothing
            latency = s["device_latency_ms"]  # 0 on a simulated device: no PortAudio to speak of
            parts = [
                "no echo of Moshi found in the microphone"
                + (f" (PortAudio latency {latency:.0f} ms)" if latency and not np.isnan(latency) else "")
            ]
        else:
            latency = s["device_latency_ms"]  # 0 on a simulated device: only the measured part
            parts = [
                f"round trip {s['round_trip_ms']:.0f} ms ("
                + (f"PortAudio {latency:.0f} ms + " if latency and not np.isnan(latency) else "")
                + f"measured {s['echo_delay_ms']:.0f} ms)"
            ]
            if s["erle_seconds"] > 0:
                parts.append(
                    f"ERLE {s['erle_db_median']:.1f} dB (median over {s['erle_seconds']:.0f} s of Moshi speaking)"
                )
        if s["drift_ppm"]:
            parts.append(f"clock drift {s['drift_ppm']:+.0f} ppm followed")
        if s["passed_s"]:
            parts.append(f"microphone passed unchanged for {s['passed_s']:.0f} s without an echo")
        if self.path_changes:
            done = [d for d in s["reconverged_s"] if d is not None]
            n = len(self.path_changes)
            line = f"{n} echo-path change{'s' if n > 1 else ''}"
            if done:
                line += (
                    f", back to {RECOVERED_DB:.0f} dB ERLE in {np.median(done):.1f} s median / {max(done):.1f} s max"
                    if len(done) > 1
                    else f", back to {RECOVERED_DB:.0f} dB ERLE in {done[0]:.1f} s"
                )
            if len(done) < n:
                line += f" ({n - len(done)} not yet)"
            parts.append(line)
        parts.append(
            f"{s['process_cpu_ms_per_80ms_median']:.2f} ms CPU per 80 ms frame "
            f"({s['process_ms_per_80ms_median']:.2f} ms wall)"
        )
        return "echo cancellation: " + ", ".join(parts)


class _ErleMeter:
    """Echo return loss enhancement measured live: microphone vs cleaned energy, over the
    10 ms chunks of 0.5 s windows in which Moshi's voice was playing at least half the time. The user talking
    at the same time lowers it, so the median over windows is reported."""

    WINDOW = 50  # 10 ms chunks
    ACTIVE = 1e-3**2  # reference power above -60 dBFS counts as Moshi speaking

    def __init__(self, out: collections.deque):
        self.out = out
        self._mic = self._clean = 0.0
        self._n = self._active = 0
        self._ref_power: collections.deque = collections.deque(maxlen=100)

    def add(self, ref_power: float, mic: np.ndarray, clean: np.ndarray, delay_chunks: int = 0) -> None:
        """ref_power: the reference's mean power in this chunk; delay_chunks: how many 10 ms
        chunks the echo in `mic` follows the reference."""
        self._n += 1
        self._ref_power.append(ref_power)
        k = min(delay_chunks, len(self._ref_power) - 1)
        if self._ref_power[-1 - k] > self.ACTIVE:
            self._active += 1
            self._mic += float(np.dot(mic, mic))
            self._clean += float(np.dot(clean, clean))
        if self._n == self.WINDOW:
            if self._active >= 0.5 * self.WINDOW and self._mic > 1e-9:
                self.out.append(10.0 * np.log10(self._mic / max(self._clean, 1e-12)))
            self._mic = self._clean = 0.0
            self._n = self._active = 0


class _DelayEstimator:
    """Collects the reference as fed and the raw microphone (decimated to 8 kHz) and, every
    WINDOW_S of Moshi speaking, measures how far the echo lags the reference."""

    DECIMATE = 3
    RATE = SAMPLE_RATE // DECIMATE
    WINDOW_S = 2.0
    MIN_LAG_S, MAX_LAG_S = -0.3, 0.7
    CONFIDENT = 12.0

    def __init__(self):
        self._ref: list[np.ndarray] = []
        self._mic: list[np.ndarray] = []
        self._n = self._active = 0

    def add(self, ref: np.ndarray, ref_power: float, mic: np.ndarray) -> tuple[float, float] | None:
        d = self.DECIMATE
        self._ref.append(ref.reshape(-1, d).sum(axis=1))
        self._mic.append(mic.reshape(-1, d).sum(axis=1))
        self._n += 1
        if ref_power > _ErleMeter.ACTIVE:
            self._active += 1
        if self._n < self.WINDOW_S * 100:
            return None
        result = None
        if self._active >= 0.3 * self._n:
            ref_w, mic_w = np.concatenate(self._ref), np.concatenate(self._mic)
            if float(np.mean(mic_w * mic_w)) > 1e-10:
                result = gcc_phat_lag(ref_w, mic_w, self.RATE, self.MIN_LAG_S, self.MAX_LAG_S)
        self._ref, self._mic = [], []
        self._n = self._active = 0
        return result


class _Anchor:
    """When a stream's first sample played (or was captured), from its callbacks: each block
    implies a start time (its time minus the samples before it). Callbacks run late (a busy
    system) or early (an output buffer being filled at start), so the median is taken."""

    def __init__(self):
        self._t0s: list[float] = []

    def add(self, *t0s: float) -> float:
        """Add one or more start times; the median of all so far."""
        self._t0s.extend(t0s)
        return float(np.median(self._t0s))


class EchoCanceller:
    """Cleans the microphone (24 kHz) of what the output device played.

    add_reference(): from the playback callback, the exact samples the device received at
    `output_rate` and when the first of them plays; never blocks.
    process(): from the encoder thread, a block of microphone samples already at 24 kHz and
    the time its last sample arrived; returns the cleaned samples (whole 10 ms frames; the
    remainder waits for the next block).
    """

    ANCHOR_S = 3.0  # the streams' start times are taken from their first seconds, then fixed
    MAX_WAIT = SAMPLE_RATE // 5  # microphone samples held while their reference is late (then: silence)

    def __init__(
        self,
        *,
        output_rate: int = SAMPLE_RATE,
        input_rate: int = SAMPLE_RATE,
        input_latency_s: float = 0.0,
        output_latency_s: float = 0.0,
        canceller: str = DEFAULT_CANCELLER,
        noise_suppression: bool = False,
        high_pass: bool = True,
        auto_gain: bool = False,
        realign: bool = True,
    ):
        if canceller not in CANCELLERS:
            raise UsageError(f"canceller must be one of {', '.join(CANCELLERS)}, got {canceller!r}")
        if canceller == "aec3":
            self.backend = _Aec3(noise_suppression, high_pass, auto_gain)
        else:
            if noise_suppression or auto_gain:
                raise UsageError('noise suppression and automatic gain are WebRTC\'s: they need canceller="aec3"')
            self.backend = _Linear(high_pass)
        self.output_rate = int(output_rate)
        self.input_rate = int(input_rate)
        self._dropped_seen = 0
        self.input_latency_s = float(input_latency_s)
        self.output_latency_s = float(output_latency_s)
        self.realign = realign
        self.stats = EchoStats(device_latency_ms=1000.0 * (self.input_latency_s + self.output_latency_s))
        self._resample = None
        if self.output_rate != SAMPLE_RATE:
            from ..audio.resample import Resampler

            self._resample = Resampler(self.output_rate, SAMPLE_RATE).process
        self._incoming: collections.deque = collections.deque()  # (device samples, t_play) from the callback
        self._lock = threading.Lock()
        # reference timeline (24 kHz samples since its first played sample)
        self._ref_t0: float | None = None
        self._ref_base = 0  # position of self._ref_buf[0]
        self._ref_buf = np.zeros(0, np.float32)
        self._ref_received = 0  # device-rate samples received (for anchoring)
        # capture timeline (24 kHz samples since its first captured sample)
        self._cap_t0: float | None = None
        self._cap_pos = 0  # position of the next sample given to process()
        self._cap_pending = np.zeros(0, np.float32)
        self._shift = 0  # samples the reference is advanced by (measured re-alignment)
        self._ref_fed = None  # next reference position the canceller gets
        self._anchor_until = None
        self._ref_anchor, self._cap_anchor = _Anchor(), _Anchor()
        self._erle = _ErleMeter(self.stats.erle_windows_db)
        self._delay = _DelayEstimator()
        self._reported_delay_ms = 0
        self._last_change_s: float | None = None
        self._open_change: list | None = None
        self._good_windows = 0  # ERLE windows at RECOVERED_DB since the start or the last re-alignment
        self._no_echo_windows = 0  # delay windows in a row that found no echo
        self._mic_line = np.zeros(self.backend.delay, np.float32)  # the microphone, as late as the cleaned
        self._drift = DriftTracker()
        self._slip = 0.0  # reference samples read beyond the microphone's count (clock drift)
        self._reader = FractionalReader()  # reads the reference between samples (drift)
        self._set_delay(0)

    def set_latencies(self, input_s: float, output_s: float) -> None:
        """PortAudio's input and output latencies (before the streams start)."""
        self.input_latency_s, self.output_latency_s = float(input_s), float(output_s)
        self.stats.device_latency_ms = 1000.0 * (self.input_latency_s + self.output_latency_s)

    # ------------------------------------------------------------------ playback side
    def add_reference(self, played: np.ndarray, t_play: float) -> None:
        """The block the output device just received (mono, output rate); t_play: when its
        first sample reaches the speaker. Called from the audio callback: appends only."""
        self._incoming.append((played, t_play))

    def _drain_reference(self) -> None:
        """Move the blocks the callback handed over onto the reference timeline. The buffer is
        joined once per drain, not once per block: a backlog of k blocks (the encoder thread
        stalled while playback went on) cost k copies of a growing buffer, quadratic in k. The
        anchor's median is likewise taken once per drain (nothing reads it in between)."""
        pieces, t0s = [self._ref_buf], []
        while self._incoming:
            block, t_play = self._incoming.popleft()
            x, _ = silence_non_finite(np.asarray(block, np.float32).reshape(-1))
            if self._anchoring():
                t0s.append(t_play - self._ref_received / self.output_rate)
            self._ref_received += len(x)
            pieces.append(self._resample(x) if self._resample is not None else x)
        if t0s:
            self._ref_t0 = self._ref_anchor.add(*t0s)
        if len(pieces) > 1:
            self._ref_buf = np.concatenate(pieces)
        # keep 1 s of what the canceller took (a re-alignment may move back by up to 0.7 s) and at most 4 s
        keep_from = max(int(self._ref_fed or 0) - SAMPLE_RATE, self._ref_base + len(self._ref_buf) - 4 * SAMPLE_RATE)
        if keep_from > self._ref_base:
            drop = min(keep_from - self._ref_base, len(self._ref_buf))
            self._ref_buf = self._ref_buf[drop:]
            self._ref_base += drop

    def _anchoring(self) -> bool:
        return self._anchor_until is None or time.monotonic() < self._anchor_until

    def _reference(self, start: int, n: int) -> np.ndarray:
        """`n` samples of reference from timeline position `start` (silence outside what arrived)."""
        out = np.zeros(n, np.float32)
        a, b = max(start, self._ref_base), min(start + n, self._ref_base + len(self._ref_buf))
        if b > a:
            out[a - start : b - start] = self._ref_buf[a - self._ref_base : b - self._ref_base]
        if start + n > self._ref_base + len(self._ref_buf) and self._ref_t0 is not None:
            self.stats.reference_missing += 1  # (part of) it never arrived: silence
        return out

    def _reference_between(self, start: float, n: int, step: float) -> np.ndarray:
        """`n` samples of reference read from `start` every `step` samples (clock drift)."""
        positions = start + np.arange(n) * step - self._ref_base
        if start + n * step + self._reader.half > self._ref_base + len(self._ref_buf) and self._ref_t0 is not None:
            self.stats.reference_missing += 1
        return self._reader.read(self._ref_buf, positions)

    # ------------------------------------------------------------------ capture side
    @property
    def algorithmic_delay(self) -> int:
        """Samples the canceller itself delays the cleaned signal (block structure)."""
        return self.backend.delay

    @property
    def lag_samples(self) -> int:
        """How far the newest cleaned sample is behind the newest microphone sample."""
        return self.backend.delay + len(self._cap_pending)

    def process(self, mic: np.ndarray, t_end: float) -> np.ndarray:
        t_start, cpu_start = time.perf_counter(), time.thread_time()
        mic, _ = silence_non_finite(np.asarray(mic, np.float32).reshape(-1))  # never poisons the filter
        with self._lock:
            self._drain_reference()
            self._track_capture(len(mic), t_end)
            x = np.concatenate([self._cap_pending, mic])
            c = self.backend.chunk
            n = 0
            out = []
            while (n + 1) * c <= len(x):
                if not self._reference_ready(c) and len(x) - n * c <= self.MAX_WAIT:
                    break  # the device has not been handed that reference yet: wait for it
                out.append(self._process_chunk(x[n * c : (n + 1) * c]))
                n += 1
            self._cap_pending = x[n * c :]
        if n:
            per_80ms = 1000.0 * FRAME_SIZE / (n * c)
            self.stats.process_ms.append((time.perf_counter() - t_start) * per_80ms)
            self.stats.process_cpu_ms.append((time.thread_time() - cpu_start) * per_80ms)
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def _reference_ready(self, n: int) -> bool:
        """Whether the reference for the next `n` microphone samples has arrived (a reference
        that is read ahead of what was handed to the device, after a re-alignment towards a
        later reference or on a device that reports too little output latency, arrives later)."""
        if self._ref_t0 is None:
            return True
        start = self._ref_position(self._cap_pos)
        if self._ref_fed is not None and abs(start - self._ref_fed) <= CHUNK // 2:
            start = self._ref_fed
        if self._drift.ratio:  # read between samples: the interpolator's taps ahead too
            return math.ceil(start + n * (1.0 + self._drift.ratio)) + self._reader.half <= self._ref_base + len(
                self._ref_buf
            )
        return start + n <= self._ref_base + len(self._ref_buf)

    def _track_capture(self, n: int, t_end: float) -> None:
        """Anchor the capture timeline (see _Anchor)."""
        if self._anchor_until is None:
            self._anchor_until = time.monotonic() + self.ANCHOR_S
        if self._anchoring():
            self._cap_t0 = self._cap_anchor.add(
                t_end - (self._cap_pos + len(self._cap_pending) + n) / SAMPLE_RATE - self.input_latency_s
            )

    def skip_capture(self, dropped_total: int) -> None:
        """`dropped_total`: microphone samples (at the input rate) lost so far before reaching
        the encoder (input overflows); the capture timeline jumps over the new ones."""
        new = dropped_total - self._dropped_seen
        if new > 0:
            self._dropped_seen = dropped_total
            self._cap_pos += int(round(new * SAMPLE_RATE / self.input_rate))
            self.stats.capture_gaps += 1

    def _ref_position(self, cap_pos: int) -> int:
        """Reference position playing when capture position `cap_pos` was recorded."""
        if self._ref_t0 is None:
            return cap_pos + self._shift  # nothing played yet: the reference is silence
        return cap_pos + int(round((self._cap_t0 - self._ref_t0) * SAMPLE_RATE)) + self._shift + int(round(self._slip))

    def _process_chunk(self, mic: np.ndarray) -> np.ndarray:
        n = len(mic)
        start = self._ref_position(self._cap_pos)
        if self._ref_fed is None or abs(start - self._ref_fed) > CHUNK // 2:
            self._ref_fed = start  # first chunk, or the timeline moved (anchor, gap, re-alignment)
        if self._drift.ratio:
            ref = self._reference_between(self._ref_fed, n, 1.0 + self._drift.ratio)
            self._ref_fed += n * (1.0 + self._drift.ratio)
            self._slip += n * self._drift.ratio
        else:
            self._ref_fed = int(round(self._ref_fed))  # (on the sample grid again, should a drift cancel out)
            ref = self._reference(self._ref_fed, n)
            self._ref_fed += n
        line = np.concatenate([self._mic_line, mic])
        self._mic_line = line[n:]
        if self.passing:  # no canceller: it restarts when an echo is found (`_on_delay`)
            clean = line[:n]
            self.stats.passed_chunks += n // CHUNK
        else:
            clean = self.backend.process(ref, mic)
            if self.backend.path_changed and not np.isnan(self.stats.echo_delay_ms):  # (a change needs an echo)
                self._on_path_change()
        self._cap_pos += n
        for i in range(0, n, CHUNK):  # the meters count in 10 ms chunks
            r, m = ref[i : i + CHUNK], mic[i : i + CHUNK]
            self.stats.chunks += 1
            ref_power = float(np.dot(r, r)) / CHUNK
            windows = len(self.stats.erle_windows_db)
            if not self.passing:  # (no echo to measure)
                self._erle.add(ref_power, m, clean[i : i + CHUNK], self.visible_delay_chunks)
            if len(self.stats.erle_windows_db) > windows:
                self._on_erle_window(self.stats.erle_windows_db[-1])
            measured = self._delay.add(r, ref_power, m)
            if measured is not None:
                self._on_delay(*measured)
        return clean

    def _on_path_change(self) -> None:
        if self._good_windows < ARMED_WINDOWS:  # still learning the room (start, re-alignment): not a change
            return
        now = self.stats.chunks * CHUNK / SAMPLE_RATE
        last = self._last_change_s
        self._last_change_s = now
        if last is not None and now - last <= CHANGE_GAP_S:
            if self._open_change is None:  # detected again before the ERLE came back: the same change
                self._open_change = self.stats.path_changes[-1]
                self._open_change[1] = None
            return
        self._open_change = [now, None]
        self.stats.path_changes.append(self._open_change)

    def _on_erle_window(self, erle_db: float) -> None:
        """A 0.5 s window of Moshi speaking was measured: an open path change ends when it is back."""
        if erle_db >= RECOVERED_DB:
            self._good_windows += 1
        if self._open_change is not None and erle_db >= RECOVERED_DB:
            now = self.stats.chunks * CHUNK / SAMPLE_RATE
            self._open_change[1] = round(now - self._open_change[0], 2)
            self._open_change = None

    @property
    def passing(self) -> bool:
        """The microphone passes unchanged: the last NO_ECHO_WINDOWS delay windows found no echo."""
        return self.backend.pass_without_echo and self._no_echo_windows >= NO_ECHO_WINDOWS

    def _on_delay(self, lag_s: float, confidence: float) -> None:
        if confidence < _DelayEstimator.CONFIDENT:
            self._no_echo_windows += 1
            return
        if self._drift.add(self._cap_pos / SAMPLE_RATE, lag_s):
            self.stats.drift_ppm = round(1e6 * self._drift.ratio, 1)
        if self.passing:  # an echo after a stretch without (headphones unplugged): learn the room afresh,
            self.backend.moved()  # as at the start (the filter, fitting nothing for seconds, took 12 s)
            self._good_windows = 0
        self._no_echo_windows = 0
        # the measured lag is what the canceller sees: the echo's delay behind the latency-aligned
        # reference plus the shift already applied
        true_ms = 1000.0 * lag_s - 1000.0 * self._shift / SAMPLE_RATE
        self.stats.delay_estimates_ms.append(round(true_ms, 1))
        self.stats.echo_delay_ms = float(np.median(self.stats.delay_estimates_ms[-5:]))
        self.stats.delay_confidence = confidence
        # the canceller covers echoes from 0 to max_lag_s behind the reference (plus their
        # reverberation); outside that, move the reference so it leads its echo by 40 ms
        if self.realign and not 0.0 <= lag_s <= self.backend.max_lag_s:
            self._shift = int(round((0.04 - self.stats.echo_delay_ms / 1000.0) * SAMPLE_RATE))
            self.stats.realignments += 1
            self._drift.forget()
            self.backend.moved()
            self._good_windows = 0
        visible = int(round(max(0.0, self.stats.echo_delay_ms + 1000.0 * self._shift / SAMPLE_RATE)))
        if visible != self._reported_delay_ms:
            self._set_delay(visible)

    def _set_delay(self, ms: int) -> None:
        self._reported_delay_ms = ms
        self.backend.set_delay_ms(ms)

    @property
    def visible_delay_chunks(self) -> int:
        """The echo's delay behind the reference as fed, in 10 ms chunks (0 until measured)."""
        return int(round(self._reported_delay_ms / 10.0))


def _to_i16(x: np.ndarray) -> bytes:
    return (np.clip(x, -1.0, 32767 / 32768) * 32768.0).astype(np.int16).tobytes()
