"""The one resampler: band-limited polyphase windowed-sinc for any rational rate ratio.

Output sample n sits at input time n * sr_in / sr_out (zero phase, no delay): it is the
sum of the input around that instant weighted by a Kaiser-windowed sinc whose cutoff is
`rolloff` x the lower Nyquist frequency. With the defaults (32 zero crossings, beta 9)
the stop band is below -85 dB, so e.g. 48 kHz -> 24 kHz does not alias.

`Resampler` streams: feed chunks of any size, then `flush()`; the concatenated output is
identical to `resample()` on the whole signal. It holds back the few samples the filter
still needs from the future (about 32 samples of the slower rate), which is the only delay.
"""

from __future__ import annotations

from math import gcd

import numpy as np

_BLOCK = 1 << 20  # max elements of one gather (outputs x taps)


def _kaiser_sinc_table(up: int, down: int, zero_crossings: int, rolloff: float, beta: float) -> tuple[np.ndarray, int]:
    """Polyphase table [up, taps] and the half-length (in up-rate samples)."""
    m = max(up, down)
    half = zero_crossings * m
    fc = rolloff * 0.5 / m  # cycles per up-rate sample
    taps = (2 * half) // up + 2
    phase = np.arange(up)[:, None]
    i = phase - half + np.arange(taps)[None, :] * up  # filter index of tap j for phase p
    window = np.where(
        np.abs(i) <= half, np.i0(beta * np.sqrt(np.clip(1 - (i / half) ** 2, 0, None))) / np.i0(beta), 0.0
    )
    table = up * 2 * fc * np.sinc(2 * fc * i) * window
    return table, half


class Resampler:
    """Streaming mono resampler (float32 in and out)."""

    def __init__(self, sr_in: int, sr_out: int, zero_crossings: int = 32, rolloff: float = 0.91, beta: float = 9.0):
        if int(sr_in) != sr_in or int(sr_out) != sr_out or sr_in <= 0 or sr_out <= 0:
            raise ValueError(f"sample rates must be positive integers, got {sr_in} -> {sr_out}")
        g = gcd(int(sr_in), int(sr_out))
        self.sr_in, self.sr_out = int(sr_in), int(sr_out)
        self.up, self.down = self.sr_out // g, self.sr_in // g
        self.identity = self.up == self.down
        if not self.identity:
            self._table, self._half = _kaiser_sinc_table(self.up, self.down, zero_crossings, rolloff, beta)
        self._tiled: np.ndarray | None = None  # the table's rows in the order outputs use them
        self.reset()

    def reset(self) -> None:
        self._buf = np.zeros(0, np.float32)  # input samples from absolute index self._base on
        self._base = 0
        self._received = 0
        self._next = 0  # next output index

    def _newest_input(self, n: np.ndarray) -> np.ndarray:
        return (n * self.down + self._half) // self.up

    def _produce(self, n_end: int) -> np.ndarray:
        """Outputs self._next .. n_end-1 (inputs beyond what was received count as zeros).

        Output n is the dot product of the inputs k0(n), k0(n) - 1, ... (newest first) with
        row phase(n) of the table. Both operands are built by slicing, not by index arithmetic
        per (output, tap): the inputs as rows of a sliding window over the buffer reversed, the
        table rows from a copy tiled in phase order (phase(n) repeats every `up` outputs)."""
        taps = self._table.shape[1]
        chunks = []
        step = max(1, _BLOCK // taps)
        for n0 in range(self._next, n_end, step):
            n = np.arange(n0, min(n0 + step, n_end), dtype=np.int64)
            k0 = self._newest_input(n) - self._base  # relative to the buffer
            lo, hi = int(k0[0]) - taps + 1, int(k0[-1]) + 1  # the inputs these outputs read
            size = self._buf.shape[0]
            seg = np.zeros(hi - lo, np.float32)  # before the start and after the end the signal is zero
            a, b = max(lo, 0), min(hi, size)
            if b > a:
                seg[a - lo : b - lo] = self._buf[a:b]
            rev = seg[::-1].copy()  # rev[j] = input hi - 1 - j
            windows = np.lib.stride_tricks.as_strided(
                rev, shape=(len(rev) - taps + 1, taps), strides=(rev.strides[0], rev.strides[0]), writeable=False
            )
            x = windows[hi - 1 - k0]  # row i: inputs k0[i], k0[i] - 1, ..., k0[i] - taps + 1
            chunks.append(np.einsum("nt,nt->n", x, self._phase_rows(n0, len(n))).astype(np.float32))
        self._next = n_end
        self._drop_used_inputs()
        return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)

    def _drop_used_inputs(self) -> None:
        """Keep only the inputs a later output can still use."""
        if self._buf.size:
            oldest_needed = int(self._newest_input(np.array([self._next]))[0]) - self._table.shape[1] + 1
            drop = min(max(0, oldest_needed - self._base), self._buf.shape[0])
            self._buf = self._buf[drop:]
            self._base += drop

    def _phase_rows(self, n0: int, count: int) -> np.ndarray:
        """The table rows of outputs n0 .. n0 + count - 1, a contiguous slice of the table
        tiled in phase order (grown to the longest run asked for)."""
        first = n0 % self.up
        if self._tiled is None or len(self._tiled) < first + count:
            j = np.arange(self.up + count, dtype=np.int64)
            self._tiled = self._table[(j * self.down + self._half) % self.up]
        return self._tiled[first : first + count]

    def process(self, chunk: np.ndarray) -> np.ndarray:
        """Feed mono samples; returns every output sample that no longer depends on the future."""
        x = np.asarray(chunk, dtype=np.float32).reshape(-1)
        if self.identity:
            return x.copy()
        self._buf = np.concatenate([self._buf, x])
        self._received += x.shape[0]
        # outputs whose newest input index is already known
        n_end = (self._received * self.up - self._half - 1) // self.down + 1 if self._received else 0
        n_end = max(self._next, min(n_end, self._total_out(self._received)))
        return self._produce(n_end)

    def _total_out(self, n_in: int) -> int:
        return -(-n_in * self.up // self.down)

    def flush(self) -> np.ndarray:
        """The remaining outputs (the signal is taken as ending here); then a new stream."""
        if self.identity:
            return np.zeros(0, np.float32)
        out = self._produce(self._total_out(self._received))
        self.reset()
        return out


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample a mono signal [T] -> [ceil(T * sr_out / sr_in)] (float32)."""
    r = Resampler(sr_in, sr_out)
    if r.identity:
        return np.asarray(x, dtype=np.float32).reshape(-1).copy()
    return np.concatenate([r.process(x), r.flush()])
