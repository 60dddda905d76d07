"""Echo cancellation in a simulated room: Moshi's voice played through a reverberant impulse
response into the microphone together with a user's voice, cleaned by the live loop's
`EchoCanceller` (runtime/echo.py) exactly as the devices would feed it.

    .venv/bin/python -m bench.aec_room [--quick] [--rooms 0,5,9] [--canceller linear|aec3] [--no-live]

Voices: espeak-ng renders "Moshi" (en-us) and "the user" (en-gb, female) when it is
installed (apt-get install espeak-ng); otherwise moshi_mlx/assets/hello.wav and bench/room.py's
speech-like signal stand in (the report says which).

Rooms (ROOMS): bench/room.py's reflective_room_ir (reflections with directions, so that a
moved microphone changes the response as in a room), RT60 0.25-0.8 s, weak direct paths,
a soft-clipping speaker, device latencies misreported both ways, and microphone moves of
2-7.6 cm. Timeline per case: Moshi talks from 0 s; in the rooms with a move the microphone
moves at MOVE_AT (Moshi alone) and back across at DT_MOVE_AT (both talking); the user
starts at DT_START (double talk until Moshi's text ends). The simulated device reports
input/output latencies of 10/20 ms (or the room's) but its output really takes the room's
`hidden_ms` longer (negative: shorter), so the measured correction has something to find.

Measures (mic = echo + user + noise, out = cleaned):
- ERLE: 10 log10(E[mic^2] / E[out^2]) over Moshi-only time after convergence (3 s .. the
  first move or DT_START);
- convergence: the start of the first 0.25 s window from which >= 90% of the following
  Moshi-only windows (echo within 30 dB of the loudest and 30 dB above the noise) have
  ERLE >= 25 dB;
- after a move: ERLE in its first and second second, the lowest window from 1 s and from
  2 s on, when every later window is back at >= 20 / 25 dB, and the double-talk SNR and
  user level in the second after the move made while both talk;
- double-talk SNR of the user's speech: the user's voice alone through an identical
  canceller (same high-pass and delay) is the signal s; SNR = 10 log10(E[s^2] / E[(out - g s)^2])
  over the double-talk span where the user is speaking, g the least-squares gain (a constant
  level change is not damage): residual echo and any distortion of the user count as noise;
  also the residual echo alone (echo-only run) below the user's level, and the user's level change;
- the round-trip estimate (PortAudio latencies + the GCC-PHAT correction) against the truth;
- per-frame cost: the canceller's process CPU time per 80 ms of audio (median, p99), and
  the load average at the start and end of the run;
- the session line and the path changes the canceller detected (and how long it took to be
  back at 20 dB ERLE);
- the live loop (DuplexPipeline on the simulated device in real time, the room's echo fed
  back): Moshi's voice level in what Mimi encodes with and without cancellation, and the
  canceller's time per frame on the encoder thread.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import NamedTuple
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.room import Shoebox, convolve, ratio_db, reflective_room_ir, room_ir, shoebox_ir, speech_like  # noqa: E402
from moshi_mlx.audio.io import read_audio  # noqa: E402
from moshi_mlx.runtime.echo import CANCELLERS, DEFAULT_CANCELLER, EchoCanceller  # noqa: E402

SR = 24_000
BLOCK = 1920
IN_LAT, OUT_LAT, HIDDEN = 0.010, 0.020, 0.012  # reported latencies, and what the output hides
MOVE_AT = 7.0  # the first path change (Moshi alone)
DT_START = 12.0  # the user talks over Moshi from here
DT_MOVE_AT = 14.0  # the second path change (both talk)
NOISE_DB = -60.0

MOSHI_TEXT = (
    "Hello, I am Moshi. I listen and talk at the same time, which is what makes a conversation feel "
    "natural. Tell me about your day, and I will answer as quickly as I can. The weather is lovely "
    "today, and I was thinking about the sea, the long beaches, and the boats coming back in the evening."
)
USER_TEXT = (
    "Hi Moshi, I would like to know more about the history of Paris, and what I should visit first "
    "when I arrive there next week with my family."
)


def speak(voice: str, text: str, speed: int = 165, pitch: int | None = None) -> np.ndarray:
    """espeak-ng's rendering of `text` (24 kHz mono); voice e.g. 'en-us', 'fr-fr+f2'."""
    with tempfile.TemporaryDirectory() as d:
        w = Path(d) / "voice.wav"
        cmd = ["espeak-ng", "-v", voice, "-s", str(speed)] + (["-p", str(pitch)] if pitch is not None else [])
        subprocess.run(cmd + ["-w", str(w), text], check=True)
        return read_audio(w).reshape(-1)


