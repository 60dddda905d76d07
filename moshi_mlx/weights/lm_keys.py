"""The one place that maps PyTorch LM checkpoint names to ours (the published MLX layout).

PyTorch files come in two namings: the released one (`self_attn.in_proj_weight`, per-step
depformer weights stacked along dim 0) and the in-memory `state_dict()` one
(`self_attn.in_projs.N.weight`). Both map here; RMSNorm `alpha` [1, 1, d] becomes `weight`
[d]. The published MLX layout names every depformer slice's tensors, but in the reference
some are one tensor shared by several steps (the depformer's norms, per-step weights of a
`depformer_weights_per_step_schedule`, a scheduled `depformer_in`): `shared_names` says
which, and the loaders give those slices the same array (held once in memory).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..models.config import LmConfig, TensorConditionerConfig

# Keys whose presence means "PyTorch layout".
_PYTORCH_MARKERS = ("emb.0.weight", "linears.0.weight", "depformer_in.0.weight", "depformer_text_emb.weight")


@dataclass(frozen=True)
class Source:
    """Where one of our tensors comes from: `key` in the file, optionally chunk `index` of
    `chunks` equal parts along dim 0, optionally reshaped to 1-D (norm alphas)."""

    key: str
    chunks: int = 1
    index: int = 0
    flatten: bool = False


def is_pytorch_layout(keys) -> bool:
    keys = set(keys)
    if any(m in keys for m in _PYTORCH_MARKERS):
        return True
    return any(k.endswith((".alpha", ".in_proj_weight")) or ".in_projs." in k for k in keys)


def extra_slice_index(key: str) -> int | None:
    """The depformer slice a per-slice PyTorch tensor belongs to (None for other tensors):
    `depformer_in.K`, `linears.K`, `depformer_emb.(K-1)`, `depformer.layers.L.gating.K`."""
    parts = key.split(".")
    try:
        if parts[0] in ("depformer_in", "linears", "depformer_norms") and len(parts) == 3:
            return int(parts[1])
        if parts[0] == "depformer_emb":
            return int(parts[1]) + 1
        if parts[0] == "depformer" and len(parts) >= 5 and parts[3] == "gating":
            return int(parts[4])
    except ValueError:
        return None
    return None


def _norm_keys(cfg: LmConfig, norm: str | None = None) -> tuple[str, ...]:
    """The reference's parameter names of a norm of type `norm` (default: the model's)."""
    return ("weight", "bias") if (norm or cfg.norm).startswith("layer_norm") else ("alpha",)


def _layer_sources(
    src: str,
    dst: str,
    cfg: LmConfig,
    keys: set[str],
    gated: bool,
    layer_scale: bool,
    mult: int,
    w: int,
    per_step_ff: bool,
) -> dict[str, Source]:
    """One transformer layer: src prefix (PyTorch) -> dst prefix (ours). `mult` stacked
    attention weights of which we take chunk `w`; `per_step_ff` = gating.{w}."""
    out: dict[str, Source] = {}
    for norm in ("norm1", "norm2"):
        for nk in _norm_keys(cfg):
            name = "weight" if nk == "alpha" else nk
            out[f"{dst}.{norm}.{name}"] = Source(f"{src}.{norm}.{nk}", flatten=nk == "alpha")
    for proj, legacy in (("in_proj", "in_proj_weight"), ("out_proj", "out_proj.weight")):
        inmem = f"{src}.self_attn.{proj}s.{w}.weight"
        if inmem in keys:
            out[f"{dst}.self_attn.{proj}.weight"] = Source(inmem)
        else:
            key = f"{src}.self_attn.{legacy}"
            if key not in keys and f"{src}.self_attn.{proj}.weight" in keys:
                key = f"{src}.self_attn.{proj}.weight"
            out[f"{dst}.self_attn.{proj}.weight"] = Source(key, chunks=mult, index=w)
    if gated:
        g = f"{src}.gating.{w}" if per_step_ff else f"{src}.gating"
        out[f"{dst}.gating.linear_in.weight"] = Source(f"{g}.linear_in.weight")
        out[f"{dst}.gating.linear_out.weight"] = Source(f"{g}.linear_out.weight")
    else:
        out[f"{dst}.linear1.weight"] = Source(f"{src}.linear1.weight")
        out[f"{dst}.linear2.weight"] = Source(f"{src}.linear2.weight")
    if layer_scale:
        out[f"{dst}.layer_scale_1.scale"] = Source(f"{src}.layer_scale_1.scale")
        out[f"{dst}.layer_scale_2.scale"] = Source(f"{src}.layer_scale_2.scale")
    return out


def _cross_sources(src: str, dst: str, keys: set[str], layer_scale: bool) -> dict[str, Source]:
    """A temporal layer's cross-attention block (TTS): legacy `in_proj_weight` or in-memory
    `in_projs.0.weight` names; `norm_cross` is a LayerNorm whatever the model's norm."""
    out: dict[str, Source] = {}
    for proj, legacy in (("in_proj", "in_proj_weight"), ("out_proj", "out_proj.weight")):
        inmem = f"{src}.cross_attention.{proj}s.0.weight"
        out[f"{dst}.cross_attention.{proj}.weight"] = Source(
            inmem if inmem in keys else f"{src}.cross_attention.{legacy}"
        )
    for nk in ("weight", "bias"):
        out[f"{dst}.norm_cross.{nk}"] = Source(f"{src}.norm_cross.{nk}")
    if layer_scale:
        out[f"{dst}.layer_scale_cross.scale"] = Source(f"{src}.layer_scale_cross.scale")
    return out


