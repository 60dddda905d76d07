"""Echo cancellation (runtime/echo.py): Moshi's voice played through a simulated room comes
back into the microphone; with the canceller on, what Mimi encodes must be free of it."""

import argparse
import wave

import numpy as np
import pytest

from bench.echo_drain import drain_one_block_at_a_time  # the drain before: one join per block
from bench.room import convolve, ratio_db, room_ir, speech_like
from moshi_mlx.cli.echo_args import add_echo_args, echo_from_args
from moshi_mlx.errors import UsageError
from moshi_mlx.runtime import echo as echo_mod
from moshi_mlx.runtime.echo import (
    EchoCanceller,
    EchoUnavailable,
    gcc_phat_lag,
    looks_like_headphones,
    resolve_mode,
)
from moshi_mlx.runtime.pipeline import DuplexPipeline
from moshi_mlx.runtime.recorder import StereoRecorder
from moshi_mlx.runtime.sim_device import SimulatedAudioDevice

from .voice_fakes import FRAME, TalkingGen, VoiceCodec

SR = 24_000


def test_auto_mode_uses_headphone_names():
    for name in ("AirPods Pro", "External Headphones", "USB Headset", "Galaxy Buds2", "WH-1000XM4 Headphones"):
        assert looks_like_headphones(name), name
        assert resolve_mode("auto", name)[0] is False
    for name in ("MacBook Pro Speakers", "Built-in Output", "pulse", "default", None):
        assert not looks_like_headphones(name), name
        assert resolve_mode("auto", name)[0] is True
    assert resolve_mode("on", "AirPods")[0] is True
    assert resolve_mode("off", "Speakers")[0] is False
    with pytest.raises(ValueError):
        resolve_mode("maybe")


def test_gcc_phat_finds_the_delay_in_reverb():
    ref = speech_like(3.0, seed=3)
    h = room_ir(57.0, rt60_s=0.4, drr_db=0.0)
    mic = convolve(ref, h)[: len(ref)] + np.random.default_rng(0).standard_normal(len(ref)) * 1e-3
    lag, conf = gcc_phat_lag(ref, mic, SR, -0.1, 0.5)
    assert abs(lag * 1000 - 57.0) < 1.0 and conf > 8


