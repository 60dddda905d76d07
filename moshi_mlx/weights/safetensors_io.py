"""The one place that reads and writes safetensors files.

Headers are parsed and checked here (so a truncated download or a wrong file is a clear
`WeightsError`, never an MLX stack trace), and tensors can be read one at a time from a
memory map, which keeps conversion of a 15 GB checkpoint within a few GB of RAM.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path, PurePosixPath
from typing import Callable

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


# the first part of every published name: the LM's (PyTorch and MLX layouts, every preset),
# hence LoRA adapters', and the Mimi's (tests/weights/test_user_checkpoints.py checks it)
MODEL_ROOTS = frozenset(
    {
        "audio_embs",
        "condition_provider",
        "depformer",
        "depformer_emb",
        "depformer_in",
        "depformer_norms",
        "depformer_text_emb",
        "emb",
        "extra_heads",
        "linears",
        "out_norm",
        "text_emb",
        "text_linear",
        "transformer",
        "decoder",
        "decoder_transformer",
        "downsample",
        "encoder",
        "encoder_transformer",
        "quantizer",
        "upsample",
    }
)


def _container_prefix(names: list[str]) -> str:
    """The attribute path every name sits behind when a training module held the model as
    one attribute (a Lightning module's `self.model`: `model.transformer.layers.0...`), or
    "": the first parts in front of which every name is a published one."""
    prefix = ""
    while all(n.startswith(prefix) and "." in n[len(prefix) :] for n in names):
        heads = {n[len(prefix) :].split(".", 1)[0] for n in names}
        if len(heads) != 1 or heads <= MODEL_ROOTS:
            break
        prefix += heads.pop() + "."
    return prefix if prefix and {n[len(prefix) :].split(".", 1)[0] for n in names} <= MODEL_ROOTS else ""


def unwrapped_names(names) -> dict[str, str]:
    """Stored name -> the model's name, for every name that differs: a fine-tune saved from a
    wrapped model (DDP, FSDP, activation checkpointing, torch.compile) holds the model's names
    behind wrapper parts (`WRAPPER_NAMES`), dropped wherever they are (no published Moshi,
    Mimi or LoRA name has one); one saved from a training module holding the model as an
    attribute holds them behind its path (`model.`), dropped when every name has it and is a
    published name after it (`MODEL_ROOTS`). {} when no name changes, or when two names would
    become one (the names are then left as stored, for the fit to name)."""
    names = list(names)
    out = {}
    for n in names:
        parts = n.split(".")
        if any(p in WRAPPER_NAMES for p in parts[:-1]):
            out[n] = ".".join(p for i, p in enumerate(parts) if i == len(parts) - 1 or p not in WRAPPER_NAMES)
    prefix = _container_prefix([out.get(n, n) for n in names]) if names else ""
    if prefix:
        out = {n: out.get(n, n)[len(prefix) :] for n in names}
    if out and len({out.get(n, n) for n in names}) != len(names):
        return {}
    return out


class _TensorTable:
    """What a single file and a sharded checkpoint answer alike, from `tensors` (name ->
    dtype, shape, offsets): the readers take either without asking which."""

    tensors: dict[str, dict]

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

    def load(self, name: str) -> mx.array:
        raise NotImplementedError

    def load_all(self) -> dict[str, mx.array]:
        return {k: self.load(k) for k in self.tensors}


class SafetensorsFile(_TensorTable):
    """A validated, lazily-read safetensors file."""

    def __init__(self, path: str | os.PathLike, gguf: str | None = None):
        """`gguf`: what to take instead of a GGUF file (default: the Moshi LM's, `gguf_instead`)."""
        self.path = Path(path)
        if not self.path.exists():
            raise broken_link(self.path) or WeightsError(f"weights file not found: {self.path}")
        if self.path.is_dir():
            raise WeightsError(f"expected a .safetensors file but {self.path} is a directory")
        self.size = size = self.path.stat().st_size
        other = stand_in(self.path)
        if other is not None:
            raise WeightsError(f"{self.path} is {other}")
        with open(self.path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise WeightsError(f"{self.path} is not a safetensors file (only {size} bytes)")
            (n,) = struct.unpack("<Q", head)
            if n == 0 or n > _MAX_HEADER or n > size - 8:
                if head.startswith((b"PK\x03\x04", b"\x80\x02\x8a\x0a")):  # torch.save's zip, or its older pickle
                    raise WeightsError(
                        f"{self.path} is a PyTorch pickle (torch.save), not a safetensors file: {SAVE_AS_SAFETENSORS}"
                    )
                if head.startswith(GGUF_MAGIC):  # kyutai's -candle-q8 repos' model.q8.gguf
                    raise WeightsError(f"{self.path} is a GGUF file, not a safetensors file: {gguf or gguf_instead()}")
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


# how to turn a torch.save checkpoint into what is read here (torch is not a dependency)
SAVE_AS_SAFETENSORS = (
    "save its state dict with safetensors.torch.save_file(state_dict, 'model.safetensors') (with torch) "
    "and pass that file"
)
INDEX_SUFFIX = ".index.json"  # a sharded checkpoint's index: `model.safetensors.index.json`
GGUF_SUFFIX, GGUF_MAGIC = ".gguf", b"GGUF"  # candle's (and llama.cpp's) quantized format


def gguf_instead(twin: str | None = None) -> str:
    """What to take instead of a GGUF file, which is not read here (kyutai's -candle-q8 repos
    hold candle's `model.q8.gguf`): the same model's safetensors weights, `twin` when the
    caller knows that repo, else the published -mlx-q8 repos (`PRESETS`)."""
    from ..models.config import PRESETS

    if twin is None:
        q8 = [r for _, repos in PRESETS.values() for r, _ in repos.values() if r.endswith("-mlx-q8")]
        twin = f"the same model's safetensors weights (for kyutai's -candle-q8 Moshi repos: {', '.join(dict.fromkeys(q8))})"
    return f"GGUF (candle's format) is not read here; take {twin}"


def mimi_gguf_instead() -> str:
    """`gguf_instead` for a GGUF file given as the Mimi codec: the Mimi's published
    safetensors file, which every Moshi repo (the -candle- ones too) holds beside its LM."""
    from ..constants import MIMI_NAME, MIMI_REPO

    return (
        f"GGUF (candle's format) is not read here; take Mimi's safetensors file, {MIMI_NAME} "
        f"(in {MIMI_REPO} and every Moshi repo: hf://{MIMI_REPO}/{MIMI_NAME})"
    )


class ShardedSafetensors(_TensorTable):
    """A checkpoint split into shards by an index (`model.safetensors.index.json`, as
    transformers' `save_pretrained` and huggingface_hub's `save_torch_state_dict` write one
    above 5 GB: a 7B fine-tune in bf16 is 3-4 shards), read as one `SafetensorsFile`: every
    shard's header read once, each tensor from its shard."""

    def __init__(self, index: str | os.PathLike, get: Callable[[str], Path] | None = None):
        """`get(name)`: the local path of a shard the index names (default: beside it)."""
        self.path = Path(index)
        if not self.path.is_file():
            raise broken_link(self.path) or WeightsError(f"weights file not found: {self.path}")
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise WeightsError(f"{self.path} is not a shard index: {e}".splitlines()[0]) from None
        where = raw.get("weight_map") if isinstance(raw, dict) else None
        if not isinstance(where, dict) or not where or not all(isinstance(v, str) for v in where.values()):
            raise WeightsError(f"{self.path} is not a shard index: it has no weight_map of tensor -> shard file")
        self.metadata = {k: str(v) for k, v in (raw.get("metadata") or {}).items()}
        self.shards: dict[str, SafetensorsFile] = {}
        for name in sorted(set(where.values())):
            if not _inside(name):
                raise WeightsError(
                    f"{self.path} names the shard {name!r} outside its folder (an absolute path or '..'): "
                    "a shard is named by its path inside the index's folder"
                )
            if get is None:
                shard = self.path.parent / name
                if not shard.exists():
                    raise broken_link(shard) or WeightsError(
                        f"{self.path.name} names the shard {name}, which is not in {self.path.parent}: "
                        "download it (every shard the index names is needed)"
                    )
            else:
                shard = get(name)
            self.shards[name] = SafetensorsFile(shard)
        self.tensors, self.stored_names, self._owner = {}, {}, {}
        for name, f in self.shards.items():
            for key, info in f.tensors.items():
                if key in self._owner:
                    raise WeightsError(
                        f"{self.path.name}: tensor {key!r} is in two shards ({self._owner[key]}, {name})"
                    )
                self.tensors[key], self._owner[key] = info, name
            self.stored_names.update(f.stored_names)
        stored = set(self.tensors) | set(self.stored_names.values())
        lost = sorted(k for k, shard in where.items() if k not in stored)
        if lost:
            raise WeightsError(
                f"{self.path.name} names {len(lost)} tensor(s) its shards do not hold ({lost[0]} in "
                f"{where[lost[0]]}): a shard is of another save; download them again"
            )
        self.size = sum(f.size for f in self.shards.values())

    def nbytes(self, name: str) -> int:
        return self.shards[self._owner[name]].nbytes(name)

    def load(self, name: str) -> mx.array:
        return self.shards[self._owner[name]].load(name)


def _inside(name: str) -> bool:
    """Whether an index's shard name is a path inside the index's folder (a file beside it, or
    in a subfolder: `shards/model-00001-of-00003.safetensors`), never one escaping it (an
    absolute path, `..`, a drive), so an index read from a repo or a folder opens its own files only."""
    p = PurePosixPath(name.replace("\\", "/"))  # (Windows' separator read as one: '..\\x' escapes too)
    return bool(p.parts) and not p.is_absolute() and ".." not in p.parts and ":" not in p.parts[0]


def open_checkpoint(
    path: str | os.PathLike, get: Callable[[str], Path] | None = None
) -> SafetensorsFile | ShardedSafetensors:
    """A weights file, or a sharded checkpoint given by its index (`*.safetensors.index.json`;
    `get` fetches its shards, default: beside it)."""
    if str(path).endswith(INDEX_SUFFIX):
        return ShardedSafetensors(path, get)
    return SafetensorsFile(path)


def shard_names(index: Path) -> set[str]:
    """The shard files a `*.safetensors.index.json` names (empty if it is not an index), so
    a folder's shards are not taken for several weights files."""
    try:
        where = json.loads(index.read_text(encoding="utf-8")).get("weight_map")
        return {v for v in where.values() if isinstance(v, str)}
    except (OSError, ValueError, AttributeError):
        return set()


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
