"""Mimi against Kyutai's PyTorch MimiModel (and rustymimi) on committed fixtures.

Fixtures (scripts/make_fixtures_mimi.py): two reduced-width configs whose random weights
are committed in the released layout, and the full published config whose 96 M weights
are rebuilt here from a seed. Codes must be identical to the reference in batch and in
streaming mode; decoded audio within 60 dB SNR (measured ~120 dB).
"""

import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from moshi_mlx import models
from moshi_mlx.models.mimi_config import MimiConfig, mimi_202407

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "mimi"
META = json.loads((FIX / "fixtures.json").read_text())


def snr_db(ref: np.ndarray, x: np.ndarray) -> float:
    return float(10 * np.log10((ref**2).sum() / max(((x - ref) ** 2).sum(), 1e-30)))


def _cfg(name):
    return MimiConfig.from_dict(META[name]["config"])


_models = {}


def _model(name):
    if name not in _models:
        cfg = _cfg(name)
        if name == "full":
            info = META[name]
            m = models.random_mimi(info["seed"], num_codebooks=32, config=cfg, codebook_scale=info["codebook_scale"])
        else:
            m = models.load_mimi(FIX / f"{name}.safetensors", num_codebooks=cfg.quantizer.n_q, config=cfg)
        _models[name] = m
    m = _models[name]
    m.num_codebooks = m.total_codebooks
    m.reset()
    return m


def _expected(name):
    return dict(np.load(FIX / f"{name}_expected.npz"))


def _stream_encode(m, pcm, frames_per_call=1):
    m.reset()
    n = m.frame_size * frames_per_call
    return np.concatenate([np.array(m.encode_step(pcm[..., i : i + n])) for i in range(0, pcm.shape[-1], n)], axis=2)


def _stream_decode(m, codes, frames_per_call=1):
    m.reset()
    k = frames_per_call
    return np.concatenate(
        [np.array(m.decode_step(codes[..., i : i + k])) for i in range(0, codes.shape[-1], k)], axis=2
    )


@pytest.mark.parametrize("name", ["small", "variant", "full"])
def test_codes_identical_to_pytorch_batch_and_streaming(name):
    m, exp = _model(name), _expected(name)
    codes = np.array(m.encode(exp["pcm"]))
    assert codes.dtype == np.int32 and codes.shape == exp["codes"].shape
    np.testing.assert_array_equal(codes, exp["codes"])
    np.testing.assert_array_equal(_stream_encode(m, exp["pcm"]), exp["codes_stream"])


@pytest.mark.parametrize("name", ["small", "variant", "full"])
def test_decoded_audio_matches_pytorch(name):
    m, exp = _model(name), _expected(name)
    audio = np.array(m.decode(exp["codes"]))
    assert audio.shape == exp["audio"].shape
    assert snr_db(exp["audio"], audio) > 60
    assert snr_db(exp["audio_stream"], _stream_decode(m, exp["codes"])) > 60


def test_full_config_codes_identical_to_rustymimi():
    info, exp = META["full"], _expected("full")
    n = info["rustymimi_num_codebooks"]
    m = _model("full")
    m.num_codebooks = n
    np.testing.assert_array_equal(np.array(m.encode(exp["pcm"])), exp["rustymimi_codes"])
    np.testing.assert_array_equal(_stream_encode(m, exp["pcm"]), exp["rustymimi_codes_stream"])


@pytest.mark.parametrize("n", [8, 16, 32])
def test_num_codebooks_gives_a_prefix_of_the_full_codes(n):
    m, exp = _model("full"), _expected("full")
    m.num_codebooks = n
    codes = np.array(m.encode(exp["pcm"][:, :, : 2 * m.frame_size]))
    np.testing.assert_array_equal(codes, exp["codes"][:, :n, :2])


def test_several_frames_per_streaming_call_equal_batch():
    m, exp = _model("small"), _expected("small")
    np.testing.assert_array_equal(_stream_encode(m, exp["pcm"], frames_per_call=3), exp["codes"])
    batch = np.array(m.decode(exp["codes"]))
    np.testing.assert_allclose(_stream_decode(m, exp["codes"], frames_per_call=2), batch, atol=1e-5)


def test_streaming_long_clip_past_the_attention_context():
    """`variant` has context 5: streaming (2 steps per call) must still equal batch long after
    the ring buffer wrapped (PyTorch's own ring would drop keys here; ours is exact)."""
    m = _model("variant")
    rng = np.random.default_rng(3)
    pcm = (0.2 * rng.standard_normal((1, 1, 20 * m.frame_size))).astype(np.float32)
    codes = np.array(m.encode(pcm))
    np.testing.assert_array_equal(_stream_encode(m, pcm, frames_per_call=2), codes)
    np.testing.assert_allclose(_stream_decode(m, codes, frames_per_call=3), np.array(m.decode(codes)), atol=1e-5)


def test_reset_restarts_the_stream_and_batch_calls_leave_it_alone():
    m, exp = _model("small"), _expected("small")
    pcm = exp["pcm"]
    first = np.array(m.encode_step(pcm[..., : m.frame_size]))
    m.encode(pcm)  # a batch call must not disturb the stream
    second = np.array(m.encode_step(pcm[..., m.frame_size : 2 * m.frame_size]))
    np.testing.assert_array_equal(np.concatenate([first, second], 2), exp["codes"][..., :2])
    m.reset()
    np.testing.assert_array_equal(np.array(m.encode_step(pcm[..., : m.frame_size])), first)


def test_batch_encode_pads_to_whole_frames():
    m, exp = _model("small"), _expected("small")
    pcm = exp["pcm"][..., : 2 * m.frame_size + 100]
    padded = np.pad(pcm, [(0, 0), (0, 0), (0, m.frame_size - 100)])
    np.testing.assert_array_equal(np.array(m.encode(pcm)), np.array(m.encode(padded)))
    assert m.encode(pcm).shape[-1] == 3