def _run_room(
    ec: EchoCanceller | None, far: np.ndarray, h: np.ndarray, near: np.ndarray | None = None, block: int = 1920
):
    """Feed a canceller like a device would: reference block k plays at k*block, the echo
    comes back through `h` into the microphone. Returns (mic, cleaned, echo)."""
    n = len(far) // block * block
    echo = convolve(far[:n], h)[:n].astype(np.float32)
    mic = (
        echo
        + (near[:n] if near is not None else 0)
        + np.random.default_rng(1).standard_normal(n).astype(np.float32) * 1e-4
    )
    if ec is None:
        return mic, mic, echo
    out = []
    for k in range(n // block):
        t = k * block / SR
        ec.add_reference(far[k * block : (k + 1) * block], t)  # handed to the device at t, plays at t
        out.append(ec.process(mic[k * block : (k + 1) * block], t + block / SR))
    return mic, np.concatenate(out), echo


@pytest.mark.parametrize("delay_ms", [30.0, 150.0])
def test_aec3_removes_echo_and_measures_delay(delay_ms):
    far = speech_like(10.0, seed=2)
    ec = EchoCanceller(canceller="aec3")
    mic, clean, echo = _run_room(ec, far, room_ir(delay_ms, rt60_s=0.3, drr_db=6.0))
    a = 4 * SR  # after convergence
    erle = ratio_db(mic[a:], clean[a : len(mic)])
    assert erle >= 25.0, erle
    assert abs(ec.stats.echo_delay_ms - delay_ms) <= 10.0, ec.stats.delay_estimates_ms
    s = ec.stats.summary()
    assert s["erle_db_median"] >= 20.0 and s["erle_seconds"] > 0, s
    assert s["reference_missing"] == 0


@pytest.mark.parametrize("canceller", ["linear", "aec3"])
def test_canceller_keeps_the_user_speaking_alone(canceller):
    """No echo at all: the user's voice passes (only delayed and high-passed)."""
    near = speech_like(6.0, seed=5)
    ec = EchoCanceller(canceller=canceller)
    mic, clean, _ = _run_room(ec, np.zeros_like(near), np.zeros(10, np.float32), near=near)
    n = len(clean) - 2 * SR
    assert abs(ratio_db(clean[SR:n], mic[SR:n])) < 2.0


@pytest.mark.parametrize("canceller", ["linear", "aec3"])
def test_reference_missing_becomes_silence_and_is_counted(canceller):
    """The output stops after one block: the canceller holds the microphone at most
    MAX_WAIT samples for its reference (and says so in lag_samples), then goes on with silence."""
    ec = EchoCanceller(canceller=canceller)
    ec.add_reference(np.zeros(1920, np.float32), 0.0)
    total = 0
    for k in range(8):
        out = ec.process(np.zeros(1920, np.float32), (k + 1) * 0.08)
        total += len(out)
        assert (k + 1) * 1920 - total + ec.algorithmic_delay == ec.lag_samples
        assert ec.lag_samples <= EchoCanceller.MAX_WAIT + ec.algorithmic_delay  # it goes on without
    assert ec.stats.reference_missing > 0


def _pipeline_run(
    echo_on: bool,
    *,
    step_delay_s=0.0,
    max_lag_ms=None,
    seconds=10.0,
    recorder=None,
    record_raw=False,
    delay_ms=80.0,
    speed=4.0,
    canceller="linear",
    sample_clock=False,
):
    codec = VoiceCodec(seconds + 2)
    ir = room_ir(delay_ms, rt60_s=0.3, drr_db=6.0)
    dev = SimulatedAudioDevice(None, speed=speed, echo_path=ir, echo_noise=1e-4, sample_clock=sample_clock)
    ec = EchoCanceller(canceller=canceller) if echo_on else None
    p = DuplexPipeline(
        codec,
        TalkingGen(),
        8,
        max_lag_ms=max_lag_ms,
        echo=ec,
        clock=dev.clock,
        step_delay_s=step_delay_s,
        recorder=recorder,
        record_raw_mic=record_raw,
    ).start()
    dev.run(p, int(seconds * SR / FRAME))
    p.stop()
    encoded = np.concatenate(codec.encoded)
    echo = np.concatenate(dev.echoes)[: len(encoded)]
    return encoded, echo, ec, p


def _voice_drop_db(encoded, echo, skip_s=4.0):
    a = int(skip_s * SR)
    return ratio_db(echo[a:], encoded[a : len(echo)])


@pytest.mark.parametrize("canceller", ["linear", "aec3"])
def test_pipeline_on_simulated_device_removes_models_voice(canceller):
    # twice real time, not four times: at 4x on a loaded 2-core machine (load average 13) the
    # simulated callbacks missed their deadlines, the echo slid by ~5 ms against its reference
    # mid-run, and both cancellers measured 19.2 / 14.4 dB instead of 34 / 48 dB
    encoded, echo, ec, _ = _pipeline_run(True, canceller=canceller, speed=2.0)
    assert _voice_drop_db(encoded, echo) >= 20.0
    assert abs(ec.stats.echo_delay_ms - 80.0) <= 10.0
    encoded, echo, _, _ = _pipeline_run(False)
    assert abs(_voice_drop_db(encoded, echo)) < 1.0  # off: Mimi hears Moshi's voice at full level


@pytest.mark.parametrize("canceller", ["linear", "aec3"])
def test_timeline_stays_aligned_when_frames_are_skipped(canceller):
    """A slow LM under the lag bound skips input frames: the device plays silence for them,
    which the canceller must get too, or the reference slides against its echo."""
    # at twice real time, 60 ms of real compute is 120 ms of device time: 1.5x too slow
    encoded, echo, ec, p = _pipeline_run(
        True, step_delay_s=0.06, max_lag_ms=300, speed=2.0, seconds=8.0, canceller=canceller
    )
    assert p.stats.frames_skipped > 5 and p.stats.underruns > 5, p.stats.summary()
    assert _voice_drop_db(encoded, echo) >= 20.0
    assert ec.stats.reference_missing == 0


def test_lost_capture_blocks_move_the_timeline():
    ec = EchoCanceller(input_rate=48_000)
    ec.skip_capture(0)
    assert ec.stats.capture_gaps == 0
    ec.skip_capture(3840)  # one 80 ms block at 48 kHz lost
    assert ec._cap_pos == 1920 and ec.stats.capture_gaps == 1
    ec.skip_capture(3840)
    assert ec._cap_pos == 1920


@pytest.mark.parametrize("raw", [False, True])
def test_recording_holds_cleaned_or_raw_microphone(tmp_path, raw):
    """What the recording's user channel holds, not how the canceller bears late callbacks: the
    device's timestamps are exact (`sample_clock`). On the real clock at 4x, callbacks run late
    on a loaded machine moved the canceller's alignment mid-run and the cleaned level came out
    at -24 dB once (-50 to -60 dB otherwise; reproduced by delaying 50% of the playback
    callbacks by up to 30 ms)."""
    rec = StereoRecorder(tmp_path / "r.wav")
    # AEC3: -25 dB within 4 s
    _pipeline_run(True, recorder=rec, record_raw=raw, seconds=8.0, canceller="aec3", sample_clock=True)
    rec.close()
    with wave.open(str(tmp_path / "r.wav")) as w:
        x = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, 2).astype(np.float32) / 32768
    user, model = x[4 * SR :, 0], x[4 * SR :, 1]
    level = ratio_db(user, model)  # the echo path's direct gain is 0.5 (-6 dB)
    if raw:
        assert level > -10.0, level
    else:
        assert level < -25.0, level


