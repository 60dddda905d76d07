"""An echo canceller that leaves the near-end voice alone: a partitioned-block frequency-domain
Kalman filter (the linear stage) and a gentle residual echo suppressor, in vectorised numpy.

Why (docs/echo-cancellation.md has the measurements): WebRTC's AEC3 removes echo deeply but
its non-linear suppressor ducks and chops the user by 3-11 dB whenever Moshi talks over
them, and no maintained binding exposes its tuning. Here the echo is removed by
subtracting a linear estimate of it, which the user's voice does not disturb:

- `KalmanEchoFilter`: the echo path as P partitions of `block` taps in the frequency
  domain (PBFDAF, the structure of Speex's MDF and AEC3's linear stage), adapted by the
  diagonalised frequency-domain Kalman filter (Enzner & Vary 2006; Kuech et al. 2014). Its
  step size per bin and partition is the state uncertainty over (echo-estimate uncertainty
  + observed error power): when the user talks, the error power rises and adaptation slows
  by itself, so double talk needs no detector and does not make the filter diverge; the
  uncertainty grows back with the filter's own energy, so it follows a changed echo path.
- `ResidualSuppressor`: what the linear filter has not learned yet (the first seconds, a
  changed path) is attenuated per frequency by a spectral gain from the residual estimate
  leak x |echo estimate|^2, the leak measured per band as the regression of error power on
  echo-estimate power (Valin 2007; the user's voice is uncorrelated with the echo estimate,
  so double talk does not inflate it much). The gain is 1 where the error is well above the
  residual estimate (the user speaking) and never below `floor_db`.

Signals are float32 at 24 kHz; `LinearEchoCanceller.process` takes exactly `block` samples
of the reference (what the speaker played, aligned so that its echo follows within the
filter's length) and of the microphone, and returns `block` cleaned samples, `delay`
samples late (the suppressor's overlap-add).
"""

from __future__ import annotations

import numpy as np


