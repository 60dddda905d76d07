"""The duplex pipeline's mechanics with stand-in codec/LM: order, overlap, bounded lag,
recording, and error propagation."""

import time
import wave

import numpy as np
import pytest

from moshi_mlx.runtime.pipeline import DuplexPipeline
from moshi_mlx.runtime.recorder import StereoRecorder
from moshi_mlx.runtime.sim_device import SimulatedAudioDevice

from .fakes import FRAME, EchoGen, TagCodec, tagged_input


def _drain(p):
    p.close_input()
    assert p.finished.wait(10)
    return [it for it in p.output]


def test_offline_order_and_counts():
    p = DuplexPipeline(TagCodec(), EchoGen(), 8, max_lag_ms=None).start()
    x = tagged_input(30)
    for i in range(0, len(x), 1000):  # odd block sizes are re-framed
        p.push_input(x[i : i + 1000])
    items = _drain(p)
    assert [it.frame for it in items] == list(range(30))
    for i, it in enumerate(items):
        pcm, pcm24 = it.payload
        np.testing.assert_allclose(pcm24, i / 1000.0)
    assert p.stats.frames_stepped == 30 and p.stats.frames_skipped == 0


def test_text_events_carry_steps_and_frames():
    events = []
    p = DuplexPipeline(TagCodec(), EchoGen(), 8, max_lag_ms=None, on_text=events.append).start()
    p.push_input(tagged_input(5))
    _drain(p)
    assert [e.token for e in events] == [0, 1, 2, 3, 4]
    assert [e.step for e in events] == [0, 1, 2, 3, 4]


def test_realtime_delay_is_measured_and_small():
    p = DuplexPipeline(TagCodec(), EchoGen(), 8, max_lag_ms=400).start()
    dev = SimulatedAudioDevice(tagged_input(40), speed=1.0, loop=False)
    dev.run(p, 40)
    p.stop()
    s = p.stats.summary()
    assert s["frames_played"] >= 35
    assert s["frames_skipped"] == 0
    assert 0 < s["delay_ms_median"] < 400


def test_slow_compute_keeps_delay_bounded_by_skipping():
    """LM 1.5x slower than real time: the delay must stay within max-lag, frames get skipped."""
    max_lag = 400
    p = DuplexPipeline(TagCodec(), EchoGen(), 8, max_lag_ms=max_lag, step_delay_s=0.12).start()
    dev = SimulatedAudioDevice(tagged_input(50), speed=1.0, loop=False)
    dev.run(p, 50)
    p.stop()
    s = p.stats.summary()
    assert s["frames_skipped"] > 8
    assert s["frames_played"] > 20
    assert s["delay_ms_max"] <= max_lag + 1.0
    # without the bound the same run accumulates delay well past it
    q = DuplexPipeline(TagCodec(), EchoGen(), 8, max_lag_ms=None, step_delay_s=0.12).start()
    dev = SimulatedAudioDevice(tagged_input(50), speed=1.0, loop=False)
    dev.run(q, 50)
    q.stop()
    assert q.stats.summary()["delay_ms_max"] > 2 * max_lag


def test_trim_counts_the_output_latency():
    """Deterministic (a fake clock, no device): what the playback side trims is decided on
    the time the frame will be *heard*, read time + output latency. Frame i (tag i) ends
    at capture time 0.08 (i + 1); playback starts at 0.68 with 150 ms of output latency and
    reads one frame per 80 ms, so frames 0-4 (heard more than 400 ms after capture) are
    trimmed and every played frame is heard exactly 350 ms after capture. Without the
    latency in the decision, frames 3 and 4 would play 510 and 430 ms late."""
    now = [0.0]
    p = DuplexPipeline(
        TagCodec(), EchoGen(), 8, max_lag_ms=400, clock=lambda: now[0], output_latency_s=0.15, settle_s=None
    ).start()
    for i in range(10):  # the LM decides at clock 0: nothing is too old to step yet
        p.push_input(np.full(FRAME, i / 1000.0, np.float32), t_end=0.08 * (i + 1))
    for _ in range(500):
        if len(p.output) == 10:
            break
        time.sleep(0.01)
    assert len(p.output) == 10 and p.stats.frames_skipped == 0
    played = []
    for k in range(5):
        now[0] = 0.68 + 0.08 * k
        block = p.read_output(FRAME)
        assert np.ptp(block) == 0  # one whole frame per read
        played.append(int(round(block[0] * 1000)))
    p.stop()
    assert played == [5, 6, 7, 8, 9]
    assert p.stats.frames_trimmed == 5 and p.stats.frames_played == 5 and p.stats.underruns == 0
    np.testing.assert_allclose(list(p.stats.delays_ms), [350.0] * 5, atol=1e-6)
    assert max(p.stats.delays_ms) <= 400


