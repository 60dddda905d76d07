"""The token files our commands write and read, so what one writes the others read.

- `.npy`: Mimi codes, int [K, T] or [1, K, T] (`mimi encode`), or LM streams (text + audio)
  for `quality --codes` / `convert --eval-codes`.
- `.npz` from `run_inference --save-tokens`: per LM step `text` [S], `audio` [S, dep_q]
  (-1 while the model has no complete frame yet), `user` [S, user_q] (the input codes),
  `frame` [S], `prefix_text`; and `codes` [1, 1 + n_q, T], every stream frame-aligned in
  the teacher-forcing layout (text, the model's audio, the user's audio), which is what the
  quality tools read. `mimi decode` reads the model's audio frames from it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import AudioError

CODES_SUFFIXES = (".npy", ".npz")
TOKENS_SUFFIXES = (".npz",)


def _load(path: str | os.PathLike):
    p = Path(path)
    if not p.exists():
        raise AudioError(f"codes file not found: {p}")
    if p.is_dir():
        raise AudioError(f"expected a codes file but {p} is a folder")
    try:
        with open(p, "rb") as f:
            head = f.read(6)
    except OSError as e:
        raise AudioError(f"cannot read {p}: {e.strerror or e}") from None
    if not head:
        raise AudioError(f"codes file {p} is empty (0 bytes)")
    if not head.startswith((b"\x93NUMPY", b"PK")):  # numpy would try it as a pickle and say so
        raise AudioError(f"cannot read {p} as a .npy/.npz codes file: it has no NumPy or zip header")
    try:
        return np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise AudioError(
            f"cannot read {p} as a .npy/.npz codes file: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        ) from None


def _as_3d(path, codes: np.ndarray, what: str) -> np.ndarray:
    if codes.ndim == 2:
        codes = codes[None]
    if codes.ndim != 3 or codes.shape[0] != 1 or not np.issubdtype(codes.dtype, np.integer):
        raise AudioError(
            f"{path}: expected integer {what} of shape [K, T] or [1, K, T], got {codes.dtype} {codes.shape}"
        )
    return codes


def _npz(path, data, key: str) -> np.ndarray:
    with data:
        if key not in data.files:
            raise AudioError(
                f"{path}: this .npz has no {key!r} array (keys: {', '.join(data.files) or 'none'}); "
                f"expected a file from moshi-run-inference --save-tokens"
            )
        return np.array(data[key])


def read_mimi_codes(path: str | os.PathLike) -> np.ndarray:
    """Codes for the codec [1, K, T]: a `.npy`, or the model's own audio from a tokens `.npz`
    (its complete frames, in order: what run_inference decoded into its output)."""
    data = _load(path)
    if isinstance(data, np.lib.npyio.NpzFile):
        audio = _npz(path, data, "audio")
        if audio.ndim != 2 or not np.issubdtype(audio.dtype, np.integer):
            raise AudioError(f"{path}: 'audio' should be integer [steps, codebooks], got {audio.dtype} {audio.shape}")
        rows = audio[(audio >= 0).all(axis=1)] if audio.shape[1] else audio[:0]
        if rows.shape[0] == 0 or rows.shape[1] == 0:
            raise AudioError(f"{path}: holds no audio frames (a text-only model, or too short a run)")
        return rows.T[None].astype(np.int32)
    return _as_3d(path, data, "codes")


def read_stream_codes(path: str | os.PathLike) -> np.ndarray:
    """LM streams [1, 1 + n_q, T] (text, model audio, user audio): a `.npy`, or the `codes`
    array of a tokens `.npz`."""
    data = _load(path)
    if isinstance(data, np.lib.npyio.NpzFile):
        return _as_3d(path, _npz(path, data, "codes"), "stream codes")
    return _as_3d(path, data, "stream codes")


def aligned_codes(
    text: list[int],
    prefix_text: int,
    audio: list[list[int] | None],
    prefix_audio: list[int] | None,
    user: list[list[int]],
    dep_q: int,
    own_delay: int,
) -> np.ndarray:
    """The teacher-forcing layout [1, 1 + n_q, T] from an `LmGen` run (see models/generate.py):
    step t consumed user frame t and returned the text of frame t + 1 and the model's audio
    frame t + 1 - D. T is the number of frames complete in every stream."""
    steps = len(text)
    frames_text = [prefix_text] + list(text)
    own: dict[int, list[int]] = {}
    if prefix_audio is not None:
        own[0] = list(prefix_audio)
    for t, a in enumerate(audio):
        if a is not None:
            own[t + 1 - own_delay] = list(a)
    T = steps
    if dep_q:
        T = min(T, max((f + 1 for f in own), default=0))
        while T and any(f not in own for f in range(T)):
            T -= 1
    user_q = len(user[0]) if user else 0
    codes = np.zeros((1, 1 + dep_q + user_q, T), np.int64)
    codes[0, 0] = frames_text[:T]
    for f in range(T):
        if dep_q:
            codes[0, 1 : 1 + dep_q, f] = own[f]
        codes[0, 1 + dep_q :, f] = user[f]
    return codes


def save_tokens(
    path: str | os.PathLike,
    *,
    text: list[int],
    audio: list[list[int] | None],
    user: list[list[int]],
    frames: list[int],
    prefix_text: int | None,
    prefix_audio: list[int] | None,
    dep_q: int,
    own_delay: int,
) -> Path:
    """Write a tokens `.npz` (see module docstring) atomically, at exactly `path`."""
    from .outputs import write_staged

    p = Path(path)
    if p.suffix.lower() not in TOKENS_SUFFIXES:
        raise AudioError(f"{p}: tokens are saved as .npz; give a name ending in .npz")
    a = np.full((len(audio), max(dep_q, 0)), -1, dtype=np.int64)
    for i, row in enumerate(audio):
        if row is not None:
            a[i] = row
    u = np.array(user, dtype=np.int64).reshape(len(user), -1) if user else np.zeros((0, 0), np.int64)
    codes = aligned_codes(
        text, -1 if prefix_text is None else prefix_text, audio, prefix_audio, list(u), dep_q, own_delay
    )
    with write_staged(p) as f:  # a file object: np.savez adds no suffix to it
        np.savez(
            f,
            text=np.array(text, dtype=np.int64),
            audio=a,
            user=u,
            frame=np.array(frames, dtype=np.int64),
            prefix_text=np.int64(-1 if prefix_text is None else prefix_text),
            codes=codes,
        )
    return p