def _embedding_sources(src: str, dst: str, keys: set[str]) -> dict[str, Source]:
    out = {f"{dst}.weight": Source(f"{src}.weight")}
    for extra in ("low_rank", "out1", "out2"):
        if f"{src}.{extra}.weight" in keys:
            out[f"{dst}.{extra}.weight"] = Source(f"{src}.{extra}.weight")
    return out


def pytorch_sources(cfg: LmConfig, keys) -> dict[str, Source]:
    """Our parameter name -> its source in a PyTorch checkpoint with `keys`."""
    keys = set(keys)
    out: dict[str, Source] = {}
    out.update(_embedding_sources("text_emb", "text_emb", keys))
    for i in range(cfg.n_q):
        out[f"audio_embs.{i}.weight"] = Source(f"emb.{i}.weight")
    for layer in range(cfg.num_layers):
        out.update(
            _layer_sources(
                f"transformer.layers.{layer}",
                f"transformer.layers.{layer}",
                cfg,
                keys,
                cfg.gating != "none",
                cfg.layer_scale is not None,
                1,
                0,
                False,
            )
        )
        if cfg.cross_attention:
            out.update(
                _cross_sources(
                    f"transformer.layers.{layer}", f"transformer.layers.{layer}", keys, cfg.layer_scale is not None
                )
            )
    for nk in _norm_keys(cfg):
        out["out_norm." + ("weight" if nk == "alpha" else nk)] = Source(f"out_norm.{nk}", flatten=nk == "alpha")
    out["text_linear.weight"] = Source("text_linear.weight")
    # a checkpoint with more slices than we run (PersonaPlex) stacks all of them in the attention
    # weights; one with dep_q slices only (NVIDIA copies 0-7 into 8-15 for those) stacks dep_q
    mult = cfg.dep_weights
    if cfg.checkpoint_dep_q and f"linears.{cfg.checkpoint_dep_q - 1}.weight" in keys:
        mult = cfg.checkpoint_dep_weights
    for k in range(cfg.dep_q):
        d = f"depformer.slices.{k}"
        out[f"{d}.linear_in.weight"] = Source(f"depformer_in.{cfg.dep_in_index(k)}.weight")
        out[f"{d}.linear_out.weight"] = Source(f"linears.{k}.weight")
        if cfg.depformer_norm is not None:
            for nk in _norm_keys(cfg, cfg.depformer_norm):
                out[f"{d}.out_norm.{'weight' if nk == 'alpha' else nk}"] = Source(
                    f"depformer_norms.{k}.{nk}", flatten=nk == "alpha"
                )
        emb_src = "depformer_text_emb" if k == 0 else f"depformer_emb.{k - 1}"
        out.update(_embedding_sources(emb_src, f"{d}.emb", keys))
        w = cfg.dep_weight_index(k)
        for layer in range(cfg.dep_num_layers):
            out.update(
                _layer_sources(
                    f"depformer.layers.{layer}",
                    f"{d}.transformer.layers.{layer}",
                    cfg,
                    keys,
                    cfg.dep_gating != "none",
                    cfg.depformer_layer_scale is not None,
                    mult,
                    w,
                    cfg.depformer_weights_per_step,
                )
            )
    for name, c in cfg.conditioners.items():
        p = f"condition_provider.conditioners.{name}"
        if not isinstance(c, TensorConditionerConfig):
            out[f"{p}.embed.weight"] = Source(f"{p}.embed.weight")
        if c.force_linear or c.dim != cfg.dim:
            out[f"{p}.output_proj.weight"] = Source(f"{p}.output_proj.weight")
        if c.learn_padding:
            out[f"{p}.learnt_padding"] = Source(f"{p}.learnt_padding")
    for i in range(cfg.extra_heads_num_heads):
        out[f"extra_heads.{i}.weight"] = Source(f"extra_heads.{i}.weight")
    return out