def test_skip_counts_the_output_latency():
    """Deterministic (a fake clock at 0.5 s, no device): the LM skips a frame whose answer
    would be *heard* later than `max_lag_ms`: now - capture + step + one playback block +
    the output latency. With 150 ms of latency, a 400 ms bound and 80 ms blocks, frames
    captured before 0.33 s are skipped (3 here); without the latency only those before
    0.18 s would be (2), and the third would be stepped only for playback to trim it."""
    now = [0.5]
    p = DuplexPipeline(
        TagCodec(), EchoGen(), 8, max_lag_ms=400, clock=lambda: now[0], output_latency_s=0.15, settle_s=None
    ).start()
    ends = [0.05, 0.15, 0.25, 0.45, 0.55, 0.65]
    for i, t in enumerate(ends):
        p.push_input(np.full(FRAME, i / 1000.0, np.float32), t_end=t)
    for _ in range(500):
        if p.stats.frames_skipped + p.stats.frames_stepped == len(ends) and len(p.output) == 3:
            break
        time.sleep(0.01)
    p.stop()
    assert p.stats.frames_skipped == 3 and p.stats.frames_stepped == 3
    assert [int(round(item.payload[0][0] * 1000)) for item in p.output] == [3, 4, 5]


def test_played_audio_answers_input_in_order():
    p = DuplexPipeline(TagCodec(), EchoGen(), 8, max_lag_ms=1000).start()
    dev = SimulatedAudioDevice(tagged_input(20), speed=4.0, loop=False)
    dev.run(p, 30)
    p.stop()
    played = dev.played_audio().reshape(-1, FRAME)
    tags = [int(round(f[0] * 1000)) for f in played if np.abs(f).max() > 0]
    assert tags == sorted(tags) and len(set(tags)) == len(tags)


def test_recording_is_stereo_aligned_and_flushed(tmp_path):
    path = tmp_path / "rec.wav"
    rec = StereoRecorder(path)
    p = DuplexPipeline(TagCodec(), EchoGen(), 8, max_lag_ms=None, recorder=rec).start()
    dev = SimulatedAudioDevice(tagged_input(12) + 0.1, speed=8.0, loop=False)
    dev.run(p, 12)
    # the file is valid while recording is still in progress
    with wave.open(str(path)) as w:
        assert w.getnchannels() == 2 and w.getframerate() == 24000
    p.stop()
    rec.close()
    with wave.open(str(path)) as w:
        data = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, 2) / 32767.0
    assert len(data) == 12 * FRAME  # 12 frames captured, 12 device periods played (answers or silence)
    user = data[:, 0].reshape(-1, FRAME)
    np.testing.assert_allclose(user[:, 0], np.arange(12) / 1000.0 + 0.1, atol=1e-4)
    assert np.abs(data[:, 1]).max() > 0.05  # model side present...
    np.testing.assert_allclose(data[:, 1], dev.played_audio(), atol=1e-4)  # ...exactly as played


def test_worker_error_is_reported_not_hung():
    p = DuplexPipeline(TagCodec(), EchoGen(fail_at=3), 8, max_lag_ms=None).start()
    p.push_input(tagged_input(10))
    assert p.failed.wait(5)
    assert "simulated LM failure" in str(p.error)
    p.stop(timeout=2)


def test_input_overflow_drops_oldest_without_blocking():
    p = DuplexPipeline(TagCodec(encode_s=0.05), EchoGen(), 8, max_lag_ms=None, raw_queue_blocks=4).start()
    for i in range(40):
        p.push_input(np.full(FRAME, i / 1000.0, np.float32))
    assert p.stats.input_overflows > 0
    p.stop()


class _StalledCodec(TagCodec):
    """An encoder that takes no input until released (a starved machine, a hung device)."""

    def __init__(self):
        super().__init__()
        import threading

        self.release, self.entered = threading.Event(), threading.Event()

    def encode_step(self, frame):
        self.entered.set()
        self.release.wait(30)
        return super().encode_step(frame)