def speaking_level(x: np.ndarray) -> np.ndarray:
    """`x` scaled to -20 dBFS while speaking (samples above -60 dBFS)."""
    return (x * (0.1 / np.sqrt(np.mean(x[np.abs(x) > 1e-3] ** 2)))).astype(np.float32)


def voices() -> tuple[np.ndarray, np.ndarray, str]:
    """(moshi, user, source) at 24 kHz."""
    if shutil.which("espeak-ng"):
        moshi, user = speak("en-us", MOSHI_TEXT, 165), speak("en-gb+f3", USER_TEXT, 150, 70)
        src = "espeak-ng (en-us 'Moshi', en-gb+f3 'user')"
    else:
        hello = read_audio(ROOT / "moshi_mlx" / "assets" / "hello.wav").reshape(-1)
        moshi = np.concatenate([hello] * 4)
        user = np.array(speech_like(8.0, seed=7, f0=(180.0, 260.0)))
        src = "moshi_mlx/assets/hello.wav x4 ('Moshi'), bench/room.py speech_like ('user'): espeak-ng not installed"
    return speaking_level(moshi), speaking_level(user), src


def ideal_feed(n_blocks: int, out_lat: float, hidden_s: float):
    """The callbacks of a punctual device, in the order they happen: ("ref", j, t) when the
    output is handed reference block j (at j*B - (out_lat + hidden_s), so that it plays at
    j*B), ("cap", k, t) when capture block k arrives ((k+1)*B + IN_LAT); every reference
    block handed before a capture block arrives comes first."""
    handed_blocks = 0
    for k in range(n_blocks):
        t = k * BLOCK / SR
        while handed_blocks * BLOCK / SR - out_lat - hidden_s <= t + BLOCK / SR + IN_LAT:
            yield "ref", handed_blocks, handed_blocks * BLOCK / SR - out_lat - hidden_s
            handed_blocks += 1
        yield "cap", k, t + BLOCK / SR + IN_LAT


