"""LM frame step, ours vs upstream moshi_mlx, on the same weights, each case in its own
process (bench/lm_ours.py, bench/upstream_lm.py), with the floor and the per-layer
extrapolation to the real depth.

    .venv/bin/python -m bench.lm_bench [--shapes 7b:1] [--formats bf16,q8] [--steps 50]

Implementations ("impls"):
- ours: `load_lm` + `prepare_lm` (the compute format chosen for the backend);
- upstream-fp32: upstream with float32 activations (what its CPU users should do);
- upstream: upstream as shipped (bf16 activations). For quantized formats MLX's CPU
  kernel is ~9x slower then, so this one runs `slow_steps` steps (10 by default).
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
from bench.lm_weights import DEFAULT_CACHE, FORMATS, SHAPES, Case, prepare, shaped_config  # noqa: E402

IMPLS = ("ours", "upstream-fp32", "upstream")
DEFAULT_SHAPES = (("7b", 1), ("1b", 1), ("2b", 1))


def _run_child(argv: list[str], cwd: Path, env: dict | None, timeout: float) -> dict:
    t0 = time.monotonic()
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    wall = time.monotonic() - t0
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            res = json.loads(line[len("RESULT ") :])
            res["wall_s"] = wall
            return res
    tail = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
    return {"error": tail}


def run_case(
    case: Case,
    impl: str,
    folder: Path,
    steps: int,
    warmup: int,
    layer_steps: int,
    upstream_python: Path | None,
    timeout: float = 3600,
) -> dict:
    timing = ["--steps", str(steps), "--warmup", str(warmup), "--layer-steps", str(layer_steps)]  # both children's
    if impl == "ours":
        argv = [sys.executable, "-m", "bench.lm_ours", str(folder), *timing, "--full-layers", str(case.full_layers)]
        return _run_child(argv, ROOT, None, timeout)
    if upstream_python is None:
        return {"error": "upstream venv not available"}
    variant = "fp32" if impl == "upstream-fp32" else "recipe"
    argv = [str(upstream_python), str(ROOT / "bench" / "upstream_lm.py"), str(folder), "--variant", variant, *timing]
    env = dict(os.environ, PYTHONPATH="")  # never pick up our package
    return _run_child(argv, Path("/tmp"), env, timeout)


def kv_bytes_per_layer(case: Case, impl: str, act_bytes: int) -> int:
    """KV cache of one temporal layer at full context (ours: a ring of `context` slots;
    upstream: its rotating cache grows up to 4096 positions)."""
    cfg = shaped_config(case.shape, case.layers)
    positions = cfg.context if impl == "ours" else 4096
    return 2 * positions * cfg.dim * act_bytes


def summarize(raw: dict, case: Case, impl: str, bandwidth: dict) -> dict:
    """Raw child result -> the report row (summaries, floor, extrapolation)."""
    if "error" in raw:
        return {"impl": impl, "shape": case.shape, "layers": case.layers, "fmt": case.fmt, "error": raw["error"]}
    act = raw["activation_dtype"]
    by_kind: dict[str, int] = {}
    for part in ("temporal", "depformer"):
        for k, n in raw["bytes"][part].items():
            by_kind[k] = by_kind.get(k, 0) + n
    layer_bytes = raw["bytes"]["layer"]
    bw = bandwidth.get(raw["mlx"], {})
    one, two = bw.get("one_stream", {}), bw.get("two_streams", {})
    try:
        floor = stats.floor_ms(by_kind, one, act)
        floor_layer = stats.floor_ms(layer_bytes, one, act)
        both = {**one, **two}
        floor2 = stats.floor_ms(by_kind, both, act)
        floor2_layer = stats.floor_ms(layer_bytes, both, act)
    except KeyError as e:
        floor = floor_layer = floor2 = floor2_layer = float("nan")
        raw.setdefault("notes", []).append(str(e))
    step, temporal, dep = (stats.summary(raw[k]) for k in ("step_ms_raw", "temporal_ms_raw", "depformer_ms_raw"))
    layer = stats.summary(raw["layer_ms_raw"])
    full = case.full_layers
    act_bytes = 4 if act == "float32" else 2
    ext_step = stats.extrapolate(step["median"], case.layers, layer["median"], full)
    ext_floor = stats.extrapolate(floor, case.layers, floor_layer, full)
    ext_floor2 = stats.extrapolate(floor2, case.layers, floor2_layer, full)
    per_layer_mem = (stats_total(layer_bytes) + kv_bytes_per_layer(case, impl, act_bytes)) / 2**20
    return {
        "impl": impl,
        "variant": raw["variant"],
        "shape": case.shape,
        "layers": case.layers,
        "full_layers": full,
        "fmt": case.fmt,
        "activation_dtype": act,
        "mlx": raw["mlx"],
        "steps": raw["steps"],
        "parallel_linears": raw.get("parallel_linears", 0),
        "step_ms": step,
        "temporal_ms": temporal,
        "depformer_ms": dep,
        "layer_ms": layer,
        "bytes_by_kind": by_kind,
        "bytes_temporal": raw["bytes"]["temporal"],
        "bytes_depformer": raw["bytes"]["depformer"],
        "layer_bytes": layer_bytes,
        "peak_rss_mb": raw["peak_rss_mb"],
        "rss_steps_mb": raw["rss_steps_mb"],
        "load_s": raw["load_s"],
        "floor_ms": floor,
        "floor_ratio": stats.ratio(step["median"], floor),
        "floor_ms_two_streams": floor2,
        "floor_ratio_two_streams": stats.ratio(step["median"], floor2),
        "extrapolated": {
            "layers": full,
            "formula": f"t({full}) = t({case.layers}) + ({full} - {case.layers}) x t_layer",
            "step_ms": ext_step,
            "temporal_ms": stats.extrapolate(temporal["median"], case.layers, layer["median"], full),
            "floor_ms": ext_floor,
            "floor_ratio": stats.ratio(ext_step, ext_floor),
            "floor_ms_two_streams": ext_floor2,
            "floor_ratio_two_streams": stats.ratio(ext_step, ext_floor2),
            "peak_rss_mb_est": raw["peak_rss_mb"] + (full - case.layers) * per_layer_mem,
        },
        "load": raw.get("load"),
        "wall_s": raw.get("wall_s"),
        "notes": raw.get("notes", []),
    }


def stats_total(d: dict) -> int:
    return int(sum(d.values()))


def run(
    shapes=DEFAULT_SHAPES,
    formats=tuple(FORMATS),
    impls=IMPLS,
    steps: int = 50,
    warmup: int = 5,
    layer_steps: int = 5,
    slow_steps: int = 10,
    upstream_python: Path | None = None,
    cache_dir: Path = DEFAULT_CACHE,
    bandwidth: dict | None = None,
    log=print,
) -> dict:
    """Every (shape, format, impl) case; returns {"results": [...], ...}."""
    results = []
    for shape, layers in shapes:
        for fmt in formats:
            case = Case(shape, layers, fmt)
            folder = prepare(case, cache_dir, log=log)
            for impl in impls:
                slow = impl == "upstream" and fmt != "bf16"
                if slow and slow_steps <= 0:
                    continue  # upstream's own quantized recipe: run on the first shape only
                n, w = (min(slow_steps, steps), min(2, warmup)) if slow else (steps, warmup)
                log(f"[lm] {case.key} {fmt} {impl}: {n} steps ...")
                load0 = os.getloadavg()
                raw = run_case(case, impl, folder, n, w, layer_steps if not slow else 2, upstream_python)
                raw["load"] = [load0, os.getloadavg()]
                row = summarize(raw, case, impl, bandwidth or {})
                if slow:
                    row.setdefault("notes", []).append(f"{n} steps only: ~10x slower, as measured")
                results.append(row)
                if "error" in row:
                    log(f"[lm]   failed: {row['error']}")
                else:
                    log(
                        f"[lm]   step {row['step_ms']['median']:.0f} ms (temporal {row['temporal_ms']['median']:.0f}, "
                        f"depformer {row['depformer_ms']['median']:.0f}), floor x{row['floor_ratio']:.2f}, "
                        f"peak {row['peak_rss_mb']:.0f} MB, load {raw['load'][1][0]:.2f}"
                    )
    return {
        "what": "LM frame step (ms): temporal transformer + text sampling, depformer + audio sampling",
        "steps": steps,
        "warmup": warmup,
        "slow_steps": slow_steps,
        "results": results,
    }


def _fmt(x: float, nd: int = 0) -> str:
    return "n/a" if x is None or x != x else f"{x:.{nd}f}"


def _table_rows(by_case: dict[tuple, dict[str, dict]]):
    """(case, implementation, its result, ours for the same case or None) in table order:
    cases as measured, implementations in IMPLS order."""
    for case, impls in by_case.items():
        for impl in IMPLS:
            if impl in impls:
                yield case, impl, impls[impl], impls.get("ours")


def format_tables(lm: dict) -> str:
    """Markdown tables: measured steps, ratios, and the extrapolation to full depth."""
    rows = [r for r in lm["results"] if "error" not in r]
    out = []
    by_case: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        by_case.setdefault((r["shape"], r["layers"], r["fmt"]), {})[r["impl"]] = r
    out.append(
        "| shape (layers run) | format | implementation | activations | step median | p90 | temporal | depformer "
        "| floor (1 core) | x floor | peak RSS MB | upstream / ours |"
    )
    out.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for (shape, layers, fmt), impl, r, ours in _table_rows(by_case):
        rel = "" if impl == "ours" or ours is None else f"{r['step_ms']['median'] / ours['step_ms']['median']:.2f}x"
        out.append(
            f"| {shape} ({layers}) | {fmt} | {impl} | {r['activation_dtype']} | "
            f"{_fmt(r['step_ms']['median'])} | {_fmt(r['step_ms']['p90'])} | {_fmt(r['temporal_ms']['median'])} | "
            f"{_fmt(r['depformer_ms']['median'])} | {_fmt(r['floor_ms'])} | {_fmt(r['floor_ratio'], 2)} | "
            f"{_fmt(r['peak_rss_mb'])} | {rel} |"
        )
    out.append("")
    out.append(
        "Extrapolated to the real depth: t(full) = t(L) + (full - L) x t_layer, t_layer = median time of one "
        "temporal layer (measured alone); the floor likewise."
    )
    out.append("")
    out.append(
        "| shape | format | implementation | t_layer | step at full depth | floor (1 core) | x floor | floor (2 cores) "
        "| est. RSS GB | upstream / ours |"
    )
    out.append("|---|---|---|---|---|---|---|---|---|---|")
    for (shape, _, fmt), impl, r, ours in _table_rows(by_case):
        e = r["extrapolated"]
        rel = "" if impl == "ours" or ours is None else f"{e['step_ms'] / ours['extrapolated']['step_ms']:.2f}x"
        out.append(
            f"| {shape} ({e['layers']} layers) | {fmt} | {impl} | {_fmt(r['layer_ms']['median'], 1)} | "
            f"{_fmt(e['step_ms'])} | {_fmt(e['floor_ms'])} | {_fmt(e['floor_ratio'], 2)} | "
            f"{_fmt(e['floor_ms_two_streams'])} | {_fmt(e['peak_rss_mb_est'] / 1024, 1)} | {rel} |"
        )
    errors = [r for r in lm["results"] if "error" in r]
    for r in errors:
        out.append(f"\n{r['shape']}/{r['fmt']}/{r['impl']}: failed: {r['error']}")
    return "\n".join(out)


def parse_shapes(text: str) -> list[tuple[str, int]]:
    out = []
    for item in text.split(","):
        name, _, layers = item.strip().partition(":")
        if name not in SHAPES:
            raise SystemExit(f"unknown shape {name!r}; known: {', '.join(SHAPES)}")
        out.append((name, int(layers or 1)))
    return out


def main(argv=None):
    from bench.floor_run import measure_floors
    from bench.upstream_env import add_upstream_args, upstream_python_from_args

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", default="7b:1", help="shape:layers,... (shapes: 7b, 2b, 1b, 3b-zero)")
    ap.add_argument("--formats", default=",".join(FORMATS))
    ap.add_argument("--impls", default=",".join(IMPLS))
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--layer-steps", type=int, default=5)
    ap.add_argument("--slow-steps", type=int, default=10)
    ap.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--json", type=Path)
    add_upstream_args(ap)
    a = ap.parse_args(argv)
    up = upstream_python_from_args(a)
    bw = measure_floors(up)
    impls = [x for x in a.impls.split(",") if up is not None or not x.startswith("upstream")]
    res = run(
        parse_shapes(a.shapes),
        a.formats.split(","),
        impls,
        a.steps,
        a.warmup,
        a.layer_steps,
        a.slow_steps,
        up,
        a.cache_dir,
        bw,
    )
    print(format_tables(res))
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"lm": res, "bandwidth": bw}, indent=1) + "\n")


if __name__ == "__main__":
    main()
