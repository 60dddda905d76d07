"""Mimi as the pipeline sees it: one 80 ms frame at a time, numpy in and out.

Encoding and decoding run in different worker threads, so they get separate codec objects
when the backend keeps one shared stream state (rustymimi); the MLX `Mimi` keeps separate
encoder and decoder states and is shared.
"""

from __future__ import annotations

import numpy as np


class MimiFrameCodec:
    """A Mimi (MLX or rustymimi) as the pipeline's `FrameCoder`."""

    def __init__(self, encoder, decoder=None, n_encode: int | None = None):
        """encoder/decoder: `Mimi`-like objects (encode_step/decode_step/reset);
        n_encode: how many codebooks the LM takes per user frame (None = all)."""
        self.encoder = encoder
        self.decoder = decoder if decoder is not None else encoder
        self.n_encode = n_encode
        self.frame_size = int(encoder.frame_size)

    def encode_step(self, frame: np.ndarray) -> np.ndarray:
        x = np.asarray(frame, dtype=np.float32).reshape(1, 1, -1)
        codes = np.array(self.encoder.encode_step(x))[0, :, 0]
        return codes if self.n_encode is None else codes[: self.n_encode]

    def decode_step(self, codes) -> np.ndarray:
        c = np.asarray(codes, dtype=np.int32).reshape(1, -1, 1)
        return np.array(self.decoder.decode_step(c), dtype=np.float32).reshape(-1)

    def reset(self) -> None:
        self.encoder.reset()
        if self.decoder is not self.encoder:
            self.decoder.reset()
