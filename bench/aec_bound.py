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
from bench.room import convolve, ratio_db, reflective_room_ir  # noqa: E402

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
    """The signals of aec_room.case() (same room, user level, noise) around its move during double talk."""
    n = max(len(moshi), int((R.DT_START + 0.5) * SR) + len(user)) // R.BLOCK * R.BLOCK + R.BLOCK * 10
    far = np.zeros(n, np.float32)
    far[: len(moshi)] = moshi[:n]
    played = R._speaker(far, room.clip)
    direction = np.array([0.6, 0.8, 0.0]) * room.move_cm / 100.0
    ir = lambda m: reflective_room_ir(
        room.delay_ms, rt60_s=room.rt60_s, drr_db=room.drr_db, gain=0.5, seed=room.seed, move_m=tuple(m)
    )
    cuts = [0, int(R.MOVE_AT * SR), int(R.DT_MOVE_AT * SR), n]
    parts = [convolve(played, ir(m))[:n] for m in (0 * direction, direction, direction * np.array([1, -1, 1]))]
    echo = np.concatenate([p[a:b] for p, a, b in zip(parts, cuts, cuts[1:])])
    dt_a, dt_b = int(R.DT_START * SR), min(int(R.DT_START * SR) + len(user), len(moshi))
    near = np.zeros(n, np.float32)
    near[dt_a : dt_a + len(user)] = user[: n - dt_a]
    speaking = np.zeros(n, bool)
    speaking[dt_a:dt_b] = np.abs(np.convolve(near[dt_a:dt_b], np.ones(480) / 480, mode="same")) > 3e-3
    sel = speaking[dt_a:dt_b]
    near *= 10 ** ((room.ser_db - ratio_db(near[dt_a:dt_b][sel], echo[dt_a:dt_b][sel])) / 20)
    noise = np.random.default_rng(room.seed + 1).standard_normal(n).astype(np.float32) * 10 ** (R.NOISE_DB / 20)
    m, pad = cuts[2], SR // 2
    span = slice(m - pad, m + SR + pad)
    talking = speaking[m : m + SR]
    rest = (echo + noise)[span]
    res = {
        "room": room.name,
        "microphone_snr_db": round(ratio_db(near[m : m + SR][talking], rest[pad:-pad][talking]), 1),
    }
    for hop in (120, 240, 480, 768):
        res[f"ideal_mask_{2 * hop * 1000 // SR}ms_db"] = round(ideal_mask_snr(near[span], rest, talking, hop), 1)
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
