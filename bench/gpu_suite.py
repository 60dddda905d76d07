"""The suite's GPU mode: `python -m bench.suite --device gpu` (Metal or CUDA, unchanged).

Full depth, no extrapolation, every format, every implementation on the same MLX and device:
- lm: the Moshi-7B-shape frame step (32 layers, the real depformer) in bf16, q8 (groups of
  64) and q4 (groups of 32), ours (the format `prepare_lm` picks for the device: on a GPU the
  compiled frame step) vs upstream moshi_mlx 0.3.0 (its own recipe), each built in memory
  with random init in a process of its own (no checkpoint to write: minutes saved on a
  borrowed machine), reference sampling; median / p90 ms per step, host time spent building
  graphs, primitives per step, peak device memory (bench/step_overhead.py);
- torch: Kyutai's PyTorch moshi 0.2.13 (CUDA graphs, its defaults) when `torch` with CUDA
  imports, through the GPU kit's `torch_peer.py`, in its own process;
- mimi: the Mimi streaming step (encode + decode of one 80 ms frame), ours vs upstream
  (bench/mimi_bench.py);
- loop: the live pipeline's per-frame latency with the MLX codec on the GPU, driven at
  real-time pace by the simulated sound card, with the 7B-shape LM (bench/loop_bench.py).

`--smoke` runs every part at toy sizes (a width-128 model, a few steps) and accepts a CPU,
so the path can be exercised where there is no GPU (tests/test_gpu_suite.py does).
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_UPSTREAM_PATH = ROOT / ".bench-venvs" / "upstream-pkg"
DEFAULT_TORCH_PEER = ROOT / ".gpu" / "bin" / "torch_peer.py"
GPU_PARTS = ("lm", "torch", "mimi", "loop")
FORMATS = ("bf16", "q8", "q4")


def device_info() -> dict:
    """The default device and what MLX says about it (name, memory, architecture)."""
    import mlx.core as mx

    sys.path.insert(0, str(ROOT / "bench"))
    import graph_count  # noqa: PLC0415

    info: dict = {}
    try:
        info = {k: (v if isinstance(v, (int, float, str)) else str(v)) for k, v in dict(mx.device_info()).items()}
    except Exception:  # noqa: BLE001 - older MLX
        pass
    backend = "cpu"
    if mx.default_device().type == mx.DeviceType.gpu:
        backend = "metal" if getattr(mx, "metal", None) is not None and mx.metal.is_available() else "cuda"
    return {
        "device": graph_count.device_name(),
        "backend": backend,
        "mlx": mx.__version__,
        "info": info,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def torch_cuda_available(python: str = sys.executable) -> bool:
    """Whether `torch` imports with CUDA in a fresh process (never imported here)."""
    try:
        out = subprocess.run(
            [python, "-c", "import torch; print(torch.cuda.is_available())"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and out.stdout.strip().endswith("True")


def run_torch_peer(
    peer: Path, torch_path: Path | None, layers: int, steps: int, warmup: int, small: bool, timeout: float = 1800
) -> dict:
    """The PyTorch peer's RESULT lines ({"lm": ..., "mimi": ...}), or {"skipped"/"error": why}."""
    if not peer.exists():
        return {"skipped": f"no PyTorch peer script at {peer} (the GPU kit's .gpu/bin/torch_peer.py)"}
    if not small and not torch_cuda_available():
        return {"skipped": "torch with CUDA is not importable here"}
    env = dict(os.environ)
    if torch_path is not None:
        env["PYTHONPATH"] = str(Path(torch_path).resolve())
    argv = [sys.executable, str(peer), "--layers", str(layers), "--steps", str(steps), "--warmup", str(warmup)]
    if small:
        argv.append("--small")
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout, cwd="/tmp")
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    out: dict = {}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            r = json.loads(line[len("RESULT ") :])
            out[r["case"]] = r
    if not out:
        tail = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        return {"error": tail}
    return out