def _args(mode, *extra, **kw):
    ap = argparse.ArgumentParser()
    add_echo_args(ap)
    return ap.parse_args(["--echo-cancel", mode, *extra, *sum(([f"--{k}"] for k, v in kw.items() if v), [])])


def test_missing_library_warns_in_auto_and_fails_when_asked(monkeypatch):
    def unavailable(*a, **k):
        raise EchoUnavailable("echo cancellation needs livekit's WebRTC audio processing (No module named 'livekit')")

    monkeypatch.setattr(echo_mod, "_load_apm", unavailable)
    lines = []
    aec3 = ("--echo-canceller", "aec3")
    assert echo_from_args(_args("auto", *aec3), "Speakers", input_rate=SR, output_rate=SR, log=lines.append) is None
    assert len(lines) == 1 and lines[0].startswith("warning:") and "livekit" in lines[0]
    with pytest.raises(EchoUnavailable):
        echo_from_args(_args("on", *aec3), "Speakers", input_rate=SR, output_rate=SR, log=lines.append)


def test_flags_build_the_canceller():
    lines = []
    ec = echo_from_args(
        _args("auto", "--echo-canceller", "aec3", **{"noise-suppression": True}),
        "Built-in Output",
        input_rate=48_000,
        output_rate=44_100,
        log=lines.append,
    )
    assert isinstance(ec, EchoCanceller) and ec.output_rate == 44_100 and ec.input_rate == 48_000
    assert "noise suppression" in lines[0]
    assert echo_from_args(_args("auto"), "AirPods Pro", input_rate=SR, output_rate=SR, log=lines.append) is None
    assert echo_from_args(_args("off"), None, input_rate=SR, output_rate=SR, log=lines.append) is None


