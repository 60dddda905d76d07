"""`LmConfig`: the language model's configuration, read from Kyutai's published `config.json`.

Every key of those files is either honoured or refused with a one-line `ConfigError` (a
value of the wrong type or out of range included: `"dim": "64"`, `"num_heads": 0`); a
missing key takes the default of the reference `LMModel` (so a config means the same model
here as there). Presets are the JSON files shipped in `moshi_mlx/configs/`.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
import types
import typing
from typing import Any

from ..errors import ConfigError, UsageError, WeightsError
from ..modules.mlp import ACTIVATIONS
from ..modules.norm import NORM_TYPES
from ..modules.rope import POSITIONAL_EMBEDDINGS
from ..validation import integer, json_file, real
from .sampling import SamplingOptions

# Sampling options a config's `lm_gen_config` may set (names as in the reference LMGen): every
# `SamplingOptions` field but the seed
LM_GEN_KEYS = tuple(n for n in SamplingOptions.names() if n != "seed")
# Other spellings found in published configs (tts-1.6b-en_fr writes "text_temp").
_LM_GEN_ALIASES = {"text_temp": "temp_text"}
# Keys that describe the checkpoint rather than the network; kept verbatim in `extra`.
# ("quantization": how `moshi_mlx.convert` quantized the weights beside this config)
_METADATA_KEYS = ("stt_config", "tts_config", "model_id", "mimi_config_name", "quantization")
# LoRA fine-tune keys (moshi-finetune writes them; defaults as in the reference get_moshi_lm)
_LORA_KEYS = ("lora", "lora_rank", "lora_scaling", "lora_name")
_SUPPORTED_FUSE = ("sum", "cross")


@dataclass
class LutConditionerConfig:
    """A look-up-table conditioner (`type: lut`): value -> Embedding(n_bins+1, dim) -> Linear(dim, model dim)."""

    n_bins: int
    dim: int
    tokenizer: str = "noop"
    possible_values: list[str] | None = None
    force_linear: bool = True
    learn_padding: bool = True

    def index(self, value: str | None) -> int:
        """Row of the table for `value`; None is the null condition (the padding row)."""
        if value is None:
            return self.n_bins
        if self.possible_values is None:
            raise WeightsError("LUT conditioners without possible_values (hashed values) are not supported")
        if value not in self.possible_values:
            raise WeightsError(f"condition value {value!r} is not one of {self.possible_values}")
        return self.possible_values.index(value)


@dataclass
class TensorConditionerConfig:
    """A tensor conditioner (`type: tensor`, TTS speaker embeddings): a [T, dim] tensor with a
    mask -> output_proj -> masked positions replaced by the learnt padding; fused by `cross`."""

    dim: int
    force_linear: bool = True
    learn_padding: bool = True


@dataclass
class LmConfig:
    # temporal transformer
    dim: int
    num_heads: int
    num_layers: int
    hidden_scale: float = 4.0
    kv_repeat: int = 1
    norm: str = "layer_norm"
    gating: str = "none"
    positional_embedding: str = "sin"
    max_period: float = 10_000.0
    context: int | None = None
    causal: bool = True
    layer_scale: float | None = None
    # vocabularies and streams
    text_card: int = 32000
    text_card_out: int | None = None
    existing_text_padding_id: int = 3
    existing_text_end_padding_id: int = 0
    n_q: int = 8
    dep_q: int = 8
    card: int = 1024
    delays: list[int] = field(default_factory=lambda: [0])
    demux_second_stream: bool = False
    # depth transformer (None = inherit the temporal transformer's value, as the reference does)
    depformer_dim: int = 256
    depformer_num_heads: int | None = None
    depformer_num_layers: int | None = None
    depformer_dim_feedforward: int | list[int] | None = None
    depformer_multi_linear: bool = False
    depformer_weights_per_step: bool = False
    depformer_weights_per_step_schedule: list[int] | None = None
    depformer_low_rank_embeddings: int | None = None
    depformer_context: int | None = None
    depformer_max_period: float | None = None
    depformer_pos_emb: str = "sin"
    depformer_gating: str | None = None
    depformer_layer_scale: float | None = None  # from_dict: absent = inherit layer_scale
    depformer_kv_repeat: int | None = None
    # a norm on each step's depformer output before its audio head (Hibiki-Zero: layer_norm);
    # None = no norm (the reference's Identity)
    depformer_norm: str | None = None
    # slices of the PyTorch checkpoint's depformer when it has more than dep_q (PersonaPlex: 16,
    # the last 8 predict the user's codebooks, which are always given, so they are never loaded)
    checkpoint_dep_q: int | None = None
    # conditioning and extra outputs
    conditioners: dict[str, LutConditionerConfig | TensorConditionerConfig] = field(default_factory=dict)
    fuse_sum: list[str] = field(default_factory=list)
    # cross-attention (TTS): one cross-attention block per temporal layer attending to the
    # `fuse_cross` conditions (concatenated along time, + a sinusoidal position embedding)
    cross_attention: bool = False
    fuse_cross: list[str] = field(default_factory=list)
    cross_attention_pos_emb: bool = False
    cross_attention_pos_emb_scale: float = 1.0
    extra_heads_num_heads: int = 0
    extra_heads_dim: int = 6
    # checkpoint metadata
    model_type: str = "moshi"
    lm_gen_config: dict[str, Any] = field(default_factory=dict)
    moshi_name: str | None = None
    mimi_name: str | None = None
    tokenizer_name: str | None = None
    # LoRA fine-tune (moshi-finetune): adapters in `lora_name` (default lora.safetensors beside
    # the config), fused into the base weights at load as W + lora_scaling * B @ A (weights/lora.py)
    lora: bool = False
    lora_rank: int = 128
    lora_scaling: float = 2.0
    lora_name: str | None = None
    # PyTorch int8 checkpoint (moshi's export_quantized.py): read dequantized (weights/pytorch_int8.py)
    quantize: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    source: str | None = None

    # ---- derived values -------------------------------------------------------------
    @property
    def text_out_card(self) -> int:
        return self.text_card if self.text_card_out is None else self.text_card_out

    @property
    def text_initial_token(self) -> int:
        return self.text_card

    @property
    def audio_initial_token(self) -> int:
        return self.card

    @property
    def num_streams(self) -> int:
        return 1 + self.n_q

    @property
    def user_q(self) -> int:
        """Audio codebooks the caller feeds each frame (the user / source stream)."""
        return self.n_q - self.dep_q

    @property
    def max_delay(self) -> int:
        return max(self.delays)

    @property
    def own_delay(self) -> int:
        """The largest delay of the model's own (generated) audio codebooks: its audio frame
        f is complete once position f + own_delay has run (0 without audio out)."""
        return int(max(self.delays[1 : 1 + self.dep_q], default=0))

    @property
    def dep_weights(self) -> int:
        """Number of distinct per-step weight sets in the depformer."""
        if not self.depformer_weights_per_step:
            return 1
        if self.depformer_weights_per_step_schedule:
            return max(self.depformer_weights_per_step_schedule) + 1
        return self.dep_q

    @property
    def checkpoint_dep_weights(self) -> int:
        """Per-step weight sets stacked in the PyTorch checkpoint's depformer tensors."""
        return self.checkpoint_dep_q if self.checkpoint_dep_q and self.depformer_weights_per_step else self.dep_weights

    @property
    def kind(self) -> str:
        """What the model does, from its streams: 'dialogue', 'translation', 'speech-to-text',
        'text-to-speech' or 'text' (an error refusing a model for a task says what it is)."""
        if self.n_q == 0:
            return "text"
        if self.model_type == "tts" or self.user_q == 0:
            return "text-to-speech"
        if self.dep_q == 0:
            return "speech-to-text"
        return "translation" if self.model_type == "hibiki" else "dialogue"

    @property
    def is_persona(self) -> bool:
        """PersonaPlex: voice and text prompts before the conversation (models/persona.py)."""
        return self.model_type == "personaplex"

    def dep_weight_index(self, step: int) -> int:
        """Which per-step weight set depformer step `step` uses."""
        if not self.depformer_weights_per_step:
            return 0
        if self.depformer_weights_per_step_schedule:
            return self.depformer_weights_per_step_schedule[step]
        return step

    def dep_in_index(self, step: int) -> int:
        """Which `depformer_in` projection step `step` uses."""
        if not self.depformer_multi_linear:
            return 0
        if self.depformer_weights_per_step_schedule:
            return self.depformer_weights_per_step_schedule[step]
        return step

    @property
    def dep_in_count(self) -> int:
        if not self.depformer_multi_linear:
            return 1
        if self.depformer_weights_per_step_schedule:
            return max(self.depformer_weights_per_step_schedule) + 1
        return self.dep_q

    def dep_feedforward(self, weight_index: int) -> int:
        ff = self.depformer_dim_feedforward
        if ff is None:
            return int(self.hidden_scale * self.depformer_dim)
        if isinstance(ff, list):
            return ff[weight_index]
        return ff

    @property
    def dep_num_heads(self) -> int:
        return self.depformer_num_heads if self.depformer_num_heads is not None else self.num_heads

    @property
    def dep_num_layers(self) -> int:
        return self.depformer_num_layers if self.depformer_num_layers is not None else self.num_layers

    @property
    def dep_gating(self) -> str:
        return self.depformer_gating if self.depformer_gating is not None else self.gating

    @property
    def dep_max_period(self) -> float:
        return self.depformer_max_period if self.depformer_max_period is not None else self.max_period

    @property
    def dep_kv_repeat(self) -> int:
        return self.depformer_kv_repeat if self.depformer_kv_repeat is not None else self.kv_repeat

    # ---- construction ---------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "config") -> "LmConfig":
        return _parse(dict(data), where)

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "LmConfig":
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"config file not found: {p}")
        try:
            data = json_file(p)
        except (UnicodeDecodeError, json.JSONDecodeError, OSError) as e:
            raise ConfigError(f"{p} is not valid JSON: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{p} does not hold a JSON object")
        return _parse(data, str(p))

    def to_dict(self) -> dict[str, Any]:
        """The config as `config.json` keys (round-trips through `from_dict`)."""
        d = asdict(self)
        conds = d.pop("conditioners")
        fuse_sum = d.pop("fuse_sum")
        fuse_cross = d.pop("fuse_cross")
        pos_emb, pos_scale = d.pop("cross_attention_pos_emb"), d.pop("cross_attention_pos_emb_scale")
        extra = d.pop("extra")
        source = d.pop("source")
        if conds:
            kinds = {
                k: "tensor" if isinstance(c, TensorConditionerConfig) else "lut" for k, c in self.conditioners.items()
            }
            d["conditioners"] = {k: {"type": kinds[k], kinds[k]: v} for k, v in conds.items()}
            d["fuser"] = {"sum": fuse_sum}
            if fuse_cross:
                d["fuser"].update(
                    cross=fuse_cross, cross_attention_pos_emb=pos_emb, cross_attention_pos_emb_scale=pos_scale
                )
        if not d["cross_attention"]:
            d.pop("cross_attention")
        d.update(extra)
        if source:
            d["_source"] = source
        d["demux_second_stream"] = d.pop("demux_second_stream")
        if not self.lora:  # a plain (or already fused) checkpoint's config says nothing of LoRA
            for k in _LORA_KEYS:
                d.pop(k)
        if not self.quantize:
            d.pop("quantize")
        return {k: v for k, v in d.items() if v is not None or k in ("layer_scale", "context", "depformer_layer_scale")}


