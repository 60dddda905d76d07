"""`python -m moshi_mlx.mimi` end to end on the seeded random codec (offline): files of any
rate/channel count in, codes out equal to the API's batch codes, audio of the right length
back, clear errors for bad input."""

import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from moshi_mlx import models
from moshi_mlx.constants import DEFAULT_SEED
from moshi_mlx.audio.io import read_audio
from moshi_mlx.cli.mimi import run


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    sr = 44100
    t = np.arange(int(sr * 0.5)) / sr
    stereo = 0.3 * np.stack([np.sin(2 * np.pi * 220 * t), np.sin(2 * np.pi * 330 * t)], axis=1)
    path = d / "in.flac"
    sf.write(str(path), stereo, sr)
    return d, path


def test_encode_decode_roundtrip(clip, capsys):
    d, src = clip
    assert run(["encode", str(src), str(d / "codes.npy"), "--mimi-weight", "random", "-n", "16", "--quiet"]) == 0
    codes = np.load(d / "codes.npy")
    pcm = read_audio(src)
    assert codes.dtype == np.int32 and codes.shape == (1, 16, -(-len(pcm) // 1920))
    mimi = models.random_mimi(DEFAULT_SEED, num_codebooks=16)  # --seed's default: the package's one seed
    np.testing.assert_array_equal(codes, np.array(mimi.encode(pcm[None, None])))
    assert run(["decode", str(d / "codes.npy"), str(d / "out.wav"), "--mimi-weight", "random", "--quiet"]) == 0
    out, sr = sf.read(str(d / "out.wav"))
    assert sr == 24000 and len(out) == codes.shape[-1] * 1920
    assert run(["roundtrip", str(src), str(d / "rt.wav"), "--mimi-weight", "random"]) == 0
    rt, sr = sf.read(str(d / "rt.wav"))
    assert sr == 24000 and len(rt) == len(pcm)
    err = capsys.readouterr().err
    assert "NOISE" in err and "100%" in err


def test_errors_are_one_line(clip, capsys):
    d, src = clip
    assert run(["encode", str(d / "missing.wav"), str(d / "c.npy"), "--mimi-weight", "random"]) == 2
    assert "error: audio file not found" in capsys.readouterr().err
    np.save(d / "bad.npy", np.zeros((2, 3), np.float32))
    assert run(["decode", str(d / "bad.npy"), str(d / "o.wav"), "--mimi-weight", "random"]) == 2
    assert "expected integer codes" in capsys.readouterr().err
    assert run(["encode", str(src), str(d / "c.npy"), "--mimi-weight", str(d / "nope.safetensors")]) == 2
    assert "error: file not found" in capsys.readouterr().err


def test_rustymimi_backend(clip):
    pytest.importorskip("rustymimi")
    d, src = clip
    assert (
        run(["encode", str(src), str(d / "r.npy"), "--mimi-weight", "random", "--backend", "rustymimi", "--quiet"]) == 0
    )
    mlx_codes = models.random_mimi(DEFAULT_SEED, num_codebooks=8).encode(read_audio(src)[None, None])
    np.testing.assert_array_equal(np.load(d / "r.npy"), np.array(mlx_codes))


def test_module_entry_point():
    out = subprocess.run([sys.executable, "-m", "moshi_mlx.mimi", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "roundtrip" in out.stdout and "decode" in out.stdout
