"""Speech translation (Hibiki 2B, Hibiki-Zero): the conventions of the end of the speaker's input.

A translation model listens to the source speech and speaks (and writes) the translation a
little behind it. Two tokens frame the end of a turn, as in Kyutai's inference code
(hibiki_zero/inference.py `add_input_eos`, moshi's run_inference):
- the end-of-input marker: ONE input frame whose source codes are all `card` (2048, one past
  the codec's codes), in place of the frame at ceil(duration x 12.5), silence after it;
- the model's answer: the text EOS (`TEXT_EOS_ID`) once it has said everything; a file's
  translation is cut there (`cut_at_eos`).
Live, the speaker never "ends": `SilencePolicy` decides when a pause is the end of a turn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..constants import FRAME_SECONDS, FRAME_SIZE, TEXT_EOS_ID


# After a file's end-of-input marker: silence until the model's EOS, at most this long (Hibiki
# speaks a few seconds behind the source; hibiki_zero runs 120 s whatever the input)
TRANSLATION_TAIL_S = 20.0
TRANSLATION_TAIL_FRAMES = int(TRANSLATION_TAIL_S / FRAME_SECONDS)


# The live end of turn's silence level: speech at a microphone is around -30..-20 dBFS RMS, a
# quiet room -60..-50; the translation's own voice after echo cancellation should stay below
END_THRESHOLD_DB = -45.0
END_SILENCE_S = 1.5  # the live end of turn's pause (SilencePolicy, the web page, moshi-translate --end-silence)


@dataclass(frozen=True)
class InputEnd:
    """How a model's input ends, the one rule for a file (`Model.respond`) and for a simulated
    microphone playing one (`--simulate`, runtime/live.py): after the last input frame, the
    end-of-input marker (translation models), then silence until the model's EOS answers it
    (at most `wait_frames`), then `tail` frames: step t gives the audio of frame
    t + 1 - own_delay, so the last frame to answer (the last input frame, or the frame of the
    EOS) has its audio own_delay - 1 steps later."""

    marker: bool = False
    wait_frames: int = 0
    tail: int = 0


def input_end(model) -> InputEnd:
    """`InputEnd` of a loaded model (`runtime.model.Model`: cfg, speaks, translates)."""
    tail = max(int(model.cfg.own_delay) - 1, 0) if model.speaks else 0
    if model.translates:
        return InputEnd(True, TRANSLATION_TAIL_FRAMES, tail)
    return InputEnd(tail=tail)


def is_translation_model(cfg) -> bool:
    """Hibiki-family checkpoints (model_type hibiki) with audio out."""
    return cfg.model_type == "hibiki" and cfg.dep_q > 0 and cfg.user_q > 0


def end_of_input_codes(cfg) -> np.ndarray:
    """The marker frame: every source codebook = `card`."""
    return np.full(cfg.user_q, cfg.card, dtype=np.int64)


def end_of_input_frame(n_samples: int) -> int:
    """Index of the frame that carries the marker for a source of `n_samples` at 24 kHz:
    ceil(duration x 12.5), the first frame after the last (zero-padded) one with speech."""
    return -(-int(n_samples) // FRAME_SIZE)


def cut_at_eos(text_tokens: list[int], pad_id: int) -> tuple[int, bool]:
    """(frames kept, EOS found): the frames before the first EOS; without one, up to the last
    token that is not padding, as hibiki_zero's decode_outputs cuts (a warning there)."""
    if TEXT_EOS_ID in text_tokens:
        return text_tokens.index(TEXT_EOS_ID), True
    end = len(text_tokens) - 1
    while end > 0 and text_tokens[end] == pad_id:
        end -= 1
    return max(end, 0), False


def translation_end(text_tokens: list[int], turn_ends: list[int], pad_id: int) -> int:
    """Frames of a file's translation to keep: up to the first EOS that answered the marker
    (`turn_ends`, positions); without one, `cut_at_eos` of the tokens with any EOS sampled
    before the marker read as padding (moshi's run_inference ignores those)."""
    if turn_ends:
        return turn_ends[0]
    return cut_at_eos([pad_id if t == TEXT_EOS_ID else t for t in text_tokens], pad_id)[0]


@dataclass
class SilencePolicy:
    """Live end of turn: after `silence_s` of input quieter than `threshold_db` (RMS, dBFS)
    following speech, the next frame is replaced by the end-of-input marker, so the model
    translates the last words instead of waiting for more; the following speech starts a new
    turn (another marker after its pause). `silence_s` None: never (the model waits)."""

    silence_s: float | None = END_SILENCE_S
    threshold_db: float = END_THRESHOLD_DB

    def __post_init__(self):
        from ..validation import positive_or_off, real

        # the CLI's flags are checked alike (--end-silence, --end-threshold-db): -1 or NaN made every
        # frame (or none) end a turn, a string failed inside the pipeline's encoder thread
        self.silence_s = positive_or_off("silence_s", self.silence_s)
        self.threshold_db = real("threshold_db", self.threshold_db, hi=0.0)
        self._quiet = 0  # consecutive quiet frames
        self._spoke = False  # speech since the last marker

    def reset(self) -> None:
        self._quiet, self._spoke = 0, False

    @property
    def open(self) -> bool:
        """Speech came since the last marker: the turn has not been ended yet."""
        return self._spoke

    def frame(self, pcm: np.ndarray) -> bool:
        """One 80 ms input frame (24 kHz, as the encoder gets it, after echo cancellation):
        True when this frame's codes must be the marker."""
        if self.silence_s is None:
            return False
        rms = float(np.sqrt(np.mean(np.square(pcm, dtype=np.float64)))) if pcm.size else 0.0
        loud = rms > 10 ** (self.threshold_db / 20)
        if loud:
            self._quiet, self._spoke = 0, True
            return False
        self._quiet += 1
        if self._spoke and self._quiet * FRAME_SECONDS >= self.silence_s:
            self._quiet, self._spoke = 0, False
            return True
        return False