def _err(where: str, msg: str) -> ConfigError:
    return ConfigError(f"{where}: {msg}")


def _conforms(v: Any, tp: Any) -> bool:
    """Does a JSON value have the field's annotated type (bool is not an int here)?"""
    if tp is Any:
        return True
    if tp is type(None):
        return v is None
    if tp is bool:
        return isinstance(v, bool)
    if tp is int:
        return isinstance(v, int) and not isinstance(v, bool)
    if tp is float:
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if tp is str:
        return isinstance(v, str)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_conforms(v, a) for a in args)
    if origin is list:
        return isinstance(v, list) and all(_conforms(x, args[0]) for x in v)
    if origin is dict:
        return isinstance(v, dict)
    return True  # pragma: no cover - every field type is listed above


def _describe(tp: Any) -> str:
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string", type(None): "null"}
    if tp in names:
        return names[tp]
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is list:
        return f"a list of {_describe(args[0]).replace('an integer', 'integers').replace('a number', 'numbers')}"
    return "an object"


# (key, lowest value, what) for numeric keys; None values are checked by type only
_LOWER_BOUNDS = {
    "dim": 1,
    "num_heads": 1,
    "num_layers": 1,
    "kv_repeat": 1,
    "context": 1,
    "text_card": 1,
    "card": 1,
    "n_q": 0,
    "dep_q": 0,
    "depformer_dim": 1,
    "depformer_num_heads": 1,
    "depformer_num_layers": 1,
    "depformer_low_rank_embeddings": 1,
    "depformer_context": 1,
    "depformer_kv_repeat": 1,
    "checkpoint_dep_q": 1,
    "extra_heads_num_heads": 0,
    "extra_heads_dim": 1,
    "text_card_out": 1,
    "lora_rank": 1,
    "existing_text_padding_id": 0,
    "existing_text_end_padding_id": 0,
}
_POSITIVE_FLOATS = ("hidden_scale", "max_period", "depformer_max_period", "lora_scaling")
# MLX's shapes and indices are 32-bit: a larger size or count fails inside MLX (OverflowError)
_SIZE_LIMIT = 2**30  # with headroom for the +1 rows (padding tokens) some tables add


