"""What any suppressor could do in the second after a path change during double talk: the
ideal ratio mask (it knows the echo and the user exactly, per time-frequency bin) applied
to the microphone, scored with bench/aec_room.py's double-talk SNR.

    .venv/bin/python -m bench.aec_bound [--rooms 7,8,9]

Why: issue #21 asks for a user SNR >= 15 dB in the second after the echo path changes while
both talk. A linear filter cannot re-learn a 400 ms path within that second from speech
mixed with the user's voice, so what is left is a suppressor; this bounds it. Frames of 10
to 64 ms (the canceller's suppressor uses 20 ms).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import aec_room as R  # noqa: E402
from bench.room import ratio_db  # noqa: E402

SR = R.SR


def _frames(x: np.ndarray, hop: int) -> tuple[np.ndarray, np.ndarray]:
    n = 2 * hop
    win = np.sqrt(0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n))
    return np.fft.rfft(np.stack([x[i : i + n] * win for i in range(0, len(x) - n + 1, hop)]), axis=1), win


def _overlap_add(spec: np.ndarray, win: np.ndarray, hop: int, length: int) -> np.ndarray:
    y = np.zeros(length)
    for j, f in enumerate(np.fft.irfft(spec, axis=1) * win):
        y[j * hop : j * hop + 2 * hop] += f
    return y


def ideal_mask_snr(user: np.ndarray, rest: np.ndarray, talking: np.ndarray, hop: int) -> float:
    """DT SNR (aec_room's definition) of the ideal ratio mask over `user` + `rest`; the
    signals carry `pad` samples on both sides of the scored span `talking` marks."""
    pad = (len(user) - len(talking)) // 2
    (S, win), (N, _) = _frames(user, hop), _frames(rest, hop)
    mask = np.abs(S) ** 2 / (np.abs(S) ** 2 + np.abs(N) ** 2 + 1e-20)
    o = _overlap_add(mask * (S + N), win, hop, len(user))[pad : pad + len(talking)][talking]
    s = _overlap_add(S, win, hop, len(user))[pad : pad + len(talking)][talking]
    g = float(np.dot(o, s) / np.dot(s, s))
    return ratio_db(g * s, o - g * s)


def room_second_after_move(moshi, user, room: R.Room) -> dict:
    """aec_room.case()'s signals (same room, user level, noise) around its move during double talk."""
    dr = R.Drive()
    sig = R.signals(moshi, user, room, dr)
    m, pad = int(dr.dt_move_at * SR), SR // 2
    span = slice(m - pad, m + SR + pad)
    talking = sig.speaking[m : m + SR]
    rest = (sig.echo + sig.noise)[span]
    res = {
        "room": room.name,
        "microphone_snr_db": round(ratio_db(sig.near[m : m + SR][talking], rest[pad:-pad][talking]), 1),
    }
    for hop in (120, 240, 480, 768):
        res[f"ideal_mask_{2 * hop * 1000 // SR}ms_db"] = round(ideal_mask_snr(sig.near[span], rest, talking, hop), 1)
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rooms", default=",".join(str(i) for i, r in enumerate(R.ROOMS) if r.move_cm))
    a = ap.parse_args(argv)
    moshi, user, src = R.voices()
    print(f"voices: {src}")
    for i in (int(x) for x in a.rooms.split(",")):
        print(room_second_after_move(moshi, user, R.ROOMS[i]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
