"""Mimi streaming speed: encode + decode of one 80 ms frame, ours vs upstream moshi_mlx's MLX
Mimi vs rustymimi, on the same weights (a seeded random checkpoint of the published
architecture, written once in the released layout and loaded by all three).

    .venv/bin/python -m bench.mimi_bench [--frames 40] [--upstream-venv PATH | --no-upstream]
        [--ours-profiles auto,gpu]

Each backend streams the same deterministic signal: per frame, `encode_step(frame)` then
`decode_step(codes)`, results evaluated, wall time per frame recorded; the first `warmup`
frames are dropped. Ours also reports its CPU time per frame (all threads) and the primitives
one frame runs (bench/graph_count.py), in each `--ours-profiles` format: `auto` is this
device's (eager on a CPU), `gpu` the accelerator format (compiled streaming steps) forced
here to measure its host cost. Upstream's package is also named `moshi_mlx`, so it runs in its own
venv in a subprocess (created on first use with pip: moshi-mlx==0.3.0 + mlx[cpu]).
rustymimi runs in this process if it is installed. Backends run one after another, never
at the same time; the machine's load average is recorded because other processes share it.

`run()` returns a dict (used by the bench suite); `__main__` prints a table and writes
bench/results/mimi_bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from proc_memory import rss_mb  # noqa: E402

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_UPSTREAM_VENV = ROOT / ".bench-venvs" / "upstream"
UPSTREAM_PACKAGES = ["moshi-mlx==0.3.0", "mlx[cpu]"]
FRAME = 1920

# Runs inside upstream's venv: only upstream's public API is used.
_UPSTREAM_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np
    import mlx.core as mx
    from moshi_mlx import models
    weights, n, frames, warmup = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    pcm = np.load(sys.argv[5])
    # keep the codebooks an n-codebook model has, so that its strict load accepts the file
    kept = {k: v for k, v in mx.load(weights).items()
            if not (k.startswith("quantizer.rvq_rest.vq.layers.") and int(k.split(".")[4]) >= n - 1)}
    mx.save_safetensors("weights_n.safetensors", kept)
    mimi = models.mimi.Mimi(models.mimi_202407(n))
    mimi.load_pytorch_weights("weights_n.safetensors", strict=True)
    enc, dec = [], []
    for i in range(frames + warmup):
        x = mx.array(pcm[None, None, i * 1920:(i + 1) * 1920])
        t0 = time.perf_counter()
        codes = mimi.encode_step(x)
        mx.eval(codes)
        t1 = time.perf_counter()
        out = mimi.decode_step(codes)
        mx.eval(out)
        t2 = time.perf_counter()
        enc.append(t1 - t0)
        dec.append(t2 - t1)
    hwm = [int(l.split()[1]) / 1024.0 for l in open("/proc/self/status") if l.startswith("VmHWM:")]
    print(json.dumps({"encode_s": enc[warmup:], "decode_s": dec[warmup:], "mlx": mx.__version__,
                      "peak_rss_mb": hwm[0] if hwm else None}))
    """
)


# Peak memory of one backend in a process of its own (ours or rustymimi), comparable with
# upstream's (which always runs in its own process): load + stream a few frames.
_MEMORY_PROBE = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    backend, weights, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if backend == "rustymimi":
        import rustymimi
        tok = rustymimi.Tokenizer(weights, num_codebooks=n)
        enc = lambda x: tok.encode_step(x)
        dec = lambda c: tok.decode_step(np.ascontiguousarray(c, dtype=np.uint32))
    else:
        from moshi_mlx import models
        mimi = models.load_mimi(weights, num_codebooks=n)
        enc = lambda x: np.asarray(mimi.encode_step(x))
        dec = lambda c: np.asarray(mimi.decode_step(c))
    x = (np.random.default_rng(0).standard_normal((1, 1, 1920)) * 0.1).astype(np.float32)
    for _ in range(5):
        dec(enc(x))
    hwm = [int(l.split()[1]) / 1024.0 for l in open("/proc/self/status") if l.startswith("VmHWM:")]
    print(json.dumps({"peak_rss_mb": hwm[0] if hwm else None}))
    """
)


def peak_memory(backend: str, weights: Path, num_codebooks: int) -> float | None:
    """Peak RSS (MB) of a process that loads `backend` and streams 5 frames."""
    out = subprocess.run(
        [sys.executable, "-c", _MEMORY_PROBE, backend, str(weights), str(num_codebooks)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if out.returncode:
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_mb"]


def test_signal(frames: int, seed: int = 0) -> np.ndarray:
    """Speech-like deterministic signal: a gliding harmonic tone plus noise, 24 kHz."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames * FRAME) / 24000.0
    f0 = 140 + 40 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / 24000.0
    x = 0.3 * np.sin(phase) + 0.1 * np.sin(3 * phase) + 0.03 * rng.standard_normal(t.shape)
    return x.astype(np.float32)