def _check_values(data: dict[str, Any], where: str) -> None:
    """Types (from the dataclass annotations) and ranges of every key given, one line each."""
    hints = typing.get_type_hints(LmConfig)
    for key, v in data.items():
        tp = hints.get(key)
        if tp is not None and not _conforms(v, tp):
            raise _err(where, f"{key} must be {_describe(tp)}, got {json.dumps(v)}")
        if v is None or isinstance(v, (bool, str, list, dict)):
            continue
        if key in _LOWER_BOUNDS:
            _size(key, integer(key, v, lo=_LOWER_BOUNDS[key], err=ConfigError))
        elif key in _POSITIVE_FLOATS:
            real(key, v, lo=0.0, lo_open=True, err=ConfigError)
        elif isinstance(v, float):
            real(key, v, err=ConfigError)  # NaN / inf
    ff = data.get("depformer_dim_feedforward")
    for x in ff if isinstance(ff, list) else [ff] if ff is not None else []:
        _size("depformer_dim_feedforward", integer("depformer_dim_feedforward", x, lo=1, err=ConfigError))


def _size(key: str, v: int) -> None:
    if v > _SIZE_LIMIT:
        raise ConfigError(f"{key} must be at most 2**30 (MLX sizes are 32-bit), got {v}")


def _check_gen_values(lm_gen: dict[str, Any], where: str) -> None:
    """The values checked by `SamplingOptions` (the one set of checks), named as config keys."""
    if "use_sampling" in lm_gen and not isinstance(lm_gen["use_sampling"], bool):
        raise _err(where, f"lm_gen_config.use_sampling must be true or false, got {json.dumps(lm_gen['use_sampling'])}")
    try:
        SamplingOptions(**lm_gen)
    except UsageError as e:  # "temp must be >= 0, got -1": the message starts with the option's name
        raise _err(where, f"lm_gen_config.{e}") from None


