"""The arithmetic of the suite, kept apart so it can be tested: summaries of timings, the
memory-bandwidth floor of a step, per-layer extrapolation, and the report's schema."""

from __future__ import annotations

import numpy as np


def summary(ms: list[float]) -> dict:
    """Median / p90 / mean / min of per-step times in ms (NaN-free input expected)."""
    a = np.asarray(ms, dtype=np.float64)
    if a.size == 0:
        return {"n": 0, "median": float("nan"), "p90": float("nan"), "mean": float("nan"), "min": float("nan")}
    return {
        "n": int(a.size),
        "median": float(np.median(a)),
        "p90": float(np.percentile(a, 90)),
        "mean": float(a.mean()),
        "min": float(a.min()),
    }


def format_key(kind: str, act: str) -> str:
    """Bandwidth table key: storage kind ('fp32', 'bf16', 'q8g64-bf16', ...) + activation dtype."""
    return f"{kind}@{act}"


def floor_ms(bytes_by_kind: dict[str, int], bandwidth_gbps: dict[str, float], act: str) -> float:
    """Weight bytes read per step / the mat-vec bandwidth of their storage kind, in ms.

    bytes_by_kind: storage kind -> bytes of matmul weights read once per step.
    bandwidth_gbps: format_key(kind, act) -> GB/s measured on a large mat-vec.
    Raises KeyError naming a kind with no measured bandwidth (never guesses one)."""
    total = 0.0
    for kind, nbytes in bytes_by_kind.items():
        if nbytes == 0:
            continue
        key = format_key(kind, act)
        if key not in bandwidth_gbps:
            raise KeyError(f"no bandwidth measured for {key}")
        total += nbytes / (bandwidth_gbps[key] * 1e9)
    return total * 1e3


def extrapolate(measured_ms: float, layers: int, per_layer_ms: float, full_layers: int) -> float:
    """Step time of the full model from one with `layers` temporal layers:
    t(full) = t(L) + (full - L) * t_layer."""
    return measured_ms + (full_layers - layers) * per_layer_ms


def ratio(a: float, b: float) -> float:
    return float("nan") if not b or b != b or a != a else a / b


# ---- report schema (what the JSON file holds; checked by the tests and before writing) --------

REPORT_KEYS = {"suite_version", "command", "machine", "parts", "started", "seconds"}
LM_RESULT_KEYS = {
    "impl",
    "variant",
    "shape",
    "layers",
    "full_layers",
    "fmt",
    "activation_dtype",
    "steps",
    "step_ms",
    "temporal_ms",
    "depformer_ms",
    "layer_ms",
    "bytes_by_kind",
    "layer_bytes",
    "peak_rss_mb",
    "floor_ms",
    "floor_ratio",
    "extrapolated",
}


def check_report(report: dict) -> list[str]:
    """Problems with a suite report (empty list = well formed)."""
    problems = [f"missing top-level key {k!r}" for k in sorted(REPORT_KEYS - set(report))]
    lm = report.get("parts", {}).get("lm")
    if lm is not None:
        for i, r in enumerate(lm.get("results", [])):
            if "error" in r:
                continue
            missing = LM_RESULT_KEYS - set(r)
            if missing:
                problems.append(f"lm result {i} ({r.get('impl')}/{r.get('fmt')}) lacks {sorted(missing)}")
            for k in ("step_ms", "temporal_ms", "depformer_ms"):
                s = r.get(k)
                if not isinstance(s, dict) or not {"median", "p90", "n"} <= set(s):
                    problems.append(f"lm result {i}: {k} is not a summary")
    return problems
