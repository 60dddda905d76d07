"""The one place that knows Mimi's published (PyTorch) checkpoint layout.

- `published_shapes(cfg)`: every key of the released file and its shape (legacy attention
  names `in_proj_weight` / `out_proj.weight`, as on disk).
- `to_model_weights(tensors, cfg)`: validate a loaded file against that list (missing,
  unexpected and wrongly shaped keys are named) and convert it to this package's names and
  layouts. The renames only strip PyTorch wrapper names:
      `.conv.conv.` / `.convtr.convtr.` -> `.`         (wrappers around nn.Conv1d)
      `self_attn.in_proj_weight` -> `self_attn.in_proj.weight`
      `output_projs.0.` -> `output_proj.`
      `vq.layers.i._codebook.{embedding_sum, cluster_usage}` -> `layers.i.embedding`
  and the layouts become matmul-ready: conv [out, in, k] -> [k*in, out], convtr
  [in, out, k] -> [in, k*out] (depthwise [C, 1, k] -> [k, C]), 1x1 projections
  [out, in, 1] -> [in, out], centroids = embedding_sum / max(cluster_usage, 1e-5).
- `random_published_weights(cfg, seed)`: a seeded, platform-independent random checkpoint
  of the real architecture (numpy only), shared by tests and the fixture script.
"""

from __future__ import annotations

import re

import numpy as np

from .errors import WeightsError

CODEBOOK_EPS = 1e-5

# names PyTorch accepts besides the released ones -> released names
_ALIASES = [
    (re.compile(r"\.self_attn\.in_projs\.0\.weight$"), ".self_attn.in_proj_weight"),
    (re.compile(r"\.self_attn\.in_proj\.weight$"), ".self_attn.in_proj_weight"),
    (re.compile(r"\.self_attn\.out_projs\.0\.weight$"), ".self_attn.out_proj.weight"),
    (re.compile(r"\._codebook\.inited$"), "._codebook._initialized"),
    (re.compile(r"\._codebook\.cluster_size$"), "._codebook.cluster_usage"),
    (re.compile(r"\._codebook\.embed_(avg|sum)$"), "._codebook.embedding_sum"),
]
_LM_MARKERS = ("text_emb.weight", "text_linear.weight", "depformer_in.0.weight", "emb.0.weight", "out_norm.alpha")


# ---- layout conversions (also used by the unit tests of the conv modules) ------------------


def conv_weight_from_torch(w: np.ndarray) -> np.ndarray:
    """[out, in, k] -> [k * in, out] (row j * in + c = tap j, input channel c)."""
    out, cin, k = w.shape
    return np.ascontiguousarray(np.transpose(w, (2, 1, 0)).reshape(k * cin, out))


def convtr_weight_from_torch(w: np.ndarray, depthwise: bool) -> np.ndarray:
    """[in, out/groups, k] -> [in, k * out] (dense) or [k, C] (depthwise)."""
    cin, cout, k = w.shape
    if depthwise:
        return np.ascontiguousarray(w[:, 0, :].T)
    return np.ascontiguousarray(np.transpose(w, (0, 2, 1)).reshape(cin, k * cout))


def projection_from_torch(w: np.ndarray) -> np.ndarray:
    """1x1 conv [out, in, 1] -> [in, out]."""
    return np.ascontiguousarray(w[:, :, 0].T)


# ---- the published key list ----------------------------------------------------------------


