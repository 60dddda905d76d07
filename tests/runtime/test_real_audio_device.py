"""The loop through real PortAudio streams (sounddevice) for a few seconds.

On headless Linux `scripts/test.sh` starts a PulseAudio null sink first; in CI
(MOSHI_REQUIRE_AUDIO=1) a missing device is a failure, elsewhere a skip."""

import time
import wave

import numpy as np
import pytest

from moshi_mlx.runtime.devices import AudioDeviceError, find_device, list_devices
from moshi_mlx.runtime.pipeline import DuplexPipeline, make_resampler
from moshi_mlx.runtime.recorder import StereoRecorder

from .real_devices import open_or_skip
from .fakes import EchoGen, TagCodec


def test_unknown_device_lists_what_exists():
    open_or_skip()
    with pytest.raises(AudioDeviceError, match="no input device matches 'no-such-mic'") as e:
        find_device("no-such-mic", "input")
    assert "\n" not in str(e.value) and "the input device" in str(e.value)  # one line, naming those there
    with pytest.raises(AudioDeviceError, match="does not exist"):
        find_device(9999, "output")
    assert list_devices().strip()


def test_loop_runs_through_portaudio(tmp_path):
    io = open_or_skip()
    rec = StereoRecorder(tmp_path / "rec.wav")
    p = DuplexPipeline(
        TagCodec(),
        EchoGen(),
        8,
        max_lag_ms=600,
        recorder=rec,
        in_resampler=make_resampler(io.input_rate, 24000),
        out_resampler=make_resampler(24000, io.output_rate),
        output_rate=io.output_rate,
    ).start()
    io.start(p)
    try:
        # a few seconds of audio flowing both ways (PulseAudio may take a moment to start)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 15.0:
            time.sleep(0.25)
            assert io.alive(), "audio streams stopped"
            if p.stats.frames_in >= 30 and p.stats.frames_played >= 20:
                break
    finally:
        io.close()
        p.stop()
        rec.close()
    s = p.stats.summary()
    assert s["frames_in"] >= 30, s  # 2.4 s of capture, resampled and framed
    assert s["frames_played"] >= 20, s
    assert s["delay_ms_max"] <= 600 + 1
    with wave.open(str(tmp_path / "rec.wav")) as w:
        assert w.getnchannels() == 2 and w.getnframes() >= 20 * 1920
        data = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    assert data.size > 0
