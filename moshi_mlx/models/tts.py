"""Text-to-speech with a delayed-streams model (Kyutai's `tts-1.6b-en_fr`): the state machine
that feeds the text, and the generation loop around the LM.

The model co-generates a padded, time-aligned text stream and the audio, which follows the
text by `tts_config.audio_delay` seconds (`delay_steps` frames). It never sees the raw text:
each step it predicts either PAD or NEW_WORD on the text stream, and the state machine
turns that into the token actually fed back — the next piece of the current word, a pad,
or (on NEW_WORD) the first token of the next word. With `second_stream_ahead = n`, the
text token carries a second, demultiplexed stream `(second + 1) * card + first` holding
the tokens of the word n ahead (the lookahead). When the model asks for a word and none is
left, the end of speech is reached; generation stops `delay_steps + final_padding` steps
later. This is the behaviour of the reference `moshi.models.tts` (0.2.13), checked
token for token against it (tests/models/test_tts_parity.py).

Step alignment is the reference `LMGen`'s, which the TTS model was run with: at step o the
model consumes every stream's token of step o - 1 (the initial token while o <= its
delay) and samples the text of frame o and audio codebook k of frame o - delay[k]; audio
tokens of the first `delay[k] + delay_steps` steps are forced to the zero token, and the
depformer does not run at all for the first `delay_steps` steps.

Speaker conditioning goes through cross-attention to up to `MAX_SPEAKERS` voice embeddings
(`speaker_wavs`, [T, 512] each, from `kyutai/tts-voices`), or, for a model without
cross-attention (`kyutai/tts-0.75b-en-public`), through an audio prefix: the Mimi codes of
a voice recording, forced as the first frames (text: the zero token, the state machine
idle), as the reference `TTSModel.generate(prefixes=...)` does; with real CFG the null row
sees every stream zeroed until the prefix (plus the delays) has passed. Models trained with CFG
distillation take the guidance coefficient as a condition (`cfg` = "2.0"); the others get
real classifier-free guidance: a second batch row with every condition nulled and no text,
audio logits = null + coef * (cond - null), text logits from the conditioned row only.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field
from typing import Iterator, Protocol, Sequence

import mlx.core as mx
import numpy as np

from ..constants import DEFAULT_SEED
from ..errors import ConfigError, UsageError
from .backend import ComputeFormat
from .config import LmConfig, TensorConditionerConfig
from .lm import Lm
from .sampling import REFERENCE_DEFAULTS, Sampler

MAX_SPEAKERS = 5  # speaker slots in the cross-attention source (the reference TTSModel's default)
# Audio frames skipped after the text-to-audio delay: the reference drops these two
# ("otherwise there is a little click at the beginning"); it then keeps `end_step` frames.
LEADING_FRAMES_DROPPED = 2
# The reference TTSModel's generation defaults beside those `TtsSettings` holds (temp: also the
# published config's lm_gen_config); TtsGen, `runtime.tts.synthesize` and moshi-tts read them here
DEFAULT_CFG_COEF = 2.0
DEFAULT_TEMP = 0.6
DEFAULT_PADDING_BETWEEN = 1  # pad steps forced after each word (`script_to_entries` takes 0 unless told)
_BREAK = re.compile(r"(?:<break\s+time=\"([0-9]+(?:.[0-9]*)?)s\"\s*/?>)|(?:\s+)")


class Tokenizer(Protocol):
    def encode(self, text: str) -> list[int]: ...


@dataclass(frozen=True)
class TokenIds:
    """Special text tokens. `card` = text_card + 1 (the demux base of the lookahead stream)."""

    card: int
    new_word: int = 0
    pad: int = 3
    main: int = 1
    other: int = 2
    zero: int = -1


@dataclass
class Entry:
    """One word: its tokens, its text, and how many steps of padding to force after it
    (an entry with no tokens is a pause, e.g. from `<break time="0.5s"/>`)."""

    tokens: list[int]
    text: str
    padding: int = 0


@dataclass
class TtsState:
    entries: deque
    remaining_padding: int
    forced_padding: int
    queued: deque = field(default_factory=deque)
    lookahead_queued: deque = field(default_factory=deque)
    end_step: int | None = None
    consumption_times: list[int] = field(default_factory=list)
    transcript: list[tuple[str, int]] = field(default_factory=list)

    def tokens_ahead(self, lookahead: int) -> list[int]:
        """Tokens of the `lookahead`-th upcoming word that has tokens ([] if none)."""
        for entry in self.entries:
            if entry.tokens:
                lookahead -= 1
                if lookahead == 0:
                    return entry.tokens
        return []


@dataclass(frozen=True)
class TtsSettings:
    """The TTS part of a config (`tts_config`) and the generation options. The defaults are the
    reference TTSModel's, written only here: `synthesize` and moshi-tts's flags read them."""

    delay_steps: int
    second_stream_ahead: int = 0
    max_padding: int = 8
    initial_padding: int = 2
    final_padding: int = 4
    padding_bonus: float = 0.0
    max_steps: int = 30000

    @classmethod
    def from_config(cls, cfg: LmConfig, frame_rate: float, **options) -> "TtsSettings":
        tts = cfg.extra.get("tts_config")
        if not isinstance(tts, dict) or "audio_delay" not in tts:
            raise ConfigError(f"{cfg.source or 'config'}: not a TTS model (no tts_config.audio_delay)")
        if tts.get("multistream"):
            raise ConfigError(f"{cfg.source or 'config'}: multistream TTS models are not supported")
        if cfg.dep_q != cfg.n_q:
            raise ConfigError(f"{cfg.source or 'config'}: a TTS model generates every codebook (dep_q == n_q)")
        return cls(
            delay_steps=int(tts["audio_delay"] * frame_rate),
            second_stream_ahead=int(tts.get("second_stream_ahead", 0)),
            **options,
        )


@dataclass(frozen=True)
class StateMachine:
    token_ids: TokenIds
    second_stream_ahead: int = 0
    max_padding: int = TtsSettings.max_padding
    initial_padding: int = TtsSettings.initial_padding

    def new_state(self, entries: Sequence[Entry]) -> TtsState:
        return TtsState(deque(entries), remaining_padding=self.initial_padding, forced_padding=self.initial_padding)

    def process(self, step: int, state: TtsState, token: int) -> int:
        """The model predicted `token` at `step`; returns the text token to feed instead."""
        ids = self.token_ids
        if token not in (ids.new_word, ids.pad):
            token = ids.pad
        if state.queued or state.forced_padding > 0:
            token = ids.pad  # a word is still being fed, or a pause is forced
        elif state.remaining_padding <= 0:
            token = ids.new_word  # padded long enough: the next word must come
        if token == ids.new_word:
            if state.entries:
                entry = state.entries.popleft()
                state.consumption_times.append(step)
                if entry.tokens:
                    state.transcript.append((entry.text, step))
                    state.queued.extend(entry.tokens)
                    if self.second_stream_ahead:
                        state.lookahead_queued.extend(state.tokens_ahead(self.second_stream_ahead))
                    state.remaining_padding = self.max_padding
                else:
                    token = ids.pad  # a pause entry
                state.forced_padding = entry.padding
            else:
                token = ids.new_word if (self.second_stream_ahead and state.end_step is None) else ids.pad
                if state.end_step is None:
                    state.end_step = step  # asked for a word past the last one: end of speech
        if token == ids.pad:
            state.remaining_padding = max(state.remaining_padding - 1, 0)
            state.forced_padding = max(state.forced_padding - 1, 0)
            out = state.queued.popleft() if state.queued else ids.pad
        else:
            out = ids.new_word
        if self.second_stream_ahead:
            second = -1
            if out == ids.new_word:
                # NEW_WORD travels on the second stream; the main one moves on with the word
                second = ids.new_word
                out = state.queued.popleft() if state.queued else ids.pad
            elif state.lookahead_queued:
                second = state.lookahead_queued.popleft()
            out = (second + 1) * ids.card + out
        return out


def script_to_entries(
    tokenizer: Tokenizer,
    token_ids: TokenIds,
    frame_rate: float,
    script: Sequence[str],
    multi_speaker: bool = True,
    padding_between: int = 0,
) -> list[Entry]:
    """Turns a script (one string per turn, main speaker first) into words to feed.

    As the reference: `’` -> `'`, `:` -> space, parentheses dropped; `<break time="Xs"/>`
    becomes a pause of round(X * frame_rate) steps; a multi-speaker model gets the
    speaker token (main / other) before the first word of each turn; `padding_between`
    forces that many pad steps after each word (plus one per extra token)."""
    speakers = (token_ids.main, token_ids.other)
    entries: list[Entry] = []
    last_speaker = None
    for turn, line in enumerate(script):
        first = True
        line = line.replace("’", "'").replace(":", " ").replace("(", "").replace(")", "")

        def add(word: str) -> None:
            nonlocal first, last_speaker
            tokens = list(tokenizer.encode(word))
            if first:
                speaker = turn % len(speakers)
                if multi_speaker and last_speaker != speaker:
                    last_speaker = speaker
                    tokens.insert(0, speakers[speaker])
                first = False
            padding = max(0, padding_between + len(tokens) - 1) if padding_between > 0 else 0
            entries.append(Entry(tokens, word, padding))

        while line:
            m = _BREAK.search(line)
            if m is None:
                break
            word, line = line[: m.start()], line[m.end() :]
            if word:
                add(word)
            if m.group(1):
                entries.append(Entry([], "", int(round(float(m.group(1)) * frame_rate))))
        if line:
            add(line)
    return entries


@dataclass
class TtsResult:
    """frames [F, 1 + dep_q]: frame f's text token and audio codes (delays undone; -1 =
    zero token). `end_step`: the step at which the text ran out (None: `max_steps` hit).
    `transcript`: (word, step at which it was fed)."""

    frames: np.ndarray
    end_step: int | None
    transcript: list[tuple[str, int]]
    consumption_times: list[int]
    text_log: list[tuple[int, int]]  # (predicted, fed) per step


def audio_window(delay_steps: int, end_step: int | None, n_frames: int, prefix_frames: int = 0) -> range:
    """Which frames hold the speech: after the text-to-audio delay (and the reference's two
    dropped frames) and an audio prefix (the voice), up to `end_step` (counted from the
    first step, prefix included, as the reference does)."""
    start = delay_steps + LEADING_FRAMES_DROPPED
    stop = n_frames if end_step is None else min(n_frames, start + end_step)
    return range(start + prefix_frames, max(start + prefix_frames, stop))


def voice_condition(voices: Sequence[np.ndarray], dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to MAX_SPEAKERS voice embeddings ([dim, T] each, as stored in `speaker_wavs`
    files without the batch axis) -> the cross-attention condition ([1, MAX_SPEAKERS * T,
    dim], mask [1, MAX_SPEAKERS * T]); empty slots are masked (learnt padding)."""
    if not voices:
        raise UsageError("at least one voice is needed")
    if len(voices) > MAX_SPEAKERS:
        raise UsageError(f"at most {MAX_SPEAKERS} voices, got {len(voices)}")
    T = voices[0].shape[1]
    tensor = np.zeros((MAX_SPEAKERS, T, dim), dtype=np.float32)
    mask = np.zeros((MAX_SPEAKERS, T), dtype=bool)
    for i, v in enumerate(voices):
        if v.ndim != 2 or v.shape != (dim, T):
            raise UsageError(f"voice {i + 1} has shape {list(v.shape)}; this model expects [{dim}, {T}]")
        tensor[i] = v.T
        mask[i] = True
    return tensor.reshape(1, MAX_SPEAKERS * T, dim), mask.reshape(1, MAX_SPEAKERS * T)