def _seanet_shapes(cfg, decoder: bool) -> dict[str, tuple]:
    s = cfg.seanet
    shapes: dict[str, tuple] = {}
    prefix = "decoder.model" if decoder else "encoder.model"

    def conv(i, cin, cout, k, bias=True, sub=""):
        shapes[f"{prefix}.{i}{sub}.conv.conv.weight"] = (cout, cin, k)
        if bias:
            shapes[f"{prefix}.{i}{sub}.conv.conv.bias"] = (cout,)

    def resblock(i, dim):
        hidden = dim // s.compress
        conv(i, dim, hidden, s.residual_kernel_size, sub=".block.1")
        conv(i, hidden, dim, 1, sub=".block.3")
        if not s.true_skip:
            conv(i, dim, dim, 1, sub=".shortcut")

    i = 0
    if not decoder:
        conv(i, s.channels, s.n_filters, s.kernel_size)
        i += 1
        mult = 1
        for ratio in reversed(s.ratios):
            dim = mult * s.n_filters
            for _ in range(s.n_residual_layers):
                resblock(i, dim)
                i += 1
            conv(i + 1, dim, 2 * dim, 2 * ratio)  # i is the ELU
            i += 2
            mult *= 2
        conv(i + 1, mult * s.n_filters, s.dimension, s.last_kernel_size)
    else:
        mult = 2 ** len(s.ratios)
        conv(i, s.dimension, mult * s.n_filters, s.kernel_size)
        i += 1
        for ratio in s.ratios:
            dim = mult * s.n_filters
            shapes[f"{prefix}.{i + 1}.convtr.convtr.weight"] = (dim, dim // 2, 2 * ratio)
            shapes[f"{prefix}.{i + 1}.convtr.convtr.bias"] = (dim // 2,)
            i += 2
            for _ in range(s.n_residual_layers):
                resblock(i, dim // 2)
                i += 1
            mult //= 2
        conv(i + 1, s.n_filters, s.channels, s.last_kernel_size)
    return shapes


def _transformer_shapes(cfg, prefix: str) -> dict[str, tuple]:
    t = cfg.transformer
    d, ff = t.d_model, t.dim_feedforward
    shapes: dict[str, tuple] = {}
    if t.input_dimension != d:
        shapes[f"{prefix}.input_proj.weight"] = (d, t.input_dimension)
    for layer in range(t.num_layers):
        p = f"{prefix}.transformer.layers.{layer}"
        shapes[f"{p}.self_attn.in_proj_weight"] = (3 * d, d)
        shapes[f"{p}.self_attn.out_proj.weight"] = (d, d)
        for n in ("norm1", "norm2"):
            shapes[f"{p}.{n}.weight"] = (d,)
            shapes[f"{p}.{n}.bias"] = (d,)
        shapes[f"{p}.linear1.weight"] = (ff, d)
        shapes[f"{p}.linear2.weight"] = (d, ff)
        if t.layer_scale is not None:
            shapes[f"{p}.layer_scale_1.scale"] = (d,)
            shapes[f"{p}.layer_scale_2.scale"] = (d,)
    if t.output_dimension != d:
        shapes[f"{prefix}.output_projs.0.weight"] = (t.output_dimension, d)
    return shapes


def published_shapes(cfg) -> dict[str, tuple]:
    """Every key of a released Mimi checkpoint for `cfg`, in a fixed order."""
    if cfg.transformer.norm not in ("layer_norm", "layer_norm_f32"):
        raise WeightsError(f"Mimi checkpoints with transformer norm {cfg.transformer.norm!r} are not supported")
    shapes = _seanet_shapes(cfg, decoder=False)
    shapes.update(_seanet_shapes(cfg, decoder=True))
    shapes.update(_transformer_shapes(cfg, "encoder_transformer"))
    shapes.update(_transformer_shapes(cfg, "decoder_transformer"))
    d, s = cfg.seanet.dimension, cfg.resample_stride
    if s > 1:
        shapes["downsample.conv.conv.conv.weight"] = (d, d, 2 * s)
        shapes["upsample.convtr.convtr.convtr.weight"] = (d, 1, 2 * s)
    q = cfg.quantizer
    for name, n in (("rvq_first", q.n_q_semantic), ("rvq_rest", q.n_q - q.n_q_semantic)):
        p = f"quantizer.{name}"
        shapes[f"{p}.input_proj.weight"] = (q.dimension, q.input_dimension, 1)
        shapes[f"{p}.output_proj.weight"] = (q.output_dimension, q.dimension, 1)
        for i in range(n):
            c = f"{p}.vq.layers.{i}._codebook"
            shapes[f"{c}._initialized"] = (1,)
            shapes[f"{c}.cluster_usage"] = (q.bins,)
            shapes[f"{c}.embedding_sum"] = (q.bins, q.dimension)
    return shapes


# ---- validation and conversion -------------------------------------------------------------


def canonical_name(name: str) -> str:
    for pattern, repl in _ALIASES:
        name = pattern.sub(repl, name)
    return name


def _listing(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" (and {len(names) - limit} more)" if len(names) > limit else "")


def check_published(tensors: dict, cfg, source: str = "the checkpoint") -> dict:
    """Canonicalise names and check keys and shapes; returns {released name: tensor}. Names
    behind PyTorch wrapper parts (a DDP / FSDP / torch.compile model's state_dict(), given as
    a dict) are read as a file's are (`safetensors_io.unwrapped_names`)."""
    from .safetensors_io import unwrapped_names  # (here: importing mimi_keys needs no MLX)

    renamed = unwrapped_names(tensors)
    if renamed:
        tensors = {renamed.get(k, k): v for k, v in tensors.items()}
    keys = set(tensors)
    if not any(k.startswith(("encoder.", "decoder.", "quantizer.")) for k in keys):
        lm = [k for k in _LM_MARKERS if k in keys] or [k for k in sorted(keys) if k.startswith("transformer.layers.")][
            :1
        ]
        if lm:
            raise WeightsError(
                f"{source} is a Moshi language-model checkpoint (it has {lm[0]!r}), not a Mimi codec checkpoint"
            )
        raise WeightsError(f"{source} is not a Mimi checkpoint: it has no encoder/decoder/quantizer weights")
    canon: dict = {}
    for k, v in tensors.items():
        c = canonical_name(k)
        if c.endswith("._codebook._embedding"):
            continue  # a cache PyTorch never saves, harmless if present
        canon[c] = v
    expected = published_shapes(cfg)
    missing = [k for k in expected if k not in canon]
    unexpected = sorted(k for k in canon if k not in expected)
    if missing:
        raise WeightsError(f"{source} lacks {len(missing)} Mimi weight(s): {_listing(missing)}")
    if unexpected:
        raise WeightsError(
            f"{source} has {len(unexpected)} unexpected weight(s) for this Mimi config: {_listing(unexpected)}"
        )
    bad = [
        f"{k} {tuple(canon[k].shape)} (expected {expected[k]})"
        for k in expected
        if tuple(canon[k].shape) != tuple(expected[k])
    ]
    if bad:
        raise WeightsError(f"{source} has {len(bad)} weight(s) of the wrong shape: {_listing(bad, 3)}")
    return canon


def _our_name(name: str) -> str:
    name = name.replace(".self_attn.in_proj_weight", ".self_attn.in_proj.weight")
    name = name.replace(".output_projs.0.", ".output_proj.")
    name = name.replace(".conv.conv.", ".", 1).replace(".convtr.convtr.", ".", 1)
    name = re.sub(r"\.vq\.layers\.(\d+)\._codebook\.embedding_sum$", r".layers.\1.embedding", name)
    return name


def to_model_weights(tensors: dict, cfg, source: str = "the checkpoint") -> dict[str, np.ndarray]:
    """Released checkpoint (numpy or MLX arrays, any float dtype) -> {our name: float32 array}."""
    canon = {k: _to_numpy(v) for k, v in check_published(tensors, cfg, source).items()}
    out: dict[str, np.ndarray] = {}
    for name, w in canon.items():
        if name.endswith(("._initialized", ".cluster_usage")):
            continue
        if name.endswith(".embedding_sum"):
            usage = canon[name[: -len("embedding_sum")] + "cluster_usage"]
            w = w / np.maximum(usage, np.float32(CODEBOOK_EPS))[:, None]
        elif name.endswith(".conv.conv.weight"):
            w = conv_weight_from_torch(w)
        elif name.endswith(".convtr.convtr.weight"):
            w = convtr_weight_from_torch(w, depthwise=name.startswith("upsample."))
        elif name.endswith(("input_proj.weight", "output_proj.weight")) and name.startswith("quantizer."):
            w = projection_from_torch(w)
        out[_our_name(name)] = np.ascontiguousarray(w, dtype=np.float32)
    return out


def _to_numpy(v) -> np.ndarray:
    if isinstance(v, np.ndarray):
        return v.astype(np.float32, copy=False)
    import mlx.core as mx  # only needed for MLX inputs

    if isinstance(v, mx.array):
        return np.array(v.astype(mx.float32))
    raise TypeError(f"unsupported tensor type {type(v).__name__}")


# ---- seeded random checkpoint --------------------------------------------------------------


def random_published_weights(cfg, seed: int = 0, codebook_scale: float = 1.0) -> dict[str, np.ndarray]:
    """A random checkpoint of `cfg`'s architecture in the released layout.

    Drawn in `published_shapes` order from `np.random.default_rng(seed)` (float32), whose
    stream is identical on every platform, so a test can rebuild exactly the weights a
    fixture script fed the PyTorch reference. Scales keep activations O(1) through the
    network; centroids are N(0, codebook_scale^2) with random usage counts (>= 0.5) so the
    `embedding_sum / cluster_usage` division is exercised and codes are non-trivial.
    """
    rng = np.random.default_rng(seed)
    f32 = np.float32

    def normal(shape, std):
        return rng.standard_normal(shape, dtype=f32) * f32(std)

    out: dict[str, np.ndarray] = {}
    for name, shape in published_shapes(cfg).items():
        if name.endswith("._initialized"):
            w = np.ones(shape, f32)
        elif name.endswith(".cluster_usage"):
            w = (rng.random(shape, dtype=f32) * f32(1.5) + f32(0.5)).astype(f32)
        elif name.endswith(".embedding_sum"):
            usage = out[name[: -len("embedding_sum")] + "cluster_usage"]
            w = normal(shape, codebook_scale) * usage[:, None]
        elif name.endswith(".conv.conv.weight") and not name.startswith("downsample."):
            w = normal(shape, 1.0 / np.sqrt(shape[1] * shape[2]))
        elif name.endswith(".convtr.convtr.weight") and not name.startswith("upsample."):
            w = normal(shape, 1.0 / np.sqrt(shape[0] * shape[2] / 2))
        elif name.startswith("downsample."):
            w = normal(shape, 1.0 / np.sqrt(shape[1] * shape[2] / 2))
        elif name.startswith("upsample."):
            w = normal(shape, 0.5)
        elif name.endswith(".bias") and ".norm" not in name:
            w = normal(shape, 0.05)
        elif ".norm" in name:
            w = normal(shape, 0.1) + (f32(1.0) if name.endswith(".weight") else f32(0.0))
        elif ".layer_scale_" in name:
            w = normal(shape, 0.2)
        elif name.endswith(("proj.weight", "proj_weight", "linear1.weight", "linear2.weight", "projs.0.weight")):
            w = normal(shape, 1.0 / np.sqrt(shape[1]))
        else:  # pragma: no cover - every published key is handled above
            raise AssertionError(f"no random init rule for {name}")
        out[name] = w.astype(f32, copy=False)
    return out