def test_stop_is_bounded_when_the_encoder_takes_no_input():
    """The input queue full and the encoder stalled: stop(timeout) returns within its bound,
    dropping the queued input (it waited in close_input's put until the encoder took a block:
    moshi-local's Ctrl-C hung there on a device that delivered faster than real time)."""
    codec = _StalledCodec()
    p = DuplexPipeline(codec, EchoGen(), 8, max_lag_ms=None, raw_queue_blocks=4).start()
    p.push_input(np.full(FRAME, 0.0, np.float32))
    assert codec.entered.wait(10)  # the encoder is stuck on the first frame
    for i in range(1, 10):  # the queue fills up (the oldest blocks dropped)
        p.push_input(np.full(FRAME, i / 1000.0, np.float32))
    assert p.stats.input_overflows > 0
    t0 = time.monotonic()
    import threading

    stopper = threading.Thread(target=p.stop, kwargs={"timeout": 0.3}, daemon=True)
    stopper.start()
    stopper.join(3.0)
    took = time.monotonic() - t0
    codec.release.set()  # the worker finishes its frame and sees the abort
    assert not stopper.is_alive() and took < 3.0, f"stop(timeout=0.3) still waiting after {took:.1f} s"
    assert p.abort(5)  # every worker has returned


@pytest.mark.parametrize("rate,channels", [(48000, 2), (44100, 1)])
def test_device_rates_and_channels(rate, channels):
    """Non-24 kHz devices: resamplers on both sides, stereo mixed to mono."""
    from moshi_mlx.runtime.pipeline import SAMPLE_RATE, make_resampler

    p = DuplexPipeline(
        TagCodec(),
        EchoGen(),
        8,
        max_lag_ms=None,
        in_resampler=make_resampler(rate, SAMPLE_RATE),
        out_resampler=make_resampler(SAMPLE_RATE, rate),
        output_rate=rate,
    ).start()
    block = rate * FRAME // SAMPLE_RATE
    x = np.repeat(np.arange(10) / 1000.0, block).astype(np.float32)
    if channels == 2:
        x = np.stack([x, x], axis=1)
    for i in range(10):
        p.push_input(x[i * block : (i + 1) * block])
    items = _drain(p)
    # every whole 24 kHz frame the input resampler produced (its delay holds back the rest)
    rs, mono = make_resampler(rate, SAMPLE_RATE), x.mean(axis=1) if channels == 2 else x
    produced = sum(len(rs(mono[i * block : (i + 1) * block])) for i in range(10))
    assert [it.frame for it in items] == list(range(produced // FRAME))
    # the tags survive the round trip through both resamplers (mid-frame, away from edges)
    for it in items[2:8]:
        pcm = it.payload[0]
        assert abs(len(pcm) - block) <= 64
        np.testing.assert_allclose(np.median(pcm), it.frame / 1000.0, atol=2e-3)


class SlowFirstGen(EchoGen):
    """The first step takes 2.5 frames (like a cold first MLX step), then steps are fast."""

    def step(self, codes):
        if self.steps == 0:
            import time

            time.sleep(0.2)
        return super().step(codes)


def test_delay_settles_back_after_a_slow_first_step():
    def run(settle_s):
        p = DuplexPipeline(TagCodec(), SlowFirstGen(), 8, max_lag_ms=1000, settle_s=settle_s).start()
        dev = SimulatedAudioDevice(tagged_input(75), speed=1.0, loop=False)
        dev.run(p, 75)
        p.stop()
        return p, list(p.stats.delays_ms)

    p, delays = run(2.0)
    assert p.stats.frames_settled >= 1
    late = np.median(delays[-20:])
    # back to about one playback period (80 ms) plus compute; the margin is for a loaded machine,
    # the comparison below is what pins the settling
    assert late < 160, delays
    q, delays_unsettled = run(None)
    assert q.stats.frames_settled == 0
    assert np.median(delays_unsettled[-20:]) > late + 60  # one frame longer, for good


def test_the_sample_clock_is_exact_however_late_the_callbacks():
    """`sample_clock=True`: the times a pipeline reads in the capture and playback callbacks are
    those of the samples handed over, even when a callback runs late (the real clock read them
    late: at 8x, 10 ms late is 80 ms of device time)."""
    import threading

    class LateStub:
        failed = threading.Event()

        def __init__(self):
            self.times = []

        def push_input(self, x):
            self.times.append(("in", dev.clock()))

        def read_output(self, n):
            time.sleep(0.01 if len(self.times) % 3 == 0 else 0.0)  # a late playback callback
            self.times.append(("out", dev.clock()))
            return np.zeros(n, np.float32)

    for exact in (True, False):
        dev = SimulatedAudioDevice(None, speed=8.0, sample_clock=exact)
        stub = LateStub()
        dev.run(stub, 12)
        dev.run(stub, 3)  # a second run goes on from where the first stopped
        want = [(side, dev._t0 + k * FRAME / 24_000) for k in range(15) for side in ("in", "out")]
        got = np.array([t for _, t in stub.times]) - np.array([t for _, t in want])
        assert [s for s, _ in stub.times] == [s for s, _ in want]
        if exact:
            assert np.abs(got).max() < 1e-9
        else:
            assert np.abs(got).max() > 0.05  # the real clock: late callbacks, late times


class CompilingGen(EchoGen):
    """EchoGen whose first step ever takes `first_s` (MLX compiling its kernels on a fresh
    machine), with LmGen's state() / restore()."""

    def __init__(self, first_s: float):
        super().__init__()
        self.first_s, self.compiled = first_s, False

    def step(self, codes):
        if not self.compiled:
            time.sleep(self.first_s)
            self.compiled = True
        return super().step(codes)

    def state(self):
        return self.steps

    def restore(self, steps):
        self.steps = steps


def test_a_real_time_pipeline_compiles_before_the_first_frame():
    """The first call of each kernel compiles it (seconds on a fresh machine): a real-time
    pipeline runs it once on silence in `start`, untimed, and puts the model back, so no frame
    the user says is skipped and the answers are those of a model that never warmed up."""
    events = []
    gen, codec = CompilingGen(first_s=1.2), TagCodec()
    p = DuplexPipeline(codec, gen, 8, max_lag_ms=400, on_text=events.append).start()
    assert gen.compiled and gen.steps == 0 and codec.resets == 1
    dev = SimulatedAudioDevice(tagged_input(25), speed=1.0, loop=False)
    dev.run(p, 25)
    p.stop()
    assert p.stats.frames_skipped == 0
    assert [e.token for e in events] == list(range(len(events))) and len(events) >= 20
    # offline (no lag bound) nothing is timed: no warm-up, the model is stepped only by frames
    cold = CompilingGen(first_s=0.0)
    DuplexPipeline(TagCodec(), cold, 8, max_lag_ms=None).start().stop()
    assert not cold.compiled


def test_the_warm_up_leaves_a_real_model_as_it_was():
    """random-tiny through a real-time pipeline (warmed up) answers as through an offline one."""
    import moshi_mlx

    model = moshi_mlx.load("random-tiny")
    x = np.random.default_rng(0).standard_normal(12 * FRAME).astype(np.float32) * 0.1

    def tokens(max_lag_ms):
        events = []
        p = model.pipeline(model.generator(seed=5), max_lag_ms=max_lag_ms, on_text=events.append).start()
        p.push_input(x, wait=True)
        p.stop()
        return [e.token for e in events], [it.payload[1] for it in p.output]

    (t_cold, a_cold), (t_warm, a_warm) = tokens(None), tokens(1e7)
    assert t_warm == t_cold and len(t_cold) == 12
    np.testing.assert_array_equal(np.concatenate(a_warm), np.concatenate(a_cold))


def test_the_warm_up_leaves_a_prompted_generator_cold():
    """A generator that already holds a prompt (PersonaPlex's, position > 0) is not saved and
    stepped: its state would copy the whole KV cache; only the codec is warmed."""
    gen = CompilingGen(first_s=0.0)
    gen.position = 40  # as LmGen after prefilling a prompt
    codec = TagCodec()
    DuplexPipeline(codec, gen, 8, max_lag_ms=400).start().stop()
    assert not gen.compiled and codec.resets == 1


def test_nan_samples_from_the_device_are_encoded_as_silence_and_counted():
    """A device's glitch (NaN/inf samples) would make the codec refuse the frame and end the
    session: they are encoded as silence, counted, and the session goes on."""
    p = DuplexPipeline(TagCodec(), EchoGen(), 8, max_lag_ms=None).start()
    x = tagged_input(6)
    x[2 * FRAME : 3 * FRAME] = np.nan
    x[4 * FRAME : 5 * FRAME] = np.inf
    p.push_input(x)
    items = _drain(p)
    assert not p.failed.is_set(), p.error
    assert [float(it.payload[1][0]) for it in items] == pytest.approx([0.0, 0.001, 0.0, 0.003, 0.0, 0.005])
    assert p.stats.input_non_finite == 2 * FRAME


def test_the_session_line_says_when_samples_were_taken_as_silence():
    from moshi_mlx.runtime.live import summary_line
    from moshi_mlx.runtime.pipeline import PipelineStats

    s = PipelineStats(frames_stepped=3)
    assert "NaN" not in summary_line(s)
    s.input_non_finite = 1920
    assert summary_line(s).endswith(", 1920 NaN/infinite microphone samples taken as silence")
