"""A simulated room for the echo canceller: synthetic reverberant impulse responses and a
deterministic speech-like signal (used by bench/aec_room.py and the tests, which must not
need a speech synthesizer), plus the energy measures both report."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from moshi_mlx.constants import SAMPLE_RATE


def room_ir(
    delay_ms: float,
    *,
    rt60_s: float = 0.3,
    drr_db: float = 6.0,
    gain: float = 0.5,
    length_s: float | None = None,
    rate: int = SAMPLE_RATE,
    seed: int = 0,
) -> np.ndarray:
    """A speaker-to-microphone impulse response: a direct path of `gain` after `delay_ms`,
    then a diffuse tail (exponentially decaying, low-passed noise) `drr_db` below it in energy
    that decays by 60 dB in `rt60_s`."""
    rng = np.random.default_rng(seed)
    d = int(round(delay_ms * rate / 1000.0))
    n_tail = int((length_s if length_s is not None else rt60_s) * rate)
    t = np.arange(n_tail) / rate
    tail = rng.standard_normal(n_tail) * np.exp(-6.9 * t / rt60_s)
    tail = np.convolve(tail, np.ones(4) / 4.0, mode="same")  # walls absorb the highs
    tail[: int(0.002 * rate)] = 0.0  # first reflection 2 ms after the direct sound
    tail *= np.sqrt(gain**2 / 10 ** (drr_db / 10.0) / np.sum(tail**2))
    h = np.zeros(d + n_tail, np.float32)
    h[d] = gain
    h[d:] += tail
    return h


@functools.lru_cache(maxsize=8)
def speech_like(
    seconds: float,
    *,
    seed: int = 0,
    f0: tuple[float, float] = (100.0, 180.0),
    rate: int = SAMPLE_RATE,
    level_db: float = -20.0,
) -> np.ndarray:
    """A voice-like test signal: a harmonic source whose pitch glides, shaped by moving
    formants, in syllables (~4 per second) separated by short pauses, with noise bursts for
    fricatives. Not speech, but broadband, non-stationary and pitched like it."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    # syllable envelope
    env = np.zeros(n)
    pos = int(0.05 * rate)
    while pos < n:
        syl = int(rng.uniform(0.12, 0.3) * rate)
        gap = int(rng.uniform(0.03, 0.15) * rate) if rng.random() > 0.15 else int(rng.uniform(0.3, 0.6) * rate)
        e = np.sin(np.linspace(0, np.pi, min(syl, n - pos))) ** 0.7
        env[pos : pos + len(e)] = e * rng.uniform(0.5, 1.0)
        pos += syl + gap
    # pitch contour and harmonics weighted by two moving formants
    f0_t = np.interp(t, np.linspace(0, seconds, max(2, int(seconds * 3))), rng.uniform(*f0, max(2, int(seconds * 3))))
    phase = 2 * np.pi * np.cumsum(f0_t) / rate
    formants = [
        (
            np.interp(
                t, np.linspace(0, seconds, max(2, int(seconds * 4))), rng.uniform(lo, hi, max(2, int(seconds * 4)))
            ),
            bw,
        )
        for lo, hi, bw in ((300, 800, 120), (900, 2300, 200), (2400, 3200, 300))
    ]
    x = np.zeros(n)
    coarse = np.arange(0, n, rate // 100)  # harmonic amplitudes change slowly: every 10 ms
    for k in range(1, int(4000 / f0[0])):
        fk = k * f0_t[coarse]
        amp = sum(np.exp(-0.5 * ((fk - fc[coarse]) / bw) ** 2) * w for (fc, bw), w in zip(formants, (1.0, 0.6, 0.3)))
        amp = amp + 0.02 / k
        x += np.interp(np.arange(n), coarse, np.where(fk < rate / 2 - 500, amp, 0.0)) * np.sin(k * phase)
    # fricatives: high-passed noise on some syllable edges
    hiss = np.diff(rng.standard_normal(n + 1)) * 0.15
    hiss_env = np.convolve((rng.random(n) < 3.0 / rate).astype(float), np.hanning(int(0.08 * rate)), mode="same")
    x = x * env + hiss * np.clip(hiss_env, 0, 1)
    x *= 10 ** (level_db / 20.0) / (np.sqrt(np.mean(x[env > 0.1] ** 2)) + 1e-12)
    x = x.astype(np.float32)
    x.setflags(write=False)  # cached: shared by every caller
    return x


def convolve(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Full linear convolution through the FFT (long responses, long signals)."""
    n = len(x) + len(h) - 1
    nfft = 1 << (n - 1).bit_length()
    return np.fft.irfft(np.fft.rfft(x, nfft) * np.fft.rfft(h, nfft), nfft)[:n].astype(np.float32)


def energy_db(x: np.ndarray) -> float:
    return float(10.0 * np.log10(np.mean(np.square(x, dtype=np.float64)) + 1e-20))


def ratio_db(a: np.ndarray, b: np.ndarray) -> float:
    """10 log10(energy(a) / energy(b))."""
    return float(
        10.0
        * np.log10((np.sum(np.square(a, dtype=np.float64)) + 1e-20) / (np.sum(np.square(b, dtype=np.float64)) + 1e-20))
    )


SPEED_OF_SOUND = 343.0


@dataclass(frozen=True)
class Shoebox:
    """A rectangular room (dims) with a loudspeaker (source) and a microphone (mic), in metres."""

    dims: tuple[float, float, float]
    source: tuple[float, float, float]
    mic: tuple[float, float, float]


def _pyroomacoustics():
    try:
        import pyroomacoustics
    except ImportError:
        raise SystemExit("shoebox rooms need pyroomacoustics: pip install -e '.[bench]'") from None
    return pyroomacoustics


@functools.lru_cache(maxsize=64)
def _shoebox_rir(box: Shoebox, absorption: float, max_order: int, mic: tuple, rate: int) -> np.ndarray:
    """The image-source response at `mic` (cached: each moved response is scaled by the unmoved one;
    callers must not modify it)."""
    pra = _pyroomacoustics()
    room = pra.ShoeBox(
        list(box.dims), fs=rate, materials=pra.Material(absorption), max_order=max_order, air_absorption=True
    )
    room.add_source(list(box.source))
    room.add_microphone(list(mic))
    room.compute_rir()
    return np.asarray(room.rir[0][0], np.float64)


@functools.lru_cache(maxsize=64)
def _absorption(box: Shoebox, rt60_s: float, rate: int) -> tuple[float, int]:
    """The walls' absorption (and image order) that give the response a measured RT60 of about
    `rt60_s`: Sabine's formula, which assumes a diffuse field, gives a shoebox of specular walls
    a longer decay, so the target is corrected once by what the first try measured."""
    pra = _pyroomacoustics()
    target = rt60_s
    for _ in range(2):
        absorption, order = pra.inverse_sabine(min(target, 3.0), list(box.dims))
        order = min(int(order), 80)
        h = _shoebox_rir(box, absorption, order, box.mic, rate)
        measured = float(pra.experimental.measure_rt60(h, fs=rate))
        target *= rt60_s / max(measured, 1e-3)
    return float(absorption), order


@functools.lru_cache(maxsize=64)
def shoebox_ir(
    box: Shoebox,
    rt60_s: float,
    *,
    move_m: tuple[float, float, float] = (0.0, 0.0, 0.0),
    gain: float = 0.5,
    delay_ms: float = 0.0,
    rate: int = SAMPLE_RATE,
) -> np.ndarray:
    """The image-source response of `box` (pyroomacoustics: specular walls, air absorption),
    a room geometry unlike `reflective_room_ir`'s (reflections grow denser with time, arrive
    from the walls' directions, the direct path falls with distance), for checking that the
    canceller was not fitted to that model. The microphone is moved by `move_m`; the response
    is scaled so that the unmoved one's energy is 2 x gain^2 (the same room moved keeps its
    scale) and delayed by `delay_ms` (the converters')."""
    absorption, order = _absorption(box, rt60_s, rate)
    h0 = _shoebox_rir(box, absorption, order, box.mic, rate)
    mic = tuple(float(m + d) for m, d in zip(box.mic, move_m))
    h = h0 if mic == tuple(box.mic) else _shoebox_rir(box, absorption, order, mic, rate)
    h = h * (gain * np.sqrt(2.0 / np.sum(h0**2)))
    return np.concatenate([np.zeros(int(round(delay_ms * rate / 1000.0))), h]).astype(np.float32)


def reflective_room_ir(
    delay_ms: float,
    *,
    rt60_s: float = 0.3,
    drr_db: float = 6.0,
    gain: float = 0.5,
    move_m: tuple[float, float, float] = (0.0, 0.0, 0.0),
    density_per_s: float = 6000.0,
    rate: int = SAMPLE_RATE,
    seed: int = 0,
) -> np.ndarray:
    """Like `room_ir`, but the tail is made of discrete reflections, each arriving from its own
    direction, so that moving the microphone by `move_m` (metres) changes the response the way
    a moved laptop lid or hand does: every path's length changes by the move's projection on
    its direction (high frequencies scrambled, low ones nearly unchanged). Reflections are
    rendered with windowed-sinc fractional delays; the same `seed` gives the same room."""
    rng = np.random.default_rng(seed)
    n_ref = int(density_per_s * rt60_s)
    t = rng.uniform(0.002, rt60_s, n_ref)
    amp = rng.standard_normal(n_ref) * np.exp(-6.9 * t / rt60_s)
    dirs = rng.standard_normal((n_ref + 1, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    shift = -(dirs @ np.asarray(move_m, float)) / SPEED_OF_SOUND  # seconds, per path (row 0: direct)
    d = delay_ms / 1000.0
    n = int((d + rt60_s + 0.01) * rate) + 16

    def render(times, amps):
        h = np.zeros(n + 16)
        pos = np.asarray(times) * rate
        base = np.floor(pos).astype(int)
        for j in range(-7, 9):
            x = pos - (base + j)
            w = np.sinc(x) * (0.5 + 0.5 * np.cos(np.pi * x / 8.0))
            np.add.at(h, base + j, amps * w)
        return h[:n]

    tail = render(d + t + shift[1:], amp)
    tail = np.convolve(tail, np.ones(4) / 4.0, mode="same")  # walls absorb the highs
    tail *= np.sqrt(gain**2 / 10 ** (drr_db / 10.0) / np.sum(tail**2))
    return (render(np.array([d + shift[0]]), np.array([gain])) + tail).astype(np.float32)
