"""Deterministic stand-ins for the codec and the LM, to test the pipeline's mechanics
(ordering, lag control, recording) independently of model numerics. Input frame i is a
constant i/1000; every stage passes that tag along so outputs name the frame they answer."""

import time

import numpy as np

FRAME = 1920


def tagged_input(n_frames: int) -> np.ndarray:
    return np.concatenate([np.full(FRAME, i / 1000.0, np.float32) for i in range(n_frames)])


class TagCodec:
    def __init__(self, k: int = 8, encode_s: float = 0.0, decode_s: float = 0.0):
        self.k, self.encode_s, self.decode_s = k, encode_s, decode_s
        self.resets = 0

    def encode_step(self, frame):
        assert frame.shape == (FRAME,)
        if self.encode_s:
            time.sleep(self.encode_s)
        return np.full(self.k, int(round(float(frame.mean()) * 1000)), np.int64)

    def decode_step(self, codes):
        if self.decode_s:
            time.sleep(self.decode_s)
        return np.full(FRAME, codes[0] / 1000.0, np.float32)

    def reset(self):
        self.resets += 1


class EchoGen:
    """Text token = the frame tag; audio = the user codes (dep_q of them)."""

    def __init__(self, dep_q: int = 8, fail_at: int | None = None):
        self.dep_q, self.fail_at, self.steps = dep_q, fail_at, 0

    def step(self, codes):
        if self.fail_at is not None and self.steps == self.fail_at:
            raise RuntimeError("simulated LM failure")
        self.steps += 1
        return int(codes[0]), list(codes[: self.dep_q])

    def reset(self):
        self.steps = 0


BUILT_IN_MIC = {
    "name": "Built-in Microphone",
    "max_input_channels": 1,
    "max_output_channels": 0,
    "default_samplerate": 48000.0,
}
BUILT_IN_OUTPUT = {
    "name": "Built-in Output",
    "max_input_channels": 0,
    "max_output_channels": 2,
    "default_samplerate": 44100.0,
}


def fake_devices(monkeypatch, listed: list[dict], default: tuple[int, int]) -> None:
    """The audio devices that runtime.devices sees: `listed`, and `default` = sounddevice's
    (input, output) default indices, -1 for none; no sound library is touched."""
    from types import SimpleNamespace

    from moshi_mlx.runtime import devices

    sd = SimpleNamespace(default=SimpleNamespace(device=default))
    monkeypatch.setattr(devices, "_devices", lambda: listed)
    monkeypatch.setattr(devices, "_sd", lambda: sd)
