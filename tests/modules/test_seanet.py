"""SEANet: streaming in any whole-hop chunking equals batch, the encoder and decoder are
causal (a later input never changes an earlier output), and shapes follow the hop."""

import mlx.core as mx
import mlx.utils
import numpy as np
import pytest

from moshi_mlx.modules.seanet import SeanetConfig, SeanetDecoder, SeanetEncoder

CFG = SeanetConfig(n_filters=4, dimension=8, ratios=[4, 3, 2], n_residual_layers=2, true_skip=False)
HOP = CFG.hop_length  # 24


def _randomize(m, seed):
    rng = np.random.default_rng(seed)
    params = mlx.utils.tree_map(
        lambda p: mx.array(rng.standard_normal(p.shape).astype(np.float32) * 0.3), m.parameters()
    )
    m.update(params)
    return m


def _stream(m, x, chunk):
    m.reset()
    return np.array(mx.concatenate([m.step(x[:, i : i + chunk]) for i in range(0, x.shape[1], chunk)], axis=1))


@pytest.mark.parametrize("chunk_hops", [1, 2, 3])
def test_encoder_streaming_equals_batch(chunk_hops):
    enc = _randomize(SeanetEncoder(CFG), 0)
    x = mx.array(np.random.default_rng(1).standard_normal((2, 6 * HOP, 1)).astype(np.float32))
    ref = np.array(enc(x))
    assert ref.shape == (2, 6, CFG.dimension)
    np.testing.assert_allclose(_stream(enc, x, chunk_hops * HOP), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("chunk", [1, 2, 4])
def test_decoder_streaming_equals_batch(chunk):
    dec = _randomize(SeanetDecoder(CFG), 2)
    z = mx.array(np.random.default_rng(3).standard_normal((2, 8, CFG.dimension)).astype(np.float32))
    ref = np.array(dec(z))
    assert ref.shape == (2, 8 * HOP, 1)
    np.testing.assert_allclose(_stream(dec, z, chunk), ref, atol=1e-5, rtol=1e-5)


def test_encoder_and_decoder_are_causal():
    enc, dec = _randomize(SeanetEncoder(CFG), 4), _randomize(SeanetDecoder(CFG), 5)
    rng = np.random.default_rng(6)
    x = rng.standard_normal((1, 6 * HOP, 1)).astype(np.float32)
    x2 = x.copy()
    x2[:, 3 * HOP :] = rng.standard_normal((1, 3 * HOP, 1))
    a, b = np.array(enc(mx.array(x))), np.array(enc(mx.array(x2)))
    np.testing.assert_array_equal(a[:, :3], b[:, :3])
    assert np.abs(a[:, 3:] - b[:, 3:]).max() > 1e-3
    z = rng.standard_normal((1, 6, CFG.dimension)).astype(np.float32)
    z2 = z.copy()
    z2[:, 4:] += 1.0
    y, y2 = np.array(dec(mx.array(z))), np.array(dec(mx.array(z2)))
    np.testing.assert_array_equal(y[:, : 4 * HOP], y2[:, : 4 * HOP])
    assert np.abs(y[:, 4 * HOP :] - y2[:, 4 * HOP :]).max() > 1e-4


def test_layer_indices_follow_the_reference_layout():
    """ELUs are kept as entries so that `model.i` matches the published checkpoint keys."""
    enc = SeanetEncoder(SeanetConfig())
    names = {k for k, _ in mlx.utils.tree_flatten(enc.parameters())}
    assert "model.0.weight" in names and "model.3.weight" in names and "model.14.weight" in names
    assert "model.1.block.1.weight" in names and "model.1.block.3.weight" in names
    dec = SeanetDecoder(SeanetConfig())
    names = {k for k, _ in mlx.utils.tree_flatten(dec.parameters())}
    assert {"model.0.weight", "model.2.weight", "model.3.block.1.weight", "model.14.weight"} <= names
