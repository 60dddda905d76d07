"""The resampler: accurate in the pass band, no aliasing, exact lengths, and streaming in
any chunking gives exactly the batch output."""

import numpy as np
import pytest

from moshi_mlx.audio.resample import Resampler, resample


def _snr(ref, x):
    return 10 * np.log10((ref**2).sum() / ((x - ref) ** 2).sum())


@pytest.mark.parametrize(
    "sr_in,freq",
    [
        (8000, 440.0),
        (8000, 3000.0),
        (16000, 440.0),
        (16000, 5000.0),
        (22050, 5000.0),
        (44100, 440.0),
        (44100, 9000.0),
        (48000, 440.0),
        (48000, 9000.0),
    ],
)
def test_sine_is_reproduced_at_24k(sr_in, freq):
    t = np.arange(sr_in // 2) / sr_in
    y = resample(np.sin(2 * np.pi * freq * t).astype(np.float32), sr_in, 24000)
    assert y.dtype == np.float32 and y.shape == (-(-len(t) * 24000 // sr_in),)
    ref = np.sin(2 * np.pi * freq * np.arange(len(y)) / 24000)
    inner = slice(100, len(y) - 100)  # the edges see the zero signal outside the clip
    assert _snr(ref[inner], y[inner]) > 80


def test_downsampling_does_not_alias():
    sr = 48000
    t = np.arange(sr) / sr
    for freq in (13000.0, 15000.0, 20000.0):  # above the 12 kHz output Nyquist
        y = resample(np.sin(2 * np.pi * freq * t).astype(np.float32), sr, 24000)
        level_db = 10 * np.log10((y[200:-200] ** 2).mean() / 0.5)
        assert level_db < -70, (freq, level_db)


def test_identity_and_bad_rates():
    x = np.random.default_rng(0).standard_normal(100).astype(np.float32)
    np.testing.assert_array_equal(resample(x, 24000, 24000), x)
    with pytest.raises(ValueError, match="positive integers"):
        Resampler(0, 24000)


@pytest.mark.parametrize("sr_in", [44100, 16000, 48000])
def test_streaming_equals_batch(sr_in):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(sr_in // 3).astype(np.float32)
    ref = resample(x, sr_in, 24000)
    r = Resampler(sr_in, 24000)
    outs, i = [], 0
    while i < len(x):
        k = int(rng.integers(1, 2500))
        outs.append(r.process(x[i : i + k]))
        i += k
    outs.append(r.flush())
    np.testing.assert_array_equal(np.concatenate(outs), ref)
    # after flush the resampler starts a new stream
    np.testing.assert_array_equal(np.concatenate([r.process(x), r.flush()]), ref)


def test_streaming_latency_is_small():
    """The resampler only holds back what its filter needs from the future."""
    r = Resampler(48000, 24000)
    out = sum(len(r.process(np.zeros(1920, np.float32))) for _ in range(10))
    # the filter's half-length is 64 input samples (32 zero crossings at 24 kHz): the last
    # 32 outputs wait for those future inputs, no more
    assert out == 10 * 960 - 32


@pytest.mark.parametrize(
    "sr_in,sr_out", [(48000, 24000), (44100, 24000), (24000, 44100), (24000, 48000), (16000, 24000), (96000, 24000)]
)
def test_slicing_gives_the_samples_of_the_index_per_tap(sr_in, sr_out):
    """`_produce` slices its inputs and table rows (the live loop's three resamplers cost 4-5x
    less); it gives, to the bit, what an index per (output, tap) gathered, in any chunking."""
    from bench.resample_bench import GatherResampler

    rng = np.random.default_rng(2)
    x = rng.standard_normal(sr_in // 4 + 13).astype(np.float32)
    now, was = Resampler(sr_in, sr_out), GatherResampler(sr_in, sr_out)
    i = 0
    while i < len(x):
        k = int(rng.integers(1, 3000))
        np.testing.assert_array_equal(now.process(x[i : i + k]), was.process(x[i : i + k]))
        i += k
    np.testing.assert_array_equal(now.flush(), was.flush())
