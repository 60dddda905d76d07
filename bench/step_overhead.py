"""Per-step overhead without a GPU: primitives per frame step and the host time of a step,
ours vs upstream moshi_mlx 0.3.0, on a narrow model (width 128 by default) with Moshi 7B's structure.

    .venv/bin/python -m bench.step_overhead [--formats bf16,q8,q4] [--steps 30]
        [--width 128] [--profiles gpu,auto] [--upstream-path DIR | --no-upstream]

At width 128 or 64 (32 temporal layers, 8 depformer steps x 6 layers, 32k text head, 2048-card
audio) the arithmetic of a step is negligible, so its time is what every step pays on any
device before the weights matter: building the graph in Python, dispatching each
primitive, synchronising. The step's primitives are counted at every synchronisation
(bench/graph_count.py), so the same instrument serves any code. On a CPU `mx.fast` ops
count as several primitives, on a GPU as one: the device that counted is in the results.

Ours runs in each `--profiles` entry: `auto` is the format `prepare_lm` picks for this
device, `gpu` the accelerator format forced here (what runs on Metal / CUDA, measured for
its host cost). Upstream runs its own recipe (bf16 activations) on the same MLX: its
package is imported from `--upstream-path` (default .bench-venvs/upstream-pkg, installed
with `pip install --no-deps --target` on first use), never from our checkout; on the GPU
kit's machine pass `--upstream-path /tmp/upstream`. Every case runs in its own process.
Writes JSON and markdown (bench/results/step_overhead.{json,md}).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import stats  # noqa: E402
from bench.lm_bench import _run_child  # noqa: E402
from bench.lm_weights import (
    DEFAULT_CACHE,
    FORMATS,
    NARROW_HEAD_DIM,
    Case,
    narrow_shape,
    prepare,
    quant_params,  # noqa: E402
    shaped_config,
    upstream_config_dict,
)
from moshi_mlx.cli.runner import OneLineParser  # noqa: E402
from moshi_mlx.validation import int_arg  # noqa: E402

DEFAULT_WIDTH = 128
DEFAULT_UPSTREAM_PATH = ROOT / ".bench-venvs" / "upstream-pkg"
UPSTREAM_PACKAGE = "moshi-mlx==0.3.0"


def ensure_upstream_path(path: Path, create: bool = True) -> Path:
    """A folder holding upstream's `moshi_mlx` package (no dependencies: it runs on our MLX)."""
    if (path / "moshi_mlx" / "__init__.py").exists():
        return path
    if not create:
        raise FileNotFoundError(f"no upstream moshi_mlx under {path}")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(path), UPSTREAM_PACKAGE], check=True
    )
    return path


def config_folder(shape: str, layers: int, cache_dir: Path) -> Path:
    """A folder holding only bench_config.json, for models built in memory."""
    folder = Path(cache_dir) / f"{shape}-L{layers}-config"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bench_config.json").write_text(json.dumps(upstream_config_dict(shaped_config(shape, layers)), indent=1))
    return folder


def width_problem(width: int, formats) -> str | None:
    """Why the narrow model (`narrow_shape`: width // NARROW_HEAD_DIM heads) cannot be built at `width` in
    `formats`, in one line, or None. Checked before any case runs: a width of 0, -64 or 50 was
    a traceback from the config check in each case's process."""
    h = NARROW_HEAD_DIM
    if width < h or width % h:
        return f"--width must be a multiple of {h} (the narrow model's heads are {h} wide), at least {h}, got {width}"
    if width % 128 and any(f != "bf16" for f in formats):
        return (
            f"--width {width}: quantized formats need a width that is a multiple of 128 "
            f"(Moshi's MLP is 11/4 x width wide, MLX's smallest group is 32); use --formats bf16"
        )
    return None


def run_case(
    impl: str,
    folder: Path,
    steps: int,
    warmup: int,
    profile: str = "auto",
    upstream_path: Path | None = None,
    timeout: float = 1800,
    extra: list[str] = (),
) -> dict:
    if impl == "ours":
        argv = [
            sys.executable,
            "-m",
            "bench.overhead_ours",
            str(folder),
            "--steps",
            str(steps),
            "--warmup",
            str(warmup),
            "--profile",
            profile,
            *extra,
        ]
        return _run_child(argv, ROOT, dict(os.environ, PYTHONPATH=str(ROOT)), timeout)
    argv = [
        sys.executable,
        str(ROOT / "bench" / "overhead_upstream.py"),
        str(folder),
        "--steps",
        str(steps),
        "--warmup",
        str(warmup),
        *extra,
    ]
    env = dict(os.environ, PYTHONPATH=str(Path(upstream_path).resolve()))  # upstream's package, never ours
    return _run_child(argv, Path("/tmp"), env, timeout)


