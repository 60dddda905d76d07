"""PersonaPlex voices and roles: from what a user names to the prompt `LmGen` prefills.

A voice is one of NVIDIA's 18 presets (NATF0-3, NATM0-3, VARF0-4, VARM0-4, in the model
repo's `voices.tgz`), a stored voice file (`.pt`, the presets' format), or any audio file.
Presets are read straight out of the archive with a restricted reader of torch's file format
(weights/torch_pickle.py): no torch, no extraction, no conversion step. A recording is
prepared as NVIDIA's `load_voice_prompt` does: 24 kHz mono, loudness normalised to -24
LUFS (BS.1770 in numpy, audio/loudness.py), cut into 1920-sample frames (the last
zero-padded) and encoded by the streaming Mimi (8 codebooks), reset before and after.
"""

from __future__ import annotations

import io
import os
import tarfile
import zlib
from pathlib import Path

import numpy as np

from ..audio.io import read_audio
from ..audio.loudness import normalize_loudness
from ..constants import FRAME_SIZE, SAMPLE_RATE, VOICES_NAME
from ..errors import AudioError, UsageError
from ..validation import text
from ..models.persona import (
    AUDIO_CODEBOOKS,
    DEFAULT_PERSONA,
    VOICE_LUFS,
    Prompt,
    Voice,
    build_prompt,
    system_prompt_text,
)
from ..weights.errors import WeightsError
from ..weights.torch_pickle import load_torch_file

VOICE_PRESETS = tuple([f"NAT{g}{i}" for g in "FM" for i in range(4)] + [f"VAR{g}{i}" for g in "FM" for i in range(5)])


def is_preset_name(spec: str) -> bool:
    return Path(spec).stem in VOICE_PRESETS and not Path(spec).expanduser().exists()


def _stored_voice(name: str, data) -> Voice:
    obj = load_torch_file(data, f"voice {name}")
    if not isinstance(obj, dict) or "embeddings" not in obj or "cache" not in obj:
        raise WeightsError(f"voice {name}: expected a dict with 'embeddings' and 'cache'")
    emb, cache = np.asarray(obj["embeddings"], dtype=np.float32), np.asarray(obj["cache"])
    if emb.ndim != 4 or emb.shape[1:3] != (1, 1) or cache.ndim != 3 or cache.shape[0] != 1:
        raise WeightsError(
            f"voice {name}: embeddings {list(emb.shape)} / cache {list(cache.shape)}, expected "
            "[N, 1, 1, dim] / [1, streams, length]"
        )
    return Voice(name, embeddings=emb[:, 0, 0], cache=cache[0].astype(np.int64))


def _read_archive(archive: Path, where: str, stem: str | None) -> tuple[set[str], bytes | None]:
    """The preset names in `archive`, and the bytes of preset `stem` (None: names only). A
    truncated or damaged archive (an interrupted download) is one error line, not gzip's or
    tarfile's traceback."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = {Path(m.name).stem: m for m in tar.getmembers() if m.isfile() and m.name.endswith(".pt")}
            data = tar.extractfile(members[stem]).read() if stem in members else None
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        again = "copy it again" if Path(where).expanduser().is_dir() else f"hf download {where} {VOICES_NAME}"
        raise WeightsError(f"{VOICES_NAME} of {where} cannot be read ({e}): {again}") from None
    return set(members), data


def preset_voice(name: str, where: str | None) -> Voice:
    """Preset `name` (e.g. NATF2) from the `voices.tgz` of the model's repo or folder."""
    from ..weights.hub import repo_file

    stem = Path(name).stem
    if where is None:
        raise UsageError(f"voice {stem}: presets come with a PersonaPlex model repo; give a voice file instead")
    _, data = _read_archive(repo_file(where, VOICES_NAME), where, stem)  # never a voices.tgz of the working dir
    if data is None:
        raise WeightsError(f"{VOICES_NAME} of {where} has no voice {stem}")
    return _stored_voice(stem, io.BytesIO(data))


