"""Named quantization recipes: which modules of the LM get which bits.

A recipe maps a module path (`transformer.layers.3.gating.linear_in`,
`depformer.slices.2.linear_out`, ...) to a QuantSpec, or None to keep it float. Roles:

- temporal: the temporal transformer's layers (`transformer.*`), ~85% of Moshi 7B;
- depformer: its input projections and transformer layers;
- embedding: `text_emb`, `audio_embs.N`, `depformer.slices.K.emb` (with their small linears);
- head: `text_linear`, `depformer.slices.K.linear_out`, `extra_heads.N`.

Small per-codebook heads and the depformer are where low bits hurt most and cost least, so
`mixed-4-8` keeps them (and the embeddings) at 8 bits while the temporal transformer, the
bulk of the bytes, goes to 4.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from .errors import WeightsError
from .quantize import DEFAULT_BITS, QuantSpec, make_spec

ROLES = ("temporal", "depformer", "embedding", "head", "other")
_MIXED = re.compile(r"^mixed-(\d+)-(\d+)$")


def module_role(path: str) -> str:
    parts = path.split(".")
    if parts[0] in ("text_emb", "audio_embs"):
        return "embedding"
    if parts[0] in ("text_linear", "extra_heads"):
        return "head"
    if parts[0] == "transformer":
        return "temporal"
    if parts[0] == "depformer":
        if len(parts) > 3 and parts[3] == "emb":
            return "embedding"
        if len(parts) > 3 and parts[3] == "linear_out":
            return "head"
        return "depformer"
    return "other"


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    rule: Callable[[str], QuantSpec | None]

    def __call__(self, path: str) -> QuantSpec | None:
        return self.rule(path)


def recipe_help() -> str:
    return (
        "uniform (every module at --q-bits; the default), mixed-L-H (temporal transformer at L bits, "
        "depformer + embeddings + heads at H bits; 'mixed' = mixed-<q-bits>-8, e.g. mixed-4-8), "
        "float-heads (as uniform but embeddings and output heads stay float), "
        "transformers-only (only the transformer layers, temporal and depformer)"
    )


def make_recipe(
    name: str | None, bits: int | None = None, group_size: int | None = None, mode: str = "affine"
) -> Recipe:
    """The recipe `name` (default 'uniform') with the user's --q-bits/--q-group-size/--q-mode
    (None = defaults). Raises a one-line WeightsError for unknown names or bad values."""
    key = (name or "uniform").strip().lower().replace("_", "-")
    where = f"recipe {key!r}"
    if key == "mixed":
        key = f"mixed-{bits if bits is not None else DEFAULT_BITS}-8"
    m = _MIXED.match(key)
    if m:
        low, high = int(m.group(1)), int(m.group(2))
        if mode != "affine":
            raise WeightsError(f"{where} mixes affine bit widths; it cannot be combined with --q-mode {mode}")
        if bits is not None and bits != low and (name or "").replace("_", "-") != "mixed":
            raise WeightsError(
                f"{where} sets the temporal transformer to {low} bits; --q-bits {bits} contradicts it "
                f"(drop --q-bits, or use mixed-{bits}-{high})"
            )
        lo = make_spec(low, group_size, where=where)
        hi = make_spec(high, group_size, where=where)
        return Recipe(
            key,
            f"temporal transformer {lo.describe()}; depformer, embeddings, heads {hi.describe()}",
            lambda p: lo if module_role(p) == "temporal" else hi,
        )
    base = make_spec(bits, group_size, mode, where="quantization" if name is None else where)
    if key == "uniform":
        return Recipe(key, f"every module {base.describe()}", lambda p: base)
    if key == "float-heads":
        return Recipe(
            key,
            f"{base.describe()}; embeddings and output heads float",
            lambda p: None if module_role(p) in ("embedding", "head") else base,
        )
    if key == "transformers-only":

        def rule(p: str) -> QuantSpec | None:
            parts = p.split(".")
            return base if parts[0] == "transformer" or (len(parts) > 3 and parts[3] == "transformer") else None

        return Recipe(key, f"transformer layers {base.describe()}; the rest float", rule)
    raise WeightsError(f"unknown quantization recipe {name!r}; known: {recipe_help()}")