def summarize(raw: dict, fmt: str, label: str) -> dict:
    if "error" in raw:
        return {"case": label, "fmt": fmt, "error": raw["error"]}
    row = {k: v for k, v in raw.items() if not k.endswith("_raw")}
    row.update(
        {
            "case": label,
            "fmt": fmt,
            "step_ms": stats.summary(raw["step_ms_raw"]),
            "step_cpu_ms": stats.summary(raw.get("step_cpu_ms_raw", [])),
            "build_ms": stats.summary(raw["build_ms_raw"]),
            "sync_ms": stats.summary(raw["sync_ms_raw"]),
        }
    )
    return row


def run(
    formats=("bf16", "q8", "q4"),
    profiles=("gpu", "auto"),
    steps: int = 30,
    warmup: int = 5,
    upstream_path: Path | None = None,
    cache_dir: Path = DEFAULT_CACHE,
    width: int = DEFAULT_WIDTH,
    log=print,
    shape: str | None = None,
    layers: int = 32,
    in_memory: bool = False,
    full_context: tuple[str, ...] = (),
    unfused: tuple[str, ...] = (),
) -> dict:
    """Every (format, implementation) case. `shape` (default the narrow one of `width`) and
    `layers` choose the model; `in_memory` builds it with random init in each process
    instead of writing and converting a checkpoint (the GPU suite's full-size runs).
    full_context: formats also measured as ours in the GPU format with the context already
    full (a long conversation's steady state: attention over every slot, without a mask).
    unfused: formats also measured as ours in the GPU format with the residual adds as their
    own kernels (`StepLinear.fuse_residual` off), to see what folding them into the matmuls
    gains on this device."""
    problem = None if shape else width_problem(width, formats)
    if problem:
        raise SystemExit(problem)
    shape = shape or narrow_shape(width)
    rows = []
    for fmt in formats:
        ours_extra: list[str] = []
        up_extra: list[str] = []
        if in_memory:
            folder = config_folder(shape, layers, cache_dir)
            q = quant_params(shape, fmt)
            ours_extra = ["--random", f"{shape}:{layers}:{fmt}"]
            up_extra = ["--random", "bf16" if q is None else f"{q[0]}:{q[1]}"]
        else:
            folder = prepare(Case(shape, layers, fmt), cache_dir, log=log)
        cases = [("ours", p, f"ours ({p})") for p in profiles]
        if fmt in full_context:
            cases.append(("ours-full", "gpu", "ours (gpu, context full)"))
        if fmt in unfused:
            cases.append(("ours-unfused", "gpu", "ours (gpu, unfused residuals)"))
        if upstream_path is not None:
            cases.append(("upstream", "", "upstream"))
        for impl, profile, label in cases:
            log(f"[overhead] {fmt} {label} ...")
            variant = {"ours-full": ["--start-full"], "ours-unfused": ["--unfused-residuals"]}.get(impl, [])
            raw = run_case(
                "ours" if impl.startswith("ours") else impl,
                folder,
                steps,
                warmup,
                profile,
                upstream_path,
                extra=(ours_extra + variant) if impl != "upstream" else up_extra,
            )
            row = summarize(raw, fmt, label)
            rows.append(row)
            if "error" in row:
                log(f"[overhead]   failed: {row['error']}")
            else:
                log(
                    f"[overhead]   {row['primitives']} primitives, {row['syncs']} syncs, step "
                    f"{row['step_ms']['median']:.1f} ms, CPU {row['step_cpu_ms']['median']:.1f} ms (build {row['build_ms']['median']:.1f}) on {row['device']}"
                )
    return {
        "what": "one LM frame step of a width-64 model with Moshi 7B's structure: primitives run and host ms",
        "shape": shape,
        "width": shaped_config(shape, layers).dim,
        "layers": layers,
        "in_memory": in_memory,
        "steps": steps,
        "warmup": warmup,
        "results": rows,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "loadavg": list(os.getloadavg()),
    }


