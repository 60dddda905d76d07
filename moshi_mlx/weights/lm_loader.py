"""`load_lm`: build the LM for a config and fill it from a checkpoint.

The file says what it is: PyTorch or MLX layout (from its key names), and for each module
whether it is quantized and with which bits / group size (from its tensor shapes). Every
problem is a one-line `WeightsError`: missing file, not safetensors, truncated, or weights
that do not fit the config (naming missing / unexpected keys and mismatched shapes).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten

from ..errors import UsageError
from ..models.config import LmConfig
from ..models.lm import Lm
from .errors import WeightsError
from .lm_keys import Source, extra_slice_index, is_pytorch_layout, pytorch_sources, shared_names
from .model_dir import QUANT_KEY, QuantRecord, model_quant_spec, read_model_dir
from .pytorch_int8 import dequantized
from .quantize import QuantSpec, apply_quantization, detect_spec, in_features, quantizable_modules
from .safetensors_io import unwrapped_names

_FLOATS = (mx.float32, mx.float16, mx.bfloat16)


def as_lm_config(cfg: LmConfig | str | os.PathLike | None) -> LmConfig:
    """An LmConfig from a config, a preset name or a config.json path."""
    if cfg is None:
        raise UsageError("no LM config given: pass an LmConfig, a preset name or a config.json path")
    from .resolve import config_from

    return config_from(cfg).cfg


def _listing(names, limit: int = 6) -> str:
    names = sorted(names)
    more = f" (+{len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


class ArraySource:
    """In-memory tensors with the read interface of `SafetensorsFile` (for random models)."""

    def __init__(self, tensors: dict, name: str = "<in-memory weights>", consume: bool = False):
        renamed = unwrapped_names(tensors)  # a DDP / torch.compile model's state_dict()
        if renamed and consume:  # renamed in place: the caller's dict is emptied as promised
            for old, new in renamed.items():
                tensors[new] = tensors.pop(old)
        elif renamed:
            tensors = {renamed.get(k, k): v for k, v in tensors.items()}
        self.tensors = tensors
        self.path = Path(name)
        self.consume = consume  # drop each tensor once copied, so peak memory stays ~1x

    def keys(self) -> list[str]:
        return list(self.tensors)

    def __contains__(self, key: str) -> bool:
        return key in self.tensors

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self.tensors[key].shape)

    def load(self, key: str) -> mx.array:
        arr = mx.array(self.tensors[key])
        if self.consume:
            del self.tensors[key]
        return arr


def _quant_spec(model: Lm, f, pytorch: bool) -> dict[str, QuantSpec]:
    """path -> QuantSpec for every module the MLX-layout file stores quantized."""
    spec: dict[str, QuantSpec] = {}
    if pytorch:
        return spec
    for path, m in quantizable_modules(model).items():
        scales = f"{path}.scales"
        if scales in f and f"{path}.weight" in f:
            spec[path] = detect_spec(
                f"{f.path.name}: {path}",
                in_features(m),
                f.shape(f"{path}.weight"),
                f.shape(scales),
                has_biases=f"{path}.biases" in f,
            )
    return spec


def is_quantized_file(f) -> bool:
    """Whether a checkpoint (SafetensorsFile or ArraySource) holds packed quantized tensors."""
    return any(k.endswith(".scales") for k in f.keys())


def _load_source(f, src: Source, cache: dict[str, mx.array], uses: dict[str, int]) -> mx.array:
    """Read a source tensor; one used by several of our tensors (shared depformer norms,
    stacked per-step weights) is read once and kept until its last use."""
    if src.key in cache:
        full = cache[src.key]
    else:
        full = f.load(src.key)
        if uses[src.key] > 1:
            cache[src.key] = full
    uses[src.key] -= 1
    if uses[src.key] == 0:
        cache.pop(src.key, None)
    arr = full
    if src.chunks > 1:
        n = full.shape[0] // src.chunks
        arr = full[src.index * n : (src.index + 1) * n]
    if src.flatten:
        arr = arr.reshape(-1)
    return arr


def _source_shape(f, src: Source) -> tuple[int, ...]:
    shape = f.shape(src.key)
    if src.chunks > 1:
        if shape[0] % src.chunks:
            return (-1,)
        shape = (shape[0] // src.chunks,) + tuple(shape[1:])
    if src.flatten:
        n = 1
        for s in shape:
            n *= s
        shape = (n,)
    return tuple(shape)


def check_dtype(dtype) -> None:
    """The load dtype: None (as stored) or a float dtype. An integer one loaded and then failed
    inside MLX at the first step; a string (`"float32"`) is moshi_mlx.load's spelling."""
    if dtype is not None and not (isinstance(dtype, mx.Dtype) and dtype in (mx.float32, mx.bfloat16, mx.float16)):
        raise UsageError(f"dtype must be None (as stored) or mx.float32, mx.bfloat16 or mx.float16, got {dtype!r}")


