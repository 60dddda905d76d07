"""Speech-to-text on the live loop's pipeline: a capture source (microphone, simulated
device, or a file pushed as fast as it is consumed) -> encoder thread -> LM thread, the
same `DuplexPipeline` as `moshi_mlx.local`, with no audio coming back (dep_q = 0).

Nothing is skipped when compute falls behind (a transcript with holes is worse than a late
one): `lag_seconds` says how far behind the audio the transcription is.
"""

from __future__ import annotations

import queue
import time

import numpy as np

from ..constants import DEFAULT_SEED, FRAME_SECONDS, FRAME_SIZE, SAMPLE_RATE
from .stt import END_OF_TURN_THRESHOLD, HeadsGen, SttDecoder, SttUpdate, check_stt_model, make_stt_gen


class PipelineTranscriber:
    """model: what `moshi_mlx.load()` gives (a speech-to-text model). in_rate: the capture rate.
    Call `start()`, `push(block)` from the capture side (never blocks unless `wait`), `poll()`
    from the front end for what was recognised, `finish()` at the end of the audio."""

    def __init__(
        self,
        model,
        *,
        in_rate: int = SAMPLE_RATE,
        temp: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int = DEFAULT_SEED,
        vad_threshold: float = END_OF_TURN_THRESHOLD,
    ):
        cfg = model.cfg
        check_stt_model(cfg)
        self.cfg = cfg
        self.in_rate = int(in_rate)
        self.gen = HeadsGen(
            make_stt_gen(model.lm, temp=temp, top_k=top_k, top_p=top_p, seed=seed, compute=model.compute)
        )
        self.decoder = SttDecoder(model.tokenizer, cfg, vad_threshold=vad_threshold)
        self._steps: queue.SimpleQueue = queue.SimpleQueue()
        self.pipe = model.pipeline(self.gen, input_rate=self.in_rate, max_lag_ms=None, on_text=self._on_text)
        self.samples_pushed = 0  # at the capture rate, prefix and tail included
        self._t_start: float | None = None

    @property
    def timing(self):
        return self.decoder.timing

    def _on_text(self, ev) -> None:  # LM thread, right after the step that set last_heads
        self._steps.put((ev.token, ev.frame, self.gen.last_heads))

    def start(self) -> "PipelineTranscriber":
        self.pipe.start()
        self._t_start = time.monotonic()
        self.push(np.zeros(int(round(self.timing.prefix_seconds * self.in_rate)), np.float32), wait=True)
        return self

    def push(self, block: np.ndarray, wait: bool = False) -> None:
        if len(block):
            self.samples_pushed += len(block)
            self.pipe.push_input(block, wait=wait)

    def finish(self, timeout: float | None = None) -> None:
        """No more audio: complete the last frame, add the model's delay + 1 s of silence,
        and wait until every frame has been stepped."""
        per_frame = FRAME_SIZE * self.in_rate / SAMPLE_RATE
        partial = self.samples_pushed % per_frame
        pad = (per_frame - partial if partial else 0) + self.timing.suffix_samples * self.in_rate / SAMPLE_RATE
        self.push(np.zeros(int(round(pad)), np.float32), wait=True)
        self.pipe.close_input()
        self.pipe.finished.wait(timeout)
        self.pipe.stop()
        if self.pipe.error is not None:
            raise self.pipe.error

    def stop(self) -> None:
        self.pipe.stop(timeout=5)

    @property
    def failed(self) -> bool:
        return self.pipe.failed.is_set()

    @property
    def error(self):
        return self.pipe.error

    def poll(self, timeout: float = 0.0) -> list[SttUpdate]:
        """What each step done since the last call recognised, in order (waits up to
        `timeout` for the first)."""
        out: list[SttUpdate] = []
        try:
            item = self._steps.get(timeout=timeout) if timeout > 0 else self._steps.get_nowait()
        except queue.Empty:
            return out
        while True:
            out.append(self.decoder.add(*item))
            try:
                item = self._steps.get_nowait()
            except queue.Empty:
                return out

    def drain(self) -> list[SttUpdate]:
        """After `finish()`: the remaining steps, and the last word closed."""
        return self.poll() + [self.decoder.finish()]

    def lag_seconds(self) -> float:
        """How far the transcription runs behind real time (live sources)."""
        if self._t_start is None:
            return 0.0
        return max(0.0, time.monotonic() - self._t_start - self.pipe.stats.frames_stepped * FRAME_SECONDS)