def _summary(enc_s: list[float], dec_s: list[float]) -> dict:
    enc, dec = np.array(enc_s) * 1e3, np.array(dec_s) * 1e3
    tot = enc + dec
    return {
        "frames": int(len(tot)),
        "median_ms": float(np.median(tot)),
        "p90_ms": float(np.percentile(tot, 90)),
        "encode_median_ms": float(np.median(enc)),
        "decode_median_ms": float(np.median(dec)),
    }


def _loop(mimi, pcm: np.ndarray, frames: int, warmup: int, to_numpy) -> dict:
    mimi.reset()
    enc, dec, cpu = [], [], []
    for i in range(frames + warmup):
        c0 = time.process_time()
        x = np.ascontiguousarray(pcm[None, None, i * FRAME : (i + 1) * FRAME])
        t0 = time.perf_counter()
        codes = to_numpy(mimi.encode_step(x))
        t1 = time.perf_counter()
        to_numpy(mimi.decode_step(codes))
        t2 = time.perf_counter()
        enc.append(t1 - t0)
        dec.append(t2 - t1)
        cpu.append(time.process_time() - c0)
    res = _summary(enc[warmup:], dec[warmup:])
    res["cpu_ms"] = float(np.median(cpu[warmup:]) * 1e3)
    return res


def bench_ours(weights: Path, pcm, frames, warmup, num_codebooks, profile: str = "auto") -> dict:
    import graph_count

    from moshi_mlx import models
    from moshi_mlx.models.backend import prepare_mimi

    before = rss_mb()
    mimi = models.load_mimi(weights, num_codebooks=num_codebooks)
    res = {"profile": profile, "compiled": prepare_mimi(mimi, profile=profile)}
    res.update(_loop(mimi, pcm, frames, warmup, np.asarray))
    res["rss_growth_mb"] = rss_mb() - before  # in-process: memory this backend added
    x = np.ascontiguousarray(pcm[None, None, :FRAME])
    with graph_count.SyncHooks(count=True) as hooks:  # one more frame, its primitives counted
        np.asarray(mimi.decode_step(np.asarray(mimi.encode_step(x))))
    res["primitives"] = sum(hooks.counts.values())
    res["compute_primitives"] = graph_count.compute_count(hooks.counts)
    res["device_counted"] = graph_count.device_name()
    return res


def bench_rustymimi(weights: Path, pcm, frames, warmup, num_codebooks) -> dict:
    import rustymimi

    before = rss_mb()
    tok = rustymimi.Tokenizer(str(weights), num_codebooks=num_codebooks)

    class _Adapter:  # rustymimi wants contiguous uint32 codes
        def reset(self):
            tok.reset()

        def encode_step(self, x):
            return tok.encode_step(x)

        def decode_step(self, codes):
            return tok.decode_step(np.ascontiguousarray(codes, dtype=np.uint32))

    res = _loop(_Adapter(), pcm, frames, warmup, np.asarray)
    res["rss_growth_mb"] = rss_mb() - before
    return res


