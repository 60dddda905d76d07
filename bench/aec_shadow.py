"""The alternative to the path-change detector, measured on the same rooms: a fast-adapting
"shadow" filter beside the Kalman filter (Speex MDF's foreground/background, WebRTC AEC3's
coarse/refined filters), whose coefficients the Kalman filter takes over when the shadow's
error is clearly smaller, and which is reset to the Kalman filter's when it is clearly worse
(it adapted on the user's voice).

    .venv/bin/python -m bench.aec_shadow [--rooms 0,1,7,8,9]

Prints bench/aec_room.py's measures for three cancellers: the Kalman filter alone, with the
shadow filter, and with the path-change detector (the default).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import bench.aec_room as aec_room  # noqa: E402
from moshi_mlx.audio import echo_filter  # noqa: E402


class ShadowKalmanFilter(echo_filter.KalmanEchoFilter):
    """The Kalman filter (detector off) plus a full-length frequency-domain NLMS shadow
    (step `mu`, normalised per bin by the reference power over all partitions). Hand-over:
    the shadow's smoothed error power below `better` x the Kalman's for `persist` blocks;
    the Kalman state uncertainty is then raised to the coefficients' change."""

    def __init__(self, block, length, *, mu=1.0, better=0.7, worse=4.0, persist=3, **kw):
        super().__init__(block, length, path_change=None, **kw)
        self._Ws = np.zeros_like(self._W)
        self.mu, self.better, self.worse_ratio, self.persist = mu, better, worse, persist
        self._em = self._es = 0.0
        self._run = 0
        self.handovers = 0

    def process(self, ref, mic):
        e, y = super().process(ref, mic)
        b = self.block
        mic = np.asarray(mic, np.float32).reshape(-1)
        ys = np.fft.irfft(np.einsum("pk,pk->k", self._X, self._Ws))[b:]
        es = mic - ys
        Es = np.fft.rfft(np.concatenate([np.zeros(b, np.float32), es]))
        power = self._X2.sum(axis=0) + 1e-6
        self._Ws += (self.mu / power) * np.conj(self._X) * Es.astype(np.complex64)
        wt = np.fft.irfft(self._Ws, axis=-1)
        wt[:, b:] = 0.0
        self._Ws = np.fft.rfft(wt, axis=-1).astype(np.complex64)
        self._em = 0.8 * self._em + 0.2 * float(np.dot(e, e))
        self._es = 0.8 * self._es + 0.2 * float(np.dot(es, es))
        self._run = self._run + 1 if self._es < self.better * self._em else 0
        if self._run >= self.persist:  # the shadow clearly does better: the Kalman filter takes it over
            d = self._Ws - self._W
            self._W = self._Ws.copy()
            self._P = np.maximum(self._P, (d.real**2 + d.imag**2).astype(np.float32))
            self._run, self._em = 0, self._es
            self.handovers += 1
        elif self._es > self.worse_ratio * self._em:  # it adapted on the user: back to the Kalman filter's
            self._Ws = self._W.copy()
            self._es = self._em
        return e, y


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rooms", default="0,1,7,8,9")
    a = ap.parse_args(argv)
    moshi, user, _ = aec_room.voices()
    original = echo_filter.KalmanEchoFilter
    variants = {
        "kalman alone": lambda b, n, **kw: original(b, n, path_change=None, **kw),
        "kalman + shadow": ShadowKalmanFilter,
        "kalman + detector (default)": original,
    }
    print(
        "| canceller | room | steady ERLE | DT SNR | ERLE 0-1 s / 1-2 s after a move | min ERLE from 1 s / 2 s "
        "| DT SNR, user level in the second after a move | CPU ms per 80 ms |\n|" + "---|" * 8
    )
    for name, make in variants.items():
        echo_filter.KalmanEchoFilter = make
        try:
            for i in (int(x) for x in a.rooms.split(",")):
                r = aec_room.case(moshi, user, aec_room.ROOMS[i])
                moved = (
                    f"{r['after_move_erle_0_1s_db']} / {r['after_move_erle_1_2s_db']} | "
                    f"{r['after_move_min_erle_1s_on_db']} / {r['after_move_min_erle_2s_on_db']} | "
                    f"{r['dt_after_move_snr_db']}, {r['dt_after_move_user_level_db']}"
                    if r["room"]["move_cm"]
                    else "— | — | —"
                )
                print(
                    f"| {name} | {r['room']['name']} | {r['erle_db']} | {r['dt_snr_db']} | {moved} | "
                    f"{r['cpu_ms_per_80ms_median']} |",
                    flush=True,
                )
        finally:
            echo_filter.KalmanEchoFilter = original
    return 0


if __name__ == "__main__":
    sys.exit(main())
