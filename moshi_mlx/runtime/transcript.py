"""Moshi's inner-monologue text: tokens -> printable pieces -> words with timestamps.

A text token produced by the LM step that consumed input frame `f` belongs to the model's
timeline at (f + 1) * 80 ms from the start of the session (training convention: position
p = f + 1). Pad (`existing_text_padding_id`, 3) and end-of-pad (0) tokens carry no text.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from ..constants import FRAME_SECONDS

TRANSCRIPT_SUFFIXES = (".json", ".txt")  # JSON with words and times, or a plain text table
END_OF_PADDING_ID = 0


class TextTokenizer:
    """SentencePiece tokenizer (`tokenizer_spm_32k_3.model` and friends)."""

    def __init__(self, path: str | os.PathLike):
        import sentencepiece

        from ..weights.errors import WeightsError

        if not os.path.exists(path):
            raise WeightsError(f"text tokenizer not found: {path}")
        sp = sentencepiece.SentencePieceProcessor()
        try:
            ok = sp.Load(os.fspath(path))
        except Exception:
            ok = False
        if not ok:
            from ..weights.hub import stand_in

            other = stand_in(path)
            raise WeightsError(f"{path} is {other}" if other else f"{path} is not a SentencePiece model")
        self.sp = sp
        self.vocab_size = sp.GetPieceSize()

    def piece(self, token: int) -> str | None:
        if token < 0 or token >= self.vocab_size or self.sp.IsControl(token) or self.sp.IsUnknown(token):
            return None
        return self.sp.IdToPiece(token)

    def encode(self, text: str) -> list[int]:
        return list(self.sp.EncodeAsIds(text))

    def decode(self, ids: list[int]) -> str:
        """Text of a token sequence (byte pieces joined into characters, "▁" as spaces); ids
        outside the tokenizer's vocabulary (a model may predict more) are left out."""
        return self.sp.DecodeIds([int(i) for i in ids if 0 <= int(i) < self.vocab_size])

    @property
    def eos_id(self) -> int | None:
        eos = self.sp.eos_id()
        return eos if eos >= 0 else None


class PlaceholderTokenizer:
    """For random-weight demo models that have no tokenizer: shows ids as ‹id›."""

    vocab_size = 1 << 30

    def piece(self, token: int) -> str | None:
        return f"▁‹{token}›" if token >= 0 else None

    eos_id = None

    def encode(self, text: str) -> list[int]:
        raise ValueError("the placeholder tokenizer cannot encode text")

    def decode(self, ids: list[int]) -> str:
        return " ".join(f"‹{int(i)}›" for i in ids)


class ByteTokenizer:
    """For random-weight TTS demo models: one token per UTF-8 byte (ids 4..259, clear of
    the special text tokens 0..3), so any text can be spoken by a model with no tokenizer file."""

    OFFSET = 4
    vocab_size = OFFSET + 256

    def encode(self, text: str) -> list[int]:
        return [self.OFFSET + b for b in text.encode("utf-8")]

    def piece(self, token: int) -> str | None:
        if not self.OFFSET <= token < self.vocab_size:
            return None
        return bytes([token - self.OFFSET]).decode("latin-1")


@dataclass
class Word:
    text: str
    start: float
    end: float


class Transcript:
    def __init__(self, tokenizer, pad_id: int = 3, skip_ids: tuple[int, ...] = (END_OF_PADDING_ID,)):
        self.tokenizer = tokenizer
        self.skip = {pad_id, *skip_ids}
        self.words: list[Word] = []
        self.tokens: list[tuple[int, int]] = []  # (frame, token) for every step

    def add(self, token: int, frame: int) -> str | None:
        """Record a token; return the text to print live (None for pads)."""
        self.tokens.append((frame, token))
        if token in self.skip:
            return None
        piece = self.tokenizer.piece(token)
        if not piece:
            return None
        t = (frame + 1) * FRAME_SECONDS
        if piece.startswith("▁") or not self.words:
            self.words.append(Word(piece.lstrip("▁"), t, t + FRAME_SECONDS))
        else:
            self.words[-1].text += piece
            self.words[-1].end = t + FRAME_SECONDS
        return piece.replace("▁", " ")

    def cut(self, seconds: float) -> None:
        """Forget every word starting at or after `seconds` (a translation cut at its EOS)."""
        self.words = [w for w in self.words if w.start < seconds - 1e-9]
        self.tokens = [(f, t) for f, t in self.tokens if (f + 1) * FRAME_SECONDS < seconds - 1e-9]

    @property
    def text(self) -> str:
        return " ".join(w.text for w in self.words if w.text)

    def save(self, path: str | os.PathLike) -> None:
        """`.json`: text + words with start/end seconds; `.txt`: one `start end word` line each.
        Written atomically (temporary name, then rename), so it can be saved again and again
        as the session goes on, and a failure never leaves half a file."""
        from ..errors import UsageError
        from ..outputs import Output, check_output, write_text

        if not isinstance(path, (str, os.PathLike)):
            raise UsageError(f"a transcript path must be a str or os.PathLike, got {type(path).__name__}")
        check_output(Output("transcript", path, TRANSCRIPT_SUFFIXES))  # '' or x.wav: one line, nothing written
        path = os.fspath(path)
        if path.lower().endswith(".json"):
            data = {
                "text": self.text,
                "words": [{"word": w.text, "start": round(w.start, 3), "end": round(w.end, 3)} for w in self.words],
            }
            write_text(path, json.dumps(data, ensure_ascii=False, indent=1))
        else:
            write_text(path, "".join(f"{w.start:8.2f} {w.end:8.2f} {w.text}\n" for w in self.words))
