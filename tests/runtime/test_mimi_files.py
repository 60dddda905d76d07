"""File <-> codes helpers: chunked streaming over a long file equals one batch call, and
outputs are trimmed to the input length."""

import json
from pathlib import Path

import numpy as np
import soundfile as sf

from moshi_mlx import models
from moshi_mlx.audio.io import read_audio
from moshi_mlx.models.mimi_config import MimiConfig
from moshi_mlx.runtime import mimi_files

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "mimi"


def _small():
    cfg = MimiConfig.from_dict(json.loads((FIX / "fixtures.json").read_text())["small"]["config"])
    return models.load_mimi(FIX / "small.safetensors", num_codebooks=8, config=cfg)


def test_chunked_file_coding_equals_batch(tmp_path, monkeypatch):
    monkeypatch.setattr(mimi_files, "CHUNK_FRAMES", 4)  # several chunks + a ragged tail
    m = _small()
    rng = np.random.default_rng(0)
    x = (0.2 * rng.standard_normal(int(16000 * 1.37))).astype(np.float32)
    src = tmp_path / "in.wav"
    sf.write(str(src), x, 16000, subtype="FLOAT")
    pcm = read_audio(src)
    seen = []
    codes = mimi_files.encode_file(m, src, seen.append)
    np.testing.assert_array_equal(codes, np.array(m.encode(pcm[None, None])))
    assert sum(seen) == codes.shape[-1] == mimi_files.frame_count(src, m)
    n = mimi_files.decode_to_file(m, codes[0], tmp_path / "out.wav", num_samples=len(pcm))
    out, sr = sf.read(str(tmp_path / "out.wav"), dtype="float32")
    assert sr == 24000 and n == len(out) == len(pcm)
    batch = np.array(m.decode(codes)).reshape(-1)[: len(pcm)]
    np.testing.assert_allclose(out, np.clip(batch, -1, 1), atol=1e-4)  # 16-bit WAV
    rt_codes = mimi_files.roundtrip_file(m, src, tmp_path / "rt.wav")
    np.testing.assert_array_equal(rt_codes, codes)
    rt, _ = sf.read(str(tmp_path / "rt.wav"), dtype="float32")
    np.testing.assert_allclose(rt, out, atol=1e-4)
