"""The one place where values from users are checked (numbers, and text a tokenizer takes): flags, API
arguments, config keys.

Every check names the value (`--seed`, `seed`, `config.json: dim`) and says what was
wanted, as one line in a `UsageError` (or the error class the caller asks for, e.g.
`ConfigError` for config files). The same functions back the CLIs' argparse types
(`arg_type`) and the Python API's entry points, so `--seed -1` and `LmGen(seed=-1)` are
refused with the same sentence. Lives at the package root because every layer uses it.
"""

from __future__ import annotations

import argparse
import json
import math
import numbers
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import AudioError, Error, UsageError

SEED_LIMIT = 2**32  # seeds are in [0, 2**32): what MLX's and numpy's generators take everywhere
OFF_WORDS = ("off", "none", "no")


def json_file(path: str | os.PathLike) -> Any:
    """The contents of a JSON file a user gives (a config.json), as UTF-8 with or without a
    byte-order mark: Windows editors (Notepad) save one, which `json` refuses. Callers say
    in their own words what a file that is not JSON is (OSError / ValueError propagate)."""
    return json.loads(Path(path).read_text(encoding="utf-8-sig"))


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))


def _is_real(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))


def integer(name: str, v: Any, *, lo: int | None = None, hi: int | None = None, err: type[Error] = UsageError) -> int:
    """An int in [lo, hi] (bounds inclusive, None = unbounded)."""
    if not _is_int(v):
        raise err(f"{name} must be an integer, got {v!r}")
    v = int(v)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise err(f"{name} must be {_range(lo, hi)}, got {v}")
    return v


def real(
    name: str,
    v: Any,
    *,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
    err: type[Error] = UsageError,
) -> float:
    """A finite float in the range (NaN and infinities are refused: they never mean anything
    useful for a temperature, a lag or a scale, and NaN passes every `<` test silently)."""
    if not _is_real(v):
        raise err(f"{name} must be a number, got {v!r}")
    v = float(v)
    if not math.isfinite(v):
        raise err(f"{name} must be a finite number, got {v}")
    bad_lo = lo is not None and (v <= lo if lo_open else v < lo)
    bad_hi = hi is not None and (v >= hi if hi_open else v > hi)
    if bad_lo or bad_hi:
        raise err(f"{name} must be {_range(lo, hi, lo_open, hi_open)}, got {v:g}")
    return v


def text(name: str, v: Any, *, max_chars: int | None = None, err: type[Exception] = UsageError) -> str:
    """A str a tokenizer can take: valid UTF-8 (no unpaired surrogate, which is what a command
    line's non-UTF-8 bytes become, and which SentencePiece's binding fails on with a C++ cast
    error), no NUL, at most max_chars characters."""
    if not isinstance(v, str):
        raise err(f"{name} must be text, got {type(v).__name__}")
    if max_chars is not None and len(v) > max_chars:
        raise err(f"{name} must be at most {max_chars} characters, got {len(v)}")
    try:
        v.encode("utf-8")
    except UnicodeEncodeError as e:
        raise err(f"{name} is not UTF-8 text: character {e.start + 1} is {v[e.start]!r}") from None
    if "\x00" in v:
        raise err(f"{name} must not contain NUL characters")
    return v


def _num(v) -> str:
    return str(v) if isinstance(v, int) else f"{v:g}"


def _range(lo, hi, lo_open: bool = False, hi_open: bool = False) -> str:
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{_num(lo)}, {_num(hi)}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {_num(lo)}"
    if hi is not None:
        return f"{'<' if hi_open else '<='} {_num(hi)}"
    return "a number"  # pragma: no cover - no bounds never fails


def seed(name: str, v: Any) -> int:
    """A random seed: an integer in [0, 2**32)."""
    if _is_int(v) and not 0 <= int(v) < SEED_LIMIT:
        raise UsageError(f"{name} must be in [0, 2**32), got {int(v)}")
    return integer(name, v)


def positive(name: str, v: Any) -> float:
    return real(name, v, lo=0.0, lo_open=True)


def non_negative(name: str, v: Any) -> float:
    return real(name, v, lo=0.0)


def temperature(name: str, v: Any) -> float:
    """>= 0 (0 = greedy)."""
    return real(name, v, lo=0.0)


def top_p(name: str, v: Any) -> float:
    return real(name, v, lo=0.0, hi=1.0)


def top_k(name: str, v: Any) -> int:
    return integer(name, v, lo=0)


def sample_rate(name: str, v: Any) -> int:
    """A sample rate in Hz: a positive integer (a float rate, even 16000.0, is a mistake
    somewhere upstream, so it is refused rather than rounded)."""
    if not _is_int(v) or int(v) <= 0:
        raise UsageError(f"{name} must be a positive integer (Hz), got {v!r}")
    return int(v)