def _parse(data: dict[str, Any], where: str) -> LmConfig:
    data = {k: v for k, v in data.items() if not k.startswith("_") or k == "_source"}
    source = data.pop("_source", None)
    # the reference loader renames or drops these before building LMModel
    if "demux_second_text_stream" in data:
        data["demux_second_stream"] = data.pop("demux_second_text_stream")
    data.pop("depformer_causal", None)  # deprecated: the depformer follows `causal`
    extra = {k: data.pop(k) for k in _METADATA_KEYS if k in data}

    def refuse(key: str, ok) -> None:
        if key in data and not ok(data[key]):
            raise _err(where, f"{key}={data[key]!r} is not supported")

    refuse("norm_emb", lambda v: not v)
    refuse("bias_proj", lambda v: not v)
    refuse("positional_scale", lambda v: v == 1.0)
    for k in ("norm_emb", "bias_proj", "positional_scale", "gradient_checkpointing"):
        data.pop(k, None)

    conditioners, fuse_sum, fuse_cross, fuse_opts = _parse_conditioning(data, where)

    lm_gen = {_LM_GEN_ALIASES.get(k, k): v for k, v in (data.pop("lm_gen_config", None) or {}).items()}
    bad = set(lm_gen) - set(LM_GEN_KEYS)
    if bad:
        raise _err(where, f"lm_gen_config has unsupported keys {sorted(bad)}; known: {', '.join(LM_GEN_KEYS)}")

    known = {f for f in LmConfig.__dataclass_fields__} - {
        "conditioners",
        "fuse_sum",
        "fuse_cross",
        "extra",
        "source",
        "lm_gen_config",
        "cross_attention_pos_emb",
        "cross_attention_pos_emb_scale",
    }
    unknown = sorted(set(data) - known)
    if unknown:
        raise _err(where, f"unknown config keys {unknown}")
    for req in ("dim", "num_heads", "num_layers"):
        if req not in data:
            raise _err(where, f"missing required key {req!r}")
    try:
        _check_values(data, where)
    except ConfigError as e:
        raise e if str(e).startswith(where) else _err(where, str(e)) from None
    _check_gen_values(lm_gen, where)
    # like the reference, an absent depformer_X inherits the temporal transformer's X
    if "depformer_layer_scale" not in data:
        data["depformer_layer_scale"] = data.get("layer_scale")
    if data.get("max_period") is not None:
        data["max_period"] = float(data["max_period"])
    if data.get("depformer_max_period") is not None:
        data["depformer_max_period"] = float(data["depformer_max_period"])
    if "lora_scaling" in data:
        data["lora_scaling"] = float(data["lora_scaling"])
    cfg = LmConfig(
        **data,
        conditioners=conditioners,
        fuse_sum=fuse_sum,
        fuse_cross=fuse_cross,
        **fuse_opts,
        lm_gen_config=dict(lm_gen),
        extra=extra,
        source=source,
    )
    if "delays" not in data and len(cfg.delays) != cfg.n_q + 1:  # its default, [0], is one stream's
        raise _err(
            where, f"delays is not given: it needs n_q + 1 = {cfg.n_q + 1} entries (text, then each audio codebook)"
        )
    _validate(cfg, where)
    return cfg


