"""Runtime errors in a CLI's words. runtime/ is called from scripts as well as from the tools, so
its errors name a parameter as the Python API spells it (`mimi_backend="mlx"`, `n_q=3`,
`force=True`); a tool's user gave a flag instead, so `runner` prints those words as the flag
(`--mimi-backend mlx`, `--n-q 3`, `--force`). One table, for every tool."""

from __future__ import annotations

import re

# API parameter -> the flag that gives it in every tool that has it. Only the names written
# `name=value` in runtime/ and weights/ errors (load()'s `quantized`: weights/resolve.py).
FLAG_FOR = {
    "mimi_backend": "--mimi-backend",
    "mimi_weight": "--mimi-weight",
    "mimi": "--mimi-weight",
    "tokenizer": "--tokenizer",
    "quantized": "-q",
    "quantize": "-q",
    "n_q": "--n-q",
    "cfg_coef": "--cfg-coef",
    "force": "--force",
}
_KEYWORD = re.compile(r"(?<![\w.-])(" + "|".join(sorted(FLAG_FOR, key=len, reverse=True)) + r')=("[^"]*"|-?[\w.]+)')


def in_flag_words(message: str) -> str:
    """`message` with each `name=value` of `FLAG_FOR` written as its flag: 'flag value', the
    flag alone for `=True` (a switch), 'without flag' for `=None` (the default, no flag)."""

    def flag(m: re.Match) -> str:
        value, name = m.group(2).strip('"'), FLAG_FOR[m.group(1)]
        return name if value == "True" else f"without {name}" if value == "None" else f"{name} {value}"

    return _KEYWORD.sub(flag, message)
