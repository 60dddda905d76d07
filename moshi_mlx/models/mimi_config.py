"""Mimi's configuration as data: dataclasses read from (and written to) the dict layout of
Kyutai's `mimi_config` (`sample_rate`, `frame_rate`, `seanet`, `quantizer`, `transformer`).

The published 2024-07 codec is `configs/mimi_202407.json` (`mimi_202407()`). Values this
implementation cannot honour are errors, not silently ignored settings.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..constants import FRAME_RATE, SAMPLE_RATE
from ..modules.seanet import SeanetConfig
from ..errors import WeightsError
from ..validation import json_file

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


@dataclass
class MimiTransformerConfig:
    d_model: int = 512
    num_heads: int = 8
    num_layers: int = 8
    dim_feedforward: int = 2048
    context: int | None = 250
    max_period: float = 10_000.0
    layer_scale: float | None = 0.01
    norm: str = "layer_norm"
    gating: str = "none"
    positional_embedding: str = "rope"
    input_dimension: int = 512
    output_dimension: int = 512


@dataclass
class QuantizerConfig:
    dimension: int = 256
    n_q: int = 32
    n_q_semantic: int = 1
    bins: int = 2048
    input_dimension: int = 512
    output_dimension: int = 512


@dataclass
class MimiConfig:
    sample_rate: int = SAMPLE_RATE
    channels: int = 1
    frame_rate: float = FRAME_RATE
    seanet: SeanetConfig = field(default_factory=SeanetConfig)
    transformer: MimiTransformerConfig = field(default_factory=MimiTransformerConfig)
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)

    @property
    def frame_size(self) -> int:
        """Samples per code frame (1920 = 80 ms for the published codec)."""
        return int(round(self.sample_rate / self.frame_rate))

    @property
    def encoder_frame_rate(self) -> float:
        return self.sample_rate / self.seanet.hop_length

    @property
    def resample_stride(self) -> int:
        """Stride of the learnt down/upsampling between the SEANet and the code rate."""
        return self.frame_size // self.seanet.hop_length

    def __post_init__(self):
        hop = self.seanet.hop_length
        if self.frame_size % hop or abs(self.frame_size - self.sample_rate / self.frame_rate) > 1e-6:
            raise WeightsError(
                f"Mimi config: frame size {self.sample_rate}/{self.frame_rate} must be a whole multiple "
                f"of the SEANet hop {hop}"
            )
        if self.channels != 1 or self.seanet.channels != 1:
            raise WeightsError("Mimi config: only mono (channels=1) codecs are supported")
        if (
            self.transformer.input_dimension != self.seanet.dimension
            or self.transformer.output_dimension != self.seanet.dimension
        ):
            raise WeightsError("Mimi config: the transformer's input/output dimension must equal seanet.dimension")
        q = self.quantizer
        if q.input_dimension != self.seanet.dimension or q.output_dimension != self.seanet.dimension:
            raise WeightsError("Mimi config: quantizer input/output dimension must equal seanet.dimension")

    # ---- dict layout of Kyutai's configs -------------------------------------------------

    @classmethod
    def from_dict(cls, d: dict) -> "MimiConfig":
        d = _public(d, "mimi config")
        _only(d, {"sample_rate", "channels", "frame_rate", "seanet", "quantizer", "transformer"}, "mimi config")
        for key in ("seanet", "quantizer", "transformer"):
            if key not in d:
                raise WeightsError(f"mimi config: missing section {key!r}")
        return cls(
            sample_rate=int(d.get("sample_rate", SAMPLE_RATE)),
            channels=int(d.get("channels", 1)),
            frame_rate=float(d.get("frame_rate", FRAME_RATE)),
            seanet=_seanet_from_dict(d["seanet"]),
            transformer=_transformer_from_dict(d["transformer"]),
            quantizer=_quantizer_from_dict(d["quantizer"]),
        )

    def to_dict(self) -> dict:
        """Kyutai's layout (loadable by the PyTorch reference's `get_mimi(..., mimi_config)`)."""
        s = asdict(self.seanet)
        s.update(causal=True, activation="ELU", norm="none", disable_norm_outer_blocks=0)
        t = asdict(self.transformer)
        t["output_dimensions"] = [t.pop("output_dimension")]
        t.update(causal=True, conv_layout=True)
        return {
            "sample_rate": self.sample_rate,
            "channels": self.channels,
            "frame_rate": self.frame_rate,
            "seanet": s,
            "quantizer": asdict(self.quantizer),
            "transformer": t,
        }

    @classmethod
    def from_json(cls, path: str | Path) -> "MimiConfig":
        try:
            d = json_file(path)
        except FileNotFoundError:
            raise WeightsError(f"Mimi config file not found: {path}") from None
        except (ValueError, OSError) as e:  # json's JSONDecodeError, UnicodeDecodeError, a folder
            raise WeightsError(f"Mimi config {path} is not valid JSON: {e}".splitlines()[0]) from None
        try:
            return cls.from_dict(d)
        except WeightsError as e:
            raise WeightsError(f"{path}: {e}") from None


def mimi_202407() -> MimiConfig:
    """The published codec: SEANet 64 filters, ratios 8-6-5-4, 8-layer transformers, 32 x 2048 RVQ."""
    return MimiConfig.from_json(CONFIG_DIR / "mimi_202407.json")


def _public(d, what: str) -> dict:
    if not isinstance(d, dict):
        raise WeightsError(f"{what}: expected a JSON object, got {type(d).__name__}")
    return {k: v for k, v in d.items() if not k.startswith("_")}


def _only(d: dict, allowed: set[str], what: str) -> None:
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise WeightsError(f"{what}: unsupported key(s) {', '.join(unknown)}")


def _require(d: dict, key: str, allowed: tuple, what: str) -> None:
    if key in d and d[key] not in allowed:
        raise WeightsError(f"{what}: {key}={d[key]!r} is not supported (supported: {', '.join(map(repr, allowed))})")


_TRAINING_ONLY = {"q_dropout", "no_quantization_rate", "decay", "threshold_usage_ratio", "replaced_usage_ratio"}


def _seanet_from_dict(d) -> SeanetConfig:
    what = "mimi config seanet"
    d = _public(d, what)
    fields = set(SeanetConfig.__dataclass_fields__)
    _only(
        d,
        fields
        | {
            "causal",
            "activation",
            "activation_params",
            "norm",
            "norm_params",
            "disable_norm_outer_blocks",
            "trim_right_ratio",
            "final_activation",
        },
        what,
    )
    _require(d, "causal", (True,), what)
    _require(d, "activation", ("ELU",), what)
    _require(d, "activation_params", ({"alpha": 1.0},), what)
    _require(d, "norm", ("none",), what)  # weight norm must be folded into plain weights
    _require(d, "trim_right_ratio", (1.0,), what)
    _require(d, "final_activation", (None,), what)
    _require(d, "pad_mode", ("constant", "replicate"), what)
    kw = {k: v for k, v in d.items() if k in fields}
    if "ratios" in kw:
        kw["ratios"] = [int(r) for r in kw["ratios"]]
    return SeanetConfig(**kw)


def _transformer_from_dict(d) -> MimiTransformerConfig:
    what = "mimi config transformer"
    d = _public(d, what)
    fields = set(MimiTransformerConfig.__dataclass_fields__) - {"output_dimension"}
    _only(d, fields | {"causal", "conv_layout", "output_dimensions"}, what)
    _require(d, "causal", (True,), what)
    _require(d, "gating", ("none",), what)
    _require(d, "norm", ("layer_norm", "rms_norm", "rms_norm_f32", "layer_norm_f32"), what)
    _require(d, "positional_embedding", ("rope", "none", "rope_concat", "sin", "sin_rope"), what)
    kw = {k: v for k, v in d.items() if k in fields}
    outs = d.get("output_dimensions", [kw.get("d_model", 512)])
    if len(outs) != 1:
        raise WeightsError(f"{what}: exactly one output dimension is supported, got {outs}")
    kw["output_dimension"] = int(outs[0])
    return MimiTransformerConfig(**kw)


def _quantizer_from_dict(d) -> QuantizerConfig:
    what = "mimi config quantizer"
    d = _public(d, what)
    fields = set(QuantizerConfig.__dataclass_fields__)
    _only(d, fields | _TRAINING_ONLY, what)
    return QuantizerConfig(**{k: v for k, v in d.items() if k in fields})
