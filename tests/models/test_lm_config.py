"""LmConfig: the presets come from the shipped published JSON; every unsupported value is a clear error."""

import json

import pytest

from moshi_mlx import models
from moshi_mlx.models.config import PRESETS, LmConfig, preset_path
from moshi_mlx.errors import ConfigError


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_parse_and_round_trip(name):
    cfg = models.lm_preset(name)
    assert cfg.source  # every shipped file names where its values come from
    assert LmConfig.from_dict(cfg.to_dict()) == cfg
    assert len(cfg.delays) == cfg.n_q + 1


def test_moshi_7b_values():
    cfg = models.lm_preset("moshiko")
    assert (cfg.dim, cfg.num_layers, cfg.num_heads, cfg.context, cfg.text_card, cfg.card) == (
        4096,
        32,
        32,
        3000,
        32000,
        2048,
    )
    assert (cfg.n_q, cfg.dep_q, cfg.user_q, cfg.max_delay, cfg.dep_weights) == (16, 8, 8, 1, 8)
    assert cfg.norm == "rms_norm_f32" and cfg.gating == "silu" and cfg.hidden_scale == 4.125
    assert cfg.dep_feedforward(0) == 4224 and cfg.depformer_pos_emb == "none"
    assert cfg.moshi_name == "model.safetensors" and cfg.tokenizer_name == "tokenizer_spm_32k_3.model"


def test_hibiki_2b_values():
    cfg = models.lm_preset("hibiki-2b")
    assert (cfg.n_q, cfg.dep_q, cfg.max_delay, cfg.text_card, cfg.max_period) == (32, 16, 2, 48000, 100000.0)
    assert cfg.conditioners["description"].possible_values[-1] == "very_good"
    assert cfg.own_delay == 2 and models.lm_preset("moshiko").own_delay == 1
    assert models.lm_preset("stt-1b-en_fr").own_delay == 0  # no audio out: no own frame to wait for
    assert cfg.fuse_sum == ["description"] and cfg.model_type == "hibiki"


def test_from_json(tmp_path):
    p = tmp_path / "config.json"
    d = json.loads(preset_path("moshiko").read_text())
    d["lm_gen_config"] = {"temp": 0.5}
    p.write_text(json.dumps(d))
    cfg = LmConfig.from_json(p)
    assert cfg.lm_gen_config == {"temp": 0.5} and cfg.dim == 4096
    with pytest.raises(ConfigError, match="config file not found"):
        LmConfig.from_json(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        LmConfig.from_json(tmp_path / "bad.json")


def test_depformer_inherits_unless_given():
    d = models.lm_preset("random-tiny").to_dict()
    for k in ("depformer_layer_scale", "depformer_gating", "depformer_max_period"):
        d.pop(k, None)
    d["layer_scale"] = 0.1
    cfg = LmConfig.from_dict(d)
    assert cfg.depformer_layer_scale == 0.1 and cfg.dep_gating == cfg.gating
    d["depformer_layer_scale"] = None
    assert LmConfig.from_dict(d).depformer_layer_scale is None


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("cross_attention", True, "cross_attention: true needs a conditioner fused with 'cross'"),
        ("norm", "batch_norm", "norm 'batch_norm' is not one of"),
        ("gating", "swish", "gating 'swish' is not one of"),
        ("positional_embedding", "alibi", "positional_embedding 'alibi'"),
        ("delays", [0, 1], "delays has 2 entries, expected n_q \\+ 1 = 5"),
        ("depformer_weights_per_step_schedule", [0, 0, 1], "has 3 entries, expected dep_q = 2"),
        ("depformer_norm", "group_norm", "depformer_norm 'group_norm' is not one of"),
        ("lora_rank", 0, "lora_rank must be >= 1"),
        ("mystery_knob", 3, "unknown config keys \\['mystery_knob'\\]"),
        ("lm_gen_config", {"temperature": 1}, "lm_gen_config has unsupported keys \\['temperature'\\]"),
        (
            "conditioners",
            {"spk": {"type": "tensor", "tensor": {"dim": 512}}},
            "'spk' \\(tensor\\) must be fused with 'cross'",
        ),
        ("conditioners", {"txt": {"type": "t5", "t5": {}}}, "only 'lut' and 'tensor' conditioners are supported"),
        ("fuser", {"cross": ["x"]}, "fuser uses condition 'x' but no conditioner has that name"),
        ("fuser", {"prepend": ["x"]}, "fuser method 'prepend' is not supported"),
        ("num_heads", 5, "dim 64 is not divisible by num_heads 5"),
        # types and ranges (issue 11): one line naming the key, never a traceback from inside
        ("dim", "64", 'dim must be an integer, got "64"'),
        ("hidden_scale", None, "hidden_scale must be a number, got null"),
        ("num_heads", 0, "num_heads must be >= 1, got 0"),
        ("num_layers", True, "num_layers must be an integer, got true"),
        ("max_period", float("nan"), "max_period must be a finite number"),
        ("card", -4, "card must be >= 1, got -4"),
        ("delays", [0, 0, "1", 0, 1], "delays must be a list of integers"),
        ("existing_text_padding_id", 1000, r"existing_text_padding_id 1000 is outside the text vocabulary \[0, 1000\)"),
        ("lm_gen_config", {"temp": -1}, "lm_gen_config.temp must be >= 0"),
        ("lm_gen_config", {"use_sampling": "yes"}, "use_sampling must be true or false"),
        # sizes MLX cannot index (32-bit): an OverflowError/TypeError from inside MLX before
        ("card", 2**31, r"card must be at most 2\*\*30 \(MLX sizes are 32-bit\), got 2147483648"),
        ("context", 10**400, "context must be at most 2\\*\\*30"),
        ("depformer_dim_feedforward", [2**33, 192], "depformer_dim_feedforward must be at most"),
        ("hidden_scale", 1e30, r"hidden_scale x dim = 6.4e\+31 is no layer width \(at most 2\*\*30\)"),
    ],
)
def test_unsupported_values_are_named(key, value, message):
    d = models.lm_preset("random-tiny").to_dict()
    d[key] = value
    with pytest.raises(ConfigError, match=message) as e:
        LmConfig.from_dict(d, where="cfg.json")
    assert str(e.value).startswith("cfg.json: ") and "\n" not in str(e.value)


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown preset 'moshiko-xl'"):
        models.lm_preset("moshiko-xl")
