"""The memory-bandwidth floor of a frame step.

A decoding step reads every weight once, so it can go no faster than
`weight bytes / bandwidth`. This measures the bandwidth MLX itself reaches on a large
matrix-vector product of each storage format (fp32, bf16, q8, q4, affine), on this machine,
so step times can be reported as a ratio to that floor.
"""

from __future__ import annotations

import argparse
import json
import time

import mlx.core as mx
import numpy as np

FORMATS = {  # name -> (dtype, bits, group size)
    "fp32": (mx.float32, None, None),
    "bf16": (mx.bfloat16, None, None),
    "q8": (mx.bfloat16, 8, 64),
    "q4": (mx.bfloat16, 4, 32),
}


def _weights(fmt: str, out_dim: int, in_dim: int):
    dtype, bits, group = FORMATS[fmt]
    w = (mx.random.normal((out_dim, in_dim)) * 0.02).astype(dtype)
    if bits is None:
        mx.eval(w)
        return (w,), w.nbytes
    q = mx.quantize(w, group_size=group, bits=bits)
    mx.eval(q)
    return q, sum(a.nbytes for a in q)


def matvec_bandwidth(fmt: str, out_dim: int = 8192, in_dim: int = 4096, act_dtype=None, repeats: int = 20) -> dict:
    """GB/s of y = W x for one token, W stored as `fmt`; median over `repeats` runs."""
    dtype, bits, group = FORMATS[fmt]
    act_dtype = act_dtype or (mx.float32 if fmt == "fp32" else dtype)
    w, nbytes = _weights(fmt, out_dim, in_dim)
    x = mx.random.normal((1, in_dim)).astype(act_dtype)
    mx.eval(x)

    def run():
        if bits is None:
            return x @ w[0].T
        return mx.quantized_matmul(x, *w, transpose=True, group_size=group, bits=bits)

    for _ in range(3):
        mx.eval(run())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        mx.eval(run())
        times.append(time.perf_counter() - t0)
    t = float(np.median(times))
    return {"format": fmt, "shape": [out_dim, in_dim], "weight_bytes": int(nbytes), "seconds": t,
            "gb_per_s": nbytes / t / 1e9, "activation_dtype": str(act_dtype)}


def measure_all(out_dim: int = 8192, in_dim: int = 4096, act_dtype=None) -> dict[str, dict]:
    return {f: matvec_bandwidth(f, out_dim, in_dim, act_dtype) for f in FORMATS}


def floor_seconds(weight_bytes: int, gb_per_s: float) -> float:
    return weight_bytes / (gb_per_s * 1e9)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out-dim", type=int, default=8192)
    ap.add_argument("--in-dim", type=int, default=4096)
    ap.add_argument("--fp32-activations", action="store_true", help="run q8/q4/bf16 products with fp32 activations")
    args = ap.parse_args()
    res = measure_all(args.out_dim, args.in_dim, mx.float32 if args.fp32_activations else None)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
