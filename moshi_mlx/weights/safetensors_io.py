"""The one place that reads and writes safetensors files.

Headers are parsed and checked here (so a truncated download or a wrong file is a clear
`WeightsError`, never an MLX stack trace), and tensors can be read one at a time from a
memory map, which keeps conversion of a 15 GB checkpoint within a few GB of RAM.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import mlx.core as mx
import numpy as np

from .errors import WeightsError
from .hub import broken_link, stand_in

# safetensors dtype -> (numpy dtype used to read the bytes, mlx dtype of the result)
_DTYPES = {
    "F64": (np.float64, mx.float32),  # MLX has no float64 on every backend: read as fp32
    "F32": (np.float32, mx.float32),
    "F16": (np.float16, mx.float16),
    "BF16": (np.uint16, mx.bfloat16),
    "I64": (np.int64, mx.int64),
    "I32": (np.int32, mx.int32),
    "I16": (np.int16, mx.int16),
    "I8": (np.int8, mx.int8),
    "U64": (np.uint64, mx.uint64),
    "U32": (np.uint32, mx.uint32),
    "U16": (np.uint16, mx.uint16),
    "U8": (np.uint8, mx.uint8),
    "BOOL": (np.bool_, mx.bool_),
}
_MX_TO_ST = {
    mx.float32: "F32",
    mx.float16: "F16",
    mx.bfloat16: "BF16",
    mx.int64: "I64",
    mx.int32: "I32",
    mx.int16: "I16",
    mx.int8: "I8",
    mx.uint64: "U64",
    mx.uint32: "U32",
    mx.uint16: "U16",
    mx.uint8: "U8",
    mx.bool_: "BOOL",
}
_MAX_HEADER = 100 * 1024 * 1024
# attributes PyTorch wrappers put in every parameter name of the model they wrap:
# DistributedDataParallel / DataParallel (`module.`), torch.compile (`_orig_mod.`), FSDP
# (`_fsdp_wrapped_module.`) and activation checkpointing (`_checkpoint_wrapped_module.`), in
# front of the names or of a wrapped submodule's (`transformer._orig_mod.layers.0...`,
# `transformer.layers.0._fsdp_wrapped_module._checkpoint_wrapped_module.self_attn...`)
WRAPPER_NAMES = frozenset({"module", "_orig_mod", "_fsdp_wrapped_module", "_checkpoint_wrapped_module"})


def unwrapped_names(names) -> dict[str, str]:
    """Stored name -> the name without PyTorch wrapper parts (`WRAPPER_NAMES`), for every
    name that carries one: a fine-tune saved from a wrapped model (DDP, FSDP, activation
    checkpointing, torch.compile) holds the model's names behind them. No published Moshi,
    Mimi or LoRA name has such a part, so they are dropped wherever they are; {} when no name carries one, or when dropping them
    would make two names one (the names are then left as stored, for the fit to name)."""
    names = list(names)
    out = {}
    for n in names:
        parts = n.split(".")
        if any(p in WRAPPER_NAMES for p in parts[:-1]):
            out[n] = ".".join(p for i, p in enumerate(parts) if i == len(parts) - 1 or p not in WRAPPER_NAMES)
    if out and len({out.get(n, n) for n in names}) != len(names):
        return {}
    return out


class SafetensorsFile:
    """A validated, lazily-read safetensors file."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.exists():
            raise broken_link(self.path) or WeightsError(f"weights file not found: {self.path}")
        if self.path.is_dir():
            raise WeightsError(f"expected a .safetensors file but {self.path} is a directory")
        size = self.path.stat().st_size
        other = stand_in(self.path)
        if other is not None:
            raise WeightsError(f"{self.path} is {other}")
        with open(self.path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise WeightsError(f"{self.path} is not a safetensors file (only {size} bytes)")
            (n,) = struct.unpack("<Q", head)
            if n == 0 or n > _MAX_HEADER or n > size - 8:
                raise WeightsError(
                    f"{self.path} is not a safetensors file (or it is truncated): "
                    f"bad header length {n} for a file of {size} bytes"
                )
            raw = f.read(n)
        try:
            header = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise WeightsError(f"{self.path} is not a safetensors file: its header is not JSON") from None
        if not isinstance(header, dict):
            raise WeightsError(f"{self.path} is not a safetensors file: its header is not a JSON object")
        self.metadata: dict[str, str] = header.pop("__metadata__", None) or {}
        self._data_start = 8 + n
        self.tensors: dict[str, dict] = {}
        end = 0
        for name, info in header.items():
            try:
                dtype, shape, (lo, hi) = info["dtype"], list(info["shape"]), info["data_offsets"]
            except (TypeError, KeyError, ValueError):
                raise WeightsError(f"{self.path}: malformed header entry for tensor {name!r}") from None
            if dtype not in _DTYPES:
                raise WeightsError(f"{self.path}: tensor {name!r} has unsupported dtype {dtype}")
            itemsize = np.dtype(_DTYPES[dtype][0]).itemsize
            if hi - lo != int(np.prod(shape, dtype=np.int64)) * itemsize or lo < 0:
                raise WeightsError(f"{self.path}: tensor {name!r} has inconsistent size in the header")
            self.tensors[name] = {"dtype": dtype, "shape": tuple(shape), "offsets": (lo, hi)}
            end = max(end, hi)
        if self._data_start + end > size:
            raise WeightsError(
                f"{self.path} is truncated: its header describes {self._data_start + end} bytes "
                f"but the file has {size} (re-download it)"
            )
        # a DDP / torch.compile fine-tune: its tensors under the model's own names (one place
        # for every reader: layout detection, the LM and Mimi loaders, LoRA, convert)
        renamed = unwrapped_names(self.tensors)
        self.tensors = {renamed.get(k, k): v for k, v in self.tensors.items()}
        self.stored_names = {v: k for k, v in renamed.items()}  # name -> name in the file, where they differ

    def keys(self) -> list[str]:
        return list(self.tensors)

    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    def __len__(self) -> int:
        return len(self.tensors)

    def shape(self, name: str) -> tuple[int, ...]:
        return self.tensors[name]["shape"]

    def dtype(self, name: str) -> str:
        return self.tensors[name]["dtype"]

    def nbytes(self, name: str) -> int:
        lo, hi = self.tensors[name]["offsets"]
        return hi - lo

    def load(self, name: str) -> mx.array:
        """Read one tensor (memory-mapped, so only this tensor's bytes are touched)."""
        info = self.tensors[name]
        np_dtype, mx_dtype = _DTYPES[info["dtype"]]
        lo, hi = info["offsets"]
        count = (hi - lo) // np.dtype(np_dtype).itemsize
        if count == 0:
            return mx.zeros(info["shape"], dtype=mx_dtype)
        data = np.memmap(self.path, dtype=np_dtype, mode="r", offset=self._data_start + lo, shape=(count,))
        arr = mx.array(np.ascontiguousarray(data).reshape(info["shape"]))
        del data
        if info["dtype"] == "BF16":
            arr = arr.view(mx.bfloat16)
        elif info["dtype"] == "F64":
            arr = arr.astype(mx.float32)
        return arr

    def load_all(self) -> dict[str, mx.array]:
        return {k: self.load(k) for k in self.tensors}


def load_safetensors(path: str | os.PathLike) -> tuple[dict[str, mx.array], dict[str, str]]:
    """Validate and load every tensor: (tensors, metadata)."""
    f = SafetensorsFile(path)
    return f.load_all(), f.metadata


def save_safetensors(
    path: str | os.PathLike, tensors: dict[str, mx.array], metadata: dict[str, str] | None = None
) -> None:
    mx.save_safetensors(str(path), tensors, metadata={k: str(v) for k, v in (metadata or {}).items()})


class SafetensorsWriter:
    """Write tensors one at a time (header first, sizes known up front), so a converter
    never holds the whole output in memory."""

    def __init__(
        self,
        path: str | os.PathLike,
        layout: dict[str, tuple[str, tuple[int, ...]]],
        metadata: dict[str, str] | None = None,
    ):
        self.path = Path(path)
        header: dict = {}
        if metadata:
            header["__metadata__"] = {k: str(v) for k, v in metadata.items()}
        offset = 0
        self._order = list(layout)
        for name in self._order:
            dtype, shape = layout[name]
            nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(_DTYPES[dtype][0]).itemsize
            header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
            offset += nbytes
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        self._layout = layout
        self._next = 0
        self._fh = open(self.path, "wb")
        self._fh.write(struct.pack("<Q", len(raw)))
        self._fh.write(raw)

    def write(self, name: str, arr: mx.array) -> None:
        expected = self._order[self._next]
        if name != expected:
            raise ValueError(f"tensors must be written in layout order: expected {expected!r}, got {name!r}")
        dtype, shape = self._layout[name]
        if tuple(arr.shape) != tuple(shape) or _MX_TO_ST.get(arr.dtype) != dtype:
            raise ValueError(f"{name}: got {arr.dtype}{tuple(arr.shape)}, layout says {dtype}{tuple(shape)}")
        if arr.dtype == mx.bfloat16:
            arr = arr.view(mx.uint16)
        mx.eval(arr)
        view = memoryview(arr)
        if view.c_contiguous:
            self._fh.write(view)  # straight from MLX's buffer: no copy of a tensor that may be 100s of MB
        else:
            self._fh.write(np.array(arr).tobytes())
        del view
        self._next += 1

    def close(self) -> None:
        if self._next != len(self._order):
            self._fh.close()
            raise ValueError(f"{self.path}: only {self._next} of {len(self._order)} tensors were written")
        self._fh.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self._fh.close()
            return False
        self.close()
        return False


def mx_to_safetensors_dtype(dtype: mx.Dtype) -> str:
    return _MX_TO_ST[dtype]
