"""An echo canceller that leaves the near-end voice alone: a partitioned-block frequency-domain
Kalman filter (the linear stage) and a residual echo suppressor driven by the filter's own
uncertainty, in vectorised numpy.

Why (docs/echo-cancellation.md has the measurements): WebRTC's AEC3 removes echo deeply but
its non-linear suppressor ducks and chops the user whenever Moshi talks over them, and no
maintained binding exposes its tuning. Here the echo is removed by subtracting a linear
estimate of it, which the user's voice does not disturb, and what the filter has not learnt
yet is attenuated only where the filter itself says it is unsure:

- `KalmanEchoFilter`: the echo path as P partitions of `block` taps in the frequency
  domain (PBFDAF, the structure of Speex's MDF and AEC3's linear stage), adapted by the
  diagonalised frequency-domain Kalman filter (Enzner & Vary 2006; Kuech et al. 2014). Its
  step size per bin and partition is the state uncertainty over (echo-estimate uncertainty
  + observed error power): when the user talks, the error power rises and adaptation slows
  by itself, so double talk needs no detector and does not make the filter diverge; the
  uncertainty grows back with the filter's own energy, so it follows a slowly changing path.
- Its path-change detector (audio/path_change.py, `PathChangeDetector`, settings
  `PathChange`): an abrupt change (the lid or the microphone moved by centimetres) leaves the
  converged filter's uncertainty small, so on its own it re-learns for seconds. The detector
  sees the change in the error's correlation with the echo estimate; the filter then raises
  its state uncertainty where the detector says (fast re-learning), adds the echo the change
  leaves to its residual estimate, and adapts faster while the change dominates the error.
- `ResidualSuppressor`: the Kalman filter's state uncertainty times the reference's power is
  its own estimate of the echo it leaves (large while it learns, small once it has, and not
  inflated by the user's voice). Each bin of the error is multiplied by
  max(floor, 1 - beta * residual / error power), the error power smoothed over a few blocks:
  deep while the filter is learning or where only echo is left, ~1 where the user's voice
  dominates the error.

Signals are float32 at 24 kHz; `LinearEchoCanceller.process` takes exactly `block` samples
of the reference (what the speaker played, aligned so that its echo follows within the
filter's length) and of the microphone, and returns `block` cleaned samples, `delay`
samples late (the suppressor's overlap-add).
"""

from __future__ import annotations

import numpy as np

from ..constants import SAMPLE_RATE

# PathChange is this module's too: KalmanEchoFilter takes it, and callers import it from here
from .path_change import PathChange, PathChangeDetector

__all__ = ["KalmanEchoFilter", "LinearEchoCanceller", "PathChange", "ResidualSuppressor"]


