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
- Its path-change detector (`PathChange`): an abrupt change (the lid or the microphone moved
  by centimetres) leaves the converged filter's uncertainty small, so on its own it re-learns
  for seconds. But a converged filter's error is uncorrelated with its echo estimate, the
  user's voice included, while after a change part of the estimate comes back in the error
  with the opposite sign: that correlation, significant in several bands for 40-60 ms, raises
  the state uncertainty (fast re-learning) and tells the suppressor the echo left meanwhile.
- `ResidualSuppressor`: the Kalman filter's state uncertainty times the reference's power is
  its own estimate of the echo it leaves (large while it learns, small once it has, and not
  inflated by the user's voice). Each bin of the error is multiplied by
  max(floor, 1 - beta * residual / error power): deep while the filter is learning or where
  only echo is left, ~1 where the user's voice dominates the error.

Signals are float32 at 24 kHz; `LinearEchoCanceller.process` takes exactly `block` samples
of the reference (what the speaker played, aligned so that its echo follows within the
filter's length) and of the microphone, and returns `block` cleaned samples, `delay`
samples late (the suppressor's overlap-add).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PathChange:
    """The echo-path change detector's settings (measured on bench/aec_room.py and
    bench/aec_stress.py, see docs/echo-cancellation.md). Per band, t is the error-to-estimate
    correlation in standard errors and the wrong fraction -E.Y / |Y|^2. A band fires when
    t < -threshold and either the wrong fraction is >= `wrong` (a change, even under double
    talk) or the wrong estimate explains >= `alone` of the band's error with a wrong fraction
    >= `alone_wrong` (a milder change while Moshi talks alone; a distorting speaker's
    residual stays below that fraction); a change is detected when `bands_needed` bands fire
    for `persist` blocks, or `sure_bands` bands are below -sure for `sure_persist` blocks (a
    filter still learning a slow voice). One band or one block alone is the user's voice or
    a loud syllable, except a jump (`_sudden`): while Moshi talks alone into a converged filter
    (the error > quiet_db below the estimate over ~0.2 s), an error that jumps by > jump_db
    and, in that block or the next, is wrong over the whole spectrum (>= sudden_wrong of the
    estimate, explaining >= `alone` of the error) and in >= sudden_bands bands is a change at
    once. On a detection the Kalman state uncertainty is raised to kappa x wrong
    fraction x the coefficients' energy; the suppressor's extra residual is gamma' x 2 x
    wrong fraction x the echo estimate's power, held with a decay of `hold` per block (0.985
    per 20 ms: -10 dB in 3 s), gamma' = 1 + (gamma - 1) x^gamma_pow with x the fraction of the
    error the change explained (~1 with Moshi alone; lower keeps the user's level); fast_psi,
    fast_q: while the changed path dominates the error (Moshi alone: the user's voice would
    be learnt too), the error power's weight in the step is divided by 1 + fast_psi x d^4 and
    the process noise raised by fast_q x d^4, d that fraction decaying with the hold; the
    suppressor's floor goes deep_db x x^2 x hold deeper (Moshi alone: the changed echo is
    removed further, the user is not there to lose).
    talk_*: whether the user was talking when the path changed, from the error over the
    expected echo (estimate + residual) 0.5-0.1 s before a detection that follows none for
    `talk_gap` blocks: talk = r^2 / (r^2 + talk_rho^2). Both estimates above then take the
    user's voice for echo (the user was ducked by up to 3 dB), so in each band they are scaled
    by max(talk_floor, u) and gamma' capped at 1 + (gamma - 1) u^2, u = talk_scale x how much
    of the band's error the held change explains (~1 in the user's pauses), blended by talk."""

    bands: int = 12
    smooth: float = 0.8
    threshold: float = 5.0
    bands_needed: int = 3
    persist: int = 2
    kappa: float = 2.0
    gamma: float = 8.0
    hold: float = 0.985
    fast_psi: float = 4.0
    fast_q: float = 0.05
    wrong: float = 0.3
    gamma_pow: float = 2.0
    alone: float = 0.5
    alone_wrong: float = 0.12
    deep_db: float = 15.0
    jump_db: float = 12.0
    sudden_wrong: float = 0.15
    sudden_bands: int = 4
    quiet_db: float = 15.0
    sure: float = 9.5
    sure_bands: int = 2
    sure_persist: int = 3
    talk_rho: float = 0.15
    talk_scale: float = 1.0
    talk_floor: float = 0.1
    talk_gap: int = 25


def _check(block: int, ref: np.ndarray, mic: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ref = np.asarray(ref, np.float32).reshape(-1)
    mic = np.asarray(mic, np.float32).reshape(-1)
    if len(ref) != block or len(mic) != block:
        raise ValueError(
            f"the echo canceller takes exactly {block} samples of reference and microphone "
            f"per call, got {len(ref)} and {len(mic)}"
        )
    return ref, mic


class KalmanEchoFilter:
    """Partitioned-block frequency-domain Kalman filter. `length` taps, rounded up to whole
    blocks; `process` returns the error (microphone minus echo estimate) and the estimate;
    afterwards `residual` and `error_power` (per bin of the 2 x block FFT) are the filter's
    estimate of the echo it leaves and the error's power.

    q: process noise, as a fraction of each coefficient's energy per block (how fast the
    filter may believe the echo path changes); psi: weight of the observed error power in
    the step size's denominator (larger: more cautious in double talk, slower to converge);
    constrain: partitions whose gradient constraint is applied per block (a rotating subset,
    as in Speex's MDF: the rest are constrained a few blocks later; cheaper, and the same
    figures on bench/aec_room.py)."""

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
        self._X = np.zeros((self.partitions, k), np.complex64)  # reference spectra, newest first
        self._X2 = np.zeros((self.partitions, k), np.float32)  # |X|^2
        self._W = np.zeros((self.partitions, k), np.complex64)
        self._P = np.full((self.partitions, k), self.p0, np.float32)
        self._prev = np.zeros(self.block, np.float32)
        self._zeros = np.zeros(self.block, np.float32)
        self.residual = np.zeros(k, np.float32)
        self.error_power = np.zeros(k, np.float32)
        # path-change detector: per band, the smoothed correlation of the error with the echo estimate
        self.path_change = path_change
        pc = path_change or PathChange()
        edges = np.unique(np.round(np.geomspace(4, k, pc.bands + 1)).astype(int))
        self._edges = np.concatenate([[0], edges[:-1]])
        widths = np.diff(np.concatenate([self._edges, [k]]))
        self._band_of = np.repeat(np.arange(len(self._edges)), widths)
        # independent samples behind each band's correlation: half its bins (the error frame is
        # zero-padded) times the smoothing's memory
        self._dof = np.sqrt(widths / 2 * (1 + pc.smooth) / (1 - pc.smooth))
        self._sey, self._see, self._syy, self._hold = (np.zeros(len(self._edges)) for _ in range(4))
        self._run = self._sure_run = 0
        self._lr = float("inf")  # smoothed error-to-estimate level while Moshi talks, dB (inf: none yet)
        self._ly = self._le = self._lye = -200.0
        self._jump_age = None  # blocks since the error jumped (None: no recent jump)
        self._high = False  # the error is above its usual level
        self._jump_wrong = 0.0  # the estimate's wrong fraction in the jump's first block
        self._dominance = 0.0  # how much of the error a detected change explains, decaying with the hold
        self._explained = 0.0  # the same, as measured by the last detection (no decay)
        self.changed = False  # a path change was detected in this block
        self.late = late  # weight of the late-reverberation estimate in `residual` (0: off)
        self._late = np.zeros(k, np.float32)  # echo beyond the filter's span, per bin
        self._w2 = np.zeros((self.partitions, k), np.float32)  # |W|^2 of the coefficients the block starts with
        # the error's and the expected echo's (estimate + residual) power of the last 25 blocks, oldest first
        self._levels = np.zeros((25, 2))
        self._since = 1 << 30  # blocks since the last detection
        self._talk = 0.0  # was the user talking when the path changed (0..1)

    def reset(self) -> None:
        """Forget the echo path (the reference was moved against the microphone)."""
        self._W[:] = 0
        self._P[:] = self.p0
        for a in (self._sey, self._see, self._syy, self._hold):
            a[:] = 0.0
        self._run = self._sure_run = 0
        self._lr, self._jump_age, self._high = float("inf"), None, False
        self._ly = self._le = self._lye = -200.0
        self._dominance, self._explained = 0.0, 0.0
        self._late[:] = 0.0
        self._w2[:] = 0.0
        self._levels[:] = 0.0
        self._since, self._talk = 1 << 30, 0.0

    def process(self, ref: np.ndarray, mic: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        b = self.block
        ref, mic = _check(b, ref, mic)
        x0 = np.fft.rfft(np.concatenate([self._prev, ref]))
        self._prev = ref
        self._X[1:] = self._X[:-1]
        self._X[0] = x0
        leaving = self._X2[-1].copy()
        self._X2[1:] = self._X2[:-1]
        self._X2[0] = x0.real**2 + x0.imag**2
        y = np.fft.irfft(np.einsum("pk,pk->k", self._X, self._W))[b:].astype(np.float32)
        e = mic - y
        ee, mm, yy = float(np.dot(e, e)), float(np.dot(mic, mic)), float(np.dot(y, y))
        # the estimate adds echo (the path changed under the filter): e = mic - y has the energy
        # of both; a good estimate leaves |e|^2 = |mic|^2 - |y|^2, double talk or not
        self.worse = ee > mm + 0.5 * yy and yy > 0.1 * mm
        E = np.fft.rfft(np.concatenate([self._zeros, e]))
        e2 = (E.real**2 + E.imag**2).astype(np.float32)
        y2 = None
        if self.path_change is not None:
            y2 = self._detect(E, y)
        xp = np.einsum("pk,pk->k", self._X2, self._P)  # expected |echo error|^2 from the state's uncertainty
        self.residual = 0.5 * xp  # half of the frame is the block's error
        if self.late:
            self.residual = self.residual + self.late * 0.5 * self._late_echo(leaving)
        if y2 is not None and self.changed_recently:  # what the changed path leaves, until re-learnt
            pc = self.path_change
            gamma = 1.0 + (pc.gamma - 1.0) * self._explained**pc.gamma_pow if pc.gamma_pow else pc.gamma
            scale = None
            if self._talk:  # the user talks through the change: keep them where the change is not the error
                u = np.clip(pc.talk_scale * 2.0 * self._hold * self._syy / (self._see + 1e-20), 0.0, 1.0)
                gamma = gamma + (np.minimum(gamma, 1.0 + (pc.gamma - 1.0) * u**pc.gamma_pow) - gamma) * self._talk
                scale = 1.0 - (1.0 - np.maximum(u, pc.talk_floor)) * self._talk
            self.residual = self.residual + (gamma * 2.0 * self._hold)[self._band_of] * y2
            if scale is not None:
                self.residual = self.residual * scale[self._band_of]
        self.error_power = e2
        if y2 is not None:
            self._levels[:-1] = self._levels[1:]
            self._levels[-1] = float(e2.sum()), float(y2.sum()) + float(self.residual.sum())
        fast = self._dominance**4
        psi = self.psi / (1.0 + self.path_change.fast_psi * fast) if fast else self.psi
        mu = self._P / (xp + psi * e2 + 1e-10)
        self._W += mu * np.conj(self._X) * E.astype(np.complex64)
        # the gradient constraint (a linear, not circular, convolution) on a rotating subset
        step = self.partitions // self.constrain
        idx = (np.arange(self.constrain) * step + self._rotation) % self.partitions
        self._rotation = (self._rotation + 1) % step
        wt = np.fft.irfft(self._W[idx], axis=-1)
        wt[:, b:] = 0.0
        self._W[idx] = np.fft.rfft(wt, axis=-1).astype(np.complex64)
        self._P *= 1.0 - 0.5 * mu * self._X2
        q = self.q + self.path_change.fast_q * fast if fast else self.q
        self._w2 = self._W.real**2 + self._W.imag**2  # also the next block's, until its update
        self._P += q * self._w2
        return e, y

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
        """The suppressor's floor: deeper after a change that explained the error (Moshi alone)."""
        pc = self.path_change
        if pc is None or not pc.deep_db or not self.changed_recently:
            return floor
        return floor * 10 ** (-pc.deep_db * self._explained**2 * float(self._hold.max()) / 20)

    def _sudden(self, bey: np.ndarray, bee: np.ndarray, byy: np.ndarray) -> bool:
        """Rule (c): a change seen in its first block. While Moshi talks alone into a converged
        filter (the error far below the estimate over the last ~0.2 s), the error jumps to near
        the estimate's level; it is a change, not the user starting to talk, when in that block
        (or the next, if the first already pointed that way) the estimate is wrong over the
        whole spectrum and in several bands, and its wrong part explains the error. Not in
        pauses or reverberation tails, where a distorting speaker or what the filter took from
        the user's voice shows as a wrong estimate. Arguments: this block's per-band E.Y,
        |E|^2, |Y|^2."""
        pc = self.path_change
        ey, ee, yy = float(bey.sum()), float(bee.sum()), float(byy.sum())
        ly, le = 10.0 * np.log10(yy + 1e-20), 10.0 * np.log10(ee + 1e-20)
        self._ly = max(ly, self._ly - 0.05)  # the estimate's level while Moshi talks (-2.5 dB/s)
        quiet = self._le < self._lye - pc.quiet_db
        self._le, self._lye = 0.9 * self._le + 0.1 * le, 0.9 * self._lye + 0.1 * ly
        if self._jump_age is not None:  # a change shows in its first two blocks; the user's voice may later
            self._jump_age = self._jump_age + 1 if self._jump_age < 1 else None
        if ly < self._ly - 10.0:  # a pause or a reverberation tail
            return False
        lr = 10.0 * np.log10((ee + 1e-20) / (yy + 1e-20))
        high = lr - self._lr > pc.jump_db
        self._lr = 0.95 * self._lr + 0.05 * lr if np.isfinite(self._lr) else lr
        wrong = -ey / (yy + 1e-20)
        if self._jump_age is None and quiet and high and not self._high:  # the rising edge
            self._jump_age, self._jump_wrong = 0, wrong
        self._high = high
        bands = np.count_nonzero((-bey > pc.wrong * byy) & (-2.0 * bey > pc.alone * bee))
        return bool(
            self._jump_age is not None
            # the filter, adapting on a user's first syllable, makes the next block's estimate wrong too
            and self._jump_wrong > 0.0
            and wrong >= pc.sudden_wrong  # a distorting speaker's peaks are less wrong
            and -2.0 * ey >= pc.alone * ee  # the wrong estimate is the error: not the user
            and bands >= pc.sudden_bands
        )

    @property
    def changed_recently(self) -> bool:
        return bool(self._hold.max() > 1e-3)

    def _detect(self, E: np.ndarray, y: np.ndarray) -> np.ndarray:
        """A converged filter's error is uncorrelated with its echo estimate, whether the user
        talks or not; after the echo path changed, part of the estimate is wrong and comes back
        in the error with the opposite sign. When that correlation is significantly negative in
        enough bands for long enough, the state uncertainty is raised (the filter re-learns
        fast) and the suppressor is told the echo it leaves meanwhile. Returns |Y|^2."""
        pc = self.path_change
        Y = np.fft.rfft(np.concatenate([self._zeros, y]))
        y2 = Y.real**2 + Y.imag**2
        a, r = pc.smooth, np.add.reduceat
        bey, bee, byy = (
            r(E.real * Y.real + E.imag * Y.imag, self._edges),
            r(E.real**2 + E.imag**2, self._edges),
            r(y2, self._edges),
        )
        self._sey = a * self._sey + (1 - a) * bey
        self._see = a * self._see + (1 - a) * bee
        self._syy = a * self._syy + (1 - a) * byy
        sudden = self._sudden(bey, bee, byy) if pc.jump_db else False
        t = self._sey / np.sqrt(self._see * self._syy + 1e-20) * self._dof
        fired = (t < -pc.threshold) & (-self._sey > pc.wrong * self._syy)
        if pc.alone:  # or the wrong estimate explains most of the band's error (Moshi alone)
            fired |= (
                (t < -pc.threshold)
                & (-2.0 * self._sey > pc.alone * self._see)
                & (-self._sey > pc.alone_wrong * self._syy)
            )
        self._run = self._run + 1 if np.count_nonzero(fired) >= pc.bands_needed else 0
        self._sure_run = self._sure_run + 1 if np.count_nonzero(t < -pc.sure) >= pc.sure_bands else 0
        self.changed = sudden or self._run >= pc.persist or (pc.sure_persist > 0 and self._sure_run >= pc.sure_persist)
        self._hold *= pc.hold
        self._dominance *= pc.hold
        self._since += 1
        if self.changed and self._since > pc.talk_gap:  # a new change, not the same one seen again
            # the error over the expected echo before the change (0.5-0.1 s ago): ~ERLE^-1 (< 0.03)
            # with Moshi alone, or while the filter learns (the residual expects it); ~1 with the user
            err, echo = self._levels[:-5].sum(axis=0)
            rho2 = (err / (echo + 1e-20)) ** 2
            self._talk = rho2 / (rho2 + pc.talk_rho**2)
        if self.changed:  # a moved microphone changes every band, most where the detector is blind
            self._since = 0
            beta = np.clip(-self._sey / (self._syy + 1e-20), 0.0, 1.0)  # the estimate's wrong fraction
            if sudden:
                beta = np.maximum(beta, np.clip(-bey / (byy + 1e-20), 0.0, 1.0))
            self._hold = np.maximum(self._hold, beta)
            # the wrong estimate leaves ~2 x beta x its power in the error; the rest is the user
            explained = 2.0 * float(np.sum(beta * self._syy)) / (float(np.sum(self._see)) + 1e-20)
            if sudden:
                explained = max(explained, 2.0 * float(np.sum(beta * byy)) / (float(np.sum(bee)) + 1e-20))
            self._dominance = max(self._dominance, min(1.0, explained))
            self._explained = (
                min(1.0, explained)
                if sudden or self._run == pc.persist or self._sure_run == pc.sure_persist
                else max(self._explained, min(1.0, explained))
            )
            self._P = np.maximum(self._P, (pc.kappa * beta[self._band_of]).astype(np.float32) * self._w2)
        return y2.astype(np.float32)


class ResidualSuppressor:
    """Spectral gain on the linear filter's error, frames of 2 x hop (sqrt-Hann, 50% overlap:
    delays by `hop` samples). Gain per bin = max(floor, 1 - beta * residual / error power),
    from the Kalman filter's estimates (set once per filter block by `update`)."""

    def __init__(
        self, hop: int, *, rate: int = 24_000, beta: float = 0.5, floor_db: float = -20.0, high_pass_hz: float = 0.0
    ):
        self.hop = int(hop)
        n = 2 * self.hop
        self._win = np.sqrt(0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)).astype(np.float32)
        self._e = np.zeros(n, np.float32)
        self._ola = np.zeros(self.hop, np.float32)
        self._keep = (np.arange(self.hop + 1) * rate / n >= high_pass_hz).astype(np.float32)  # the high-pass
        self.beta, self.floor = float(beta), float(10 ** (floor_db / 20.0))
        self.gain = self._keep.copy()

    def update(self, residual: np.ndarray, error_power: np.ndarray, floor: float | None = None) -> None:
        """Estimates on a frequency grid `factor` times finer than the suppressor's."""
        factor = (len(residual) - 1) // self.hop
        ratio = (residual / (error_power + 1e-10))[::factor]
        floor = self.floor if floor is None else floor
        self.gain = (np.maximum(floor, 1.0 - self.beta * ratio) * self._keep).astype(np.float32)

    def process(self, e: np.ndarray) -> np.ndarray:
        h = self.hop
        self._e[:h], self._e[h:] = self._e[h:], e
        out = np.fft.irfft(self.gain * np.fft.rfft(self._win * self._e)).astype(np.float32) * self._win
        res = self._ola + out[:h]
        self._ola = out[h:]
        return res


class LinearEchoCanceller:
    """KalmanEchoFilter then ResidualSuppressor: `block` samples in, `block` out, `delay` late."""

    def __init__(
        self, *, block: int = 480, length: int = 9600, rate: int = 24_000, high_pass: bool = True, suppress: bool = True
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

    def process(self, ref: np.ndarray, mic: np.ndarray) -> np.ndarray:
        e, _ = self.filter.process(ref, mic)
        if self.filter.worse:  # then pass the microphone: never louder than it
            e = np.asarray(mic, np.float32)
        if self.suppressor is None:
            return e
        self.suppressor.update(self.filter.residual, self.filter.error_power, self.filter.floor(self.suppressor.floor))
        h = self.hop
        return np.concatenate([self.suppressor.process(e[i : i + h]) for i in range(0, self.block, h)])