def _parse_conditioning(data: dict[str, Any], where: str):
    """Pop `conditioners` and `fuser` from `data`: (conditioners, fuse_sum, fuse_cross,
    cross-attention position-embedding options). LUT conditioners are summed into the
    input, tensor conditioners are the cross-attention source, as in the reference."""
    conditioners: dict[str, LutConditionerConfig | TensorConditionerConfig] = {}
    for name, c in (data.pop("conditioners", None) or {}).items():
        kind = c.get("type") if isinstance(c, dict) else c
        if kind not in ("lut", "tensor"):
            raise _err(
                where, f"conditioner {name!r} has type {kind!r}; only 'lut' and 'tensor' conditioners are supported"
            )
        opts = dict(c.get(kind) or {})
        if opts.get("output_bias"):
            raise _err(where, f"conditioner {name!r}: output_bias is not supported")
        opts.pop("output_bias", None)
        opts.pop("pad_empty", None)  # an empty condition is padded either way
        if kind == "lut":
            if opts.get("tokenizer", "noop") != "noop":
                raise _err(
                    where, f"conditioner {name!r}: tokenizer {opts['tokenizer']!r} is not supported (only 'noop')"
                )
            if opts.get("init_scale", 1.0) is None:
                raise _err(where, f"conditioner {name!r}: bad init_scale")
            opts.pop("init_scale", None)  # only affects random init
        try:
            conditioners[name] = LutConditionerConfig(**opts) if kind == "lut" else TensorConditionerConfig(**opts)
        except TypeError as e:
            raise _err(where, f"conditioner {name!r}: {e}") from None
    fuser = data.pop("fuser", None) or {}
    fuse_sum = list(fuser.get("sum", []) or [])
    fuse_cross = list(fuser.get("cross", []) or [])
    if fuser.get("prepend"):
        raise _err(where, "fuser method 'prepend' is not supported (only 'sum' and 'cross')")
    unknown_fuse = set(fuser) - {"sum", "cross", "prepend", "cross_attention_pos_emb", "cross_attention_pos_emb_scale"}
    if unknown_fuse:
        raise _err(where, f"unknown fuser keys {sorted(unknown_fuse)}")
    for n in fuse_sum + fuse_cross:
        if n not in conditioners:
            raise _err(where, f"fuser uses condition {n!r} but no conditioner has that name")
    for n, c in conditioners.items():
        want, method = (fuse_cross, "cross") if isinstance(c, TensorConditionerConfig) else (fuse_sum, "sum")
        if n not in want:
            raise _err(
                where,
                f"conditioner {n!r} ({'tensor' if method == 'cross' else 'lut'}) must be fused with "
                f"{method!r} (other combinations are not supported)",
            )
    opts = {
        "cross_attention_pos_emb": bool(fuser.get("cross_attention_pos_emb", False)),
        "cross_attention_pos_emb_scale": float(fuser.get("cross_attention_pos_emb_scale", 1.0)),
    }
    return conditioners, fuse_sum, fuse_cross, opts


