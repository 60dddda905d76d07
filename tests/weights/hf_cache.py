"""Model files as users hold them, for the resolver's tests: a Hugging Face cache laid out
exactly as huggingface_hub leaves it (`models--owner--name/{blobs,snapshots/<commit>,refs/main}`,
and `.no_exist/<commit>/<file>` for files it asked for and the repo lacks), the published
repos' real file names, and weights in their real key layouts:

- at full size with a real header and no data (`header_only`: a sparse file, never read),
  for what depends on full-size shapes (preset detection, quantization, fit);
- narrow (`narrow_preset`), with random data, for loading and running end to end.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from mlx.utils import tree_flatten

from moshi_mlx.models import Lm
from moshi_mlx.models.config import LmConfig, preset
from moshi_mlx.weights.lm_keys import pytorch_layout
from moshi_mlx.weights.quantize import QuantSpec, apply_quantization, in_features, quantizable_modules

COMMIT = "5a1b7c0e9d3f2a4b6c8d0e1f2a3b4c5d6e7f8a9b"
_ITEM = {"BF16": 2, "F32": 4, "U32": 4, "F16": 2}


def add_repo(
    cache: Path, repo: str, files: dict[str, Path], *, absent: tuple[str, ...] = (), refs: bool = True
) -> Path:
    """Put `files` (name in the repo -> a local file, hard-linked as its blob) into the cache
    as repo `repo`'s main revision; `absent`: names recorded as missing (`.no_exist`), as
    huggingface_hub records a file it asked for that the repo lacks. Returns the snapshot."""
    root = cache / ("models--" + repo.replace("/", "--"))
    snap = root / "snapshots" / COMMIT
    snap.mkdir(parents=True, exist_ok=True)
    (root / "blobs").mkdir(exist_ok=True)
    if refs:
        (root / "refs").mkdir(exist_ok=True)
        (root / "refs" / "main").write_text(COMMIT)
    for name, src in files.items():
        blob = root / "blobs" / hashlib.sha256(f"{repo}/{name}".encode()).hexdigest()
        if not blob.exists():
            try:
                os.link(src, blob)
            except OSError:
                blob.write_bytes(Path(src).read_bytes())
        link = snap / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    for name in absent:
        mark = root / ".no_exist" / COMMIT / name
        mark.parent.mkdir(parents=True, exist_ok=True)
        mark.touch()
    return snap


class FakeHub(dict):
    """What `fake_hub` serves (repo -> {name in the repo: local file}), and `asked`: the
    (repo, name) of every download asked of it, in order (cache lookups are not asked)."""

    def __init__(self):
        super().__init__()
        self.asked: list[tuple[str, str]] = []


@pytest.fixture
def fake_hub(tmp_path, monkeypatch) -> FakeHub:
    """A Hub that serves its repos into an empty cache on demand, as huggingface_hub does
    online: a file is in the cache once it was asked for; one the repo lacks is the Hub's
    EntryNotFoundError. `list_repo_files` lists a repo's names (a repo it lacks: an error, as
    the Hub's 404)."""
    import huggingface_hub
    import huggingface_hub.constants as c

    from moshi_mlx.weights import hub

    cache, repos = tmp_path / "hf", FakeHub()

    def download(repo, filename, **kw):
        snap = cache / ("models--" + repo.replace("/", "--")) / "snapshots"
        if kw.get("local_files_only"):
            hit = [p for p in snap.glob(f"*/{filename}") if p.is_file()]
            if not hit:
                raise huggingface_hub.errors.LocalEntryNotFoundError(f"{filename} is not cached")
            return str(hit[0])
        repos.asked.append((repo, filename))
        if filename not in repos.get(repo, {}):
            raise huggingface_hub.errors.EntryNotFoundError(f"{repo} has no {filename}")
        hit = [p for p in snap.glob(f"*/{filename}") if p.is_file()]  # current: the cached copy
        return str(hit[0] if hit else add_repo(cache, repo, {filename: repos[repo][filename]}) / filename)

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", False)
    for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setattr(hub, "_hub_unreachable", lambda: False)

    def list_files(repo, **kw):
        if repo not in repos:
            raise OSError(f"404: {repo} is not on this Hub")
        return sorted(repos[repo])

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    monkeypatch.setattr(huggingface_hub, "list_repo_files", list_files)
    return repos


def header_only(path: Path, layout: dict[str, tuple[str, tuple[int, ...]]]) -> Path:
    """A safetensors file with a real header for `layout` (name -> (dtype, shape)) and no
    data: the file has its full size but is sparse, so a 15 GB checkpoint costs nothing."""
    header, offset = {}, 0
    for name, (dtype, shape) in layout.items():
        n = int(np.prod(shape, dtype=np.int64)) * _ITEM[dtype]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        f.truncate(8 + len(raw) + offset)
    return path


def mlx_layout(cfg: LmConfig, bits: int | None = None, group: int | None = None) -> dict:
    """The published MLX layout of `cfg`: bf16, or upstream's `nn.quantize(bits, group)` over
    every Linear and embedding (packed uint32 weights, bf16 scales and biases)."""
    model = Lm(cfg)  # lazy: shapes only
    if bits is not None:
        apply_quantization(
            model,
            {p: QuantSpec(bits, group) for p, m in quantizable_modules(model).items() if in_features(m) % group == 0},
        )
    out = {}
    for name, arr in tree_flatten(model.parameters()):
        packed = bits is not None and name.endswith(".weight") and str(arr.dtype) == "mlx.core.uint32"
        f32 = name.startswith("condition_provider.")
        out[name] = ("U32" if packed else "F32" if f32 else "BF16", tuple(arr.shape))
    return out


def torch_layout(cfg: LmConfig) -> dict:
    """The released PyTorch layout of `cfg` in bf16."""
    return {n: ("BF16", tuple(s)) for n, s in sorted(pytorch_layout(cfg).items())}


NARROW = dict(
    dim=64,
    num_heads=2,
    num_layers=1,
    depformer_dim=64,
    depformer_num_heads=2,
    depformer_num_layers=1,
    depformer_dim_feedforward=192,
    context=64,
)


def narrow_preset(name: str, **over) -> dict:
    """Preset `name`'s config.json keys at narrow widths: every structural feature kept
    (streams, delays, cards, schedule, heads, names), widths small enough to run here."""
    d = preset(name).to_dict()
    for k, v in {**NARROW, **over}.items():
        if k.startswith("depformer") and not d.get("dep_q"):
            continue
        d[k] = v
    if isinstance(d.get("depformer_dim_feedforward"), list):
        d["depformer_dim_feedforward"] = [NARROW["depformer_dim_feedforward"]] * len(d["depformer_dim_feedforward"])
    return d
