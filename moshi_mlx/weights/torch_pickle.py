"""Read tensors from a PyTorch `torch.save` file without torch (PersonaPlex's voice presets).

A `.pt` file is a zip: `<name>/data.pkl` pickles the object, tensors refer to storages
`<name>/data/<key>` (raw little-endian bytes). The unpickler here is restricted: it resolves
only the handful of globals a saved tensor needs (`torch._utils._rebuild_tensor_v2`, the
typed storage classes, OrderedDict) and refuses anything else, so a file can never make it
run code; tensors come back as numpy arrays (bfloat16 widened exactly to float32).
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from pathlib import Path

import numpy as np

from .errors import WeightsError

# torch storage class -> (numpy dtype of the raw bytes, bfloat16 that numpy lacks)
_STORAGES = {
    "FloatStorage": ("<f4", False),
    "DoubleStorage": ("<f8", False),
    "HalfStorage": ("<f2", False),
    "BFloat16Storage": ("<u2", True),
    "LongStorage": ("<i8", False),
    "IntStorage": ("<i4", False),
    "ShortStorage": ("<i2", False),
    "CharStorage": ("i1", False),
    "ByteStorage": ("u1", False),
    "BoolStorage": ("?", False),
}


class _Storage:
    def __init__(self, name: str):
        self.name = name


def _rebuild_tensor(storage: np.ndarray, offset: int, size, stride, *_):
    """torch._utils._rebuild_tensor_v2 for a numpy storage (strides in elements)."""
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if not size:
        return storage[offset].copy()
    item = storage.itemsize
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=size, strides=tuple(s * item for s in stride))
    return np.array(view)


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str):
        super().__init__(io.BytesIO(data))
        self.archive, self.prefix = archive, prefix
        self.loaded: dict[str, np.ndarray] = {}

    def find_class(self, module: str, name: str):
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch" and name in _STORAGES:
            return _Storage(name)
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        raise WeightsError(f"refusing to load {module}.{name} from a torch file (only tensors and dicts are read)")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and isinstance(pid[1], _Storage)):
            raise WeightsError(f"unsupported storage reference in a torch file: {pid!r}"[:200])
        kind, key = pid[1].name, str(pid[2])
        if key not in self.loaded:
            raw = self.archive.read(f"{self.prefix}/data/{key}")
            dtype, bf16 = _STORAGES[kind]
            arr = np.frombuffer(raw, dtype=dtype)
            if bf16:  # the high half of a float32
                arr = (arr.astype(np.uint32) << 16).view(np.float32)
            self.loaded[key] = arr
        return self.loaded[key]


class _Named:
    def __init__(self, name: str):
        self.name = name


def load_torch_file(path, name: str | None = None):
    """The object saved in `path` (a path or a binary file object; dicts, lists, tensors as
    numpy arrays). name: what error messages call it (default: the file name)."""
    is_file = hasattr(path, "read")
    p = _Named(name or (Path(path).name if not is_file else "torch file"))
    try:
        with zipfile.ZipFile(path if is_file else Path(path)) as archive:
            pkl = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
            if len(pkl) != 1:
                raise WeightsError(f"{p.name}: not a torch.save file (no <name>/data.pkl)")
            prefix = pkl[0].split("/")[0]
            order = archive.read(f"{prefix}/byteorder") if f"{prefix}/byteorder" in archive.namelist() else b"little"
            if order.strip() != b"little":
                raise WeightsError(f"{p.name}: big-endian torch files are not supported")
            return _Unpickler(archive.read(pkl[0]), archive, prefix).load()
    except WeightsError:
        raise
    except zipfile.BadZipFile:
        raise WeightsError(
            f"{p.name}: not a torch.save file (not a zip archive; legacy pickles are not read)"
        ) from None
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError) as e:
        raise WeightsError(f"{p.name}: unreadable torch file ({type(e).__name__}: {e})".splitlines()[0]) from None