def positive_or_off(name: str, v: Any) -> float | None:
    """A positive finite number, or None for "off" (the explicit way to disable a bound)."""
    if v is None:
        return None
    return positive(name, v)


# ---- argparse: the same checks on command-line strings ---------------------------------


def _parse_number(name: str, text: str, kind: type) -> Any:
    s = text.strip()
    try:
        if kind is int:
            return int(s, 10)
        return float(s)
    except ValueError:
        raise UsageError(f"{name} must be {'an integer' if kind is int else 'a number'}, got {text!r}") from None


def arg_type(
    name: str, check: Callable[[str, Any], Any], kind: type = float, off: bool = False
) -> Callable[[str], Any]:
    """An argparse `type=` that parses `kind`, applies `check(name, value)` and reports a bad
    value as argparse's usual one-line error naming the flag. With `off=True` the words
    off/none/no give None (the explicit "no limit")."""

    def parse(text: str) -> Any:
        if off and text.strip().lower() in OFF_WORDS:
            return None
        try:
            return check(name, _parse_number(name, text, kind))
        except UsageError as e:
            raise argparse.ArgumentTypeError(str(e) + (' (or "off")' if off else "")) from None

    parse.__name__ = name.lstrip("-").replace("-", "_")  # argparse names the type in some messages
    return parse


def seed_arg(name: str = "--seed") -> Callable[[str], int]:
    return arg_type(name, seed, int)


def int_arg(name: str, lo: int | None = None, hi: int | None = None) -> Callable[[str], int]:
    return arg_type(name, lambda n, v: integer(n, v, lo=lo, hi=hi), int)


def float_arg(
    name: str, lo: float | None = None, hi: float | None = None, lo_open: bool = False
) -> Callable[[str], float]:
    return arg_type(name, lambda n, v: real(n, v, lo=lo, hi=hi, lo_open=lo_open), float)


def positive_or_off_arg(name: str) -> Callable[[str], float | None]:
    return arg_type(name, positive, float, off=True)


# ---- audio arrays from callers ------------------------------------------------------------

_INT_SCALE = {np.dtype(np.int8): 2.0**7, np.dtype(np.int16): 2.0**15, np.dtype(np.int32): 2.0**31}


def silence_non_finite(x: np.ndarray) -> tuple[np.ndarray, int]:
    """`x` with its NaN/inf samples replaced by 0, and how many there were (`x` itself when
    none): one such sample from a device's glitch would otherwise poison an adaptive filter's
    state or the codec for the rest of a session."""
    bad = ~np.isfinite(x)
    if not bad.any():
        return x, 0
    return np.where(bad, np.zeros((), x.dtype), x), int(bad.sum())


def float_pcm(name: str, x: Any, *, repair: bool = False, warn: Callable[[str], None] | None = None) -> np.ndarray:
    """Audio samples as float32 in [-1, 1]-scale.

    Integer PCM (int8/16/32) is scaled to float as a WAV reader would (int16 32767 -> ~1.0),
    never taken as floats of huge amplitude; uint8 is unsigned 8-bit PCM (128 = silence).
    NaN/inf samples are refused (`AudioError`), or with `repair=True` replaced by 0 with one
    warning (files written by other tools can hold a few)."""
    a = np.asarray(x)
    if a.dtype == np.uint8:
        a = (a.astype(np.float32) - 128.0) / 128.0
    elif a.dtype in _INT_SCALE:
        a = (a.astype(np.float64) / _INT_SCALE[a.dtype]).astype(np.float32)
    elif np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float32, copy=False)
    elif a.dtype.kind in "iu":
        raise AudioError(f"{name}: integer samples of type {a.dtype} are not PCM; give float, int16 or int32 samples")
    else:
        raise AudioError(f"{name}: expected audio samples (float or integer PCM), got {a.dtype}")
    repaired, n = silence_non_finite(a)
    if n:
        if not repair:
            raise AudioError(f"{name}: {n} of {a.size} samples are NaN or infinite")
        a = repaired
        if warn is not None:
            warn(f"WARNING: {name}: {n} NaN/infinite samples replaced by silence")
    return a


# more channels than this in a chunk with fewer samples than channels is a transposed array
MAX_CHANNELS = 64


def mono_pcm(name: str, x: Any) -> np.ndarray:
    """`float_pcm`, then [samples, channels] mixed down to mono; other shapes are refused."""
    a = float_pcm(name, x)
    if a.ndim == 2 and a.shape[1] > max(a.shape[0], MAX_CHANNELS):
        raise AudioError(
            f"{name} of shape {a.shape} reads as {a.shape[0]} samples of {a.shape[1]} channels: audio "
            "is [samples] or [samples, channels] (for [channels, samples] pass its .T)"
        )
    if a.ndim == 2:  # [samples, channels]
        a = a.mean(axis=1)
    elif a.ndim != 1:
        raise AudioError(f"expected mono samples [n] (or [n, channels]), got shape {a.shape}")
    return a
