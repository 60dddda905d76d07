"""Echo cancellation under stress: issue #21's targets checked over many simulated rooms,
seeds, voices and misbehaving devices, so that tuning on bench/aec_room.py's ten fixed cases
does not overfit them.

    .venv/bin/python -m bench.aec_stress [--quick] [--seeds N] [--first-seed K] [--rooms study,hall-lid]
                                         [--jobs 2] [--canceller linear|aec3] [--no-jitter] [--beyond | --shoebox]

Tune on the default seeds, then check on fresh ones (--first-seed 100): a canceller fitted to
these cases would overfit them as it would aec_room's ten. --beyond runs rooms outside the
issue's (BEYOND: drier and more reverberant, the user 6 dB over or 10 dB under the echo, a
60 ms acoustic delay, latency misreported by 50 ms either way, moves of 1 and 15 cm, a
clipping speaker in a hall, the volume turned down with Moshi alone), never used for tuning.
--shoebox runs the issue's rooms again in another room model (SHOEBOX: pyroomacoustics' image
sources in a rectangular room drawn per seed, a laptop's speaker 15-35 cm from its microphone or
desk speakers 0.6-1.2 m away; a moved microphone then also changes the direct path's level),
never used for tuning either.

Each case is bench/aec_room.py's `case()` (the same room simulation, feeding and measures)
driven harder, as the issue's independent checks describe them:
- voices: espeak-ng "Moshi" in en-us / fr-fr / de / es (texts in those languages) over a
  "user" in another language, female or male, both at -20 dBFS while speaking;
- callbacks: each stream's callbacks arrive late by a few ms (exponential, mean JITTER_MS,
  at most JITTER_MAX_MS) and now and then stall (STALL_P per callback, STALL_MS), the blocks
  due meanwhile then arriving back to back, as PortAudio's on a busy machine; the times given
  to `EchoCanceller` are the callbacks' (what the live loop passes), the canceller's clock is
  the simulated one; the audio itself plays and is captured on time (no under-runs);
- the output latency is misreported by 15-45 ms either way (drawn per seed; the lounge's is
  the issue's: over-reported by 35 ms);
- microphone noise -50 dBFS on even seeds, -60 dBFS on odd ones;
- rooms (ROOMS): the issue's study, kitchen (soft-clipping speaker), lounge (also with the
  user 6 dB under the echo, aec_room's SER -6 case: on the canceller the issue was measured
  with, this bench's plain lounge gives 3-7 dB more double-talk SNR than the issue reports)
  and hall (the lid moved 7.6 cm at 10 s), and aec_room's moved-microphone rooms (2, 4 and
  7.6 cm at 7 s, 2 cm also in the hall), and the volume turned up (3-9 dB, drawn per seed) at
  7 s and back down 2 s into the double talk (`volume`), or down and back up (`volume-up-dt`:
  the echo louder under the user's voice), each seed drawing a new room (reflections),
  noise, voice pair, latency error, jitter and move directions; every move is made once while
  Moshi talks alone and once (the same distance, in another direction) 2 s into the double
  talk, which starts 5 s after the first move; and three rooms where the user starts talking
  0.2-0.6 s after the change made while Moshi talks alone (`move4-user`, `hall-lid-user`,
  `volume-user`: the double talk in the second after a change, before the filter re-learnt).

Measures and targets (issue #21; aec_room's definitions): steady ERLE >= 25 dB; after the
move during Moshi's speech, ERLE of the first second >= 20 dB and of the second >= 25 dB, and
strictly: the lowest 0.25 s window from 1 s on >= 20 dB and from 2 s on >= 25 dB (windows
with echo 30 dB above the noise only, so at -50 dBFS fewer windows count), plus the time
until every later window is back at 20 / 25 dB; double-talk SNR >= 15 dB with the user's
level within 1 dB, also in the second after the move made during double talk and in the
user's first second when they start just after a move; canceller CPU
<= 2 ms per 80 ms (median per case). Steady ERLE counts the microphone's noise as residual,
so each case also reports the ceiling a perfect canceller would reach.

Results: bench/results/aec_stress_<canceller>.json and .md (per case, per room worst /
median, and a PASS / MISS line per target naming the worst case).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing
import os
import platform
import sys
import time
import types
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.aec_room import BLOCK, IN_LAT, SR, Drive, Room, case, speak, speaking_level  # noqa: E402
from bench.room import Shoebox  # noqa: E402
from moshi_mlx.runtime import echo as echo_mod  # noqa: E402
from moshi_mlx.runtime.echo import CANCELLERS, DEFAULT_CANCELLER  # noqa: E402

JITTER_MS = 3.0  # mean lateness of a callback
JITTER_MAX_MS = 20.0
STALL_P = 0.02  # chance per callback that the stream stalls
STALL_MS = (30.0, 120.0)  # how long; the callbacks due meanwhile then arrive back to back
BURST_GAP_S = 2e-4  # between callbacks delivered back to back
LATENCY_ERROR_MS = (15.0, 45.0)  # the output latency's misreport, either way
NOISE_DBS = (-50.0, -60.0)  # even / odd seeds
TRUE_OUT_LAT_MS = 25.0  # what an over-reporting device really takes

# (espeak voice, text): "Moshi" talks ~25 s, the user ~8 s
MOSHI = [
    (
        "en-us",
        "Hello, I am Moshi. I listen and talk at the same time, which is what makes a conversation feel "
        "natural. Tell me about your day, and I will answer as quickly as I can. The weather is lovely "
        "today, and I was thinking about the sea, the long beaches, and the boats coming back in the evening. "
        "Later we could talk about music, about the books you like, or about the trip you are planning, "
        "because I would really like to hear more about it.",
    ),
    (
        "fr-fr",
        "Bonjour, je suis Moshi. J'écoute et je parle en même temps, et c'est ce qui rend une conversation "
        "naturelle. Raconte-moi ta journée, je te répondrai aussi vite que possible. Il fait très beau "
        "aujourd'hui, et je pensais à la mer, aux longues plages et aux bateaux qui rentrent le soir au port. "
        "Ensuite nous pourrions parler de musique, des livres que tu aimes, ou du voyage que tu prépares, "
        "car j'aimerais vraiment en savoir davantage.",
    ),
    (
        "de",
        "Hallo, ich bin Moshi. Ich höre zu und spreche zugleich, und genau das macht ein Gespräch natürlich. "
        "Erzähl mir von deinem Tag, und ich antworte so schnell ich kann. Das Wetter ist heute wunderbar, "
        "und ich habe an das Meer gedacht, an die langen Strände und an die Boote, die abends in den Hafen "
        "zurückkehren. Später könnten wir über Musik sprechen, über die Bücher, die du magst, oder über die "
        "Reise, die du planst, denn darüber möchte ich gern mehr hören.",
    ),
    (
        "es",
        "Hola, soy Moshi. Escucho y hablo al mismo tiempo, y eso es lo que hace que una conversación parezca "
        "natural. Cuéntame qué tal tu día, y te responderé lo más rápido que pueda. Hoy hace un tiempo "
        "precioso, y estaba pensando en el mar, en las playas largas y en los barcos que vuelven al puerto "
        "por la tarde. Luego podríamos hablar de música, de los libros que te gustan o del viaje que estás "
        "preparando, porque me gustaría mucho saber más.",
    ),
]
USER = [
    (
        "en-gb",
        "Hi Moshi, I would like to know more about the history of Paris, and what I should visit first "
        "when I arrive there next week with my family.",
    ),
    (
        "fr-fr",
        "Salut Moshi, j'aimerais en savoir plus sur l'histoire de Rome, et sur ce que je devrais visiter "
        "en premier quand j'arriverai la semaine prochaine avec ma famille.",
    ),
    (
        "de",
        "Hallo Moshi, ich möchte mehr über die Geschichte von Wien wissen, und was ich zuerst besuchen "
        "sollte, wenn ich nächste Woche mit meiner Familie ankomme.",
    ),
    (
        "es-419",
        "Hola Moshi, quisiera saber más sobre la historia de Lisboa, y qué debería visitar primero "
        "cuando llegue la próxima semana con mi familia.",
    ),
]
USER_VARIANTS = (("+f3", 150, 70), ("+m3", 155, 40))  # female, male: espeak variant, speed, pitch


@dataclass(frozen=True)
class StressRoom:
    """One of the stress rooms (a template of aec_room.Room; each seed draws the rest).
    hidden_ms / out_lat_ms: a fixed latency error (None: drawn per seed); move_at: when the
    microphone moves while Moshi talks alone; ser_db: the user's level against the echo."""

    key: str
    name: str
    delay_ms: float
    rt60_s: float
    drr_db: float
    move_cm: float = 0.0
    clip: bool = False
    hidden_ms: float | None = None
    out_lat_ms: float | None = None
    move_at: float = 7.0
    ser_db: float = 0.0
    # the volume turned up (by 0.5 to 1.5 times this, per seed; down if negative) instead of a move
    volume_db: float = 0.0
    # > 0: the user starts 0.5 to 1.5 times this (per seed) after the change made while Moshi
    # talks alone, and the path stays as it is through the double talk
    user_after_s: float = 0.0
    # a shoebox room (bench/room.py shoebox_ir) drawn per seed around a loudspeaker this far from
    # the microphone (BOX_DISTANCE_M: "laptop", its own speakers; "desk", external ones: a weak
    # direct path); "": reflective_room_ir's reflections (then delay_ms is the acoustic delay,
    # in a shoebox the converters' only, and drr_db follows from the geometry)
    box: str = ""


