"""The command line shared by the benches that time each case in a child process of its own
(tts_bench, stt_bench): `--quick`, `--steps`, `--json`, and the hidden `--child CASE` that the
parent uses to run one case in a fresh process (clean memory figures, no state between cases),
and that parent's loop (`run_cases`)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent


def run_cases(module: str, cases: list[str], steps: int) -> dict[str, dict]:
    """Each case's result from `python -m <module> --child CASE`, one fresh process per case;
    a child that fails gives {"error": the last line of its stderr}."""
    out = {}
    for case in cases:
        p = subprocess.run(
            [sys.executable, "-m", module, "--child", case, "--steps", str(steps)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=3600,
        )
        if p.returncode != 0:
            out[case] = {"error": (p.stderr.strip().splitlines() or ["failed"])[-1]}
        else:
            out[case] = json.loads(p.stdout.strip().splitlines()[-1])
    return out


def case_bench_main(
    doc: str,
    run: Callable[[bool, int], dict],
    child: Callable[[str, int], dict],
    format_table: Callable[[dict], str],
    argv: list[str] | None = None,
) -> None:
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="demo model only")
    ap.add_argument("--steps", type=int, default=30, help="timed steps per real-width case")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--json", type=Path, help="also write the results here")
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(child(a.child, a.steps)))
        return
    res = run(a.quick, a.steps)
    print(format_table(res))
    if a.json:
        a.json.write_text(json.dumps(res, indent=1) + "\n")
