"""PyTorch int8 checkpoints (`quantize: true`, kyutai-labs/moshi `scripts/export_quantized.py`,
e.g. kyutai/moshiko-pytorch-q8): read as float weights.

The exporter replaces every `nn.Linear` of the bfloat16 model by moshi's bitsandbytes
`QLinear` and saves its state: `M.weight` int8 [out, in] (`int8_vectorwise_quant`:
round(127 W / absmax) per row) and `M.weight_scb` float32 [out] (the rows' absmax). A row
stands for `weight * weight_scb / 127`; `Int8Source` returns exactly bitsandbytes'
`int8_vectorwise_dequant` of it (`(CB * SCB) * 7.874015718698502e-3` in float32), then the
model dtype, so the rest is the normal loading / conversion path. (moshi runs these with
int8 activations too, which is not reproduced: the weights are the file's, the arithmetic
ours.)
"""

from __future__ import annotations

import mlx.core as mx

from .errors import WeightsError

SCB = "_scb"
_INV_127 = 7.874015718698502e-3  # bitsandbytes' constant (functional.int8_vectorwise_dequant)
_ST = {mx.bfloat16: "BF16", mx.float16: "F16", mx.float32: "F32"}


def is_int8_file(f) -> bool:
    return any(k.endswith(SCB) for k in f.keys())


class Int8Source:
    """`f` with each int8 weight and its `_scb` scales read as one float tensor (scales keys
    hidden), in `dtype` (default: the file's other float tensors' dtype, bfloat16 as
    exported). The read interface of `SafetensorsFile` / `ArraySource`."""

    def __init__(self, f, dtype: mx.Dtype | None = None):
        self.base = f
        self.path = f.path
        keys = f.keys()
        self.scb = {k[: -len(SCB)]: k for k in keys if k.endswith(SCB)}
        for w, s in self.scb.items():
            if w not in f:
                raise WeightsError(f"{f.path.name}: {s} has no int8 weight {w} beside it")
            ws, ss = tuple(f.shape(w)), tuple(f.shape(s))
            if len(ws) != 2 or ss != (ws[0],):
                raise WeightsError(f"{f.path.name}: {s} {list(ss)} does not hold one scale per row of {w} {list(ws)}")
            if hasattr(f, "dtype") and f.dtype(w) != "I8":
                raise WeightsError(f"{f.path.name}: {w} has dtype {f.dtype(w)}, expected int8 beside {s}")
        if dtype is None:
            floats = (
                [
                    f.dtype(k)
                    for k in keys
                    if k not in self.scb and not k.endswith(SCB) and f.dtype(k) in ("BF16", "F16", "F32")
                ]
                if hasattr(f, "dtype")
                else []
            )
            dtype = (
                {"F16": mx.float16, "F32": mx.float32}.get(max(set(floats), key=floats.count), mx.bfloat16)
                if floats
                else mx.bfloat16
            )
        self.out_dtype = dtype
        self._keys = [k for k in keys if not k.endswith(SCB)]

    def keys(self) -> list[str]:
        return list(self._keys)

    def __contains__(self, key: str) -> bool:
        return key in self.base and not key.endswith(SCB)

    def shape(self, key: str) -> tuple[int, ...]:
        return self.base.shape(key)

    def dtype(self, key: str) -> str:
        return _ST[self.out_dtype] if key in self.scb else self.base.dtype(key)

    def __getattr__(self, name: str):  # nbytes(), tensors, metadata: the file's
        return getattr(self.base, name)

    def load(self, key: str) -> mx.array:
        w = self.base.load(key)
        if key not in self.scb:
            return w
        if w.dtype != mx.int8:
            raise WeightsError(f"{self.path.name}: {key} is {w.dtype}, expected int8 beside {self.scb[key]}")
        scb = self.base.load(self.scb[key]).astype(mx.float32)
        return ((w.astype(mx.float32) * scb[:, None]) * mx.array(_INV_127, mx.float32)).astype(self.out_dtype)


def dequantized(f, dtype: mx.Dtype | None = None):
    """`f`, or its float view when it is a PyTorch int8 checkpoint."""
    return Int8Source(f, dtype) if is_int8_file(f) else f