ROOMS = [
    StressRoom("study", "study, RT60 0.25", 20.0, 0.25, 6.0),
    StressRoom("kitchen", "kitchen, RT60 0.45, soft clip", 20.0, 0.45, 3.0, clip=True),
    StressRoom(
        "lounge", "lounge, RT60 0.6, weak direct, over-reported 35 ms", 5.0, 0.6, -3.0, hidden_ms=-35.0, out_lat_ms=60.0
    ),
    StressRoom(
        "lounge-ser-6",
        "lounge, the user 6 dB under the echo",
        5.0,
        0.6,
        -3.0,
        hidden_ms=-35.0,
        out_lat_ms=60.0,
        ser_db=-6.0,
    ),
    StressRoom("hall-lid", "hall, RT60 0.8, lid moved 7.6 cm at 10 s", 10.0, 0.8, -3.0, 7.6, move_at=10.0),
    StressRoom("move2", "move 2 cm, RT60 0.45", 20.0, 0.45, 3.0, 2.0),
    StressRoom("move4", "move 4 cm, RT60 0.6", 20.0, 0.6, 0.0, 4.0),
    StressRoom("hall-move2", "hall, RT60 0.8, move 2 cm", 10.0, 0.8, -3.0, 2.0),
    StressRoom("hall-move7.6", "hall, RT60 0.8, move 7.6 cm", 10.0, 0.8, -3.0, 7.6),
    StressRoom("volume", "volume up 3-9 dB, RT60 0.45", 20.0, 0.45, 3.0, volume_db=6.0),
    StressRoom("volume-up-dt", "volume down 3-9 dB, back up in double talk", 20.0, 0.45, 3.0, volume_db=-6.0),
    StressRoom(
        "move4-user", "move 4 cm, RT60 0.6, the user starts 0.2-0.6 s after", 20.0, 0.6, 0.0, 4.0, user_after_s=0.4
    ),
    StressRoom(
        "hall-lid-user",
        "hall, RT60 0.8, lid moved 7.6 cm, the user starts 0.2-0.6 s after",
        10.0,
        0.8,
        -3.0,
        7.6,
        move_at=10.0,
        user_after_s=0.4,
    ),
    StressRoom(
        "volume-user",
        "volume up 3-9 dB, the user starts 0.2-0.6 s after",
        20.0,
        0.45,
        3.0,
        volume_db=6.0,
        user_after_s=0.4,
    ),
]
# rooms beyond the issue's, for checking that nothing was tuned to the rooms above (--beyond;
# not in the default run): none of them was used for tuning
BEYOND = [
    StressRoom("dry", "dry, RT60 0.15, speaker close", 10.0, 0.15, 10.0),
    StressRoom("cathedral", "RT60 1.0, direct path -6 dB", 10.0, 1.0, -6.0),
    StressRoom("ser+6", "lounge, the user 6 dB over the echo", 5.0, 0.6, -3.0, ser_db=6.0),
    StressRoom("ser-10", "study, the user 10 dB under the echo", 20.0, 0.25, 6.0, ser_db=-10.0),
    StressRoom("far", "acoustic delay 60 ms", 60.0, 0.45, 0.0),
    StressRoom("over50", "latency over-reported 50 ms", 10.0, 0.45, 3.0, hidden_ms=-50.0, out_lat_ms=70.0),
    StressRoom("under50", "latency under-reported 50 ms", 10.0, 0.45, 3.0, hidden_ms=50.0, out_lat_ms=20.0),
    StressRoom("move1", "move 1 cm, RT60 0.45", 20.0, 0.45, 3.0, 1.0),
    StressRoom("move15", "move 15 cm, RT60 0.45", 20.0, 0.45, 3.0, 15.0),
    StressRoom("clip-hall", "hall, RT60 0.8, soft clip", 10.0, 0.8, -3.0, clip=True),
    StressRoom(
        "vol-down", "volume down 5-15 dB (Moshi alone), back up in double talk", 20.0, 0.6, 0.0, volume_db=-10.0
    ),
]
# the issue's rooms again, as shoebox rooms of specular walls (pyroomacoustics' image sources):
# another room model than the one the canceller was tuned on (--shoebox; never used for tuning)
SHOEBOX = [
    StressRoom("box-study", "shoebox study, RT60 0.25, laptop", 5.0, 0.25, 0.0, box="laptop"),
    StressRoom("box-kitchen", "shoebox kitchen, RT60 0.45, laptop, soft clip", 5.0, 0.45, 0.0, clip=True, box="laptop"),
    StressRoom(
        "box-lounge",
        "shoebox lounge, RT60 0.6, desk speakers, over-reported 35 ms",
        5.0,
        0.6,
        0.0,
        hidden_ms=-35.0,
        out_lat_ms=60.0,
        box="desk",
    ),
    StressRoom(
        "box-hall-lid",
        "shoebox hall, RT60 0.8, desk speakers, lid moved 7.6 cm",
        5.0,
        0.8,
        0.0,
        7.6,
        move_at=10.0,
        box="desk",
    ),
    StressRoom("box-move2", "shoebox, RT60 0.45, laptop, move 2 cm", 5.0, 0.45, 0.0, 2.0, box="laptop"),
    StressRoom("box-move4", "shoebox, RT60 0.6, laptop, move 4 cm", 5.0, 0.6, 0.0, 4.0, box="laptop"),
    StressRoom("box-hall-move2", "shoebox hall, RT60 0.8, desk speakers, move 2 cm", 5.0, 0.8, 0.0, 2.0, box="desk"),
    StressRoom(
        "box-volume", "shoebox, RT60 0.45, laptop, volume up 3-9 dB", 5.0, 0.45, 0.0, volume_db=6.0, box="laptop"
    ),
    StressRoom(
        "box-move4-user",
        "shoebox, RT60 0.6, laptop, move 4 cm, the user starts 0.2-0.6 s after",
        5.0,
        0.6,
        0.0,
        4.0,
        user_after_s=0.4,
        box="laptop",
    ),
]
BOX_DISTANCE_M = {"laptop": (0.15, 0.35), "desk": (0.6, 1.2)}  # loudspeaker to microphone
QUICK_SEEDS, FULL_SEEDS = 3, 8