def load_lm(
    weights: str | os.PathLike,
    cfg: LmConfig | str | os.PathLike | None = None,
    *,
    dtype: mx.Dtype | None = None,
    repo: str | None = None,
    lora: str | os.PathLike | None = None,
) -> Lm:
    """Load an LM checkpoint (PyTorch or MLX layout; float, q8, q4 or any supported mix).

    Args:
        weights: A local path, `hf://owner/repo/file`, a file name in `repo`, or a model
            folder (config.json + weights, as written by `moshi_mlx.convert`).
        cfg: An LmConfig, a preset name or a config.json path (default: the folder's, or a
            config.json beside the weights file).
        dtype: Float dtype for the weights (default: as stored in the file).
        repo: The Hub repo `weights` is a file name in.
        lora: A LoRA fine-tune's adapters file, fused into `weights` (the base) at load
            (`weights.lora`); the config must say `lora: true`. Default: the config's
            `lora_name` (else lora.safetensors) beside the config.json, when it says
            `lora: true`.

    Returns:
        The `Lm` as stored: `models.backend.prepare_lm(lm)` puts it in the backend's fast
        compute format and returns the `ComputeFormat` to step it with
        (`LmGen(lm, compute=fmt)`); `moshi_mlx.load` does both.

    Raises:
        UsageError: A bad dtype, a missing file, or weights that do not fit the config.
    """
    from .resolve import resolve_model

    check_dtype(dtype)  # before any file is read
    return load_resolved(resolve_model(repo, weights=weights, config=cfg, lora=lora), dtype=dtype)


def load_model_dir(
    path: str | os.PathLike,
    cfg: LmConfig | str | os.PathLike | None = None,
    *,
    dtype: mx.Dtype | None = None,
    lora: str | os.PathLike | None = None,
) -> Lm:
    """Load a model folder (`load_lm` of a folder that must hold a config.json): its
    config.json names the weights file (`moshi_name`) and records the quantization, which
    is checked against what the tensors say. A LoRA fine-tune's folder (`lora: true`)
    holding its base weights too is fused at load."""
    read_model_dir(path)  # a folder with its config.json, or one line saying what is not there
    return load_lm(path, cfg, dtype=dtype, lora=lora)


def load_lm_state(
    tensors: dict, cfg: LmConfig | str | os.PathLike, *, dtype: mx.Dtype | None = None, consume: bool = False
) -> Lm:
    """Like `load_lm` for tensors already in memory (numpy or mx arrays), either layout.
    consume=True empties `tensors` while loading (halves the peak memory)."""
    check_dtype(dtype)
    return _fill(as_lm_config(cfg), ArraySource(tensors, consume=consume), dtype)


def _unused_pytorch_key(cfg: LmConfig, key: str, pytorch: bool) -> bool:
    """Kyutai's PyTorch LMModel always has `depformer_in` projections, even with no depformer
    (speech-to-text, dep_q = 0), so its checkpoints carry them unused: skipped. PersonaPlex's
    depformer slices past dep_q (`checkpoint_dep_q`) predict the user's codebooks, which are
    always given: skipped too (their share of the stacked attention weights is not read)."""
    if not pytorch:
        return False
    if cfg.dep_q == 0 and key.startswith("depformer_in."):
        return True
    return (
        cfg.checkpoint_dep_q is not None
        and extra_slice_index(key) is not None
        and cfg.dep_q <= extra_slice_index(key) < cfg.checkpoint_dep_q
    )


