"""The stereo recording's length and padding: the file keeps everything either side sent."""

import wave

import numpy as np
import pytest

from moshi_mlx.runtime.recorder import StereoRecorder


def _read(path) -> np.ndarray:
    with wave.open(str(path)) as w:
        assert w.getnchannels() == 2 and w.getframerate() == 24000 and w.getsampwidth() == 2
        return np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, 2) / 32767.0


@pytest.mark.parametrize("longer", ["user", "model"])
def test_close_pads_the_shorter_side_to_the_longer(tmp_path, longer):
    """User 3 x 1000 samples, model 2 x 900 (or the other way round): the file is 3000
    frames long, the longer side whole, the shorter one followed by exact silence."""
    rec = StereoRecorder(tmp_path / "r.wav")
    long_add, short_add = (rec.add_user, rec.add_model) if longer == "user" else (rec.add_model, rec.add_user)
    for v in (0.1, 0.2, 0.3):
        long_add(np.full(1000, v, np.float32))
    for _ in range(2):
        short_add(np.full(900, -0.25, np.float32))
    assert rec.close() == tmp_path / "r.wav"
    data = _read(tmp_path / "r.wav")
    assert data.shape == (3000, 2)
    long_ch, short_ch = (data[:, 0], data[:, 1]) if longer == "user" else (data[:, 1], data[:, 0])
    np.testing.assert_allclose(long_ch, np.repeat([0.1, 0.2, 0.3], 1000), atol=1 / 32767)
    np.testing.assert_allclose(short_ch[:1800], -0.25, atol=1 / 32767)
    assert not short_ch[1800:].any()  # padded with silence, not cut
    assert rec.seconds == 3000 / 24000


def test_one_side_only_is_kept_whole(tmp_path):
    """Nothing from the model at all (it never answered): the user's audio is still all there."""
    rec = StereoRecorder(tmp_path / "r.wav")
    rec.add_user(np.full(1920, 0.5, np.float32))
    rec.close()
    data = _read(tmp_path / "r.wav")
    assert data.shape == (1920, 2) and not data[:, 1].any()
    np.testing.assert_allclose(data[:, 0], 0.5, atol=1 / 32767)
