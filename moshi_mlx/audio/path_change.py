"""The echo-path change detector of the linear echo canceller (audio/echo_filter.py).

Why: an abrupt change (the lid or the microphone moved by centimetres) leaves a converged
Kalman filter's state uncertainty small, so on its own it re-learns for seconds. A converged
filter's error is uncorrelated with its echo estimate, the user's voice included, while
after a change part of the estimate comes back in the error with the opposite sign. The
detector watches that correlation per band; on a change it tells the filter how far to
raise its state uncertainty (fast re-learning) and the suppressor the echo left meanwhile.
docs/echo-cancellation.md ("Echo-path changes") has the rules, the measurements behind
each setting and what did not work.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..constants import SAMPLE_RATE


@dataclass(frozen=True)
class PathChange:
    """The detector's settings, measured on bench/aec_room.py and bench/aec_stress.py
    (docs/echo-cancellation.md). Per band, t is the error-to-estimate correlation in
    standard errors and the wrong fraction is -E.Y / |Y|^2."""

    bands: int = 12  # bands the correlation is measured in
    smooth: float = 0.8  # per-block smoothing of the band sums
    # rule (a): t < -threshold in bands_needed bands, persist blocks in a row
    threshold: float = 5.0
    bands_needed: int = 3
    persist: int = 2
    # on a detection the state uncertainty is raised to kappa x wrong fraction x |W|^2, and the
    # suppressor's residual gets gamma' x 2 x wrong fraction x |Y|^2, decaying by `hold` per block
    # (0.985 per 20 ms: -10 dB in 3 s)
    kappa: float = 2.0
    gamma: float = 8.0
    hold: float = 0.985
    # while the changed path dominates the error (its share d, decaying with the hold; Moshi
    # alone, else the user's voice would be learnt too): the error power's weight in the step
    # / (1 + fast_psi d^4), the process noise + fast_q d^4
    fast_psi: float = 4.0
    fast_q: float = 0.05
    # the filter's process noise while no change is held and the estimate is not measurably off
    # (`sliding`: |E Y*| past slide_t standard errors in slide_bands bands raises it back to
    # the filter's q): the detector, not q, follows a moved path, so q need not be the pace of
    # re-learning one, and a smaller q learns less of the user's voice in double talk and
    # expects less residual, so the suppressor cuts less of it (0: the filter's q throughout)
    settled_q: float = 0.0003
    slide_t: float = 4.0
    slide_bands: int = 2
    wrong: float = 0.3  # (a): a band >= this wrong fires (a change, even under double talk)
    # gamma' = 1 + (gamma - 1) x^gamma_pow, x the fraction of the error the change explained
    # (~1 with Moshi alone; lower keeps the user's level); 0: gamma
    gamma_pow: float = 2.0
    # (a): or the wrong estimate explains >= `alone` of the band's error and is >= alone_wrong
    # wrong (a milder change while Moshi talks alone; a distorting speaker stays below)
    alone: float = 0.5
    alone_wrong: float = 0.12
    deep_db: float = 15.0  # the suppressor's floor deeper by deep_db x x^2 x hold (Moshi alone)
    # rule (c), a change seen in its first block: while Moshi talks alone into a converged filter
    # (the error > quiet_db under the estimate), the error jumps by > jump_db and is >= sudden_wrong
    # wrong over the whole spectrum and in >= sudden_bands bands (jump_db 0: off)
    jump_db: float = 12.0
    sudden_wrong: float = 0.15
    sudden_bands: int = 4
    quiet_db: float = 15.0
    # rule (c) also in a pause or reverberation tail of Moshi's, in the block where the error's
    # power jumps by more than tail_step_db over the block before (a tail's error fades with its
    # estimate, a distorting speaker's too) and the estimate is wrong as rule (c) wants (0: off)
    tail_step_db: float = 6.0
    louder: bool = True  # rule (c) also for an error that is the estimate's positive (the echo louder)
    # a louder echo's held residual, as a fraction of its short fraction: its raised uncertainty
    # re-learns the louder path within a second, and a full hold ducked the user 5 s later
    louder_hold: float = 0.25
    # rule (b): t < -sure in sure_bands bands for sure_persist blocks (a filter still learning a
    # slow voice)
    sure: float = 9.5
    sure_bands: int = 2
    sure_persist: int = 3
    # was the user talking when the path changed (r: the error over the expected echo 0.5-0.1 s
    # before a detection that follows none for talk_gap blocks): talk = r^2 / (r^2 + talk_rho^2);
    # then per band the residual is scaled by max(talk_floor, u) and gamma' capped at
    # 1 + (gamma - 1) u^2, u = talk_scale x the fraction of the band's error the change explains
    talk_rho: float = 0.15
    talk_scale: float = 1.0
    talk_floor: float = 0.1
    talk_gap: int = 25
    # the same scaling once the user talks after the change (`_talk_now`: the error over the held
    # change's expected error from talk_now_rho up, its coherence with the estimate under
    # talk_now_coherence, from talk_now_after blocks after the change; 0: only the talk before it)
    talk_now_rho: float = 3.0
    talk_now_coherence: float = 0.3
    talk_now_after: int = 5
    # a new detection by rule (a) or (b) while the user was silent (talk < 0.5) whose wrong
    # estimate explains less than `onset` of the error is the user starting to talk (the filter,
    # adapting on their first words, makes its estimate look wrong), not a change (0: off)
    onset: float = 0.45
    # a level change (the volume turned down while the user talks over Moshi) leaves an error
    # that is the estimate scaled, wrong by the same fraction at every frequency; a moved
    # microphone turns the phases of high frequencies, hardly those of low ones. The estimate's
    # wrong fraction under level_hz[0] over the one above level_hz[1], from level_ratio[0]
    # (a move) to level_ratio[1] (a level change), moves the held residual from a moved path's
    # 2 x wrong fraction x |Y|^2 to a level change's wrong fraction^2 x |Y|^2 (when the user
    # talked through the change, in full from talk >= 1 / level_talk; with Moshi alone the deeper
    # model stays: applied there, it cost 0.6-0.9 dB after moves and one steady-ERLE miss)
    level_hz: tuple[float, float] = (1000.0, 2000.0)
    level_ratio: tuple[float, float] = (0.35, 0.7)
    level_talk: float = 3.0
    # a level change while Moshi talks alone into a converged filter (its error >= gain_db under
    # the estimate over the last second), seen in one block as an error coherent with the
    # estimate (coherence >= gain_coherence) and as wrong, or as short, under level_hz[0] as
    # above level_hz[1] (within level_ratio[1], each >= gain_min): the filter's path is scaled
    # to the new level at once (at most x0.1 to x2 per block), where it re-learnt a drop of
    # 8 dB in its reverberant tail over 2-4 s of re-detections; under the user's voice, once the
    # level test says 1 (level_talk, level_ratio), by the band sums' wrong fraction (0: off)
    gain_db: float = 12.0
    gain_coherence: float = 0.8
    gain_min: float = 0.1
    # rule (d), the echo louder under the user's voice (the volume turned up while both talk, which
    # rule (c), wanting Moshi alone, misses): t > threshold and the estimate >= wrong short in
    # bands_needed bands for persist blocks, as short under level_hz[0] as above level_hz[1] (a
    # level change), the filter settled (its expected error under `settled` of its estimate's
    # power: a filter still learning falls short too); then a level change as above
    settled: float = 0.2
    # rule (a) also fires, while Moshi talks alone into a settled filter, when the -t of the bands
    # whose wrong estimate explains their error (`alone`) sum to `evidence` (each counted from
    # evidence_min, at most evidence_cap; 0: off)
    evidence: float = 15.0
    evidence_min: float = 2.5
    evidence_cap: float = 10.0
    # in every block, changed or not, the residual per band is at least measured x 2 x the estimate's
    # wrong fraction x its |Y|^2 where that fraction is significant (t < -measured_t) in at least
    # measured_bands bands from measured_hz up: the wrong part measured, unbiased by the user's
    # voice, where a change under it is seen late or not at all (a 2 cm move) and the held
    # residual's level is 5-19 dB off (below measured_hz a move leaves little and the correlation is
    # the user's noise; one or two bands alone are the user's voice by chance or the filter learning
    # it: with 2, a double talk 5 s from any move lost 2.3 dB, docs/echo-cancellation.md; 0: off)
    measured: float = 2.0
    measured_t: float = 3.0
    measured_bands: int = 3
    measured_hz: float = 700.0
    # while Moshi talks alone after a moved path (a change heard with talk < 0.5 that looked like no
    # level change, the talk now under follow_talk, for follow_blocks after its first detection),
    # each band's held wrong fraction follows the estimate's current one upwards where that is
    # significant (t < -follow_t): a move shows in some bands later than in others, and a detection
    # holds each band at the wrong fraction of its block (0: off)
    follow_t: float = 2.0
    follow_talk: float = 0.1
    follow_blocks: int = 250  # for 5 s after the change's first detection (the halls re-learn that long)
    # on a detection with the user silent before it, each band is held at least at half of |c|^2,
    # c = E Y* / |Y|^2 (band sums), where |c| is significant (rotated_t standard errors): the error a
    # rotated or scaled estimate leaves (a microphone moved towards a laptop's speaker delays and
    # raises the direct path: the low bands' error in quadrature with the estimate, or its positive,
    # which the wrong fraction does not see; 0: off)
    rotated_t: float = 3.0
    # while Moshi talks alone after a change (talk under follow_talk, from cap_after blocks after
    # its first detection) the error is what the changed path leaves: each band's error over the
    # estimate is kept, and once the user talks (talk >= 0.5) the held change's residual is at most
    # cap x that ratio x |Y|^2 (the user is not taken for a residual the filter has re-learnt;
    # with Moshi alone the held change stays as deep as it is; 0: off)
    cap: float = 2.0
    cap_after: int = 2


def _new_level(ey: float, yy: float) -> float:
    """The echo's new level over the old after a level change, from the error's E.Y and the
    estimate's |Y|^2: 1 - the wrong fraction, at most x0.1 to x2 at once."""
    return 1.0 - float(np.clip(-ey / (yy + 1e-20), -1.0, 0.9))


