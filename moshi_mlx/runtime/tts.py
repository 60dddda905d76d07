"""Text-to-speech sessions: load a TTS model (Hub repo, local folder, preset or the offline
demo), resolve voices, and synthesize text to audio chunks (a file or the speakers).

The model and its state machine are `models/tts.py`; this module adds what a front end
needs around them: the files (weights, Mimi, SentencePiece tokenizer, voice embeddings
from `kyutai/tts-voices`), optional quantization at load, and streaming decoding of each
80 ms frame as soon as the model has produced it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable

import mlx.core as mx
import numpy as np

from ..constants import DEFAULT_SEED, FRAME_RATE, SAMPLE_RATE
from ..errors import ConfigError, UsageError, WeightsError
from ..models import LmConfig, load_mimi, random_lm, random_mimi
from ..models.backend import ComputeFormat, hold_wired_limit, is_quantized, prepare_lm
from ..models.config import preset
from ..models.mimi import best_backend
from ..models.tts import (
    DEFAULT_CFG_COEF,
    DEFAULT_PADDING_BETWEEN,
    DEFAULT_TEMP,
    LEADING_FRAMES_DROPPED,
    TokenIds,
    TtsGen,
    TtsSettings,
    audio_window,
    script_to_entries,
)
from ..validation import integer
from ..weights.hub import hf_get, repo_file
from ..weights.lm_loader import load_resolved
from ..weights.quantize import default_group_size, quantize_model
from ..weights.resolve import resolve_model
from ..weights.safetensors_io import SafetensorsFile
from .codec import MimiFrameCodec
from .loading import check_mimi_backend, demo_mimi_config, describe_loaded, mimi_source
from .transcript import ByteTokenizer, TextTokenizer

DEFAULT_REPO = "kyutai/tts-1.6b-en_fr"
DEFAULT_VOICE_REPO = "kyutai/tts-voices"
DEFAULT_VOICE = "expresso/ex03-ex01_happy_001_channel1_334s.wav"  # the voice of Kyutai's TTS examples
DEMO_MODEL = "tts-tiny"
VOICE_KEY = "speaker_wavs"
RANDOM_VOICE_FRAMES = 125  # 10 s of Mimi frames, the length of the published voice embeddings


@dataclass
class TtsSession:
    cfg: LmConfig
    lm: object
    codec: MimiFrameCodec
    tokenizer: object
    frame_rate: float
    sample_rate: int
    description: str
    is_demo: bool = False
    n_q: int = 0
    warnings: list[str] = field(default_factory=list)  # one line each (see `Model.warnings`)
    compute: ComputeFormat | None = None  # the LM's compute format (`prepare_lm`)
    _release: object = field(default=None, repr=False)  # gives the wired limit back (`models.backend.hold_wired_limit`)

    def close(self) -> None:
        """Give back what the session holds beside its arrays (Metal's wired limit); also
        done when it is collected and at exit."""
        if self._release is not None:
            self._release()


def load_tts_session(
    *,
    model: str | None = None,
    hf_repo: str | None = None,
    lm_config: str | None = None,
    moshi_weight: str | None = None,
    lora: str | None = None,
    mimi_weight: str | None = None,
    tokenizer: str | None = None,
    quantize: int | None = None,
    n_q: int | None = None,
    mimi_backend: str = "auto",
    seed: int = DEFAULT_SEED,
    check: Callable[[LmConfig], None] | None = None,
) -> TtsSession:
    """A ready TTS model, codec and tokenizer.

    model="tts-tiny": the offline demo (random weights of the real structure, tiny Mimi,
    one token per UTF-8 byte; it produces NOISE). Otherwise the files are found by the
    shared resolver (`weights/resolve.py`): `hf_repo` (default kyutai/tts-1.6b-en_fr), a
    local folder standing in for it, or the preset name `tts-1.6b-en_fr`; `moshi_weight` /
    `mimi_weight` / `tokenizer` / `lm_config` override single files; `lora`: a fine-tune's
    adapters, fused at load.
    quantize: 4 or 8 to quantize a float checkpoint at load (files quantized by
    `moshi_mlx.convert` are read as they are).
    check: called with the model's config before its weights are read (raise to refuse: the
    CLI checks the voice there, `check_voice_spec`)."""
    if model is not None and model != DEMO_MODEL:
        raise UsageError(f"unknown demo model {model!r}; the TTS demo model is {DEMO_MODEL!r}")
    if quantize not in (None, 4, 8):
        raise UsageError(f"quantize must be 4, 8 or None (as stored), got {quantize!r}")
    if n_q is not None:  # its range is the model's, known once the config is read (below)
        n_q = integer("n_q", n_q)
    if model == DEMO_MODEL and lora is not None:
        raise UsageError(f"{DEMO_MODEL} is built in memory: it takes no LoRA adapters")
    check_mimi_backend(mimi_backend)
    if mimi_backend == "rustymimi":
        if model == DEMO_MODEL or mimi_weight == "random":
            raise UsageError(
                'a random Mimi (the demo model\'s, mimi_weight="random") runs on MLX only; '
                'use mimi_backend="auto" or mimi_backend="mlx"'
            )
    if model == DEMO_MODEL:
        cfg = preset(DEMO_MODEL)
        if check is not None:
            check(cfg)
        lm = random_lm(cfg, seed=seed % (2**31))
        tok, desc = ByteTokenizer(), "tts-tiny demo model (random weights: it produces NOISE)"
    else:
        source = hf_repo or (None if moshi_weight else DEFAULT_REPO)

        def tts_only(cfg: LmConfig) -> None:  # run by the resolver before the weights are downloaded
            if "tts_config" not in cfg.extra:
                raise ConfigError(
                    f"{lm_config or source or moshi_weight}: not a TTS model (no tts_config); TTS needs e.g. {DEFAULT_REPO}"
                )
            if check is not None:
                check(cfg)

        files = resolve_model(
            source,
            weights=moshi_weight,
            config=lm_config,
            lora=lora,
            mimi=mimi_weight,
            tokenizer=tokenizer,
            check=tts_only,
        )
        cfg = files.cfg
        tok = TextTokenizer(files.companion("tokenizer"))  # before the LM: a missing one is said at once
        mimi_path = None if files.mimi == "random" else files.companion("mimi")
        lm = load_resolved(files)
    if quantize:
        if is_quantized(lm):
            raise UsageError(f"the weights are already quantized: drop quantize={quantize}")
        quantize_model(lm, quantize, default_group_size(quantize))
    compute = prepare_lm(lm)
    n = cfg.dep_q if n_q is None else n_q
    if not 1 <= n <= cfg.dep_q:
        raise UsageError(f"n_q={n} is out of range: this model has {cfg.dep_q} audio codebooks (1 to {cfg.dep_q})")
    if model == DEMO_MODEL:
        codec = MimiFrameCodec(random_mimi(seed=seed % (2**31), num_codebooks=n, config=demo_mimi_config()))
        desc = f"{desc} ({compute.describe()})"
    else:
        if files.mimi == "random":  # the published Mimi architecture, seeded random weights: noise
            codec = MimiFrameCodec(random_mimi(seed=seed % (2**31), num_codebooks=n))
            mimi_desc = "random Mimi (NOISE)"
        else:
            backend = best_backend() if mimi_backend == "auto" else mimi_backend
            codec = MimiFrameCodec(load_mimi(mimi_path, num_codebooks=n, backend=backend))
            mimi_desc = mimi_source(files, backend)
        desc = describe_loaded(files, mimi_desc, compute.describe(), quantize)  # the same line as load()'s models
    mimi = codec.decoder
    rate = int(getattr(mimi, "sample_rate", SAMPLE_RATE))
    frame_rate = float(getattr(mimi, "frame_rate", FRAME_RATE))
    session = TtsSession(
        cfg,
        lm,
        codec,
        tok,
        frame_rate,
        rate,
        desc,
        is_demo=model == DEMO_MODEL,
        n_q=n,
        warnings=[compute.memory_warning] if compute.memory_warning else [],
        compute=compute,
    )
    session._release = hold_wired_limit(session, compute.wired_bytes)
    return session


def check_voice_spec(spec: str, cfg: LmConfig | None = None) -> None:
    """The voice checked before the model's weights are read (seconds to minutes), one line
    each: a local file (a path, or anything ending in .safetensors) must exist and be a voice
    some TTS model takes, a speaker embedding (.safetensors holding `speaker_wavs`) or a
    recording (an audio file); with the model's `cfg` (known once its files are resolved),
    the kind that model takes and, for an embedding, its width. A name in the voice repo
    ("expresso/....wav") is left to `load_voice`."""
    from ..audio.io import AUDIO_SUFFIXES

    if spec == "random" or spec.startswith("hf://"):
        return
    path = os.path.expanduser(spec)
    ext = os.path.splitext(spec)[1].lower()
    kinds = "a speaker embedding (.safetensors) or, for an audio-prefix model, a recording (.wav, .flac, ...)"
    if cfg is not None and not cfg.fuse_cross and ext == ".safetensors":
        raise UsageError(
            f"{spec}: this TTS model takes a voice recording (an audio prefix, e.g. a .wav), not a speaker embedding"
        )
    if os.path.isdir(path):
        raise UsageError(f"voice {spec} is a folder: give a voice file ({kinds}) or a name in the voice repo")
    if not os.path.exists(path):
        if ext == ".safetensors" or os.path.isabs(path) or spec.startswith((".", "~")):
            raise UsageError(
                f"voice file not found: {spec} (a name in the voice repo is written as there, e.g. "
                f"{DEFAULT_VOICE}; use hf://owner/repo/file for a remote file)"
            )
        if ext and ext not in AUDIO_SUFFIXES:
            raise UsageError(f"voice {spec}: no such file, and a voice has no {ext!r} suffix: give {kinds}")
        return  # a name in the voice repo
    if ext != ".safetensors" and ext not in AUDIO_SUFFIXES:
        raise UsageError(f"voice {spec}: a voice is {kinds}, not a {ext or 'suffix-less'!r} file")
    if ext == ".safetensors":
        try:
            f = SafetensorsFile(path)
        except WeightsError as e:
            raise UsageError(f"voice {e}") from None
        if VOICE_KEY not in f:
            raise UsageError(f"{spec} is not a voice embedding (no {VOICE_KEY!r} tensor)")
    if cfg is None or not cfg.fuse_cross:
        return
    if ext != ".safetensors":
        # voice repo names end in .wav too: a local recording would be looked up there and not found
        raise UsageError(
            f"{spec} is a local file, not a voice: a voice is a speaker embedding (.safetensors) or a "
            "name in the voice repo (embeddings are made from audio by Kyutai's own tooling)"
        )
    dim = cfg.conditioners[cfg.fuse_cross[0]].dim
    shape = list(f.shape(VOICE_KEY))
    if shape[-2:-1] != [dim] or len(shape) not in (2, 3) or (len(shape) == 3 and shape[0] != 1):
        raise UsageError(f"{spec}: voice embedding of shape {shape}; this model expects [1, {dim}, T]")


def load_voice(
    spec: str, cfg: LmConfig, voice_repo: str = DEFAULT_VOICE_REPO, seed: int = 0, codec: MimiFrameCodec | None = None
) -> np.ndarray:
    """A voice embedding [dim, T] from `spec`: a local `.safetensors` file (as the
    reference, any spec ending in .safetensors is a local path), `hf://owner/repo/file`,
    a name in `voice_repo` (e.g. `expresso/ex03-ex01_happy_001_channel1_334s.wav`; the
    model's suffix `.<sig>@<epoch>.safetensors` is appended), or "random" (a seeded
    random embedding, for the demo model and tests: not a voice).
    A model without speaker cross-attention (kyutai/tts-0.75b-en-public) takes a voice
    recording instead, encoded by `codec` (see `prefix_voice`)."""
    if not cfg.fuse_cross:
        return prefix_voice(spec, cfg, codec, voice_repo, seed)
    dim = cfg.conditioners[cfg.fuse_cross[0]].dim
    if spec == "random":
        return np.random.default_rng(seed % (2**31)).standard_normal((dim, RANDOM_VOICE_FRAMES), dtype=np.float32)
    check_voice_spec(spec, cfg)
    if spec.startswith("hf://") or spec.endswith(".safetensors"):
        path = hf_get(spec)
    else:
        mid = cfg.extra.get("model_id") or {}
        suffix = f".{mid['sig']}@{mid['epoch']}.safetensors" if "sig" in mid and "epoch" in mid else ""
        try:
            path = repo_file(voice_repo, f"{spec}{suffix}")
        except WeightsError as e:
            raise UsageError(f"voice {spec!r} not found ({e})") from None
    f = SafetensorsFile(path)
    if VOICE_KEY not in f:
        raise UsageError(f"{path} is not a voice embedding (no {VOICE_KEY!r} tensor)")
    arr = np.array(f.load(VOICE_KEY).astype(mx.float32))
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2 or arr.shape[0] != dim:
        raise UsageError(
            f"{path}: voice embedding of shape {list(f.shape(VOICE_KEY))}; this model expects [1, {dim}, T]"
        )
    return arr


def prefix_voice(
    spec: str, cfg: LmConfig, codec: MimiFrameCodec | None, voice_repo: str = DEFAULT_VOICE_REPO, seed: int = 0
) -> np.ndarray:
    """The voice of an audio-prefix model: Mimi codes [n_q, T] of a recording, as the
    reference's `TTSModel.get_prefix` makes them (24 kHz mono, every codebook, the last two
    frames dropped). `spec`: a local audio file, `hf://owner/repo/file`, a recording's name
    in `voice_repo` (e.g. `expresso/ex03-ex01_happy_001_channel1_334s.wav`), or "random"
    (seeded random codes, for tests: not a voice)."""
    from ..audio.io import read_audio

    if spec == "random":
        return np.random.default_rng(seed % (2**31)).integers(0, cfg.card, (cfg.n_q, RANDOM_VOICE_FRAMES))
    check_voice_spec(spec, cfg)
    if spec.startswith("hf://") or not os.path.isfile(spec):
        try:
            path = hf_get(spec) if spec.startswith("hf://") else repo_file(voice_repo, spec)
        except WeightsError as e:
            raise UsageError(f"voice {spec!r} is no local audio file and not in {voice_repo} ({e})") from None
    else:
        path = spec
    if codec is None:
        raise UsageError("an audio-prefix voice is encoded by the session's Mimi: pass codec=session.codec")
    pcm = read_audio(path, SAMPLE_RATE)
    n = codec.frame_size
    if len(pcm) < 3 * n:
        raise UsageError(
            f"voice recording {spec} is too short ({len(pcm) / SAMPLE_RATE:.2f} s; at least "
            f"{3 * n / SAMPLE_RATE:.2f} s)"
        )
    pcm = np.concatenate([pcm, np.zeros(-len(pcm) % n, np.float32)])
    codec.reset()
    codes = np.stack([codec.encode_step(pcm[i : i + n]) for i in range(0, len(pcm), n)], axis=1)
    codec.reset()
    if codes.shape[0] != cfg.n_q:
        raise UsageError(
            f"an audio-prefix voice needs all {cfg.n_q} codebooks (the codec gives {codes.shape[0]}; drop n_q={codes.shape[0]})"
        )
    return codes[:, :-2].astype(np.int64)


def clean_text(text: str) -> str:
    """Whitespace collapsed; an empty text is a usage error."""
    out = " ".join(text.split())
    if not out:
        raise UsageError("the text to speak is empty")
    return out


@dataclass
class TtsReport:
    frames: int  # audio frames delivered
    seconds: float
    wall_s: float
    steps: int
    end_step: int | None
    words: list[tuple[str, float]] = field(default_factory=list)  # (word, time in the audio, s)

    @property
    def real_time_factor(self) -> float:
        return self.seconds / self.wall_s if self.wall_s > 0 else float("inf")


def synthesize(
    session: TtsSession,
    text: str,
    voices: list[np.ndarray],
    on_audio: Callable[[np.ndarray], None],
    *,
    cfg_coef: float = DEFAULT_CFG_COEF,
    temp: float = DEFAULT_TEMP,
    seed: int = DEFAULT_SEED,
    padding_between: int = DEFAULT_PADDING_BETWEEN,
    max_padding: int = TtsSettings.max_padding,
    initial_padding: int = TtsSettings.initial_padding,
    final_padding: int = TtsSettings.final_padding,
    padding_bonus: float = TtsSettings.padding_bonus,
    max_steps: int = TtsSettings.max_steps,
    on_step: Callable[[int], None] | None = None,
) -> TtsReport:
    """Speak `text`: each 80 ms of audio goes to `on_audio(pcm float32 [frame_size])` as soon
    as its frame is decoded. The words' times are in the delivered audio's timeline."""
    cfg = session.cfg
    settings = TtsSettings.from_config(
        cfg,
        session.frame_rate,
        max_padding=max_padding,
        initial_padding=initial_padding,
        final_padding=final_padding,
        padding_bonus=padding_bonus,
        max_steps=max_steps,
    )
    token_ids = TokenIds(cfg.text_card + 1, pad=cfg.existing_text_padding_id)
    entries = script_to_entries(
        session.tokenizer,
        token_ids,
        session.frame_rate,
        [clean_text(text)],
        multi_speaker=bool(cfg.fuse_cross),
        padding_between=padding_between,
    )
    gen = TtsGen(
        session.lm, settings, voices, cfg_coef=cfg_coef, temp=temp, n_q=session.n_q, seed=seed, compute=session.compute
    )
    codec = session.codec
    codec.reset()
    start = settings.delay_steps  # frames before it hold no audio yet: never decoded (as the reference)
    skip = LEADING_FRAMES_DROPPED + gen.prefix_frames  # decoded, not delivered (an audio prefix is the voice)
    delivered = steps = 0
    state = None
    t0 = time.perf_counter()
    for f, frame, state in gen.frames(entries):
        steps = f + 1 + gen.max_delay
        if on_step is not None:
            on_step(steps)
        if f < start or f >= audio_window(start, state.end_step, 1 << 40).stop:
            continue
        pcm = codec.decode_step(frame[1 : 1 + session.n_q])
        if f >= start + skip:
            on_audio(np.clip(pcm, -1.0, 1.0))
            delivered += 1
    wall = time.perf_counter() - t0
    seconds = delivered / session.frame_rate
    # the text of step s is spoken in frame s + delay_steps, i.e. delivered frame s - skip
    words = [] if state is None else [(w, max(0.0, (s - skip) / session.frame_rate)) for w, s in state.transcript]
    return TtsReport(delivered, seconds, wall, steps, None if state is None else state.end_step, words)
