"""Text generation as a front end uses it: a prompt string in, text out as it is generated.

Wraps `models.helium.TextGen` with the tokenizer: the prompt is encoded (or, for models with
no tokenizer such as the random demo models, read as token ids), and the output is decoded
incrementally — the whole sequence is decoded and the new characters are emitted, so pieces
that only make a character together (byte fallback, "▁" spaces) come out right.
"""

from __future__ import annotations

import re
from typing import Iterator

import numpy as np

from ..constants import DEFAULT_SEED
from ..errors import UsageError
from ..models.helium import TEXT_DEFAULTS, TextGen
from ..models.sampling import Sampler
from ..validation import integer
from .transcript import PlaceholderTokenizer

_IDS = re.compile(r"^[\s,]*\d+([\s,]+\d+)*[\s,]*$")


def parse_prompt(prompt: str, tokenizer) -> list[int]:
    """Token ids of `prompt`: encoded text, or the ids themselves for a model with no tokenizer."""
    if isinstance(tokenizer, PlaceholderTokenizer):
        negative = [t for t in re.split(r"[\s,]+", prompt or "") if re.fullmatch(r"-\d+", t)]
        if negative and _IDS.match(re.sub(r"-(\d+)", r"\1", prompt)):
            raise UsageError(f"token ids must be >= 0, got {', '.join(negative[:5])}")
        if not _IDS.match(prompt or ""):
            raise UsageError(
                'this model has no text tokenizer (tokenizer="none" or a demo model): give the '
                'prompt as token ids, e.g. "12 7 99"'
            )
        return [int(t) for t in re.split(r"[\s,]+", prompt.strip(" \t\n,")) if t]
    return tokenizer.encode(prompt)


def make_sampler(temp: float | None = None, top_k: int | None = None, top_p: float | None = None) -> Sampler:
    """Upstream run_helium's sampler by default (temperature 0.8, top-p 0.95); temp 0 = greedy."""
    return Sampler(
        temp=TEXT_DEFAULTS["temp"] if temp is None else temp,
        top_k=TEXT_DEFAULTS["top_k"] if top_k is None else top_k,
        top_p=TEXT_DEFAULTS["top_p"] if top_p is None else top_p,
    )


class TextStream:
    """lm, tokenizer, compute: as `moshi_mlx.load()` gives them (`Model.text_stream`)."""

    def __init__(
        self,
        lm,
        tokenizer,
        *,
        temp: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int = DEFAULT_SEED,
        compute=None,
    ):
        try:
            sampler = make_sampler(temp, top_k, top_p)
        except ValueError as e:
            raise UsageError(str(e)) from None
        self.gen = TextGen(lm, sampler, seed=seed, compute=compute)
        self.tokenizer = tokenizer
        self.tokens: list[int] = []

    def stream(self, prompt: str | list[int], max_tokens: int, stop_at_eos: bool = True) -> Iterator[str]:
        """Yield the generated text piece by piece (up to `max_tokens` tokens; the end-of-text
        token, when the tokenizer has one, ends it unless `stop_at_eos` is False).
        prompt: text, or token ids (see `parse_prompt`)."""
        max_tokens = integer("max_tokens", max_tokens, lo=0)
        ids = self.encode(prompt)
        eos = getattr(self.tokenizer, "eos_id", None)
        stop = [eos] if (stop_at_eos and eos is not None) else []
        self.tokens = []
        # decode prompt + continuation and emit what follows the prompt's text, so the first
        # word's leading space survives (SentencePiece drops it at the start of a text)
        shown = self._decode(ids)
        for tok in self.gen.generate(ids, max_tokens, stop=stop):
            if tok in stop:
                break
            self.tokens.append(tok)
            text = self._decode(ids + self.tokens)
            if text.endswith("\ufffd"):  # an incomplete UTF-8 character: wait for its other bytes
                continue
            if text.startswith(shown):
                delta, shown = text[len(shown) :], text
            else:  # decoding is not always prefix-stable: emit the rest from the first change
                k = next((i for i, (a, b) in enumerate(zip(shown, text)) if a != b), min(len(shown), len(text)))
                delta, shown = text[k:], text
            if delta:
                yield delta

    def encode(self, prompt: str | list[int]) -> list[int]:
        """The prompt's token ids (see `parse_prompt`), checked against the vocabulary: a
        caller can find a bad prompt before printing anything."""
        if isinstance(prompt, str):
            ids = parse_prompt(prompt, self.tokenizer)
        elif isinstance(prompt, (list, tuple, np.ndarray)):
            ids = [integer("prompt token id", t, lo=0) for t in np.asarray(prompt).reshape(-1).tolist()]
        else:
            raise UsageError(f"prompt must be text or a list of token ids, got {type(prompt).__name__}")
        vocab = self.gen.vocab_size
        bad = [t for t in ids if not 0 <= t < vocab]
        if bad:
            raise UsageError(f"token id(s) {bad[:5]} outside the model's vocabulary [0, {vocab})")
        return ids

    def _decode(self, ids: list[int]) -> str:
        if isinstance(self.tokenizer, PlaceholderTokenizer):
            return "".join(f" ‹{i}›" for i in ids)
        return self.tokenizer.decode(ids)