class PathChangeDetector:
    """Per block of the 2 x `block` FFT frame: `observe` the filter's error spectrum and echo
    estimate; `changed` says whether a change was detected in that block, and then `boost`
    (per bin) is what the filter's state uncertainty is raised to, as a factor of each
    coefficient's energy. `add_to` adds the held change's residual to the filter's,
    `record_levels` keeps the levels that say whether the user was talking, `floor` deepens
    the suppressor's floor, `fast` speeds the filter's step while the change dominates."""

    def __init__(self, settings: PathChange, block: int):
        pc = self.settings = settings
        k = int(block) + 1
        self._zeros = np.zeros(int(block), np.float32)
        edges = np.unique(np.round(np.geomspace(4, k, pc.bands + 1)).astype(int))
        self._edges = np.concatenate([[0], edges[:-1]])
        widths = np.diff(np.concatenate([self._edges, [k]]))
        hz = np.concatenate([self._edges, [k]]) * (SAMPLE_RATE / 2.0) / (k - 1)
        self._low_bands, self._high_bands = hz[1:] <= pc.level_hz[0], hz[:-1] >= pc.level_hz[1]
        self._measured_bands = hz[:-1] >= pc.measured_hz
        self._band_of = np.repeat(np.arange(len(self._edges)), widths)
        # independent samples behind each band's correlation: half its bins (the error frame is
        # zero-padded) times the smoothing's memory
        self._dof = np.sqrt(widths / 2 * (1 + pc.smooth) / (1 - pc.smooth))
        self._sey, self._see, self._syy, self._hold = (np.zeros(len(self._edges)) for _ in range(4))
        self._sey_q = np.zeros(len(self._edges))  # the quadrature part of the band sums of E Y*
        # the error's and the expected echo's (estimate + residual) power of the last 25 blocks, oldest first
        self._levels = np.zeros((25, 2))
        self.changed = False  # a path change was detected in this block
        self.boost: np.ndarray | None = None  # on a detection: kappa x wrong fraction, per bin (float32)
        self.gain: float | None = None  # on a level change: the echo's new level over the old
        self.reset()

    def reset(self) -> None:
        for a in (self._sey, self._sey_q, self._see, self._syy, self._hold):
            a[:] = 0.0
        self._run = self._sure_run = self._louder_run = 0
        self._le_last = float("inf")  # the last block's error level, dB
        self._tail = False  # rule (c) fired in a pause or tail
        self._lr = float("inf")  # smoothed error-to-estimate level while Moshi talks, dB (inf: none yet)
        self._ly = self._le = self._lye = self._le_talk = self._lye_talk = -200.0
        self._jump_age = None  # blocks since the error jumped (None: no recent jump)
        self._high = False  # the error is above its usual level
        self._pause = False  # this block is in a pause or a reverberation tail of Moshi's
        self._jump_wrong = 0.0  # the estimate's wrong fraction in the jump's first block
        self._sudden_sign = 0.0  # rule (c)'s orientation: 1 the estimate wrong, -1 short, 0 none
        self._dominance = 0.0  # how much of the error a detected change explains, decaying with the hold
        self._explained = 0.0  # the same, as measured by the last detection (no decay)
        self._levels[:] = 0.0
        self._since = 1 << 30  # blocks since the last detection
        self._age = 1 << 30  # blocks since the last new change was first detected
        self._talk = 0.0  # was the user talking when the path changed (0..1)
        self._scaled = False  # the path was scaled to a level change heard under the user's voice
        self._moved = False  # the last detection looked like a moved path, not a level change (`_follow`)
        self._level = 0.0  # how much the change is a level change heard under the user's voice (0..1)
        self._bee = np.zeros(len(self._edges))  # this block's |E|^2 per band
        self._byy = np.zeros(len(self._edges))  # this block's |Y|^2 per band
        self._t = np.zeros(len(self._edges))  # the error's correlation with the estimate, in standard errors
        # per band, the error over the estimate while Moshi talked alone since the change (`cap`)
        self._alone_ratio: np.ndarray | None = None

    @property
    def changed_recently(self) -> bool:
        return bool(self._hold.max() > 1e-3)

    @property
    def level(self) -> float:
        """How much the last change heard under the user's voice was a change of level (the
        volume), not of path (0..1; 0 with Moshi alone)."""
        return self._level

    @property
    def fast(self) -> float:
        """How much faster the filter may adapt: the change's share of the error, to the 4th
        (~1 only with Moshi alone, where no user's voice can be learnt)."""
        return self._dominance**4

    def floor(self, floor: float) -> float:
        """The suppressor's floor: deeper after a change that explained the error (Moshi alone)."""
        pc = self.settings
        if not pc.deep_db or not self.changed_recently:
            return floor
        return floor * 10 ** (-pc.deep_db * self._explained**2 * float(self._hold.max()) / 20)

    def add_to(self, residual: np.ndarray, echo: np.ndarray, y2: np.ndarray | None = None) -> np.ndarray:
        """`residual` plus what the changed path leaves until the filter has re-learnt it,
        scaled per band where the user talked through the change (so their voice is kept
        where the change is not the error). `echo`: the echo's power per bin (at least
        `observe`'s |Y|^2, `y2`, which is what a level change leaves, in proportion; default
        `echo`)."""
        if not self.changed_recently:
            return residual
        y2 = echo if y2 is None else y2
        pc = self.settings
        gamma = 1.0 + (pc.gamma - 1.0) * self._explained**pc.gamma_pow if pc.gamma_pow else pc.gamma
        scale = None
        m = self._wrong_power(self._hold)
        see = np.maximum(self._see, self._bee)  # the user's onset at once, not 100 ms later
        talk = max(self._talk, self._talk_now(m, see))
        ratio = self._residual_ratio(talk, see)
        if talk:
            u = np.clip(pc.talk_scale * m * self._hold * self._syy / (see + 1e-20), 0.0, 1.0)
            gamma = gamma + (np.minimum(gamma, 1.0 + (pc.gamma - 1.0) * u**pc.gamma_pow) - gamma) * talk
            scale = 1.0 - (1.0 - np.maximum(u, pc.talk_floor)) * talk
        if self._level:  # the moved path's share at its incoherent power, the level change's coherent
            g = (gamma * self._hold)[self._band_of]
            held = g * (2.0 * (1.0 - self._level)) * echo + g * (self._level * self._hold)[self._band_of] * y2
        else:
            held = (gamma * 2.0 * self._hold)[self._band_of] * echo
        if ratio is not None and talk >= 0.5:  # the user talks: at most what Moshi alone showed
            have = np.add.reduceat(held, self._edges) + 1e-20
            held = held * np.minimum(1.0, pc.cap * ratio * self._byy / have)[self._band_of]
        residual = residual + held
        if scale is not None:
            residual = residual * scale[self._band_of]
        return residual

    def at_least_wrong(self, residual: np.ndarray) -> np.ndarray:
        """`residual` raised, per band, to what the estimate's wrong part measurably leaves:
        `measured` x 2 x its wrong fraction x this block's |Y|^2 (a moved path's error, its power
        kept) where the wrong fraction is significant (t < -measured_t) in bands from measured_hz
        up, at least measured_bands of them. Why: the user's voice is uncorrelated with Moshi's, so the error's
        correlation with the estimate measures the echo a changed path leaves under double talk
        too; a 2-4 cm move made while the user talks is seen late or not at all, and the
        residual held after a detection has the old path's shape, not the new one's level per
        band. Changed or not: without a change the wrong fraction is not significant."""
        pc = self.settings
        if not pc.measured:
            return residual
        ok = self._measured_bands & (self._t < -pc.measured_t)
        if np.count_nonzero(ok) < pc.measured_bands:  # the user's voice or the filter learning it, in a band or two
            return residual
        wrong = np.maximum(0.0, -self._sey) / (self._syy + 1e-20)
        have = np.add.reduceat(residual, self._edges) + 1e-20
        raise_by = np.where(ok, np.maximum(1.0, pc.measured * 2.0 * wrong * self._byy / have), 1.0)
        return residual * raise_by[self._band_of].astype(np.float32)

    def record_levels(self, e2: np.ndarray, y2: np.ndarray, residual: np.ndarray) -> None:
        """This block's error power and expected echo (|Y|^2 + the filter's residual): a later
        detection reads from them whether the user was talking before the change."""
        self._levels[:-1] = self._levels[1:]
        self._levels[-1] = float(e2.sum()), float(y2.sum()) + float(residual.sum())

    def observe(
        self,
        E: np.ndarray,
        y: np.ndarray,
        uncertain: float = float("inf"),
        *,
        Y: np.ndarray | None = None,
        e2: np.ndarray | None = None,
    ) -> np.ndarray:
        """A converged filter's error is uncorrelated with its echo estimate, whether the user
        talks or not; after the echo path changed, part of the estimate is wrong and comes back
        in the error with the opposite sign. When that correlation is significantly negative in
        enough bands for long enough (rules (a), (b)), or at once (rule (c), `_sudden`), sets
        `changed` and `boost`. E: the error's spectrum (zero-padded frame), y: the block's echo
        estimate. Y, e2: y's zero-padded spectrum and |E|^2, if the caller has them already.
        Returns |Y|^2 (float32)."""
        pc = self.settings
        if Y is None:
            Y = np.fft.rfft(np.concatenate([self._zeros, y]))
        y2 = Y.real**2 + Y.imag**2
        a, r = pc.smooth, np.add.reduceat
        bey, bee, byy = (
            r(E.real * Y.real + E.imag * Y.imag, self._edges),
            r(E.real**2 + E.imag**2 if e2 is None else e2, self._edges),
            r(y2, self._edges),
        )
        self._sey = a * self._sey + (1 - a) * bey
        self._sey_q = a * self._sey_q + (1 - a) * r(E.imag * Y.real - E.real * Y.imag, self._edges)
        self._see = a * self._see + (1 - a) * bee
        self._bee, self._byy = bee, byy
        self._syy = a * self._syy + (1 - a) * byy
        sudden = self._sudden(bey, bee, byy) if pc.jump_db else False
        t = self._sey / np.sqrt(self._see * self._syy + 1e-20) * self._dof
        self._t = t
        wrong = -self._sey > pc.wrong * self._syy
        # or the wrong estimate explains most of the band's error (Moshi alone)
        alone = (-2.0 * self._sey > pc.alone * self._see) & (-self._sey > pc.alone_wrong * self._syy)
        if pc.alone:
            wrong |= alone
        fired = (t < -pc.threshold) & wrong
        self._run = (
            self._run + 1 if np.count_nonzero(fired) >= pc.bands_needed or self._evidence(t, alone, uncertain) else 0
        )
        self._sure_run = self._sure_run + 1 if np.count_nonzero(t < -pc.sure) >= pc.sure_bands else 0
        self.changed = sudden or self._run >= pc.persist or (pc.sure_persist > 0 and self._sure_run >= pc.sure_persist)
        short = (t > pc.threshold) & (self._sey > pc.wrong * self._syy)
        self._louder_run = self._louder_run + 1 if np.count_nonzero(short) >= pc.bands_needed else 0
        louder = (
            pc.louder
            and not self.changed
            and self._louder_run >= pc.persist
            and uncertain < pc.settled
            and self._level_change(short=True) >= 1.0
        )
        self.changed = self.changed or louder
        self.boost = None
        self.gain = None
        self._hold *= pc.hold
        self._dominance *= pc.hold
        self._since += 1
        self._age += 1
        if self.changed:
            sign = -1.0 if louder else 1.0  # rule (d): the estimate short
            beta = np.clip(-sign * self._sey / (self._syy + 1e-20), 0.0, 1.0)  # the estimate's wrong fraction
            if pc.rotated_t and not louder and self._talk_before() < 0.5:  # and what a rotated estimate leaves
                beta = np.maximum(beta, self._rotated())
            if sudden:
                beta = np.maximum(beta, np.clip(-self._sudden_sign * bey / (byy + 1e-20), 0.0, 1.0))
            # the wrong estimate leaves ~2 x beta x its power in the error; the rest is the user
            explained = 2.0 * float(np.sum(beta * self._syy)) / (float(np.sum(self._see)) + 1e-20)
            if sudden:
                explained = max(explained, 2.0 * float(np.sum(beta * byy)) / (float(np.sum(bee)) + 1e-20))
        if self.changed and self._since > pc.talk_gap:  # a new change, not the same one seen again
            talk = self._talk_before()
            if not sudden and talk < 0.5 and explained < pc.onset:
                self.changed = False  # the user's first words: the error is theirs, not a wrong estimate's
            else:
                self._talk, self._level = talk, 0.0
                self._age = 0
                self._alone_ratio = None
                self._scaled = False
        if louder and self._talk < 0.5:  # rule (d) is for double talk: with Moshi alone rule (c) sees it
            self.changed = louder = False
        shorter = louder or (sudden and self._sudden_sign < 0)  # the echo louder: the estimate short
        if self.changed and (self._talk or louder):
            self._level = 1.0 if louder else min(1.0, pc.level_talk * self._talk) * self._level_change(shorter)
            if self._level:  # a level change leaves beta^2 x |Y|^2, not 2 x beta x |Y|^2
                explained = float(np.sum(beta * self._wrong_power(beta) * self._syy)) / (
                    float(np.sum(self._see)) + 1e-20
                )
        if pc.gain_db and self.changed and self._talk < 0.5:
            self.gain = self._level_gain(bey, bee, byy)
        elif pc.gain_db and self.changed and self._level >= 1.0 and not self._scaled:
            # under the user's voice one block cannot tell; once the band sums say it is a level
            # change, the path is scaled by their wrong fraction, once per change
            self._scaled = True
            self.gain = _new_level(float(self._sey.sum()), float(self._syy.sum()))
        if self.changed:  # a moved microphone changes every band, most where the detector is blind
            self._since = 0
            self._moved = self._level_change(shorter) <= 0.0
            self._hold = np.maximum(self._hold, beta * (pc.louder_hold if shorter else 1.0))
            self._dominance = max(self._dominance, min(1.0, explained))
            self._explained = (
                min(1.0, explained)
                if sudden or self._run == pc.persist or self._sure_run == pc.sure_persist
                else max(self._explained, min(1.0, explained))
            )
            self.boost = (pc.kappa * beta[self._band_of]).astype(np.float32)
        else:
            self._follow(t)
        return y2.astype(np.float32)

    def _follow(self, t: np.ndarray) -> None:
        """The held change follows the estimate's wrong fraction per band, upwards, where it is
        significant (t < -follow_t) while Moshi talks alone after a change. Why: a detection
        holds each band at the wrong fraction of its block, but a move shows in some bands later
        than in others (move4#107, seeds 100-107: 1.1-1.6 kHz, held at 4%, turned 22% wrong
        0.14 s after the detection), and those bands leaked until the filter had re-learnt them.
        For follow_blocks after the change's first detection (the RT60 0.8 s halls' windows 2-5 s
        after a move leaked; unlimited, the raised hold kept itself above `changed_recently`'s
        limit, and a double talk 5 s after a detection, the user 10 dB under the echo, lost
        1.6 dB: ser-10#301, seeds 300-303). Only with Moshi alone (the change heard without
        the user, the talk now under follow_talk) and after a moved path (at the
        last detection the estimate less wrong under level_hz[0] than level_ratio[0] times above
        level_hz[1]: `_level_change` 0): the correlation is unbiased by the user's voice, but a
        larger hold ducks a user who starts to talk just after the change, and after the volume
        turned up (whose path is scaled at once, `gain_db`) that cost a user starting 0.2-0.6 s
        later 1.9 dB of SNR (volume-user#3). `t`: this block's correlation per band, in
        standard errors."""
        pc = self.settings
        if not pc.follow_t or self._age >= pc.follow_blocks or self._talk >= 0.5 or not self._moved:
            return
        ok = t < -pc.follow_t
        if not ok.any():
            return
        if self._talk_now(self._wrong_power(self._hold), np.maximum(self._see, self._bee)) >= pc.follow_talk:
            return
        now = np.clip(-self._sey / (self._syy + 1e-20), 0.0, 1.0)
        self._hold = np.where(ok, np.maximum(self._hold, now), self._hold)

    def _rotated(self) -> np.ndarray:
        """Per band, the error a rotated or scaled estimate leaves over |Y|^2, halved (|c|^2 / 2,
        c = E Y* / |Y|^2 from the band sums: a wrong fraction's equivalent, as a fraction beta
        wrong leaves 2 beta), where |c| is significant (rotated_t standard errors), at most 1.
        Why: after a microphone moved towards a laptop's speaker, the low bands showed no wrong
        fraction: the change was taken for the user's first words (`onset`) and, once detected,
        they had no held residual (bench.aec_stress --shoebox, box-move4#6; docs/echo-cancellation.md
        "Session 15"). Only with the user silent before the change: under their voice a band's |c|
        is noisier (it cost study#3's double talk)."""
        cross2 = self._sey**2 + self._sey_q**2
        c2 = cross2 / (self._syy**2 + 1e-20)
        return np.where(self._coherent_t2(cross2) > self.settings.rotated_t**2, np.minimum(0.5 * c2, 1.0), 0.0)

    def _coherent_t2(self, cross2: np.ndarray | None = None) -> np.ndarray:
        """Per band, |c| in standard errors, squared (c as in `_rotated`; cross2: |E Y*|^2)."""
        cross2 = self._sey**2 + self._sey_q**2 if cross2 is None else cross2
        return cross2 / (self._see * self._syy + 1e-20) * self._dof**2

    def sliding(self) -> float:
        """Is the estimate measurably off, changed or not (0..1): the bands whose |c| is past
        slide_t standard errors, over slide_bands. Why: the filter's process noise, lowered
        while the path is where it was (`settled_q`), must rise again where the path slides by
        less than a change (a clock drift's remainder, a slow tilt); the user's voice, being
        uncorrelated with the estimate, does not raise it."""
        pc = self.settings
        return min(1.0, np.count_nonzero(self._coherent_t2() > pc.slide_t**2) / pc.slide_bands)

    def _residual_ratio(self, talk: float, see: np.ndarray) -> np.ndarray | None:
        """Per band, the error over the estimate's power while Moshi talks alone after the change
        (measured in this block if so, else the last such block's), or None (none yet, or off).
        Why: with Moshi alone the error is what the changed path leaves, so a held change larger
        than that ducks a user who starts talking while the filter re-learns."""
        pc = self.settings
        if not pc.cap:
            return None
        if talk < pc.follow_talk and self._talk < 0.5 and self._age >= pc.cap_after:
            self._alone_ratio = see / (self._syy + 1e-20)
        return self._alone_ratio

    def _evidence(self, t: np.ndarray, bands: np.ndarray, uncertain: float) -> bool:
        """Rule (a) by the bands' evidence summed, not counted: a change may show far beyond the
        threshold in one band and just under it in its neighbours (seen 0.4 s late by the count).
        `bands`: those whose wrong estimate explains their error. Only while Moshi talks alone
        into a settled filter (`uncertain`, its expected error over its estimate's power, under
        `settled`): under the user's voice, or while the filter learns, the sum fired on the
        filter's own adaptation."""
        pc = self.settings
        if not pc.evidence or not uncertain < pc.settled:
            return False
        counted = bands & (t < -pc.evidence_min)
        if float(np.minimum(-t[counted], pc.evidence_cap).sum()) < pc.evidence:
            return False
        return self._talk_before() < 0.5

    def _wrong_power(self, beta: np.ndarray) -> np.ndarray:
        """The error a wrong fraction `beta` (per band) leaves, over beta x |Y|^2: 2 for a moved
        path (its phases turned, its power kept), beta for a level change, mixed by `_level`."""
        return 2.0 + (beta - 2.0) * self._level

    def _low_high(self, ey: np.ndarray, yy: np.ndarray) -> tuple[float, float]:
        """The estimate's wrong fraction under level_hz[0] and above level_hz[1], from per-band
        E.Y and |Y|^2 (negative: the estimate short)."""
        low, high = self._low_bands, self._high_bands
        return -float(ey[low].sum()) / (float(yy[low].sum()) + 1e-20), -float(ey[high].sum()) / (
            float(yy[high].sum()) + 1e-20
        )

    def _level_change(self, short: bool = False) -> float:
        """How much the change looks like a level change (0: a moved path, 1: the level): the
        estimate's wrong fraction (short: its short fraction, the echo louder) at low
        frequencies against the high ones (`level_hz`), from `level_ratio[0]` to `level_ratio[1]`."""
        lo, hi = self.settings.level_ratio
        b_low, b_high = self._low_high(self._sey, self._syy)
        if short:
            b_low, b_high = -b_low, -b_high
        if b_low <= 0.0:
            return 0.0
        if b_high <= 0.0:
            return 1.0
        return float(np.clip((b_low / b_high - lo) / (hi - lo), 0.0, 1.0))

    def _level_gain(self, bey: np.ndarray, bee: np.ndarray, byy: np.ndarray) -> float | None:
        """The echo's new level over the old (the filter's path is scaled by it) when this
        block, with Moshi alone, shows a level change: the filter had converged (its error
        >= gain_db under the estimate lately), the block is no pause or tail, the error is the
        estimate scaled (their coherence >= gain_coherence) and as wrong, or as short, at low
        frequencies as at high ones (within level_ratio[1]). None otherwise. Arguments: this
        block's per-band E.Y, |E|^2, |Y|^2."""
        pc = self.settings
        if (self._pause and not self._tail) or not self._lr < -pc.gain_db:
            return None
        lo, hi = self._low_high(bey, byy)
        ey, ee, yy = float(bey.sum()), float(bee.sum()), float(byy.sum())
        if min(abs(lo), abs(hi)) < pc.gain_min or lo * hi <= 0 or min(lo / hi, hi / lo) < pc.level_ratio[1]:
            return None
        if ey * ey < pc.gain_coherence * ee * yy:
            return None
        return _new_level(ey, yy)

    def _talk_now(self, m: np.ndarray, see: np.ndarray) -> float:
        """Is the user talking now, after the change (0..1): the error far above what the held
        change explains (r: over m x hold x |Y|^2, band sums: ~0.3-1 with Moshi alone while the
        filter re-learns, 2-13 under the user's voice), not far under the estimate (q: the error
        over |Y|^2, 0.01-0.06 with Moshi alone once the filter has re-learnt, where r alone can
        reach 20) and not coherent with it (k: a changed echo is the estimate partly or wholly
        scaled, the user's voice is not): r^4 / (r^4 + talk_now_rho^4) x q^2 / (q^2 + talk_rho^2)
        x max(0, 1 - k / talk_now_coherence); 0 in a new change's first talk_now_after blocks,
        where the detector's estimates still lag the change. 0 with talk_now_rho 0. `see`: the
        error's power per band, this block's where above the average (as add_to's u takes it)."""
        pc = self.settings
        if not pc.talk_now_rho or self._age < pc.talk_now_after:
            return 0.0
        ee, yy, ey = float(see.sum()), float(self._syy.sum()), float(self._sey.sum())
        r4 = (ee / (float(np.sum(m * self._hold * self._syy)) + 1e-20)) ** 4
        q2 = (ee / (yy + 1e-20)) ** 2
        k = ey * ey / (float(self._see.sum()) * yy + 1e-20)
        return r4 / (r4 + pc.talk_now_rho**4) * q2 / (q2 + pc.talk_rho**2) * max(0.0, 1.0 - k / pc.talk_now_coherence)

    def _talk_before(self) -> float:
        """Was the user talking before this detection (0..1): the error over the expected echo
        0.5-0.1 s ago is ~ERLE^-1 (< 0.03) with Moshi alone, or while the filter learns (the
        residual expects it), ~1 with the user."""
        err, echo = self._levels[:-5].sum(axis=0)
        rho2 = (err / (echo + 1e-20)) ** 2
        return rho2 / (rho2 + self.settings.talk_rho**2)

    def _sudden_in_tail(self, quiet: bool, step: float, lr: float, bey, bee, byy) -> bool:
        """Rule (c) in a pause or reverberation tail of Moshi's: the path moved while the echo
        was fading. The error jumps over the block before (`step`, dB), and over its usual level
        against the estimate, while Moshi was talking alone into a converged filter (`quiet`);
        the estimate is wrong over the whole spectrum and in several bands and its wrong part
        explains the error (a user starting in Moshi's pause is far above the fading estimate)."""
        pc = self.settings
        if not pc.tail_step_db or not quiet or step < pc.tail_step_db or not lr - self._lr > pc.jump_db:
            return False
        self._sudden_sign = 1.0
        self._tail = self._wrong_shape(bey, bee, byy)
        return self._tail

    def _wrong_shape(self, bey, bee, byy) -> bool:
        """Rule (c)'s test of one block: the estimate wrong over the whole spectrum (>= sudden_wrong),
        its wrong part explaining the error, in >= sudden_bands bands."""
        pc = self.settings
        ey, ee, yy = float(bey.sum()), float(bee.sum()), float(byy.sum())
        bands = np.count_nonzero((-bey > pc.wrong * byy) & (-2.0 * bey > pc.alone * bee))
        return bool(
            -ey / (yy + 1e-20) >= pc.sudden_wrong  # a distorting speaker's peaks are less wrong
            and -2.0 * ey >= pc.alone * ee  # the wrong estimate is the error: not the user
            and bands >= pc.sudden_bands
        )

    def _sudden(self, bey: np.ndarray, bee: np.ndarray, byy: np.ndarray) -> bool:
        """Rule (c): a change seen in its first block. While Moshi talks alone into a converged
        filter (the error far below the estimate over the last ~0.2 s), the error jumps to near
        the estimate's level; it is a change, not the user starting to talk, when in that block
        (or the next, if the first already pointed that way) the estimate is wrong over the
        whole spectrum and in several bands, and its wrong part explains the error. In pauses
        and reverberation tails, where a distorting speaker or what the filter took from the
        user's voice shows as a wrong estimate, only in a block whose error jumps over the one
        before (`_sudden_in_tail`). Arguments: this block's per-band E.Y, |E|^2, |Y|^2."""
        pc = self.settings
        ey, ee, yy = float(bey.sum()), float(bee.sum()), float(byy.sum())
        ly, le = 10.0 * np.log10(yy + 1e-20), 10.0 * np.log10(ee + 1e-20)
        self._ly = max(ly, self._ly - 0.05)  # the estimate's level while Moshi talks (-2.5 dB/s)
        quiet = self._le < self._lye - pc.quiet_db
        self._le, self._lye = 0.9 * self._le + 0.1 * le, 0.9 * self._lye + 0.1 * ly
        # the same over Moshi's speech only: a louder echo is also seen at the first syllable after
        # a pause (the volume turned up while Moshi paused), where `quiet` has faded
        quiet_talk = self._le_talk < self._lye_talk - pc.quiet_db
        pause = self._pause = ly < self._ly - 10.0  # a pause or a reverberation tail
        self._tail = False  # rule (c) fired in a pause or tail (then its level test may scale the path)
        if not pause:
            self._le_talk, self._lye_talk = 0.9 * self._le_talk + 0.1 * le, 0.9 * self._lye_talk + 0.1 * ly
        if self._jump_age is not None:  # a change shows in its first two blocks; the user's voice may later
            self._jump_age = self._jump_age + 1 if self._jump_age < 1 else None
        lr = 10.0 * np.log10((ee + 1e-20) / (yy + 1e-20))
        step, self._le_last = le - self._le_last, le
        if pause:
            return self._sudden_in_tail(quiet, step, lr, bey, bee, byy)
        high = lr - self._lr > pc.jump_db
        self._lr = 0.95 * self._lr + 0.05 * lr if np.isfinite(self._lr) else lr
        quiet = quiet or (pc.louder and quiet_talk and ey > 0.0)
        if self._jump_age is None and quiet and high and not self._high:  # the rising edge
            self._jump_age, self._jump_wrong = 0, -ey / (yy + 1e-20)
        self._high = high
        # the estimate wrong (the error its negative: a moved microphone) or short (the error
        # its positive: the volume turned up), as the jump's first block pointed (the filter,
        # adapting on a user's first syllable, makes the next block's estimate wrong too)
        sign = 1.0 if self._jump_wrong > 0.0 else -1.0 if pc.louder and self._jump_wrong < 0.0 else 0.0
        self._sudden_sign = sign
        if self._jump_age is None or not sign:
            return False
        return self._wrong_shape(sign * bey, bee, byy)
