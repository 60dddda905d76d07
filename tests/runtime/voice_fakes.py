"""Stand-ins for the echo tests: a codec that speaks a voice-like signal whatever the LM
says and keeps every frame it encodes (what Mimi would hear), and an LM that answers."""

import numpy as np

from bench.room import speech_like
from moshi_mlx.constants import FRAME_SIZE as FRAME


class VoiceCodec:
    def __init__(self, seconds: float = 30.0, seed: int = 1):
        self.voice = speech_like(seconds, seed=seed)
        self.encoded: list[np.ndarray] = []
        self._pos = 0

    def encode_step(self, frame):
        self.encoded.append(np.array(frame, np.float32))
        return np.zeros(8, np.int64)

    def decode_step(self, codes):
        x = self.voice[self._pos : self._pos + FRAME]
        self._pos += FRAME
        return np.pad(x, (0, FRAME - len(x)))

    def reset(self):
        self._pos = 0


class TalkingGen:
    def __init__(self, dep_q: int = 8):
        self.dep_q = dep_q

    def step(self, codes):
        return 0, [0] * self.dep_q

    def reset(self):
        pass