def _validate(cfg: LmConfig, where: str) -> None:
    def check(ok: bool, msg: str) -> None:
        if not ok:
            raise _err(where, msg)

    check(cfg.norm in NORM_TYPES, f"norm {cfg.norm!r} is not one of {', '.join(NORM_TYPES)}")
    gatings = ("none",) + tuple(ACTIVATIONS)
    check(cfg.gating in gatings, f"gating {cfg.gating!r} is not one of {', '.join(gatings)}")
    check(
        cfg.depformer_norm is None or cfg.depformer_norm in NORM_TYPES,
        f"depformer_norm {cfg.depformer_norm!r} is not one of {', '.join(NORM_TYPES)} (or null)",
    )
    check(cfg.dep_gating in gatings, f"depformer_gating {cfg.dep_gating!r} is not one of {', '.join(gatings)}")
    check(
        cfg.positional_embedding in POSITIONAL_EMBEDDINGS,
        f"positional_embedding {cfg.positional_embedding!r} is not one of {', '.join(POSITIONAL_EMBEDDINGS)}",
    )
    check(
        cfg.depformer_pos_emb in POSITIONAL_EMBEDDINGS,
        f"depformer_pos_emb {cfg.depformer_pos_emb!r} is not one of {', '.join(POSITIONAL_EMBEDDINGS)}",
    )
    check(cfg.dim % cfg.num_heads == 0, f"dim {cfg.dim} is not divisible by num_heads {cfg.num_heads}")
    check(
        cfg.num_heads % cfg.kv_repeat == 0, f"num_heads {cfg.num_heads} is not divisible by kv_repeat {cfg.kv_repeat}"
    )
    check(cfg.context is None or cfg.context > 0, f"context must be positive, got {cfg.context}")
    for what, width in (
        ("hidden_scale x dim", cfg.hidden_scale * cfg.dim),
        ("hidden_scale x depformer_dim", cfg.hidden_scale * (cfg.depformer_dim or 0)),
    ):
        check(width <= _SIZE_LIMIT, f"{what} = {width:g} is no layer width (at most 2**30)")
    check(
        not cfg.fuse_cross or cfg.cross_attention,
        f"fuser 'cross' conditions {cfg.fuse_cross} need cross_attention: true",
    )
    check(not cfg.cross_attention or cfg.fuse_cross, "cross_attention: true needs a conditioner fused with 'cross'")
    check(not cfg.cross_attention or cfg.kv_repeat == 1, "cross_attention with kv_repeat > 1 is not supported")
    check(len(cfg.delays) == cfg.n_q + 1, f"delays has {len(cfg.delays)} entries, expected n_q + 1 = {cfg.n_q + 1}")
    check(all(isinstance(d, int) and d >= 0 for d in cfg.delays), f"delays must be non-negative integers: {cfg.delays}")
    check(0 <= cfg.dep_q <= cfg.n_q, f"dep_q {cfg.dep_q} must be between 0 and n_q {cfg.n_q}")
    check(cfg.card > 0 and cfg.text_card > 0, "card and text_card must be positive")
    for key in ("existing_text_padding_id", "existing_text_end_padding_id"):
        v = getattr(cfg, key)
        check(0 <= v < cfg.text_card, f"{key} {v} is outside the text vocabulary [0, {cfg.text_card})")
    if cfg.dep_q > 0:
        check(cfg.depformer_num_heads is not None, "depformer_num_heads is required when dep_q > 0")
        check(
            cfg.depformer_dim % cfg.dep_num_heads == 0,
            f"depformer_dim {cfg.depformer_dim} is not divisible by depformer_num_heads {cfg.dep_num_heads}",
        )
        check(
            cfg.dep_num_heads % cfg.dep_kv_repeat == 0,
            f"depformer num_heads {cfg.dep_num_heads} is not divisible by its kv_repeat {cfg.dep_kv_repeat}",
        )
        sched = cfg.depformer_weights_per_step_schedule
        if sched is not None:
            check(
                len(sched) == cfg.dep_q,
                f"depformer_weights_per_step_schedule has {len(sched)} entries, expected dep_q = {cfg.dep_q}",
            )
            check(
                all(isinstance(s, int) and s >= 0 for s in sched),
                "depformer_weights_per_step_schedule must hold non-negative integers",
            )
            check(
                set(sched) == set(range(max(sched) + 1)),
                "depformer_weights_per_step_schedule must use every index 0..max",
            )
        if isinstance(cfg.depformer_dim_feedforward, list):
            check(
                cfg.depformer_weights_per_step and len(cfg.depformer_dim_feedforward) == cfg.dep_weights,
                f"a list depformer_dim_feedforward needs weights per step and {cfg.dep_weights} entries",
            )
        if cfg.depformer_weights_per_step:
            check(
                cfg.dep_gating != "none", "depformer_weights_per_step needs a gated MLP (the reference refuses it too)"
            )
        check(cfg.depformer_context is None or cfg.depformer_context > 0, "depformer_context must be positive")
    if cfg.checkpoint_dep_q is not None:
        check(
            cfg.dep_q <= cfg.checkpoint_dep_q <= cfg.n_q
            and cfg.depformer_multi_linear
            and not cfg.depformer_weights_per_step_schedule,
            f"checkpoint_dep_q {cfg.checkpoint_dep_q} needs dep_q <= it <= n_q, depformer_multi_linear and no schedule",
        )