def _check(block: int, ref: np.ndarray, mic: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ref = np.asarray(ref, np.float32).reshape(-1)
    mic = np.asarray(mic, np.float32).reshape(-1)
    if len(ref) != block or len(mic) != block:
        raise ValueError(f"the echo canceller takes exactly {block} samples of reference and microphone "
                         f"per call, got {len(ref)} and {len(mic)}")
    return ref, mic


class KalmanEchoFilter:
    """Partitioned-block frequency-domain Kalman filter. `length` taps, rounded up to whole
    blocks; `process` returns the error (microphone minus echo estimate) and the estimate.

    q: process noise, as a fraction of each coefficient's energy per block (how fast the
    filter may believe the echo path changes); psi: weight of the observed error power in
    the step size's denominator (larger: more cautious in double talk, slower to converge)."""

    def __init__(self, block: int, length: int, *, q: float = 3e-3, psi: float = 1.0, p0: float = 1.0, pdec: float = 0.5):
        if block < 16 or length < block:
            raise ValueError(f"need block >= 16 and length >= block, got block={block}, length={length}")
        self.block = int(block)
        self.partitions = -(-int(length) // self.block)
        self.length = self.partitions * self.block
        self.q, self.psi, self.p0, self.pdec = float(q), float(psi), float(p0), float(pdec)
        k = self.block + 1
        self._X = np.zeros((self.partitions, k), np.complex64)  # reference spectra, newest first
        self._X2 = np.zeros((self.partitions, k), np.float32)  # |X|^2
        self._W = np.zeros((self.partitions, k), np.complex64)
        self._P = np.full((self.partitions, k), self.p0, np.float32)
        self._prev = np.zeros(self.block, np.float32)
        self._zeros = np.zeros(self.block, np.float32)

    def reset(self) -> None:
        """Forget the echo path (the reference was moved against the microphone)."""
        self._W[:] = 0
        self._P[:] = self.p0

    def process(self, ref: np.ndarray, mic: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        b = self.block
        ref, mic = _check(b, ref, mic)
        x0 = np.fft.rfft(np.concatenate([self._prev, ref]))
        self._prev = ref
        self._X[1:] = self._X[:-1]
        self._X[0] = x0
        self._X2[1:] = self._X2[:-1]
        self._X2[0] = x0.real ** 2 + x0.imag ** 2
        y = np.fft.irfft(np.einsum("pk,pk->k", self._X, self._W))[b:].astype(np.float32)
        e = mic - y
        E = np.fft.rfft(np.concatenate([self._zeros, e]))
        e2 = (E.real ** 2 + E.imag ** 2).astype(np.float32)
        mu = self._P / (np.einsum("pk,pk->k", self._X2, self._P) + self.psi * e2 + 1e-10)
        gt = np.fft.irfft(mu * np.conj(self._X) * E.astype(np.complex64), axis=-1)
        gt[:, b:] = 0.0  # the gradient constraint: a linear, not circular, convolution
        self._W += np.fft.rfft(gt, axis=-1).astype(np.complex64)
        self._P *= 1.0 - self.pdec * mu * self._X2
        self._P += self.q * (self._W.real ** 2 + self._W.imag ** 2)
        return e, y


class ResidualSuppressor:
    """Spectral gain on the linear filter's error (frames of 2 x hop, sqrt-Hann, 50% overlap:
    delays by `hop` samples). Gain = max(floor, 1 - beta * leak * |Y|^2 / |E|^2) per bin."""

    BAND_EDGES_HZ = (500.0, 1000.0, 2000.0, 4000.0, 8000.0)

    def __init__(self, hop: int, *, rate: int = 24_000, beta: float = 2.5, floor_db: float = -20.0,
                 high_pass_hz: float = 0.0):
        self.hop = int(hop)
        n = 2 * self.hop
        self._win = np.sqrt(0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)).astype(np.float32)
        self._e = np.zeros(n, np.float32)
        self._y = np.zeros(n, np.float32)
        self._ola = np.zeros(self.hop, np.float32)
        freqs = np.arange(self.hop + 1) * rate / n
        self._band = np.digitize(freqs, self.BAND_EDGES_HZ)
        self._nb = len(self.BAND_EDGES_HZ) + 1
        self._keep = (freqs >= high_pass_hz).astype(np.float32)  # 0 below the high-pass corner
        self.beta, self.floor = float(beta), float(10 ** (floor_db / 20.0))
        self._e_avg = np.zeros(self.hop + 1)
        self._y_avg = np.zeros(self.hop + 1)
        self._pey = np.zeros(self._nb)
        self._pyy = np.full(self._nb, 1e-12)
        self.leak = np.ones(self._nb)  # residual echo over echo estimate, per band

    def process(self, e: np.ndarray, y: np.ndarray) -> np.ndarray:
        h = self.hop
        self._e[:h], self._e[h:] = self._e[h:], e
        self._y[:h], self._y[h:] = self._y[h:], y
        E = np.fft.rfft(self._win * self._e)
        Y = np.fft.rfft(self._win * self._y)
        pe, py = E.real ** 2 + E.imag ** 2, Y.real ** 2 + Y.imag ** 2
        # leak: regression of the error's power fluctuations on the echo estimate's (Valin 2007)
        de, dy = pe - self._e_avg, py - self._y_avg
        self._e_avg += 0.35 * de
        self._y_avg += 0.35 * dy
        nb, band = self._nb, self._band
        pyy = np.sqrt(np.bincount(band, dy * dy, nb)) + 1e-12
        pey = np.bincount(band, de * dy, nb) / pyy
        see = np.bincount(band, pe, nb) + 1e-12
        alpha = np.minimum(0.05 * np.bincount(band, py, nb), 0.3 * see) / see  # learn while echo dominates
        self._pey += alpha * (pey - self._pey)
        self._pyy = np.maximum(self._pyy + alpha * (pyy - self._pyy), 1e-12)
        self.leak = np.clip(self._pey / self._pyy, 0.005, 1.0)
        gain = np.maximum(self.floor, 1.0 - self.beta * self.leak[band] * py / (pe + 1e-12)) * self._keep
        out = np.fft.irfft(gain * E).astype(np.float32) * self._win
        res = self._ola + out[:h]
        self._ola = out[h:]
        return res


class LinearEchoCanceller:
    """KalmanEchoFilter then ResidualSuppressor: `block` samples in, `block` out, `delay` late."""

    def __init__(self, *, block: int = 480, length: int = 9600, rate: int = 24_000, high_pass: bool = True,
                 suppress: bool = True, filter_kw: dict | None = None, suppressor_kw: dict | None = None):
        self.block = int(block)
        self.filter = KalmanEchoFilter(block, length, **(filter_kw or {}))
        self.hop = self.block // 2
        self.suppressor = (ResidualSuppressor(self.hop, rate=rate, high_pass_hz=80.0 if high_pass else 0.0,
                                              **(suppressor_kw or {})) if suppress else None)
        self.delay = self.hop if suppress else 0

    def reset(self) -> None:
        self.filter.reset()

    def process(self, ref: np.ndarray, mic: np.ndarray) -> np.ndarray:
        e, y = self.filter.process(ref, mic)
        if self.suppressor is None:
            return e
        h = self.hop
        return np.concatenate([self.suppressor.process(e[i:i + h], y[i:i + h]) for i in range(0, self.block, h)])
