"""Reading a signal between its samples (audio/fractional.py), as the echo canceller reads its
reference when the microphone's clock drifts from the output device's."""

import numpy as np
import pytest

from moshi_mlx.audio.fractional import FractionalReader

SR = 24_000


@pytest.mark.parametrize("freq,snr_db", [(200.0, 80.0), (1000.0, 75.0), (6000.0, 60.0), (10000.0, 45.0)])
def test_a_sine_read_between_its_samples(freq, snr_db):
    x = np.sin(2 * np.pi * freq * np.arange(SR) / SR).astype(np.float32)
    p = 100.0 + np.arange(SR // 2) * (1.0 + 150e-6) + 0.37  # 150 ppm faster, off the sample grid
    y = FractionalReader().read(x, p)
    ref = np.sin(2 * np.pi * freq * p / SR)
    assert 10 * np.log10(np.sum(ref**2) / np.sum((y - ref) ** 2)) >= snr_db


def test_outside_the_signal_is_silence_and_on_its_samples_it_is_the_signal():
    x = np.sin(2 * np.pi * 440.0 * np.arange(500) / SR).astype(np.float32)
    r = FractionalReader()
    assert np.all(r.read(x, np.array([-40.0, 540.0, 600.5])) == 0.0)
    np.testing.assert_allclose(r.read(x, np.arange(100, 400, dtype=np.float64)), x[100:400], atol=1e-3)
