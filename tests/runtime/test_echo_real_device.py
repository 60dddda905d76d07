"""Echo cancellation through real PortAudio streams. On headless Linux `scripts/test.sh`
starts a PulseAudio null sink whose monitor is the default input, so what the loop plays
comes straight back into its microphone: the worst echo there is (0 dB, every word).
In CI (MOSHI_REQUIRE_AUDIO=1) a missing device is a failure, elsewhere a skip."""

import time

import numpy as np
import pytest

from moshi_mlx.runtime.echo import EchoCanceller
from moshi_mlx.runtime.pipeline import DuplexPipeline, make_resampler

from .real_devices import open_or_skip
from .voice_fakes import TalkingGen, VoiceCodec

SR = 24_000


def _loop(echo_on: bool, seconds: float):
    io = open_or_skip()
    codec = VoiceCodec(seconds + 20)
    ec = EchoCanceller(output_rate=io.output_rate, input_rate=io.input_rate) if echo_on else None
    p = DuplexPipeline(
        codec,
        TalkingGen(),
        8,
        max_lag_ms=None,
        echo=ec,
        in_resampler=make_resampler(io.input_rate, SR),
        out_resampler=make_resampler(SR, io.output_rate),
        output_rate=io.output_rate,
    ).start()
    io.start(p)
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds + 15 and p.stats.frames_in < seconds / 0.08:
            time.sleep(0.25)
            assert io.alive(), "audio streams stopped"
    finally:
        io.close()
        p.stop()
    return np.concatenate(codec.encoded), codec.voice, ec


def _late_energy_db(encoded, skip_s):
    x = encoded[int(skip_s * SR) :]
    return 10 * np.log10(np.mean(x.astype(np.float64) ** 2) + 1e-20)


def test_loopback_echo_is_removed_before_mimi():
    seconds = 10.0
    off, voice, _ = _loop(False, seconds)
    played_db = 10 * np.log10(np.mean(voice[: len(off)].astype(np.float64) ** 2))
    if _late_energy_db(off, 4.0) < played_db - 20:
        pytest.skip("the default input does not hear the default output (no loopback here)")
    on, _, ec = _loop(True, seconds)
    drop = _late_energy_db(off, 4.0) - _late_energy_db(on, 4.0)
    s = ec.stats.summary()
    if drop < 20.0 and s["reference_missing"] > 0:
        # the output underran (a loaded machine: the null sink's latency then jumps by
        # hundreds of ms and the canceller re-aligns and re-learns): once more, and the second
        # run must pass as it stands
        print(
            f"underruns in the first run ({s['reference_missing']} reference chunks missing, "
            f"{s['realignments']} re-alignments, drop {drop:.1f} dB): running again"
        )
        on, _, ec = _loop(True, seconds)
        drop = _late_energy_db(off, 4.0) - _late_energy_db(on, 4.0)
        s = ec.stats.summary()
    assert drop >= 20.0, (drop, s, ec.stats.delay_estimates_ms)
    assert s["erle_db_median"] >= 20.0, s
    assert s["round_trip_ms"] == s["round_trip_ms"], s  # measured (not NaN)
    # off: Mimi hears Moshi's voice at about the level it was played
    assert abs(_late_energy_db(off, 4.0) - played_db) < 6.0