def test_cli_reports_the_canceller(tmp_path, capsys, monkeypatch):
    from moshi_mlx.audio.io import write_audio
    from moshi_mlx.cli import local

    write_audio(tmp_path / "mic.wav", np.array(speech_like(2.0, seed=4)), SR)
    assert local.main(["--model", "random-tiny", "--simulate", str(tmp_path / "mic.wav"), "--duration", "2"]) == 0
    err = capsys.readouterr().err
    assert "echo cancellation: auto: on" in err and "linear" in err
    assert "echo cancellation: no echo of Moshi found in the microphone" in err  # a file has no echo path
    assert (
        local.main(
            [
                "--model",
                "random-tiny",
                "--simulate",
                str(tmp_path / "mic.wav"),
                "--duration",
                "1",
                "--echo-cancel",
                "off",
            ]
        )
        == 0
    )
    assert "echo cancellation: off" in capsys.readouterr().err

    def unavailable(*a, **k):
        raise EchoUnavailable("echo cancellation needs livekit's WebRTC audio processing (No module named 'livekit')")

    monkeypatch.setattr(echo_mod, "_load_apm", unavailable)
    assert (
        local.main(
            [
                "--model",
                "random-tiny",
                "--simulate",
                str(tmp_path / "mic.wav"),
                "--echo-cancel",
                "on",
                "--echo-canceller",
                "aec3",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "livekit" in err and "Traceback" not in err


@pytest.mark.parametrize("canceller", ["linear", "aec3"])
def test_echo_later_than_the_canceller_covers_is_realigned(canceller):
    """Output latency under-reported by 450 ms: the echo comes later than the canceller covers
    (AEC3: ~500 ms, linear: 200 ms + reverberation); the measured delay moves the reference
    back and the echo is cancelled."""
    far = speech_like(12.0, seed=2)
    ec = EchoCanceller(canceller=canceller)
    mic, clean, _ = _run_room(ec, far, room_ir(450.0, rt60_s=0.2, drr_db=10.0))
    assert ec.stats.realignments >= 1 and abs(ec.stats.echo_delay_ms - 450.0) <= 10.0, ec.stats.delay_estimates_ms
    a = 8 * SR
    assert ratio_db(mic[a:], clean[a : len(mic)]) >= 20.0


@pytest.mark.parametrize("canceller", ["linear", "aec3"])
def test_overstated_latency_is_corrected(canceller):
    """Input latency over-reported by 120 ms (PulseAudio does this): paired on the reported
    clock, the echo would come before its reference; the measured correction fixes it."""
    far = speech_like(12.0, seed=2)
    ec = EchoCanceller(input_latency_s=0.12, canceller=canceller)
    mic, clean, _ = _run_room(ec, far, room_ir(30.0, rt60_s=0.2, drr_db=10.0))
    assert ec.stats.realignments >= 1 and abs(ec.stats.echo_delay_ms - (-90.0)) <= 10.0, ec.stats.delay_estimates_ms
    assert abs(ec.stats.round_trip_ms - 30.0) <= 10.0
    a = 8 * SR
    assert ratio_db(mic[a:], clean[a : len(mic)]) >= 20.0


def test_linear_canceller_needs_no_livekit_and_refuses_webrtc_options(monkeypatch, capsys):
    def unavailable(*a, **k):
        raise EchoUnavailable("echo cancellation needs livekit's WebRTC audio processing (No module named 'livekit')")

    monkeypatch.setattr(echo_mod, "_load_apm", unavailable)
    ap = argparse.ArgumentParser()
    add_echo_args(ap)
    lines = []
    ec = echo_from_args(
        ap.parse_args(["--echo-canceller", "linear"]), "Speakers", input_rate=SR, output_rate=SR, log=lines.append
    )
    assert isinstance(ec, EchoCanceller) and "linear" in lines[0] and ec.algorithmic_delay == 240
    with pytest.raises(UsageError, match="--echo-canceller aec3"):
        echo_from_args(
            ap.parse_args(["--echo-canceller", "linear", "--noise-suppression"]),
            "Speakers",
            input_rate=SR,
            output_rate=SR,
            log=lines.append,
        )
    with pytest.raises(UsageError, match="linear, aec3"):
        EchoCanceller(canceller="speex")


def test_cli_rejects_noise_suppression_with_the_linear_canceller(tmp_path, capsys):
    from moshi_mlx.audio.io import write_audio
    from moshi_mlx.cli import local

    write_audio(tmp_path / "mic.wav", np.array(speech_like(1.0, seed=4)), SR)
    code = local.main(
        [
            "--model",
            "random-tiny",
            "--simulate",
            str(tmp_path / "mic.wav"),
            "--echo-canceller",
            "linear",
            "--noise-suppression",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "--echo-canceller aec3" in err and "Traceback" not in err


def test_linear_canceller_in_a_room_keeps_the_timeline():
    """The linear canceller behind the same alignment: 20 ms blocks from 80 ms device blocks,
    the delay measured, the echo removed (white-ish speaker signal: it converges within 5 s)."""
    far = (np.random.default_rng(8).standard_normal(10 * SR) * 0.1).astype(np.float32)
    ec = EchoCanceller(canceller="linear")
    mic, clean, _ = _run_room(ec, far, room_ir(100.0, rt60_s=0.3, drr_db=6.0))
    d = ec.algorithmic_delay
    a = 6 * SR
    assert ratio_db(mic[a : len(clean) - d], clean[a + d :]) >= 25.0
    assert abs(ec.stats.echo_delay_ms - 100.0) <= 10.0 and ec.stats.reference_missing == 0


def test_summary_reports_echo_path_changes_and_their_reconvergence():
    """The microphone moves 5 cm at 9 s while Moshi talks: the session line says one echo-path
    change and how long the ERLE took to come back; a room that stays put reports none."""
    from bench.room import reflective_room_ir

    far = (np.random.default_rng(8).standard_normal(14 * SR) * 0.1).astype(np.float32)
    h1 = reflective_room_ir(40.0, rt60_s=0.3, drr_db=3.0, seed=2)
    h2 = reflective_room_ir(40.0, rt60_s=0.3, drr_db=3.0, seed=2, move_m=(0.03, 0.04, 0.0))
    cut = 9 * SR
    still = EchoCanceller(canceller="linear")
    _run_room(still, far, h1)
    s = still.stats.summary()
    assert s["path_changes"] == 0 and "echo-path change" not in still.stats.describe(), s

    ec = EchoCanceller(canceller="linear")
    n = len(far) // 1920 * 1920
    echo = np.concatenate([convolve(far, h1)[:cut], convolve(far, h2)[cut:n]])
    mic = echo + np.random.default_rng(1).standard_normal(n).astype(np.float32) * 1e-4
    for k in range(n // 1920):
        t = k * 1920 / SR
        ec.add_reference(far[k * 1920 : (k + 1) * 1920], t)
        ec.process(mic[k * 1920 : (k + 1) * 1920], t + 1920 / SR)
    s = ec.stats.summary()
    assert s["path_changes"] == 1 and s["reconverged_s"][0] is not None and s["reconverged_s"][0] <= 1.0, s
    start = ec.stats.path_changes[0][0]
    assert 9.0 <= start <= 9.5, ec.stats.path_changes
    assert f"1 echo-path change, back to 20 dB ERLE in {s['reconverged_s'][0]:.1f} s" in ec.stats.describe()


def test_session_line_names_portaudio_only_for_a_sound_card():
    """A simulated session has no PortAudio latency: the line said 'PortAudio 0 ms + measured
    -39 ms' whenever an echo was found (the no-echo line already left it out)."""
    from moshi_mlx.runtime.echo import EchoStats

    simulated = EchoStats(echo_delay_ms=-39.0).describe()
    assert "round trip -39 ms (measured -39 ms)" in simulated and "PortAudio" not in simulated, simulated
    card = EchoStats(device_latency_ms=30.0, echo_delay_ms=12.0).describe()
    assert "round trip 42 ms (PortAudio 30 ms + measured 12 ms)" in card, card


def _reference_blocks(n: int, rate: int, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, rate // 50, n)  # 1 sample to 20 ms, as callbacks hand them over
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    jitter = rng.uniform(-0.002, 0.002, n)
    return [((0.1 * rng.standard_normal(k)).astype(np.float32), s / rate + j) for k, s, j in zip(sizes, starts, jitter)]


@pytest.mark.parametrize("output_rate", [SR, 48_000])
@pytest.mark.parametrize("fed", [None, 9 * SR])  # nothing taken yet (keep 4 s) / the canceller 9 s in
def test_a_reference_backlog_drains_as_block_by_block(output_rate, fed):
    """A backlog of callback blocks drained at once gives the timeline (samples, where they
    start, the anchor) that draining them one join at a time gave, in batches or all at once."""
    blocks = _reference_blocks(800, output_rate)
    new, old = (EchoCanceller(output_rate=output_rate) for _ in range(2))
    for ec in (new, old):
        ec._ref_fed = fed
    for i in range(0, len(blocks), 400):  # two drains: one with a buffer already there
        for ec in (new, old):
            ec._incoming.extend(blocks[i : i + 400])
        new._drain_reference()
        drain_one_block_at_a_time(old)
        assert new._ref_buf.dtype == old._ref_buf.dtype and np.array_equal(new._ref_buf, old._ref_buf)
        assert (new._ref_base, new._ref_received, new._ref_t0) == (old._ref_base, old._ref_received, old._ref_t0)
    assert new._ref_base > 0  # (the trim ran)


def test_draining_a_reference_backlog_copies_each_sample_once(monkeypatch):
    """The samples joined, and the start times the anchor's median reads, while draining k
    blocks grow with k, not k^2 (the buffer was joined again and the median taken again for
    every block: 800 blocks of ~5 ms copied the buffer ~400 times over). Counted, not timed
    (bench/echo_drain.py times it)."""
    blocks = _reference_blocks(800, SR)
    ec = EchoCanceller()
    ec._incoming.extend(blocks)
    joined, medians = [], []
    concatenate, median = np.concatenate, np.median
    monkeypatch.setattr(echo_mod.np, "concatenate", lambda p, *a, **k: joined.append(r := concatenate(p, *a, **k)) or r)
    monkeypatch.setattr(echo_mod.np, "median", lambda x, *a, **k: medians.append(len(x)) or median(x, *a, **k))
    ec._drain_reference()
    monkeypatch.undo()
    assert sum(len(r) for r in joined) <= sum(len(b) for b, _ in blocks)
    assert sum(medians) == len(blocks) and ec._ref_t0 is not None


@pytest.mark.parametrize("canceller", ["linear", "aec3"])
def test_a_nan_from_the_device_does_not_end_echo_cancellation(canceller):
    """A NaN in the microphone and an infinite sample in what was played (a device's glitch)
    are taken as silence: before, one NaN made the linear filter's state NaN, and every later
    block of the session with it."""
    far = speech_like(10.0, seed=2)
    bad_far = far.copy()
    bad_far[int(2.5 * SR)] = np.inf
    ec = EchoCanceller(canceller=canceller)
    h = room_ir(30.0, rt60_s=0.3, drr_db=6.0)
    n = len(far) // 1920 * 1920
    mic = (
        convolve(far[:n], h)[:n].astype(np.float32)
        + np.random.default_rng(1).standard_normal(n).astype(np.float32) * 1e-4
    )
    mic[3 * SR + 7] = np.nan
    out = []
    for k in range(n // 1920):
        t = k * 1920 / SR
        ec.add_reference(bad_far[k * 1920 : (k + 1) * 1920], t)
        out.append(ec.process(mic[k * 1920 : (k + 1) * 1920], t + 1920 / SR))
    clean = np.concatenate(out)
    assert np.isfinite(clean).all()
    a = 6 * SR
    assert ratio_db(mic[a : len(clean)], clean[a:]) >= 20.0


def test_the_session_line_gives_the_cancellers_cpu_and_wall_time():
    """Its CPU time per 80 ms frame (the encoder thread's own) and its wall time, which also
    counts what other threads and processes took from the thread meanwhile."""
    ec = EchoCanceller(canceller="linear")
    _run_room(ec, speech_like(3.0, seed=4), room_ir(30.0, rt60_s=0.3, drr_db=6.0))
    s = ec.stats.summary()
    cpu, wall = s["process_cpu_ms_per_80ms_median"], s["process_ms_per_80ms_median"]
    assert 0.0 < cpu <= wall + 0.5, s  # (thread CPU time never runs ahead of the clock by much)
    assert f"{cpu:.2f} ms CPU per 80 ms frame ({wall:.2f} ms wall)" in ec.stats.describe()


def _user_from(seconds: float, start_s: float, level: float, seed: int = 7) -> np.ndarray:
    user = speech_like(seconds, seed=seed, f0=(180.0, 260.0)).copy()
    user[: int(start_s * SR)] = 0.0
    return user * level


def test_without_an_echo_the_microphone_passes_unchanged():
    """Headphones the canceller was not told of: Moshi talks, the microphone hears only the
    user (20 dB under Moshi's level, from 5 s). Once NO_ECHO_WINDOWS delay windows found no
    echo, the microphone passes unchanged (as late as the cleaned one); before, the filter,
    with nothing to learn, mixed its fit of the user's voice into the output and its
    suppressor ducked them (-2.7 to -4.9 dB, SNR 2-6 dB on espeak voices)."""
    far = speech_like(12.0, seed=2)
    user = _user_from(12.0, 5.0, 0.1)
    ec = EchoCanceller(canceller="linear")
    mic, clean, _ = _run_room(ec, far, np.zeros(10, np.float32), near=user)
    d = ec.algorithmic_delay
    a = 5 * SR
    np.testing.assert_array_equal(clean[a + d :], mic[a : len(clean) - d])
    s = ec.stats.summary()
    assert s["passed_s"] >= 7.0 and s["path_changes"] == 0, s
    line = ec.stats.describe()
    assert (
        "no echo of Moshi found" in line
        and f"microphone passed unchanged for {s['passed_s']:.0f} s without an echo" in line
    )


def test_an_echo_that_comes_back_is_cancelled_again():
    """The headphones unplugged at 8 s: the echo comes back through the room, the next delay
    window finds it, and the canceller learns the room afresh: >= 20 dB from 4 s after
    (before: 6-7 dB there and 16 dB 12 s after, its filter having fitted nothing for 8 s)."""
    far = speech_like(20.0, seed=2)
    h = room_ir(30.0, rt60_s=0.3, drr_db=6.0)
    n = len(far) // 1920 * 1920
    echo = convolve(far[:n], h)[:n].astype(np.float32)
    echo[: 8 * SR] = 0.0
    mic = echo + np.random.default_rng(1).standard_normal(n).astype(np.float32) * 1e-4
    ec = EchoCanceller(canceller="linear")
    out = []
    passing_at_8s = None
    for k in range(n // 1920):
        t = k * 1920 / SR
        ec.add_reference(far[k * 1920 : (k + 1) * 1920], t)
        out.append(ec.process(mic[k * 1920 : (k + 1) * 1920], t + 1920 / SR))
        if k * 1920 == 8 * SR:
            passing_at_8s = ec.passing
    clean = np.concatenate(out)
    assert passing_at_8s
    assert not ec.passing
    a = 12 * SR
    assert ratio_db(mic[a : len(clean)], clean[a:]) >= 20.0


def test_a_room_with_echo_never_passes_the_microphone():
    """With an echo, even under the user's voice at the echo's level from 4 s, every delay
    window finds it: nothing is passed."""
    far = speech_like(12.0, seed=2)
    h = room_ir(30.0, rt60_s=0.45, drr_db=0.0)
    ec = EchoCanceller(canceller="linear")
    echo_level = float(np.sqrt(np.mean(convolve(far, h)[: len(far)] ** 2)))
    user = _user_from(12.0, 4.0, 1.0)
    user = user * (echo_level / float(np.sqrt(np.mean(user[4 * SR :] ** 2))))
    _run_room(ec, far, h, near=user)
    assert ec.stats.passed_chunks == 0 and not ec.passing
    assert ec.stats.drift_ppm == 0.0  # (no drift seen where there is none)


@pytest.mark.parametrize("ppm", [100.0, -60.0])
def test_a_drifting_microphone_clock_is_followed(ppm):
    """A USB microphone beside the laptop's speakers: its clock runs `ppm` apart from the
    output's, so the echo slides against the reference (6 ms a minute at 100 ppm) and the
    filter, learning a fixed path, lost it (2-5 dB at 100 ppm, 10-24 dB at 50). The delay
    windows' lags show the slope; the reference is then read at the microphone's rate."""
    from moshi_mlx.audio.fractional import FractionalReader

    far = speech_like(60.0, seed=2)
    h = room_ir(30.0, rt60_s=0.3, drr_db=3.0)
    echo = convolve(far, h)[: len(far)].astype(np.float32)
    step = 1.0 + ppm * 1e-6  # reference samples per microphone sample
    t = np.arange(int(len(echo) / step) - 100) * step
    mic = FractionalReader().read(echo, t)  # band-limited (np.interp's straight lines would modulate the path)
    n = len(mic) // 1920 * 1920
    mic = mic[:n] + np.random.default_rng(1).standard_normal(n).astype(np.float32) * 1e-4
    ec = EchoCanceller(canceller="linear")
    out = []
    for k in range(n // 1920):
        ec.add_reference(far[k * 1920 : (k + 1) * 1920], k * 1920 / SR)
        out.append(ec.process(mic[k * 1920 : (k + 1) * 1920], (k + 1) * 1920 / SR))
    clean = np.concatenate(out)
    assert abs(ec.stats.drift_ppm - ppm) <= 0.25 * abs(ppm), ec.stats.drift_ppm
    a = 35 * SR
    assert ratio_db(mic[a : len(clean)], clean[a:]) >= 25.0
    assert f"clock drift {ec.stats.drift_ppm:+.0f} ppm followed" in ec.stats.describe()
