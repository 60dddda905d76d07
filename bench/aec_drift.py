"""The linear canceller when the microphone's clock drifts from the output device's.

A 0.3 s room (bench/room.py), `speech_like` as Moshi, the echo resampled (band-limited) so that the
microphone takes 1 + ppm x 1e-6 reference samples per sample of its own, -80 dBFS noise, fed
to `EchoCanceller` as the live loop does. Printed per drift: the ERLE of each 10 s, the drift
the canceller read (`EchoStats.drift_ppm`) and the lags its delay windows measured.

    python -m bench.aec_drift [--ppm 0,10,20,50,200,-100] [--seconds 90]
"""

from __future__ import annotations

import argparse

import numpy as np

from bench.room import convolve, ratio_db, room_ir, speech_like
from moshi_mlx.audio.fractional import FractionalReader
from moshi_mlx.constants import SAMPLE_RATE as SR
from moshi_mlx.runtime.echo import EchoCanceller

BLOCK = 1920


def run(ppm: float, seconds: float) -> dict:
    far = speech_like(seconds, seed=2)
    echo = convolve(far, room_ir(30.0, rt60_s=0.3, drr_db=3.0))[: len(far)].astype(np.float32)
    step = 1.0 + ppm * 1e-6
    t = np.arange(int(len(echo) / step) - 100) * step
    mic = FractionalReader().read(echo, t)  # band-limited (np.interp's straight lines would modulate the path)
    n = len(mic) // BLOCK * BLOCK
    mic = mic[:n] + np.random.default_rng(1).standard_normal(n).astype(np.float32) * 1e-4
    ec = EchoCanceller(canceller="linear")
    out = []
    for k in range(n // BLOCK):
        ec.add_reference(far[k * BLOCK : (k + 1) * BLOCK], k * BLOCK / SR)
        out.append(ec.process(mic[k * BLOCK : (k + 1) * BLOCK], (k + 1) * BLOCK / SR))
    clean = np.concatenate(out)
    return {
        "erle_per_10s_db": [
            round(ratio_db(mic[a * SR : (a + 10) * SR], clean[a * SR : (a + 10) * SR]), 1)
            for a in range(0, int(len(clean) / SR) - 9, 10)
        ],
        "drift_read_ppm": ec.stats.drift_ppm,
        "lags_ms": ec.stats.delay_estimates_ms,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ppm", default="0,10,20,50,200,-100")
    ap.add_argument("--seconds", type=float, default=90.0)
    a = ap.parse_args(argv)
    print("| drift ppm | ERLE per 10 s, dB | drift read, ppm | first / last lag, ms |")
    print("|---|---|---|---|")
    for ppm in (float(v) for v in a.ppm.split(",")):
        r = run(ppm, a.seconds)
        lags = r["lags_ms"]
        ends = f"{lags[0]:.2f} / {lags[-1]:.2f}" if lags else "-"
        erle = ", ".join(f"{v:.1f}" for v in r["erle_per_10s_db"])
        print(f"| {ppm:+.0f} | {erle} | {r['drift_read_ppm']:+.1f} | {ends} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
