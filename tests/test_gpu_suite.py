"""The suite's GPU mode and the per-step instrument, exercised at toy size on any device."""

import json

import mlx.core as mx

from bench import graph_count, suite


def test_graph_count_sees_every_primitive_once():
    a = mx.ones((4,))
    mx.eval(a)
    b = mx.exp(a + 1.0) * a
    orig = mx.array.item
    counts = graph_count.graph_counts(b)
    assert counts["Add"] == 1 and counts["Exp"] == 1 and counts["Multiply"] == 1
    with graph_count.SyncHooks(count=True) as h:
        total = b.sum().item()  # an implicit synchronisation is seen too
        assert h.syncs == 1 and h.counts["Exp"] == 1 and h.counts["Sum"] == 1
        mx.eval(b)  # already evaluated: nothing more runs
        assert h.counts["Exp"] == 1
    assert total > 0
    assert mx.array.item is orig and graph_count.graph_counts(b) == {}  # hooks removed


def test_gpu_mode_smoke(tmp_path):
    out = tmp_path / "suite-gpu.json"
    suite.main(
        [
            "--device",
            "gpu",
            "--smoke",
            "--only",
            "lm,torch",
            "--gpu-formats",
            "q4",
            "--no-upstream",
            "--torch-peer",
            str(tmp_path / "absent.py"),
            "--out",
            str(out),
            "--cache-dir",
            str(tmp_path),
        ]
    )
    report = json.loads(out.read_text())
    assert report["mode"] == "gpu" and report["machine"]["device"]
    (row,) = report["parts"]["lm"]["results"]
    assert "error" not in row, row
    assert row["fmt"] == "q4" and row["primitives"] > 100 and row["syncs"] >= 1
    assert row["step_ms"]["n"] == 3 and row["peak_mb"] > 0
    assert row["compiled"] == (mx.default_device().type == mx.DeviceType.gpu)
    assert "skipped" in report["parts"]["torch"]
    md = out.with_suffix(".md").read_text()
    assert "| ours |" in md and "primitives / step" in md


def test_prepared_gpu_check_rehearses(tmp_path):
    """scripts/gpu_check.sh (the one device call of issue 9, and issue 26's exit check) runs
    every part at toy size."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, OUT=str(tmp_path), PYTHON=sys.executable)
    r = subprocess.run(
        ["bash", "scripts/gpu_check.sh", "--smoke"], cwd=root, env=env, capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("rc=0 ") == 6, r.stdout
    assert json.loads((tmp_path / "parity.json").read_text())["ok"] is True
    for name in ("step_overhead", "suite-gpu-lm.json", "suite-gpu-mimi.json", "suite-gpu-loop.json"):
        assert (tmp_path / name).exists(), name
    lm = json.loads((tmp_path / "suite-gpu-lm.json").read_text())["parts"]["lm"]["results"]
    full = [r for r in lm if "context full" in r["case"]]
    assert len(full) == 1 and "error" not in full[0] and full[0]["fmt"] == "bf16"
    unfused = [r for r in lm if "unfused" in r["case"]]
    assert len(unfused) == 1 and "error" not in unfused[0] and unfused[0]["fmt"] == "bf16"
    # the variant really runs another graph: the residual adds are their own primitives again
    assert full[0]["primitives_by_type"].get("AddMM", 0) > 0
    assert unfused[0]["primitives_by_type"].get("AddMM", 0) == 0