# ---- presets -------------------------------------------------------------------------

# name -> (JSON file in moshi_mlx/configs, Hub repos by weight format: file name in that repo)
PRESETS: dict[str, tuple[str, dict[str, tuple[str, str]]]] = {
    "moshiko": (
        "moshi-7b.json",
        {
            "bf16": ("kyutai/moshiko-mlx-bf16", "model.safetensors"),
            "q8": ("kyutai/moshiko-mlx-q8", "model.q8.safetensors"),
            "q4": ("kyutai/moshiko-mlx-q4", "model.q4.safetensors"),
            "pytorch": ("kyutai/moshiko-pytorch-bf16", "model.safetensors"),
        },
    ),
    "moshika": (
        "moshi-7b.json",
        {
            "bf16": ("kyutai/moshika-mlx-bf16", "model.safetensors"),
            "q8": ("kyutai/moshika-mlx-q8", "model.q8.safetensors"),
            "q4": ("kyutai/moshika-mlx-q4", "model.q4.safetensors"),
            "pytorch": ("kyutai/moshika-pytorch-bf16", "model.safetensors"),
        },
    ),
    # each repo also holds a config.json naming these files and its Mimi (-mlx-:
    # mimi-dbaa9758@125.safetensors, -pytorch-: mimi-pytorch-e351c8d8@125.safetensors), which wins
    "hibiki-2b": (
        "hibiki-2b.json",
        {
            "bf16": ("kyutai/hibiki-2b-mlx-bf16", "hibiki-mlx-220b12c0@200.safetensors"),
            "pytorch": ("kyutai/hibiki-2b-pytorch-bf16", "hibiki-pytorch-220b12c0@200.safetensors"),
        },
    ),
    # Hibiki-Zero: the repo hibiki_zero/run.py loads (PyTorch layout, bf16; its config.json is gated:
    # the preset is reconstructed from public code, see its _source)
    "hibiki-zero-3b": (
        "hibiki-zero-3b.json",
        {
            "bf16": ("kyutai/hibiki-zero-3b-pytorch-bf16", "model.safetensors"),
            "pytorch": ("kyutai/hibiki-zero-3b-pytorch-bf16", "model.safetensors"),
        },
    ),
    "moshi-1b": ("moshi-1b.json", {}),
    "moshi-1b-16rvq": ("moshi-1b-16rvq.json", {}),
    "helium-2b": (
        "helium-2b.json",
        {  # one repo, a file per format (q4/q6/q8 at group size 64)
            "bf16": ("kyutai/helium-1-preview-2b-mlx", "helium-1-preview-2b-bf16.safetensors"),
            "q8": ("kyutai/helium-1-preview-2b-mlx", "helium-1-preview-2b-q8.safetensors"),
            "q6": ("kyutai/helium-1-preview-2b-mlx", "helium-1-preview-2b-q6.safetensors"),
            "q4": ("kyutai/helium-1-preview-2b-mlx", "helium-1-preview-2b-q4.safetensors"),
        },
    ),
    "stt-1b-en_fr": (
        "stt-1b-en_fr.json",
        {
            "bf16": ("kyutai/stt-1b-en_fr-mlx", "model.safetensors"),
            "pytorch": ("kyutai/stt-1b-en_fr", "model.safetensors"),
        },
    ),
    # the same model with its semantic-VAD (end-of-turn) heads: PyTorch names, bf16
    "stt-1b-en_fr-candle": (
        "stt-1b-en_fr-candle.json",
        {
            "pytorch": ("kyutai/stt-1b-en_fr-candle", "model.safetensors"),
        },
    ),
    "stt-2.6b-en": (
        "stt-2.6b-en.json",
        {
            "bf16": ("kyutai/stt-2.6b-en-mlx", "model.safetensors"),
            "pytorch": ("kyutai/stt-2.6b-en", "model.safetensors"),
        },
    ),
    "random-tiny": ("random-tiny.json", {}),
    # NVIDIA's loader hard-codes the architecture: the repo's config.json is never read
    "personaplex-7b": (
        "personaplex-7b.json",
        {
            "bf16": ("nvidia/personaplex-7b-v1", "model.safetensors"),
            "pytorch": ("nvidia/personaplex-7b-v1", "model.safetensors"),
        },
    ),
    "random-tiny-persona": ("random-tiny-persona.json", {}),
    # one published repo (PyTorch layout, bf16), which the loader reads as it is
    "tts-1.6b-en_fr": (
        "tts-1.6b-en_fr.json",
        {
            "bf16": ("kyutai/tts-1.6b-en_fr", "dsm_tts_1e68beda@240.safetensors"),
            "pytorch": ("kyutai/tts-1.6b-en_fr", "dsm_tts_1e68beda@240.safetensors"),
        },
    ),
    "tts-tiny": ("tts-tiny.json", {}),
    "random-tiny-stt": ("random-tiny-stt.json", {}),
    "random-tiny-helium": ("random-tiny-helium.json", {}),
    "random-tiny-hibiki-zero": ("random-tiny-hibiki-zero.json", {}),
}