def _check(block: int, ref: np.ndarray, mic: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ref = np.asarray(ref, np.float32).reshape(-1)
    mic = np.asarray(mic, np.float32).reshape(-1)
    if len(ref) != block or len(mic) != block:
        raise ValueError(
            f"the echo canceller takes exactly {block} samples of reference and microphone "
            f"per call, got {len(ref)} and {len(mic)}"
        )
    return ref, mic


class _NewestFirst:
    """The last `rows` rows pushed, newest first, as one contiguous array (`rows_`): a buffer of
    twice the rows written backwards and copied back once every `rows` pushes, so a push does
    not shift every row (the filter pushes one spectrum per block into 20 partitions)."""

    def __init__(self, rows: int, cols: int, dtype):
        self._buf = np.zeros((2 * rows, cols), dtype)
        self._rows = self._head = rows
        self.rows_ = self._buf[rows:]

    def push(self, row: np.ndarray) -> None:
        n = self._rows
        if self._head == 0:
            self._buf[n:] = self._buf[:n]
            self._head = n
        self._head -= 1
        self._buf[self._head] = row
        self.rows_ = self._buf[self._head : self._head + n]


class KalmanEchoFilter:
    """Partitioned-block frequency-domain Kalman filter. `length` taps, rounded up to whole
    blocks; `process` returns the error (microphone minus echo estimate) and the estimate;
    afterwards `residual` and `error_power` (per bin of the 2 x block FFT) are the filter's
    estimate of the echo it leaves and the error's power, `changed` whether its detector saw
    the echo path change in that block, `worse` whether the estimate added echo.

    q: process noise, as a fraction of each coefficient's energy per block (how fast the
    filter may believe the echo path changes; with the detector, only while a change is held
    or the estimate slides, else its `settled_q`); psi: weight of the observed error power in
    the step size's denominator (larger: more cautious in double talk, slower to converge);
    constrain: partitions whose gradient constraint is applied per block (a rotating subset,
    as in Speex's MDF: the rest are constrained a few blocks later; cheaper, and the same
    figures on bench/aec_room.py); path_change: the detector's settings (None: no detector,
    the filter re-learns a changed path at the pace of q); late: weight of the
    late-reverberation estimate in `residual` (0: off)."""

    def __init__(
        self,
        block: int,
        length: int,
        *,
        q: float = 0.0015,
        psi: float = 1.0,
        p0: float = 10.0,
        constrain: int = 4,
        path_change: PathChange | None = PathChange(),
        late: float = 2.0,
    ):
        if block < 16 or length < block:
            raise ValueError(f"need block >= 16 and length >= block, got block={block}, length={length}")
        self.block = int(block)
        self.partitions = -(-int(length) // self.block)
        self.length = self.partitions * self.block
        self.q, self.psi, self.p0 = float(q), float(psi), float(p0)
        self.worse = False
        self.constrain = max(1, min(int(constrain), self.partitions))
        self._rotation = 0
        k = self.block + 1
        self._Xs = _NewestFirst(self.partitions, k, np.complex64)  # reference spectra
        self._X2s = _NewestFirst(self.partitions, k, np.float32)  # |X|^2
        self._W = np.zeros((self.partitions, k), np.complex64)
        self._P = np.full((self.partitions, k), self.p0, np.float32)
        self._frame = np.zeros(2 * self.block, np.float32)  # the last two blocks of reference
        self._padded = np.zeros((2, 2 * self.block), np.float32)  # zeros, then the error / estimate
        self.residual = np.zeros(k, np.float32)
        self.error_power = np.zeros(k, np.float32)
        self.detector = PathChangeDetector(path_change, self.block) if path_change is not None else None
        self.late = late  # weight of the late-reverberation estimate in `residual` (0: off)
        self._late = np.zeros(k, np.float32)  # echo beyond the filter's span, per bin
        self._w2 = np.zeros((self.partitions, k), np.float32)  # |W|^2 of the coefficients the block starts with
        self._uncertain = float("inf")  # the last block's expected error over its estimate's power

    def reset(self) -> None:
        """Forget the echo path (the reference was moved against the microphone)."""
        self._W[:] = 0
        self._P[:] = self.p0
        self._late[:] = 0.0
        self._w2[:] = 0.0
        self._uncertain = float("inf")
        if self.detector is not None:
            self.detector.reset()

    def process(self, ref: np.ndarray, mic: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        b = self.block
        ref, mic = _check(b, ref, mic)
        self._frame[:b] = self._frame[b:]
        self._frame[b:] = ref
        x0 = np.fft.rfft(self._frame)
        self._Xs.push(x0)
        leaving = self._X2[-1].copy()
        self._X2s.push(x0.real**2 + x0.imag**2)
        y = np.fft.irfft(np.einsum("pk,pk->k", self._X, self._W))[b:].astype(np.float32)
        e = mic - y
        ee, mm, yy = float(np.dot(e, e)), float(np.dot(mic, mic)), float(np.dot(y, y))
        # the estimate adds echo (the path changed under the filter): e = mic - y has the energy
        # of both; a good estimate leaves |e|^2 = |mic|^2 - |y|^2, double talk or not
        self.worse = ee > mm + 0.5 * yy and yy > 0.1 * mm
        det = self.detector
        # the error's spectrum, and the estimate's for the detector, in one call (zero-padded)
        self._padded[0, b:], self._padded[1, b:] = e, y
        E, Y = np.fft.rfft(self._padded)
        e2 = E.real**2 + E.imag**2
        if det is not None:
            y2 = det.observe(E, y, self._uncertain, Y=Y, e2=e2)
            if det.gain is not None:  # the volume changed: the same path at its new level
                self._W *= np.float32(det.gain)
                self._w2 *= np.float32(det.gain**2)
            if det.changed:  # re-learn fast, most where the path has most energy
                self._P = np.maximum(self._P, det.boost * self._w2)
        xp = np.einsum("pk,pk->k", self._X2, self._P)  # expected |echo error|^2 from the state's uncertainty
        if det is not None:  # the next block's detector reads from it whether the filter has settled
            self._uncertain = float(xp.sum()) / (float(y2.sum()) + 1e-20)
        self.residual = 0.5 * xp  # half of the frame is the block's error
        if self.late:
            self.residual = self.residual + self.late * 0.5 * self._late_echo(leaving)
        if det is not None:  # plus what a changed path leaves, until re-learnt
            if det.changed_recently:
                self.residual = det.add_to(self.residual, self._changed_echo_power(y2), y2)
            self.residual = det.at_least_wrong(self.residual)  # and what a change measurably leaves
            det.record_levels(e2, y2, self.residual)
        self.error_power = e2
        fast = det.fast if det is not None else 0.0
        psi = self.psi / (1.0 + det.settings.fast_psi * fast) if fast else self.psi
        mu = self._P / (xp + psi * e2 + 1e-10)
        self._W += mu * np.conj(self._X) * E
        # the gradient constraint (a linear, not circular, convolution) on a rotating subset:
        # partitions rotation, rotation + step, ... (rotation < step, so a strided slice)
        step = self.partitions // self.constrain
        idx = slice(self._rotation, self._rotation + self.constrain * step, step)
        self._rotation = (self._rotation + 1) % step
        wt = np.fft.irfft(self._W[idx], axis=-1)
        wt[:, b:] = 0.0
        self._W[idx] = np.fft.rfft(wt, axis=-1)
        self._P *= 1.0 - 0.5 * mu * self._X2
        q = self.q
        if det is not None and det.settings.settled_q and not det.changed_recently:  # the path is where it was
            q = det.settings.settled_q + (q - det.settings.settled_q) * det.sliding()
        if fast:
            q += det.settings.fast_q * fast
        self._w2 = self._W.real**2 + self._W.imag**2  # also the next block's, until its update
        self._P += q * self._w2
        return e, y

    @property
    def _X(self) -> np.ndarray:
        """The reference's spectra in the filter's span, newest first (partitions x bins)."""
        return self._Xs.rows_

    @property
    def _X2(self) -> np.ndarray:
        """|_X|^2."""
        return self._X2s.rows_

    def _changed_echo_power(self, y2: np.ndarray) -> np.ndarray:
        """The echo's power per bin once its path has changed. A moved microphone changes the
        path's phases, not the room's energy, so the new echo carries about the old path's
        incoherent power sum_p |W_p|^2 |X_p|^2 / 2 (the half: the block is half of the FFT
        frame); the old estimate's own |Y|^2 falls far below it where its partitions cancel,
        as at an onset (y2: |Y|^2)."""
        return np.maximum(y2, 0.5 * np.einsum("pk,pk->k", self._X2, self._w2))

    def _late_echo(self, leaving: np.ndarray) -> np.ndarray:
        """The echo beyond the filter's span: the reverberation the last partition ends on
        decays on at the rate the last partitions show, driven by the reference that leaves
        the span (a power-domain continuation of the filter, as AEC3's reverb model)."""
        w2 = self._w2
        p = self.partitions
        h = max(1, p // 2)
        tail, mid = float(w2[p - 4 :].sum()), float(w2[h - 2 : h + 2].sum())
        r = min(0.95, (tail / (mid + 1e-20)) ** (1.0 / max(1, p - 2 - h))) if mid > 0 else 0.0
        self._late = r * (self._late + w2[-1] * leaving)
        return self._late

    def floor(self, floor: float) -> float:
        """The suppressor's floor, deeper after a path change that explained the error."""
        return floor if self.detector is None else self.detector.floor(floor)

    @property
    def changed(self) -> bool:
        """A path change was detected in the last block."""
        return self.detector is not None and self.detector.changed

    @property
    def changed_recently(self) -> bool:
        """A detected change still holds a residual (until its hold has decayed)."""
        return self.detector is not None and self.detector.changed_recently


class ResidualSuppressor:
    """Spectral gain on the linear filter's error, frames of 2 x hop (sqrt-Hann, 50% overlap:
    delays by `hop` samples). Gain per bin = max(floor, 1 - beta * residual / error power),
    from the Kalman filter's estimates (set once per filter block by `update`). The error
    power is smoothed over blocks (`smooth` per block, never under the block's own): one
    block's power per bin scatters widely about its mean, and the user's voice in a bin that
    happened to dip was cut as if it were echo; steadier, the gain can be stronger (`beta`)
    for the same user level (docs/echo-cancellation.md, session 11)."""

    def __init__(
        self,
        hop: int,
        *,
        rate: int = SAMPLE_RATE,
        beta: float = 0.7,
        smooth: float = 0.5,
        floor_db: float = -20.0,
        high_pass_hz: float = 0.0,
    ):
        self.hop = int(hop)
        n = 2 * self.hop
        self._win = np.sqrt(0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)).astype(np.float32)
        self._e = np.zeros(n, np.float32)
        self._ola = np.zeros(self.hop, np.float32)
        self._keep = (np.arange(self.hop + 1) * rate / n >= high_pass_hz).astype(np.float32)  # the high-pass
        self.beta, self.floor = float(beta), float(10 ** (floor_db / 20.0))
        self.smooth = float(smooth)
        self.gain = self._keep.copy()
        self._power: np.ndarray | None = None  # the smoothed error power (None: no block yet)

    def reset(self) -> None:
        self._power = None

    def update(self, residual: np.ndarray, error_power: np.ndarray, floor: float | None = None) -> None:
        """Estimates on a frequency grid `factor` times finer than the suppressor's."""
        factor = (len(residual) - 1) // self.hop
        e2 = error_power[::factor]  # smoothed on the suppressor's grid only: per bin, the same
        p = self._power
        self._power = e2 if p is None else self.smooth * p + (1.0 - self.smooth) * e2
        ratio = residual[::factor] / (np.maximum(self._power, e2) + 1e-10)
        floor = self.floor if floor is None else floor
        self.gain = (np.maximum(floor, 1.0 - self.beta * ratio) * self._keep).astype(np.float32)

    def process(self, e: np.ndarray) -> np.ndarray:
        """`e`: a whole number of hops; its frames go through one FFT call (the per-call cost of
        numpy's FFT is most of a 2 x hop frame's)."""
        h = self.hop
        if len(e) == 0 or len(e) % h:
            raise ValueError(f"the suppressor takes a whole number of {h}-sample hops, got {len(e)} samples")
        x = np.concatenate([self._e[h:], e]).reshape(-1, h)
        frames = np.concatenate([x[:-1], x[1:]], axis=1)  # frame i: hops i and i + 1
        self._e = frames[-1]
        out = np.fft.irfft(self.gain * np.fft.rfft(self._win * frames, axis=-1), axis=-1).astype(np.float32)
        out *= self._win
        res = out[:, :h].copy()
        res[0] += self._ola
        res[1:] += out[:-1, h:]
        self._ola = out[-1, h:].copy()
        return res.reshape(-1)


class LinearEchoCanceller:
    """KalmanEchoFilter then ResidualSuppressor: `block` samples in, `block` out, `delay` late."""

    def __init__(
        self,
        *,
        block: int = 480,
        length: int = 9600,
        rate: int = SAMPLE_RATE,
        high_pass: bool = True,
        suppress: bool = True,
    ):
        self.block = int(block)
        self.filter = KalmanEchoFilter(block, length)
        self.hop = self.block // 2
        self.suppressor = (
            ResidualSuppressor(self.hop, rate=rate, high_pass_hz=80.0 if high_pass else 0.0) if suppress else None
        )
        self.delay = self.hop if suppress else 0

    def reset(self) -> None:
        self.filter.reset()
        if self.suppressor is not None:
            self.suppressor.reset()

    def process(self, ref: np.ndarray, mic: np.ndarray) -> np.ndarray:
        e, _ = self.filter.process(ref, mic)
        if self.filter.worse:  # then pass the microphone: never louder than it
            e = np.asarray(mic, np.float32)
        if self.suppressor is None:
            return e
        self.suppressor.update(self.filter.residual, self.filter.error_power, self.filter.floor(self.suppressor.floor))
        return self.suppressor.process(e)
