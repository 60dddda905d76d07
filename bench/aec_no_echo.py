"""The linear canceller where the microphone holds little or no echo of Moshi (headphones the
canceller was not told of, a muted speaker) and the user talks over Moshi.

Three Moshi / user pairs of the stress bench's espeak voices (bench/aec_stress.py), the user
from 5 s at 10 and 20 dB under Moshi's level, -60 dBFS noise, the echo through a 0.3 s room
at the given level (none: no echo), fed to `EchoCanceller` as the live loop does; printed:
the user's level change and SNR (least-squares gain, as bench/aec_room.py) over the rest of
the 16 s, the seconds the microphone passed unchanged, the re-alignments, the highest
GCC-PHAT confidence of the delay windows.

    python -m bench.aec_no_echo [--echo none,-40,-20,-6] [--canceller linear]
"""

from __future__ import annotations

import argparse

import numpy as np

from bench.aec_stress import render_voices
from bench.room import convolve, room_ir
from moshi_mlx.constants import SAMPLE_RATE as SR
from moshi_mlx.runtime import echo as echo_mod

PAIRS = [(0, 0), (1, 3), (2, 5)]  # (Moshi voice, user voice) indices
LEVELS_DB = (-10.0, -20.0)
START_S, SECONDS = 5.0, 16.0


def run(moshi: np.ndarray, user_voice: np.ndarray, user_db: float, echo_db: float | None, canceller: str) -> dict:
    far = moshi[: int(SECONDS * SR)]
    user = np.zeros_like(far)
    seg = user_voice[: len(far) - int(START_S * SR)]
    user[int(START_S * SR) : int(START_S * SR) + len(seg)] = seg * 10 ** (user_db / 20)
    mic = user + np.random.default_rng(0).standard_normal(len(user)).astype(np.float32) * 1e-3
    if echo_db is not None:
        mic = mic + convolve(far, room_ir(30.0, rt60_s=0.3, drr_db=3.0))[: len(mic)] * 10 ** (echo_db / 20)
    mic = mic.astype(np.float32)
    confidences = []
    ec = echo_mod.EchoCanceller(canceller=canceller)
    on_delay = ec._on_delay
    ec._on_delay = lambda lag, conf: (confidences.append(conf), on_delay(lag, conf))
    out = []
    for k in range(len(far) // 1920):
        t = k * 0.08
        ec.add_reference(far[k * 1920 : (k + 1) * 1920], t)
        out.append(ec.process(mic[k * 1920 : (k + 1) * 1920], t + 0.08))
    y = np.concatenate(out)
    d = ec.algorithmic_delay
    y = np.concatenate([y[d:], np.zeros(d, np.float32)])
    a = int(START_S * SR)
    u, c = user[a : len(y)], y[a:]
    g = float(np.dot(c, u) / np.dot(u, u))
    return {
        "level_db": 20 * np.log10(abs(g) + 1e-12),
        "snr_db": 10 * np.log10(np.sum((g * u) ** 2) / np.sum((c - g * u) ** 2)),
        "passed_s": ec.stats.summary().get("passed_s", 0.0),
        "realignments": ec.stats.realignments,
        "confidence_max": max(confidences) if confidences else float("nan"),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--echo", default="none,-40,-20,-6", help="echo levels in dB under the reference, or none")
    ap.add_argument("--canceller", choices=echo_mod.CANCELLERS, default="linear")
    a = ap.parse_args(argv)
    voices = render_voices()
    moshi = [v for k, v in voices.items() if k[0] == "moshi"]
    users = [v for k, v in voices.items() if k[0] == "user"]
    print("| echo | user | pair | level dB | SNR dB | passed s | re-alignments | GCC confidence max |")
    print("|---|---|---|---|---|---|---|---|")
    for e in a.echo.split(","):
        echo_db = None if e == "none" else float(e)
        for user_db in LEVELS_DB:
            for m, u in PAIRS:
                r = run(moshi[m], users[u], user_db, echo_db, a.canceller)
                print(
                    f"| {e} | {user_db:+.0f} dB | {m}/{u} | {r['level_db']:+.1f} | {r['snr_db']:.1f} | "
                    f"{r['passed_s']:.0f} | {r['realignments']} | {r['confidence_max']:.0f} |",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