def run_canceller(
    far: np.ndarray, mic: np.ndarray, *, hidden_s: float = HIDDEN, out_lat: float = OUT_LAT, feed=None, **kw
) -> tuple[np.ndarray, EchoCanceller, list]:
    """Feed the canceller as the live loop does, callback by callback (`feed(n_blocks, out_lat,
    hidden_s)`, default `ideal_feed`): a reference block with the time the pipeline computes
    (callback time + the reported `out_lat`; `hidden_s` is what the device gets wrong,
    negative: over-reported), a capture block with its callback time. Returns the cleaned
    signal, the canceller and its process CPU time per 80 ms block."""
    ec = EchoCanceller(input_latency_s=IN_LAT, output_latency_s=out_lat, **kw)
    out, cost = [], []
    for kind, j, t in (feed or ideal_feed)(len(mic) // BLOCK, out_lat, hidden_s):
        if kind == "ref":
            ec.add_reference(far[j * BLOCK : (j + 1) * BLOCK], t + out_lat)  # what the pipeline computes
            continue
        t0 = time.process_time()
        out.append(ec.process(mic[j * BLOCK : (j + 1) * BLOCK], t))
        cost.append((time.process_time() - t0) * 1000.0)
    y = np.concatenate(out)
    d = ec.algorithmic_delay
    y = np.concatenate([y[d:], np.zeros(d, np.float32)])  # undo the canceller's block delay
    if len(y) < len(mic) // BLOCK * BLOCK:  # samples still held for a late reference at the end
        y = np.concatenate([y, np.zeros(len(mic) // BLOCK * BLOCK - len(y), np.float32)])
    return y, ec, cost


def window_erle(mic, out, echo, a, b, w=SR // 4, noise_db=NOISE_DB):
    """ERLE of the 0.25 s windows of [a, b) with echo within 30 dB of the loudest and 30 dB
    above the microphone's noise (below that the noise, not the canceller, bounds the ERLE)."""
    vals, starts = [], []
    peak = max(float(np.mean(echo[k : k + w] ** 2)) for k in range(a, b - w + 1, w))
    floor = 1e3 * 10 ** (noise_db / 10)
    for k in range(a, b - w + 1, w):
        if np.mean(echo[k : k + w] ** 2) > max(peak * 1e-3, floor):
            vals.append(ratio_db(mic[k : k + w], out[k : k + w]))
            starts.append(k / SR)
    return np.array(vals), np.array(starts)


def convergence_s(vals, starts, thresh=25.0, frac=0.9):
    for i in range(len(vals)):
        if np.mean(vals[i:] >= thresh) >= frac:
            return float(starts[i])
    return float("nan")


def recovery_s(vals, starts, t0, thresh):
    """Seconds after `t0` from which every following window has ERLE >= thresh: 0 when none
    is below, the start of the window after the last one below, nan when that is the last."""
    low = np.flatnonzero(np.asarray(vals) < thresh)
    if not len(low):
        return 0.0
    if low[-1] + 1 >= len(vals):
        return float("nan")
    return round(float(starts[low[-1] + 1]) - t0, 2)


@dataclass
class Room:
    """One bench case. delay_ms: the acoustic delay; drr_db: direct-to-reverberant ratio;
    ser_db: the user's level against the echo while both talk; hidden_ms: output latency the
    device does not report (negative: over-reported; then it reports `out_lat_ms`); move_cm:
    the microphone moves that far at MOVE_AT during Moshi's speech and again at DT_MOVE_AT
    during double talk (the lid moved); clip: the speaker soft-clips (tanh, Moshi's peaks 2.3 dB down);
    volume_db: instead (or as well), the echo turns that much louder at MOVE_AT and back at DT_MOVE_AT."""

    name: str
    delay_ms: float = 80.0
    rt60_s: float = 0.3
    drr_db: float = 6.0
    ser_db: float = 0.0
    hidden_ms: float = 1000.0 * HIDDEN
    out_lat_ms: float = 1000.0 * OUT_LAT
    move_cm: float = 0.0
    clip: bool = False
    seed: int = 0
    volume_db: float = 0.0  # the speaker turned up by this much (down if < 0) at MOVE_AT, back at DT_MOVE_AT
    # a shoebox room's geometry (bench/room.py Shoebox: dims, source, mic, metres) instead of
    # reflective_room_ir's reflections; then delay_ms is the converters' delay only and drr_db
    # follows from the geometry
    box: Shoebox | None = None

    @property
    def changes(self) -> bool:
        """The echo path changes during the case (a move or the volume)."""
        return bool(self.move_cm or self.volume_db)


@dataclass
class Drive:
    """How a case is played (the defaults: this bench's timeline). move_dir / back_dir: where
    the microphone is after the first / second move, in units of the room's `move_cm`; feed:
    the device's callbacks (run_canceller)."""

    move_at: float = MOVE_AT
    dt_start: float = DT_START
    dt_move_at: float = DT_MOVE_AT
    noise_db: float = NOISE_DB
    move_dir: tuple = (0.6, 0.8, 0.0)
    back_dir: tuple = (0.6, -0.8, 0.0)
    feed: object = None
    echo_gain: float = 0.5  # the direct path's gain (the echo's level)


def user_starts_after_change(room: Room, dr: Drive, dt_a: int) -> bool:
    """The user starts talking (at sample `dt_a`) in the 2 s after the change made while Moshi
    talks alone: their first second is measured, not the seconds after the change."""
    return bool(room.changes) and dt_a < int(dr.move_at * SR) + 2 * SR


def _lowest(v: np.ndarray) -> float:
    """The lowest window (nan when no window had enough echo to measure)."""
    return round(float(np.min(v)), 1) if len(v) else float("nan")


def _speaker(x: np.ndarray, clip: bool) -> np.ndarray:
    return (np.tanh(x / 0.5) * 0.5).astype(np.float32) if clip else x  # peaks of 0.5 (-6 dBFS) come out at 0.38


class Signals(NamedTuple):
    """A case's signals (aligned sample for sample): what the device played (far), Moshi's
    echo at the microphone, the user's voice at the room's SER, the microphone's noise,
    where the user is speaking, and the double talk's span [dt_a, dt_b)."""

    far: np.ndarray
    echo: np.ndarray
    near: np.ndarray
    noise: np.ndarray
    speaking: np.ndarray
    dt_a: int
    dt_b: int


def path_echo(room: Room, dr: Drive, far: np.ndarray, part: int = 0) -> np.ndarray:
    """Moshi's echo through the room's path as it is before the first change (part 0), between
    the first change and the one made during double talk (1), or after it (2)."""
    moves = (0.0 * np.array(dr.move_dir), np.array(dr.move_dir), np.array(dr.back_dir))
    move_m = tuple(float(m) for m in moves[part] * room.move_cm / 100.0)
    if room.box is not None:
        ir = shoebox_ir(room.box, room.rt60_s, move_m=move_m, gain=dr.echo_gain, delay_ms=room.delay_ms)
    else:
        ir = reflective_room_ir(
            room.delay_ms, rt60_s=room.rt60_s, drr_db=room.drr_db, gain=dr.echo_gain, seed=room.seed, move_m=move_m
        )
    gain = 10 ** (room.volume_db / 20) if part == 1 else 1.0
    return gain * convolve(_speaker(far, room.clip), ir)[: len(far)]


def signals(moshi, user, room: Room, dr: Drive) -> Signals:
    """The room's echo of Moshi (with the moves of `dr`), the user from dr.dt_start and the noise."""
    n = max(len(moshi), int((dr.dt_start + 0.5) * SR) + len(user)) // BLOCK * BLOCK + BLOCK * 10
    far = np.zeros(n, np.float32)
    far[: len(moshi)] = moshi[:n]
    if room.changes:  # the path changes at move_at and again (across, or the volume back) at dt_move_at
        cuts = [0, int(dr.move_at * SR), int(min(dr.dt_move_at * SR, n)), n]  # dt_move_at inf: no second change
        echo = np.concatenate([path_echo(room, dr, far, i)[a:b] for i, (a, b) in enumerate(zip(cuts, cuts[1:]))])
    else:
        echo = path_echo(room, dr, far)
    dt_a = int(dr.dt_start * SR)
    dt_b = min(dt_a + len(user), len(moshi))
    near = np.zeros(n, np.float32)
    near[dt_a : dt_a + len(user)] = user[: n - dt_a]
    speaking = np.zeros(n, bool)
    speaking[dt_a:dt_b] = np.abs(np.convolve(near[dt_a:dt_b], np.ones(480) / 480, mode="same")) > 3e-3
    g_near = 10 ** (
        (room.ser_db - ratio_db(near[dt_a:dt_b][speaking[dt_a:dt_b]], echo[dt_a:dt_b][speaking[dt_a:dt_b]])) / 20
    )
    near *= g_near
    noise = np.random.default_rng(room.seed + 1).standard_normal(n).astype(np.float32) * 10 ** (dr.noise_db / 20)
    return Signals(far, echo, near, noise, speaking, dt_a, dt_b)


def case(moshi, user, room: Room, canceller=DEFAULT_CANCELLER, drive: Drive | None = None) -> dict:
    dr = drive or Drive()
    far, echo, near, noise, speaking, dt_a, dt_b = signals(moshi, user, room, dr)
    mic = echo + near + noise
    kw = dict(canceller=canceller, hidden_s=room.hidden_ms / 1000.0, out_lat=room.out_lat_ms / 1000.0, feed=dr.feed)
    out, ec, cost = run_canceller(far, mic, **kw)
    out_echo, run_echo_ec, _ = run_canceller(far, echo + noise, **kw)  # the same room without the user
    out_user, _, _ = run_canceller(np.zeros_like(far), near + noise, **kw)  # the user alone: s
    move_a = int(dr.move_at * SR)
    steady_b = move_a if room.changes else dt_a
    a = int(3.0 * SR)
    vals, starts = window_erle(mic, out, echo, 0, steady_b, noise_db=dr.noise_db)

    def dt_measures(sel_from, sel_to):
        sel = speaking[sel_from:sel_to]
        o, s = out[sel_from:sel_to][sel], out_user[sel_from:sel_to][sel]
        g = float(np.dot(o, s) / np.dot(s, s))
        return round(ratio_db(g * s, o - g * s), 1), round(20 * np.log10(max(abs(g), 1e-6)), 1)

    dt_snr, dt_level = dt_measures(dt_a, dt_b)
    truth = 1000.0 * IN_LAT + room.out_lat_ms + room.hidden_ms + room.delay_ms
    st = ec.stats.summary()
    res = {
        "room": asdict(room),
        "erle_db": round(ratio_db(mic[a:steady_b], out[a:steady_b]), 1),
        "erle_noise_ceiling_db": round(ratio_db(mic[a:steady_b], noise[a:steady_b]), 1),  # a perfect canceller's
        "erle_live_db": round(st["erle_db_median"], 1),
        "convergence_s": round(convergence_s(vals, starts), 2),
        "dt_snr_db": dt_snr,
        "dt_residual_echo_below_user_db": round(
            ratio_db(out_user[dt_a:dt_b][speaking[dt_a:dt_b]], out_echo[dt_a:dt_b][speaking[dt_a:dt_b]]), 1
        ),
        "dt_user_level_change_db": dt_level,
        "round_trip_true_ms": round(truth, 1),
        "round_trip_est_ms": round(st["round_trip_ms"], 1),
        "round_trip_error_ms": round(st["round_trip_ms"] - truth, 1),
        "realignments": st["realignments"],
        "reference_missing": st["reference_missing"],
        "path_changes_detected": st["path_changes"],
        "path_changes_detected_echo_only": run_echo_ec.stats.summary()["path_changes"],
        "reconverged_s": st["reconverged_s"],
        "delay_estimates_ms": ec.stats.delay_estimates_ms,
        "cpu_ms_per_80ms_median": round(float(np.median(cost)), 3),
        "cpu_ms_per_80ms_p99": round(float(np.percentile(cost, 99)), 3),
        "live_summary": ec.stats.describe(),
    }
    early = user_starts_after_change(room, dr, dt_a)
    if early:  # the user's first second, which starts within those 2 s
        res["dt_user_after_move_snr_db"], res["dt_user_after_move_level_db"] = dt_measures(dt_a, dt_a + SR)
    if room.changes and not early:
        end = dt_a
        v, s = window_erle(mic, out, echo, move_a, end, noise_db=dr.noise_db)
        res.update(
            {
                "after_move_erle_db": [round(float(x), 1) for x in v],
                "after_move_erle_0_1s_db": round(ratio_db(mic[move_a : move_a + SR], out[move_a : move_a + SR]), 1),
                "after_move_erle_1_2s_db": round(
                    ratio_db(mic[move_a + SR : move_a + 2 * SR], out[move_a + SR : move_a + 2 * SR]), 1
                ),
                "after_move_min_erle_1s_on_db": _lowest(v[s >= dr.move_at + 1.0]),
                "after_move_min_erle_2s_on_db": _lowest(v[s >= dr.move_at + 2.0]),
                "recovery_20db_s": recovery_s(v, s, dr.move_at, 20.0),
                "recovery_25db_s": recovery_s(v, s, dr.move_at, 25.0),
            }
        )
    if room.changes and math.isfinite(dr.dt_move_at):  # a second change, made during double talk
        m_a = int(dr.dt_move_at * SR)
        res["dt_after_move_snr_db"], res["dt_after_move_user_level_db"] = dt_measures(m_a, m_a + SR)
        res["dt_before_move_snr_db"], res["dt_before_move_user_level_db"] = dt_measures(dt_a, m_a)
    return res


ROOMS = [
    Room("80 ms, RT60 0.3", 80.0, 0.3, 6.0),
    Room("80 ms, RT60 0.3, SER -6", 80.0, 0.3, 6.0, ser_db=-6.0),
    Room("study", 20.0, 0.25, 6.0, seed=1),
    Room("kitchen, soft clip", 20.0, 0.45, 3.0, clip=True, seed=2),
    Room("lounge, over-reported 35 ms", 5.0, 0.6, -3.0, hidden_ms=-35.0, out_lat_ms=60.0, seed=3),
    Room("hall, over-reported 50 ms", 5.0, 0.8, -3.0, hidden_ms=-50.0, out_lat_ms=80.0, seed=4),
    Room("hall, under-reported 40 ms", 5.0, 0.8, -3.0, hidden_ms=40.0, seed=5),
    Room("move 2 cm", 20.0, 0.45, 3.0, move_cm=2.0, seed=6),
    Room("move 4 cm, RT60 0.6", 20.0, 0.6, 0.0, move_cm=4.0, seed=7),
    Room("hall, move 7.6 cm", 10.0, 0.8, -3.0, move_cm=7.6, seed=8),
]
QUICK = [0, 5, 9]


class _VoiceCodec:
    """Mimi's place in the loop: plays Moshi's voice, keeps what it is asked to encode."""

    frame_size = BLOCK

    def __init__(self, voice):
        self.voice, self.pos, self.encoded = voice, 0, []

    def encode_step(self, frame):
        self.encoded.append(np.array(frame))
        return np.zeros(8, np.int64)

    def decode_step(self, codes):
        x = self.voice[self.pos : self.pos + BLOCK]
        self.pos += BLOCK
        return np.pad(x, (0, BLOCK - len(x)))

    def reset(self):
        self.pos = 0


class _Gen:
    def step(self, codes):
        return 0, [0] * 8

    def reset(self):
        pass


def live_loop(moshi: np.ndarray, seconds: float, canceller: str = DEFAULT_CANCELLER) -> dict:
    """The pipeline on the simulated device in real time, the room's echo fed back into the
    microphone: the canceller's time per 80 ms frame on the encoder thread (which Mimi's
    encoding waits for) and the voice's level in what Mimi encodes, on vs off."""
    from moshi_mlx.runtime.pipeline import DuplexPipeline
    from moshi_mlx.runtime.sim_device import SimulatedAudioDevice

    res = {}
    for on in (True, False):
        codec = _VoiceCodec(moshi)
        dev = SimulatedAudioDevice(None, echo_path=room_ir(80.0, rt60_s=0.3, drr_db=6.0), echo_noise=1e-3 * 0.1)
        ec = EchoCanceller(canceller=canceller) if on else None
        p = DuplexPipeline(codec, _Gen(), 8, max_lag_ms=400.0, echo=ec).start()
        dev.run(p, int(seconds * SR / BLOCK), keep_output=False)
        p.stop()
        enc = np.concatenate(codec.encoded)
        echo = np.concatenate(dev.echoes)[: len(enc)]
        a = int(3.0 * SR)
        key = "on" if on else "off"
        res[f"voice_drop_db_{key}"] = round(ratio_db(echo[a:], enc[a : len(echo)]), 1)
        res[f"delay_ms_median_{key}"] = round(p.stats.summary()["delay_ms_median"], 1)
        if ec is not None:
            pm = np.array(ec.stats.process_ms)
            res.update(
                process_ms_per_80ms_median=round(float(np.median(pm)), 3),
                process_ms_per_80ms_p99=round(float(np.percentile(pm, 99)), 3),
                process_ms_per_80ms_max=round(float(np.max(pm)), 3),
                algorithmic_delay_ms=round(1000.0 * ec.algorithmic_delay / SR, 2),
                live_summary=ec.stats.describe(),
            )
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help=f"rooms {QUICK} only (about a minute)")
    ap.add_argument("--rooms", default=None, help="comma-separated indices into ROOMS (default all)")
    ap.add_argument(
        "--canceller",
        choices=CANCELLERS,
        default=DEFAULT_CANCELLER,
        help=f"which echo canceller (default {DEFAULT_CANCELLER}); results go to aec_room[_NAME].json",
    )
    ap.add_argument("--no-live", dest="live", action="store_false", help="skip the real-time live-loop part")
    ap.add_argument("--out", type=Path, default=None, help="default bench/results/aec_room_<canceller>.json")
    a = ap.parse_args(argv)
    if a.out is None:
        a.out = ROOT / "bench" / "results" / f"aec_room_{a.canceller}.json"
    moshi, user, src = voices()
    picked = (
        QUICK if a.quick else (list(range(len(ROOMS))) if a.rooms is None else [int(i) for i in a.rooms.split(",")])
    )
    load = os.getloadavg()[0]
    results = []
    for i in picked:
        res = case(moshi, user, ROOMS[i], canceller=a.canceller)
        results.append(res)
        print(json.dumps(res), flush=True)
    loop = live_loop(moshi, 10.0 if a.quick else 20.0, a.canceller) if a.live else None
    print(json.dumps(loop), flush=True)
    load = f"{load:.1f} / {os.getloadavg()[0]:.1f}"
    report = {
        "what": "echo cancellation in a simulated room (bench/aec_room.py)",
        "voices": src,
        "live_loop": loop,
        "load_average_start_end": load,
        "canceller": {
            "aec3": "WebRTC AEC3 via livekit AudioProcessingModule, 24 kHz, 10 ms frames, high-pass on",
            "linear": "linear: frequency-domain Kalman filter + residual suppressor "
            "(audio/echo_filter.py), high-pass on",
        }[a.canceller],
        "device": {"reported_in_ms": IN_LAT * 1000, "reported_out_ms": OUT_LAT * 1000, "hidden_out_ms": HIDDEN * 1000},
        "machine": f"{platform.machine()} {platform.system()}, {platform.python_version()}, {os.cpu_count()} cores",
        "results": results,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=1) + "\n")
    rows = [
        "| room | delay ms | RT60 s | DRR dB | latency error ms | ERLE dB (live) | converged s | DT SNR dB | "
        "user level dB | round trip true / est ms | CPU ms per 80 ms (p99) |",
        "|" + "---|" * 11,
    ]
    moves = [
        "| room | move | ERLE 0-1 s / 1-2 s dB | min ERLE from 1 s / 2 s dB | back >= 20 / 25 dB after s | "
        "DT SNR, user level in the second after a move dB |",
        "|" + "---|" * 6,
    ]
    for r in results:
        m = r["room"]
        rows.append(
            f"| {m['name']} | {m['delay_ms']:.0f} | {m['rt60_s']} | {m['drr_db']:.0f} | {m['hidden_ms']:+.0f} | "
            f"{r['erle_db']} ({r['erle_live_db']}) | {r['convergence_s']} | {r['dt_snr_db']} | "
            f"{r['dt_user_level_change_db']} | {r['round_trip_true_ms']} / {r['round_trip_est_ms']} | "
            f"{r['cpu_ms_per_80ms_median']} ({r['cpu_ms_per_80ms_p99']}) |"
        )
        if Room(**m).changes:
            moves.append(
                f"| {m['name']} | {m['move_cm']} cm | {r['after_move_erle_0_1s_db']} / {r['after_move_erle_1_2s_db']} | "
                f"{r['after_move_min_erle_1s_on_db']} / {r['after_move_min_erle_2s_on_db']} | "
                f"{r['recovery_20db_s']} / {r['recovery_25db_s']} | {r['dt_after_move_snr_db']}, "
                f"{r['dt_after_move_user_level_db']} |"
            )
    text = (
        f"# {report['what']}\n\nvoices: {src}; {report['canceller']}; {report['machine']}; "
        f"load average {load} (start / end)\n\n" + "\n".join(rows)
    )
    if len(moves) > 2:
        text += (
            "\n\nPath changes (the microphone moves at 7 s, Moshi alone, and back across at 14 s, both talking):\n\n"
        )
        text += "\n".join(moves)
    if loop is not None:
        text += (
            "\n\nLive loop (simulated device, real time, 80 ms room delay): Moshi's voice in what Mimi encodes "
            f"drops {loop['voice_drop_db_on']} dB with cancellation, {loop['voice_drop_db_off']} dB without; the canceller "
            f"takes {loop['process_ms_per_80ms_median']} ms per 80 ms frame (p99 {loop['process_ms_per_80ms_p99']}, "
            f"max {loop['process_ms_per_80ms_max']}) on the encoder thread, plus the canceller's fixed "
            f"{loop['algorithmic_delay_ms']} ms block delay; playback delay median {loop['delay_ms_median_on']} ms on, "
            f"{loop['delay_ms_median_off']} ms off.\n\n`{loop['live_summary']}`"
        )
    a.out.with_suffix(".md").write_text(text + "\n")
    print(f"\nwrote {a.out} and {a.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