def format_table(report: dict) -> str:
    rows = [r for r in report["results"] if "error" not in r]
    out = [
        f"{report['shape']}: Moshi 7B's structure at width {report['width']}, {report['layers']} temporal layers; "
        f"{report['steps']} steps after {report['warmup']}",
        "",
        "| format | implementation | device that counted | primitives / step (computing) | syncs / step "
        "| step ms (median) | p90 | CPU ms / step | graph building ms | in syncs ms | vs upstream (CPU ms) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    up = {r["fmt"]: r for r in rows if r["case"] == "upstream"}
    for r in rows:
        u = up.get(r["fmt"])
        rel = "" if u is None or r is u else f"{r['step_cpu_ms']['median'] / u['step_cpu_ms']['median']:.2f}x"
        out.append(
            f"| {r['fmt']} | {r['case']} | {r['device']} | {r['primitives']} ({r.get('compute_primitives', '?')}) "
            f"| {r['syncs']} | "
            f"{r['step_ms']['median']:.1f} | {r['step_ms']['p90']:.1f} | {r['step_cpu_ms']['median']:.1f} | "
            f"{r['build_ms']['median']:.1f} | "
            f"{r['sync_ms']['median']:.1f} | {rel} |"
        )
    for r in report["results"]:
        if "error" in r:
            out.append(f"\n{r['fmt']}/{r['case']}: failed: {r['error']}")
    out.append("")
    out.append(
        "Computing primitives: all but views (Transpose, Reshape, Slice, ...), which launch no kernel "
        "on a GPU. CPU ms: the process's CPU time per step (all threads), steadier than wall time on a "
        "shared machine."
    )
    top = [r for r in rows if r["fmt"] == rows[0]["fmt"]] if rows else []
    if top:
        out.append("")
        out.append(f"Primitives by type ({top[0]['fmt']}), the ten most frequent:")
        for r in top:
            kinds = ", ".join(f"{k} {v}" for k, v in list(r["primitives_by_type"].items())[:10])
            out.append(f"- {r['case']}: {kinds}")
    return "\n".join(out)


def parser() -> argparse.ArgumentParser:
    # the tools' parser: a bad value is one line, 'error: --steps must be >= 1, got 0 (see --help)'
    ap = OneLineParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    ap.add_argument(
        "--formats",
        default="bf16,q8,q4",
        help=f"weight formats to measure, comma-separated, of {', '.join(FORMATS)} (default %(default)s)",
    )
    ap.add_argument(
        "--width",
        type=int_arg("--width", lo=NARROW_HEAD_DIM),
        default=DEFAULT_WIDTH,
        help=f"model width, a multiple of {NARROW_HEAD_DIM} (default %(default)s, the narrowest whose MLP quantizes; 64 for bf16 only)",
    )
    ap.add_argument("--profiles", default="gpu,auto", help="ours' formats: gpu, auto (this device's), cpu")
    ap.add_argument(
        "--steps",
        type=int_arg("--steps", lo=1),
        default=30,
        help="frame steps timed per case, at least 1 (default %(default)s)",
    )
    ap.add_argument(
        "--warmup",
        type=int_arg("--warmup", lo=0),
        default=5,
        help="steps run before timing, not counted; 0: none, the first timed step compiles (default %(default)s)",
    )
    ap.add_argument(
        "--upstream-path",
        type=Path,
        default=DEFAULT_UPSTREAM_PATH,
        help=f"folder holding upstream's moshi_mlx package, installed there ({UPSTREAM_PACKAGE}, no "
        "dependencies) on first use (default .bench-venvs/upstream-pkg)",
    )
    ap.add_argument("--no-upstream", action="store_true", help="measure ours only (no upstream rows)")
    ap.add_argument("--unfused", default="", help="formats also measured with unfused residual adds (e.g. bf16)")
    ap.add_argument(
        "--cache-dir",
        type=Path,
        default=DEFAULT_CACHE,
        help="where the narrow models' configs and weights are kept between runs (default $MOSHI_BENCH_CACHE "
        "or /tmp/moshi-bench-weights)",
    )
    ap.add_argument(
        "--out",
        type=Path,
        default=ROOT / "bench" / "results" / "step_overhead.json",
        help="the results' JSON; the markdown table is written beside it as .md "
        "(default bench/results/step_overhead.json)",
    )
    return ap


def main(argv=None):
    ap = parser()
    a = ap.parse_args(argv)
    fmts = [f.strip() for f in a.formats.split(",")]
    bad = [f for f in fmts if f not in FORMATS]
    if bad:
        ap.error(f"unknown format(s) {', '.join(bad)}; known: {', '.join(FORMATS)}")
    if width_problem(a.width, fmts):
        ap.error(width_problem(a.width, fmts))
    up = None
    if not a.no_upstream:
        try:
            up = ensure_upstream_path(a.upstream_path)
        except Exception as e:  # noqa: BLE001 - report and go on without upstream
            print(f"upstream moshi_mlx unavailable: {e}", file=sys.stderr)
    report = run(
        fmts,
        [p.strip() for p in a.profiles.split(",")],
        a.steps,
        a.warmup,
        up,
        a.cache_dir,
        a.width,
        unfused=tuple(f.strip() for f in a.unfused.split(",") if f.strip()),
    )
    report["command"] = " ".join(["python -m bench.step_overhead"] + (argv if argv is not None else sys.argv[1:]))
    text = format_table(report)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=1) + "\n")
    a.out.with_suffix(".md").write_text(
        f"# Per-step overhead ({report['started']})\n\ncommand: {report['command']}\n\n" + text + "\n"
    )
    print(text)
    print(f"\nwrote {a.out} and {a.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
