"""Echo cancellation in a simulated room: Moshi's voice played through a reverberant impulse
response into the microphone together with a user's voice, cleaned by the live loop's
`EchoCanceller` (runtime/echo.py) exactly as the devices would feed it.

    .venv/bin/python -m bench.aec_room [--quick] [--canceller linear|aec3] [--no-live]

Voices: espeak-ng renders "Moshi" (en-us) and "the user" (en-gb, female) when it is
installed (apt-get install espeak-ng); otherwise examples/hello.wav and bench/room.py's
speech-like signal stand in (the report says which).

Timeline per case: Moshi talks from 0 s; the user starts at DT_START (double talk until
Moshi's text ends). The simulated device reports input/output latencies of 10/20 ms but its
output really takes 12 ms longer (as real devices do), so the measured correction has
something to find: true round trip = 10 + 20 + 12 ms + the room's delay.

Measures (mic = echo + user + noise, out = cleaned):
- ERLE: 10 log10(E[mic^2] / E[out^2]) over Moshi-only time after convergence (3 s .. DT_START);
- convergence: the start of the first 0.25 s window from which >= 90% of the following
  Moshi-only windows (those with echo within 30 dB of the loudest) have ERLE >= 25 dB;
- double-talk SNR of the user's speech: the user's voice alone through an identical
  canceller (same high-pass and delay) is the signal s; SNR = 10 log10(E[s^2] / E[(out - g s)^2])
  over the double-talk span where the user is speaking, g the least-squares gain (a constant
  level change is not damage): residual echo and any distortion of the user count as noise;
  also the residual echo alone (echo-only run) below the user's level, and the user's level change;
- the round-trip estimate (PortAudio latencies + the GCC-PHAT correction) against the truth;
- per-frame cost: the canceller's wall time per 80 ms of audio (median, p99);
- the live loop (DuplexPipeline on the simulated device in real time, the room's echo fed
  back): Moshi's voice level in what Mimi encodes with and without cancellation, and the
  canceller's time per frame on the encoder thread.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.room import convolve, ratio_db, room_ir, speech_like  # noqa: E402
from moshi_mlx.audio.io import read_audio  # noqa: E402
from moshi_mlx.runtime.echo import CANCELLERS, DEFAULT_CANCELLER, EchoCanceller  # noqa: E402

SR = 24_000
BLOCK = 1920
IN_LAT, OUT_LAT, HIDDEN = 0.010, 0.020, 0.012  # reported latencies, and what the output hides
DT_START = 9.0
NOISE_DB = -60.0

MOSHI_TEXT = ("Hello, I am Moshi. I listen and talk at the same time, which is what makes a conversation feel "
              "natural. Tell me about your day, and I will answer as quickly as I can. The weather is lovely "
              "today, and I was thinking about the sea, the long beaches, and the boats coming back in the evening.")
USER_TEXT = ("Hi Moshi, I would like to know more about the history of Paris, and what I should visit first "
             "when I arrive there next week with my family.")


def voices() -> tuple[np.ndarray, np.ndarray, str]:
    """(moshi, user, source) at 24 kHz."""
    if shutil.which("espeak-ng"):
        with tempfile.TemporaryDirectory() as d:
            m, u = Path(d) / "moshi.wav", Path(d) / "user.wav"
            subprocess.run(["espeak-ng", "-v", "en-us", "-s", "165", "-w", str(m), MOSHI_TEXT], check=True)
            subprocess.run(["espeak-ng", "-v", "en-gb+f3", "-s", "150", "-p", "70", "-w", str(u), USER_TEXT], check=True)
            moshi, user = read_audio(m).reshape(-1), read_audio(u).reshape(-1)
        src = "espeak-ng (en-us 'Moshi', en-gb+f3 'user')"
    else:
        hello = read_audio(ROOT / "examples" / "hello.wav").reshape(-1)
        moshi = np.concatenate([hello] * 4)
        user = np.array(speech_like(8.0, seed=7, f0=(180.0, 260.0)))
        src = "examples/hello.wav x4 ('Moshi'), bench/room.py speech_like ('user'): espeak-ng not installed"
    level = lambda x: x * (0.1 / np.sqrt(np.mean(x[np.abs(x) > 1e-3] ** 2)))  # -20 dBFS while speaking
    return level(moshi).astype(np.float32), level(user).astype(np.float32), src


def run_canceller(far: np.ndarray, mic: np.ndarray, *, hidden_s: float = HIDDEN, **kw) -> tuple[np.ndarray, EchoCanceller, list]:
    """Feed the canceller as the live loop does: block k is handed to the output at
    k*B - OUT_LAT - hidden (so it plays at k*B) and capture block k arrives at (k+1)*B + IN_LAT;
    every reference block handed before a capture block arrives is given first (block k+1 is
    handed 42 ms before capture block k arrives, as on a device)."""
    ec = EchoCanceller(input_latency_s=IN_LAT, output_latency_s=OUT_LAT, **kw)
    out, cost = [], []
    handed_blocks = 0
    for k in range(len(mic) // BLOCK):
        t = k * BLOCK / SR
        while handed_blocks * BLOCK / SR - OUT_LAT - hidden_s <= t + BLOCK / SR + IN_LAT:
            j = handed_blocks
            handed = j * BLOCK / SR - OUT_LAT - hidden_s
            ec.add_reference(far[j * BLOCK:(j + 1) * BLOCK], handed + OUT_LAT)  # what the pipeline computes
            handed_blocks += 1
        t0 = time.perf_counter()
        out.append(ec.process(mic[k * BLOCK:(k + 1) * BLOCK], t + BLOCK / SR + IN_LAT))
        cost.append((time.perf_counter() - t0) * 1000.0)
    y = np.concatenate(out)
    d = ec.algorithmic_delay
    y = np.concatenate([y[d:], np.zeros(d, np.float32)])  # undo the canceller's block delay
    return y, ec, cost


def window_erle(mic, out, echo, a, b, w=SR // 4):
    vals, starts = [], []
    peak = max(float(np.mean(echo[k:k + w] ** 2)) for k in range(a, b - w, w))
    for k in range(a, b - w, w):
        if np.mean(echo[k:k + w] ** 2) > peak * 1e-3:
            vals.append(ratio_db(mic[k:k + w], out[k:k + w]))
            starts.append(k / SR)
    return np.array(vals), np.array(starts)


def convergence_s(vals, starts, thresh=25.0, frac=0.9):
    for i in range(len(vals)):
        if np.mean(vals[i:] >= thresh) >= frac:
            return float(starts[i])
    return float("nan")


def case(moshi, user, delay_ms, rt60, drr_db, ser_db, seed=0, canceller=DEFAULT_CANCELLER) -> dict:
    n = len(moshi) // BLOCK * BLOCK + BLOCK * 10
    far = np.zeros(n, np.float32)
    far[:len(moshi)] = moshi
    h = room_ir(delay_ms, rt60_s=rt60, drr_db=drr_db, gain=0.5, seed=seed)
    echo = convolve(far, h)[:n]
    dt_a = int(DT_START * SR)
    dt_b = min(dt_a + len(user), len(moshi))
    near = np.zeros(n, np.float32)
    near[dt_a:dt_a + len(user)] = user[: n - dt_a]
    speaking = np.zeros(n, bool)
    speaking[dt_a:dt_b] = np.abs(np.convolve(near[dt_a:dt_b], np.ones(480) / 480, mode="same")) > 3e-3
    # the user's level against the echo while both talk
    g_near = 10 ** ((ser_db - ratio_db(near[dt_a:dt_b][speaking[dt_a:dt_b]], echo[dt_a:dt_b][speaking[dt_a:dt_b]])) / 20)
    near *= g_near
    noise = np.random.default_rng(seed + 1).standard_normal(n).astype(np.float32) * 10 ** (NOISE_DB / 20)
    mic = echo + near + noise
    out, ec, cost = run_canceller(far, mic, canceller=canceller)
    out_echo, _, _ = run_canceller(far, echo + noise, canceller=canceller)  # the same room without the user
    out_user, _, _ = run_canceller(np.zeros_like(far), near + noise, canceller=canceller)  # the user alone: s
    a = int(3.0 * SR)
    erle = ratio_db(mic[a:dt_a], out[a:dt_a])
    vals, starts = window_erle(mic, out, echo, 0, dt_a)
    sel = speaking[dt_a:dt_b]
    o, s = out[dt_a:dt_b][sel], out_user[dt_a:dt_b][sel]
    g = float(np.dot(o, s) / np.dot(s, s))
    truth = 1000.0 * (IN_LAT + OUT_LAT + HIDDEN) + delay_ms
    st = ec.stats.summary()
    return {
        "room": {"delay_ms": delay_ms, "rt60_s": rt60, "drr_db": drr_db, "ser_db": ser_db},
        "erle_db": round(erle, 1),
        "erle_live_db": round(st["erle_db_median"], 1),
        "convergence_s": round(convergence_s(vals, starts), 2),
        "dt_snr_db": round(ratio_db(g * s, o - g * s), 1),
        "dt_residual_echo_below_user_db": round(ratio_db(s, out_echo[dt_a:dt_b][sel]), 1),
        "dt_user_level_change_db": round(20 * np.log10(max(abs(g), 1e-6)), 1),
        "round_trip_true_ms": round(truth, 1),
        "round_trip_est_ms": round(st["round_trip_ms"], 1),
        "round_trip_error_ms": round(st["round_trip_ms"] - truth, 1),
        "delay_estimates_ms": ec.stats.delay_estimates_ms,
        "cost_ms_per_80ms_median": round(float(np.median(cost)), 3),
        "cost_ms_per_80ms_p99": round(float(np.percentile(cost, 99)), 3),
    }


class _VoiceCodec:
    """Mimi's place in the loop: plays Moshi's voice, keeps what it is asked to encode."""

    frame_size = BLOCK

    def __init__(self, voice):
        self.voice, self.pos, self.encoded = voice, 0, []

    def encode_step(self, frame):
        self.encoded.append(np.array(frame))
        return np.zeros(8, np.int64)

    def decode_step(self, codes):
        x = self.voice[self.pos:self.pos + BLOCK]
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
        echo = np.concatenate(dev.echoes)[:len(enc)]
        a = int(3.0 * SR)
        key = "on" if on else "off"
        res[f"voice_drop_db_{key}"] = round(ratio_db(echo[a:], enc[a:len(echo)]), 1)
        res[f"delay_ms_median_{key}"] = round(p.stats.summary()["delay_ms_median"], 1)
        if ec is not None:
            pm = np.array(ec.stats.process_ms)
            res.update(process_ms_per_80ms_median=round(float(np.median(pm)), 3),
                       process_ms_per_80ms_p99=round(float(np.percentile(pm, 99)), 3),
                       process_ms_per_80ms_max=round(float(np.max(pm)), 3),
                       algorithmic_delay_ms=round(1000.0 * ec.algorithmic_delay / SR, 2),
                       live_summary=ec.stats.describe())
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one room per delay only")
    ap.add_argument("--canceller", choices=CANCELLERS, default=DEFAULT_CANCELLER,
                    help=f"which echo canceller (default {DEFAULT_CANCELLER}); results go to aec_room[_NAME].json")
    ap.add_argument("--no-live", dest="live", action="store_false", help="skip the real-time live-loop part")
    ap.add_argument("--out", type=Path, default=None, help="default bench/results/aec_room_<canceller>.json")
    a = ap.parse_args(argv)
    if a.out is None:
        a.out = ROOT / "bench" / "results" / f"aec_room_{a.canceller}.json"
    moshi, user, src = voices()
    rooms = [(d, 0.3, 6.0, 0.0) for d in (30.0, 80.0, 150.0)]
    if not a.quick:
        rooms += [(80.0, 0.5, 0.0, 0.0), (80.0, 0.3, 6.0, -6.0), (80.0, 0.3, 6.0, 6.0), (80.0, 0.2, 12.0, 0.0)]
    results = []
    for r in rooms:
        res = case(moshi, user, *r, canceller=a.canceller)
        results.append(res)
        print(json.dumps(res), flush=True)
    loop = live_loop(moshi, 10.0 if a.quick else 20.0, a.canceller) if a.live else None
    print(json.dumps(loop), flush=True)
    report = {"what": "echo cancellation in a simulated room (bench/aec_room.py)", "voices": src,
              "live_loop": loop,
              "canceller": {"aec3": "WebRTC AEC3 via livekit AudioProcessingModule, 24 kHz, 10 ms frames, high-pass on",
                            "linear": "linear: frequency-domain Kalman filter (400 ms, 20 ms blocks) + residual "
                                      "suppressor (audio/echo_filter.py), high-pass on"}[a.canceller],
              "device": {"reported_in_ms": IN_LAT * 1000, "reported_out_ms": OUT_LAT * 1000, "hidden_out_ms": HIDDEN * 1000},
              "machine": f"{platform.machine()} {platform.system()}, {platform.python_version()}",
              "results": results}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=1) + "\n")
    rows = ["| delay ms | RT60 s | DRR dB | SER dB | ERLE dB (live) | converged s | DT SNR dB | echo below user dB | "
            "user level dB | round trip true / est ms | ms per 80 ms (p99) |", "|" + "---|" * 11]
    for r in results:
        m = r["room"]
        rows.append(f"| {m['delay_ms']:.0f} | {m['rt60_s']} | {m['drr_db']:.0f} | {m['ser_db']:+.0f} | {r['erle_db']} ({r['erle_live_db']}) | "
                    f"{r['convergence_s']} | {r['dt_snr_db']} | {r['dt_residual_echo_below_user_db']} | {r['dt_user_level_change_db']} | "
                    f"{r['round_trip_true_ms']} / {r['round_trip_est_ms']} | {r['cost_ms_per_80ms_median']} ({r['cost_ms_per_80ms_p99']}) |")
    text = f"# {report['what']}\n\nvoices: {src}; {report['canceller']}; {report['machine']}\n\n" + "\n".join(rows)
    if loop is not None:
        text += ("\n\nLive loop (simulated device, real time, 80 ms room delay): Moshi's voice in what Mimi encodes "
            f"drops {loop['voice_drop_db_on']} dB with cancellation, {loop['voice_drop_db_off']} dB without; the canceller "
            f"takes {loop['process_ms_per_80ms_median']} ms per 80 ms frame (p99 {loop['process_ms_per_80ms_p99']}, "
            f"max {loop['process_ms_per_80ms_max']}) on the encoder thread, plus the canceller's fixed "
            f"{loop['algorithmic_delay_ms']} ms block delay; playback delay median {loop['delay_ms_median_on']} ms on, "
            f"{loop['delay_ms_median_off']} ms off.\n\n`{loop['live_summary']}`")
    a.out.with_suffix(".md").write_text(text + "\n")
    print(f"\nwrote {a.out} and {a.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