def match_sources(cfg: LmConfig, f, model: Lm, pytorch: bool) -> tuple[dict[str, tuple[int, ...]], dict[str, Source]]:
    """(our parameter name -> shape, our name -> its Source in `f`), after checking that
    the file holds exactly the tensors `model` needs, with the right shapes."""
    name = f.path.name
    keys = f.keys()
    expected = {k: tuple(v.shape) for k, v in tree_flatten(model.parameters())}
    sources = pytorch_sources(cfg, keys) if pytorch else {k: Source(k) for k in keys}
    missing = [k for k in expected if k not in sources or sources[k].key not in f]
    used = {s.key for k, s in sources.items() if k in expected}
    unexpected = [k for k in keys if k not in used and not _unused_pytorch_key(cfg, k, pytorch)]
    if missing or unexpected:
        parts = []
        if missing:
            shown = [sources[k].key if k in sources else k for k in missing]
            parts.append(f"missing {len(missing)} tensor(s): {_listing(shown)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} tensor(s): {_listing(unexpected)}")
        raise WeightsError(f"{name} does not fit the config ({cfg.source or 'given config'}): " + "; ".join(parts))
    bad = []
    for k, shape in expected.items():
        got = _source_shape(f, sources[k])
        if got != shape:
            bad.append(f"{sources[k].key} {list(got)} vs expected {list(shape)}")
    if bad:
        raise WeightsError(f"{name} does not fit the config: {len(bad)} shape mismatch(es): {_listing(bad, 4)}")
    return expected, sources


def _as_loaded(name: str, arr: mx.array, dtype: mx.Dtype | None) -> mx.array:
    """A file tensor in the dtype the model holds it in: conditioners float32 (as the
    reference keeps them), other floats in `dtype` when one is given."""
    if arr.dtype in _FLOATS:
        if name.startswith("condition_provider."):
            return arr.astype(mx.float32)
        if dtype is not None:
            return arr.astype(dtype)
    return arr


def file_aliases(cfg: LmConfig, names) -> dict[str, str]:
    """For an MLX-layout file's tensor `names` (float or quantized weight / scales /
    biases): name -> the first slice's name of a tensor the reference shares
    (`lm_keys.shared_names`), where both are in `names`."""
    shared = shared_names(cfg)
    names = set(names)
    out: dict[str, str] = {}
    for k in names:
        first = shared.get(k)
        if first is None and "." in k:
            path, leaf = k.rsplit(".", 1)
            w = shared.get(f"{path}.weight")
            if w is not None and leaf in ("scales", "biases"):
                first = f"{w.rsplit('.', 1)[0]}.{leaf}"
        if first is not None and first in names:
            out[k] = first
    return out


def _same(a: mx.array, b: mx.array) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and bool(mx.array_equal(a, b).item())


def load_params(
    cfg: LmConfig, f, expected, sources: dict[str, Source], dtype: mx.Dtype | None, pytorch: bool
) -> dict[str, mx.array]:
    """Our parameter name -> its array, read from `f` (see `match_sources`).

    A depformer tensor several slices share in the reference (norms, scheduled per-step
    weights) is held once, the slices referencing the same array: in the PyTorch layout
    they read one source; the MLX layout stores a copy per slice, and a slice's copy that
    equals the first slice's (compared after reading) is dropped for that one."""
    alias = {} if pytorch else file_aliases(cfg, expected)
    uses: dict[str, int] = {}
    for src in {sources[k] for k in expected}:
        uses[src.key] = uses.get(src.key, 0) + 1
    cache: dict[str, mx.array] = {}
    by_source: dict[Source, mx.array] = {}
    out: dict[str, mx.array] = {}
    # first slices first, so a copy is compared with an array already read
    for k in sorted(expected, key=lambda k: k in alias):
        src = sources[k]
        arr = by_source.get(src)
        if arr is None:
            arr = _as_loaded(k, _load_source(f, src, cache, uses), dtype)
            first = out.get(alias.get(k, ""))
            if first is not None and _same(first, arr):
                arr = first
            by_source[src] = arr
        out[k] = arr
    cache.clear()
    return out