def preset_names(where: str | None) -> tuple[str, ...]:
    """The presets the model's `voices.tgz` holds, in VOICE_PRESETS' order: none without a
    repo or folder, or when it has no archive (a converted folder the archive was not copied
    to, a checkpoint alone). What the web page offers, so that every name it lists works."""
    from ..weights.hub import hf_get_optional

    archive = None if where is None else hf_get_optional(VOICES_NAME, where)
    if archive is None:
        return ()
    names, _ = _read_archive(archive, where, None)
    return tuple(n for n in VOICE_PRESETS if n in names)


def encode_voice(mimi, pcm: np.ndarray, name: str = "voice") -> Voice:
    """A recording's voice prompt: pcm float32 mono at 24 kHz -> Mimi codes [8, frames]."""
    pcm = normalize_loudness(np.asarray(pcm, dtype=np.float32).reshape(-1), SAMPLE_RATE, VOICE_LUFS)
    pcm = np.pad(pcm, (0, -pcm.shape[0] % FRAME_SIZE))
    mimi.reset()
    try:
        codes = np.array(mimi.encode_step(pcm.reshape(1, 1, -1)))
    finally:
        mimi.reset()
    if codes.shape[1] < AUDIO_CODEBOOKS:
        raise UsageError(f"the codec gives {codes.shape[1]} codebooks; a voice prompt needs {AUDIO_CODEBOOKS}")
    return Voice(name, codes=codes[0, :AUDIO_CODEBOOKS].astype(np.int64))


def check_voice_spec(spec: str | os.PathLike) -> Path | None:
    """What can be told of a voice without the model (the CLIs ask before loading it): None for
    a preset name, else the path of the existing file; an empty name or a missing file is the
    one-line error."""
    s = str(spec)
    if not s.strip():
        raise UsageError("voice: empty name (give a preset such as NATF2, or an audio file)")
    if is_preset_name(s):
        return None
    path = Path(s).expanduser()
    if not path.exists():
        raise UsageError(f"voice {s!r}: no such file and not a preset ({', '.join(VOICE_PRESETS)})")
    return path


def load_voice(spec: str | os.PathLike | Voice, mimi, where: str | None = None) -> Voice:
    """A voice from a preset name, a stored voice (.pt) or an audio file (see module docstring)."""
    if isinstance(spec, Voice):
        return spec
    path = check_voice_spec(spec)
    if path is None:
        return preset_voice(str(spec), where)
    s = str(spec)
    if path.suffix.lower() == ".pt":  # as audio suffixes are read whatever their case
        return _stored_voice(path.stem, path)
    if mimi is None:
        raise UsageError("a voice recording needs the model's codec")
    pcm = read_audio(path, SAMPLE_RATE)
    try:
        return encode_voice(mimi, pcm, path.stem)
    except AudioError as e:  # too short or silent to normalise: say which file (the input is audio too)
        raise AudioError(f"voice {s}: {e}") from None


def default_persona(tokenizer) -> str | None:
    """The role a PersonaPlex conversation gets when none is given (`DEFAULT_PERSONA`); None with
    token ids only (`--tokenizer none`), which cannot write it."""
    from .transcript import PlaceholderTokenizer

    return None if isinstance(tokenizer, PlaceholderTokenizer) else DEFAULT_PERSONA


def persona_prompt(cfg, tokenizer, voice: Voice | None, persona: str | None) -> Prompt:
    """The system prompt of a voice (or None) and a role: None (not given) is NVIDIA's default
    role, `DEFAULT_PERSONA`, as its offline tool and web client give; blank: no role phase.
    With token ids only (`tokenizer="none"`) the default is left out: nothing can write it."""
    from .transcript import PlaceholderTokenizer

    if persona is None:
        persona = default_persona(tokenizer)
    tokens: list[int] = []
    if persona is not None and text("persona", persona).strip():
        if isinstance(tokenizer, PlaceholderTokenizer):  # ids only: no SentencePiece to write the role with
            raise UsageError('a persona needs the model\'s text tokenizer; tokenizer="none" (token ids only) has none')
        tokens = [int(t) for t in tokenizer.encode(system_prompt_text(persona))]
    return build_prompt(cfg, voice, tokens)
