"""`Speaker` (TTS playback) against a fake PortAudio module: what is written comes out in
order, resampled to the device rate, after the prebuffer; gaps are silence, not drops."""

import numpy as np

from moshi_mlx.runtime import playback

from .fakes import BUILT_IN_OUTPUT, fake_devices


class _FakeStream:
    def __init__(self, callback, blocksize, channels, **kw):
        self.callback, self.blocksize, self.channels = callback, blocksize, channels
        self.started = False

    def start(self):
        self.started = True

    def pull(self, n_blocks):
        out = []
        for _ in range(n_blocks):
            buf = np.zeros((self.blocksize, self.channels), np.float32)
            self.callback(buf, self.blocksize, None, None)
            out.append(buf[:, 0].copy())
        return np.concatenate(out)

    def stop(self):
        pass

    def close(self):
        pass


class _FakeSd:
    def __init__(self):
        self.streams = []

    def OutputStream(self, **kw):
        s = _FakeStream(**kw)
        self.streams.append(s)
        return s


def _speaker(monkeypatch, rate):
    sd = _FakeSd()
    monkeypatch.setattr(playback, "_sd", lambda: sd)
    monkeypatch.setattr(
        playback,
        "_devices",
        lambda: [{"name": "fake out", "default_samplerate": rate, "max_output_channels": 2, "max_input_channels": 0}],
    )
    monkeypatch.setattr(playback, "find_device", lambda spec, kind: 0)
    return sd, playback.Speaker(None, 24000, prebuffer_s=0.1, block_seconds=0.01)


def test_chunks_play_in_order_after_the_prebuffer(monkeypatch):
    sd, spk = _speaker(monkeypatch, 24000)
    x = np.arange(1920 * 3, dtype=np.float32) / 10000
    spk.write(x[:1920])
    assert not sd.streams  # 80 ms < 100 ms prebuffer: not started yet
    spk.write(x[1920:])
    (stream,) = sd.streams
    assert stream.started
    got = stream.pull(7)  # 7 x 240 = 1680 samples
    assert np.array_equal(got, x[:1680])
    rest = stream.pull(20)  # past the end: silence, counted as underruns
    assert np.array_equal(rest[: len(x) - 1680], x[1680:]) and not rest[len(x) - 1680 :].any()
    assert spk.underruns >= 1


def test_device_rate_resampled(monkeypatch):
    sd, spk = _speaker(monkeypatch, 48000)
    t = np.arange(24000) / 24000
    spk.write(np.sin(2 * np.pi * 440 * t).astype(np.float32))
    got = sd.streams[0].pull(90)  # 90 x 480 samples at 48 kHz = 0.9 s
    assert got.shape == (43200,) and 0.9 < np.abs(got[5000:40000]).max() <= 1.05


def test_cli_without_outfile_plays(monkeypatch, capsys):
    from moshi_mlx.cli.tts import main

    played = []

    class Recorder:
        def __init__(self, device, rate):
            assert rate == 24000

        def describe(self):
            return "recorder"

        def write(self, pcm):
            played.append(np.asarray(pcm).copy())

        def drain(self, timeout=None):
            pass

        def close(self):
            pass

    fake_devices(monkeypatch, [BUILT_IN_OUTPUT], (-1, 0))  # the output device is checked before the model loads
    monkeypatch.setattr(playback, "Speaker", Recorder)
    assert main(["to the speakers", "--model", "tts-tiny", "--voice", "random", "--quiet"]) == 0
    assert played and all(p.shape == (1920,) for p in played)
    assert "playing on recorder" in capsys.readouterr().err


def test_speaker_through_portaudio():
    """Real PortAudio output (the PulseAudio null sink of scripts/test.sh on headless Linux;
    required in CI with MOSHI_REQUIRE_AUDIO=1, skipped elsewhere without devices)."""
    import time

    from .real_devices import open_or_skip

    spk = open_or_skip(lambda: playback.Speaker(None, 24000, prebuffer_s=0.2))
    t = np.arange(12000) / 24000
    try:
        t0 = time.monotonic()
        for i in range(5):  # 0.5 s in 100 ms chunks
            spk.write((0.2 * np.sin(2 * np.pi * 330 * t[i * 2400 : (i + 1) * 2400])).astype(np.float32))
        spk.drain(timeout=10.0)
        elapsed = time.monotonic() - t0
    finally:
        spk.close()
    # everything queued was consumed by the device callback, at about real-time pace
    assert spk._queued <= 0 and 0.3 < elapsed < 10.0
