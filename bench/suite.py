"""The latency suite: one command, one JSON result file and one PNG chart.

    .venv/bin/python -m bench.suite                      # everything, ~20 min here
    .venv/bin/python -m bench.suite --only lm --quick    # a few minutes
    .venv/bin/python -m bench.suite --no-upstream        # ours (and rustymimi) only
    python -m bench.suite --device gpu                   # the GPU mode (Metal / CUDA): docs/gpu.md

Parts (`--only floor,lm,mimi,loop,tts,stt`):
- floor: GB/s MLX reaches on a large mat-vec per storage kind and activation dtype, with
  our MLX and with upstream's (bench/floor.py);
- lm: the LM frame step, ours vs upstream moshi_mlx (fp32 activations and its own bf16
  recipe), temporal transformer and depformer separately, Moshi-7B / 1B / 2B shapes with
  real widths and fewer temporal layers, extrapolated per layer to the real depth, with
  peak memory and the ratio to the floor (bench/lm_bench.py);
- mimi: streaming encode + decode per 80 ms frame, ours vs upstream's MLX Mimi vs
  rustymimi, on the same weights (bench/mimi_bench.py);
- loop: the live loop at real-time pace on the simulated sound card: per-frame latency and
  the overhead beyond model compute (bench/loop_bench.py);
- tts: the TTS real-time factor, demo model end to end and tts-1.6b-en_fr's real widths
  extrapolated to its depth (bench/tts_bench.py);
- stt: the speech-to-text real-time factor, demo model end to end and stt-1b-en_fr /
  stt-2.6b-en at real widths extrapolated to their depth, with Mimi encoding (bench/stt_bench.py).

Upstream runs in its own virtual environment (`--upstream-venv`, created with pip on first
use unless `--no-create-venv`). Other processes share this machine: the load average is
recorded at the start and end of every part and of every LM case.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import chart, lm_bench, loop_bench, mimi_bench, stats, stt_bench, tts_bench  # noqa: E402
from bench.floor_run import measure_floors  # noqa: E402
from bench.lm_weights import DEFAULT_CACHE, FORMATS  # noqa: E402
from bench.upstream_env import add_upstream_args, upstream_python_from_args  # noqa: E402

SUITE_VERSION = 1
PARTS = ("floor", "lm", "mimi", "loop", "tts", "stt")
# shape:layers:formats (formats joined by +); upstream's own quantized recipe (~9x slower)
# runs on the first shape only
DEFAULT_LM = "7b:1:bf16+q8+q4+mixed-4-8,1b:1:bf16+q4,2b:1:bf16+q4"
QUICK_LM = "7b:1:bf16+q4"


def parse_lm_spec(spec: str) -> list[tuple[str, int, list[str]]]:
    out = []
    for item in spec.split(","):
        bits = item.strip().split(":")
        if len(bits) != 3:
            raise SystemExit(f"--lm expects shape:layers:fmt+fmt,... got {item!r}")
        fmts = bits[2].split("+")
        bad = [f for f in fmts if f not in FORMATS]
        if bad:
            raise SystemExit(f"unknown format(s) {bad}; known: {', '.join(FORMATS)}")
        out.append((bits[0], int(bits[1]), fmts))
    return out


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    import mlx.core as mx

    return {
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpus": os.cpu_count(),
        "mlx": mx.__version__,
        "device": str(mx.default_device()),
        "python": platform.python_version(),
        "mem_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
    }


def run_suite(a) -> dict:
    t0 = time.time()
    only = [p.strip() for p in a.only.split(",")] if a.only else list(PARTS)
    bad = [p for p in only if p not in PARTS]
    if bad:
        raise SystemExit(f"unknown part(s) {bad}; parts: {', '.join(PARTS)}")
    if "lm" in only and "floor" not in only:
        only.insert(0, "floor")  # the LM floor ratios need it
    up = upstream_python_from_args(a)
    report = {
        "suite_version": SUITE_VERSION,
        "command": " ".join(shlex.quote(x) for x in [sys.argv[0]] + sys.argv[1:]),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine_info(),
        "parts": {},
        "upstream_python": str(up) if up else None,
    }
    report["machine"]["loadavg_start"] = [round(x, 2) for x in os.getloadavg()]
    quick = a.quick

    def part(name, fn):
        load0 = os.getloadavg()
        t = time.time()
        res = fn()
        res["seconds"] = time.time() - t
        res["loadavg"] = [load0, os.getloadavg()]
        report["parts"][name] = res
        print(
            f"[suite] {name} done in {res['seconds']:.0f} s (load {load0[0]:.2f} -> {os.getloadavg()[0]:.2f})",
            flush=True,
        )

    if "floor" in only:
        part("floor", lambda: {"tables": measure_floors(up, repeats=8 if quick else 15)})
    if "lm" in only:
        spec = parse_lm_spec(a.lm or (QUICK_LM if quick else DEFAULT_LM))
        bw = report["parts"]["floor"]["tables"]

        def lm():
            results = []
            for i, (shape, layers, fmts) in enumerate(spec):
                impls = [x for x in a.impls.split(",") if up is not None or not x.startswith("upstream")]
                r = lm_bench.run(
                    [(shape, layers)],
                    fmts,
                    impls,
                    steps=10 if quick else a.steps,
                    warmup=2 if quick else a.warmup,
                    layer_steps=2 if quick else 5,
                    slow_steps=(3 if quick else a.slow_steps) if i == 0 else 0,
                    upstream_python=up,
                    cache_dir=a.cache_dir,
                    bandwidth=bw,
                )
                results.extend(r["results"])
            return {
                "what": r["what"],
                "spec": a.lm or (QUICK_LM if quick else DEFAULT_LM),
                "results": results,
                "steps": 10 if quick else a.steps,
            }

        part("lm", lm)
    if "mimi" in only:
        part(
            "mimi",
            lambda: mimi_bench.run(
                frames=10 if quick else 40,
                warmup=3 if quick else 5,
                upstream=up is not None,
                upstream_venv=a.upstream_venv,
                create_venv=False,
                memory=True,
            ),
        )
    if "loop" in only:
        part("loop", lambda: loop_bench.run(a.loop_codecs.split(","), seconds=8 if quick else a.loop_seconds))
    if "tts" in only:
        part("tts", lambda: tts_bench.run(quick=quick))
    if "stt" in only:
        part("stt", lambda: stt_bench.run(quick=quick))
    report["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    report["seconds"] = time.time() - t0
    return report


def format_report(report: dict) -> str:
    out = [
        f"# moshi_mlx latency suite ({report['started']}, {report['seconds']:.0f} s)",
        f"machine: {report['machine']['cpu']}, {report['machine']['cpus']} cores, MLX {report['machine']['mlx']}, "
        f"load average {report['machine']['loadavg_start']} -> {report['machine']['loadavg_end']}",
        f"command: {report['command']}",
        "",
    ]
    p = report["parts"]
    if "floor" in p:
        out.append("## Floor: GB/s of an 8192 x 4096 mat-vec (weights@activations)")
        for ver, t in p["floor"]["tables"].items():
            two = t["two_streams"]
            out.append(
                f"- MLX {ver}: "
                + ", ".join(
                    f"{k} {v:.2f}" + (f" (2 streams {two[k]:.2f})" if k in two else "")
                    for k, v in t["one_stream"].items()
                )
            )
        out.append("")
    if "lm" in p:
        out.append("## LM frame step (ms)")
        out.append(lm_bench.format_tables(p["lm"]))
        out.append("")
    if "mimi" in p:
        out.append("## Mimi streaming, per 80 ms frame (ms)")
        out.append(mimi_bench.format_table(p["mimi"]))
        mem = {k: v.get("peak_rss_mb") for k, v in p["mimi"]["results"].items()}
        out.append(
            "peak RSS of a process streaming with each (MB): " + ", ".join(f"{k} {v:.0f}" for k, v in mem.items() if v)
        )
        out.append("")
    if "loop" in p:
        out.append("## Live loop, simulated device at real-time pace (ms per frame)")
        out.append(loop_bench.format_table(p["loop"]))
    if "tts" in p:
        out.append("")
        out.append("## TTS real-time factor")
        out.append(tts_bench.format_table(p["tts"]))
    if "stt" in p:
        out.append("")
        out.append("## Speech-to-text real-time factor")
        out.append(stt_bench.format_table(p["stt"]))
    return "\n".join(out)


def _gpu_main(a) -> None:
    """--device gpu: the accelerator mode (bench/gpu_suite.py)."""
    import mlx.core as mx

    from bench import gpu_suite

    if mx.default_device().type != mx.DeviceType.gpu and mx.is_available(mx.gpu):
        mx.set_default_device(mx.gpu)
    report = gpu_suite.run_gpu_suite(a)
    out = a.out if a.out != DEFAULT_OUT else DEFAULT_OUT.with_name("suite-gpu.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    text = gpu_suite.format_gpu_report(report)
    out.with_suffix(".md").write_text(text + "\n")
    print(text)
    print(f"\nwrote {out} and {out.with_suffix('.md')}")


DEFAULT_OUT = ROOT / "bench" / "results" / "suite.json"


def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    ap.add_argument("--only", help=f"comma-separated parts: {', '.join(PARTS)} (default: all)")
    ap.add_argument("--quick", action="store_true", help="fewer steps/frames and one LM shape (a smoke run)")
    ap.add_argument("--lm", help=f"LM cases, shape:layers:fmt+fmt,... (default {DEFAULT_LM})")
    ap.add_argument("--impls", default=",".join(lm_bench.IMPLS))
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument(
        "--slow-steps",
        type=int,
        default=10,
        help="steps for upstream's own quantized recipe (bf16 activations: ~10 s per step)",
    )
    ap.add_argument("--loop-seconds", type=float, default=20.0)
    ap.add_argument("--loop-codecs", default="rustymimi,mlx")
    ap.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help="where benchmark weights are written")
    ap.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="result file (.json, with a .md beside it; GPU mode default: suite-gpu.json)",
    )
    ap.add_argument(
        "--device",
        choices=("auto", "cpu", "gpu"),
        default="auto",
        help="gpu: the GPU mode (full depth, every format, ours vs upstream vs PyTorch; docs/gpu.md); "
        "cpu: force MLX's CPU; auto: this suite on the default device",
    )
    g = ap.add_argument_group("GPU mode (--device gpu)")
    g.add_argument("--smoke", action="store_true", help="toy sizes, and accept a CPU: exercises the GPU mode's path")
    g.add_argument("--gpu-formats", help="LM formats (default bf16,q8,q4)")
    g.add_argument("--gpu-steps", type=int, default=100, help="measured steps / Mimi frames (default 100)")
    g.add_argument("--gpu-warmup", type=int, default=10)
    g.add_argument(
        "--upstream-path",
        type=Path,
        default=ROOT / ".bench-venvs" / "upstream-pkg",
        help="folder holding upstream's moshi_mlx package, run on this MLX (the GPU kit: /tmp/upstream)",
    )
    g.add_argument(
        "--torch-peer",
        type=Path,
        default=ROOT / ".gpu" / "bin" / "torch_peer.py",
        help="the PyTorch peer script (the GPU kit's)",
    )
    g.add_argument(
        "--torch-path",
        type=Path,
        default=Path("/tmp/torch-moshi"),
        help="folder holding Kyutai's PyTorch moshi package (the GPU kit's)",
    )
    g.add_argument("--loop-format", default="q4", help="LM format in the live loop (default q4)")
    ap.add_argument("--chart", type=Path, default=ROOT / "bench" / "results" / "suite.png")
    add_upstream_args(ap)
    a = ap.parse_args(argv)
    a.argv = list(argv) if argv is not None else sys.argv[1:]
    if a.device == "gpu":
        return _gpu_main(a)
    if a.device == "cpu":
        import mlx.core as mx

        mx.set_default_device(mx.cpu)
    report = run_suite(a)
    problems = stats.check_report(report)
    if problems:
        print("report problems: " + "; ".join(problems), file=sys.stderr)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=1) + "\n")
    text = format_report(report)
    a.out.with_suffix(".md").write_text(text + "\n")
    print(text)
    print(f"\nwrote {a.out} and {a.out.with_suffix('.md')}")
    png = chart.write_chart(report, a.chart)
    print(f"wrote {png}" if png else "no chart: matplotlib is not installed (pip install -e '.[bench]')")


if __name__ == "__main__":
    main()