# presets whose Hub repo's config.json is not ours to read (the preset is the config)
IGNORES_REPO_CONFIG = frozenset({"personaplex-7b"})


def preset_path(name: str) -> Path:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}")
    return Path(str(resources.files("moshi_mlx") / "configs" / PRESETS[name][0]))


def preset(name: str) -> LmConfig:
    """The config of a published model by preset name (see `PRESETS`)."""
    return LmConfig.from_json(preset_path(name))


def presets_for_repo(repo: str) -> list[tuple[str, str, str]]:
    """(preset name, weight format, file name) of every preset published in Hub repo `repo`
    (one repo may hold several formats, e.g. Helium's bf16/q4/q6/q8 files). The Hub resolves
    repo ids whatever their capitals, so `Kyutai/Moshiko-PyTorch-BF16` is a known repo too."""
    repo = repo.lower()
    return [
        (name, fmt, fname)
        for name, (_, repos) in PRESETS.items()
        for fmt, (r, fname) in repos.items()
        if r.lower() == repo
    ]


def companion_names(cfg: LmConfig) -> tuple[str, str]:
    """(Mimi file, tokenizer file) that model `cfg` loads: its own names, else those of the
    published presets of its family (same model_type and text vocabulary: a Helium or STT
    config.json that names none still needs its own tokenizer), else Moshi's. The loader
    and the converter both ask here, so a converted folder holds what loading it looks for."""
    from ..constants import MIMI_NAME, TOKENIZER_NAME

    mimi, tok = cfg.mimi_name, cfg.tokenizer_name
    if mimi is None or tok is None:
        for name, (_, repos) in PRESETS.items():
            if not repos:  # random demo presets publish no files
                continue
            p = preset(name)
            if p.model_type == cfg.model_type and p.text_card == cfg.text_card:
                mimi, tok = mimi or p.mimi_name, tok or p.tokenizer_name
    return mimi or MIMI_NAME, tok or TOKENIZER_NAME


def companion_files(cfg: LmConfig) -> list[str]:
    """Every file a model folder of `cfg` holds beside the weights and its config.json: the
    Mimi (a model with audio; not the demo's seeded "random" codec), the tokenizer
    (`companion_names`), and PersonaPlex's voice presets. What convert copies and looks for
    in the published repos, the Hugging Face cache included."""
    from ..constants import VOICES_NAME

    mimi, tok = companion_names(cfg)
    names = ([mimi] if cfg.n_q > 0 else []) + [tok] + ([VOICES_NAME] if cfg.is_persona else [])
    return [n for n in names if n != "random"]
