"""A model folder: `config.json` + the weights file it names (+ Mimi and the tokenizer when
present), as `moshi_mlx.convert` writes it and as Kyutai's Hub repos are laid out.

The config's `quantization` entry records how the weights were quantized (default bits /
group size / mode, the recipe, and per-module overrides, `false` meaning "kept float").
It is a record, not an instruction: loading always reads the quantization from the
tensors themselves and only checks that the two agree, so a hand-edited or mismatched
folder is named instead of silently loading wrong.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import mlx.nn as nn

from ..constants import CONFIG_NAME, CONVERT_COMMAND, LORA_NAME
from ..models.config import LmConfig, companion_names
from ..modules.embedding import QuantizedScaledEmbedding
from .errors import WeightsError
from .hub import present as _present
from .quantize import QuantSpec

QUANT_KEY = "quantization"


def model_quant_spec(model: nn.Module) -> dict[str, QuantSpec]:
    """path -> QuantSpec of every quantized module of a built model."""
    out = {}
    for path, m in model.named_modules():
        if isinstance(m, (nn.QuantizedLinear, QuantizedScaledEmbedding)):
            out[path] = QuantSpec(m.bits, m.group_size, getattr(m, "mode", "affine"))
    return out


@dataclass
class QuantRecord:
    """The `quantization` entry of a config.json."""

    default: QuantSpec
    overrides: dict[str, QuantSpec | None] = field(default_factory=dict)  # None = kept float
    recipe: str | None = None

    def spec_for(self, path: str) -> QuantSpec | None:
        return self.overrides.get(path, self.default)

    @classmethod
    def from_plan(
        cls, spec: dict[str, QuantSpec | None], weights: dict[str, int] | None = None, recipe: str | None = None
    ) -> "QuantRecord":
        """From path -> spec (None = float) for every quantizable module; the default is the
        spec holding the most parameters (`weights`: path -> parameter count), so the
        overrides list stays short."""
        counts: Counter = Counter()
        for path, q in spec.items():
            if q is not None:
                counts[q] += (weights or {}).get(path, 1)
        if not counts:
            raise WeightsError("nothing to record: no module is quantized")
        default = counts.most_common(1)[0][0]
        overrides = {p: q for p, q in spec.items() if q != default}
        return cls(default, overrides, recipe)

    def to_json(self) -> dict:
        d = self.default.to_json()
        if self.recipe:
            d["recipe"] = self.recipe
        d["overrides"] = {p: (False if q is None else q.to_json()) for p, q in sorted(self.overrides.items())}
        return d

    @classmethod
    def from_json(cls, d, where: str) -> "QuantRecord":
        if not isinstance(d, dict):
            raise WeightsError(f"{where}: '{QUANT_KEY}' must be an object, got {d!r}")
        default = QuantSpec.from_json(d, f"{where}: {QUANT_KEY}")
        overrides: dict[str, QuantSpec | None] = {}
        raw = d.get("overrides") or {}
        if not isinstance(raw, dict):
            raise WeightsError(f"{where}: '{QUANT_KEY}.overrides' must be an object")
        for path, v in raw.items():
            overrides[path] = None if v is False else QuantSpec.from_json(v, f"{where}: {QUANT_KEY}.overrides.{path}")
        return cls(default, overrides, d.get("recipe"))

    def summary(self, spec: dict[str, QuantSpec | None] | None = None) -> str:
        """'4-bit affine g32 (64 modules), 8-bit affine g64 (233 modules)' for `spec`
        (default: the overrides' and default's names only)."""
        if spec is None:
            return self.default.describe() + (f" + {len(self.overrides)} override(s)" if self.overrides else "")
        return describe_spec(spec)

    def check(self, found: dict[str, QuantSpec], float_paths: list[str], where: str) -> None:
        """Raise if the tensors' quantization (`found`, plus `float_paths` left float)
        disagrees with this record."""
        bad = []
        for path, q in sorted(found.items()):
            want = self.spec_for(path)
            if want != q:
                bad.append(f"{path}: recorded {want.describe() if want else 'float'}, stored {q.describe()}")
        for path in sorted(float_paths):
            want = self.spec_for(path)
            if want is not None:
                bad.append(f"{path}: recorded {want.describe()}, stored float")
        if bad:
            more = f" (+{len(bad) - 3} more)" if len(bad) > 3 else ""
            raise WeightsError(
                f"{where}: config.json's '{QUANT_KEY}' disagrees with the tensors for {len(bad)} "
                f"module(s): {'; '.join(bad[:3])}{more}; the tensors are right: fix or delete "
                f"the '{QUANT_KEY}' entry, or convert again ({CONVERT_COMMAND})"
            )


def describe_spec(spec: dict[str, QuantSpec | None]) -> str:
    counts = Counter(q.describe() if q is not None else "float" for q in spec.values())
    return ", ".join(f"{k} ({n} module{'s' if n > 1 else ''})" for k, n in counts.most_common())


@dataclass
class ModelDir:
    root: Path
    config: LmConfig
    weights: Path
    quantization: QuantRecord | None
    mimi: Path | None  # present in the folder, else None (the name: `companion_names`)
    tokenizer: Path | None


def is_model_dir(path: str | os.PathLike) -> bool:
    p = Path(path).expanduser()
    return p.is_dir() and (p / CONFIG_NAME).is_file()


def read_model_dir(path: str | os.PathLike) -> ModelDir:
    root = Path(path).expanduser()
    if not root.is_dir():
        raise WeightsError(f"model folder not found: {root}")
    cfg_path = root / CONFIG_NAME
    if not _present(cfg_path):  # (a broken link says so)
        raise WeightsError(f"{root} is not a model folder: it has no {CONFIG_NAME}")
    cfg = LmConfig.from_json(cfg_path)
    weights = _weights_file(root, cfg)
    record = cfg.extra.get(QUANT_KEY)
    quant = QuantRecord.from_json(record, str(cfg_path)) if record else None

    def present(name: str | None) -> Path | None:
        return root / name if name and (root / name).is_file() else None

    return ModelDir(root, cfg, weights, quant, *(present(n) for n in companion_names(cfg)))


def _weights_file(root: Path, cfg: LmConfig) -> Path:
    if cfg.moshi_name:
        p = root / cfg.moshi_name
        if not p.is_file():
            raise WeightsError(f"{root / CONFIG_NAME} names the weights {cfg.moshi_name!r}, which is not in {root}")
        return p
    mimi = {cfg.mimi_name} if cfg.mimi_name else set()
    if cfg.lora:  # a fine-tune's adapters are not its base weights
        mimi.add(cfg.lora_name or LORA_NAME)
    names = sorted(
        n.name for n in root.glob("*.safetensors") if n.name not in mimi and not n.name.startswith("tokenizer")
    )
    if len(names) != 1:
        raise WeightsError(
            f"{root / CONFIG_NAME} has no 'moshi_name' and the folder holds "
            f"{len(names)} candidate weight files ({', '.join(names) or 'none'}); set moshi_name"
        )
    return root / names[0]


def config_text(cfg: LmConfig, weights_name: str, record: QuantRecord | None) -> str:
    """The folder's `config.json`: the LM config, its file names, the quantization."""
    d = cfg.to_dict()
    d["moshi_name"] = weights_name
    d.pop(QUANT_KEY, None)
    if record is not None:
        d[QUANT_KEY] = record.to_json()
    return json.dumps(d, indent=2) + "\n"


def write_config(root: Path, cfg: LmConfig, weights_name: str, record: QuantRecord | None) -> Path:
    """Write `config.json` for the folder (see `config_text`)."""
    path = root / CONFIG_NAME
    from ..outputs import write_text

    write_text(path, config_text(cfg, weights_name, record))
    return path
