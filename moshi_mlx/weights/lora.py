"""LoRA fine-tunes (Kyutai's moshi-finetune): base weights + adapters, fused once at load.

moshi-finetune saves a folder with the base model's `config.json` plus `lora: true`,
`lora_rank`, `lora_scaling`, and the adapters (`lora.safetensors`, or the config's
`lora_name`): for every `nn.Linear` of the reference `LMModel` at module path M,
`M.lora_A.weight` [rank, in] and `M.lora_B.weight` [out, rank]; with `ft_embed` also full
replacement tensors (embeddings). PyTorch moshi (`modules/lora.py`,
`replace_lora_with_linear`) fuses them as `W + scaling * (B @ A)`, every operand cast to the
model dtype first and each step rounded to it; `LoraSource` does the same, so a checkpoint
read through it is the fused checkpoint and everything after (loading, `convert`'s
quantization) is the normal path. We always fuse; the reference's unfused mode
(`fuse_lora=False`) computes the same function with other rounding.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx

from ..constants import CONFIG_NAME, LORA_NAME
from ..models.config import LmConfig
from .errors import WeightsError

# the base most fine-tunes start from (moshi's loaders.DEFAULT_REPO), for messages
BASE_HINT = "kyutai/moshiko-pytorch-bf16"
_A, _B = ".lora_A.weight", ".lora_B.weight"
# reference attention modules: released stacked weight <-> per-step in-memory Linears
_PROJ = re.compile(r"^(?P<layer>.+\.(?:self_attn|cross_attention))\.(?P<proj>in|out)_projs?(?:\.(?P<i>\d+))?$")
_STACKED = {"in": ("in_proj_weight", "in_proj.weight"), "out": ("out_proj.weight",)}


@dataclass(frozen=True)
class LoraFiles:
    """A LoRA checkpoint's files: the adapters, and the base weights when the folder holds them."""

    adapters: Path
    base: Path | None
    scaling: float
    rank: int


def lora_files(cfg: LmConfig | dict, folder: str | os.PathLike, *, base_required: bool = False) -> LoraFiles | None:
    """None for a plain checkpoint; for a fine-tune whose config says `lora: true`, its
    adapters file (`lora_name`, default lora.safetensors) in `folder`, and the base weights
    (`moshi_name`) when the folder has them. `base_required`: a folder of adapters only is
    an error naming what to pass (the base it was trained on)."""
    if isinstance(cfg, dict):
        lora, name, moshi_name = bool(cfg.get("lora")), cfg.get("lora_name"), cfg.get("moshi_name")
        scaling, rank = float(cfg.get("lora_scaling", 2.0)), int(cfg.get("lora_rank", 128))
    else:
        lora, name, moshi_name, scaling, rank = cfg.lora, cfg.lora_name, cfg.moshi_name, cfg.lora_scaling, cfg.lora_rank
    if not lora:
        return None
    root = Path(folder).expanduser()
    adapters = root / (name or LORA_NAME)
    if not adapters.is_file():
        raise WeightsError(
            f"{root}: config.json says lora: true but the adapters file {adapters.name} is not there "
            f"(set lora_name to the file moshi-finetune saved, e.g. lora.safetensors)"
        )
    base = root / moshi_name if moshi_name and (root / moshi_name).is_file() else None
    if base is None and base_required:
        raise adapters_only(str(root), adapters.name, str(root / CONFIG_NAME))
    return LoraFiles(adapters, base, scaling, rank)


def adapters_only(place: str, adapters: str, config: str, what: str = "folder") -> WeightsError:
    """The line for a fine-tune of LoRA adapters without their base, a folder or a Hub repo
    (`what`) that moshi-finetune's `consolidated/` was copied or pushed to: the command that
    runs it, the base with the fine-tune's config.json (`config`: where it is, as a
    --lm-config; the adapters are then taken from the same place)."""
    return WeightsError(
        f"{place} holds LoRA adapters only ({adapters}): pass the base weights they were "
        f"trained on with this {what}'s config.json, e.g. --hf-repo {BASE_HINT} --lm-config "
        f"{config} (Python: moshi_mlx.load({BASE_HINT!r}, config=...))"
    )


@dataclass
class _Delta:
    """Rows [start, start + B.rows) of a base tensor get scaling * B @ A."""

    start: int
    rows: int
    a: str
    b: str
    block: int = -1  # >= 0: block `block` of a stacked pair (mult x rank rows in A)


