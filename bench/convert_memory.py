"""Peak memory of `python -m moshi_mlx.convert` on 7B-shaped checkpoints, extrapolated to
the full 32-layer Moshi 7B.

Writes seeded random bf16 checkpoints in the released PyTorch layout with Moshi 7B's real
widths (dim 4096, 32k text vocabulary, 17 audio embeddings, the full 6-layer depformer of
8 steps) and L temporal layers, converts each with every recipe in a child process, and
reads the child's peak RSS from the kernel (VmHWM). Streaming makes the peak a constant
(interpreter + MLX + about one source tensor and its output), not a fraction of the file:
the fit `peak = a + b * L` shows b ~ 0, so the 32-layer figure is `a + 32 b`.

    python bench/convert_memory.py                       # layers 1,2,4; ~5 GB of scratch disk
    python bench/convert_memory.py --layers 2 --recipes q4 --keep
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from moshi_mlx.models.config import LmConfig, preset  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from proc_memory import peak_rss_mb  # noqa: E402
from moshi_mlx.weights.lm_keys import pytorch_layout  # noqa: E402
from moshi_mlx.weights.random_checkpoint import write_random_checkpoint  # noqa: E402

RECIPES = {
    "q8": ["-q", "--q-bits", "8"],
    "q4": ["-q", "--q-bits", "4"],
    "mixed-4-8": ["--quant-predicate", "mixed-4-8"],
    "bf16": [],  # PyTorch layout -> MLX layout, no quantization
}


def shaped_7b(layers: int) -> LmConfig:
    d = preset("moshiko").to_dict()
    d["num_layers"] = layers
    d["_source"] = f"Moshi 7B widths, {layers} temporal layer(s) (bench/convert_memory.py)"
    return LmConfig.from_dict(d)


def layout_bytes(cfg: LmConfig, itemsize: int = 2) -> tuple[int, tuple[str, int]]:
    """(total bytes, (largest tensor, its bytes)) of the PyTorch-layout checkpoint."""
    sizes = {k: int(np.prod(s)) * itemsize for k, s in pytorch_layout(cfg).items()}
    big = max(sizes, key=sizes.get)
    return sum(sizes.values()), (big, sizes[big])


def child(argv: list[str]) -> None:
    """Run one conversion (or just the imports) and report the peak RSS on the last line."""
    code = 0
    if argv:
        from moshi_mlx.cli.convert import run

        code = run(argv)
    else:
        import moshi_mlx.weights.convert  # noqa: F401
    print(f"PEAK_RSS {int(peak_rss_mb() * 2**20)}", file=sys.stderr)
    raise SystemExit(code)


def run_child(argv: list[str]) -> tuple[int, float, int]:
    """(exit code, seconds, peak RSS bytes) of one conversion in a fresh process."""
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, __file__, "--child", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        text=True,
    )
    lines = proc.stderr.strip().splitlines()
    if proc.returncode or not lines or not lines[-1].startswith("PEAK_RSS "):
        print(proc.stderr, file=sys.stderr)
        return proc.returncode or 1, time.monotonic() - t0, 0
    return 0, time.monotonic() - t0, int(lines[-1].split()[1])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", default="1,2,4", help="temporal layer counts to measure")
    ap.add_argument("--recipes", default="q8,q4,mixed-4-8,bf16", help=f"from {', '.join(RECIPES)}")
    ap.add_argument("--workdir", default="/tmp/moshi-convert-bench")
    ap.add_argument("--head-scale", type=float, default=8.0, help="output-head scale of the random weights")
    ap.add_argument("--keep", action="store_true", help="keep the checkpoints and outputs")
    ap.add_argument("--json", default=str(ROOT / "bench" / "results" / "convert_memory.json"))
    args = ap.parse_args()
    layers = [int(x) for x in args.layers.split(",")]
    recipes = args.recipes.split(",")
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)

    _, _, base_rss = run_child([])
    results = {"baseline_import_rss": base_rss, "runs": []}
    full_bytes, (big_name, big_bytes) = layout_bytes(shaped_7b(32))
    results["moshi7b_bf16_bytes"] = full_bytes
    results["largest_tensor"] = {"name": big_name, "bytes": big_bytes}
    print(
        f"Moshi 7B bf16 checkpoint: {full_bytes / 2**30:.2f} GiB; largest tensor {big_name} "
        f"{big_bytes / 2**20:.0f} MiB; `import moshi_mlx.weights.convert` alone: {base_rss / 2**20:.0f} MiB RSS"
    )
    for L in layers:
        cfg = shaped_7b(L)
        src_dir = work / f"L{L}" / "src"
        src = src_dir / "model.safetensors"
        expect, _ = layout_bytes(cfg)
        if not (src.is_file() and (src_dir / "config.json").is_file() and src.stat().st_size > expect):
            t0 = time.monotonic()
            write_random_checkpoint(cfg, src_dir, seed=0, head_scale=args.head_scale)
            print(f"L={L}: wrote {src} ({src.stat().st_size / 2**30:.2f} GiB) in {time.monotonic() - t0:.0f} s")
        for r in recipes:
            out = work / f"L{L}" / r
            code, secs, peak = run_child([str(src), "--out", str(out), "--force", "--quiet", *RECIPES[r]])
            if code:
                raise SystemExit(f"conversion {r} of L={L} failed (exit {code})")
            out_bytes = sum(p.stat().st_size for p in out.glob("*.safetensors"))
            row = {
                "layers": L,
                "recipe": r,
                "source_bytes": src.stat().st_size,
                "out_bytes": out_bytes,
                "seconds": secs,
                "peak_rss": peak,
            }
            results["runs"].append(row)
            print(
                f"L={L} {r:>9}: source {row['source_bytes'] / 2**30:5.2f} GiB -> {out_bytes / 2**30:5.2f} GiB, "
                f"peak RSS {peak / 2**20:6.0f} MiB, {secs:5.1f} s"
            )
            if not args.keep and r != "bf16":
                shutil.rmtree(out)
    fits = {}

    def fit(r: str, key: str) -> tuple[float, float]:
        pts = [(x["layers"], x[key]) for x in results["runs"] if x["recipe"] == r]
        if len(pts) < 2:
            return float(pts[0][1]), 0.0
        b, a = np.polyfit([p[0] for p in pts], [p[1] for p in pts], 1)
        return float(a), float(b)

    for r in recipes:
        a, b = fit(r, "peak_rss")
        oa, ob = fit(r, "out_bytes")
        fits[r] = {"intercept": a, "per_layer": b, "at_32_layers": a + 32 * b, "out_bytes_at_32_layers": oa + 32 * ob}
        print(
            f"{r:>9}: peak RSS ~ {a / 2**20:.0f} MiB {b / 2**20:+.1f} MiB/layer -> 32 layers (Moshi 7B, "
            f"{full_bytes / 2**30:.2f} GiB bf16): peak {(a + 32 * b) / 2**30:.2f} GiB, "
            f"output {(oa + 32 * ob) / 2**30:.2f} GiB"
        )
    results["fit"] = fits
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    print(f"saved {args.json}")
    if not args.keep:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
