"""Integrated loudness (ITU-R BS.1770, as pyloudnorm measures it) and normalisation.

PersonaPlex normalises a voice prompt to -24 LUFS with pyloudnorm before encoding it
(NVIDIA's `normalize_audio`). The same measure in numpy, so the package needs neither
pyloudnorm nor scipy: pyloudnorm's K-weighting (its RBJ-cookbook high shelf, 4 dB at
1500 Hz, then high pass at 38 Hz), 400 ms blocks with 75 % overlap, the -70 LUFS absolute
gate (>=) and the -10 LU relative gate (>), mono channel gain 1. The biquads run block by
block: inside a block the response is a convolution with the filter's impulse response
plus the response to the state carried in, so the recursion stays exact without a
per-sample Python loop.
"""

from __future__ import annotations

import numpy as np

from ..errors import AudioError

_BLOCK = 256


def _biquad(G: float, Q: float, fc: float, rate: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """pyloudnorm's `IIRfilter` coefficients (b, a), normalised by a0."""
    A = 10 ** (G / 40.0)
    w0 = 2.0 * np.pi * (fc / rate)
    alpha = np.sin(w0) / (2.0 * Q)
    c = np.cos(w0)
    if kind == "high_shelf":
        b = [
            A * ((A + 1) + (A - 1) * c + 2 * np.sqrt(A) * alpha),
            -2 * A * ((A - 1) + (A + 1) * c),
            A * ((A + 1) + (A - 1) * c - 2 * np.sqrt(A) * alpha),
        ]
        a = [
            (A + 1) - (A - 1) * c + 2 * np.sqrt(A) * alpha,
            2 * ((A - 1) - (A + 1) * c),
            (A + 1) - (A - 1) * c - 2 * np.sqrt(A) * alpha,
        ]
    else:  # high_pass
        b = [(1 + c) / 2, -(1 + c), (1 + c) / 2]
        a = [1 + alpha, -2 * c, 1 - alpha]
    return np.array(b) / a[0], np.array(a) / a[0]


def _recurse(b: np.ndarray, a: np.ndarray, x: np.ndarray, past: tuple[float, float, float, float]) -> np.ndarray:
    """The difference equation y[n] = b0 x[n] + b1 x[n-1] + b2 x[n-2] - a1 y[n-1] - a2 y[n-2]
    sample by sample; past = (x[-1], x[-2], y[-1], y[-2])."""
    x1, x2, y1, y2 = past
    y = np.empty_like(x)
    for n, xn in enumerate(x):
        yn = b[0] * xn + b[1] * x1 + b[2] * x2 - a[1] * y1 - a[2] * y2
        y[n] = yn
        x1, x2, y1, y2 = xn, x1, yn, y1
    return y


def lfilter(b: np.ndarray, a: np.ndarray, x: np.ndarray) -> np.ndarray:
    """A biquad over x (float64, zero initial state), as scipy.signal.lfilter(b, a, x)."""
    L = _BLOCK
    h = _recurse(b, a, np.eye(1, L)[0], (0.0, 0.0, 0.0, 0.0))  # impulse response
    # response over a block to each of the four past values (x[-1], x[-2], y[-1], y[-2])
    basis = np.stack([_recurse(b, a, np.zeros(L), tuple(np.eye(4)[i])) for i in range(4)])
    # zero-state response of every block at once: a lower-triangular Toeplitz product
    idx = np.arange(L)[:, None] - np.arange(L)[None, :]
    toeplitz = np.where(idx >= 0, h[np.clip(idx, 0, L - 1)], 0.0)
    n = x.shape[0]
    padded = np.concatenate([x, np.zeros(-n % L)]).reshape(-1, L)
    zs = padded @ toeplitz.T
    y = np.empty_like(padded)
    past = np.zeros(4)
    for i in range(padded.shape[0]):
        y[i] = zs[i] + past @ basis
        past = np.array([padded[i, -1], padded[i, -2], y[i, -1], y[i, -2]])
    return y.reshape(-1)[:n]


def integrated_loudness(pcm: np.ndarray, rate: int, block_size: float = 0.4) -> float:
    """Integrated loudness of mono pcm [T] in LUFS (-inf for silence)."""
    x = np.asarray(pcm, dtype=np.float64).reshape(-1)
    if x.shape[0] < block_size * rate:
        raise AudioError(f"audio of {x.shape[0] / rate:.2f} s is shorter than a loudness block ({block_size} s)")
    for spec in ((4.0, 1 / np.sqrt(2), 1500.0, "high_shelf"), (0.0, 0.5, 38.0, "high_pass")):
        b, a = _biquad(spec[0], spec[1], spec[2], rate, spec[3])
        x = lfilter(b, a, x)
    step = 0.25
    n_blocks = int(np.round((x.shape[0] / rate - block_size) / (block_size * step))) + 1
    z = np.empty(n_blocks)
    for j in range(n_blocks):
        lo = int(block_size * (j * step) * rate)
        hi = int(block_size * (j * step + 1) * rate)
        z[j] = np.sum(np.square(x[lo:hi])) / (block_size * rate)
    with np.errstate(divide="ignore"):
        blocks = -0.691 + 10.0 * np.log10(z)
        gated = z[blocks >= -70.0]
        if gated.size == 0:
            return float("-inf")
        relative = -0.691 + 10.0 * np.log10(np.mean(gated)) - 10.0
        kept = z[(blocks > relative) & (blocks > -70.0)]
        return float(-0.691 + 10.0 * np.log10(np.mean(kept) if kept.size else 0.0))


def normalize_loudness(pcm: np.ndarray, rate: int, target_lufs: float) -> np.ndarray:
    """pcm scaled to `target_lufs` integrated loudness (float32); silence is an AudioError."""
    loudness = integrated_loudness(pcm, rate)
    if not np.isfinite(loudness):
        raise AudioError("the audio is silent (no loudness to normalise)")
    gain = 10.0 ** ((target_lufs - loudness) / 20.0)
    return (np.asarray(pcm, dtype=np.float64) * gain).astype(np.float32)