def shared_names(cfg: LmConfig) -> dict[str, str]:
    """Our parameter name -> the first name (lowest depformer slice) holding the same tensor
    in the reference model, for every name that is such a copy: the depformer norms (one
    per layer for all steps), and per-step weights and `depformer_in` projections that a
    schedule (or no per-step weights at all) gives several steps. Derived from the PyTorch
    mapping: names read from the same source are one tensor."""
    first: dict[Source, str] = {}
    out: dict[str, str] = {}
    for name, src in pytorch_sources(cfg, pytorch_layout(cfg)).items():
        if src in first:
            out[name] = first[src]
        else:
            first[src] = name
    return out


def pytorch_layout(cfg: LmConfig, *, low_rank: bool = True, demux: bool = True) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the released PyTorch checkpoint for `cfg` (legacy names), as
    the reference `LMModel` saves them. Used to build random PyTorch-layout test files."""
    D, Dd = cfg.dim, cfg.depformer_dim
    shapes: dict[str, tuple[int, ...]] = {}

    def emb(name: str, rows: int, dim: int, lr: int | None, dm: bool) -> None:
        shapes[f"{name}.weight"] = (rows, lr or dim)
        if lr:
            shapes[f"{name}.low_rank.weight"] = (dim, lr)
        if dm:
            shapes[f"{name}.out1.weight"] = (dim, lr or dim)
            shapes[f"{name}.out2.weight"] = (dim, lr or dim)

    def norm(name: str, dim: int, kind: str | None = None) -> None:
        if (kind or cfg.norm).startswith("layer_norm"):
            shapes[f"{name}.weight"] = (dim,)
            shapes[f"{name}.bias"] = (dim,)
        else:
            shapes[f"{name}.alpha"] = (1, 1, dim)

    def gated(dim: int, ff: int) -> int:
        return (21 * dim) // 8 if ff == 4 * dim else (2 * ff) // 3

    def layer(
        prefix: str,
        dim: int,
        heads: int,
        kv_repeat: int,
        gating: str,
        ff_list: list[int],
        mult: int,
        per_step: bool,
        ls: float | None,
        cross: bool = False,
    ) -> None:
        hd = dim // heads
        qkv = dim + 2 * hd * (heads // kv_repeat)
        shapes[f"{prefix}.self_attn.in_proj_weight"] = (mult * qkv, dim)
        shapes[f"{prefix}.self_attn.out_proj.weight"] = (mult * dim, dim)
        norm(f"{prefix}.norm1", dim)
        norm(f"{prefix}.norm2", dim)
        if gating == "none":
            shapes[f"{prefix}.linear1.weight"] = (ff_list[0], dim)
            shapes[f"{prefix}.linear2.weight"] = (dim, ff_list[0])
        else:
            for i, ff in enumerate(ff_list):
                g = f"{prefix}.gating.{i}" if per_step else f"{prefix}.gating"
                h = gated(dim, ff)
                shapes[f"{g}.linear_in.weight"] = (2 * h, dim)
                shapes[f"{g}.linear_out.weight"] = (dim, h)
        if ls is not None:
            shapes[f"{prefix}.layer_scale_1.scale"] = (dim,)
            shapes[f"{prefix}.layer_scale_2.scale"] = (dim,)
        if cross:
            shapes[f"{prefix}.cross_attention.in_proj_weight"] = (3 * dim, dim)
            shapes[f"{prefix}.cross_attention.out_proj.weight"] = (dim, dim)
            shapes[f"{prefix}.norm_cross.weight"] = (dim,)
            shapes[f"{prefix}.norm_cross.bias"] = (dim,)
            if ls is not None:
                shapes[f"{prefix}.layer_scale_cross.scale"] = (dim,)

    emb("text_emb", cfg.text_card + 1, D, None, cfg.demux_second_stream and demux)
    for i in range(cfg.n_q):
        emb(f"emb.{i}", cfg.card + 1, D, None, False)
    for i in range(cfg.num_layers):
        layer(
            f"transformer.layers.{i}",
            D,
            cfg.num_heads,
            cfg.kv_repeat,
            cfg.gating,
            [int(cfg.hidden_scale * D)],
            1,
            False,
            cfg.layer_scale,
            cfg.cross_attention,
        )
    norm("out_norm", D)
    shapes["text_linear.weight"] = (cfg.text_out_card, D)
    slices = cfg.checkpoint_dep_q or cfg.dep_q
    if cfg.dep_q:
        for i in range(slices if cfg.checkpoint_dep_q else cfg.dep_in_count):
            shapes[f"depformer_in.{i}.weight"] = (Dd, D)
        lr = cfg.depformer_low_rank_embeddings if low_rank else None
        emb("depformer_text_emb", cfg.text_card + 1, Dd, lr, cfg.demux_second_stream and demux)
        for i in range(slices - 1):
            emb(f"depformer_emb.{i}", cfg.card + 1, Dd, lr, False)
        per_step = cfg.depformer_weights_per_step
        ffs = [cfg.dep_feedforward(min(w, cfg.dep_weights - 1)) for w in range(cfg.checkpoint_dep_weights)]
        for i in range(cfg.dep_num_layers):
            layer(
                f"depformer.layers.{i}",
                Dd,
                cfg.dep_num_heads,
                cfg.dep_kv_repeat,
                cfg.dep_gating,
                ffs,
                cfg.checkpoint_dep_weights,
                per_step,
                cfg.depformer_layer_scale,
            )
        for k in range(slices):
            shapes[f"linears.{k}.weight"] = (cfg.card, Dd)
            if cfg.depformer_norm is not None:
                norm(f"depformer_norms.{k}", Dd, cfg.depformer_norm)
    for name, c in cfg.conditioners.items():
        p = f"condition_provider.conditioners.{name}"
        if not isinstance(c, TensorConditionerConfig):
            shapes[f"{p}.embed.weight"] = (c.n_bins + 1, c.dim)
        if c.force_linear or c.dim != D:
            shapes[f"{p}.output_proj.weight"] = (D, c.dim)
        if c.learn_padding:
            shapes[f"{p}.learnt_padding"] = (1, 1, D)
    for i in range(cfg.extra_heads_num_heads):
        shapes[f"extra_heads.{i}.weight"] = (cfg.extra_heads_dim, D)
    return shapes
