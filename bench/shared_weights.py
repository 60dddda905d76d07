"""Memory of depformer tensors that several steps share (weights-per-step schedule, norms).

Builds a TTS-shaped model (the real `tts-1.6b-en_fr` widths and 32-step schedule, fewer
layers) with seeded random weights, writes it as a bf16 PyTorch-layout file, an MLX-layout
bf16 file and an MLX q8 folder, and for each load path and conversion step reports MLX's
active memory and the parameter bytes counted three ways: per name (what per-slice copies
would take), per distinct array object, and the ideal (each distinct tensor once, from the
config: `weights.lm_keys.shared_names`). Finally the same arithmetic for the full-size
config, from shapes alone (nothing is allocated).

    python bench/shared_weights.py                          # 1 temporal + 1 depformer layer, ~3 GB
    python bench/shared_weights.py --layers 2 --dep-layers 2
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from moshi_mlx.models.backend import prepare_lm, upcast_extra_bytes  # noqa: E402
from moshi_mlx.models.config import LmConfig, preset  # noqa: E402
from moshi_mlx.models.lm import Lm  # noqa: E402
from moshi_mlx.weights.convert import SourceInfo, convert  # noqa: E402
from moshi_mlx.weights.lm_keys import shared_names  # noqa: E402
from moshi_mlx.weights.lm_loader import load_lm, save_lm  # noqa: E402
from moshi_mlx.weights.random_checkpoint import write_random_checkpoint  # noqa: E402
from moshi_mlx.weights.quantize import quantize_model  # noqa: E402
from moshi_mlx.weights.recipes import make_recipe  # noqa: E402

GB = 2**30  # printed as GiB


def param_bytes(model: nn.Module) -> tuple[int, int]:
    """(bytes summed per parameter name, bytes of distinct array objects)."""
    flat = tree_flatten(model.parameters())
    per_name = sum(a.nbytes for _, a in flat)
    seen: dict[int, int] = {}
    for _, a in flat:
        seen[id(a)] = a.nbytes
    return per_name, sum(seen.values())


def ideal_bytes(cfg: LmConfig, model: nn.Module) -> int:
    """Bytes with each tensor the config says is shared held once."""
    alias = shared_names(cfg)
    modules = {n.rsplit(".", 1)[0] for n in alias}
    total = 0
    for name, a in tree_flatten(model.parameters()):
        path, leaf = name.rsplit(".", 1)
        if name in alias or (path in modules and f"{path}.weight" in alias and leaf in ("scales", "biases")):
            continue
        total += a.nbytes
    return total


def settle() -> int:
    gc.collect()
    mx.clear_cache()
    return mx.get_active_memory()


def report(label: str, cfg: LmConfig, model: nn.Module, base: int) -> None:
    per_name, distinct = param_bytes(model)
    active = settle() - base
    print(
        f"| {label} | {active / GB:.3f} | {distinct / GB:.3f} | {per_name / GB:.3f} | {ideal_bytes(cfg, model) / GB:.3f} |"
    )


def full_size_arithmetic(name: str, cfg: LmConfig) -> None:
    """Duplicate bytes of the full config, from shapes (Lm(cfg) is lazy: nothing allocated)."""
    model = Lm(cfg)
    alias = shared_names(cfg)
    shapes = dict(tree_flatten(model.parameters()))
    dup = sum(shapes[n].size for n in alias)
    dup_linear = sum(shapes[n].size for n in alias if n.endswith(".weight") and shapes[n].ndim == 2)
    total = sum(a.size for a in shapes.values())
    print(
        f"\nfull {name}: {total / 1e9:.3f} G parameters per name, "
        f"{dup / 1e9:.3f} G of them copies of a shared tensor ({len(alias)} names); "
        f"Linear weights among them: {dup_linear / 1e9:.3f} G"
    )
    for what, nbytes in (
        ("bf16", 2),
        ("fp32 (CPU upcast)", 4),
        ("q8 g64 (+bf16 scales/biases)", 1 + 4 / 64),
        ("q4 g32 (+bf16 scales/biases)", 0.5 + 4 / 32),
    ):
        print(f"  held once instead of per slice, {what}: {dup_linear * nbytes / GB:.2f} GiB saved on Linear weights")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="tts-1.6b-en_fr")
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--dep-layers", type=int, default=1)
    ap.add_argument("--dir", default=None, help="scratch folder (default: a temporary one)")
    args = ap.parse_args()
    full = preset(args.config)
    d = full.to_dict()
    d.update(num_layers=args.layers, depformer_num_layers=args.dep_layers)
    d.pop("_source", None)
    cfg = LmConfig.from_dict(d)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        tmp = Path(tmp)
        pt = write_random_checkpoint(cfg, tmp / "pt", seed=0, dtype="bfloat16")
        base = settle()
        print(
            f"{args.config} with {args.layers} temporal / {args.dep_layers} depformer layer(s), schedule "
            f"{cfg.depformer_weights_per_step_schedule}; GiB, MLX active memory after gc:\n"
        )
        print("| state | active | distinct arrays | per name | ideal |")
        print("|---|---|---|---|---|")
        lm = load_lm(pt, cfg)
        report("PyTorch-layout bf16 file, loaded", cfg, lm, base)
        extra = upcast_extra_bytes(lm)
        fmt = prepare_lm(lm, profile="cpu", upcast=True, upcast_budget=2**50, parallel=True)
        report(
            f"+ prepare_lm cpu, upcast (counted +{sum(extra.values()) / GB:.3f}, did +{fmt.upcast_bytes / GB:.3f})",
            cfg,
            lm,
            base,
        )
        del lm
        lm = load_lm(pt, cfg)
        prepare_lm(lm, profile="cpu", upcast=False, parallel=True)
        report("PyTorch-layout bf16 file, loaded, prepare_lm cpu without upcast", cfg, lm, base)
        del lm
        lm = load_lm(pt, cfg, dtype=mx.float32)
        report("PyTorch-layout bf16 file, loaded as float32", cfg, lm, base)
        del lm
        lm = load_lm(pt, cfg)
        quantize_model(lm, 8, 64)
        report("PyTorch-layout bf16 file, loaded, quantize_model q8", cfg, lm, base)
        fmt = prepare_lm(lm, profile="cpu", parallel=True)
        report("+ prepare_lm cpu", cfg, lm, base)
        del lm
        lm = load_lm(pt, cfg)
        save_lm(lm, tmp / "mlx.safetensors")
        del lm
        settle()
        lm = load_lm(tmp / "mlx.safetensors", cfg)
        report("MLX-layout bf16 file (save_lm), loaded", cfg, lm, base)
        del lm
        convert(SourceInfo(pt, cfg, "bench"), tmp / "q8", recipe=make_recipe("uniform", 8), copy_assets=False)
        lm = load_lm(tmp / "q8")
        report("MLX q8 folder (convert), loaded", cfg, lm, base)
        del lm
        print(
            f"\nfile sizes: PyTorch bf16 {pt.stat().st_size / GB:.3f}, MLX bf16 "
            f"{(tmp / 'mlx.safetensors').stat().st_size / GB:.3f} GiB (per-slice keys, as published)"
        )
    full_size_arithmetic(args.config, full)


if __name__ == "__main__":
    main()
