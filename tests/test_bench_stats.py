"""The latency suite's arithmetic and report schema (bench/stats.py, bench/weight_bytes.py):
cheap checks, no timing is ever asserted."""

import math

import mlx.core as mx
import mlx.nn as nn
import pytest

from bench import stats, weight_bytes


def test_summary():
    s = stats.summary([10.0, 12.0, 11.0, 50.0, 13.0, 9.0, 10.5, 11.5, 12.5, 10.0])
    assert s["n"] == 10 and s["median"] == 11.25 and s["min"] == 9.0
    assert math.isclose(s["p90"], 13.0 + 0.1 * (50.0 - 13.0))
    assert stats.summary([])["n"] == 0


def test_floor_sums_each_kind_at_its_own_bandwidth():
    bw = {"q8g64-bf16@float32": 1.5, "bf16@float32": 0.5, "bf16@bfloat16": 3.0}
    # 3 GB of q8 at 1.5 GB/s + 1 GB of bf16 at 0.5 GB/s = 2 s + 2 s
    assert math.isclose(stats.floor_ms({"q8g64-bf16": 3 * 10**9, "bf16": 10**9}, bw, "float32"), 4000.0)
    assert math.isclose(stats.floor_ms({"bf16": 3 * 10**9}, bw, "bfloat16"), 1000.0)
    with pytest.raises(KeyError, match="q4g32-bf16@float32"):
        stats.floor_ms({"q4g32-bf16": 1}, bw, "float32")  # never guessed


def test_extrapolation_and_ratio():
    assert stats.extrapolate(500.0, 1, 120.0, 32) == 500.0 + 31 * 120.0
    assert stats.extrapolate(500.0, 32, 120.0, 32) == 500.0
    assert stats.ratio(3.0, 2.0) == 1.5
    assert math.isnan(stats.ratio(1.0, float("nan"))) and math.isnan(stats.ratio(1.0, 0.0))


def test_weight_bytes_by_part_and_kind():
    class Toy(nn.Module):
        def __init__(self):
            super().__init__()
            self.transformer = nn.Module()
            self.transformer.layers = [nn.Linear(64, 128, bias=False), nn.Linear(64, 64, bias=False)]
            self.text_linear = nn.Linear(64, 100, bias=False)
            self.depformer = nn.Module()
            self.depformer.slices = [nn.Linear(64, 256, bias=False).to_quantized(group_size=64, bits=8)]
            self.extra_heads = [nn.Linear(64, 6, bias=False)]  # not run per step

    m = Toy()
    m.transformer.layers[0].set_dtype(mx.bfloat16)
    b = weight_bytes.step_bytes(m)
    assert b["temporal"] == {"bf16": 64 * 128 * 2, "fp32": (64 * 64 + 64 * 100) * 4}
    assert b["layer"] == {"bf16": 64 * 128 * 2}
    q = m.depformer.slices[0]
    assert b["depformer"] == {"q8g64-fp32": q.weight.nbytes + q.scales.nbytes + q.biases.nbytes}
    assert q.weight.nbytes == 256 * 64  # 8 bits per weight


def test_report_schema_check():
    good_row = {k: 0 for k in stats.LM_RESULT_KEYS}
    good_row.update(step_ms=stats.summary([1.0]), temporal_ms=stats.summary([1.0]), depformer_ms=stats.summary([1.0]))
    report = {k: None for k in stats.REPORT_KEYS}
    report["parts"] = {"lm": {"results": [good_row, {"impl": "upstream", "error": "venv missing"}]}}
    assert stats.check_report(report) == []
    bad = dict(good_row)
    del bad["floor_ms"]
    bad["step_ms"] = 12.0
    report["parts"]["lm"]["results"].append(bad)
    del report["command"]
    problems = stats.check_report(report)
    assert any("command" in p for p in problems)
    assert any("floor_ms" in p for p in problems)
    assert any("step_ms is not a summary" in p for p in problems)
    assert stats.check_report({"parts": {}}) != []


def test_lm_row_floor_and_extrapolation():
    """A child's raw timings become a report row: floor from the bytes it read and the
    bandwidth of its MLX version, per-layer extrapolation to Moshi 7B's 32 layers."""
    from bench.lm_bench import format_tables, summarize
    from bench.lm_weights import Case

    raw = {
        "impl": "ours",
        "variant": "ours",
        "activation_dtype": "float32",
        "mlx": "0.32.4",
        "steps": 3,
        "step_ms_raw": [400.0, 410.0, 420.0],
        "temporal_ms_raw": [140.0] * 3,
        "depformer_ms_raw": [270.0] * 3,
        "layer_ms_raw": [70.0, 80.0],
        "peak_rss_mb": 1000.0,
        "rss_steps_mb": 900.0,
        "load_s": 1.0,
        "bytes": {
            "temporal": {"q4g32-bf16": 2 * 10**8},
            "depformer": {"q4g32-bf16": 4 * 10**8},
            "layer": {"q4g32-bf16": 10**8},
        },
    }
    bw = {"0.32.4": {"one_stream": {"q4g32-bf16@float32": 1.0}, "two_streams": {"q4g32-bf16@float32": 2.0}}}
    row = summarize(raw, Case("7b", 1, "q4"), "ours", bw)
    assert row["floor_ms"] == 600.0 and row["floor_ms_two_streams"] == 300.0
    assert row["floor_ratio"] == 410.0 / 600.0
    ext = row["extrapolated"]
    assert ext["layers"] == 32 and ext["step_ms"] == 410.0 + 31 * 75.0
    assert ext["floor_ms"] == 600.0 + 31 * 100.0
    assert ext["peak_rss_mb_est"] > 1000.0 + 31 * 10**8 / 2**20  # + each layer's weights and KV cache
    assert stats.check_report({**{k: None for k in stats.REPORT_KEYS}, "parts": {"lm": {"results": [row]}}}) == []
    assert "| 7b (1) | q4 | ours |" in format_tables({"results": [row]})
    failed = summarize({"error": "boom"}, Case("7b", 1, "q4"), "upstream", bw)
    assert failed["error"] == "boom" and "failed: boom" in format_tables({"results": [row, failed]})