def run_gpu_suite(a, log=print) -> dict:
    """Every part of the GPU mode; `a` is the parsed command line of bench.suite."""
    import mlx.core as mx

    from bench import loop_bench, mimi_bench, step_overhead

    smoke = a.smoke
    dev = device_info()
    if mx.default_device().type != mx.DeviceType.gpu and not smoke:
        raise SystemExit(
            f"--device gpu: MLX's default device here is {dev['device']}; install MLX with its Metal or "
            "CUDA backend (docs/gpu.md), or pass --smoke to exercise the GPU mode on this device"
        )
    only = [p.strip() for p in a.only.split(",")] if a.only else list(GPU_PARTS)
    bad = [p for p in only if p not in GPU_PARTS]
    if bad:
        raise SystemExit(f"unknown part(s) {bad}; GPU parts: {', '.join(GPU_PARTS)}")
    shape, layers = ("7b-w128", 2) if smoke else ("7b", 32)
    steps, warmup = (3, 1) if smoke else (a.gpu_steps, a.gpu_warmup)
    formats = [f.strip() for f in (a.gpu_formats or ",".join(FORMATS)).split(",")]
    up = None
    if not a.no_upstream:
        try:
            up = step_overhead.ensure_upstream_path(a.upstream_path, create=not a.no_create_venv)
        except Exception as e:  # noqa: BLE001 - report and go on without upstream
            log(f"upstream moshi_mlx unavailable: {e}")
    report = {
        "suite_version": 2,
        "mode": "gpu",
        "smoke": smoke,
        "command": " ".join(shlex.quote(x) for x in ["python -m bench.suite"] + (a.argv or [])),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": dev,
        "parts": {},
        "upstream_path": str(up) if up else None,
    }
    t0 = time.time()

    def part(name, fn):
        t = time.time()
        res = fn()
        res["seconds"] = time.time() - t
        report["parts"][name] = res
        log(f"[suite] {name} done in {res['seconds']:.0f} s")

    if "lm" in only:
        part(
            "lm",
            lambda: step_overhead.run(
                formats,
                ["auto"],
                steps,
                warmup,
                up,
                a.cache_dir,
                shape=shape,
                layers=layers,
                in_memory=True,
                log=log,
                full_context=tuple(f for f in formats if f == "bf16"),
                unfused=tuple(f for f in formats if f == "bf16"),
            ),
        )
    if "torch" in only:
        part("torch", lambda: run_torch_peer(a.torch_peer, a.torch_path, layers, steps, warmup, small=smoke))
    if "mimi" in only:
        part(
            "mimi",
            lambda: mimi_bench.run(
                frames=3 if smoke else a.gpu_steps,
                warmup=1 if smoke else a.gpu_warmup,
                upstream=up is not None,
                upstream_path=up,
                rusty=False,
            ),
        )
    if "loop" in only:
        lm_spec = None if smoke else f"{shape}:{layers}:{a.loop_format}"
        part(
            "loop", lambda: loop_bench.run(["mlx"], seconds=2.0 if smoke else a.loop_seconds, lm_spec=lm_spec, log=log)
        )
    report["seconds"] = time.time() - t0
    report["machine"]["peak_note"] = "peak device memory: each LM case's own process (mx.get_peak_memory)"
    return report


def _ms(x) -> str:
    return "n/a" if x is None or x != x else f"{x:.1f}"


# ours once the context is full: attention over every slot, no mask (the early steps are masked)
FULL_CONTEXT = "ours, context full"
# ours with each residual add its own kernel (they ride on the matmuls otherwise: addmm)
UNFUSED = "ours, unfused residuals"


def format_gpu_report(report: dict) -> str:
    m = report["machine"]
    out = [
        f"# moshi_mlx GPU suite ({report['started']}, {report['seconds']:.0f} s)"
        + (" [smoke run]" if report["smoke"] else ""),
        f"device: {m['device']} ({m['backend']}), MLX {m['mlx']}, {m['platform']}",
        f"command: {report['command']}",
        "",
    ]
    p = report["parts"]
    lm = p.get("lm")
    torch = p.get("torch", {})
    mimi = p.get("mimi")
    if lm is not None or torch:
        out.append(
            f"## Frame step, median ms ({lm['shape'] if lm else '7b'}, {lm['layers'] if lm else 32} layers, "
            "full depth) and Mimi encode+decode of one frame"
        )
        out.append("")
        out.append("| implementation | " + " | ".join(FORMATS) + " | Mimi encode+decode, 1 frame |")
        out.append("|---|" + "---|" * (len(FORMATS) + 1))
        rows: dict[str, dict] = {}
        for r in (lm or {}).get("results", []):
            if "error" not in r:
                case = r.get("case", "")
                impl = FULL_CONTEXT if "context full" in case else UNFUSED if "unfused" in case else r["impl"]
                rows.setdefault(impl, {})[r["fmt"]] = r["step_ms"]["median"]
        tl = torch.get("lm")
        if tl:
            rows["PyTorch moshi 0.2.13"] = {"bf16": tl["step_ms"]["median"]}
        mimi_ms = {}
        if mimi:
            mimi_ms = {
                "ours": mimi["results"].get("ours", {}).get("median_ms"),
                "upstream": mimi["results"].get("upstream_mlx", {}).get("median_ms"),
            }
        if torch.get("mimi"):
            mimi_ms["PyTorch moshi 0.2.13"] = torch["mimi"]["frame_ms"]["median"]
        for impl in ("PyTorch moshi 0.2.13", "upstream", "ours", FULL_CONTEXT, UNFUSED):
            if impl in rows or impl in mimi_ms:
                cells = [_ms(rows.get(impl, {}).get(f)) for f in FORMATS]
                out.append(f"| {impl} | " + " | ".join(cells) + f" | {_ms(mimi_ms.get(impl))} |")
        for k in ("skipped", "error"):
            if k in torch:
                out.append(f"\nPyTorch peer {k}: {torch[k]}")
        out.append("")
    if lm is not None:
        from bench.step_overhead import format_table

        out.append("### Per case: primitives, host time, peak device memory")
        out.append("")
        out.append(format_table(lm))
        out.append("")
        out.append("| format | implementation | peak device memory MB |")
        out.append("|---|---|---|")
        for r in lm["results"]:
            if "error" not in r:
                out.append(f"| {r['fmt']} | {r['case']} | {_ms(r.get('peak_mb'))} |")
        out.append("")
    if mimi is not None:
        from bench import mimi_bench

        out.append("## Mimi streaming, per 80 ms frame (ms)")
        out.append(mimi_bench.format_table(mimi))
        out.append("")
    if "loop" in p:
        from bench import loop_bench

        out.append("## Live loop, MLX codec on the device, simulated sound card at real-time pace (ms per frame)")
        out.append(loop_bench.format_table(p["loop"]))
    return "\n".join(out)