# ---------------------------------------------------------------------------- the device
class JitterFeed:
    """A busy machine's PortAudio callbacks for aec_room.run_canceller: the punctual times
    of `ideal_feed`, each callback late by Exp(JITTER_MS) (at most JITTER_MAX_MS) and, with
    STALL_P, a stall of STALL_MS after which the callbacks due meanwhile arrive back to back.
    Each stream stays in order (a stream's callbacks never overtake each other). `now` is the
    time of the callback being delivered: the canceller's clock (sim_clock)."""

    def __init__(self, seed: int | list):
        self.seed = seed
        self.now = 0.0
        self.delays_ms: dict[str, np.ndarray] = {}

    def _late(self, ideal: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        t = ideal + np.minimum(rng.exponential(JITTER_MS, len(ideal)), JITTER_MAX_MS) / 1000.0
        stall_end = -math.inf
        for i in range(len(t)):
            if rng.random() < STALL_P:
                stall_end = max(stall_end, ideal[i] + rng.uniform(*STALL_MS) / 1000.0)
            if ideal[i] < stall_end:
                t[i] = max(t[i], stall_end)
            if i:
                t[i] = max(t[i], t[i - 1] + BURST_GAP_S)
        return t

    def schedule(self, n_blocks: int, out_lat: float, hidden_s: float) -> list[tuple[str, int, float]]:
        """The callbacks in the order they happen (ties: the reference first), up to the
        last capture block."""
        rng = np.random.default_rng(self.seed)
        n_ref = n_blocks + 8  # enough to cover the last capture block whatever the latency
        ref_ideal = np.arange(n_ref) * BLOCK / SR - out_lat - hidden_s
        cap_ideal = (np.arange(n_blocks) + 1) * BLOCK / SR + IN_LAT
        ref_t, cap_t = self._late(ref_ideal, rng), self._late(cap_ideal, rng)
        self.delays_ms = {"ref": 1000.0 * (ref_t - ref_ideal), "cap": 1000.0 * (cap_t - cap_ideal)}
        events = [(t, 0, j, "ref") for j, t in enumerate(ref_t)] + [(t, 1, k, "cap") for k, t in enumerate(cap_t)]
        events.sort()
        last = max(i for i, e in enumerate(events) if e[3] == "cap")
        return [(kind, j, t) for t, _, j, kind in events[: last + 1]]

    def __call__(self, n_blocks: int, out_lat: float, hidden_s: float):
        for kind, j, t in self.schedule(n_blocks, out_lat, hidden_s):
            self.now = t
            yield kind, j, t


@contextlib.contextmanager
def sim_clock(feed: JitterFeed):
    """runtime/echo.py's time.monotonic (its anchoring window) reads the simulated callbacks'
    clock, as the live loop's reads the device's; its CPU timers stay real."""
    real = echo_mod.time
    echo_mod.time = types.SimpleNamespace(
        monotonic=lambda: feed.now, perf_counter=time.perf_counter, thread_time=time.thread_time
    )
    try:
        yield
    finally:
        echo_mod.time = real


# ---------------------------------------------------------------------------- cases
def _unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal(3)
    return v / np.linalg.norm(v)


def draw_box(kind: str, rng: np.random.Generator) -> Shoebox:
    """A room of 3.5-8 x 3-6.5 x 2.4-3.2 m with a table at 0.75-0.85 m, the loudspeaker on it
    far enough from the walls for the microphone to be BOX_DISTANCE_M[kind] away in any
    direction, 0.05-0.25 m higher (a laptop's lid, or a laptop beside desk speakers)."""
    lo, hi = BOX_DISTANCE_M[kind]
    dims = (float(rng.uniform(3.5, 8.0)), float(rng.uniform(3.0, 6.5)), float(rng.uniform(2.4, 3.2)))
    margin = max(0.6, hi + 0.3)
    source = (
        float(rng.uniform(margin, dims[0] - margin)),
        float(rng.uniform(margin, dims[1] - margin)),
        float(rng.uniform(0.75, 0.85)),
    )
    dz = float(rng.uniform(0.05, 0.25))
    flat = float(np.sqrt(max(rng.uniform(lo, hi) ** 2 - dz**2, 0.01)))
    a = float(rng.uniform(0.0, 2.0 * np.pi))
    mic = (float(source[0] + flat * np.cos(a)), float(source[1] + flat * np.sin(a)), source[2] + dz)
    return Shoebox(dims, source, mic)


@dataclass
class Case:
    room: StressRoom
    seed: int
    jitter: bool = True

    def draw(self) -> tuple[Room, Drive, dict]:
        """This seed's aec_room Room and Drive, and what was drawn (for the report)."""
        r = self.room
        idx = zlib.crc32(r.key.encode()) % 997  # a room's draws do not depend on the others
        rng = np.random.default_rng([idx, self.seed])
        if r.hidden_ms is None:
            err = rng.choice([-1.0, 1.0]) * rng.uniform(*LATENCY_ERROR_MS)
            out_lat = 20.0 if err > 0 else TRUE_OUT_LAT_MS - err
        else:
            err, out_lat = r.hidden_ms, r.out_lat_ms
        m = (self.seed + idx) % len(MOSHI)
        u = (m + 1 + (self.seed // len(MOSHI)) % (len(USER) - 1)) % len(USER)
        variant = USER_VARIANTS[(self.seed // 2) % len(USER_VARIANTS)]
        d1 = _unit(rng)
        d2 = d1 + _unit(rng)  # the second move: the same distance, another direction
        volume = round(float(rng.uniform(0.5, 1.5)) * r.volume_db, 1) if r.volume_db else 0.0
        user_after = round(float(rng.uniform(0.5, 1.5)) * r.user_after_s, 2) if r.user_after_s else 0.0
        room = Room(
            f"{r.key}#{self.seed}",
            r.delay_ms,
            r.rt60_s,
            r.drr_db,
            hidden_ms=float(round(err, 1)),
            out_lat_ms=float(round(out_lat, 1)),
            ser_db=r.ser_db,
            move_cm=r.move_cm,
            volume_db=volume,
            clip=r.clip,
            seed=1000 * idx + self.seed,
            box=draw_box(r.box, rng) if r.box else None,
        )
        drive = Drive(
            move_at=r.move_at,
            dt_start=r.move_at + (user_after or 5.0),
            dt_move_at=math.inf if user_after else r.move_at + 7.0,
            noise_db=NOISE_DBS[self.seed % 2],
            move_dir=tuple(d1),
            back_dir=tuple(d2),
            feed=JitterFeed([idx, self.seed, 1]) if self.jitter else None,
        )
        drawn = {
            "moshi": MOSHI[m][0],
            "user": USER[u][0] + variant[0],
            "noise_dbfs": drive.noise_db,
            "latency_error_ms": room.hidden_ms,
            "reported_out_ms": room.out_lat_ms,
            "jitter": self.jitter,
        }
        if user_after:
            drawn["user_after_s"] = user_after
        return room, drive, drawn


_VOICES: dict = {}


def render_voices() -> dict:
    """Every voice the cases use, at -20 dBFS while speaking ("Moshi" repeated to last past
    the latest double talk)."""
    out = {}
    for voice, text in MOSHI:
        x = speak(voice, text, 165)
        need = int((max(r.move_at for r in ROOMS) + 5.0 + 10.0) * SR)
        while len(x) < need:
            x = np.concatenate([x, np.zeros(SR // 4, np.float32), x])
        out["moshi", voice] = speaking_level(x)
    for voice, text in USER:
        for variant, speed, pitch in USER_VARIANTS:
            out["user", voice + variant] = speaking_level(speak(voice + variant, text, speed, pitch))
    return out


def _init(voices: dict) -> None:
    _VOICES.update(voices)


def run_case(args: tuple[Case, str]) -> dict:
    c, canceller = args
    room, drive, drawn = c.draw()
    moshi, user = _VOICES["moshi", drawn["moshi"]], _VOICES["user", drawn["user"]]
    with sim_clock(drive.feed) if drive.feed is not None else contextlib.nullcontext():
        res = case(moshi, user, room, canceller=canceller, drive=drive)
    res["drawn"] = drawn
    res["key"], res["seed"] = c.room.key, c.seed
    if drive.feed is not None:
        d = np.concatenate(list(drive.feed.delays_ms.values()))
        res["callback_late_ms_median_max"] = [round(float(np.median(d)), 1), round(float(np.max(d)), 1)]
    res.pop("delay_estimates_ms", None)
    if "after_move_erle_db" in res:
        res["after_move_windows"] = len(res.pop("after_move_erle_db"))
        if not res["after_move_windows"]:  # no window with echo 30 dB above the noise: nothing to time
            res["recovery_20db_s"] = res["recovery_25db_s"] = None
    return res


# ---------------------------------------------------------------------------- report
# (result key, target, direction, what): "min" targets must be >= target, "absmax" |x| <= target
TARGETS = [
    ("erle_db", 25.0, "min", "steady ERLE dB"),
    ("after_move_erle_0_1s_db", 20.0, "min", "ERLE of the 1st second after a move (Moshi alone) dB"),
    ("after_move_erle_1_2s_db", 25.0, "min", "ERLE of the 2nd second after a move (Moshi alone) dB"),
    ("after_move_min_erle_1s_on_db", 20.0, "min", "lowest window from 1 s after a move dB (strict)"),
    ("after_move_min_erle_2s_on_db", 25.0, "min", "lowest window from 2 s after a move dB (strict)"),
    ("dt_snr_db", 15.0, "min", "double-talk SNR dB"),
    ("dt_user_level_change_db", 1.0, "absmax", "double-talk user level change dB"),
    ("dt_before_move_snr_db", 15.0, "min", "double-talk SNR before the move during double talk dB (moved rooms)"),
    ("dt_after_move_snr_db", 15.0, "min", "DT SNR in the second after a move during double talk dB"),
    ("dt_after_move_user_level_db", 1.0, "absmax", "user level in the second after a move during double talk dB"),
    ("dt_user_after_move_snr_db", 15.0, "min", "DT SNR in the user's first second, 0.2-0.6 s after a move dB"),
    ("dt_user_after_move_level_db", 1.0, "absmax", "user level in that second dB"),
    ("cpu_ms_per_80ms_median", 2.0, "max", "canceller CPU ms per 80 ms (median of a case)"),
]
INFO = [
    ("recovery_20db_s", "back at >= 20 dB for good after a move, s (nan: not within 5 s)"),
    ("recovery_25db_s", "back at >= 25 dB for good after a move, s (nan: not within 5 s)"),
]


def label(r: dict) -> str:
    d = r["drawn"]
    return (
        f"{r['key']}#{r['seed']} ({d['moshi']}/{d['user']}, {d['noise_dbfs']:.0f} dBFS, "
        f"latency {d['latency_error_ms']:+.0f} ms)"
    )


def _vals(results: list[dict], key: str) -> list[tuple[float, dict]]:
    return [(float(r[key]), r) for r in results if key in r and not math.isnan(float(r[key]))]


def worst(results: list[dict], key: str, kind: str) -> tuple[float, dict] | None:
    v = _vals(results, key)
    if not v:
        return None
    if kind == "min":
        return min(v, key=lambda x: x[0])
    if kind == "max":
        return max(v, key=lambda x: x[0])
    return max(v, key=lambda x: abs(x[0]))


def verdicts(results: list[dict]) -> list[dict]:
    out = []
    for key, target, kind, what in TARGETS:
        v = _vals(results, key)
        w = worst(results, key, kind)
        if w is None:
            continue
        ok = {"min": lambda x: x >= target, "max": lambda x: x <= target, "absmax": lambda x: abs(x) <= target}[kind]
        misses = sorted(((x, r) for x, r in v if not ok(x)), key=lambda m: m[0] if kind == "min" else -abs(m[0]))
        line = {
            "target": what,
            "key": key,
            "threshold": target,
            "pass": not misses,
            "worst": w[0],
            "worst_case": label(w[1]),
            "median": float(np.median([x for x, _ in v])),
            "misses": len(misses),
            "missing": [f"{r['key']}#{r['seed']} {x:g}" for x, r in misses],
            "cases": len(v),
            "unmeasured": sum(1 for r in results if key in r and math.isnan(float(r[key]))),
        }
        if key == "erle_db":
            line["worst_case_noise_ceiling_db"] = w[1].get("erle_noise_ceiling_db")
        out.append(line)
    for key, what in INFO:
        v = [float(r[key]) for r in results if r.get(key) is not None]
        if v:
            never = [label(r) for r in results if r.get(key) is not None and math.isnan(float(r[key]))]
            done = [x for x in v if not math.isnan(x)]
            out.append(
                {
                    "target": what,
                    "key": key,
                    "median": float(np.median([math.inf if math.isnan(x) else x for x in v])),
                    "worst_reached": max(done) if done else float("nan"),
                    "never": never,
                    "cases": len(v),
                }
            )
    return out


def _fmt(x) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.1f}"


def room_table(results: list[dict]) -> str:
    cols = [
        ("erle_db", "min", "steady ERLE"),
        ("erle_noise_ceiling_db", "min", "noise ceiling"),
        ("after_move_erle_0_1s_db", "min", "move: 1st s"),
        ("after_move_erle_1_2s_db", "min", "2nd s"),
        ("after_move_min_erle_1s_on_db", "min", "lowest from 1 s"),
        ("after_move_min_erle_2s_on_db", "min", "from 2 s"),
        ("recovery_20db_s", "max", "back at 20 dB s"),
        ("recovery_25db_s", "max", "at 25 dB s"),
        ("dt_snr_db", "min", "DT SNR"),
        ("dt_user_level_change_db", "absmax", "user level"),
        ("dt_before_move_snr_db", "min", "DT SNR before the DT move"),
        ("dt_after_move_snr_db", "min", "DT move: SNR"),
        ("dt_after_move_user_level_db", "absmax", "level"),
        ("dt_user_after_move_snr_db", "min", "user after a move: SNR"),
        ("dt_user_after_move_level_db", "absmax", "level"),
        ("cpu_ms_per_80ms_median", "max", "CPU ms"),
    ]
    head = "| room | cases | " + " | ".join(c[2] for c in cols) + " |"
    rows = [head, "|" + "---|" * (len(cols) + 2)]
    for key in dict.fromkeys(r["key"] for r in results):
        rs = [r for r in results if r["key"] == key]
        cells = []
        for k, kind, _ in cols:
            if k not in rs[0]:
                cells.append("")
                continue
            v = [float(r[k]) for r in rs if r[k] is not None]
            if k.startswith("recovery"):  # nan: never back within the span
                v = [math.inf if math.isnan(x) else x for x in v]
                if not v:
                    cells.append("—")
                    continue
                cells.append(" / ".join("never" if x == math.inf else _fmt(x) for x in (max(v), np.median(v))))
                continue
            else:
                ww = worst(rs, k, kind)
                w = _fmt(ww[0] if ww else None)
            cells.append(f"{w} / {_fmt(float(np.nanmedian(v)) if not all(map(math.isnan, v)) else None)}")
        rows.append(f"| {key} | {len(rs)} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def render(report: dict) -> str:
    lines = [
        f"# {report['what']}",
        "",
        f"canceller {report['canceller']}; {report['cases']} cases ({report['mode']}); jitter {report['jitter']}; "
        f"{report['machine']}; load average {report['load_average_start_end']} (start / end); "
        f"{report['wall_s']:.0f} s wall",
        "",
        "Per room, worst / median over seeds (dB unless said; '—': not measured, e.g. no window "
        "with echo 30 dB above the noise):",
        "",
        room_table(report["results"]),
        "",
    ]
    for v in report["verdicts"]:
        if "threshold" in v:
            kind = "PASS" if v["pass"] else "MISS"
            extra = (
                f" (noise ceiling there {_fmt(v['worst_case_noise_ceiling_db'])} dB)"
                if v.get("worst_case_noise_ceiling_db") is not None
                else ""
            )
            un = f", {v['unmeasured']} unmeasured" if v["unmeasured"] else ""
            lines.append(
                f"{kind} {v['target']} (target {v['threshold']:g}): worst {_fmt(v['worst'])} in "
                f"{v['worst_case']}{extra}; median {_fmt(v['median'])}; {v['misses']}/{v['cases']} cases miss{un}"
            )
            if v["missing"]:
                lines.append(f"    missing: {', '.join(v['missing'])}")
        else:
            never = f": {', '.join(v['never'])}" if v["never"] else ""
            lines.append(
                f"INFO {v['target']}: median {_fmt(v['median']) if v['median'] < math.inf else 'never'}, "
                f"slowest reached {_fmt(v['worst_reached'])}; never in {len(v['never'])}/{v['cases']} cases{never}"
            )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help=f"{QUICK_SEEDS} seeds per room (~1-2 min on 2 busy cores)")
    ap.add_argument(
        "--seeds", type=int, default=None, help=f"seeds per room (default {FULL_SEEDS}, --quick {QUICK_SEEDS})"
    )
    ap.add_argument(
        "--first-seed", type=int, default=0, help="seeds first-seed .. first-seed+N-1 (fresh draws: 100 and up)"
    )
    ap.add_argument(
        "--rooms", default=None, help="comma-separated room keys: " + ",".join(r.key for r in ROOMS + BEYOND + SHOEBOX)
    )
    which = ap.add_mutually_exclusive_group()
    which.add_argument("--beyond", action="store_true", help="the rooms beyond the issue's (BEYOND) instead")
    which.add_argument(
        "--shoebox",
        action="store_true",
        help="the issue's rooms as shoebox rooms of another room model (SHOEBOX; needs pyroomacoustics) instead",
    )
    ap.add_argument("--canceller", choices=CANCELLERS, default=DEFAULT_CANCELLER)
    ap.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    ap.add_argument("--no-jitter", dest="jitter", action="store_false", help="punctual callbacks (aec_room's feed)")
    ap.add_argument("--out", type=Path, default=None, help="default bench/results/aec_stress_<canceller>.json")
    a = ap.parse_args(argv)
    rooms = ROOMS + BEYOND + SHOEBOX
    keys = [r.key for r in rooms]
    default = BEYOND if a.beyond else SHOEBOX if a.shoebox else ROOMS
    picked = [r.key for r in default] if a.rooms is None else a.rooms.split(",")
    for k in picked:
        if k not in keys:
            ap.error(f"unknown room {k!r}; rooms: {', '.join(keys)}")
    seeds = a.seeds if a.seeds is not None else (QUICK_SEEDS if a.quick else FULL_SEEDS)
    out = (
        a.out
        or ROOT
        / "bench"
        / "results"
        / f"aec_stress_{'beyond_' if a.beyond else 'shoebox_' if a.shoebox else ''}{a.canceller}.json"
    )
    seed_range = range(a.first_seed, a.first_seed + seeds)
    cases = [(Case(r, s, a.jitter), a.canceller) for s in seed_range for r in rooms if r.key in picked]
    t0, load0 = time.time(), os.getloadavg()[0]
    voices = render_voices()
    results = []
    if a.jobs > 1:
        with multiprocessing.get_context("fork").Pool(a.jobs, initializer=_init, initargs=(voices,)) as pool:
            for res in pool.imap(run_case, cases):
                results.append(res)
                print(f"{label(res)}: {json.dumps({k: v for k, v in res.items() if k.endswith('_db')})}", flush=True)
    else:
        _init(voices)
        for c in cases:
            results.append(run_case(c))
            print(label(results[-1]), flush=True)
    results.sort(key=lambda r: (keys.index(r["key"]), r["seed"]))
    report = {
        "what": "echo cancellation under stress (bench/aec_stress.py, issue #21's targets)",
        "canceller": a.canceller,
        "mode": f"seeds {a.first_seed}-{a.first_seed + seeds - 1} x {len(picked)} rooms",
        "cases": len(results),
        "jitter": (
            f"mean {JITTER_MS} ms (max {JITTER_MAX_MS}), stalls {STALL_MS[0]:.0f}-{STALL_MS[1]:.0f} ms "
            f"with p {STALL_P} per callback"
            if a.jitter
            else "none"
        ),
        "machine": f"{platform.machine()} {platform.system()}, {platform.python_version()}, {os.cpu_count()} cores",
        "load_average_start_end": f"{load0:.1f} / {os.getloadavg()[0]:.1f}",
        "wall_s": time.time() - t0,
        "verdicts": verdicts(results),
        "rooms": [asdict(r) for r in rooms if r.key in picked],
        "results": results,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    text = render(report)
    out.with_suffix(".md").write_text(text)
    print("\n" + text + f"\nwrote {out} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
