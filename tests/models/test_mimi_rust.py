"""The optional rustymimi backend behind the `Mimi` interface: same codes as the PyTorch
reference on the full-config fixture, and `best_backend` picks a backend that exists."""

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest

from moshi_mlx import models
from moshi_mlx.models.mimi import best_backend
from moshi_mlx.models.mimi_config import MimiConfig
from moshi_mlx.models.mimi_rust import RustyMimi
from moshi_mlx.errors import UsageError
from moshi_mlx.weights.errors import WeightsError

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "mimi"
META = json.loads((FIX / "fixtures.json").read_text())


def test_best_backend_is_available():
    b = best_backend()
    assert b in ("mlx", "rustymimi")
    if b == "rustymimi":
        import rustymimi  # noqa: F401


def test_rustymimi_backend_matches_the_reference():
    pytest.importorskip("rustymimi")
    info = META["full"]
    exp = dict(np.load(FIX / "full_expected.npz"))
    m = models.random_mimi(info["seed"], num_codebooks=8, codebook_scale=info["codebook_scale"], backend="rustymimi")
    assert (m.frame_size, m.num_codebooks) == (1920, 8)
    np.testing.assert_array_equal(np.array(m.encode(exp["pcm"])), exp["codes"][:, :8])
    m.reset()
    stream = np.concatenate([np.array(m.encode_step(exp["pcm"][..., i : i + 1920])) for i in range(0, 7680, 1920)], 2)
    np.testing.assert_array_equal(stream, exp["codes"][:, :8])
    m.reset()
    out = np.concatenate([np.array(m.decode_step(exp["codes"][:, :8, i : i + 1])) for i in range(4)], 2)
    assert out.shape == (2, 1, 7680) and np.isfinite(out).all()
    with pytest.raises(ValueError, match="multiple of 1920"):
        m.encode_step(np.zeros((1, 1, 100), np.float32))


def test_rustymimi_backend_errors():
    pytest.importorskip("rustymimi")
    with tempfile.TemporaryDirectory() as tmp:
        bad = Path(tmp) / "x.safetensors"
        bad.write_bytes(b"\x00" * 16)
        with pytest.raises(WeightsError, match="is not a safetensors file"):  # checked before rustymimi reads it
            models.load_mimi(bad, backend="rustymimi")
        with pytest.raises(WeightsError, match="rustymimi could not load"):  # rustymimi's own refusal, one line
            RustyMimi(bad)
    with pytest.raises(UsageError, match="only supports the published"):
        models.random_mimi(0, config=MimiConfig.from_dict(META["small"]["config"]), backend="rustymimi")


def test_rustymimi_missing_names_the_package_not_upstreams_distribution(monkeypatch, tmp_path):
    """`pip install 'moshi_mlx[rustymimi]'` would install PyPI's moshi_mlx (Kyutai's upstream)
    over this package (docs/setup.md): the message names rustymimi itself."""
    monkeypatch.setitem(__import__("sys").modules, "rustymimi", None)  # import fails
    with pytest.raises(WeightsError) as e:
        RustyMimi(tmp_path / "mimi.safetensors")
    msg = str(e.value)
    assert "pip install rustymimi" in msg and "moshi_mlx[" not in msg, msg