class TtsGen:
    """Generates one utterance's frames, step by step (see the module docstring).

    cfg_coef: for CFG-distilled models (a `cfg` conditioner) the value given to the
    condition (one of its possible values); otherwise real guidance when != 1.
    n_q: generate only the first n_q codebooks (the others are fed as zero tokens), which
    saves depformer steps; the codec then decodes n_q codebooks.
    voices: speaker embeddings [dim, T] for a cross-attention model; for an audio-prefix
    model at most one voice, its Mimi codes [n_q, T] (none: no voice)."""

    def __init__(
        self,
        lm: Lm,
        settings: TtsSettings,
        voices: Sequence[np.ndarray],
        *,
        cfg_coef: float = DEFAULT_CFG_COEF,
        temp: float = DEFAULT_TEMP,
        top_k: int = REFERENCE_DEFAULTS["top_k"],
        top_k_text: int = REFERENCE_DEFAULTS["top_k_text"],
        n_q: int | None = None,
        seed: int = DEFAULT_SEED,
        compute: ComputeFormat | None = None,
    ):
        cfg = lm.cfg
        # the activation dtype of the model's compute format (`prepare_lm`), else the weights'
        self.act = compute.activation if compute is not None else None
        self.lm, self.cfg, self.settings = lm, cfg, settings
        self.n_q = cfg.dep_q if n_q is None else int(n_q)
        if not 1 <= self.n_q <= cfg.dep_q:
            raise UsageError(f"n_q must be between 1 and {cfg.dep_q}, got {self.n_q}")
        self.token_ids = TokenIds(cfg.text_card + 1, pad=cfg.existing_text_padding_id)
        self.machine = StateMachine(
            self.token_ids, settings.second_stream_ahead, settings.max_padding, settings.initial_padding
        )
        self.text_sampler = Sampler(temp, top_k_text)
        self.audio_sampler = Sampler(temp, top_k)
        self.seed = seed
        # conditions: LUT values (control = "ok", cfg = the coefficient if distilled), tensor = voices
        lut = {n for n, c in cfg.conditioners.items() if not isinstance(c, TensorConditionerConfig)}
        distilled = "cfg" in lut
        values: dict[str, str | None] = {}
        for name in lut:
            if name == "control":
                values[name] = "ok"
            elif name == "cfg":
                allowed = cfg.conditioners["cfg"].possible_values or []
                value = format(float(cfg_coef), ".1f")
                if value not in allowed:
                    raise UsageError(f"cfg_coef={cfg_coef} is not one this model takes: {', '.join(allowed)}")
                values[name] = value
            else:
                raise ConfigError(f"TTS: unknown conditioner {name!r} (expected 'control', 'cfg', speaker tensors)")
        self.cfg_coef = 1.0 if distilled else float(cfg_coef)
        self.use_cfg = self.cfg_coef != 1.0
        cond = lm.condition_tensor(values) if lut else None
        if self.use_cfg and cond is not None:
            cond = mx.concatenate([cond, lm.condition_tensor({n: None for n in lut})], axis=0)
        self._cond = None if cond is None else cond.astype(self.act if self.act is not None else lm.dtype)
        self.prefix = self._prefix(voices) if not cfg.fuse_cross else None
        self._cross = self._cross_kv(voices) if cfg.fuse_cross else None
        mx.eval(*([] if self._cross is None else [self._cross]), *([] if self._cond is None else [self._cond]))
        self.batch = 2 if self.use_cfg else 1
        self.delays = list(cfg.delays)
        self.max_delay = max(self.delays)
        self._init = lm.initial_tokens()

    def _cross_kv(self, voices: Sequence[np.ndarray]):
        lm = self.lm
        (cross_name,) = self.cfg.fuse_cross
        tensor, mask = voice_condition(voices, self.cfg.conditioners[cross_name].dim)
        tensors = {cross_name: (mx.array(tensor), mx.array(mask))}
        src = lm.cross_source(tensors)
        if self.use_cfg:
            null_tensors = {cross_name: (mx.zeros_like(tensors[cross_name][0]), mx.zeros(mask.shape, dtype=mx.bool_))}
            src = mx.concatenate([src, lm.cross_source(null_tensors)], axis=0)
        return lm.cross_kv(src, self.act)

    def _prefix(self, voices: Sequence[np.ndarray]) -> np.ndarray | None:
        """The audio-prefix voice as the reference's `get_prefix` gives it: [1 + n_q, T], a
        zero-token text row over the voice's Mimi codes; None without a voice."""
        if not voices:
            return None
        if len(voices) > 1:
            raise UsageError("this TTS model takes one voice (an audio prefix), got several")
        codes = np.asarray(voices[0])
        n_q = self.cfg.n_q
        if codes.ndim != 2 or codes.shape[0] != n_q or not np.issubdtype(codes.dtype, np.integer):
            raise UsageError(
                f"this TTS model takes a voice as Mimi codes [{n_q}, T] (an audio prefix), got "
                f"{codes.dtype} {list(codes.shape)}"
            )
        if self.n_q != n_q:
            raise UsageError(f"an audio-prefix voice needs all {n_q} codebooks generated (n_q {self.n_q} given)")
        if codes.size and (codes.min() < 0 or codes.max() >= self.cfg.card):
            raise UsageError(f"voice codes must be in [0, {self.cfg.card})")
        return np.concatenate([np.full((1, codes.shape[1]), self.token_ids.zero, np.int64), codes.astype(np.int64)])

    @property
    def prefix_frames(self) -> int:
        return 0 if self.prefix is None else int(self.prefix.shape[1])

    def _sample_text(self, logits: mx.array, key) -> mx.array:
        if self.settings.padding_bonus:
            bonus = mx.zeros((logits.shape[-1],)).at[self.token_ids.pad].add(self.settings.padding_bonus)
            logits = logits + bonus.astype(logits.dtype)
        return self.text_sampler(logits, key)

    def _guided(self, logits: mx.array) -> mx.array:
        if not self.use_cfg:
            return logits
        return logits[1:] + (logits[:1] - logits[1:]) * self.cfg_coef

    def _depformer(self, h: mx.array, text: int, keys) -> list[int]:
        dep = self.lm.depformer
        cache = dep.make_cache()
        prev = mx.array([text] * self.batch, dtype=mx.int32)
        out = []
        for k in range(self.n_q):
            logits = dep.slices[k](h, prev[:, None], cache)[:, 0]
            tok = self.audio_sampler(self._guided(logits), None if self.audio_sampler.greedy else next(keys))
            out.append(tok)
            prev = mx.concatenate([tok] * self.batch, axis=0) if self.batch > 1 else tok
        return mx.concatenate(out).tolist()

    def steps(self, entries: Sequence[Entry]) -> Iterator[tuple[int, list[int], TtsState]]:
        """Runs the model; yields per step (text token fed, audio tokens of the step [dep_q]
        in the delayed domain, the state). `text_log` gets (predicted, fed) per step."""
        lm, cfg, s = self.lm, self.cfg, self.settings
        ids = self.token_ids
        state = self.machine.new_state(entries)
        self.text_log: list[tuple[int, int]] = []
        cache = lm.make_cache()
        key = mx.random.key(self.seed)

        def split_keys():
            nonlocal key
            while True:
                key, sub = mx.random.split(key)
                yield sub

        keys = split_keys()
        prev = np.full(cfg.num_streams, ids.zero, dtype=np.int64)
        delays = np.array(self.delays)
        P = self.prefix_frames
        # the reference's cfg_is_masked_until: the null row does not see the voice prefix
        masked_until = None if self.prefix is None else P + s.delay_steps
        for step in range(s.max_steps):
            if state.end_step is not None and step >= state.end_step + s.delay_steps + s.final_padding:
                return
            is_init = step <= delays
            tokens = np.where(is_init, self._init, prev)
            rows = [tokens]
            if self.use_cfg:  # the null row gets no text (the reference's cfg_is_no_text)
                null = tokens.copy()
                if masked_until is not None:
                    null = np.where((step <= delays + masked_until) & ~is_init, ids.zero, null)
                if not is_init[0]:
                    null[0] = ids.zero
                rows.append(null)
            h, text_logits = lm.forward_text(
                mx.array(np.stack(rows).astype(np.int32))[:, :, None], self._cond, cache, self._cross, dtype=self.act
            )
            predicted = int(
                self._sample_text(text_logits[:1, -1], None if self.text_sampler.greedy else next(keys)).item()
            )
            if step < P:  # the voice prefix: its text row is forced, the state machine waits
                fed = int(self.prefix[0, step])
            else:
                fed = self.machine.process(step, state, predicted)
            self.text_log.append((predicted, fed))
            audio = [ids.zero] * cfg.dep_q
            if step >= s.delay_steps:
                audio[: self.n_q] = self._depformer(h, fed, keys)
            for q in range(cfg.dep_q):
                if step < self.delays[1 + q] + s.delay_steps:
                    audio[q] = ids.zero
                if P and 0 <= step - self.delays[1 + q] - s.delay_steps < P:  # the voice's codes, delayed
                    audio[q] = int(self.prefix[1 + q, step - self.delays[1 + q] - s.delay_steps])
            prev = np.array([fed] + audio, dtype=np.int64)
            yield fed, audio, state

    def frames(self, entries: Sequence[Entry]) -> Iterator[tuple[int, np.ndarray, TtsState]]:
        """Yields (f, frame f [1 + dep_q] with the delays undone, state) as each frame
        completes: frame f is complete once step f + max_delay has run."""
        D = self.delays
        history: list[list[int]] = []
        for fed, audio, state in self.steps(entries):
            history.append([fed] + audio)
            f = len(history) - 1 - self.max_delay
            if f >= 0:
                yield f, np.array([history[f + D[k]][k] for k in range(len(D))], dtype=np.int64), state

    def generate(self, entries: Sequence[Entry]) -> TtsResult:
        """Runs to the end and returns every frame."""
        frames: list[np.ndarray] = []
        state = self.machine.new_state(entries)
        for _, frame, state in self.frames(entries):
            frames.append(frame)
        arr = np.stack(frames) if frames else np.zeros((0, len(self.delays)), dtype=np.int64)
        return TtsResult(
            arr,
            state.end_step,
            list(state.transcript),
            list(state.consumption_times),
            list(getattr(self, "text_log", [])),
        )
