"""The audio reader/writer: any format/rate/channel count to 24 kHz float32 mono, block
reading equals whole reading, and bad files are one-line AudioErrors."""

import numpy as np
import pytest
import soundfile as sf

from moshi_mlx.audio.io import AudioError, audio_info, iter_audio, read_audio, write_audio
from moshi_mlx.audio.resample import resample


def _tone(sr, seconds=0.5, freq=440.0, channels=1):
    t = np.arange(int(sr * seconds)) / sr
    x = 0.5 * np.sin(2 * np.pi * freq * t)
    if channels == 1:
        return x.astype(np.float32)
    return np.stack([x * (c + 1) / channels for c in range(channels)], axis=1).astype(np.float32)


@pytest.mark.parametrize(
    "ext,subtype", [("wav", "FLOAT"), ("wav", "PCM_16"), ("flac", None), ("ogg", None), ("mp3", None)]
)
def test_formats_rates_and_channels(tmp_path, ext, subtype):
    sr = 44100
    stereo = _tone(sr, channels=2)
    path = tmp_path / f"a.{ext}"
    sf.write(str(path), stereo, sr, subtype=subtype)
    y = read_audio(path)
    assert y.dtype == np.float32 and y.ndim == 1
    expected = resample(stereo.mean(axis=1), sr, 24000)
    if ext in ("ogg", "mp3"):  # lossy codecs: level and length only (mp3 adds encoder padding)
        assert abs(len(y) - len(expected)) < 0.1 * 24000
        assert abs(np.sqrt((y**2).mean()) - np.sqrt((expected**2).mean())) < 0.05
    else:
        assert len(y) == len(expected)
        np.testing.assert_allclose(y, expected, atol=1e-5 if subtype == "FLOAT" else 1e-3)  # 16-bit PCM quantization


def test_block_reading_equals_whole_reading(tmp_path):
    path = tmp_path / "b.wav"
    sf.write(str(path), _tone(48000, seconds=1.3), 48000, subtype="FLOAT")
    whole = read_audio(path)
    blocks = np.concatenate(list(iter_audio(path, block_seconds=0.17)))
    np.testing.assert_array_equal(blocks, whole)
    assert audio_info(path) == (48000, 1, int(48000 * 1.3))


def test_write_then_read_roundtrip(tmp_path):
    x = _tone(24000) * 1.5  # beyond full scale: 16-bit WAV clips, float keeps it
    write_audio(tmp_path / "c.wav", x)
    y = read_audio(tmp_path / "c.wav")
    assert np.abs(y).max() <= 1.0 and np.abs(y - np.clip(x, -1, 1)).max() < 1e-4
    write_audio(tmp_path / "d.wav", x, subtype="FLOAT")
    np.testing.assert_array_equal(read_audio(tmp_path / "d.wav"), x)


def test_bad_files_are_clear_errors(tmp_path):
    with pytest.raises(AudioError, match="not found"):
        read_audio(tmp_path / "missing.wav")
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(AudioError, match="empty"):
        read_audio(tmp_path / "empty.wav")
    (tmp_path / "junk.wav").write_bytes(b"this is not audio at all" * 10)
    with pytest.raises(AudioError, match="cannot read .*junk.wav as audio"):
        read_audio(tmp_path / "junk.wav")
    sf.write(str(tmp_path / "silent.wav"), np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match="no samples"):
        read_audio(tmp_path / "silent.wav")
    with pytest.raises(AudioError, match="directory"):
        read_audio(tmp_path)
    with pytest.raises(AudioError, match="^audio file: empty path$"):  # was "... but . is a directory"
        read_audio("")
    with pytest.raises(AudioError, match="unknown audio format"):
        write_audio(tmp_path / "x.xyz", np.zeros(10))
    with pytest.raises(AudioError, match="does not exist"):
        write_audio(tmp_path / "nodir" / "x.wav", np.zeros(10))


@pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="POSIX named pipes")
def test_a_pipe_is_read_as_a_stream(tmp_path):
    """`run_inference /dev/stdin` or `<(sox ...)`: a pipe has no size; it was refused as
    "empty (0 bytes)" while holding a whole WAV."""
    import os
    import threading

    x = (0.2 * np.sin(np.arange(4800) / 7)).astype(np.float32)
    sf.write(tmp_path / "a.wav", x, 24000, subtype="FLOAT")
    data = (tmp_path / "a.wav").read_bytes()
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_bytes(data), daemon=True)
    writer.start()
    try:
        got = read_audio(fifo, 24000)
    finally:
        writer.join(10)
    np.testing.assert_allclose(got, x, atol=1e-6)


@pytest.mark.parametrize("ext", [".wav", ".flac"])
def test_a_stop_signal_while_the_writer_opens_leaves_no_temporary_file(tmp_path, monkeypatch, ext):
    """A stop signal (Ctrl-C, or SIGTERM raised as an interrupt) that lands while AudioWriter
    opens its temporary file removes it, as an error there does: nothing is left in the
    folder (tests/cli/test_tts.py's SIGTERM test found one there once, under load)."""
    from moshi_mlx.audio import io, wav

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(wav, "WavWriter", interrupted)
    monkeypatch.setattr(sf, "SoundFile", interrupted)
    with pytest.raises(KeyboardInterrupt):
        io.AudioWriter(tmp_path / f"out{ext}", 24000)
    assert list(tmp_path.iterdir()) == []