def ensure_upstream_venv(venv: Path, create: bool = True) -> Path:
    python = venv / "bin" / "python"
    if python.exists():
        return python
    if not create:
        raise FileNotFoundError(f"no upstream venv at {venv}")
    subprocess.run(["python3", "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *UPSTREAM_PACKAGES], check=True)
    return python


def bench_upstream(
    weights: Path, pcm, frames, warmup, num_codebooks, venv: Path, create: bool, upstream_path: Path | None = None
) -> dict:
    """Upstream's Mimi in its own process: from its venv, or (`upstream_path`) from a folder
    holding its package, run by this interpreter on this MLX (the GPU kit's way)."""
    if upstream_path is not None:
        python, pythonpath = Path(sys.executable), str(Path(upstream_path).resolve())
    else:
        python, pythonpath = ensure_upstream_venv(venv, create), ""
    with tempfile.TemporaryDirectory() as tmp:
        script, sig = Path(tmp) / "upstream_mimi.py", Path(tmp) / "pcm.npy"
        script.write_text(_UPSTREAM_SCRIPT)
        np.save(sig, pcm)
        env = dict(os.environ, PYTHONPATH=pythonpath)  # never pick up our package
        out = subprocess.run(
            [str(python), str(script), str(weights), str(num_codebooks), str(frames), str(warmup), str(sig)],
            capture_output=True,
            text=True,
            cwd=tmp,
            env=env,
        )
    if out.returncode:
        raise RuntimeError(
            f"upstream bench failed: {out.stderr.strip().splitlines()[-1] if out.stderr else out.returncode}"
        )
    data = json.loads(out.stdout.strip().splitlines()[-1])
    res = _summary(data["encode_s"], data["decode_s"])
    res["mlx_version"] = data["mlx"]
    res["peak_rss_mb"] = data.get("peak_rss_mb")  # its own process: interpreter + MLX + Mimi
    return res


def run(
    frames: int = 40,
    warmup: int = 5,
    num_codebooks: int = 8,
    seed: int = 0,
    upstream: bool = True,
    upstream_venv: Path = DEFAULT_UPSTREAM_VENV,
    create_venv: bool = True,
    rusty: bool = True,
    memory: bool = False,
    upstream_path: Path | None = None,
    ours_profiles: tuple[str, ...] = ("auto",),
) -> dict:
    """Benchmark every available backend; returns {"results": {name: summary}, "ratios": ...}.
    memory: also measure each backend's peak RSS in a process of its own."""
    import mlx.core as mx

    from moshi_mlx.models.mimi_config import mimi_202407
    from moshi_mlx.weights.mimi_keys import random_published_weights
    from moshi_mlx.weights.safetensors_io import save_safetensors

    pcm = test_signal(frames + warmup, seed)
    results: dict[str, dict] = {}
    errors: dict[str, str] = {}
    load = {"before": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "mimi_random.safetensors"
        published = random_published_weights(mimi_202407(), seed=seed, codebook_scale=1.0)
        save_safetensors(weights, {k: mx.array(v) for k, v in published.items()})
        del published
        results["ours"] = bench_ours(weights, pcm, frames, warmup, num_codebooks, ours_profiles[0])
        for prof in ours_profiles[1:]:
            results[f"ours ({prof} format)"] = bench_ours(weights, pcm, frames, warmup, num_codebooks, prof)
        if memory:
            results["ours"]["peak_rss_mb"] = peak_memory("ours", weights, num_codebooks)
        if rusty:
            try:
                results["rustymimi"] = bench_rustymimi(weights, pcm, frames, warmup, num_codebooks)
                if memory:
                    results["rustymimi"]["peak_rss_mb"] = peak_memory("rustymimi", weights, num_codebooks)
            except ImportError:
                errors["rustymimi"] = "not installed"
        if upstream:
            try:
                results["upstream_mlx"] = bench_upstream(
                    weights, pcm, frames, warmup, num_codebooks, upstream_venv, create_venv, upstream_path
                )
            except (OSError, RuntimeError, subprocess.CalledProcessError) as e:
                errors["upstream_mlx"] = str(e)
    load["after"] = os.getloadavg()
    ours = results["ours"]["median_ms"]
    ratios = {f"{name}_over_ours": r["median_ms"] / ours for name, r in results.items() if name != "ours"}
    return {
        "what": "Mimi streaming encode_step + decode_step per 80 ms frame (ms, median over frames)",
        "frames": frames,
        "warmup": warmup,
        "num_codebooks": num_codebooks,
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "mlx": mx.__version__,
            "device": str(mx.default_device()),
            "loadavg": load,
        },
        "results": results,
        "ratios": ratios,
        "errors": errors,
    }


def format_table(report: dict) -> str:
    rows = [
        "| backend | median ms/frame | p90 | encode | decode | its time / ours | CPU ms | primitives (computing) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    ours = report["results"]["ours"]["median_ms"]
    for name, r in report["results"].items():
        ratio = "1.00x" if name == "ours" else f"{r['median_ms'] / ours:.2f}x"
        cpu = f"{r['cpu_ms']:.1f}" if "cpu_ms" in r else ""
        prims = f"{r['primitives']} ({r['compute_primitives']})" if "primitives" in r else ""
        rows.append(
            f"| {name} | {r['median_ms']:.1f} | {r['p90_ms']:.1f} | {r['encode_median_ms']:.1f} | "
            f"{r['decode_median_ms']:.1f} | {ratio} | {cpu} | {prims} |"
        )
    for name, err in report["errors"].items():
        rows.append(f"| {name} | skipped: {err} | | | | | | |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=40)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("-n", "--num-codebooks", type=int, default=8)
    p.add_argument("--upstream-venv", type=Path, default=DEFAULT_UPSTREAM_VENV)
    p.add_argument("--no-upstream", action="store_true")
    p.add_argument(
        "--upstream-path",
        type=Path,
        help="run upstream from this folder holding its package, on this interpreter's MLX "
        "(e.g. .bench-venvs/upstream-pkg, made by bench.step_overhead), instead of its venv",
    )
    p.add_argument("--no-rustymimi", action="store_true")
    p.add_argument("--no-create-venv", action="store_true", help="fail instead of creating the upstream venv")
    p.add_argument(
        "--ours-profiles",
        default="auto",
        help="our formats, comma-separated: auto (this device's), gpu (compiled steps), cpu",
    )
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "mimi_bench.json")
    a = p.parse_args(argv)
    report = run(
        a.frames,
        a.warmup,
        a.num_codebooks,
        upstream=not a.no_upstream,
        upstream_venv=a.upstream_venv,
        create_venv=not a.no_create_venv,
        rusty=not a.no_rustymimi,
        ours_profiles=tuple(x.strip() for x in a.ours_profiles.split(",")),
        upstream_path=a.upstream_path,
    )
    print(format_table(report))
    print(f"load average before/after: {report['machine']['loadavg']}")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