class LoraSource:
    """The fused checkpoint, read like `SafetensorsFile` / `ArraySource`: the base's keys
    (adapter keys hidden), each tensor fused on `load`. `dtype`: the dtype the model will
    hold (the reference fuses in it); None keeps each base tensor's."""

    def __init__(self, base, adapters, scaling: float, rank: int | None = None, dtype: mx.Dtype | None = None):
        self.base, self.adapters, self.scaling, self.dtype_out = base, adapters, float(scaling), dtype
        self.path = base.path
        where = f"{adapters.path.name} (LoRA adapters for {base.path.name})"
        keys = set(base.keys())
        if any(k.endswith((_A, _B)) for k in keys):
            raise WeightsError(
                f"{base.path.name} holds LoRA adapters, not base weights: pass the base weights they "
                f"were trained on too (e.g. --hf-repo {BASE_HINT}, or its model.safetensors)"
            )
        if any(k.endswith(".scales") for k in keys) or any(k.endswith("_scb") for k in keys):
            raise WeightsError(
                f"{where}: the base weights are quantized; LoRA adapters fuse into float weights "
                f"(e.g. {BASE_HINT}), as in the reference"
            )
        from .lm_keys import is_pytorch_layout

        if not is_pytorch_layout(keys):
            raise WeightsError(
                f"{where}: the base is in the MLX layout; LoRA adapters name the reference's "
                f"modules: pass the PyTorch base weights (e.g. {BASE_HINT})"
            )
        self.deltas: dict[str, list[_Delta]] = {}
        self.replaced: dict[str, str] = {}
        akeys = set(adapters.keys())
        if not any(k.endswith((_A, _B)) for k in akeys):  # e.g. a base checkpoint given as the adapters
            raise WeightsError(
                f"{adapters.path} holds no LoRA adapters (no *{_A} / *{_B} tensors): pass the "
                f"fine-tune's adapters file (moshi-finetune's {LORA_NAME})"
            )
        for k in sorted(akeys):
            if k.endswith(_B):
                if k[: -len(_B)] + _A not in akeys:
                    raise WeightsError(f"{where}: {k} has no matching lora_A")
            elif k.endswith(_A):
                self._add(k[: -len(_A)], keys, where, rank)
            elif k in keys:
                if tuple(adapters.shape(k)) != tuple(base.shape(k)):
                    raise WeightsError(
                        f"{where}: {k} has shape {list(adapters.shape(k))}, the base {list(base.shape(k))}"
                    )
                self.replaced[k] = k  # a tensor trained in full (moshi-finetune's ft_embed)
            else:
                raise WeightsError(f"{where}: {k} is neither an adapter nor a tensor of the base (unexpected key)")
        for target, ds in self.deltas.items():
            ds.sort(key=lambda d: d.start)
            for d, e in zip(ds, ds[1:]):
                if e.start < d.start + d.rows:
                    raise WeightsError(f"{where}: {d.a} and {e.a} both adapt rows of {target}")

    def _add(self, module: str, keys: set[str], where: str, rank: int | None) -> None:
        a, b = module + _A, module + _B
        if b not in self.adapters:
            raise WeightsError(f"{where}: {a} has no matching lora_B")
        sa, sb = tuple(self.adapters.shape(a)), tuple(self.adapters.shape(b))
        if len(sa) != 2 or len(sb) != 2:
            raise WeightsError(f"{where}: {a} / {b} must be matrices, got {list(sa)} / {list(sb)}")
        r = sb[1]
        if rank is not None and r != rank:
            raise WeightsError(f"{where}: {b} has rank {r}, config.json says lora_rank {rank}")
        if sa[0] % r or sb[0] % (sa[0] // r):
            raise WeightsError(f"{where}: {a} {list(sa)} and {b} {list(sb)} do not pair (rank {r})")
        mult = sa[0] // r  # > 1: the attention's stacked per-step adapters (`in_proj.lora_A.weight`)
        rows = sb[0] // mult
        m = _PROJ.match(module)
        if mult > 1 and (m is None or m["i"] is not None):
            raise WeightsError(f"{where}: {a} {list(sa)} and {b} {list(sb)} do not pair (rank {r})")
        stacked = [f"{m['layer']}.{n}" for n in _STACKED[m["proj"]]] if m is not None else []
        stacked = [t for t in stacked if t in keys]
        if module + ".weight" in keys or (m is not None and m["i"] is None and stacked):
            # the module's own weight, or a stacked adapter on the stacked (released) weight
            target = module + ".weight" if module + ".weight" in keys else stacked[0]
            blocks = [(target, i * rows, i if mult > 1 else -1) for i in range(mult)]
        elif m is not None and m["i"] is not None and stacked:  # a step's adapter, stacked base
            blocks = [(stacked[0], int(m["i"]) * rows, -1)]
        elif m is not None and m["i"] is None and f"{m['layer']}.{m['proj']}_projs.0.weight" in keys:
            # a stacked adapter, per-step base (in-memory names)
            blocks = [(f"{m['layer']}.{m['proj']}_projs.{i}.weight", 0, i) for i in range(mult)]
        else:
            raise WeightsError(f"{where}: {a} adapts {module}, which the base holds no weight for")
        for target, start, block in blocks:
            self._check(target, keys, (rows, sa[1]), start, where, a)
            self.deltas.setdefault(target, []).append(_Delta(start, rows, a, b, block))

    def _check(self, target: str, keys: set[str], shape: tuple[int, int], start: int, where: str, a: str) -> None:
        if target not in keys:
            raise WeightsError(f"{where}: {a} adapts {target}, which the base does not hold")
        ts = tuple(self.base.shape(target))
        if len(ts) != 2 or ts[1] != shape[1] or start + shape[0] > ts[0]:
            raise WeightsError(
                f"{where}: {a} gives a [{shape[0]}, {shape[1]}] update at row {start} of {target} {list(ts)}"
            )

    # ---- the read interface of SafetensorsFile / ArraySource ----
    def keys(self) -> list[str]:
        return self.base.keys()

    def __contains__(self, key: str) -> bool:
        return key in self.base

    def shape(self, key: str) -> tuple[int, ...]:
        return self.base.shape(key)

    def __getattr__(self, name: str):  # dtype(), nbytes(), tensors, metadata: the base's
        return getattr(self.base, name)

    def load(self, key: str) -> mx.array:
        if key in self.replaced:
            w = self.adapters.load(key)
            return w.astype(self._dtype(self.base.load(key))) if w.dtype in _FLOATS else w
        w = self.base.load(key)
        deltas = self.deltas.get(key)
        if not deltas:
            return w
        dt = self._dtype(w)
        w = w.astype(dt)
        parts, at = [], 0
        for d in sorted(deltas, key=lambda d: d.start):
            delta = _product(self.adapters.load(d.a), self.adapters.load(d.b), dt, d.block)
            end = d.start + delta.shape[0]
            parts += [w[at : d.start], w[d.start : end] + delta * mx.array(self.scaling, dt)]
            at = end
        parts.append(w[at:])
        return mx.concatenate([p for p in parts if p.shape[0]], axis=0)

    def _dtype(self, w: mx.array) -> mx.Dtype:
        return self.dtype_out if self.dtype_out is not None and w.dtype in _FLOATS else w.dtype


_FLOATS = (mx.float32, mx.float16, mx.bfloat16)


def _product(a: mx.array, b: mx.array, dt: mx.Dtype, block: int) -> mx.array:
    """B @ A in the model dtype, as `lora_B.weight @ lora_A.weight` is in the reference
    (operands cast to it, float32 accumulation, one rounding); block i of stacked adapters."""
    if block >= 0:
        r = b.shape[1]
        mult = a.shape[0] // r
        a = a[block * r : (block + 1) * r]
        n = b.shape[0] // mult
        b = b[block * n : (block + 1) * n]
    a, b = a.astype(dt), b.astype(dt)
    return (b.astype(mx.float32) @ a.astype(mx.float32)).astype(dt)


def with_lora(f, adapters: str | os.PathLike | None, cfg: LmConfig, dtype: mx.Dtype | None = None):
    """`f` itself, or the fused view of `f` and the adapters file (see `LoraSource`).
    A config with `lora: true` needs the adapters, and adapters need such a config (its
    scaling), as in the reference."""
    if adapters is None:
        if cfg.lora:
            raise WeightsError(
                f"{cfg.source or 'the config'} says lora: true but no LoRA adapters file was given "
                f"(pass lora=PATH, e.g. the fine-tune's {cfg.lora_name or LORA_NAME})"
            )
        return f
    if not cfg.lora:
        beside = Path(adapters).parent / CONFIG_NAME
        hint = f", e.g. --lm-config {beside}" if beside.is_file() else ""
        raise WeightsError(
            f"LoRA adapters {Path(adapters).name} given but the config has no lora: true "
            f"(use the config.json saved with them: it holds lora_scaling{hint})"
        )
    from .safetensors_io import SafetensorsFile

    return LoraSource(f, SafetensorsFile(adapters), cfg.lora_scaling, cfg.lora_rank, dtype)