@dataclass
class LmFit:
    """What a checkpoint holds for a config, decided from its header alone: the (lazily
    built, not yet filled) model with the file's quantization swapped in, the layout, and
    the file tensor behind every parameter. One decision, used by preset detection
    (`resolve.match_preset`) and by loading alike."""

    cfg: LmConfig
    model: Lm
    pytorch: bool
    quant: dict[str, QuantSpec]
    expected: dict[str, tuple[int, ...]]
    sources: dict[str, Source]


def fit(cfg: LmConfig, f) -> LmFit:
    """Fit checkpoint `f` (SafetensorsFile / ArraySource) to `cfg`, or a one-line
    WeightsError naming what does not fit. Reads no tensor data."""
    keys = f.keys()
    model = Lm(cfg)  # lazy: nothing is allocated before the weights are loaded
    pytorch = is_pytorch_layout(keys)
    quant = _quant_spec(model, f, pytorch)
    apply_quantization(model, quant)
    expected, sources = match_sources(cfg, f, model, pytorch)
    return LmFit(cfg, model, pytorch, quant, expected, sources)


def build(plan: LmFit, f, dtype: mx.Dtype | None) -> Lm:
    """Fill the fitted model from `f` (each tensor read once, shared ones held once)."""
    model, cfg = plan.model, plan.cfg
    loaded = load_params(cfg, f, plan.expected, plan.sources, dtype, plan.pytorch)
    model.load_weights(list(loaded.items()), strict=True)
    if cfg.model_type == "hibiki" and cfg.text_card > 3:
        _embed_eos_as_pad(model)
    mx.eval(model.parameters())
    return model


def _fill(cfg: LmConfig, f, dtype: mx.Dtype | None) -> Lm:
    f = dequantized(f, dtype)  # a PyTorch int8 file (quantize: true) reads as float weights
    return build(fit(cfg, f), f, dtype)


def check_quant_record(lm: Lm, cfg: LmConfig, where: str) -> None:
    """A converted folder's config.json records its quantization: check it against the
    tensors (the tensors are what is loaded; a disagreement is named, not guessed over)."""
    record = cfg.extra.get(QUANT_KEY)
    if record:
        QuantRecord.from_json(record, where).check(model_quant_spec(lm), list(quantizable_modules(lm)), where)


def load_resolved(files, *, dtype: mx.Dtype | None = None) -> Lm:
    """Load the LM the resolver found (`resolve.ModelFiles`): built from its fit, the
    header it read, no second look at the files; as stored (`prepare_lm` gives the compute
    format, see `load_lm`)."""
    check_dtype(dtype)
    lm = build(files.fit, files.source(dtype), dtype)
    check_quant_record(lm, files.cfg, f"{files.weights.name} in {files.weights.parent}")
    return lm


def _embed_eos_as_pad(model: Lm) -> None:
    """Hibiki: the text EOS (2) is embedded like PAD (3), as Kyutai's loader does, so an
    EOS sampled before the input ends reads as padding."""
    emb = model.text_emb
    for name in ("weight", "scales", "biases"):
        if name in emb:
            t = emb[name]
            emb[name] = mx.concatenate([t[:2], t[3:4], t[3:]], axis=0)


__all__ = [
    "load_lm",
    "load_lm_state",
    "load_model_dir",
    "match_sources",
    "as_lm_config",
    "save_lm",
    "load_params",
    "file_aliases",
    "fit",
    "build",
    "load_resolved",
    "LmFit",
]


def save_lm(model: Lm, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> None:
    """Write the model in the published MLX layout (quantized modules as weight/scales/biases),
    which `load_lm` reads back, bits and group sizes included."""
    from mlx.utils import tree_flatten as _flat

    from .safetensors_io import save_safetensors

    save_safetensors(path, dict(_flat(model.parameters())), metadata)
