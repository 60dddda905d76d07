"""Run bench/floor.py with our MLX and with upstream's (each kernel version gets its own
floor), in child processes, and collect {mlx version: bandwidth table}."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

FLOOR = Path(__file__).resolve().parent / "floor.py"
KINDS = "fp32,bf16,q8g64-bf16,q4g32-bf16"


def floor_table(python: Path | str, kinds: str = KINDS, acts: str = "float32,bfloat16", repeats: int = 15) -> dict:
    env = dict(os.environ, PYTHONPATH="")
    out = subprocess.run(
        [str(python), str(FLOOR), "--json", "--kinds", kinds, "--acts", acts, "--repeats", str(repeats)],
        capture_output=True,
        text=True,
        env=env,
        cwd="/tmp",
    )
    if out.returncode:
        raise RuntimeError(f"floor.py failed: {(out.stderr.strip().splitlines() or ['?'])[-1]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure_floors(upstream_python: Path | None = None, repeats: int = 15, log=print) -> dict:
    tables = {}
    for python in [sys.executable] + ([upstream_python] if upstream_python else []):
        t = floor_table(python, repeats=repeats)
        t["loadavg"] = os.getloadavg()
        tables[t["mlx"]] = t
        log(
            f"[floor] MLX {t['mlx']}: "
            + ", ".join(f"{k} {v:.2f}" for k, v in t["one_stream"].items())
            + " GB/s"
            + (
                "; two streams: " + ", ".join(f"{k} {v:.2f}" for k, v in t["two_streams"].items())
                if t["two_streams"]
                else ""
            )
        )
    return tables
