"""What any suppressor could do in the second after a path change during double talk: the
ideal ratio mask (it knows the echo and the user exactly, per time-frequency bin) applied
to the microphone, and applied after the exact old echo path (a linear filter that had
learnt the room perfectly before the move and does not re-learn), scored with
bench/aec_room.py's double-talk SNR.

    .venv/bin/python -m bench.aec_bound [--rooms 7,8,9]
    .venv/bin/python -m bench.aec_bound --stress [--first-seed 100] [--seeds 8] [--against RESULTS.json]

Why: issue #21 asks for a user SNR >= 15 dB in the second after the echo path changes while
both talk. A linear filter cannot re-learn a 400 ms path within that second from speech
mixed with the user's voice (least squares on N taps from T samples under a voice as loud
as the echo leaves the echo-to-error ratio near T / N: ~1 dB after 0.5 s of 9600 taps), so
what it can keep is the old path's share of the new one, and a suppressor does the rest;
the two ideal masks bound that. Two more masks on 20 ms frames (docs/echo-cancellation.md,
session 12): the best gain in [0, 1] per bin (no suppressor does better on those frames)
and the echo's exact power subtracted (the best a suppressor of the usual kind could do,
its estimate of the echo's power exact). Frames of 10 to 64 ms (the canceller's suppressor uses 20
ms). --stress runs bench/aec_stress.py's moved rooms (its draws, voices and noise; the
runtime's alignment is taken as exact) and, with --against (an aec_stress JSON), prints the
canceller's own figure for each case beside the bounds.
"""

from __future__ import annotations

import argparse
import json
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


def ideal_mask_snr(user: np.ndarray, rest: np.ndarray, talking: np.ndarray, hop: int, kind: str = "ratio") -> float:
    """DT SNR (aec_room's definition) of a mask over `user` + `rest` (M) that knows both; the
    signals carry `pad` samples on both sides of the scored span `talking` marks. kind:
    - "ratio": the ideal ratio mask |S|^2 / (|S|^2 + |N|^2);
    - "best": the phase-sensitive mask Re(S conj(M)) / |M|^2 clipped to [0, 1], per bin the
      gain in [0, 1] closest to the user's voice (least squares): no suppressor, however it
      estimates its gains, does better on these frames (up to the metric's refit of the level);
    - "subtract": 1 - |N|^2 / |M|^2 clipped to [0, 1], a suppressor of the usual kind (ours,
      Speex's: a gain from its estimate of the echo's power and the observed power) whose
      estimate of the echo's power is exact in every bin."""
    pad = (len(user) - len(talking)) // 2
    (S, win), (N, _) = _frames(user, hop), _frames(rest, hop)
    M = S + N
    m2 = M.real**2 + M.imag**2 + 1e-20
    if kind == "best":
        mask = np.clip((S.real * M.real + S.imag * M.imag) / m2, 0.0, 1.0)
    elif kind == "subtract":
        mask = np.clip(1.0 - np.abs(N) ** 2 / m2, 0.0, 1.0)
    elif kind == "ratio":
        mask = np.abs(S) ** 2 / (np.abs(S) ** 2 + np.abs(N) ** 2 + 1e-20)
    else:
        raise ValueError(f"unknown mask kind {kind!r}")
    o = _overlap_add(mask * (S + N), win, hop, len(user))[pad : pad + len(talking)][talking]
    s = _overlap_add(S, win, hop, len(user))[pad : pad + len(talking)][talking]
    g = float(np.dot(o, s) / np.dot(s, s))
    return ratio_db(g * s, o - g * s)


