"""The memory-bandwidth floor of a frame step.

A decoding step reads every weight once, so it can go no faster than
`weight bytes / bandwidth`. This measures the bandwidth MLX itself reaches on a large
matrix-vector product (8192 x 4096) of each storage kind, with a given activation dtype,
on this machine, so step times can be reported as a ratio to that floor.

Kinds are named as bench/weight_bytes.py names them: fp32, bf16, fp16, and
q<bits>g<group>-<scales dtype> for affine quantized weights (q8g64-bf16, q4g32-bf16, ...).
Two figures per kind: one product on one stream (the floor's definition: what one MLX op
reaches, on one core) and the product split in two halves of rows on two CPU streams (what
MLX reaches with two cores; only meaningful when no other process holds the second core).

Standalone (imports only mlx and numpy): the suite also runs it with upstream's MLX.

    python bench/floor.py [--kinds fp32,bf16,q8g64-bf16] [--acts float32,bfloat16] [--json]
"""

from __future__ import annotations

import argparse
import json
import re
import time

import mlx.core as mx
import numpy as np

DTYPES = {
    "fp32": mx.float32,
    "bf16": mx.bfloat16,
    "fp16": mx.float16,
    "float32": mx.float32,
    "bfloat16": mx.bfloat16,
    "float16": mx.float16,
}
DEFAULT_KINDS = ("fp32", "bf16", "q8g64-bf16", "q4g32-bf16")
_Q = re.compile(r"^q(\d)g(\d+)-(fp32|bf16|fp16)$")


def _weights(kind: str, out_dim: int, in_dim: int):
    """(arrays, bits, group) for `kind`; arrays = (w,) or (w, scales, biases)."""
    w = mx.random.normal((out_dim, in_dim), key=mx.random.key(0)) * 0.02
    if kind in ("fp32", "bf16", "fp16"):
        w = w.astype(DTYPES[kind])
        mx.eval(w)
        return (w,), None, None
    m = _Q.match(kind)
    if not m:
        raise ValueError(f"unknown storage kind {kind!r}")
    bits, group, sdt = int(m.group(1)), int(m.group(2)), DTYPES[m.group(3)]
    q = mx.quantize(w.astype(sdt), group_size=group, bits=bits)
    mx.eval(q)
    return tuple(q), bits, group


def _time(fn, repeats: int) -> float:
    for _ in range(3):
        mx.eval(fn())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        mx.eval(fn())
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def matvec_bandwidth(
    kind: str, act: str = "float32", out_dim: int = 8192, in_dim: int = 4096, repeats: int = 15, split: bool = False
) -> dict:
    """GB/s of y = W x for one token, W stored as `kind`, x in `act`; median over `repeats`.
    split: two halves of the rows on two CPU streams."""
    arrays, bits, group = _weights(kind, out_dim, in_dim)
    nbytes = sum(a.nbytes for a in arrays)
    x = mx.random.normal((1, in_dim), key=mx.random.key(1)).astype(DTYPES[act])
    mx.eval(x)
    side = mx.new_stream(mx.cpu) if split else None
    if bits is None:
        w = arrays[0]
        if split:
            h = out_dim // 2
            lo, hi = w[:h], w[h:]

            def run():
                return mx.concatenate([x @ lo.T, mx.matmul(x, hi.T, stream=side)], axis=-1)
        else:

            def run():
                return x @ w.T
    elif split:
        h = out_dim // 2
        lo, hi = [a[:h] for a in arrays], [a[h:] for a in arrays]

        def run():
            return mx.concatenate(
                [
                    mx.quantized_matmul(x, *lo, transpose=True, group_size=group, bits=bits),
                    mx.quantized_matmul(x, *hi, transpose=True, group_size=group, bits=bits, stream=side),
                ],
                axis=-1,
            )
    else:

        def run():
            return mx.quantized_matmul(x, *arrays, transpose=True, group_size=group, bits=bits)

    t = _time(run, repeats)
    return {
        "kind": kind,
        "act": act,
        "split": split,
        "shape": [out_dim, in_dim],
        "weight_bytes": int(nbytes),
        "seconds": t,
        "gb_per_s": nbytes / t / 1e9,
    }


def measure(kinds=DEFAULT_KINDS, acts=("float32", "bfloat16"), split: bool = True, repeats: int = 15) -> dict:
    """{'kind@act': GB/s} for one stream, plus {'kind@act': GB/s} split over two streams,
    and the raw rows."""
    one, two, rows = {}, {}, []
    for kind in kinds:
        for act in acts:
            r = matvec_bandwidth(kind, act, repeats=repeats)
            rows.append(r)
            one[f"{kind}@{act}"] = r["gb_per_s"]
            if split:
                r2 = matvec_bandwidth(kind, act, repeats=repeats, split=True)
                rows.append(r2)
                two[f"{kind}@{act}"] = r2["gb_per_s"]
    return {"mlx": mx.__version__, "one_stream": one, "two_streams": two, "rows": rows}


def floor_seconds(weight_bytes: int, gb_per_s: float) -> float:
    return weight_bytes / (gb_per_s * 1e9)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kinds", default=",".join(DEFAULT_KINDS))
    ap.add_argument("--acts", default="float32,bfloat16")
    ap.add_argument("--no-split", action="store_true")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--json", action="store_true", help="print one JSON object (for the suite)")
    a = ap.parse_args(argv)
    res = measure(a.kinds.split(","), a.acts.split(","), split=not a.no_split, repeats=a.repeats)
    if a.json:
        print(json.dumps(res))
        return
    print(f"MLX {res['mlx']}: GB/s of an 8192 x 4096 mat-vec")
    for key, gbps in res["one_stream"].items():
        two = res["two_streams"].get(key)
        print(f"  {key:24s} {gbps:6.2f}" + (f"   two streams {two:6.2f}" if two else ""))


if __name__ == "__main__":
    main()
