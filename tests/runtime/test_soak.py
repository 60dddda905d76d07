"""A shortened soak (bench/soak.py) in its own process: the full pipeline with the demo
model runs past many context wrap-arounds faster than real time without memory growth.
The one-hour (45,000-frame) run is the same script with --frames 45000 (README)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_soak_no_memory_growth(tmp_path):
    out = tmp_path / "soak.json"
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "soak.py"),
            "--frames",
            "2000",
            "--every",
            "250",
            "--warmup",
            "500",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    res = json.loads(out.read_text())
    assert res["steps"] == 2000
    assert res["real_time_factor"] > 1.0
    assert res["rss_growth_pct_after_warmup"] < 5.0
