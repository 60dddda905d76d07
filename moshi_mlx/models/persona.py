"""PersonaPlex's system prompt: the frames given to the model before the user speaks.

NVIDIA's `LMGen.step_system_prompts` (NVIDIA/personaplex, moshi/models/lm.py) steps four
phases, every stream given at every frame (text, the model's 8 codebooks, the user's 8):
1. the voice prompt: text PAD (3), the voice's Mimi codes, the user's SINE tokens;
2. 0.5 s (6 frames) of silence: PAD, SILENCE tokens, SINE;
3. the role: one frame per SentencePiece token of "<system> {persona} <system>": token,
   SILENCE, SINE;
4. 6 frames of silence again.
Its first step (offset 0) only seeds the delay cache with initial tokens, so the voice's
first frame is never seen by the model: the frames here start with the voice's second one
(with `LmGen`'s alignment, NVIDIA's step s is frame s - 1, see models/generate.py).

A stored voice (the published presets, `voices.tgz`) holds instead the input embeddings
of the voice phase's positions (NVIDIA's `step_embeddings` replays them) and NVIDIA's token
cache after it, from which the frames the following positions read are taken.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..constants import FRAME_RATE
from ..errors import UsageError
from .config import LmConfig

SILENCE_TOKENS = (948, 243, 1178, 546, 1736, 1030, 1978, 2008)  # Mimi codes of silence
SINE_TOKENS = (430, 1268, 381, 1611, 1095, 1495, 56, 472)  # Mimi codes of a 440 Hz tone
PROMPT_TEXT_PAD = 3  # NVIDIA's zero_text_code
SILENCE_FRAMES = int(0.5 * FRAME_RATE)  # NVIDIA's audio_silence_frame_cnt
AUDIO_CODEBOOKS = 8  # per stream: the model's and the user's
VOICE_LUFS = -24.0  # NVIDIA normalises a voice recording to this loudness before encoding it
# the role when none is given: NVIDIA's (offline.py --text-prompt's default, and its web client's
# DEFAULT_TEXT_PROMPT), the one source of it here (runtime/persona.py persona_prompt, the web page)
DEFAULT_PERSONA = "You are a wise and friendly teacher. Answer questions or provide advice in a clear and engaging way."


def system_prompt_text(persona: str) -> str:
    """NVIDIA's `wrap_with_system_tags`: the role between `<system>` tags (kept if already there)."""
    cleaned = persona.strip()
    if cleaned.startswith("<system>") and cleaned.endswith("<system>"):
        return cleaned
    return f"<system> {cleaned} <system>"


@dataclass
class Voice:
    """A voice prompt: the Mimi codes of a recording [8, N], or a stored voice (input
    embeddings [N - 1, dim] and NVIDIA's token cache [1 + n_q, cache length])."""

    name: str
    codes: np.ndarray | None = None
    embeddings: np.ndarray | None = None
    cache: np.ndarray | None = None

    @property
    def steps(self) -> int:
        """NVIDIA steps of the voice phase (its first one seeds the cache)."""
        return self.codes.shape[1] if self.codes is not None else self.embeddings.shape[0] + 1


@dataclass
class Prompt:
    """What `LmGen.prefill` takes: every stream's tokens of frames 0..T-1, and the input
    embeddings of the first positions when the voice was stored."""

    frames: np.ndarray  # [1 + n_q, T]
    embeddings: np.ndarray | None = None  # [E, dim]
    voice: str | None = None
    text_tokens: int = 0


def _column(text: int, agent, user) -> np.ndarray:
    return np.array([text, *agent, *user], dtype=np.int64)


def build_prompt(cfg: LmConfig, voice: Voice | None, text_tokens: list[int]) -> Prompt:
    """The system prompt's frames for `cfg` (a PersonaPlex config), a voice (None: no voice
    phase, as NVIDIA's code without one) and the role's tokens (empty: no role phase)."""
    if not cfg.is_persona:
        raise UsageError(f"voice and role prompts need a PersonaPlex model (this one is {cfg.model_type})")
    if cfg.n_q != 2 * AUDIO_CODEBOOKS or cfg.dep_q != AUDIO_CODEBOOKS:
        raise UsageError(
            f"a PersonaPlex model has {AUDIO_CODEBOOKS} + {AUDIO_CODEBOOKS} codebooks, "
            f"not n_q {cfg.n_q} / dep_q {cfg.dep_q}"
        )
    bad = [t for t in text_tokens if not 0 <= t < cfg.text_card]
    if bad:
        raise UsageError(f"role token ids outside the text vocabulary [0, {cfg.text_card}): {bad[:5]}")
    steps: list[np.ndarray] = []
    embeddings = None
    if voice is not None:
        if voice.codes is not None:
            codes = np.asarray(voice.codes, dtype=np.int64)
            if codes.ndim != 2 or codes.shape[0] != AUDIO_CODEBOOKS or codes.shape[1] < 1:
                raise UsageError(f"voice {voice.name}: expected Mimi codes [8, frames], got {list(codes.shape)}")
            if codes.min() < 0 or codes.max() >= cfg.card:
                raise UsageError(f"voice {voice.name}: codes outside [0, {cfg.card})")
            steps += [_column(PROMPT_TEXT_PAD, codes[:, i], SINE_TOKENS) for i in range(codes.shape[1])]
        else:
            steps += _stored_voice_steps(cfg, voice)
            embeddings = np.asarray(voice.embeddings)
    silence = [_column(PROMPT_TEXT_PAD, SILENCE_TOKENS, SINE_TOKENS)] * SILENCE_FRAMES
    steps += silence
    steps += [_column(t, SILENCE_TOKENS, SINE_TOKENS) for t in text_tokens]
    steps += silence
    frames = np.stack(steps[1:], axis=1)  # NVIDIA's step 0 only seeds its cache
    return Prompt(frames, embeddings, None if voice is None else voice.name, len(text_tokens))


def _stored_voice_steps(cfg: LmConfig, voice: Voice) -> list[np.ndarray]:
    """The voice phase's steps of a stored voice: its positions get the stored embeddings,
    so only the frames later positions read matter (the last 1 + max delay), taken from the
    stored cache; the others repeat the first of those."""
    emb, cache = np.asarray(voice.embeddings), np.asarray(voice.cache, dtype=np.int64)
    n = emb.shape[0] + 1
    if emb.ndim != 2 or emb.shape[1] != cfg.dim:
        raise UsageError(f"voice {voice.name}: embeddings of width {emb.shape[1:]} for a model of width {cfg.dim}")
    if cache.ndim != 2 or cache.shape[0] != cfg.num_streams or cache.shape[1] != cfg.max_delay + 3:
        raise UsageError(
            f"voice {voice.name}: token cache {list(cache.shape)}, expected [{cfg.num_streams}, {cfg.max_delay + 3}]"
        )
    if n < cfg.max_delay + 3:
        raise UsageError(f"voice {voice.name}: {n} frames is too short")
    width = cache.shape[1]
    delays = np.array(cfg.delays)

    def frame(f: int) -> np.ndarray:  # NVIDIA's cache column f + 1 + delay holds frame f
        return cache[np.arange(cfg.num_streams), (f + 1 + delays) % width]

    known = {f: frame(f) for f in range(n - 2 - cfg.max_delay, n - 1)}
    first = known[min(known)]
    # step s is frame s - 1: steps 1..n-1 are frames 0..n-2 (step 0 is dropped by build_prompt)
    return [first] + [known.get(s - 1, first) for s in range(1, n)]
