"""Streaming causal convolutions: batch output equals a direct numpy convolution on the
PyTorch weight layout (so the loader's layout conversion is checked too), and streaming in
any chunking equals batch."""

import mlx.core as mx
import numpy as np
import pytest

from moshi_mlx.modules.conv import StreamingConv1d, StreamingConvTranspose1d, elu
from moshi_mlx.weights.mimi_keys import conv_weight_from_torch, convtr_weight_from_torch

RNG = np.random.default_rng(0)


def _np_conv(x, w, b, stride, dilation, pad_mode):
    """x [B, T, Cin], w [out, in, k] (PyTorch layout), causal left padding."""
    B, T, C = x.shape
    out, _, k = w.shape
    pad = (k - 1) * dilation + 1 - stride
    if pad_mode == "replicate":
        xp = np.concatenate([np.repeat(x[:, :1], pad, axis=1), x], axis=1)
    else:
        xp = np.concatenate([np.zeros((B, pad, C), x.dtype), x], axis=1)
    t_out = T // stride
    y = np.zeros((B, t_out, out), np.float64)
    for t in range(t_out):
        for j in range(k):
            y[:, t] += xp[:, t * stride + j * dilation] @ w[:, :, j].T
    return y + (b if b is not None else 0)


def _np_convtr(x, w, b, stride, depthwise):
    """x [B, T, Cin], w [in, out/groups, k]; output trimmed to T * stride (causal)."""
    B, T, C = x.shape
    k = w.shape[-1]
    out = C if depthwise else w.shape[1]
    y = np.zeros((B, (T - 1) * stride + k, out), np.float64)
    for t in range(T):
        for j in range(k):
            if depthwise:
                y[:, t * stride + j] += x[:, t] * w[:, 0, j]
            else:
                y[:, t * stride + j] += x[:, t] @ w[:, :, j]
    return y[:, : T * stride] + (b if b is not None else 0)


def _conv(cin, cout, k, s, d, pad_mode, bias=True):
    conv = StreamingConv1d(cin, cout, k, stride=s, dilation=d, bias=bias, pad_mode=pad_mode)
    w = RNG.standard_normal((cout, cin, k)).astype(np.float32)
    b = RNG.standard_normal(cout).astype(np.float32) if bias else None
    conv.weight = mx.array(conv_weight_from_torch(w))
    if bias:
        conv.bias = mx.array(b)
    return conv, w, b


def _stream(module, x, chunk):
    module.reset()
    outs = [module.step(x[:, i : i + chunk]) for i in range(0, x.shape[1], chunk)]
    return np.array(mx.concatenate(outs, axis=1))


@pytest.mark.parametrize(
    "k,s,d,pad_mode,bias",
    [
        (7, 1, 1, "constant", True),
        (3, 1, 2, "constant", True),
        (1, 1, 1, "constant", False),
        (8, 4, 1, "constant", True),
        (16, 8, 1, "constant", True),
        (4, 2, 1, "replicate", False),
        (5, 3, 1, "replicate", True),
    ],
)
def test_conv1d_matches_numpy_and_streams(k, s, d, pad_mode, bias):
    conv, w, b = _conv(3, 5, k, s, d, pad_mode, bias)
    x = RNG.standard_normal((2, 12 * s, 3)).astype(np.float32)
    ref = _np_conv(x, w, b, s, d, pad_mode)
    out = np.array(conv(mx.array(x)))
    np.testing.assert_allclose(out, ref, atol=1e-4, rtol=1e-4)
    for chunk_frames in (1, 2, 5):
        np.testing.assert_allclose(_stream(conv, mx.array(x), chunk_frames * s), out, atol=1e-5, rtol=1e-5)


def test_conv1d_rejects_bad_lengths_and_shapes():
    conv, _, _ = _conv(3, 5, 4, 2, 1, "constant")
    with pytest.raises(ValueError, match="multiple of the stride"):
        conv(mx.zeros((1, 5, 3)))
    with pytest.raises(ValueError, match=r"\[B, T, 3\]"):
        conv(mx.zeros((1, 4, 2)))
    with pytest.raises(ValueError, match="pad_mode"):
        StreamingConv1d(1, 1, 3, pad_mode="reflect")


def test_conv1d_reset_starts_a_new_stream():
    conv, _, _ = _conv(2, 2, 5, 1, 1, "replicate")
    x = mx.array(RNG.standard_normal((1, 6, 2)).astype(np.float32))
    a = np.array(conv.step(x))
    conv.step(x)
    conv.reset()
    np.testing.assert_array_equal(np.array(conv.step(x)), a)


@pytest.mark.parametrize(
    "k,s,depthwise,bias",
    [
        (16, 8, False, True),
        (4, 2, False, True),
        (5, 2, False, False),  # kernel not a multiple of the stride
        (3, 1, False, True),
        (4, 2, True, False),
        (7, 3, True, True),
    ],
)
def test_convtr_matches_numpy_and_streams(k, s, depthwise, bias):
    cin = 4
    cout = cin if depthwise else 3
    convtr = StreamingConvTranspose1d(cin, cout, k, stride=s, groups=cin if depthwise else 1, bias=bias)
    w = RNG.standard_normal((cin, 1 if depthwise else cout, k)).astype(np.float32)
    b = RNG.standard_normal(cout).astype(np.float32) if bias else None
    convtr.weight = mx.array(convtr_weight_from_torch(w, depthwise))
    if bias:
        convtr.bias = mx.array(b)
    x = RNG.standard_normal((2, 11, cin)).astype(np.float32)
    ref = _np_convtr(x, w, b, s, depthwise)
    out = np.array(convtr(mx.array(x)))
    np.testing.assert_allclose(out, ref, atol=1e-4, rtol=1e-4)
    for chunk in (1, 2, 4):
        np.testing.assert_allclose(_stream(convtr, mx.array(x), chunk), out, atol=1e-5, rtol=1e-5)


def test_convtr_arguments_are_validated():
    with pytest.raises(ValueError, match="at least the stride"):
        StreamingConvTranspose1d(2, 2, 2, stride=3)
    with pytest.raises(ValueError, match="depthwise"):
        StreamingConvTranspose1d(4, 4, 4, stride=2, groups=2)


def test_elu_matches_definition():
    x = np.linspace(-5, 5, 101).astype(np.float32)
    np.testing.assert_allclose(np.array(elu(mx.array(x))), np.where(x > 0, x, np.expm1(x)), rtol=1e-6, atol=1e-7)