def test_bad_inputs_are_clear_errors():
    m = _model("small")
    with pytest.raises(ValueError, match=r"\[B, 1, T\]"):
        m.encode(np.zeros((2, 1920), np.float32))
    with pytest.raises(ValueError, match="multiple of 1920"):
        m.encode_step(np.zeros((1, 1, 1000), np.float32))
    with pytest.raises(ValueError, match="empty"):
        m.encode(np.zeros((1, 1, 0), np.float32))
    with pytest.raises(ValueError, match=r"in \[0, 64\)"):
        m.decode(np.full((1, 8, 2), 64))
    with pytest.raises(ValueError, match="integers"):
        m.decode(np.zeros((1, 8, 2), np.float32))
    with pytest.raises(ValueError, match="between 1 and 8"):
        m.decode(np.zeros((1, 9, 2), np.int32))
    m.reset()
    m.encode_step(np.zeros((2, 1, 1920), np.float32))
    with pytest.raises(ValueError, match="batch size 2.*reset"):
        m.encode_step(np.zeros((1, 1, 1920), np.float32))
    m.reset()
    m.encode_step(np.zeros((1, 1, 1920), np.float32))


def test_published_config_preset():
    cfg = mimi_202407()
    assert (cfg.frame_size, cfg.encoder_frame_rate, cfg.resample_stride) == (1920, 25.0, 2)
    assert cfg.quantizer.n_q == 32 and cfg.quantizer.bins == 2048 and cfg.transformer.context == 250
    assert MimiConfig.from_dict(cfg.to_dict()) == cfg


def test_accepts_mlx_inputs_and_returns_mlx_arrays():
    m, exp = _model("small"), _expected("small")
    codes = m.encode(mx.array(exp["pcm"]))
    assert isinstance(codes, mx.array)
    out = m.decode(codes)
    assert isinstance(out, mx.array) and out.dtype == mx.float32


def test_long_batch_calls_run_chunked_with_the_same_result(monkeypatch):
    """Above BATCH_CHUNK_FRAMES a batch call streams privately in chunks: same codes and
    audio as one pass, and a stream in progress is left exactly where it was."""
    import moshi_mlx.models.mimi as mimi_mod

    m, exp = _model("small"), _expected("small")
    first = np.array(m.encode_step(exp["pcm"][..., : m.frame_size]))
    m.decode_step(exp["codes"][..., :1])
    monkeypatch.setattr(mimi_mod, "BATCH_CHUNK_FRAMES", 4)
    np.testing.assert_array_equal(np.array(m.encode(exp["pcm"])), exp["codes"])
    assert snr_db(exp["audio"], np.array(m.decode(exp["codes"]))) > 60
    second = np.array(m.encode_step(exp["pcm"][..., m.frame_size : 2 * m.frame_size]))
    np.testing.assert_array_equal(np.concatenate([first, second], 2), exp["codes"][..., :2])
    audio2 = np.array(m.decode_step(exp["codes"][..., 1:2]))
    assert snr_db(exp["audio_stream"][..., m.frame_size : 2 * m.frame_size], audio2) > 60


@pytest.fixture
def compiled_small():
    """The `small` / `variant` models with the compiled streaming step (the GPU path)."""
    touched = []

    def get(name):
        m = _model(name)
        m.compiled_step = True
        touched.append(m)
        return m

    yield get
    for m in touched:
        m.compiled_step = False


@pytest.mark.parametrize("name", ["small", "variant"])
def test_compiled_stream_matches_pytorch_streaming(compiled_small, name):
    m, exp = compiled_small(name), _expected(name)
    assert m.compiled_step
    np.testing.assert_array_equal(_stream_encode(m, exp["pcm"]), exp["codes_stream"])
    assert snr_db(exp["audio_stream"], _stream_decode(m, exp["codes"])) > 60
    # every call after a stream's first ran the compiled function (not the eager fallback)
    frames = exp["codes"].shape[-1]
    for side in ("encoder", "decoder"):
        assert m._compiled[side].compiled_calls == frames - 1, (side, m._compiled[side].compiled_calls, frames)


def test_compiled_stream_equals_eager_stream_past_the_context(compiled_small):
    """Ring wraps (context 5), two and three frames per call (six tokens > context: eager
    fallback), a reset, and a batch call in between: the compiled stream is the eager one."""
    m = _model("variant")
    rng = np.random.default_rng(4)
    pcm = (0.2 * rng.standard_normal((1, 1, 14 * m.frame_size))).astype(np.float32)
    codes = _stream_encode(m, pcm)
    audio2 = _stream_decode(m, codes, frames_per_call=1)
    audio3 = _stream_decode(m, codes, frames_per_call=3)
    m = compiled_small("variant")
    np.testing.assert_array_equal(_stream_encode(m, pcm), codes)
    m.encode(pcm[..., : 4 * m.frame_size])  # a batch call must not disturb the stream state
    np.testing.assert_allclose(_stream_decode(m, codes, frames_per_call=1), audio2, atol=1e-6)
    np.testing.assert_allclose(_stream_decode(m, codes, frames_per_call=3), audio3, atol=1e-6)


def test_prepare_mimi_chooses_the_compiled_step_per_profile():
    from moshi_mlx.models.backend import prepare_mimi

    m = _model("small")
    try:
        assert prepare_mimi(m, profile="gpu") and m.compiled_step
        assert not prepare_mimi(m, profile="cpu") and not m.compiled_step
        assert prepare_mimi(m) == (mx.default_device().type == mx.DeviceType.gpu)
    finally:
        m.compiled_step = False