def room_second_after_move(moshi, user, room: R.Room, dr: R.Drive | None = None, hops=(120, 240, 480, 768)) -> dict:
    """aec_room.case()'s signals (same room, user level, noise) around its move during double
    talk, or, where the user starts within 2 s of a change made while Moshi talked alone (as
    aec_room.case() then measures), around the user's first second: the microphone's SNR, the ideal mask on
    it per frame size, and with 20 ms frames after the exact old path (before that change),
    with how much of the new echo that path removes."""
    dr = dr or R.Drive()
    sig = R.signals(moshi, user, room, dr)
    user_first = R.user_starts_after_change(room, dr, sig.dt_a)
    m, pad = (sig.dt_a if user_first else int(dr.dt_move_at * SR)), SR // 2
    span = slice(m - pad, m + SR + pad)
    talking = sig.speaking[m : m + SR]
    rest = (sig.echo + sig.noise)[span]
    left = sig.echo - R.path_echo(room, dr, sig.far, 0 if user_first else 1)  # what the path before the change leaves
    res = {
        "room": room.name,
        "microphone_snr_db": round(ratio_db(sig.near[m : m + SR][talking], rest[pad:-pad][talking]), 1),
    }
    for hop in hops:
        res[f"ideal_mask_{2 * hop * 1000 // SR}ms_db"] = round(ideal_mask_snr(sig.near[span], rest, talking, hop), 1)
    res["old_path_removes_db"] = round(ratio_db(sig.echo[m : m + SR], left[m : m + SR]), 1)
    res["ideal_mask_after_old_path_db"] = round(
        ideal_mask_snr(sig.near[span], (left + sig.noise)[span], talking, 240), 1
    )
    for kind in ("best", "subtract"):
        res[f"{kind}_mask_20ms_db"] = round(ideal_mask_snr(sig.near[span], rest, talking, 240, kind), 1)
        res[f"{kind}_mask_after_old_path_db"] = round(
            ideal_mask_snr(sig.near[span], (left + sig.noise)[span], talking, 240, kind), 1
        )
    return res


def stress(first_seed: int, seeds: int, against: Path | None) -> list[dict]:
    """The bounds for every case of bench/aec_stress.py (seeds first_seed..+seeds) whose user
    talks through a change or starts just after one."""
    from bench import aec_stress as S

    done = {}
    if against is not None:
        done = {
            (r["key"], r["seed"]): r.get("dt_user_after_move_snr_db", r.get("dt_after_move_snr_db"))
            for r in json.loads(against.read_text())["results"]
        }
    voices = S.render_voices()
    rows = []
    for st in (r for r in S.ROOMS if r.move_cm or r.user_after_s):
        for seed in range(first_seed, first_seed + seeds):
            room, dr, drawn = S.Case(st, seed, jitter=False).draw()
            res = room_second_after_move(
                voices["moshi", drawn["moshi"]], voices["user", drawn["user"]], room, dr, (240,)
            )
            res["case"] = f"{st.key}#{seed}"
            res["group"] = (
                f"{st.key}: the user's first second" if st.user_after_s else f"{room.move_cm} cm during double talk"
            )
            if (st.key, seed) in done:
                res["canceller_db"] = done[st.key, seed]
            rows.append(res)
            print(res, flush=True)
    for group in sorted({r["group"] for r in rows}):
        sel = [r for r in rows if r["group"] == group]
        line = f"{group}, {len(sel)} cases: " + ", ".join(
            f"{name} median {np.median([r[k] for r in sel]):.1f} dB, under 15 dB in {sum(r[k] < 15 for r in sel)}"
            for name, k in (
                ("ideal mask on the microphone", "ideal_mask_20ms_db"),
                ("after the exact old path", "ideal_mask_after_old_path_db"),
                ("the best gain on the microphone", "best_mask_20ms_db"),
                ("the best gain after the exact old path", "best_mask_after_old_path_db"),
                ("exact echo power subtracted after the exact old path", "subtract_mask_after_old_path_db"),
            )
        )
        if all("canceller_db" in r for r in sel):
            line += f"; the canceller median {np.median([r['canceller_db'] for r in sel]):.1f} dB, under 15 dB in {sum(r['canceller_db'] < 15 for r in sel)}"
        print(line)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rooms", default=",".join(str(i) for i, r in enumerate(R.ROOMS) if r.move_cm))
    ap.add_argument("--stress", action="store_true", help="bench/aec_stress.py's moved rooms instead")
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--against", type=Path, default=None, help="an aec_stress results JSON to compare with")
    a = ap.parse_args(argv)
    if a.stress:
        stress(a.first_seed, a.seeds, a.against)
        return 0
    moshi, user, src = R.voices()
    print(f"voices: {src}")
    for i in (int(x) for x in a.rooms.split(",")):
        print(room_second_after_move(moshi, user, R.ROOMS[i]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
