"""The canceller with its suppressor told the exact residual echo: how far the linear
canceller's structure could go after a path change if its estimate of the echo it leaves
were perfect, in the second after a change made during double talk (or the first second of a
user who starts just after one), scored with bench/aec_room.py's double-talk SNR.

    .venv/bin/python -m bench.aec_oracle [--rooms move2,move4] [--first-seed 100] [--seeds 8]

Why: bench/aec_bound.py bounds any suppressor on ideal signals (the exact old path, masks
that know the user); this runs the canceller itself (runtime/echo.py, its alignment, filter,
detector and suppressor, the stress bench's jittered feed) and replaces, from the change on,
only the suppressor's estimate of the residual echo's power by the truth (the simulated
echo minus the filter's estimate, which the simulation knows):
- `canceller`: unchanged (the stress bench's figure);
- `block`: the exact power per bin of each 20 ms filter block (what the filter hands the
  suppressor, exact);
- `frame`: the exact power in each of the suppressor's own frames (its gain from its own
  frames' error power too): the most a suppressor of this kind could know.
docs/echo-cancellation.md ("Session 12") has the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import aec_room as R  # noqa: E402
from moshi_mlx.audio import echo_filter as EF  # noqa: E402

SR = R.SR
MODES = ("canceller", "block", "frame")
DT_ROOMS = "move2,move4,hall-move2,hall-move7.6,hall-lid,volume,volume-up-dt,move4-user,hall-lid-user,volume-user"


class _Truth:
    """The simulated echo, and from which sample on the suppressor is told the truth (from the
    filter block that holds it: the filter's blocks, 20 ms, are not the runtime's, 80 ms)."""

    def __init__(self, echo: np.ndarray, start: int, mode: str):
        self.echo, self.start, self.mode = echo, start, mode
        self.block = 0
        self.hops: list[np.ndarray] = []  # this block's residual echo, per suppressor hop


class _FrameSuppressor(EF.ResidualSuppressor):
    """ResidualSuppressor whose gain is computed per hop from its own frame (the error's power
    there; in `frame` mode the residual's too, from the truth): its own `update` and `process`,
    called once per hop."""

    truth: _Truth | None = None

    def __init__(self, hop: int, **kw):
        super().__init__(hop, **kw)
        self.smooth **= 0.5  # per hop, `smooth` per block
        self._r = np.zeros(2 * self.hop, np.float32)

    def update(self, residual: np.ndarray, error_power: np.ndarray, floor: float | None = None) -> None:
        """The filter block's estimate, kept for its two frames."""
        self._residual = residual[:: (len(residual) - 1) // self.hop]
        self._floor = floor

    def process(self, e: np.ndarray) -> np.ndarray:
        """A filter block's hops one at a time (the canceller hands the suppressor whole blocks)."""
        h = self.hop
        return np.concatenate([self._process_hop(e[i : i + h]) for i in range(0, len(e), h)])

    def _process_hop(self, e: np.ndarray) -> np.ndarray:
        h = self.hop
        spectrum = np.fft.rfft(self._win * np.concatenate([self._e[h:], e]))  # the frame `process` will filter
        # a sqrt-Hann frame holds half a rectangular block's power: the filter's units
        power = 2.0 * (spectrum.real**2 + spectrum.imag**2)
        residual = self._residual
        t = self.truth
        if t is not None and t.hops:
            self._r[:h], self._r[h:] = self._r[h:], t.hops.pop(0)
            r = np.fft.rfft(self._win * self._r)
            residual = 2.0 * (r.real**2 + r.imag**2)
        super().update(residual, power, self._floor)
        return super().process(e)


@contextlib.contextmanager
def told_the_truth(truth: _Truth):
    """Within: every KalmanEchoFilter hands its suppressor the exact residual echo power from
    the filter block holding sample `truth.start` on (the filter's blocks are the capture's, in order, from its first
    sample: runtime/echo.py passes the microphone through unshifted); in `frame` mode the
    suppressor is _FrameSuppressor and reads it per hop."""
    process = EF.KalmanEchoFilter.process
    suppressor = EF.ResidualSuppressor

    def told(self, ref, mic):
        e, y = process(self, ref, mic)
        j, b = truth.block, self.block
        truth.block += 1
        truth.hops = []
        if (j + 1) * b > truth.start:
            r = truth.echo[j * b : (j + 1) * b] - (0.0 if self.worse else y)  # `worse` passes the microphone
            if truth.mode == "frame":
                truth.hops = [r[: b // 2], r[b // 2 :]]
            else:
                spec = np.fft.rfft(np.concatenate([np.zeros(b, np.float32), r]))
                self.residual = (spec.real**2 + spec.imag**2).astype(np.float32)
        return e, y

    EF.KalmanEchoFilter.process = told
    if truth.mode == "frame":
        _FrameSuppressor.truth = truth
        EF.ResidualSuppressor = _FrameSuppressor
    try:
        yield
    finally:
        EF.KalmanEchoFilter.process = process
        EF.ResidualSuppressor = suppressor
        _FrameSuppressor.truth = None


def second_after_change(
    moshi: np.ndarray, user: np.ndarray, room: R.Room, drive: R.Drive, modes=MODES, feed_clock=None
) -> dict:
    """aec_room.case()'s double-talk SNR and user level over the second after the change made
    during double talk (or the user's first second where they start just after a change), per
    mode. feed_clock: a context manager factory for the drive's feed (aec_stress.sim_clock)."""
    far, echo, near, noise, speaking, dt_a, _ = R.signals(moshi, user, room, drive)
    mic = echo + near + noise
    kw = dict(canceller="linear", hidden_s=room.hidden_ms / 1000.0, out_lat=room.out_lat_ms / 1000.0, feed=drive.feed)
    clock = (lambda: feed_clock(drive.feed)) if feed_clock and drive.feed is not None else contextlib.nullcontext
    with clock():
        out_user, _, _ = R.run_canceller(np.zeros_like(far), near + noise, **kw)  # s, as case() takes it
    m = dt_a if R.user_starts_after_change(room, drive, dt_a) else int(drive.dt_move_at * SR)
    sel = speaking[m : m + SR]
    res = {}
    for mode in modes:
        ctx = told_the_truth(_Truth(echo, m, mode)) if mode != "canceller" else contextlib.nullcontext()
        with ctx, clock():
            out, _, _ = R.run_canceller(far, mic, **kw)
        o, s = out[m : m + SR][sel], out_user[m : m + SR][sel]
        g = float(np.dot(o, s) / np.dot(s, s))
        res[mode] = (round(float(R.ratio_db(g * s, o - g * s)), 1), round(float(20 * np.log10(max(abs(g), 1e-6))), 1))
    return res


def main(argv=None) -> int:
    from bench import aec_stress as S

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rooms", default=DT_ROOMS, help="aec_stress room keys (default: every room with such a second)")
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--seeds", type=int, default=8)
    a = ap.parse_args(argv)
    voices = S.render_voices()
    for key in a.rooms.split(","):
        st = next(r for r in S.ROOMS if r.key == key)
        rows = []
        for seed in range(a.first_seed, a.first_seed + a.seeds):
            room, drive, drawn = S.Case(st, seed).draw()
            r = second_after_change(
                voices["moshi", drawn["moshi"]], voices["user", drawn["user"]], room, drive, feed_clock=S.sim_clock
            )
            rows.append(r)
            print(f"{key}#{seed}: " + ", ".join(f"{k} {v[0]} dB ({v[1]:+.1f} dB)" for k, v in r.items()), flush=True)
        print(
            f"{key}, {len(rows)} cases: "
            + "; ".join(
                f"{k} median {np.median([r[k][0] for r in rows]):.1f} dB, under 15 dB in "
                f"{sum(r[k][0] < 15 for r in rows)}, user level worst {min(r[k][1] for r in rows):+.1f} dB"
                for k in MODES
            ),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
