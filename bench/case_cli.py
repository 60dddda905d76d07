"""The command line shared by the benches that time each case in a child process of its own
(tts_bench, stt_bench): `--quick`, `--steps`, `--json`, and the hidden `--child CASE` that the
parent uses to run one case in a fresh process (clean memory figures, no state between cases)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Callable


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
